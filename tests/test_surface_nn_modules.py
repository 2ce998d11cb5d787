"""nn modules with parameters or state written the way a PyTorch user writes them (`import ember as
torch`, `torch.nn.X`, `F.x`): batch, instance, layer and group norms, dropouts, EmbeddingBag, recurrent
cells and layers, the Transformer decoder, ParameterDict, and modules through ember.compile. Values
against numpy in float64, gradients against float64 finite differences, reprs and errors as PyTorch's,
and eager against ember.compile. (tests/test_surface_nn.py has the functional side.)"""
import collections
import math

import numpy as np
import pytest

import ember as torch
import ember.nn as nn
import ember.nn.functional as F
from finite_differences import check_vjp
from gradcheck import check_module
from test_surface_nn import SELU_ALPHA, SELU_SCALE, params, seeded, sigmoid, softmax, tensor

RNG = np.random.default_rng(1)

# ----------------------------------------------------------------------------- normalization

def normalized(x, axes, mean=None, var=None, eps=1e-5):
    mean = x.mean(axes, keepdims=True) if mean is None else mean
    return (x - mean) / np.sqrt((x.var(axes, keepdims=True) if var is None else var) + eps)


GAMMA, BETA = np.array([1.0, 2.0, 0.5]), np.array([0.0, -1.0, 0.3])


def set_affine(module):
    with torch.no_grad():
        module.weight.copy_(tensor(GAMMA))
        module.bias.copy_(tensor(BETA))
    return module


def test_batchnorm3d_normalizes_with_batch_statistics_and_tracks_running_ones():
    bn = set_affine(nn.BatchNorm3d(3).double())
    x, y = RNG.standard_normal((2, 3, 2, 3, 2)) * 2 + 1, RNG.standard_normal((2, 3, 2, 2, 2))
    axes, shape = (0, 2, 3, 4), (1, 3, 1, 1, 1)
    affine = (GAMMA.reshape(shape), BETA.reshape(shape))
    np.testing.assert_allclose(bn(tensor(x)).detach().numpy(), normalized(x, axes) * affine[0] + affine[1], rtol=1e-10)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * x.mean(axes), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * x.var(axes, ddof=1), rtol=1e-12)
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    expected = normalized(x, axes, bn.running_mean.numpy().reshape(shape), bn.running_var.numpy().reshape(shape))
    np.testing.assert_allclose(bn(tensor(x)).detach().numpy(), expected * affine[0] + affine[1], rtol=1e-10)
    cumulative = nn.BatchNorm3d(3, momentum=None).double()
    cumulative(tensor(x))
    cumulative(tensor(y))
    np.testing.assert_allclose(cumulative.running_mean.numpy(), (x.mean(axes) + y.mean(axes)) / 2, rtol=1e-12)
    check_module(nn.BatchNorm3d(2), [RNG.standard_normal((2, 2, 2, 2, 1))])


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (4, 3)), (nn.BatchNorm2d, (2, 3, 2, 2)),
                                       (nn.BatchNorm3d, (2, 3, 2, 1, 2))], ids=["1d", "2d", "3d"])
def test_batchnorm_without_bias_scales_only(cls, shape):
    bn = cls(3, bias=False)
    assert bn.bias is None and [name for name, _ in bn.named_parameters()] == ["weight"]
    assert list(bn.state_dict()) == ["weight", "running_mean", "running_var", "num_batches_tracked"]
    assert repr(bn) == f"{cls.__name__}(3, eps=1e-05, momentum=0.1, affine=True, bias=False, track_running_stats=True)"
    bn.double()
    with torch.no_grad():
        bn.weight.copy_(tensor(GAMMA))
    x = RNG.standard_normal(shape) * 2 + 1
    axes = (0,) + tuple(range(2, len(shape)))
    scale = GAMMA.reshape((1, 3) + (1,) * (len(shape) - 2))
    np.testing.assert_allclose(bn(tensor(x)).detach().numpy(), normalized(x, axes) * scale, rtol=1e-10, atol=1e-12)
    check_module(cls(3, bias=False), [x])


NORM_REPRS = [  # PyTorch 2.13's: every norm with a bias option shows it (False without an affine)
    (lambda: nn.BatchNorm2d(16),
     "BatchNorm2d(16, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"),
    (lambda: nn.BatchNorm1d(8, momentum=None, affine=False),
     "BatchNorm1d(8, eps=1e-05, momentum=None, affine=False, bias=False, track_running_stats=True)"),
    (lambda: nn.BatchNorm1d(3, 1e-3, 0.2, False, False),
     "BatchNorm1d(3, eps=0.001, momentum=0.2, affine=False, bias=False, track_running_stats=False)"),
    (lambda: nn.LayerNorm(10), "LayerNorm((10,), eps=1e-05, elementwise_affine=True, bias=True)"),
    (lambda: nn.LayerNorm([3, 4], bias=False), "LayerNorm((3, 4), eps=1e-05, elementwise_affine=True, bias=False)"),
    (lambda: nn.LayerNorm(3, elementwise_affine=False),
     "LayerNorm((3,), eps=1e-05, elementwise_affine=False, bias=False)"),
    (lambda: nn.GroupNorm(2, 4), "GroupNorm(2, 4, eps=1e-05, affine=True, bias=True)"),
    (lambda: nn.GroupNorm(1, 3, bias=False), "GroupNorm(1, 3, eps=1e-05, affine=True, bias=False)"),
    (lambda: nn.RMSNorm(3), "RMSNorm((3,), eps=None, elementwise_affine=True)"),
]


@pytest.mark.parametrize("make,text", NORM_REPRS, ids=[text.split(",")[0] for _, text in NORM_REPRS])
def test_norm_reprs_show_the_bias_as_pytorch(make, text):
    assert repr(make()) == text


def test_group_norm_without_bias_and_its_group_check():
    norm = nn.GroupNorm(1, 3, bias=False).double()
    assert norm.bias is None and [name for name, _ in norm.named_parameters()] == ["weight"]
    with torch.no_grad():
        norm.weight.copy_(tensor(GAMMA))
    x = RNG.standard_normal((2, 3, 4))
    np.testing.assert_allclose(norm(tensor(x)).detach().numpy(), normalized(x, (1, 2)) * GAMMA.reshape(1, 3, 1),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"num_channels \(3\) must be divisible by num_groups \(2\)"):
        nn.GroupNorm(2, 3)


INSTANCE_NORMS = [
    (nn.InstanceNorm1d(3, affine=True), (2, 3, 6),
     "InstanceNorm1d(3, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=False)"),
    (nn.InstanceNorm3d(3), (2, 3, 2, 3, 2),
     "InstanceNorm3d(3, eps=1e-05, momentum=0.1, affine=False, bias=False, track_running_stats=False)")]


@pytest.mark.parametrize("module,shape,text", INSTANCE_NORMS, ids=["1d", "3d"])
def test_instance_norms_normalize_each_sample_and_channel(module, shape, text):
    assert repr(module) == text
    module.double()
    x = RNG.standard_normal(shape) * 3 + 2
    expected = normalized(x, tuple(range(2, len(shape))))
    if module.affine:
        scale = (-1,) + (1,) * (len(shape) - 2)
        expected = expected * GAMMA.reshape(scale) + BETA.reshape(scale)
        set_affine(module)
    np.testing.assert_allclose(module(tensor(x)).detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(module(tensor(x[0])).detach().numpy(), expected[0], rtol=1e-10, atol=1e-12)  # unbatched
    check_module(module, [x[:1]])


def test_instance_norm_with_running_statistics():
    tracked = nn.InstanceNorm3d(3, track_running_stats=True).double()
    x = RNG.standard_normal((2, 3, 2, 2, 2)) + 1
    tracked(tensor(x))
    np.testing.assert_allclose(tracked.running_mean.numpy(), 0.1 * x.mean((2, 3, 4)).mean(0), rtol=1e-12)
    np.testing.assert_allclose(tracked.running_var.numpy(), 0.9 + 0.1 * x.var((2, 3, 4), ddof=1).mean(0), rtol=1e-12)
    tracked.eval()
    shape = (1, 3, 1, 1, 1)
    expected = normalized(x, None, tracked.running_mean.numpy().reshape(shape), tracked.running_var.numpy().reshape(shape))
    np.testing.assert_allclose(tracked(tensor(x)).detach().numpy(), expected, rtol=1e-10)


# ----------------------------------------------------------------------------- dropout

def test_channel_dropouts_zero_whole_channels_and_scale_the_rest():
    x = RNG.uniform(1.0, 2.0, (20, 50, 3, 2, 2))
    for call, data in [(nn.Dropout3d(0.3), x), (lambda t: F.dropout3d(t, 0.3), x),
                       (nn.Dropout1d(0.3), x[:, :, :, 0, 0])]:
        out = call(tensor(data)).detach().numpy()
        kept = (out != 0).reshape(out.shape[:2] + (-1,))
        assert np.all(kept.all(-1) | ~kept.any(-1))  # a channel is kept or dropped whole
        np.testing.assert_allclose(out[out != 0], (data / 0.7)[out != 0], rtol=1e-12)
        assert abs(1 - kept.all(-1).mean() - 0.3) < 0.05
    for module in (nn.Dropout3d(0.3).eval(), nn.Dropout1d(0.3).eval()):
        data = x if isinstance(module, nn.Dropout3d) else x[:, :, :, 0, 0]
        np.testing.assert_array_equal(module(tensor(data)).detach().numpy(), data)
    np.testing.assert_array_equal(F.dropout3d(tensor(x), 0.3, training=False).detach().numpy(), x)
    assert repr(nn.Dropout1d(0.3)) == "Dropout1d(p=0.3, inplace=False)"
    assert repr(nn.Dropout3d()) == "Dropout3d(p=0.5, inplace=False)"
    check_vjp(seeded(lambda t: F.dropout3d(t, 0.3)), [x[:2, :3]])


def test_alpha_dropout_keeps_zero_mean_unit_variance():
    p, alpha = 0.2, -SELU_ALPHA * SELU_SCALE
    a = ((1 - p) * (1 + p * alpha ** 2)) ** -0.5
    b = -a * alpha * p
    x = RNG.standard_normal(100_000)
    for call in (nn.AlphaDropout(p), lambda t: F.alpha_dropout(t, p, training=True)):
        out = call(tensor(x)).detach().numpy()
        dropped = np.isclose(out, a * alpha + b, rtol=0, atol=1e-12) & ~np.isclose(out, a * x + b, rtol=0, atol=1e-12)
        np.testing.assert_allclose(out[~dropped], a * x[~dropped] + b, rtol=1e-12)
        assert abs(dropped.mean() - p) < 0.01 and abs(out.mean()) < 0.02 and abs(out.std() - 1) < 0.02
    np.testing.assert_array_equal(nn.AlphaDropout(p).eval()(tensor(x)).detach().numpy(), x)
    np.testing.assert_array_equal(F.alpha_dropout(tensor(x), p).detach().numpy(), x)  # training=False by default
    assert repr(nn.AlphaDropout(0.2)) == "AlphaDropout(p=0.2, inplace=False)"
    check_vjp(seeded(lambda t: F.alpha_dropout(t, p, training=True)), [x[:20]])


# ----------------------------------------------------------------------------- EmbeddingBag

def embedding_bag_reference(weight, indices, offsets, mode, per_sample_weights=None, padding_idx=None,
                            include_last_offset=False):
    """Each bag is indices[offsets[i]:offsets[i+1]]; padding_idx entries are left out (an empty bag
    gives zeros); per_sample_weights scale the rows ('sum' only)."""
    bounds = list(offsets) + ([] if include_last_offset else [len(indices)])
    scale = np.ones(len(indices)) if per_sample_weights is None else per_sample_weights
    bags = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        ids, weights = indices[start:end], scale[start:end]
        keep = ids != padding_idx
        rows = weight[ids[keep]] * weights[keep, None]
        if len(rows) == 0:
            bags.append(np.zeros(weight.shape[1]))
        else:
            bags.append({"sum": rows.sum(0), "mean": rows.mean(0), "max": rows.max(0)}[mode])
    return np.stack(bags)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_module_and_function_reduce_each_bag(mode):
    bag = nn.EmbeddingBag(10, 3, mode=mode).double()
    assert repr(bag) == f"EmbeddingBag(10, 3, mode='{mode}')"  # (PyTorch formats the fields with repr)
    weight = params(bag)["weight"]
    indices, offsets = np.array([1, 2, 4, 5, 4, 3, 2, 9]), np.array([0, 2, 2, 5])
    expected = embedding_bag_reference(weight, indices, offsets, mode)
    got = bag(torch.tensor(indices), torch.tensor(offsets))
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    fixed = np.array([[1, 2, 4], [5, 4, 3]])
    np.testing.assert_allclose(bag(torch.tensor(fixed)).detach().numpy(),
                               embedding_bag_reference(weight, fixed.reshape(-1), [0, 3], mode), rtol=1e-12)
    got = F.embedding_bag(torch.tensor(indices), tensor(weight), torch.tensor([0, 2, 2, 5, 8]), mode=mode,
                          include_last_offset=True, padding_idx=4)
    np.testing.assert_allclose(got.detach().numpy(),
                               embedding_bag_reference(weight, indices, [0, 2, 2, 5, 8], mode, padding_idx=4,
                                                       include_last_offset=True), rtol=1e-12)
    check_vjp(lambda w: F.embedding_bag(torch.tensor(indices), w, torch.tensor(offsets), mode=mode), [weight])


def test_embedding_bag_per_sample_weights_and_padding_idx():
    bag = nn.EmbeddingBag(10, 3, mode="sum", padding_idx=0).double()
    assert repr(bag) == "EmbeddingBag(10, 3, mode='sum', padding_idx=0)"
    assert repr(nn.EmbeddingBag(4, 2, max_norm=1.0)) == "EmbeddingBag(4, 2, max_norm=1.0, mode='mean')"
    weight = params(bag)["weight"]
    assert np.all(weight[0] == 0)
    indices, offsets, scale = np.array([0, 2, 4, 5, 0]), np.array([0, 3]), RNG.uniform(0.5, 2, 5)
    expected = embedding_bag_reference(weight, indices, offsets, "sum", scale, padding_idx=0)
    got = bag(torch.tensor(indices), torch.tensor(offsets), per_sample_weights=tensor(scale))
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)
    check_vjp(lambda w, s: F.embedding_bag(torch.tensor(indices), w, torch.tensor(offsets), mode="sum",
                                           per_sample_weights=s), [weight, scale])
    with pytest.raises(NotImplementedError, match="per_sample_weights is only supported for mode='sum'"):
        F.embedding_bag(torch.tensor(indices), tensor(weight), torch.tensor(offsets), per_sample_weights=tensor(scale))


# ----------------------------------------------------------------------------- recurrent layers

def rnn_reference(module, x, h0, activation):
    """Stacked, optionally bidirectional Elman RNN from the module's float64 parameters."""
    p = params(module)
    if module.batch_first:
        x = x.swapaxes(0, 1)
    directions = 2 if module.bidirectional else 1
    layer_input, last = x, []
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            h = h0[layer * directions + direction]
            sequence = [None] * len(x)
            for t in (reversed(range(len(x))) if direction else range(len(x))):
                h = activation(layer_input[t] @ p["weight_ih" + suffix].T + p["bias_ih" + suffix]
                               + h @ p["weight_hh" + suffix].T + p["bias_hh" + suffix])
                sequence[t] = h
            outputs.append(np.stack(sequence))
            last.append(h)
        layer_input = np.concatenate(outputs, -1)
    return (layer_input.swapaxes(0, 1) if module.batch_first else layer_input), np.stack(last)


def relu(x):
    return np.maximum(x, 0)


class Picked(nn.Module):
    """One tensor out of a recurrent module, for check_module."""
    def __init__(self, module, pick):
        super().__init__()
        self.module, self.pick = module, pick

    def forward(self, *inputs):
        return self.pick(self.module, *inputs)


def test_rnn_layers_match_the_reference_stacked_bidirectional_batch_first():
    rnn = nn.RNN(3, 4, num_layers=2, nonlinearity="relu", batch_first=True, bidirectional=True).double()
    assert repr(rnn) == "RNN(3, 4, num_layers=2, batch_first=True, bidirectional=True)"
    assert isinstance(rnn, nn.RNNBase) and repr(nn.RNN(3, 4)) == "RNN(3, 4)"
    x, h0 = RNG.standard_normal((2, 5, 3)), RNG.standard_normal((4, 2, 4))
    out, h_n = rnn(tensor(x), tensor(h0))
    expected_out, expected_h = rnn_reference(rnn, x, h0, relu)
    np.testing.assert_allclose(out.detach().numpy(), expected_out, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n.detach().numpy(), expected_h, rtol=1e-12, atol=1e-14)
    plain = nn.RNN(3, 4).double()
    out, h_n = plain(tensor(x[0]))  # unbatched, zero initial state
    expected_out, expected_h = rnn_reference(plain, x[0][:, None], np.zeros((1, 1, 4)), np.tanh)
    np.testing.assert_allclose(out.detach().numpy(), expected_out[:, 0], rtol=1e-12)
    np.testing.assert_allclose(h_n.detach().numpy(), expected_h[:, 0], rtol=1e-12)
    check_module(Picked(nn.RNN(2, 3, bidirectional=True), lambda m, x: m(x)[0]), [RNG.standard_normal((3, 1, 2))])


def test_rnn_base_classes_build_the_parameters_of_each_mode():
    lstm_base = nn.RNNBase("LSTM", 3, 4)
    assert repr(lstm_base) == "RNNBase(3, 4)"
    assert [(n, tuple(p.shape)) for n, p in lstm_base.named_parameters()] == [
        ("weight_ih_l0", (16, 3)), ("weight_hh_l0", (16, 4)), ("bias_ih_l0", (16,)), ("bias_hh_l0", (16,))]
    assert all(issubclass(cls, nn.RNNBase) for cls in (nn.RNN, nn.GRU, nn.LSTM))
    for mode in ("GRU", "LSTM", "RNN_TANH"):  # as in PyTorch, only RNN, LSTM and GRU have a forward
        with pytest.raises(NotImplementedError, match=r'Module \[RNNBase\] is missing the required "forward" function'):
            nn.RNNBase(mode, 3, 4)(torch.ones(2, 3))
    assert nn.GRU(3, 4)(torch.ones(2, 3))[0].shape == (2, 4)
    cell_base = nn.RNNCellBase(3, 4, True, 2)
    assert repr(cell_base) == "RNNCellBase(3, 4)"
    assert {n: tuple(p.shape) for n, p in cell_base.named_parameters()} == {
        "weight_ih": (8, 3), "weight_hh": (8, 4), "bias_ih": (8,), "bias_hh": (8,)}
    assert all(issubclass(cls, nn.RNNCellBase) for cls in (nn.RNNCell, nn.GRUCell, nn.LSTMCell))


def cell_reference(kind, p, x, h, c):
    """One step of each cell (PyTorch's gate order); the LSTM's (h, c) concatenated."""
    gates = x @ p["weight_ih"].T + p.get("bias_ih", 0)
    hidden = h @ p["weight_hh"].T + p.get("bias_hh", 0)
    if kind in ("tanh", "relu"):
        return np.tanh(gates + hidden) if kind == "tanh" else relu(gates + hidden)
    if kind == "gru":
        (xr, xz, xn), (hr, hz, hn) = np.split(gates, 3, -1), np.split(hidden, 3, -1)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        return (1 - z) * np.tanh(xn + r * hn) + z * h
    i, f, g, o = np.split(gates + hidden, 4, -1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return np.concatenate([sigmoid(o) * np.tanh(c), c], -1)


def run_cell(cell, x, h=None, c=None):
    state = None if h is None else ((h, c) if isinstance(cell, nn.LSTMCell) else h)
    out = cell(x) if state is None else cell(x, state)
    return torch.cat(out, -1) if isinstance(out, tuple) else out


CELLS = [("tanh", nn.RNNCell(3, 4), "RNNCell(3, 4)"),
         ("relu", nn.RNNCell(3, 4, nonlinearity="relu"), "RNNCell(3, 4, nonlinearity=relu)"),
         ("gru", nn.GRUCell(3, 4), "GRUCell(3, 4)"), ("gru", nn.GRUCell(3, 4, bias=False), "GRUCell(3, 4, bias=False)"),
         ("lstm", nn.LSTMCell(3, 4), "LSTMCell(3, 4)")]


@pytest.mark.parametrize("kind,cell,text", CELLS, ids=[c[2] for c in CELLS])
def test_recurrent_cells_match_the_gate_equations_batched_unbatched_and_from_zero(kind, cell, text):
    assert repr(cell) == text
    picked = Picked(cell, run_cell).double()
    p = params(cell)
    x, h, c = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 4)), RNG.standard_normal((2, 4))
    state = (h, c) if kind == "lstm" else (h,)
    expected = cell_reference(kind, p, x, h, c)
    np.testing.assert_allclose(picked(tensor(x), *map(tensor, state)).detach().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(picked(tensor(x[1]), *[tensor(s[1]) for s in state]).detach().numpy(), expected[1],
                               rtol=1e-12)
    np.testing.assert_allclose(picked(tensor(x)).detach().numpy(), cell_reference(kind, p, x, 0 * h, 0 * c), rtol=1e-12)
    check_module(picked, [x, *state])


# ----------------------------------------------------------------------------- Transformer decoder

def layer_norm(x, weight, bias, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * weight + bias


def attention_reference(p, prefix, query, memory, heads, mask=None):
    """nn.MultiheadAttention on (L, N, E) inputs from its packed float64 projections."""
    width = query.shape[-1]
    weight, bias = p[prefix + "in_proj_weight"], p[prefix + "in_proj_bias"]
    q, k, v = [a @ weight[i * width:(i + 1) * width].T + bias[i * width:(i + 1) * width]
               for i, a in enumerate((query, memory, memory))]
    split = [a.reshape(a.shape[0], a.shape[1], heads, -1).transpose(1, 2, 0, 3) for a in (q, k, v)]
    scores = split[0] @ split[1].swapaxes(-1, -2) / math.sqrt(width // heads)
    if mask is not None:
        scores = scores + mask
    out = (softmax(scores, -1) @ split[2]).transpose(2, 0, 1, 3).reshape(query.shape)
    return out @ p[prefix + "out_proj.weight"].T + p[prefix + "out_proj.bias"]


def decoder_layer_reference(p, prefix, tgt, memory, heads, norm_first, tgt_mask=None, activation=relu):
    def norm(x, i):
        return layer_norm(x, p[f"{prefix}norm{i}.weight"], p[f"{prefix}norm{i}.bias"])

    blocks = [lambda x: attention_reference(p, prefix + "self_attn.", x, x, heads, tgt_mask),
              lambda x: attention_reference(p, prefix + "multihead_attn.", x, memory, heads),
              lambda x: activation(x @ p[prefix + "linear1.weight"].T + p[prefix + "linear1.bias"])
              @ p[prefix + "linear2.weight"].T + p[prefix + "linear2.bias"]]
    for i, block in enumerate(blocks, 1):
        tgt = tgt + block(norm(tgt, i)) if norm_first else norm(tgt + block(tgt), i)
    return tgt


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_decoder_layer_matches_the_reference(norm_first):
    layer = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0, norm_first=norm_first).double()
    tgt, memory = RNG.standard_normal((4, 2, 8)), RNG.standard_normal((3, 2, 8))
    causal = np.triu(np.full((4, 4), -np.inf), 1)
    expected = decoder_layer_reference(params(layer), "", tgt, memory, 2, norm_first, causal)
    got = layer(tensor(tgt), tensor(memory), tgt_mask=tensor(causal))
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    got = layer(tensor(tgt), tensor(memory), tgt_mask=nn.Transformer.generate_square_subsequent_mask(4).double(),
                tgt_is_causal=True)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    gelu = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation="gelu", batch_first=True)
    gelu.double()
    erf = np.vectorize(math.erf)
    expected = decoder_layer_reference(params(gelu), "", tgt, memory, 2, False,
                                       activation=lambda x: 0.5 * x * (1 + erf(x / math.sqrt(2))))
    got = gelu(tensor(tgt.swapaxes(0, 1)), tensor(memory.swapaxes(0, 1)))  # batch_first
    np.testing.assert_allclose(got.detach().numpy().swapaxes(0, 1), expected, rtol=1e-10, atol=1e-12)


def test_transformer_decoder_stacks_copies_and_applies_the_final_norm():
    layer = nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
    decoder = nn.TransformerDecoder(layer, num_layers=2, norm=nn.LayerNorm(8)).double()
    assert len(decoder.layers) == 2 and decoder.layers[0] is not decoder.layers[1] and decoder.layers[0] is not layer
    p = params(decoder)
    tgt, memory = RNG.standard_normal((4, 2, 8)), RNG.standard_normal((3, 2, 8))
    expected = tgt
    for i in range(2):
        expected = decoder_layer_reference(p, f"layers.{i}.", expected, memory, 2, False)
    expected = layer_norm(expected, p["norm.weight"], p["norm.bias"])
    np.testing.assert_allclose(decoder(tensor(tgt), tensor(memory)).detach().numpy(), expected, rtol=1e-10, atol=1e-12)
    check_vjp(decoder, [tgt[:2, :1], memory[:2, :1]])


# ----------------------------------------------------------------------------- ParameterDict

def test_parameter_dict_registers_wraps_and_trains_its_entries():
    entries = collections.OrderedDict([("scale", nn.Parameter(torch.ones(3))), ("shift", torch.zeros(3))])
    table = nn.ParameterDict(entries)
    assert isinstance(table["shift"], nn.Parameter) and table["shift"].requires_grad  # a plain tensor is wrapped
    assert list(table.keys()) == ["scale", "shift"] and len(table) == 2 and "scale" in table and "bias" not in table
    table["bias"] = nn.Parameter(torch.full((3,), 0.5))
    table.update({"extra": nn.Parameter(torch.zeros(1))})
    assert list(table) == ["scale", "shift", "bias", "extra"]
    assert table.pop("extra").shape == (1,) and "extra" not in table
    del table["bias"]

    class Affine(nn.Module):
        def __init__(self):
            super().__init__()
            self.params = table

        def forward(self, x):
            return x * self.params["scale"] + self.params["shift"]

    model = Affine()
    assert [name for name, _ in model.named_parameters()] == ["params.scale", "params.shift"]
    assert list(model.state_dict()) == ["params.scale", "params.shift"]
    x = RNG.standard_normal((2, 3))
    model(tensor(x, torch.float32)).sum().backward()
    np.testing.assert_allclose(table["scale"].grad.numpy(), x.sum(0), rtol=1e-6)
    np.testing.assert_allclose(table["shift"].grad.numpy(), [2.0, 2.0, 2.0])
    assert [k for k, _ in table.items()] == ["scale", "shift"] and len(list(table.values())) == 2


def test_parameter_dict_sorts_a_plain_dict_and_lists_its_parameters_in_its_repr():
    """PyTorch sorts the keys of a plain dict (constructor and update()); an OrderedDict, a
    ParameterDict or a sequence of pairs keeps its order."""
    entries = {"b": nn.Parameter(torch.ones(2)), "a": nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))}
    table = nn.ParameterDict(entries)
    assert list(table.keys()) == ["a", "b"]
    assert repr(table) == ("ParameterDict(\n    (a): Parameter containing: [ember.DoubleTensor of size 3x2]\n"
                           "    (b): Parameter containing: [ember.FloatTensor of size 2]\n)")
    assert list(nn.ParameterDict(collections.OrderedDict(entries))) == ["b", "a"]
    assert list(nn.ParameterDict(list(entries.items()))) == ["b", "a"]
    assert list(nn.ParameterDict(nn.ParameterDict(list(entries.items())))) == ["b", "a"]
    table.update({"d": torch.ones(1), "c": torch.tensor(2.0)})
    table["z"] = torch.ones(2)
    assert list(table) == ["a", "b", "c", "d", "z"]
    assert repr(table).splitlines()[3] == "    (c): Parameter containing: [ember.FloatTensor of size ]"  # 0-d
    assert repr(nn.ParameterDict()) == "ParameterDict()"
    assert repr(nn.ParameterDict({"w": torch.ones(1)})) == "ParameterDict(  (w): Parameter containing: " \
                                                         "[ember.FloatTensor of size 1])"
    with pytest.raises(TypeError, match="ParametersDict.update should be called with an iterable of key/value pairs"):
        nn.ParameterDict(3)
    with pytest.raises(ValueError, match="ParameterDict update sequence element #0 has length 1; 2 is required"):
        nn.ParameterDict([("a",)])


# ----------------------------------------------------------------------------- compiled modules

COMPILED = [  # (module, input shape)
    (nn.CELU(0.5), (2, 3, 4)), (nn.SELU(), (2, 5)), (nn.Hardsigmoid(), (2, 5)), (nn.GLU(1), (2, 6, 3)),
    (nn.Softmin(1), (2, 5)), (nn.Threshold(0.1, 2.0), (3, 4)), (nn.ReplicationPad1d((1, 2)), (2, 3, 4)),
    (nn.ConstantPad3d((1, 0, 2, 0, 0, 1), -1.0), (1, 2, 2, 3, 2)), (nn.CircularPad3d(1), (1, 2, 2, 3, 2)),
    (nn.PixelShuffle(2), (1, 8, 2, 3)), (nn.PixelUnshuffle(2), (1, 2, 4, 6)),
    (nn.Conv3d(2, 4, (2, 3, 1), stride=(1, 2, 1), padding=1, groups=2), (1, 2, 3, 5, 2)),
    (nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (2, 4, 5)),
    (nn.AdaptiveAvgPool1d(3), (2, 3, 7)), (nn.LPPool1d(2, 3, stride=2), (2, 3, 9)),
    (nn.InstanceNorm1d(3, affine=True), (2, 3, 6)), (nn.BatchNorm3d(3).eval(), (2, 3, 2, 3, 2)),
    (nn.GRUCell(3, 4), (2, 3)), (nn.UpsamplingBilinear2d(scale_factor=2), (1, 2, 3, 4)),
    (nn.Fold((4, 5), (2, 2)), (1, 8, 12)),
]


@pytest.mark.parametrize("module,shape", COMPILED, ids=[type(m).__name__ for m, _ in COMPILED])
def test_compiled_modules_match_eager(module, shape):
    x = torch.randn(*shape)
    expected = module(x).detach().numpy()
    compiled = torch.compile(module)
    for _ in range(2):
        np.testing.assert_allclose(compiled(x).detach().numpy(), expected, rtol=1e-5, atol=1e-5)
