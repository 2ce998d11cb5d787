"""Eager erf and erfc of large float32 tensors run the compiled primitive over chunks
(frontend/eager_compiled_ops.py): within 1 ulp of libm, any shape and layout, padded last chunk."""
import math

import numpy as np
import pytest

import ember
from ember.frontend.eager_compiled_ops import CHUNK, COMPILED_FOR_EAGER, SMALL


def _ulps(got, expected):
    expected32 = expected.astype(np.float32)
    return np.abs(got.astype(np.float64) - expected32.astype(np.float64)) / np.spacing(np.abs(expected32))


@pytest.mark.parametrize("name,fn", [("erf", math.erf), ("erfc", math.erfc)])
def test_large_float32_tensors_run_the_compiled_kernel_within_one_ulp(name, fn):
    rng = np.random.default_rng(0)
    n = 2 * CHUNK + 4099  # two whole chunks and a padded one
    x = np.concatenate([rng.standard_normal(n - 6) * 3, [0.0, -0.0, 9.0, -9.0, np.inf, -np.inf]]).astype(np.float32)
    got = getattr(ember, name)(ember.tensor(x.reshape(-1, 1)).reshape(-1)).numpy()
    expected = np.array([fn(v) for v in x.astype(np.float64)])
    assert COMPILED_FOR_EAGER[name].programs.get(np.dtype(np.float32)) is not None  # the compiled path ran
    assert got.shape == x.shape and got.dtype == np.float32
    assert _ulps(got, expected).max() <= 1.0
    assert np.isnan(getattr(ember, name)(ember.tensor(np.full(SMALL, np.nan, np.float32))).numpy()).all()


def test_any_layout_and_shape_gives_the_same_values_as_small_pieces():
    rng = np.random.default_rng(1)
    x = ember.tensor(rng.standard_normal((64, 3, 70)).astype(np.float32)).permute(2, 0, 1)  # not contiguous
    whole = ember.erf(x)
    assert whole.shape == (70, 64, 3)
    pieces = np.stack([ember.erf(x[i]).numpy() for i in range(70)])  # each below SMALL: libm, rounded once
    assert np.abs(whole.numpy().astype(np.float64) - pieces).max() <= 1.2e-7


def test_gelu_gradient_through_the_compiled_erf():
    rng = np.random.default_rng(2)
    x = ember.tensor(rng.standard_normal(8192).astype(np.float32), requires_grad=True)
    ember.nn.functional.gelu(x).sum().backward()
    x64 = x.detach().numpy().astype(np.float64)
    cdf = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x64]))
    expected = cdf + x64 * np.exp(-x64 ** 2 / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_threads_calling_erf_at_once_get_their_own_results():
    import threading
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal(200_000).astype(np.float32) for _ in range(4)]
    results = [None] * 4

    def work(k):
        for _ in range(3):
            results[k] = ember.erf(ember.tensor(inputs[k])).numpy()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, got in zip(inputs, results):
        expected = np.array([math.erf(v) for v in x[:5000].astype(np.float64)])
        assert np.abs(got[:5000] - expected).max() <= 1.2e-7
        np.testing.assert_array_equal(got, ember.erf(ember.tensor(x)).numpy())
