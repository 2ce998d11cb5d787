"""torch functions composed in frontend/math_more.py and frontend/array_more.py (deg2rad ... block_diag)
and their Tensor methods: values against numpy in float64, gradients against float64 finite
differences, a few through ember.compile, dtype rules, in-place forms and torch's error messages."""
import math

import numpy as np
import pytest

import ember
from finite_differences import check_vjp

RNG = np.random.default_rng(0)
A = RNG.standard_normal((3, 4))
B = RNG.standard_normal((3, 4))
P01 = RNG.uniform(0.05, 0.95, (3, 4))
_erfc = np.vectorize(math.erfc)


def _t(x):
    return ember.tensor(x)


UNARY = {
    "deg2rad": (np.deg2rad, A), "rad2deg": (np.rad2deg, A), "fix": (np.trunc, A * 3), "exp2": (np.exp2, A),
    "erfc": (_erfc, A * 4), "sinc": (np.sinc, np.where(A > 1, 0.0, A)),
    "logit": (lambda p: np.log(p / (1 - p)), P01), "sgn": (np.sign, A),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_function_method_and_inplace_match_numpy(name):
    reference, x = UNARY[name]
    np.testing.assert_allclose(getattr(ember, name)(_t(x)).numpy(), reference(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(getattr(_t(x), name)().numpy(), reference(x), rtol=1e-12, atol=1e-14)
    y = _t(x)
    assert getattr(y, name + "_")() is y
    np.testing.assert_allclose(y.numpy(), reference(x), rtol=1e-12, atol=1e-14)
    if name != "fix":  # (a step function: zero slope, nothing for differences to check)
        check_vjp(lambda v: getattr(ember, name)(v), [x])


def test_integer_inputs_give_the_default_float_dtype():
    ints = ember.tensor([-2, 0, 3])
    for name in ("deg2rad", "rad2deg", "erfc", "sinc", "logit"):
        assert getattr(ember, name)(ints).dtype == ember.float32
    assert ember.float_power(ints, 2).dtype == ember.float64
    assert ember.xlogy(ints, ints).dtype == ember.float32 and ember.copysign(ints, -1).dtype == ember.float32
    np.testing.assert_allclose(ember.float_power(ints, 2).numpy(), [4.0, 0.0, 9.0])


def test_fmax_fmin_ignore_nan_and_signbit_copysign_see_negative_zero():
    x = np.array([np.nan, 1.0, np.nan, -0.0, 2.0])
    y = np.array([3.0, np.nan, np.nan, 0.0, -1.0])
    np.testing.assert_array_equal(ember.fmax(_t(x), _t(y)).numpy(), np.fmax(x, y))
    np.testing.assert_array_equal(_t(x).fmin(_t(y)).numpy(), np.fmin(x, y))
    np.testing.assert_array_equal(ember.signbit(_t(x)).numpy(), np.signbit(x))
    np.testing.assert_array_equal(np.signbit(ember.copysign(_t(y), _t(x)).numpy()), np.signbit(np.copysign(y, x)))
    np.testing.assert_array_equal(ember.signbit(ember.tensor([-1, 0, 2])).numpy(), [True, False, False])
    with pytest.raises(TypeError, match="argument 'other' .* must be Tensor"):
        ember.fmax(_t(x), 1.0)
    check_vjp(ember.fmax, [A, B])
    check_vjp(ember.fmin, [A, B])
    check_vjp(lambda a, b: ember.copysign(a, b), [A, B], wrt=[0])


def test_xlogy_heaviside_logit_eps_and_float_power():
    x = np.array([0.0, 0.0, 2.0, 1.5])
    y = np.array([0.0, np.nan, 3.0, 0.5])
    np.testing.assert_array_equal(ember.xlogy(_t(x), _t(y)).numpy(), [0.0, np.nan, 2 * np.log(3.0), 1.5 * np.log(0.5)])
    check_vjp(ember.xlogy, [P01, P01 + 1])
    check_vjp(ember.xlogy, [np.array([0.0, 0.5]), np.array([0.3, 2.0])])  # slope log(y) at x == 0
    values = np.array([0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(ember.heaviside(_t(np.array([-1.0, 0.0, 2.0, np.nan])), _t(values)).numpy(),
                                  np.heaviside(np.array([-1.0, 0.0, 2.0, -1.0]), values))
    with pytest.raises(RuntimeError, match="heaviside is not yet implemented for tensors with different dtypes"):
        ember.heaviside(_t(values), ember.tensor([1]))
    clamped = np.clip(P01, 0.2, 0.8)
    np.testing.assert_allclose(ember.logit(_t(P01), eps=0.2).numpy(), np.log(clamped / (1 - clamped)))
    check_vjp(lambda p: ember.logit(p, 0.2), [P01])
    np.testing.assert_allclose(ember.float_power(_t(np.abs(A)), _t(B)).numpy(), np.abs(A) ** B)
    check_vjp(ember.float_power, [np.abs(A) + 0.1, B])
    with pytest.raises(RuntimeError, match="float_power_ has dtype Float but the operation's result requires"):
        ember.ones(2).float_power_(2)


def test_predicates_positive_rsub_scalar_tensor_and_comparison_methods():
    x = _t(np.array([-np.inf, 1.0, np.inf, np.nan]))
    assert ember.isposinf(x).tolist() == [False, False, True, False]
    assert ember.isneginf(x).tolist() == [True, False, False, False]
    assert x.isreal().tolist() == [True] * 4 and not ember.is_complex(x) and ember.is_signed(x)
    assert not ember.tensor([1], dtype=ember.uint8).is_signed() and not ember.tensor([True]).is_signed()
    assert ember.positive(x) is x and x.positive() is x
    with pytest.raises(RuntimeError, match="The `\\+` operator, on a bool tensor is not supported"):
        ember.positive(ember.tensor([True]))
    np.testing.assert_allclose(ember.rsub(_t(A), _t(B), alpha=2).numpy(), B - 2 * A)
    s = ember.scalar_tensor(3)
    assert s.shape == () and s.dtype == ember.float32 and s.item() == 3.0
    assert ember.scalar_tensor(3, dtype=ember.int64).dtype == ember.int64
    a, b = _t(A), _t(B)
    assert a.not_equal(b).all() and a.greater_equal(a).all() and a.less_equal(a).all()
    c = _t(A)
    c.greater_equal_(b)
    np.testing.assert_array_equal(c.numpy(), (A >= B).astype(float))
    assert ember.tensor([1, 2]).type_as(a).dtype == ember.float64
    assert a.allclose(a + 1e-12) and a.isclose(a).all() and a.equal(_t(A)) and not a.equal(b)


def test_nan_reductions_and_logcumsumexp():
    x = A.copy()
    x[0, 1] = x[2, 2] = np.nan
    np.testing.assert_allclose(ember.nansum(_t(x), 1).numpy(), np.nansum(x, 1))
    np.testing.assert_allclose(_t(x).nanmean().numpy(), np.nanmean(x))
    np.testing.assert_allclose(ember.nanmean(_t(x), 0, keepdim=True).numpy(), np.nanmean(x, 0, keepdims=True))
    assert ember.nansum(ember.tensor([1, 2])).item() == 3
    with pytest.raises(RuntimeError, match="floating point or complex dtype but got Long"):
        ember.nanmean(ember.tensor([1, 2]))
    wide = np.array([[-1000.0, 0.0, 3.0, -2.0, 700.0]])
    np.testing.assert_allclose(ember.logcumsumexp(_t(wide), 1).numpy(), np.logaddexp.accumulate(wide, 1))
    np.testing.assert_allclose(_t(A).logcumsumexp(0).numpy(), np.logaddexp.accumulate(A, 0))
    check_vjp(lambda v: ember.nanmean(v, 1), [A])
    check_vjp(lambda v: ember.logcumsumexp(v, 1), [A])


def test_diff_and_trapezoid_rules():
    np.testing.assert_allclose(ember.diff(_t(A), n=2, dim=0, prepend=_t(B[:1]), append=_t(B)).numpy(),
                               np.diff(A, 2, 0, prepend=B[:1], append=B))
    assert ember.diff(ember.tensor([True, False, False])).tolist() == [True, False]
    with pytest.raises(RuntimeError, match="diff expects input to be at least one-dimensional"):
        ember.diff(ember.tensor(1.0))
    xs = np.cumsum(np.abs(B), 1)
    np.testing.assert_allclose(ember.trapezoid(_t(A), _t(xs)).numpy(), np.trapezoid(A, xs))
    np.testing.assert_allclose(ember.trapz(_t(A), dx=0.5, dim=0).numpy(), np.trapezoid(A, dx=0.5, axis=0))
    np.testing.assert_allclose(ember.trapezoid(_t(A), _t(xs[0])).numpy(), np.trapezoid(A, xs[0]))
    halves = (A[:, 1:] + A[:, :-1]) / 2 * np.diff(xs, axis=1)
    np.testing.assert_allclose(ember.cumulative_trapezoid(_t(A), _t(xs)).numpy(), np.cumsum(halves, 1))
    check_vjp(lambda y, x: ember.trapezoid(y, x), [A, xs])
    check_vjp(lambda y: ember.diff(y, 2), [A])


def test_products_kron_vdot_addr_addmv():
    np.testing.assert_allclose(ember.kron(_t(A), _t(B[:2, :3])).numpy(), np.kron(A, B[:2, :3]))
    np.testing.assert_allclose(_t(A[0]).kron(_t(B)).numpy(), np.kron(A[0], B))
    np.testing.assert_allclose(ember.vdot(_t(A[0]), _t(B[0])).numpy(), np.vdot(A[0], B[0]))
    np.testing.assert_allclose(ember.addr(_t(A), _t(B[0, :3]), _t(B[1]), beta=0.5, alpha=2).numpy(),
                               0.5 * A + 2 * np.outer(B[0, :3], B[1]))
    np.testing.assert_allclose(_t(A[0, :3]).addmv(_t(B), _t(A[1]), alpha=3).numpy(), A[0, :3] + 3 * B @ A[1])
    nan = np.full((3, 4), np.nan)
    assert not np.isnan(ember.addr(_t(nan), _t(B[0, :3]), _t(B[1]), beta=0).numpy()).any()
    check_vjp(ember.kron, [A[:2, :2], B[:2, :3]])
    check_vjp(lambda m, u, v: ember.addr(m, u, v, beta=2, alpha=3), [A, B[0, :3], B[1]])
    check_vjp(lambda y, m, v: ember.addmv(y, m, v), [A[0, :3], B, A[1]])


def test_rot90_splits_stacks_and_views():
    cube = A.reshape(3, 2, 2)
    for k in range(-2, 5):
        np.testing.assert_array_equal(ember.rot90(_t(cube), k, [2, 0]).numpy(), np.rot90(cube, k, (2, 0)))
    with pytest.raises(RuntimeError, match="expected rotation dims to be different"):
        ember.rot90(_t(A), 1, [0, 0])
    for sections in (2, 3, 5, [1, 3], [3, 1, 7]):
        got = ember.tensor_split(_t(A), sections, dim=1)
        for g, e in zip(got, np.array_split(A, sections, axis=1)):
            np.testing.assert_array_equal(g.numpy(), e)
    assert [p.shape for p in _t(A).hsplit(2)] == [(3, 2), (3, 2)]
    assert [p.shape for p in ember.vsplit(_t(A), [1])] == [(1, 4), (2, 4)]
    assert [p.shape for p in ember.dsplit(_t(cube), 2)] == [(3, 2, 1), (3, 2, 1)]
    with pytest.raises(RuntimeError, match="torch.hsplit attempted to split along dimension 1"):
        ember.hsplit(ember.ones(2, 3), 2)
    np.testing.assert_array_equal(ember.dstack([_t(A), _t(B)]).numpy(), np.dstack([A, B]))
    np.testing.assert_array_equal(ember.column_stack([_t(A[0]), _t(B.T)]).numpy(), np.column_stack([A[0], B.T]))
    np.testing.assert_array_equal(ember.row_stack([_t(A[0]), _t(B)]).numpy(), np.vstack([A[0], B]))
    assert [t.shape for t in ember.atleast_3d(_t(A[0, 0]), _t(A[0]), _t(A))] == [(1, 1, 1), (1, 4, 1), (3, 4, 1)]
    np.testing.assert_array_equal(ember.moveaxis(_t(cube), 0, -1).numpy(), np.moveaxis(cube, 0, -1))
    np.testing.assert_array_equal(_t(A).T.ravel().numpy(), A.T.ravel())
    index = np.array([[0, -1], [5, 3]])
    np.testing.assert_array_equal(ember.take(_t(A), ember.tensor(index)).numpy(), np.take(A, index))
    with pytest.raises(IndexError, match="out of range: tried to access index 12 on a tensor of 12 elements"):
        ember.take(_t(A), ember.tensor([12]))
    np.testing.assert_array_equal(ember.diagflat(_t(A[:2, :2]), -1).numpy(), np.diagflat(A[:2, :2], -1))
    blocks = ember.block_diag(_t(A), _t(B[0]), _t(B[0, 0]))
    expected = np.zeros((5, 9))
    expected[:3, :4], expected[3, 4:8], expected[4, 8] = A, B[0], B[0, 0]
    np.testing.assert_array_equal(blocks.numpy(), expected)
    check_vjp(lambda v: ember.rot90(v, 3) * ember.tensor(B.T), [A])
    check_vjp(lambda a, b: ember.block_diag(a, b), [A[:2], B[0]])
    check_vjp(lambda v: ember.take(v, ember.tensor([[0, -1], [5, 5]])), [A])


def test_compositions_compile():
    def model(x, y):
        return (ember.sinc(x) + ember.xlogy(ember.abs(x), ember.abs(y) + 1) + ember.fmax(x, y)
                + ember.logit(ember.sigmoid(x), eps=1e-3) + ember.copysign(x, y)).sum(1) \
            + ember.logcumsumexp(x, 1)[:, -1] + ember.trapezoid(y) + ember.nansum(ember.kron(x, y[:1, :1]), 1)
    x, y = _t(A.astype(np.float32)), _t(B.astype(np.float32))
    eager = model(x, y)
    compiled = ember.compile(model)
    np.testing.assert_allclose(compiled(x, y).numpy(), eager.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(compiled(x, y).numpy(), eager.numpy(), rtol=1e-5, atol=1e-5)
