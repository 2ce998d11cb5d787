"""Adversarial checks of eager backward's in-place accumulation (frontend/autograd.py:
_accumulate_owned, _add_into_slice), the one-node eager F.linear (frontend/nn/eager_linear.py)
and index_add's sorted path (ember/ops/indexing.py). Expected values are numpy references;
grad_fn names, hook orders and errors were recorded from torch 2.13 CPU when written."""
import ml_dtypes
import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.ops import PRIMITIVES

RNG = np.random.default_rng(2024)


def _np(t):
    return np.asarray(t.detach().float().numpy() if t.dtype in (ember.float16, ember.bfloat16) else t.detach().numpy())


def _pad(shape, region, values):
    out = np.zeros(shape)
    out[region] += values
    return out


def _cot(shape):  # small integers: every sum below is exact, even in float16 and bfloat16
    return RNG.integers(-4, 5, shape).astype(np.float64)


# --------------------------------------------------------------------------- in-place accumulation
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_gradients_given_to_hooks_and_retain_grad_are_never_written_afterwards(dtype):
    """A pending gradient summed in place must be final before anyone sees it: hooks and
    retain_grad keep their values through the rest of backward and a retain_graph rerun."""
    w0 = RNG.integers(-3, 4, (5, 6)).astype(np.float64)
    w = ember.tensor(w0, requires_grad=True) if dtype == "float64" else \
        ember.tensor(w0, dtype=getattr(ember, dtype), requires_grad=True)
    x = w * 2.0
    seen = {}

    def keep(name):
        return lambda g: seen.setdefault(name, []).append((g, _np(g).copy()))
    x.register_hook(keep("x"))
    y = x[1:5]
    y.retain_grad()
    y.register_hook(keep("y"))
    views = {"a": (y, np.s_[0:3]), "b": (y, np.s_[1:4]), "c": (y, np.s_[::2]), "d": (y, np.s_[:, 1:5:2]),
             "e": (x, np.s_[:, 2:4]), "f": (x, np.s_[0]), "s0": (x, np.s_[0:2]), "s1": (x, np.s_[2:4]),
             "s2": (x, np.s_[4:5]), "u": (x, np.s_[:, 3]), "z": (x, np.s_[2:2])}
    parts = dict(zip(("s0", "s1", "s2"), x.split(2)))
    tensors = {k: parts[k] if k in parts else (x.unbind(1)[3] if k == "u" else src[region])
               for k, (src, region) in views.items()}
    tensors["flat"] = x.reshape(30)  # (made last: the view of its gradient reaches x first, shared with its hook)
    tensors["flat"].register_hook(keep("flat"))
    tensors["a"].register_hook(keep("a"))
    cots = {k: _cot(tuple(t.shape)) for k, t in tensors.items()}
    loss = sum(((t * ember.tensor(cots[k]).to(t.dtype)).sum() for k, t in tensors.items()), w.sum() * 0)
    dy = sum(_pad((4, 6), views[k][1], cots[k]) for k in "abcd")
    dx = _pad((5, 6), np.s_[1:5], dy) + sum(_pad((5, 6), views[k][1], cots[k]) for k in views if k not in "abcd") \
        + cots["flat"].reshape(5, 6)
    for rerun in (1, 2):
        loss.backward(retain_graph=True)
        np.testing.assert_array_equal(_np(w.grad), rerun * 2 * dx)
        np.testing.assert_array_equal(_np(y.grad), rerun * dy)
        for name, expected in (("x", dx), ("y", dy), ("a", cots["a"]), ("flat", cots["flat"])):
            assert len(seen[name]) == rerun
            for g, copy in seen[name]:  # (the value each hook saw, still unchanged)
                np.testing.assert_array_equal(_np(g), copy)
                np.testing.assert_array_equal(copy, expected)
    gx, gy, ga = ember.autograd.grad(loss, [x, y, tensors["a"]], retain_graph=True)
    for got, expected in ((gx, dx), (gy, dy), (ga, cots["a"])):
        np.testing.assert_array_equal(_np(got), expected)


def test_caller_gradients_are_never_written():
    w = ember.tensor(RNG.standard_normal((4, 3)), requires_grad=True)
    x = w * 1.0
    roots = [x, x[0:2], x[1:], x.t(), x[::2]]
    seeds = [_cot(tuple(r.shape)) for r in roots]
    given = [ember.tensor(s) for s in seeds]
    ember.autograd.backward(roots, given)
    expected = seeds[0] + _pad((4, 3), np.s_[0:2], seeds[1]) + _pad((4, 3), np.s_[1:], seeds[2]) + seeds[3].T \
        + _pad((4, 3), np.s_[::2], seeds[4])
    np.testing.assert_array_equal(w.grad.numpy(), expected)
    for g, s in zip(given, seeds):
        np.testing.assert_array_equal(g.numpy(), s)


class _Two(ember.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        return a * 2.0, a * 3.0

    @staticmethod
    def backward(ctx, g1, g2):
        return g1 * 2.0 + g2 * 3.0


class _Pass(ember.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        return a.clone()

    @staticmethod
    def backward(ctx, g):
        return g  # (the incoming gradient itself goes on to a slice node)


def test_custom_function_siblings_and_pass_through_with_slices():
    w = ember.tensor(RNG.standard_normal((4, 5)), requires_grad=True)
    x = w * 1.0
    p, q = _Two.apply(x[0:3])
    r = _Pass.apply(x[1:4])
    seen = []
    r.register_hook(lambda g: seen.append((g, g.numpy().copy())))
    c = [_cot(s) for s in ((2, 5), (2, 5), (3, 3), (3, 5), (2, 5))]
    terms = [p[0:2], p[1:3], q[:, ::2], r, r[0:2]]
    sum((t * ember.tensor(ci)).sum() for t, ci in zip(terms, c)).backward()
    dp = _pad((3, 5), np.s_[0:2], c[0]) + _pad((3, 5), np.s_[1:3], c[1])
    dq = _pad((3, 5), np.s_[:, ::2], c[2])
    dr = c[3] + _pad((3, 5), np.s_[0:2], c[4])
    expected = _pad((4, 5), np.s_[0:3], 2 * dp + 3 * dq) + _pad((4, 5), np.s_[1:4], dr)
    np.testing.assert_array_equal(w.grad.numpy(), expected)
    (g, copy), = seen
    np.testing.assert_array_equal(g.numpy(), copy)
    np.testing.assert_array_equal(copy, dr)


@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpoint_and_overlapping_slices(reentrant):
    x0 = RNG.standard_normal((4, 3))
    w = ember.tensor(x0, requires_grad=True)
    x = w * 1.0
    c = _cot((2, 3))
    out = ember.utils.checkpoint.checkpoint(lambda t: t[0:2] * t[1:3], x, use_reentrant=reentrant)
    ((out * ember.tensor(c)).sum() + x[2:].sum() + x[1:3].sum()).backward()
    expected = _pad((4, 3), np.s_[0:2], c * x0[1:3]) + _pad((4, 3), np.s_[1:3], c * x0[0:2] + 1) \
        + _pad((4, 3), np.s_[2:], 1.0)
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-12)


def test_mixed_dtypes_and_empty_slices_accumulate():
    w = ember.tensor(RNG.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    x = w * 1.0
    d = x.double()
    loss = (x[0:1] * 3).sum() + (d[:, 1:] * 2).sum() + x[1:, 0:0].sum() + (x[:, ::2].double() * 5).sum()
    loss.backward()
    assert w.grad.dtype == ember.float32
    np.testing.assert_array_equal(w.grad.numpy(), [[8, 5, 10], [5, 2, 7]])
    z = ember.tensor(np.zeros((0, 3)), requires_grad=True)
    zz = z * 2
    (zz[0:0].sum() + zz[:, 1:].sum() + zz.sum()).backward()
    assert z.grad.shape == (0, 3)


# --------------------------------------------------------------------------- eager F.linear
def _linear_case(shape, bias, dtype=np.float64, x_t=False, w_t=False):
    xa = RNG.standard_normal(shape[::-1] if x_t else shape).astype(dtype)
    wa = RNG.standard_normal((4, 3) if w_t else (3, 4)).astype(dtype)
    ba = RNG.standard_normal(3).astype(dtype)
    x, w = ember.tensor(xa, requires_grad=True), ember.tensor(wa, requires_grad=True)
    b = ember.tensor(ba, requires_grad=True) if bias else None
    y = F.linear(x.permute(*range(x.ndim)[::-1]) if x_t else x, w.t() if w_t else w, b)
    return (xa.T if x_t else xa), (wa.T if w_t else wa), ba, (x, w, b), y


@pytest.mark.parametrize("shape,bias,name", [
    ((2, 4), True, "AddmmBackward0"), ((2, 4), False, "MmBackward0"), ((0, 4), True, "AddmmBackward0"),
    ((0, 4), False, "MmBackward0"), ((2, 5, 4), True, "ViewBackward0"), ((2, 5, 4), False, "UnsafeViewBackward0"),
    ((2, 0, 4), True, "ViewBackward0"), ((1, 1, 1, 4), False, "UnsafeViewBackward0"), ((4,), True, "ViewBackward0")])
def test_linear_grad_fn_names_as_pytorch(shape, bias, name):
    assert _linear_case(shape, bias)[-1].grad_fn.name() == name
    if len(shape) == 2:  # (a transposed input: the same names)
        assert _linear_case(shape, bias, x_t=True)[-1].grad_fn.name() == name


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (4,), (0, 4), (2, 0, 4)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["plain", "x_t", "w_t"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_values_and_gradients(shape, bias, layout, dtype):
    if layout == "x_t" and len(shape) == 1:
        return
    xa, wa, ba, (x, w, b), y = _linear_case(shape, bias, dtype, x_t=layout == "x_t", w_t=layout == "w_t")
    x64, w64 = xa.astype(np.float64), wa.astype(np.float64)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y.detach().numpy(), x64 @ w64.T + (ba if bias else 0), **tol)
    assert y.dtype == getattr(ember, np.dtype(dtype).name)
    g = RNG.standard_normal(y.shape).astype(dtype)
    y.backward(ember.tensor(g))
    g64 = g.astype(np.float64)
    dx = g64 @ w64
    np.testing.assert_allclose(x.grad.numpy(), dx.T if layout == "x_t" else dx, **tol)
    dw = g64.reshape(-1, 3).T @ x64.reshape(-1, 4)
    np.testing.assert_allclose(w.grad.numpy(), dw.T if layout == "w_t" else dw, **tol)
    if bias:
        np.testing.assert_allclose(b.grad.numpy(), g64.reshape(-1, 3).sum(0), **tol)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_hook_order_as_pytorch(bias):
    log = []
    x = ember.ones(2, 4, requires_grad=True)
    layer = ember.nn.Linear(4, 3, bias=bias)
    for name, t in (("x", x), ("w", layer.weight), ("b", layer.bias)):
        if t is not None:
            t.register_hook(lambda g, name=name: log.append("hook " + name))
            t.register_post_accumulate_grad_hook(lambda p, name=name: log.append("post " + name))
    layer(x).sum().backward()
    assert log == (["hook b", "post b"] if bias else []) + ["hook x", "post x", "hook w", "post w"]


@pytest.mark.parametrize("shape", [(2, 4), (2, 3, 4), (4,)])
def test_linear_needed_saved_tensor_changed_in_place_raises(shape):
    """torch saves the input when the weight needs a gradient, the weight when the input does."""
    w = ember.ones(3, 4, requires_grad=True)
    x = ember.ones(*shape)
    y = F.linear(x, w, ember.ones(3, requires_grad=True))
    x.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    frozen = ember.ones(3, 4)
    x = ember.ones(*shape, requires_grad=True) * 1.0
    y = F.linear(x, frozen)
    frozen.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_linear_without_grad_mode_records_nothing():
    w = ember.ones(3, 4, requires_grad=True)
    for mode in (ember.no_grad, ember.inference_mode):
        with mode():
            y = F.linear(ember.ones(2, 4), w, w[:, 0])
        assert y.grad_fn is None and not y.requires_grad


@pytest.mark.parametrize("shape", [(2, 5, 4), (2, 4), (4,)])
def test_linear_result_written_through_views_reaches_the_gradient(shape):
    xa, wa, ba, (x, w, b), y = _linear_case(shape, True)
    scale = np.ones(y.shape)
    y[0].mul_(3.0)
    scale[0] *= 3.0
    if len(shape) == 3:
        y.transpose(0, 1)[1][1].mul_(-2.0)
        scale[1, 1] *= -2.0
    g = RNG.standard_normal(y.shape)
    y.backward(ember.tensor(g))
    gs = g * scale
    np.testing.assert_allclose(x.grad.numpy(), gs @ wa, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(w.grad.numpy(), gs.reshape(-1, 3).T @ xa.reshape(-1, 4), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), gs.reshape(-1, 3).sum(0), rtol=1e-12, atol=1e-12)


def test_linear_in_a_compiled_training_step_matches_eager():
    def make():
        ember.manual_seed(0)
        net = ember.nn.Sequential(ember.nn.Linear(6, 8), ember.nn.Tanh(), ember.nn.Linear(8, 3, bias=False))
        return net, ember.optim.SGD(net.parameters(), lr=0.1)

    def step(net, optimizer, x):
        optimizer.zero_grad()
        h = net(x)
        loss = (h[..., 0:2] ** 2).mean() + h[..., 1:].sum() * 0.1
        loss.backward()
        optimizer.step()
        return loss
    for shape in [(2, 3, 6), (6,)]:
        eager, compiled = make(), make()
        compiled_step = ember.compile(lambda x: step(*compiled, x))
        for i in range(3):
            x = ember.tensor(np.random.default_rng(i).standard_normal(shape).astype(np.float32))
            np.testing.assert_allclose(compiled_step(x).item(), step(*eager, x).item(), rtol=1e-5)
        for a, c in zip(eager[0].parameters(), compiled[0].parameters()):
            np.testing.assert_allclose(a.detach().numpy(), c.detach().numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- index_add's sorted path
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.int64, np.float64])
@pytest.mark.parametrize("case", ["negative", "heavy32", "heavy33", "multi_dim_index", "fortran_src", "rows_3d"])
def test_index_add_sorted_path_is_np_add_at_bit_for_bit(dtype, case):
    rows, row = (40, (8,)) if case != "rows_3d" else (40, (2, 2, 3))
    idx = RNG.integers(-rows if case == "negative" else 0, rows, 300)
    if case.startswith("heavy"):  # a row repeated 32 times (sorted path) or 33 (np.add.at)
        idx = np.concatenate([np.full(int(case[5:]), 7), RNG.integers(8, rows - 1, 100), np.full(31, -1)])
        RNG.shuffle(idx)
    if case == "multi_dim_index":
        idx = idx.reshape(75, 4)
    np_dtype = np.dtype(dtype)
    target = (RNG.standard_normal((rows,) + row) * 50).astype(np_dtype)
    src = (RNG.standard_normal(idx.shape + row) * 50).astype(np_dtype)
    if np_dtype.kind != "i":
        src.reshape(-1, *row)[:3, 0] = [np.nan, np.inf, -np.inf]
    if case == "fortran_src":
        src = np.asfortranarray(src)
    expected = target.copy()
    with np.errstate(invalid="ignore", over="ignore"):
        np.add.at(expected, idx, src)
        got = PRIMITIVES["index_add"].impl(target, idx, src, 0)
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    for bad in (rows, -rows - 1):
        with pytest.raises(IndexError):
            PRIMITIVES["index_add"].impl(target, np.concatenate([idx.reshape(-1), [bad]]),
                                         np.concatenate([src.reshape((-1,) + row), src.reshape((-1,) + row)[:1]]), 0)


def test_index_add_method_and_embedding_backward_use_np_add_at_order():
    target = RNG.standard_normal((20, 12)).astype(np.float32)
    src = RNG.standard_normal((12, 100)).astype(np.float32)
    idx = RNG.integers(0, 20, 100)
    expected = target.copy()
    np.add.at(expected, idx, 2.0 * src.T)
    got = ember.tensor(target).index_add(0, ember.tensor(idx), ember.tensor(src).t(), alpha=2.0)
    assert got.numpy().tobytes() == expected.tobytes()
    with pytest.raises(IndexError):
        ember.zeros(10, 8).index_add_(0, ember.tensor(np.array([10] + [0] * 70)), ember.ones(71, 8))
    emb = ember.nn.Embedding(65, 16).double()
    ids = RNG.integers(0, 65, (8, 64))
    g = RNG.standard_normal((8, 64, 16))
    emb(ember.tensor(ids)).backward(ember.tensor(g))
    expected = np.zeros((65, 16))
    np.add.at(expected, ids.reshape(-1), g.reshape(-1, 16))
    assert emb.weight.grad.numpy().tobytes() == expected.tobytes()
