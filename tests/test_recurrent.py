"""RNN/LSTM/GRU, their cells and Embedding against step-by-step numpy references (torch's
documented equations, same weights) and float64 central finite differences."""
import warnings

import numpy as np
import pytest

import ember
from ember.frontend.nn.embedding import Embedding, EmbeddingBag, embedding, embedding_bag
from ember.frontend.nn.recurrent import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNCell

MODES = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]


# ----------------------------------------------------------------------------- numpy reference

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_step(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One step of torch's documented equations; returns (h', c')."""
    gi = x @ w_ih.T + (0.0 if b_ih is None else b_ih)
    gh = h @ w_hh.T + (0.0 if b_hh is None else b_hh)
    H = h.shape[-1]
    if mode == "RNN_TANH":
        return np.tanh(gi + gh), None
    if mode == "RNN_RELU":
        return np.maximum(gi + gh, 0.0), None
    if mode == "LSTM":
        gates = gi + gh
        i, f = _sigmoid(gates[..., :H]), _sigmoid(gates[..., H:2 * H])
        g, o = np.tanh(gates[..., 2 * H:3 * H]), _sigmoid(gates[..., 3 * H:])
        c_next = f * c + i * g
        return o * np.tanh(c_next), c_next
    r = _sigmoid(gi[..., :H] + gh[..., :H])
    z = _sigmoid(gi[..., H:2 * H] + gh[..., H:2 * H])
    n = np.tanh(gi[..., 2 * H:] + r * gh[..., 2 * H:])
    return (1 - z) * n + z * h, None


def reference_rnn(mode, params, x, h0, c0, num_layers, bidirectional, batch_first, zero_between_layers=False):
    """Batched x; returns (output, h_n, c_n or None) as torch documents them."""
    if batch_first:
        x = x.swapaxes(0, 1)
    steps, batch = x.shape[:2]
    directions = 2 if bidirectional else 1
    hidden = h0.shape[-1]
    h_n, c_n = [], []
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            weights = [params.get(name + suffix) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = h0[layer * directions + direction]
            c = None if c0 is None else c0[layer * directions + direction]
            out = np.zeros((steps, batch, hidden))
            for t in (range(steps - 1, -1, -1) if direction else range(steps)):
                h, c = reference_step(mode, layer_input[t], h, c, *weights)
                out[t] = h
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
        layer_input = np.concatenate(outputs, axis=2)
        if zero_between_layers and layer < num_layers - 1:
            layer_input = np.zeros_like(layer_input)
    out = layer_input.swapaxes(0, 1) if batch_first else layer_input
    return out, np.stack(h_n), (np.stack(c_n) if mode == "LSTM" else None)


# ----------------------------------------------------------------------------- helpers

def make_layer(mode, input_size, hidden_size, **kwargs):
    if mode.startswith("RNN"):
        return RNN(input_size, hidden_size, nonlinearity=mode[4:].lower(), **kwargs)
    return {"LSTM": LSTM, "GRU": GRU}[mode](input_size, hidden_size, **kwargs)


def params_np(module):
    return {name: p.detach().numpy().astype(np.float64) for name, p in module.named_parameters()}


def randn(*shape, dtype=ember.float32, requires_grad=False):
    data = np.random.default_rng(len(shape) * 7 + sum(shape)).standard_normal(shape)
    return ember.tensor(data, dtype=dtype, requires_grad=requires_grad)


def numeric_grad(loss_fn, tensor, eps=1e-6):
    """Central differences of the scalar loss_fn() in every entry of `tensor` (edited in place)."""
    values = tensor.detach().numpy()
    grad = np.zeros_like(values)
    with ember.no_grad():
        for index in np.ndindex(values.shape):
            saved = values[index]
            values[index] = saved + eps
            plus = loss_fn().item()
            values[index] = saved - eps
            minus = loss_fn().item()
            values[index] = saved
            grad[index] = (plus - minus) / (2 * eps)
    return grad


def check_gradients(loss_fn, tensors, tol=1e-6):
    loss = loss_fn()
    grads = ember.autograd.grad(loss, [t for _, t in tensors])
    for (name, t), g in zip(tensors, grads):
        np.testing.assert_allclose(g.detach().numpy(), numeric_grad(loss_fn, t), rtol=tol, atol=tol, err_msg=name)


def weighted_sum(tensors):
    """A loss that weighs every output entry differently (a plain sum would hide mistakes)."""
    total = None
    for i, t in enumerate(tensors):
        weights = ember.tensor(np.cos(np.arange(t.numel()) * (1.3 + i)).reshape(tuple(t.shape)), dtype=t.dtype)
        term = (t * weights).sum()
        total = term if total is None else total + term
    return total


def flatten_result(mode, result):
    out, state = result
    return [out, *state] if mode == "LSTM" else [out, state]


# ----------------------------------------------------------------------------- sequence layers

CONFIGS = [
    # num_layers, bidirectional, batch_first, given initial state
    (1, False, False, False),
    (2, True, True, True),
    (2, False, True, False),
    (1, True, False, True),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,given_state", CONFIGS)
def test_sequence_layer_matches_numpy_reference(mode, num_layers, bidirectional, batch_first, given_state):
    steps, batch, features, hidden = 4, 3, 5, 6
    layer = make_layer(mode, features, hidden, num_layers=num_layers, bidirectional=bidirectional,
                       batch_first=batch_first)
    x = randn(*((batch, steps, features) if batch_first else (steps, batch, features)))
    state_shape = (num_layers * (2 if bidirectional else 1), batch, hidden)
    h0 = randn(*state_shape) if given_state else ember.zeros(*state_shape)
    c0 = (randn(*state_shape) * 0.5 if given_state else ember.zeros(*state_shape)) if mode == "LSTM" else None
    hx = ((h0, c0) if mode == "LSTM" else h0) if given_state else None

    out, state = layer(x, hx)
    want_out, want_h, want_c = reference_rnn(mode, params_np(layer), x.detach().numpy().astype(np.float64),
                                             h0.detach().numpy().astype(np.float64),
                                             None if c0 is None else c0.detach().numpy().astype(np.float64),
                                             num_layers, bidirectional, batch_first)
    h_n = state[0] if mode == "LSTM" else state
    expected_out_shape = ((batch, steps) if batch_first else (steps, batch)) + (hidden * (1 + bidirectional),)
    assert tuple(out.shape) == expected_out_shape
    assert tuple(h_n.shape) == state_shape
    assert out.dtype is ember.float32
    np.testing.assert_allclose(out.detach().numpy(), want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_n.detach().numpy(), want_h, rtol=1e-5, atol=1e-5)
    if mode == "LSTM":
        assert tuple(state[1].shape) == state_shape
        np.testing.assert_allclose(state[1].detach().numpy(), want_c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_equals_batch_of_one(mode, batch_first):
    layer = make_layer(mode, 3, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = randn(5, 3)
    h0 = randn(4, 4)
    hx = (h0, randn(4, 4)) if mode == "LSTM" else h0
    out, state = layer(x, hx)
    assert tuple(out.shape) == (5, 8)
    batched_x = x.unsqueeze(0 if batch_first else 1)
    batched_hx = tuple(s.unsqueeze(1) for s in hx) if mode == "LSTM" else h0.unsqueeze(1)
    want_out, want_state = layer(batched_x, batched_hx)
    batch_dim = 0 if batch_first else 1
    np.testing.assert_allclose(out.detach().numpy(), want_out.squeeze(batch_dim).detach().numpy(), rtol=1e-6)
    states = zip(state, want_state) if mode == "LSTM" else [(state, want_state)]
    for got, want in states:
        assert tuple(got.shape) == (4, 4)
        np.testing.assert_allclose(got.detach().numpy(), want.squeeze(1).detach().numpy(), rtol=1e-6)
    default_out, _ = layer(x)
    assert tuple(default_out.shape) == (5, 8)


@pytest.mark.parametrize("mode", MODES)
def test_sequence_layer_gradients_match_finite_differences(mode):
    layer = make_layer(mode, 2, 2, num_layers=2, bidirectional=True, batch_first=True).double()
    x = randn(2, 3, 2, dtype=ember.float64, requires_grad=True)
    h0 = randn(4, 2, 2, dtype=ember.float64, requires_grad=True)
    c0 = randn(4, 2, 2, dtype=ember.float64, requires_grad=True)
    hx = (h0, c0) if mode == "LSTM" else h0
    if mode == "RNN_RELU":
        with ember.no_grad():  # keep pre-activations away from relu's kink
            for p in layer.parameters():
                p.mul_(0.5)

    def loss():
        return weighted_sum(flatten_result(mode, layer(x, hx)))

    tensors = [("input", x), ("h0", h0)] + ([("c0", c0)] if mode == "LSTM" else [])
    tensors += list(layer.named_parameters())
    assert len(tensors) == (3 if mode == "LSTM" else 2) + 16
    check_gradients(loss, tensors)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_default_initial_state_is_zero_and_unbatched_gradients_flow(mode):
    layer = make_layer(mode, 2, 3, dtype=ember.float64)
    x = randn(4, 2, dtype=ember.float64, requires_grad=True)
    out, _ = layer(x)
    zero = ember.zeros(1, 3, dtype=ember.float64)
    want, _ = layer(x, (zero, zero) if mode == "LSTM" else zero)
    np.testing.assert_allclose(out.detach().numpy(), want.detach().numpy())
    check_gradients(lambda: weighted_sum(flatten_result(mode, layer(x))), [("input", x)])


def test_parameter_names_and_shapes_match_torch():
    lstm = LSTM(10, 20, num_layers=2, bidirectional=True)
    names = [(n, tuple(p.shape)) for n, p in lstm.named_parameters()]
    assert names == [
        ("weight_ih_l0", (80, 10)), ("weight_hh_l0", (80, 20)), ("bias_ih_l0", (80,)), ("bias_hh_l0", (80,)),
        ("weight_ih_l0_reverse", (80, 10)), ("weight_hh_l0_reverse", (80, 20)),
        ("bias_ih_l0_reverse", (80,)), ("bias_hh_l0_reverse", (80,)),
        ("weight_ih_l1", (80, 40)), ("weight_hh_l1", (80, 20)), ("bias_ih_l1", (80,)), ("bias_hh_l1", (80,)),
        ("weight_ih_l1_reverse", (80, 40)), ("weight_hh_l1_reverse", (80, 20)),
        ("bias_ih_l1_reverse", (80,)), ("bias_hh_l1_reverse", (80,)),
    ]
    assert list(lstm.state_dict()) == [n for n, _ in names]
    gru = GRU(3, 5, num_layers=2, bias=False)
    assert [(n, tuple(p.shape)) for n, p in gru.named_parameters()] == [
        ("weight_ih_l0", (15, 3)), ("weight_hh_l0", (15, 5)), ("weight_ih_l1", (15, 5)), ("weight_hh_l1", (15, 5))]
    rnn = RNN(3, 5)
    assert [(n, tuple(p.shape)) for n, p in rnn.named_parameters()] == [
        ("weight_ih_l0", (5, 3)), ("weight_hh_l0", (5, 5)), ("bias_ih_l0", (5,)), ("bias_hh_l0", (5,))]
    assert [[tuple(p.shape) for p in ws] for ws in gru.all_weights] == [[(15, 3), (15, 5)], [(15, 5), (15, 5)]]
    cell = LSTMCell(3, 4)
    assert [(n, tuple(p.shape)) for n, p in cell.named_parameters()] == [
        ("weight_ih", (16, 3)), ("weight_hh", (16, 4)), ("bias_ih", (16,)), ("bias_hh", (16,))]
    assert GRUCell(3, 4, bias=False).bias_ih is None
    assert [n for n, _ in GRUCell(3, 4, bias=False).named_parameters()] == ["weight_ih", "weight_hh"]


def test_state_dict_round_trip_gives_same_outputs():
    source = LSTM(3, 4, num_layers=2, bidirectional=True)
    target = LSTM(3, 4, num_layers=2, bidirectional=True)
    target.load_state_dict(source.state_dict())
    x = randn(5, 2, 3)
    np.testing.assert_array_equal(source(x)[0].detach().numpy(), target(x)[0].detach().numpy())


def test_initialisation_is_uniform_within_one_over_sqrt_hidden():
    layer = GRU(4, 16, num_layers=2)
    bound = 1 / np.sqrt(16)
    values = np.concatenate([p.detach().numpy().ravel() for p in layer.parameters()])
    assert values.min() >= -bound and values.max() <= bound
    assert values.min() < -0.9 * bound and values.max() > 0.9 * bound
    assert all(p.requires_grad and p.dtype is ember.float32 for p in layer.parameters())
    table = Embedding(200, 50)
    weights = table.weight.detach().numpy()
    assert abs(weights.mean()) < 0.05 and abs(weights.std() - 1) < 0.05


def test_repr_matches_torch():
    assert repr(LSTM(10, 20, num_layers=2, batch_first=True)) == "LSTM(10, 20, num_layers=2, batch_first=True)"
    assert repr(GRU(3, 4, num_layers=2, bias=False, dropout=0.5, bidirectional=True)) == \
        "GRU(3, 4, num_layers=2, bias=False, dropout=0.5, bidirectional=True)"
    assert repr(RNN(3, 4, nonlinearity="relu")) == "RNN(3, 4)"
    assert repr(RNNCell(3, 4, nonlinearity="relu")) == "RNNCell(3, 4, nonlinearity=relu)"
    assert repr(LSTMCell(3, 4, bias=False)) == "LSTMCell(3, 4, bias=False)"
    assert repr(GRUCell(3, 4)) == "GRUCell(3, 4)"
    assert repr(Embedding(10, 3, padding_idx=0)) == "Embedding(10, 3, padding_idx=0)"


def test_dropout_acts_between_layers_only_in_training():
    layer = LSTM(3, 4, num_layers=2, dropout=1.0)
    x = randn(5, 2, 3)
    zeros = np.zeros((2, 2, 4))
    layer.eval()
    out_eval, _ = layer(x)
    want_eval, _, _ = reference_rnn("LSTM", params_np(layer), x.detach().numpy().astype(np.float64), zeros, zeros, 2,
                                    False, False)
    np.testing.assert_allclose(out_eval.detach().numpy(), want_eval, rtol=1e-5, atol=1e-6)
    layer.train()
    out_train, _ = layer(x)
    # p = 1 zeroes everything between the layers: the second layer sees a zero input
    want_train, _, _ = reference_rnn("LSTM", params_np(layer), x.detach().numpy().astype(np.float64), zeros, zeros, 2,
                                     False, False, zero_between_layers=True)
    np.testing.assert_allclose(out_train.detach().numpy(), want_train, rtol=1e-5, atol=1e-6)

    half = GRU(3, 4, num_layers=2, dropout=0.5)
    ember.manual_seed(5)
    first = half(x)[0].detach().numpy()
    second = half(x)[0].detach().numpy()
    ember.manual_seed(5)
    again = half(x)[0].detach().numpy()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, again)
    half.eval()
    np.testing.assert_array_equal(half(x)[0].detach().numpy(), half(x)[0].detach().numpy())


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        GRU(3, 4, dropout=0.3)


def test_recurrent_errors_name_the_module_and_shapes():
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout"):
        GRU(3, 4, num_layers=2, dropout=1.5)
    layer = LSTM(3, 4, num_layers=2)
    with pytest.raises(RuntimeError, match=r"LSTM: input f32\[5,2,7\] has 7 features.*input_size=3"):
        layer(randn(5, 2, 7))
    with pytest.raises(RuntimeError, match=r"LSTM: expected h_0 of shape \[2, 2, 4\], got f32\[1,2,4\]"):
        layer(randn(5, 2, 3), (randn(1, 2, 4), randn(2, 2, 4)))
    with pytest.raises(RuntimeError, match="float64 but the parameters are float32"):
        layer(randn(5, 2, 3, dtype=ember.float64))
    with pytest.raises(ValueError, match="2D or 3D"):
        layer(randn(3))
    with pytest.raises(RuntimeError, match="unbatched 2-D input, h_0 should also be 2-D"):
        layer(randn(5, 3), (randn(2, 1, 4), randn(2, 1, 4)))
    with pytest.raises(ValueError, match="1D or 2D"):
        GRUCell(3, 4)(randn(2, 2, 3))


# ----------------------------------------------------------------------------- cells

CELL_MODES = {"RNN_TANH": lambda i, h, **k: RNNCell(i, h, **k),
              "RNN_RELU": lambda i, h, **k: RNNCell(i, h, nonlinearity="relu", **k),
              "LSTM": LSTMCell, "GRU": GRUCell}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
def test_cell_matches_numpy_reference(mode, bias):
    cell = CELL_MODES[mode](5, 4, bias=bias)
    p = params_np(cell)
    weights = (p["weight_ih"], p["weight_hh"], p.get("bias_ih"), p.get("bias_hh"))
    x, h, c = randn(3, 5), randn(3, 4), randn(3, 4)
    result = cell(x, (h, c) if mode == "LSTM" else h)
    want_h, want_c = reference_step(mode, x.detach().numpy().astype(np.float64), h.detach().numpy().astype(np.float64),
                                    c.detach().numpy().astype(np.float64), *weights)
    got_h = result[0] if mode == "LSTM" else result
    np.testing.assert_allclose(got_h.detach().numpy(), want_h, rtol=1e-5, atol=1e-6)
    if mode == "LSTM":
        np.testing.assert_allclose(result[1].detach().numpy(), want_c, rtol=1e-5, atol=1e-6)
    # default state is zero; unbatched input gives unbatched state
    zero = np.zeros(4)
    default = cell(x[0])
    want_h, want_c = reference_step(mode, x[0].detach().numpy().astype(np.float64), zero, zero, *weights)
    got_h = default[0] if mode == "LSTM" else default
    assert tuple(got_h.shape) == (4,)
    np.testing.assert_allclose(got_h.detach().numpy(), want_h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_cell_gradients_match_finite_differences(mode):
    cell = CELL_MODES[mode](3, 2, dtype=ember.float64)
    x = randn(2, 3, dtype=ember.float64, requires_grad=True)
    h = randn(2, 2, dtype=ember.float64, requires_grad=True)
    c = randn(2, 2, dtype=ember.float64, requires_grad=True)

    def loss():
        result = cell(x, (h, c) if mode == "LSTM" else h)
        return weighted_sum(list(result) if mode == "LSTM" else [result])

    tensors = [("input", x), ("h", h)] + ([("c", c)] if mode == "LSTM" else []) + list(cell.named_parameters())
    check_gradients(loss, tensors)


# ----------------------------------------------------------------------------- embedding

def test_embedding_forward_and_accumulating_backward():
    table = Embedding(6, 3)
    indices = ember.tensor([[1, 4, 1], [0, 1, 5]])
    out = table(indices)
    weights = table.weight.detach().numpy()
    np.testing.assert_array_equal(out.detach().numpy(), weights[indices.numpy()])
    upstream = randn(2, 3, 3)
    out.backward(upstream)
    want = np.zeros((6, 3), np.float32)
    np.add.at(want, indices.numpy(), upstream.detach().numpy())
    np.testing.assert_allclose(table.weight.grad.detach().numpy(), want, rtol=1e-6)
    assert tuple(table(ember.tensor(2)).shape) == (3,)
    assert tuple(table(ember.tensor([[[0]]], dtype=ember.int32)).shape) == (1, 1, 1, 3)


def test_embedding_padding_row_starts_zero_and_gets_no_gradient():
    table = Embedding(5, 2, padding_idx=-1)
    assert table.padding_idx == 4
    np.testing.assert_array_equal(table.weight.detach().numpy()[4], [0, 0])
    with ember.no_grad():
        table.weight[4] = ember.tensor([3.0, -3.0])  # a non-zero padding row is still returned as is
    indices = ember.tensor([4, 2, 4, 0])
    out = table(indices)
    np.testing.assert_array_equal(out.detach().numpy()[0], [3.0, -3.0])
    upstream = randn(4, 2)
    out.backward(upstream)
    grad = table.weight.grad.detach().numpy()
    np.testing.assert_array_equal(grad[4], [0, 0])
    np.testing.assert_allclose(grad[2], upstream.detach().numpy()[1])
    np.testing.assert_allclose(grad[0], upstream.detach().numpy()[3])


def test_embedding_scale_grad_by_freq_divides_by_occurrences():
    table = Embedding(4, 2, scale_grad_by_freq=True)
    indices = ember.tensor([[1, 1, 3], [1, 0, 3]])
    out = table(indices)
    np.testing.assert_array_equal(out.detach().numpy(), table.weight.detach().numpy()[indices.numpy()])
    upstream = randn(2, 3, 2)
    out.backward(upstream)
    want = np.zeros((4, 2), np.float32)
    np.add.at(want, indices.numpy(), upstream.detach().numpy())
    want /= np.maximum(np.bincount(indices.numpy().ravel(), minlength=4), 1)[:, None]
    np.testing.assert_allclose(table.weight.grad.detach().numpy(), want, rtol=1e-6)


def test_embedding_max_norm_renormalises_looked_up_rows():
    weights = ember.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])
    table = Embedding.from_pretrained(weights.clone(), max_norm=1.0)
    out = table(ember.tensor([0, 1]))
    np.testing.assert_allclose(out.detach().numpy(), [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)
    np.testing.assert_allclose(table.weight.detach().numpy()[2], [6.0, 8.0])  # not looked up, untouched


def test_embedding_from_pretrained_freezes_and_shares():
    weights = ember.tensor([[1.0, 2.0], [3.0, 4.0]])
    frozen = Embedding.from_pretrained(weights)
    assert not frozen.weight.requires_grad
    assert not frozen(ember.tensor([1])).requires_grad
    np.testing.assert_array_equal(frozen(ember.tensor([1, 0])).detach().numpy(), [[3, 4], [1, 2]])
    trainable = Embedding.from_pretrained(weights, freeze=False, padding_idx=0)
    assert trainable.weight.requires_grad
    np.testing.assert_array_equal(trainable.weight.detach().numpy(), weights.detach().numpy())
    trainable(ember.tensor([0, 1, 1])).sum().backward()
    np.testing.assert_array_equal(trainable.weight.grad.detach().numpy(), [[0, 0], [2, 2]])
    with pytest.raises(ValueError, match="2-dimensional"):
        Embedding.from_pretrained(ember.tensor([1.0, 2.0]))


def test_embedding_functional_and_errors():
    weight = randn(4, 3, requires_grad=True)
    out = embedding(ember.tensor([3, 0]), weight, padding_idx=0)
    out.sum().backward()
    np.testing.assert_array_equal(weight.grad.detach().numpy(), [[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 1]])
    table = Embedding(4, 3)
    with pytest.raises(IndexError, match=r"index 4 is out of range for a table of 4 rows"):
        table(ember.tensor([4]))
    with pytest.raises(IndexError, match="index -1"):
        table(ember.tensor([-1]))
    with pytest.raises(RuntimeError, match="integer tensor"):
        table(ember.tensor([1.0]))
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(4, 3, padding_idx=4)


def test_embedding_feeds_lstm_end_to_end():
    table, lstm = Embedding(7, 3, padding_idx=0), LSTM(3, 4, batch_first=True)
    tokens = ember.tensor([[1, 2, 0], [6, 5, 4]])
    out, (h_n, c_n) = lstm(table(tokens))
    out.sum().backward()
    assert tuple(out.shape) == (2, 3, 4) and tuple(h_n.shape) == (1, 2, 4)
    assert np.all(table.weight.grad.detach().numpy()[0] == 0) and np.any(table.weight.grad.detach().numpy()[1] != 0)
    assert all(p.grad is not None for p in lstm.parameters())


# ----------------------------------------------------------------------------- embedding bags

def reference_bags(weight, bags, mode, sample_weights=None, padding_idx=None):
    out = np.zeros((len(bags), weight.shape[1]))
    for b, indices in enumerate(bags):
        kept = [(j, i) for j, i in enumerate(indices) if i != padding_idx]
        if not kept:
            continue
        rows = np.stack([weight[i] * (1.0 if sample_weights is None else sample_weights[b][j]) for j, i in kept])
        out[b] = {"sum": rows.sum(0), "mean": rows.mean(0), "max": rows.max(0)}[mode]
    return out


BAGS = [[1, 4, 1], [], [0], [4, 3, 2, 2]]


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_bag_with_offsets_matches_reference_and_finite_differences(mode, padding_idx):
    bag = EmbeddingBag(5, 3, mode=mode, padding_idx=padding_idx, dtype=ember.float64)
    indices = ember.tensor([i for b in BAGS for i in b])
    offsets = ember.tensor(np.cumsum([0] + [len(b) for b in BAGS[:-1]]))
    out = bag(indices, offsets)
    want = reference_bags(bag.weight.detach().numpy(), BAGS, mode, padding_idx=padding_idx)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    check_gradients(lambda: weighted_sum([bag(indices, offsets)]), [("weight", bag.weight)])
    with_last = EmbeddingBag.from_pretrained(bag.weight.detach(), mode=mode, include_last_offset=True,
                                             padding_idx=padding_idx)
    last = ember.tensor(list(offsets.numpy()) + [indices.shape[0]])
    np.testing.assert_allclose(with_last(indices, last).detach().numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_fixed_length_2d_input(mode):
    bag = EmbeddingBag(6, 2, mode=mode, dtype=ember.float64)
    indices = ember.tensor([[0, 5, 5], [2, 1, 3]])
    out = bag(indices)
    want = reference_bags(bag.weight.detach().numpy(), indices.numpy().tolist(), mode)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    check_gradients(lambda: weighted_sum([bag(indices)]), [("weight", bag.weight)])


def test_embedding_bag_per_sample_weights_in_sum_mode():
    weight = randn(5, 3, dtype=ember.float64, requires_grad=True)
    indices = ember.tensor([[1, 2], [2, 4]])
    sample_weights = ember.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=ember.float64, requires_grad=True)
    out = embedding_bag(indices, weight, mode="sum", per_sample_weights=sample_weights)
    want = reference_bags(weight.detach().numpy(), indices.numpy().tolist(), "sum", sample_weights.detach().numpy())
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-12)
    check_gradients(lambda: weighted_sum([embedding_bag(indices, weight, mode="sum",
                                                        per_sample_weights=sample_weights)]),
                    [("weight", weight), ("per_sample_weights", sample_weights)])
    with pytest.raises(NotImplementedError, match="only supported for mode='sum'"):
        embedding_bag(indices, weight, mode="mean", per_sample_weights=sample_weights)
    with pytest.raises(ValueError, match="offsets has to be None"):
        embedding_bag(indices, weight, offsets=ember.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"offsets\[0\] has to be 0"):
        embedding_bag(ember.tensor([1, 2]), weight, offsets=ember.tensor([1]))
    assert repr(EmbeddingBag(10, 3)) == "EmbeddingBag(10, 3, mode='mean')"
    assert repr(EmbeddingBag(10, 3, mode="max", padding_idx=0)) == "EmbeddingBag(10, 3, mode='max', padding_idx=0)"


def test_traced_embedding_lstm_and_bag_replay_on_new_indices():
    """Everything is Tensor ops: the trace has no guards and the interpreter reproduces eager
    results for different tokens and offsets (nothing data-dependent was baked in)."""
    from ember.ir.interpreter import interpret

    class Model(ember.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = Embedding(7, 3, padding_idx=0, scale_grad_by_freq=True)
            self.lstm = LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
            self.bag = EmbeddingBag(7, 2, mode="max")

        def forward(self, tokens, offsets):
            out, (h_n, _) = self.lstm(self.table(tokens))
            return out.sum() + h_n.sum() + self.bag(tokens.reshape(-1), offsets).sum()

    model = Model()
    graph = ember.trace(model, ember.tensor([[1, 2, 0], [6, 5, 4]]), ember.tensor([0, 2, 2]))
    graph.verify()
    assert not graph.guards
    params = {name: p.detach().numpy() for name, p in model.named_parameters()}
    tokens, offsets = ember.tensor([[3, 3, 1], [0, 2, 6]]), ember.tensor([0, 1, 4])
    replayed = interpret(graph, tokens.numpy(), offsets.numpy(), params=params)
    np.testing.assert_allclose(replayed, model(tokens, offsets).item(), rtol=1e-5)


def test_warnings_are_not_raised_for_valid_configs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LSTM(3, 4, num_layers=2, dropout=0.2)
        GRU(3, 4)
