"""Adversarial checks of eager conv2d and its gradients through the compiled support library
(frontend/eager_convolutions.py) against float64 numpy references (the primitives' impls) and
the numpy fallback: odd geometries, views, double backward, dtypes, threads, compile."""
import threading

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.frontend import eager_compiled_ops
from ember.frontend.eager_convolutions import CONVOLUTIONS_FOR_EAGER
from ember.ops import PRIMITIVES, OpError

_KINDS = ("conv2d", "conv2d_grad_input", "conv2d_grad_weight")


def _ref(kind, *arrays, **attrs):  # the primitive's numpy implementation in float64
    return PRIMITIVES[kind].impl(*[np.asarray(a, np.float64) for a in arrays], **attrs)


def _close(got, expected, tol=1e-4):
    expected = np.asarray(expected, np.float64)
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=tol, atol=tol * scale)


# (x shape, w shape, stride, padding, dilation, groups): padding beyond the kernel, a kernel as large as
# the padded input, H or W of 1, depthwise, 1x1 with stride/padding/dilation, channels 7/5/3 in groups
_GEOMETRIES = [
    ((2, 3, 4, 3), (4, 3, 6, 7), (1, 1), (1, 2), (1, 1), 1),
    ((2, 3, 4, 3), (4, 3, 2, 2), (3, 3), (5, 4), (1, 1), 1),
    ((5, 3, 1, 1), (4, 3, 3, 3), (1, 1), (3, 3), (1, 1), 1),
    ((2, 3, 1, 9), (2, 3, 1, 3), (1, 2), (0, 1), (1, 3), 1),
    ((3, 2, 11, 1), (4, 2, 3, 1), (2, 1), (0, 0), (2, 1), 1),
    ((2, 6, 9, 8), (6, 1, 5, 5), (1, 1), (2, 2), (1, 1), 6),
    ((2, 6, 9, 8), (12, 2, 3, 2), (2, 3), (1, 0), (1, 2), 3),
    ((2, 3, 7, 6), (4, 3, 1, 1), (2, 2), (0, 0), (1, 1), 1),
    ((2, 3, 7, 6), (4, 3, 1, 1), (1, 1), (1, 1), (2, 2), 1),
    ((1, 7, 13, 10), (5, 7, 4, 3), (1, 1), (0, 0), (3, 2), 1),
    ((7, 3, 5, 5), (2, 3, 5, 5), (1, 1), (0, 0), (1, 1), 1),
    ((1, 1, 1, 1), (1, 1, 1, 1), (1, 1), (0, 0), (1, 1), 1),
]


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation,groups", _GEOMETRIES)
def test_conv2d_values_gradients_and_double_backward_match_float64(x_shape, w_shape, stride, padding, dilation,
                                                                    groups):
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    ex, ew = ember.tensor(x, requires_grad=True), ember.tensor(w, requires_grad=True)
    y = F.conv2d(ex, ew, **attrs)
    expected = _ref("conv2d", x, w, **attrs)
    _close(y.detach().numpy(), expected)
    g = rng.standard_normal(expected.shape).astype(np.float32)
    gx, gw = ember.autograd.grad((y * ember.tensor(g)).sum(), [ex, ew], create_graph=True)
    _close(gx.detach().numpy(), _ref("conv2d_grad_input", g, w, input_shape=x_shape, **attrs))
    _close(gw.detach().numpy(), _ref("conv2d_grad_weight", x, g, weight_shape=w_shape, **attrs))
    # d/dx, d/dw of sum(gx * u) + sum(gw * v): gx is linear in w, gw linear in x
    u, v = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    hx, hw = ember.autograd.grad((gx * ember.tensor(u)).sum() + (gw * ember.tensor(v)).sum(), [ex, ew])
    _close(hx.numpy(), _ref("conv2d_grad_input", g, v, input_shape=x_shape, **attrs))
    _close(hw.numpy(), _ref("conv2d_grad_weight", u, g, weight_shape=w_shape, **attrs))


def test_values_verified_against_pytorch():
    """Strided, padded, dilated, grouped conv2d; values and gradients from torch 2 on CPU."""
    x = ((ember.arange(48, dtype=ember.float32).reshape(2, 2, 3, 4) - 20) / 8).requires_grad_()
    w = ((ember.arange(12, dtype=ember.float32).reshape(2, 1, 2, 3) - 5) / 4).requires_grad_()
    y = F.conv2d(x, w, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    np.testing.assert_allclose(y.detach().numpy()[1, 1], [[5.875, 6.21875, 4.8125, 5.09375],
                                                          [11.9375, 12.4375, 9.0625, 9.4375]], rtol=1e-5)
    np.testing.assert_allclose(y.detach().numpy()[0, 0, 1], [3.6875, 3.4375, 5.3125, 4.9375], rtol=1e-5)
    (y * y).sum().backward()
    np.testing.assert_allclose(x.grad.numpy().sum(axis=(0, 1)), [[12.875, 15.9375, 17.0, 20.5625],
                                                                 [9.625, 13.875, 21.625, 26.125],
                                                                 [45.625, 50.625, 57.625, 62.875]], rtol=1e-5)
    np.testing.assert_allclose(w.grad.numpy().reshape(2, -1),
                               [[-56.28125, -93.0625, -36.90625, -72.109383, -111.625, -40.453121],
                                [94.46875, 228.6875, 137.09375, 161.140625, 381.5, 223.921875]], rtol=1e-5)


def _views(x):
    """Views with x's values in unusual layouts: offset by one float, permuted (channels last),
    flipped back, transposed, a strided slice."""
    n, c, h, w = x.shape
    base = ember.tensor(np.concatenate([np.zeros(1, np.float32), x.reshape(-1)]))
    yield base[1:].view(n, c, h, w)
    yield ember.tensor(x.transpose(0, 2, 3, 1).copy()).permute(0, 3, 1, 2)
    yield ember.tensor(x[:, :, ::-1, ::-1].copy()).flip((2, 3))
    yield ember.tensor(x.transpose(0, 1, 3, 2).copy()).transpose(2, 3)
    big = np.zeros((n, c, 2 * h, w + 1), np.float32)
    big[:, :, ::2, 1:] = x
    yield ember.tensor(big)[:, :, ::2, 1:]


def test_non_contiguous_inputs_and_weights_give_the_contiguous_results():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 4, 9, 7)).astype(np.float32), rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    attrs = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    expected = _ref("conv2d", x, w, **attrs)
    for xv, wv in zip(_views(x), _views(w)):
        _close(F.conv2d(xv, wv, **attrs).numpy(), expected)
        _close(F.conv2d(xv, ember.tensor(w), **attrs).numpy(), expected)
    _close(F.conv2d(ember.tensor(x[:1]).expand(3, 4, 9, 7), ember.tensor(w[:1]).expand(6, 2, 3, 2), **attrs).numpy(),
           _ref("conv2d", np.broadcast_to(x[:1], (3, 4, 9, 7)), np.broadcast_to(w[:1], w.shape), **attrs))


def test_convolution_of_a_transposed_convolution_output():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((3, 3, 9, 11)).astype(np.float32), rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    v = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    ex, ew, ev = (ember.tensor(a, requires_grad=True) for a in (x, w, v))
    first = F.conv2d(ex, ew, stride=2).transpose(2, 3)
    y = F.conv2d(first, ev, padding=1)
    one = dict(stride=(2, 2), padding=(0, 0), dilation=(1, 1), groups=1)
    mid = _ref("conv2d", x, w, **one).transpose(0, 1, 3, 2)
    _close(y.detach().numpy(), _ref("conv2d", mid, v, stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1))
    y.sum().backward()
    assert ex.grad.shape == x.shape and np.isfinite(ex.grad.numpy()).all()


@pytest.mark.parametrize("op", ["conv2d", "conv1d", "conv_transpose2d", "conv_transpose1d"])
def test_library_and_numpy_fallback_agree(op, monkeypatch):
    rng = np.random.default_rng(5)
    shapes, kwargs = {
        "conv2d": (((3, 4, 10, 9), (6, 2, 3, 4)), dict(stride=(1, 2), padding=(3, 1), dilation=(2, 1), groups=2)),
        "conv1d": (((3, 4, 17), (6, 4, 3)), dict(stride=2, padding="valid", dilation=3)),
        "conv_transpose2d": (((2, 4, 5, 6), (4, 3, 3, 3)), dict(stride=2, padding=1, output_padding=1, groups=2)),
        "conv_transpose1d": (((2, 4, 5), (4, 3, 3)), dict(stride=3, padding=1, output_padding=2)),
    }[op]
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]

    def run():
        x, w = (ember.tensor(a, requires_grad=True) for a in arrays)
        y = getattr(F, op)(x, w, **kwargs)
        (y * y).sum().backward()
        return y.detach().numpy(), x.grad.numpy(), w.grad.numpy()

    compiled = run()
    for kind in _KINDS:
        monkeypatch.delitem(eager_compiled_ops.COMPILED_FOR_EAGER, kind)
    for got, expected in zip(compiled, run()):
        _close(got, expected)


@pytest.mark.parametrize("dtype", [ember.float64, ember.float16, ember.bfloat16])
def test_other_dtypes_keep_their_dtype_and_values(dtype):
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((4, 3, 3, 3))
    ex, ew = ember.tensor(x).to(dtype).requires_grad_(), ember.tensor(w).to(dtype).requires_grad_()
    y = F.conv2d(ex, ew, padding=1)
    y.sum().backward()
    assert y.dtype == ex.grad.dtype == ew.grad.dtype == dtype
    attrs = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    tol = 1e-10 if dtype == ember.float64 else 5e-2
    _close(y.detach().double().numpy(), _ref("conv2d", ex.detach().double().numpy(), ew.detach().double().numpy(),
                                             **attrs), tol)


def test_empty_batches_and_channels():
    y = F.conv2d(ember.randn(2, 0, 5, 5), ember.randn(4, 0, 3, 3))
    assert y.shape == (2, 4, 3, 3) and not y.numpy().any()
    x, w = ember.randn(0, 3, 5, 5, requires_grad=True), ember.randn(4, 3, 3, 3, requires_grad=True)
    F.conv2d(x, w, padding=1).sum().backward()
    assert x.grad.shape == (0, 3, 5, 5) and w.grad.shape == (4, 3, 3, 3) and not w.grad.numpy().any()


def test_nan_propagates_and_inf_stays_inf_forward():
    x = np.ones((1, 1, 5, 5), np.float32)
    x[0, 0, 2, 2] = np.nan
    y = F.conv2d(ember.tensor(x), ember.ones(1, 1, 3, 3), padding=1).numpy()[0, 0]
    assert np.isnan(y[1:4, 1:4]).all() and np.isfinite(y).sum() == 16
    x[0, 0, 2, 2] = np.inf
    y = F.conv2d(ember.tensor(x), ember.ones(1, 1, 3, 3), padding=1).numpy()[0, 0]
    assert (y[1:4, 1:4] == np.inf).all() and np.isfinite(y).sum() == 16


def test_invalid_geometry_errors_stay_clear():
    for kernel, dilation in ((9, 1), (3, 4)):
        with pytest.raises(OpError, match="larger than the padded input"):
            F.conv2d(ember.randn(2, 4, 8, 8), ember.randn(4, 4, kernel, kernel), dilation=dilation)
    with pytest.raises(RuntimeError, match="expected input.*to have 5 channels"):
        F.conv_transpose2d(ember.randn(2, 4, 8, 8), ember.randn(5, 4, 3, 3))
    with pytest.raises(RuntimeError, match="input type|Input type"):
        F.conv2d(ember.randn(2, 3, 8, 8), ember.randn(4, 3, 3, 3, dtype=ember.float64))


def test_threads_running_convolutions_at_once_get_their_own_results():
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        for _ in range(25):
            n, k, s, p = (int(v) for v in (rng.integers(1, 4), rng.integers(1, 5), rng.integers(1, 3),
                                           rng.integers(0, 3)))
            x = rng.standard_normal((n, 3, int(rng.integers(k, 20)), int(rng.integers(k, 20)))).astype(np.float32)
            w = rng.standard_normal((5, 3, k, k)).astype(np.float32)
            attrs = dict(stride=(s, s), padding=(p, p), dilation=(1, 1), groups=1)
            y = CONVOLUTIONS_FOR_EAGER["conv2d"](x, w, **attrs)
            g = rng.standard_normal(y.shape).astype(np.float32)
            pairs = [(y, _ref("conv2d", x, w, **attrs)),
                     (CONVOLUTIONS_FOR_EAGER["conv2d_grad_input"](g, w, input_shape=x.shape, **attrs),
                      _ref("conv2d_grad_input", g, w, input_shape=x.shape, **attrs)),
                     (CONVOLUTIONS_FOR_EAGER["conv2d_grad_weight"](x, g, weight_shape=w.shape, **attrs),
                      _ref("conv2d_grad_weight", x, g, weight_shape=w.shape, **attrs))]
            for got, expected in pairs:
                if not np.allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(expected).max())):
                    errors.append(seed)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(3)]
    [t.start() for t in threads], [t.join() for t in threads]
    assert errors == []


def test_compiled_model_matches_eager_and_training_matches_the_numpy_fallback(monkeypatch):
    class Model(ember.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = ember.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(3, 0), dilation=(1, 2), groups=2)
            self.b = ember.nn.Conv2d(6, 6, 5, padding="same", groups=6)
            self.c = ember.nn.Conv2d(6, 3, 1, stride=2)

        def forward(self, x):
            return self.c(F.relu(self.b(self.a(x))))

    def train(model):
        opt = ember.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for step in range(3):
            x = ember.tensor(np.random.default_rng(step).standard_normal((3, 4, 13, 11)).astype(np.float32))
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        return [p.detach().numpy().copy() for p in model.parameters()]

    ember.manual_seed(0)
    model = Model()
    x = ember.randn(3, 4, 13, 11)
    _close(ember.compile(model)(x).detach().numpy(), model(x).detach().numpy(), 1e-5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    compiled_path = train(model)
    model.load_state_dict(state)
    for kind in _KINDS:
        monkeypatch.delitem(eager_compiled_ops.COMPILED_FOR_EAGER, kind)
    for got, expected in zip(compiled_path, train(model)):
        _close(got, expected, 1e-5)
