"""searchsorted, bucketize, isin, unique_consecutive (frontend/searching.py), cartesian_prod,
combinations, tril/triu_indices, vander (frontend/combinatorics.py), cdist, renorm
(frontend/distances.py), the window functions (frontend/windows.py) and the process-wide switches
(frontend/global_settings.py): values against numpy, itertools and plain-Python references of
PyTorch's documented rules (its binary search step by step), gradients against float64 finite
differences, eager against ember.compile, PyTorch's errors."""
import itertools
import math
import warnings

import numpy as np
import pytest

import ember
from finite_differences import check_vjp

RNG = np.random.default_rng(0)


def t(a):
    return ember.tensor(np.asarray(a))


# ----------------------------------------------------------------------------- searching

def torch_binary_search(sequence, value, right):
    """PyTorch's cus_lower_bound / cus_upper_bound, one value at a time."""
    start, end = 0, len(sequence)
    while start < end:
        mid = start + (end - start) // 2
        if not (sequence[mid] > value if right else sequence[mid] >= value):
            start = mid + 1
        else:
            end = mid
    return start


@pytest.mark.parametrize("right", [False, True])
def test_searchsorted_and_bucketize_match_numpy(right):
    side = "right" if right else "left"
    for n in (1, 2, 7, 16):
        boundaries = np.sort(RNG.integers(0, 10, n))
        values = RNG.integers(-1, 12, (3, 5))
        expected = np.searchsorted(boundaries, values, side=side)
        np.testing.assert_array_equal(ember.searchsorted(t(boundaries), t(values), right=right).numpy(), expected)
        np.testing.assert_array_equal(ember.searchsorted(t(boundaries), t(values), side=side).numpy(), expected)
        np.testing.assert_array_equal(ember.bucketize(t(values), t(boundaries), right=right).numpy(), expected)
    rows = np.sort(RNG.standard_normal((3, 6)), -1)
    values = RNG.standard_normal((3, 4))
    expected = np.stack([np.searchsorted(r, v, side=side) for r, v in zip(rows, values)])
    np.testing.assert_array_equal(ember.searchsorted(t(rows), t(values), right=right).numpy(), expected)
    unsorted = RNG.standard_normal(6)
    order = np.argsort(unsorted)
    np.testing.assert_array_equal(ember.searchsorted(t(unsorted), t(values), right=right, sorter=t(order)).numpy(),
                                  np.searchsorted(unsorted, values, side=side, sorter=order))


def test_searchsorted_runs_pytorchs_binary_search_on_nan_and_unsorted_boundaries():
    for boundaries in ([1.0, np.nan], [3.0, 1.0, 2.0, 0.5], [np.nan, 1.0, 2.0]):
        values = [np.nan, 2.0, 0.5, 1.0, -1.0]
        for right in (False, True):
            got = ember.searchsorted(t(boundaries), t(values), right=right).tolist()
            assert got == [torch_binary_search(boundaries, v, right) for v in values], (boundaries, right)


def test_searchsorted_scalars_dtypes_and_mixed_operands():
    assert ember.searchsorted(t([1, 3, 5]), 3).tolist() == 1 and ember.bucketize(3, t([1, 3, 5])).tolist() == 1
    assert ember.searchsorted(t([1, 3, 5]), t([3]), out_int32=True).dtype is ember.int32
    assert ember.searchsorted(t([1.0, 2.5, 3.0]), t([1, 2, 3])).tolist() == [0, 1, 2]
    assert ember.searchsorted(ember.zeros(0), t([1.0])).tolist() == [0]


def test_searchsorted_errors():
    cases = [
        (lambda: ember.bucketize(t([1]), t([[1, 3]])), "boundaries tensor must be 1 dimension, but got dim\\(2\\)"),
        (lambda: ember.searchsorted(t([1, 2]), t([1]), side="foo"), "side can only be 'left' or 'right' but got foo"),
        (lambda: ember.searchsorted(t([1, 2]), t([1]), side="left", right=True), "can't be set to opposites"),
        (lambda: ember.searchsorted(t([[1, 3, 5], [2, 4, 6]]), t([3, 6])), "boundaries tensor \\[2, 3\\] and input "
                                                                              "value tensor \\[2\\]"),
        (lambda: ember.searchsorted(t([5, 1, 3]), t([2]), sorter=t([1, 2, 5])), "sorter index out of range"),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeError, match=message):
            call()


def test_isin_matches_numpy_and_never_finds_nan():
    elements, tests = RNG.integers(0, 10, (4, 5)), RNG.integers(0, 10, 6)
    for invert in (False, True):
        np.testing.assert_array_equal(ember.isin(t(elements), t(tests), invert=invert).numpy(),
                                      np.isin(elements, tests, invert=invert))
    got = ember.isin(t([1.0, np.nan, np.inf, 2.0]), t([np.nan, 1.0, np.inf])).tolist()
    assert got == [True, False, True, False]
    assert ember.isin(2, t([2, 3])).tolist() is True and ember.isin(t([1, 2]), 2).tolist() == [False, True]
    assert ember.isin(t([1, 2]), t([2.0])).tolist() == [False, True]
    assert ember.isin(t([1, 2]), ember.zeros(0, dtype=ember.int64)).tolist() == [False, False]


def test_unique_consecutive_matches_groupby():
    data = [1, 1, 2, 2, 3, 1, 1, 2]
    groups = [(k, len(list(g))) for k, g in itertools.groupby(data)]
    values, inverse, counts = ember.unique_consecutive(t(data), return_inverse=True, return_counts=True)
    assert values.tolist() == [k for k, _ in groups] and counts.tolist() == [n for _, n in groups]
    assert inverse.tolist() == [i for i, (_, n) in enumerate(groups) for _ in range(n)]
    rows = t([[1, 1], [1, 1], [2, 3]])
    values, inverse, counts = rows.unique_consecutive(return_inverse=True, return_counts=True, dim=0)
    assert values.tolist() == [[1, 1], [2, 3]] and inverse.tolist() == [0, 0, 1] and counts.tolist() == [2, 1]
    values, inverse = ember.unique_consecutive(rows, return_inverse=True)
    assert values.tolist() == [1, 2, 3] and inverse.tolist() == [[0, 0], [0, 0], [1, 2]]
    assert ember.unique_consecutive(t([1.0, np.nan, np.nan]), return_counts=True)[1].tolist() == [1, 1, 1]


# ----------------------------------------------------------------------------- products and indices

def test_cartesian_prod_and_combinations_match_itertools():
    a, b, c = [1, 2], [3, 4, 5], [6, 7]
    assert ember.cartesian_prod(t(a), t(b), t(c)).tolist() == [list(p) for p in itertools.product(a, b, c)]
    single = t(a)
    assert ember.cartesian_prod(single) is single
    x = [1.0, 2.0, 3.0, 4.0]
    for r in (1, 2, 3, 5):
        for with_replacement in (False, True):
            choose = itertools.combinations_with_replacement if with_replacement else itertools.combinations
            got = ember.combinations(t(x), r, with_replacement)
            expected = [list(p) for p in choose(x, r)]
            assert got.tolist() == expected and tuple(got.shape) == (len(expected), r)
    assert tuple(ember.combinations(t(x), 0).shape) == (0,)
    check_vjp(lambda u, v: ember.cartesian_prod(u, v), [RNG.standard_normal(3), RNG.standard_normal(2)])
    check_vjp(lambda u: ember.combinations(u, 3, True), [RNG.standard_normal(4)])


def test_triangle_indices_match_numpy():
    for rows, cols in ((3, 4), (4, 3), (0, 3), (5, 5)):
        for offset in (-5, -1, 0, 2, 10):
            np.testing.assert_array_equal(ember.tril_indices(rows, cols, offset).numpy(),
                                          np.stack(np.tril_indices(rows, offset, cols)).reshape(2, -1))
            np.testing.assert_array_equal(ember.triu_indices(rows, cols, offset).numpy(),
                                          np.stack(np.triu_indices(rows, offset, cols)).reshape(2, -1))
    assert ember.tril_indices(3, 3, dtype=ember.int32).dtype is ember.int32
    with pytest.raises(RuntimeError, match="row must be non-negative, got-1"):
        ember.tril_indices(-1, 3)
    with pytest.raises(NotImplementedError, match="\"triu_indices\" not implemented for 'Float'"):
        ember.triu_indices(3, 3, dtype=ember.float32)


def test_vander_matches_numpy_and_promotes_integers_to_int64():
    x = np.array([1.5, -2.0, 0.3])
    for n in (None, 0, 1, 4):
        for increasing in (False, True):
            np.testing.assert_allclose(ember.vander(t(x), n, increasing).numpy(), np.vander(x, n, increasing),
                                       rtol=1e-15)
    assert ember.vander(t([1, 2]).to(ember.int8), 3).dtype is ember.int64
    assert ember.vander(t([True, False])).tolist() == [[1, 1], [0, 1]]
    check_vjp(lambda u: ember.vander(u, 4), [RNG.standard_normal(3)])
    with pytest.raises(RuntimeError, match="N must be non-negative."):
        ember.vander(t([1.0]), N=-1)


# ----------------------------------------------------------------------------- cdist, renorm

def cdist_reference(a, b, p):
    diff = np.abs(a[..., :, None, :] - b[..., None, :, :])
    if p == 0:
        return (diff != 0).sum(-1).astype(a.dtype)
    if p == math.inf:
        return diff.max(-1)
    return (diff ** p).sum(-1) ** (1 / p)


@pytest.mark.parametrize("p", [0, 0.5, 1, 2, 3, math.inf])
def test_cdist_matches_the_definition_with_broadcast_batches(p):
    a, b = RNG.standard_normal((2, 5, 3)), RNG.standard_normal((4, 3))
    np.testing.assert_allclose(ember.cdist(t(a), t(b), p).numpy(), cdist_reference(a, b[None], p), rtol=1e-13)


def test_cdist_by_matmul_for_many_rows_as_pytorch():
    a, b = RNG.standard_normal((30, 3)), RNG.standard_normal((20, 3))
    b[3] = a[4]
    expected = cdist_reference(a, b, 2)
    by_matmul = ember.cdist(t(a), t(b)).numpy()  # more than 25 rows: PyTorch's matmul form
    np.testing.assert_allclose(by_matmul, expected, atol=1e-7)
    assert by_matmul[4, 3] == 1e-15  # sqrt of the clamp at 1e-30, as PyTorch's
    direct = ember.cdist(t(a), t(b), compute_mode="donot_use_mm_for_euclid_dist").numpy()
    np.testing.assert_allclose(direct, expected, rtol=1e-14)
    assert direct[4, 3] == 0.0


@pytest.mark.parametrize("p", [1, 1.5, 2, 3, math.inf])
def test_cdist_gradients(p):
    a, b = RNG.standard_normal((4, 3)), RNG.standard_normal((3, 3))
    check_vjp(lambda u, v: ember.cdist(u, v, p), [a, b])


def test_cdist_gradients_where_the_chain_rule_gives_nan():
    a = ember.tensor([[0.0, 1.0], [1.0, 2.0]], dtype=ember.float64, requires_grad=True)
    b = ember.tensor([[0.0, 1.0]], dtype=ember.float64)
    for p in (0.5, 2, 3):
        a.grad = None
        ember.cdist(a, b, p).sum().backward()
        assert np.isfinite(a.grad.numpy()).all() and a.grad.numpy()[0].tolist() == [0.0, 0.0], p
    x = ember.tensor([[1.0, 2.0, -2.0]], dtype=ember.float64, requires_grad=True)
    ember.cdist(x, ember.zeros(1, 3, dtype=ember.float64), math.inf).sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, -1.0]]  # every element that reaches the maximum, as PyTorch
    y = ember.tensor([[1.0, 2.0]], requires_grad=True)
    ember.cdist(y, ember.zeros(1, 2), 0).sum().backward()
    assert y.grad.tolist() == [[0.0, 0.0]]


def renorm_reference(x, p, dim, maxnorm):
    moved = np.moveaxis(x, dim, 0)
    norms = np.array([np.linalg.norm(s.ravel(), p) for s in moved])
    factor = np.where(norms > maxnorm, maxnorm / (norms + 1e-7), 1.0)
    return np.moveaxis(moved * factor.reshape((-1,) + (1,) * (x.ndim - 1)), 0, dim)


def test_renorm_matches_reference_and_gradients():
    x = RNG.standard_normal((3, 4, 2)) * 3
    x[1] = 0
    for p in (1, 2, 3, math.inf):
        for dim in (0, 1, -1):
            np.testing.assert_allclose(ember.renorm(t(x), p, dim, 2.0).numpy(), renorm_reference(x, p, dim, 2.0),
                                       rtol=1e-14)
    check_vjp(lambda u: ember.renorm(u, 2, 0, 2.0), [x])
    check_vjp(lambda u: ember.renorm(u, 3, 1, 1.5), [x + 0.1])
    y = t(x.copy())
    assert y.renorm_(1, 0, 1.0) is y
    np.testing.assert_allclose(y.numpy(), renorm_reference(x, 1, 0, 1.0), rtol=1e-14)
    with pytest.raises(RuntimeError, match="renorm: non-positive-norm not supported"):
        ember.renorm(t(x), 0, 0, 3)
    with pytest.raises(RuntimeError, match="renorm: input needs at least 2 dimensions, got 1 dimensions"):
        ember.renorm(t([1.0, 2.0]), 2, 0, 1)


def test_cdist_errors():
    cases = [
        (lambda: ember.cdist(t([[1, 2]]), t([[1, 2]])), RuntimeError,
         "only supports floating-point dtypes, X1 got: Long"),
        (lambda: ember.cdist(ember.ones(3, 2), ember.ones(1, 3)), RuntimeError, "X1: 2 X2: 3"),
        (lambda: ember.cdist(ember.ones(3, 2), ember.ones(1, 2), p=-1), RuntimeError, "non-negative p values"),
        (lambda: ember.cdist(t([1.0, 2]), t([1.0, 2])), RuntimeError, "at least 2D tensors, X1 got: 1D"),
        (lambda: ember.cdist(ember.ones(3, 2), ember.ones(1, 2), compute_mode="foo"), ValueError,
         "foo is not a valid value for compute_mode"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


# ----------------------------------------------------------------------------- windows

def symmetric_window(name, n):
    """numpy's symmetric windows (np.hanning etc.), PyTorch's periodic=False."""
    return {"hann": np.hanning, "hamming": np.hamming, "blackman": np.blackman, "bartlett": np.bartlett,
            "kaiser": lambda m: np.kaiser(m, 12.0)}[name](n)


@pytest.mark.parametrize("name", ["hann", "hamming", "blackman", "bartlett", "kaiser"])
def test_windows_match_numpys_and_their_periodic_forms(name):
    function = getattr(ember, f"{name}_window")
    for n in (0, 1, 2, 5, 12):
        symmetric = function(n, periodic=False, dtype=ember.float64)
        expected = np.ones(n) if n <= 1 else symmetric_window(name, n)
        np.testing.assert_allclose(symmetric.numpy(), expected, atol=1e-15)
        periodic = function(n, dtype=ember.float64)
        expected = np.ones(n) if n <= 1 else symmetric_window(name, n + 1)[:n]
        np.testing.assert_allclose(periodic.numpy(), expected, atol=1e-15)
        assert function(n).dtype is ember.float32 and not function(n).requires_grad
    assert function(3, requires_grad=True).requires_grad
    with pytest.raises(RuntimeError, match=f"{name}_window expects floating point dtypes, got: "
                                           "TensorOptions\\(dtype=long int"):
        function(3, dtype=ember.int64)
    with pytest.raises(RuntimeError, match=f"{name}_window requires non-negative window_length, got window_length=-1"):
        function(-1)


def test_hamming_and_kaiser_parameters():
    n = np.arange(7)
    np.testing.assert_allclose(ember.hamming_window(7, False, 0.5, 0.3, dtype=ember.float64).numpy(),
                               0.5 - 0.3 * np.cos(2 * np.pi * n / 6), atol=1e-15)
    np.testing.assert_allclose(ember.kaiser_window(7, False, 3.5, dtype=ember.float64).numpy(), np.kaiser(7, 3.5),
                               rtol=1e-14)


# ----------------------------------------------------------------------------- switches

@pytest.fixture
def restored_switches():
    yield
    ember.use_deterministic_algorithms(False)
    ember.set_float32_matmul_precision("highest")
    ember.set_printoptions(profile="default")


def test_deterministic_switches_are_recorded(restored_switches):
    assert not ember.are_deterministic_algorithms_enabled() and ember.get_deterministic_debug_mode() == 0
    ember.use_deterministic_algorithms(True)
    assert ember.are_deterministic_algorithms_enabled() and ember.get_deterministic_debug_mode() == 2
    ember.use_deterministic_algorithms(True, warn_only=True)
    assert ember.is_deterministic_algorithms_warn_only_enabled() and ember.get_deterministic_debug_mode() == 1
    ember.set_deterministic_debug_mode("default")
    assert not ember.are_deterministic_algorithms_enabled()
    with pytest.raises(TypeError, match="argument 'mode' \\(position 1\\) must be bool, not int"):
        ember.use_deterministic_algorithms(1)
    with pytest.raises(RuntimeError, match="expected one of `default`, `warn`, `error`, but got foo"):
        ember.set_deterministic_debug_mode("foo")


def test_float32_matmul_precision_is_recorded_and_matmuls_stay_float32(restored_switches):
    a, b = ember.randn(8, 8), ember.randn(8, 8)
    before = (a @ b).numpy()
    assert ember.get_float32_matmul_precision() == "highest"
    ember.set_float32_matmul_precision("medium")
    assert ember.get_float32_matmul_precision() == "medium"
    np.testing.assert_array_equal((a @ b).numpy(), before)
    with pytest.warns(UserWarning, match="foo is not one of 'highest', 'high', or 'medium'"):
        ember.set_float32_matmul_precision("foo")
    assert ember.get_float32_matmul_precision() == "medium"


def test_set_printoptions_changes_how_tensors_print(restored_switches):
    ember.set_printoptions(precision=2)
    assert repr(ember.tensor([1.12345])) == "tensor([1.12])"
    ember.set_printoptions(threshold=5)
    assert repr(ember.arange(10)) == "tensor([0, 1, 2,  ..., 7, 8, 9])"
    ember.set_printoptions(edgeitems=1)
    assert repr(ember.arange(10)) == "tensor([0,  ..., 9])"
    ember.set_printoptions(profile="default")
    assert repr(ember.tensor([1.12345])) == "tensor([1.1235])"
    assert repr(ember.arange(10)) == "tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])"
    ember.set_printoptions(linewidth=20)
    assert repr(ember.arange(6.0)).splitlines()[0] == "tensor([0., 1., 2.,"
    ember.set_printoptions(profile="full")
    assert "..." not in repr(ember.arange(2000))


def test_compiled_matches_eager():
    def searches(boundaries, values, a, b):
        return (ember.searchsorted(boundaries, values), ember.bucketize(values, boundaries, right=True),
                ember.isin(values, boundaries), ember.cdist(a, b), ember.cdist(a, b, 1), ember.renorm(a, 2, 0, 1.0),
                ember.cartesian_prod(a[0], b[0]), ember.combinations(a[0], 2), ember.vander(a[0], 3))
    arrays = [np.sort(RNG.standard_normal(9)), RNG.standard_normal((3, 4)), RNG.standard_normal((5, 3)),
              RNG.standard_normal((4, 3))]
    tensors = [t(a) for a in arrays]
    compiled = ember.compile(searches)
    compiled(*tensors)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for got, want in zip(compiled(*tensors), searches(*tensors)):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-14)
