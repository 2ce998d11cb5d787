"""Adversarial checks of compiled advanced indexing (several index tensors checked against
their own dims by a traced take), of which failing check a compiled program reports, and of
library products whose epilogue ends in another dtype. Compiled functions are called once with
valid arguments (the first call traces eagerly), then with the values under test, and compared
with eager ember (whose semantics match PyTorch's for these cases).

Regressions for what an adversarial round found: x[r, c] while tracing must not embed a
constant as large as the indexed dim (the check takes from one broadcast zero), and float16
results of fused ops (a product read by a .float()) are rounded to float16 as eager rounds them.
(Two failing checks in *different* kernels report the kernel that runs first, which may not
be the op eager mode fails at: a known limitation, not tested here.)
"""
import os
import re

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import config


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))


def T(a):
    return ember.tensor(np.asarray(a))


def I(*v):
    return T(np.array(v, np.int64))


def outcome(call):
    try:
        r = call()
    except Exception as e:  # noqa: BLE001 - the exception's type is the outcome
        return ("err", type(e), str(e))
    r = r if isinstance(r, (tuple, list)) else [r]
    return ("ok", [np.asarray(t.detach().numpy()) for t in r])


def eager_and_compiled(fn, valid, args, backend="llvm"):
    c = ember.compile(fn, backend=backend)
    c(*[a.clone() for a in valid])
    return outcome(lambda: fn(*[a.clone() for a in args])), outcome(lambda: c(*[a.clone() for a in args]))


def assert_like_eager(fn, valid, args, backend="llvm"):
    e, g = eager_and_compiled(fn, valid, args, backend)
    assert e[0] == g[0], (e, g)
    if e[0] == "err":
        assert e[1] is g[1], (e, g)
        return
    for a, b in zip(e[1], g[1]):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- regressions (found bugs)

def test_multi_index_bounds_check_embeds_no_constant_as_large_as_the_dim():
    n = 500_000  # an arange(n) int64 constant is 4 MB
    x = T(np.ones((n, 2), np.float32))
    c = ember.compile(lambda x, r, c: x[r, c] * 2)
    c(x, I(0, 1), I(0, 1))
    np.testing.assert_array_equal(c(x, I(n - 1, -n), I(1, -2)).numpy(), [2.0, 2.0])
    cached = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(config.CACHE_DIR) for f in fs)
    assert cached < 1_000_000, f"the compiled x[r, c] caches {cached} bytes"


def test_half_product_cast_to_float_is_rounded_to_half():
    rng = np.random.default_rng(6)
    a, b = T(rng.standard_normal((4, 5)).astype(np.float32)), T(rng.standard_normal((5, 3)).astype(np.float32))
    fn = lambda a, b: (a.half() @ b.half()).float()
    _, g = eager_and_compiled(fn, (a, b), (a, b))
    got = g[1][0]
    np.testing.assert_array_equal(got, got.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got, fn(a, b).numpy())


# ----------------------------------------------------------------- broad checks (pass)

X = T(np.arange(24, dtype=np.float32).reshape(2, 3, 4))


@pytest.mark.parametrize("r,c", [((0, -1), (-3, 2)), ((0, -1), (-4, 3)), ((2, 0), (0, 0)), ((0, 0), (4, 0)),
                                 ((1, 1), (-5, 0)), ((-3, 0), (0, 0)), ((-2, 1), (3, -4)), ((0, 1), (2, 3))])
@pytest.mark.parametrize("op", ["get", "get_gap", "set", "put", "put_acc"])
def test_two_index_tensors_each_checked_against_its_dim(op, r, c):
    fns = {"get": lambda x, r, c, v: x[r, c],
           "get_gap": lambda x, r, c, v: x[r, :, c],
           "set": lambda x, r, c, v: _set(x, (r, slice(None), c), v),
           "put": lambda x, r, c, v: x.index_put((r, c), v),
           "put_acc": lambda x, r, c, v: x.index_put((r, c), v, accumulate=True)}
    # (x is 2 x 3 x 4: x[r, c] indexes dims of size 2 and 3, x[r, :, c] dims of size 2 and 4)
    v = T(np.arange({"put": 8, "put_acc": 8, "set": 3}.get(op, 1), dtype=np.float32).reshape(
        {"put": (2, 4), "put_acc": (2, 4), "set": (3,)}.get(op, (1,))))
    assert_like_eager(fns[op], (X, I(0, 0), I(0, 0), v), (X, I(*r), I(*c), v))


def _set(x, key, v):
    y = x.clone()
    y[key] = v
    return y


def test_seeded_random_advanced_indexing_matches_eager():
    rng = np.random.default_rng(0)
    for _ in range(25):
        nd = int(rng.integers(2, 4))
        shape = tuple(int(s) for s in rng.integers(1, 5, nd))
        pos = sorted(rng.choice(nd, 2, replace=False).tolist())
        ishape = tuple(int(s) for s in rng.integers(1, 3, int(rng.integers(0, 3))))
        dt = np.int32 if rng.random() < 0.3 else np.int64
        idx = [rng.integers(-shape[p], shape[p], ishape if k == 0 else ishape[1:]).astype(dt)
               for k, p in enumerate(pos)]
        if rng.random() < 0.4:
            k = int(rng.integers(0, 2))
            idx[k] = np.asarray(idx[k]).copy()
            idx[k].flat[0] = shape[pos[k]] if rng.random() < 0.5 else -shape[pos[k]] - 1
        lead_none = rng.random() < 0.3

        def key(ii, nd=nd, pos=pos, lead_none=lead_none):
            it = iter(ii)
            k = tuple(next(it) if d in pos else slice(None) for d in range(nd))
            return ((None,) + k) if lead_none else k
        x = T(rng.standard_normal(shape).astype(np.float32))
        ti, vi = [T(a) for a in idx], [T(np.zeros_like(a)) for a in idx]
        assert_like_eager(lambda x, *ii: x[key(ii)] * 1, (x, *vi), (x, *ti))
        v = T(np.float32(rng.standard_normal()))
        assert_like_eager(lambda x, v, *ii: _set(x, key(ii), v), (x, v, *vi), (x, v, *ti))


def test_index_put_three_indices_duplicates_negatives_and_out_of_range():
    x = X
    fn = lambda x, a, b, c, v: x.index_put((a, b, c), v, accumulate=True)
    valid = (x, I(0, 1, 0), I(0, 1, 2), I(0, 1, 3), T(np.ones(3, np.float32)))
    assert_like_eager(fn, valid, (x, I(1, -1, 1), I(2, -1, 2), I(-1, 3, 3), T(np.float32([1, 2, 3]))))
    for bad in [(I(2, 0, 0), I(0, 0, 0), I(0, 0, 0)), (I(0, 0, 0), I(0, -4, 0), I(0, 0, 0)),
                (I(0, 0, 0), I(0, 0, 0), I(0, 0, 4))]:
        _, g = eager_and_compiled(fn, valid, (x, *bad, T(np.ones(3, np.float32))))
        assert g[0] == "err" and g[1] is IndexError


def test_empty_and_int32_and_mask_mixed_indices():
    e = T(np.zeros((0,), np.int64))
    assert_like_eager(lambda x, r, c: x[r, c], (X, e, e), (X, e, e))
    i32 = lambda *v: T(np.array(v, np.int32))
    assert_like_eager(lambda x, r, c: x[r, c], (X, i32(0, 1), i32(0, 1)), (X, i32(-2, 1), i32(-3, 2)))
    assert_like_eager(lambda x, r, c: x[r, c], (X, i32(0, 1), i32(0, 1)), (X, i32(-2, 1), i32(-3, 5)))
    mk = T(np.array([True, False, True, False]))
    assert_like_eager(lambda x, r, m: x[r, :, m], (X, I(0, 1), mk), (X, I(-1, 1), mk))
    assert_like_eager(lambda x, r, m: x[r, :, m], (X, I(0, 1), mk), (X, I(2, 1), mk))
    assert_like_eager(lambda x, r, c: x[None, ..., r, c], (X, I(0, 1), I(0, 1)), (X, I(-3, 2), I(4, -4)))


def test_first_failing_check_within_a_kernel_is_the_one_eager_reports():
    x = T(np.arange(12, dtype=np.float32).reshape(3, 4))
    fn = lambda x, r, c, r2: x[r, c] + x[r2, c]
    valid = (x, I(0, 1), I(1, 2), I(1, 1))
    for r, c, r2, size in [((3, 0), (0, 0), (5, 0), 3), ((0, 0), (9, 0), (5, 0), 4), ((0, 0), (0, 0), (5, 0), 3)]:
        for backend in ("llvm", "ptx-emulated"):
            _, g = eager_and_compiled(fn, valid, (x, I(*r), I(*c), I(*r2)), backend)
            assert g[1] is IndexError and re.search(rf"size {size}\b", g[2]), (r, c, r2, g)


@pytest.mark.parametrize("backend", ["llvm", "ptx-emulated"])
def test_gradients_through_multi_index_in_compiled_steps(backend):
    rng = np.random.default_rng(3)
    xn = rng.standard_normal((3, 4)).astype(np.float32)
    loss = lambda w, r, c: (w[r[:, None], c] ** 2).sum() + w[r, c].sum()
    comp = ember.compile(loss, backend=backend)

    def grad(f, r, c):
        w = ember.tensor(xn.copy(), requires_grad=True)
        f(w, I(*r), I(*c)).backward()
        return w.grad.numpy()
    grad(comp, (0, 1, 2), (1, 2, 3))
    np.testing.assert_allclose(grad(comp, (0, 0, -1), (1, 1, -4)), grad(loss, (0, 0, -1), (1, 1, -4)), atol=1e-5)
    with pytest.raises(IndexError):
        grad(comp, (0, 0, 0), (4, 0, 0))


PRODUCTS = {
    "double": lambda a, b, c: (a @ b + c).double() * 2,
    "long": lambda a, b, c: (a @ b * 10).long(),
    "bool": lambda a, b, c: (a @ b) > 0,
    "half": lambda a, b, c: F.relu(a @ b + c).half(),
    "t_double": lambda a, b, c: (a @ b).t().double(),
    "linear_long": lambda a, b, c: (F.linear(a, b.t(), c) * 10).long(),
}
CONVS = {
    "double": lambda x, w, c: F.conv2d(x, w, c, stride=2).double() * 3,
    "long": lambda x, w, c: (F.conv2d(x, w, c) * 10).long(),
    "bool": lambda x, w, c: F.conv2d(x, w, c) > 0,
    "half": lambda x, w, c: F.relu(F.conv2d(x, w, c, padding=1)).half(),
}


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_products_with_other_dtype_epilogues(name):
    rng = np.random.default_rng(5)
    args = tuple(T(rng.standard_normal(s).astype(np.float32)) for s in [(130, 65), (65, 33), (33,)])
    assert_like_eager(PRODUCTS[name], args, args)


@pytest.mark.parametrize("name", sorted(CONVS))
def test_convs_with_other_dtype_epilogues(name):
    rng = np.random.default_rng(7)
    args = tuple(T(rng.standard_normal(s).astype(np.float32)) for s in [(2, 3, 9, 9), (4, 3, 3, 3), (4,)])
    assert_like_eager(CONVS[name], args, args)
    if name in ("bool", "double"):
        assert_like_eager(CONVS[name], args, args, backend="ptx-emulated")
