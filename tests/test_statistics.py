"""cov, corrcoef, quantile, nanquantile, nanmedian, mode, histc, histogram and bincount
(frontend/statistics.py): values against numpy (np.cov, np.corrcoef, np.quantile, np.histogram,
np.bincount) and plain-Python references of PyTorch's documented rules (the lower median, the
smallest most frequent value and its last index, bins closed on the right at the end), gradients
against float64 finite differences, eager against ember.compile, PyTorch's errors and warnings."""
import collections
import warnings

import numpy as np
import pytest

import ember
from finite_differences import check_vjp

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 7))
FWEIGHTS = np.array([1, 2, 0, 3, 1, 1, 2])
AWEIGHTS = RNG.uniform(0.2, 2.0, 7)


def t(a):
    return ember.tensor(np.asarray(a))


# ----------------------------------------------------------------------------- cov, corrcoef

@pytest.mark.parametrize("correction", [0, 1, 2])
def test_cov_matches_numpy_with_and_without_weights(correction):
    np.testing.assert_allclose(ember.cov(t(X), correction=correction).numpy(), np.cov(X, ddof=correction),
                               rtol=1e-13)
    got = ember.cov(t(X), correction=correction, fweights=t(FWEIGHTS), aweights=t(AWEIGHTS)).numpy()
    np.testing.assert_allclose(got, np.cov(X, ddof=correction, fweights=FWEIGHTS, aweights=AWEIGHTS), rtol=1e-13)
    got = ember.cov(t(X), correction=correction, aweights=t(AWEIGHTS)).numpy()
    np.testing.assert_allclose(got, np.cov(X, ddof=correction, aweights=AWEIGHTS), rtol=1e-13)


def test_cov_of_one_variable_integers_and_too_few_observations():
    assert ember.cov(t(X[0])).shape == ()
    np.testing.assert_allclose(ember.cov(t(X[0])).item(), np.var(X[0], ddof=1), rtol=1e-13)
    ints = ember.cov(t([[1, 2, 3], [1, 5, 2]]))
    assert ints.dtype is ember.float32
    np.testing.assert_allclose(ints.numpy(), np.cov([[1, 2, 3], [1, 5, 2]]), rtol=1e-6)
    with pytest.warns(UserWarning, match=r"cov\(\): degrees of freedom is <= 0"):
        assert ember.cov(t([1.0, 2.0]), correction=3).item() == np.inf


def test_corrcoef_matches_numpy_and_clips():
    np.testing.assert_allclose(ember.corrcoef(t(X)).numpy(), np.corrcoef(X), rtol=1e-13)
    assert ember.corrcoef(t(X[0])).item() == 1.0
    constant_row = ember.corrcoef(t([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])).numpy()
    assert constant_row[0, 0] == 1.0 and np.isnan(constant_row[1]).all()
    big = 1e8 * np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0000001]])
    assert (np.abs(ember.corrcoef(t(big)).numpy()) <= 1).all()


def test_cov_and_corrcoef_gradients():
    check_vjp(lambda x: ember.cov(x), [X])
    check_vjp(lambda x, w: ember.cov(x, fweights=t(FWEIGHTS), aweights=w), [X, AWEIGHTS])
    check_vjp(ember.corrcoef, [X])


# ----------------------------------------------------------------------------- quantiles

Y = RNG.standard_normal((4, 5, 6))
Y_NAN = Y.copy()
Y_NAN[1, 2, 3] = np.nan
Y_NAN[2, :, 1] = np.nan
METHODS = ["linear", "lower", "higher", "midpoint", "nearest"]


def numpy_quantile(values, q, dim, keepdim, method, ignore_nan):
    fn = np.nanquantile if ignore_nan else np.quantile
    out = fn(values, q, axis=dim, keepdims=keepdim, method=method)
    if keepdim and dim is None:  # numpy keeps every dim as 1, as PyTorch does
        out = out.reshape(np.shape(q) + (1,) * values.ndim)
    return out


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("ignore_nan", [False, True], ids=["quantile", "nanquantile"])
def test_quantiles_match_numpy(method, ignore_nan):
    fn = ember.nanquantile if ignore_nan else ember.quantile
    for q in (0.3, 0.5, np.array([0.0, 0.25, 0.5, 1.0]), np.array(0.7)):
        for dim, keepdim in ((None, False), (None, True), (1, False), (-1, True), (0, False)):
            got = fn(t(Y_NAN), t(q) if isinstance(q, np.ndarray) else q, dim, keepdim, interpolation=method)
            expected = numpy_quantile(Y_NAN, q, dim, keepdim, method, ignore_nan)
            np.testing.assert_allclose(got.numpy(), expected, rtol=1e-13, atol=1e-15, err_msg=f"{q} {dim} {keepdim}")


def test_quantile_gradients_for_input_and_q():
    check_vjp(lambda x, q: ember.quantile(x, q, dim=1), [Y[0], np.array([0.1, 0.55, 0.9])])
    check_vjp(lambda x: ember.nanquantile(x, 0.4, dim=0, interpolation="midpoint"), [Y[1]])
    x = ember.tensor([3.0, 1, 2, 1, np.nan], dtype=ember.float64, requires_grad=True)
    ember.nanquantile(x, 0.4).backward()  # rank 1.2 among 1, 1, 2, 3: lerp(1, 2, 0.2)
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0, 0.2, 0.8, 0.0])


def test_quantile_errors():
    cases = [
        (lambda: ember.quantile(ember.zeros(0), 0.5), "quantile\\(\\) input tensor must be non-empty"),
        (lambda: ember.quantile(t([1.0, 2]), t([[0.5]])), "q must be a scalar or 1D tensor"),
        (lambda: ember.quantile(t([1, 2]), 0.5), "input tensor must be either float or double dtype"),
        (lambda: ember.quantile(t([1.0, 2]), ember.tensor([0.5])), "q tensor must be same dtype as the input"),
        (lambda: ember.quantile(t([1.0, 2]), 1.5), "q must be in the range \\[0, 1\\] but got 1.5"),
        (lambda: ember.quantile(t([1.0, 2]), t([0.5, -0.1])), "q values must be in the range \\[0, 1\\]"),
        (lambda: ember.nanquantile(t([1.0, 2]), 0.5, interpolation="foo"),
         "interpolation must be one of linear, lower, higher, midpoint or nearest, but got foo"),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeError, match=message):
            call()


# ----------------------------------------------------------------------------- nanmedian, mode

def lower_median_reference(values, axis):
    """PyTorch's nanmedian: the ((k - 1) // 2)-th of the k non-nan values in sorted order (nan
    where k is 0), with the index of the first equal value."""
    moved = np.moveaxis(values, axis, -1)
    out_values, out_indices = np.empty(moved.shape[:-1]), np.empty(moved.shape[:-1], np.int64)
    for position in np.ndindex(moved.shape[:-1]):
        row = moved[position]
        order = np.argsort(row, kind="stable")
        k = int((~np.isnan(row)).sum())
        chosen = order[max((k - 1) // 2, 0)]
        out_values[position], out_indices[position] = row[chosen], chosen
    return out_values, out_indices


def test_nanmedian_is_the_lower_median_of_the_non_nan_values():
    data = np.round(Y_NAN * 2) / 2  # ties
    data[2, :, 1] = np.nan
    for dim in (0, 1, 2, -1):
        values, indices = ember.nanmedian(t(data), dim)
        expected_values, expected_indices = lower_median_reference(data, dim)
        np.testing.assert_array_equal(values.numpy(), expected_values)
        finite = ~np.isnan(expected_values)  # (the index of an all-nan slice is unspecified)
        np.testing.assert_array_equal(indices.numpy()[finite], expected_indices[finite])
    assert ember.nanmedian(t(data)).item() == lower_median_reference(data.reshape(1, -1), 1)[0][0]
    kept = ember.nanmedian(t([[1, 2, 3]]), 1, keepdim=True)
    assert kept.values.tolist() == [[2]] and kept.indices.tolist() == [[1]] and kept.values.dtype is ember.int64
    assert np.isnan(ember.nanmedian(ember.zeros(0)).item())
    check_vjp(lambda x: ember.nanmedian(x, 1).values, [Y[0]])


def mode_reference(row):
    counts = collections.Counter(row.tolist())
    best = max(counts.values())
    value = min(v for v, c in counts.items() if c == best)
    return value, max(i for i, v in enumerate(row.tolist()) if v == value)


def test_mode_is_the_smallest_most_frequent_value_at_its_last_index():
    data = RNG.integers(0, 4, (5, 9))
    for dim in (0, 1, -1):
        for keepdim in (False, True):
            values, indices = ember.mode(t(data), dim, keepdim)
            rows = np.moveaxis(data, dim, -1)
            expected = np.array([mode_reference(r) for r in rows.reshape(-1, rows.shape[-1])])
            shape = [d for i, d in enumerate(data.shape) if i != dim % 2]
            if keepdim:
                shape.insert(dim % 2, 1)
            np.testing.assert_array_equal(values.numpy(), expected[:, 0].reshape(shape))
            np.testing.assert_array_equal(indices.numpy(), expected[:, 1].reshape(shape))
    assert tuple(ember.mode(t([3, 1, 2, 1, 3, 3, 1]))) == (1, 6)
    assert ember.mode(t(4.0)).values.item() == 4.0
    x = ember.tensor([3.0, 1, 2, 1], requires_grad=True)
    ember.mode(x).values.backward()
    assert x.grad.tolist() == [0, 0, 0, 1]
    with pytest.raises(IndexError, match="mode\\(\\): Expected reduction dim 0 to have non-zero size."):
        ember.mode(ember.zeros(0))


# ----------------------------------------------------------------------------- histograms

def test_histc_counts_as_numpy_with_pytorchs_default_range():
    data = np.concatenate([RNG.standard_normal(300), [0.0, 0.25, 0.5, 1.0, 2.0, np.nan]])
    for bins, low, high in ((4, 0.0, 1.0), (7, -2.0, 2.0), (13, -0.5, 3.0)):
        got = ember.histc(t(data), bins, low, high)
        assert got.dtype is ember.float64
        np.testing.assert_array_equal(got.numpy(), np.histogram(data, bins, (low, high))[0])
    finite = data[:-1]
    np.testing.assert_array_equal(ember.histc(t(finite), 10).numpy(), np.histogram(finite, 10)[0])
    np.testing.assert_array_equal(ember.histc(ember.tensor([2.0, 2.0]), bins=4).tolist(), [0, 0, 2, 0])  # [1, 3]
    assert ember.histc(ember.zeros(0), bins=3).tolist() == [0, 0, 0]


def test_histogram_bins_range_weights_density_and_edges():
    data = RNG.standard_normal(200)
    weights = RNG.uniform(0, 1, 200)
    for bins in (1, 5, 16):
        for rng in (None, (-1.0, 1.0)):
            for density in (False, True):
                hist, edges = ember.histogram(t(data), bins, range=rng, weight=t(weights), density=density)
                expected, expected_edges = np.histogram(data, bins, rng, weights=weights, density=density)
                np.testing.assert_allclose(hist.numpy(), expected, rtol=1e-13)
                np.testing.assert_allclose(edges.numpy(), expected_edges, atol=1e-14)  # (torch.linspace's steps)
    edges = np.array([-2.0, -0.5, 0.0, 0.1, 3.0])
    hist, out_edges = ember.histogram(t(data), t(edges))
    np.testing.assert_array_equal(hist.numpy(), np.histogram(data, edges)[0])
    np.testing.assert_array_equal(out_edges.numpy(), edges)
    assert ember.histogram(ember.tensor([2.0, 2.0]), bins=2).bin_edges.tolist() == [1.5, 2.0, 2.5]


def test_bincount_matches_numpy_and_pytorchs_weight_dtypes():
    values = RNG.integers(0, 7, 30)
    np.testing.assert_array_equal(ember.bincount(t(values)).numpy(), np.bincount(values))
    np.testing.assert_array_equal(ember.bincount(t(values), minlength=12).numpy(), np.bincount(values, minlength=12))
    assert ember.bincount(t(values)).dtype is ember.int64
    for weight_dtype, out_dtype in (("float32", ember.float32), ("float64", ember.float64), ("int64", ember.float64)):
        weights = RNG.uniform(0, 3, 30).astype(weight_dtype)
        got = ember.bincount(t(values), t(weights))
        assert got.dtype is out_dtype
        np.testing.assert_allclose(got.numpy(), np.bincount(values, weights), rtol=1e-6)
    assert ember.bincount(ember.zeros(0, dtype=ember.int64), minlength=3).tolist() == [0, 0, 0]


def test_counting_errors():
    cases = [
        (lambda: ember.histc(t([1, 2]), bins=4), NotImplementedError, "\"histogram_cpu\" not implemented for 'Long'"),
        (lambda: ember.histc(t([1.0, 2]), bins=4, min=3, max=1), RuntimeError, "max must be larger than min"),
        (lambda: ember.histc(t([1.0, np.inf]), bins=3), RuntimeError, "range of \\[1, inf\\] is not finite"),
        (lambda: ember.histogram(t([1.0, 2]), bins=2, range=(3.0, 1.0)), RuntimeError, "min should not exceed max"),
        (lambda: ember.bincount(t([0, -1])), RuntimeError, "only supports 1-d non-negative integral inputs"),
        (lambda: ember.bincount(t([0, 1]), weights=t([1.0])), RuntimeError, "same length as input"),
        (lambda: ember.bincount(t([0.0, 1])), NotImplementedError, "\"bincount_cpu\" not implemented for 'Double'"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()


def test_compiled_matches_eager():
    def statistics(x):
        return (ember.cov(x), ember.corrcoef(x), ember.quantile(x, 0.3, 1), ember.nanmedian(x, 1).values,
                ember.mode(x.round(), 1).values, ember.histc(x, 5, -1, 1),
                ember.histogram(x, 4, range=(-2.0, 2.0)).hist)
    x = t(X)
    compiled = ember.compile(statistics)
    compiled(x)
    for got, want in zip(compiled(x), statistics(x)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-14)


def test_tensor_methods():
    x = t(X)
    np.testing.assert_array_equal(x.cov().numpy(), ember.cov(x).numpy())
    np.testing.assert_array_equal(x.quantile(0.5, 1).numpy(), ember.quantile(x, 0.5, 1).numpy())
    assert x.mode(1).indices.tolist() == ember.mode(x, 1).indices.tolist()
    assert t([0, 1, 1]).bincount().tolist() == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert x.histc(3, -5, 5).sum().item() == 21
