"""ember.nn.utils.rnn (pad, pack, unpack) and RNN/LSTM/GRU on packed batches: a packed batch
computes for each sequence what the layer computes on that sequence alone; LSTM(proj_size=)
against a numpy reference; gradients against finite differences; a packed-sequence LSTM text
classifier trains with equal losses eagerly and compiled."""
import numpy as np
import pytest

import ember
import ember.nn as nn
from ember.nn.utils import rnn
from finite_differences import check_vjp

RNG = np.random.default_rng(0)
LENGTHS = [4, 6, 2, 6, 1]


def sequences(features=3, dtype=np.float32):
    return [ember.from_numpy(RNG.standard_normal((n, features)).astype(dtype)) for n in LENGTHS]


def test_pad_pack_and_unpack_round_trip():
    seqs = sequences()
    padded = rnn.pad_sequence(seqs)
    assert padded.shape == (6, 5, 3)
    for k, s in enumerate(seqs):
        np.testing.assert_array_equal(padded[:len(s), k].numpy(), s.numpy())
        assert (padded[len(s):, k] == 0).all()
    left = rnn.pad_sequence(seqs, batch_first=True, padding_value=-1.0, padding_side="left")
    np.testing.assert_array_equal(left[2, -2:].numpy(), seqs[2].numpy())
    assert (left[2, :4] == -1).all()
    packed = rnn.pack_padded_sequence(padded, LENGTHS, enforce_sorted=False)
    assert packed.batch_sizes.tolist() == [5, 4, 3, 3, 2, 2] and packed.sorted_indices.tolist() == [1, 3, 0, 2, 4]
    order = [1, 3, 0, 2, 4]
    expected = np.concatenate([np.stack([seqs[k].numpy()[t] for k in order if LENGTHS[k] > t]) for t in range(6)])
    np.testing.assert_array_equal(packed.data.numpy(), expected)
    unpacked, lengths = rnn.pad_packed_sequence(packed, batch_first=True, total_length=8)
    assert unpacked.shape == (5, 8, 3) and lengths.tolist() == LENGTHS
    np.testing.assert_array_equal(unpacked.numpy(), np.pad(rnn.pad_sequence(seqs, batch_first=True).numpy(),
                                                           ((0, 0), (0, 2), (0, 0))))
    assert [s.shape[0] for s in rnn.unpack_sequence(packed)] == LENGTHS
    again = rnn.pack_sequence(sorted(seqs, key=lambda s: -s.shape[0]))
    assert again.sorted_indices is None and again.batch_sizes.tolist() == [5, 4, 3, 3, 2, 2]


def test_packing_refuses_what_torch_refuses():
    padded = rnn.pad_sequence(sequences())
    with pytest.raises(RuntimeError, match="`lengths` array must be sorted in decreasing order"):
        rnn.pack_padded_sequence(padded, LENGTHS)
    with pytest.raises(RuntimeError, match="Length of all samples has to be greater than 0"):
        rnn.pack_padded_sequence(padded, [6, 6, 4, 2, 0])
    packed = rnn.pack_padded_sequence(padded, LENGTHS, enforce_sorted=False)
    with pytest.raises(ValueError, match="Expected total_length to be at least the length of the longest"):
        rnn.pad_packed_sequence(packed, total_length=3)


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_a_packed_batch_computes_each_sequence_as_the_layer_does_alone(cls):
    ember.manual_seed(0)
    layer = getattr(nn, cls)(3, 4, num_layers=2, bidirectional=True)
    seqs = sequences()
    packed = rnn.pack_sequence(seqs, enforce_sorted=False)
    hidden = (2 * 2, 5, 4)
    hx = ember.randn(*hidden)
    start = (hx, ember.randn(*hidden)) if cls == "LSTM" else hx
    output, final = layer(packed, start)
    assert isinstance(output, rnn.PackedSequence)
    padded, lengths = rnn.pad_packed_sequence(output)
    assert lengths.tolist() == LENGTHS
    for k, s in enumerate(seqs):
        own_start = (start[0][:, k:k + 1], start[1][:, k:k + 1]) if cls == "LSTM" else start[:, k:k + 1]
        alone, alone_final = layer(s.unsqueeze(1), own_start)
        np.testing.assert_allclose(padded[:len(s), k].detach().numpy(), alone[:, 0].detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
        assert (padded[len(s):, k] == 0).all()
        for got, want in zip(final if cls == "LSTM" else [final], alone_final if cls == "LSTM" else [alone_final]):
            np.testing.assert_allclose(got[:, k].detach().numpy(), want[:, 0].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_packed_lstm_gradients_match_finite_differences():
    ember.manual_seed(0)
    layer = nn.LSTM(2, 3, bidirectional=True).double()
    lengths = [3, 1, 2]

    def run(padded):
        output, (h, c) = layer(rnn.pack_padded_sequence(padded, lengths, enforce_sorted=False))
        return rnn.pad_packed_sequence(output)[0].sum(0).sum(-1) + h.sum(0).sum(-1)
    check_vjp(run, [RNG.standard_normal((3, 3, 2))])


def reference_projected_lstm(x, weights, hidden, proj):
    """numpy: one layer, one direction; h (proj,), c (hidden,)."""
    w_ih, w_hh, b_ih, b_hh, w_hr = weights
    h, c = np.zeros(proj), np.zeros(hidden)
    outputs = []
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for x_t in x:
        i, f, g, o = np.split(w_ih @ x_t + b_ih + w_hh @ h + b_hh, 4)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = w_hr @ (sig(o) * np.tanh(c))
        outputs.append(h)
    return np.array(outputs), h, c


def test_lstm_with_proj_size_matches_the_reference_and_torchs_parameters():
    ember.manual_seed(0)
    layer = nn.LSTM(3, 5, proj_size=2, num_layers=2).double()
    assert [n for n, _ in layer.named_parameters()][:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                                                           "bias_hh_l0", "weight_hr_l0"]
    assert layer.weight_hh_l0.shape == (20, 2) and layer.weight_hr_l0.shape == (2, 5)
    assert layer.weight_ih_l1.shape == (20, 2)
    x = RNG.standard_normal((4, 1, 3))
    out, (h, c) = layer(ember.from_numpy(x))
    assert out.shape == (4, 1, 2) and h.shape == (2, 1, 2) and c.shape == (2, 1, 5)
    weights0 = [getattr(layer, f"{n}_l0").detach().numpy() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                                                      "weight_hr")]
    weights1 = [getattr(layer, f"{n}_l1").detach().numpy() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                                                      "weight_hr")]
    first, h0, c0 = reference_projected_lstm(x[:, 0], weights0, 5, 2)
    second, h1, c1 = reference_projected_lstm(first, weights1, 5, 2)
    np.testing.assert_allclose(out[:, 0].detach().numpy(), second, rtol=1e-10)
    np.testing.assert_allclose(c[1, 0].detach().numpy(), c1, rtol=1e-10)
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        nn.LSTM(3, 5, proj_size=5)
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM, not RNN or GRU"):
        nn.GRU(3, 5, proj_size=2)


class TextClassifier(nn.Module):
    def __init__(self, vocab=20, dim=8, hidden=8, classes=3):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, classes)

    def forward(self, tokens, lengths):
        packed = rnn.pack_padded_sequence(self.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.out(ember.cat([h[0], h[1]], dim=1))


def test_a_packed_sequence_lstm_text_classifier_trains_with_equal_losses_eagerly_and_compiled():
    lengths = [5, 3, 7, 2]
    tokens = ember.from_numpy(np.array([[RNG.integers(1, 20) if t < n else 0 for t in range(7)] for n in lengths]))
    labels = ember.tensor([0, 2, 1, 2])
    losses = {}
    for compiled in (False, True):
        ember.manual_seed(0)
        model = TextClassifier()
        optimizer = ember.optim.Adam(model.parameters(), lr=0.05)

        def step(tokens, labels):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(tokens, lengths), labels)
            loss.backward()
            optimizer.step()
            return loss
        run = ember.compile(step) if compiled else step
        losses[compiled] = [run(tokens, labels).item() for _ in range(4)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    assert losses[False][-1] < losses[False][0]
