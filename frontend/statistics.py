"""torch's statistics: cov, corrcoef, quantile, nanquantile, nanmedian, mode, and the counting
functions histc, histogram and bincount. Each is composed from sorting, shape_ops, reductions
and math_ops (sort, gather, scatter_add), so eager autograd and ember.compile take them; a value
that decides a shape or an error is read on the host (a guard while tracing), as PyTorch reads it.
"""
import warnings
from collections import namedtuple

import numpy as np

from ember import dtypes
from . import math_ops as M, reductions as R, shape_ops as S, linalg as L
from .math_ops import where
from .sorting import sort
from .tensor import Tensor, _dim, _observe
from .device_tensors import keeps_device

nanmedian_result = namedtuple("nanmedian", "values indices")
mode_result = namedtuple("mode", "values indices")
histogram_result = namedtuple("histogram", "hist bin_edges")


def _host(tensor, how):
    """A tensor's value read into Python (a guard while tracing, as PyTorch's .item())."""
    _observe(tensor, how)
    return tensor._data


def _type_name(dtype):
    return L.scalar_type_name(dtype)


def _number(value):
    """A float as C++ streams print it in PyTorch's messages (1, 2.5, inf, nan)."""
    return f"{float(value):g}"


# ----------------------------------------------------------------------------- covariance

def _check_weights(name, w, observations, integral):
    if w.ndim > 1:
        raise RuntimeError(f"cov(): expected {name} to have one or fewer dimensions but got {name} with {w.ndim} "
                           f"dimensions")
    if integral and w.dtype.category != 1:
        raise RuntimeError(f"cov(): expected {name} to have integral dtype but got {name} with "
                           f"{_type_name(w.dtype)} dtype")
    if not integral and not w.is_floating_point():
        raise RuntimeError(f"cov(): expected {name} to have floating point dtype but got {name} with "
                           f"{_type_name(w.dtype)} dtype")
    if w.numel() != observations:
        raise RuntimeError(f"cov(): expected {name} to have the same numel as there are observations in the input "
                           f"but got {w.numel()} != {observations}")
    if observations and (_host(w, f"cov() {name} check") < 0).any():
        raise RuntimeError(f"cov(): {name} cannot be negative")


def cov(input, *, correction=1, fweights=None, aweights=None):
    """The covariance of the variables in input's rows (observations in its columns), weighted
    by frequency weights and observation weights as numpy.cov; a 1-d input is one variable."""
    if input.ndim > 2:
        raise RuntimeError(f"cov(): expected input to have two or fewer dimensions but got an input with {input.ndim} "
                           f"dimensions")
    if input.dtype is dtypes.bool_:
        raise RuntimeError("cov(): bool dtype is not supported for input")
    x = S.reshape(input, (1, -1)) if input.ndim < 2 else input
    observations = x.shape[1]
    w = None
    if fweights is not None:
        _check_weights("fweights", fweights, observations, integral=True)
        w = fweights
    if aweights is not None:
        _check_weights("aweights", aweights, observations, integral=False)
        w = aweights if w is None else M.mul(w, aweights)
    if w is None:
        w_sum = Tensor._wrap(np.asarray(observations, np.int64))
    else:
        w_sum = R.sum(w)
        if _host(w_sum, "cov() weight sum") == 0:
            raise RuntimeError("cov(): weights sum to zero, can't be normalized")
    average = M.div(R.sum(x if w is None else M.mul(x, w), 1), w_sum)
    if w is None:
        norm_factor = observations - correction
        positive = norm_factor > 0
    else:
        if aweights is not None and correction != 0:
            norm_factor = M.sub(w_sum, M.mul(M.div(R.sum(M.mul(w, aweights)), w_sum), correction))
        else:
            norm_factor = M.sub(w_sum, correction)
        positive = _host(norm_factor, "cov() degrees of freedom") > 0
    if not positive:
        warnings.warn("cov(): degrees of freedom is <= 0. Correction should be strictly less than the number of "
                      "observations.", UserWarning, stacklevel=2)
        norm_factor = 0 if w is None else M.mul(norm_factor, 0)
    centred = M.sub(x, S.unsqueeze(average, 1))
    weighted = centred if w is None else M.mul(centred, w)
    return S.squeeze(M.div(L.mm(centred, S.t(weighted)), norm_factor))


def corrcoef(input):
    """Pearson's correlation coefficients of input's rows, clipped to [-1, 1]."""
    c = cov(input)
    if c.ndim == 0:
        return M.div(c, c)
    stddev = M.sqrt(S.diagonal(c))
    c = M.div(M.div(c, S.reshape(stddev, (-1, 1))), S.reshape(stddev, (1, -1)))
    return M.clamp(c, -1, 1)


# ----------------------------------------------------------------------------- quantiles and medians

_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def _check_quantile(input, q, interpolation):
    """PyTorch's quantile_checks, in its order and words (nanquantile's too)."""
    if input.numel() == 0:
        raise RuntimeError("quantile() input tensor must be non-empty")
    q_tensor = isinstance(q, Tensor)
    if q_tensor and q.ndim > 1:
        raise RuntimeError("quantile() q must be a scalar or 1D tensor")
    if input.dtype not in (dtypes.float32, dtypes.float64):
        raise RuntimeError("quantile() input tensor must be either float or double dtype")
    if q_tensor and q.dtype is not input.dtype:
        raise RuntimeError("quantile() q tensor must be same dtype as the input tensor")
    if interpolation not in _INTERPOLATIONS:
        raise RuntimeError(f"quantile() interpolation must be one of linear, lower, higher, midpoint or nearest, but "
                           f"got {interpolation}")
    if q_tensor:
        values = _host(q, "quantile() q range check")
        if not np.all((values >= 0) & (values <= 1)):
            raise RuntimeError("quantile() q values must be in the range [0, 1]")
    elif not 0 <= q <= 1:
        raise RuntimeError(f"quantile() q must be in the range [0, 1] but got {q}")


def _quantile(input, q, dim, keepdim, interpolation, ignore_nan):
    """PyTorch's quantile_compute: ranks q (count - 1) into the sorted values (count: the
    non-nan values for nanquantile; all of them otherwise, with a slice holding nan ranked at
    its end, its nan), rounded by the interpolation, the neighbours read with gather and lerped."""
    _check_quantile(input, q, interpolation)
    if dim is None:
        x, out_shape = S.reshape(input, (-1,)), [1] * input.ndim if keepdim else []
    else:
        axis = _dim(dim, input.ndim, "quantile")
        x = S.movedim(input, axis, -1) if input.ndim else S.reshape(input, (1,))
        out_shape = [1 if i == axis else d for i, d in enumerate(input.shape) if keepdim or i != axis]
    ordered = sort(x, -1).values  # (..., n), nan last
    n = ordered.shape[-1]
    q_dims = [q.numel()] if isinstance(q, Tensor) and q.ndim else []
    count_q = q_dims[0] if q_dims else 1
    q = S.reshape(q, (count_q,) + (1,) * ordered.ndim) if isinstance(q, Tensor) else \
        Tensor._wrap(np.full((1,) * (ordered.ndim + 1), q, input._data.dtype))
    nan = M.isnan(ordered)
    if ignore_nan:
        ranks = M.mul(q, M.sub(R.sum(M.logical_not(nan), -1, keepdim=True), 1))
        ranks = where(M.lt(ranks, 0), 0.0, ranks)
    else:
        ranks = where(R.any(nan, -1, keepdim=True), float(n - 1), M.mul(q, float(n - 1)))
    ranks = {"lower": M.floor, "higher": M.ceil, "nearest": M.round}.get(interpolation, lambda r: r)(ranks)
    # ranks: (q, ..., 1); the sorted values read at them, as gather along the last dim
    candidates = S.expand(S.unsqueeze(ordered, 0), (count_q,) + tuple(ordered.shape))
    result = S.gather(candidates, -1, M.to_dtype(ranks, dtypes.int64))
    if interpolation in ("linear", "midpoint"):
        above = S.gather(candidates, -1, M.to_dtype(M.ceil(ranks), dtypes.int64))
        result = M.lerp(result, above, M.sub(ranks, M.floor(ranks)) if interpolation == "linear" else 0.5)
    return S.reshape(result, tuple(q_dims + out_shape))


def quantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    """The q-th quantiles of input (flattened, or along dim); a 1-d q adds a first dim of its
    size. A slice holding nan gives nan."""
    return _quantile(input, q, dim, keepdim, interpolation, ignore_nan=False)


def nanquantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    """quantile, ignoring nan values (nan only for a slice of nothing but nan)."""
    return _quantile(input, q, dim, keepdim, interpolation, ignore_nan=True)


def _empty_values_indices(result, name, input, axis, keepdim):
    """A (values, indices) reduction along an empty dim: empty results when another dim is empty
    too, else PyTorch's IndexError."""
    if not any(d == 0 for i, d in enumerate(input.shape) if i != axis):
        raise IndexError(f"{name}(): Expected reduction dim {axis} to have non-zero size.")
    shape = tuple(1 if i == axis else d for i, d in enumerate(input.shape) if keepdim or i != axis)
    return result(Tensor._wrap(np.empty(shape, input._data.dtype)), Tensor._wrap(np.empty(shape, np.int64)))


def nanmedian(input, dim=None, keepdim=False):
    """The lower median of the non-nan values (nan where there are none); with dim, the values
    and their indices (of the first of equal values, in sorted order)."""
    if dim is None:
        flat = S.reshape(input, (-1,))
        if flat.shape[0] == 0:
            return Tensor._wrap(np.full((), np.nan, input._data.dtype))
        return _lower_median(flat, 0, keepdim=False)[0]
    axis = _dim(dim, input.ndim, "nanmedian")
    if input.ndim == 0:
        return nanmedian_result(M.clone(input), Tensor._wrap(np.zeros((), np.int64)))
    if input.shape[axis] == 0:
        return _empty_values_indices(nanmedian_result, "median", input, axis, keepdim)  # (torch's wording)
    return nanmedian_result(*_lower_median(input, axis, keepdim))


def _lower_median(input, axis, keepdim):
    values, order = sort(input, axis)
    if input.is_floating_point():
        present = R.sum(M.logical_not(M.isnan(input)), axis, keepdim=True)
    else:
        present = Tensor._wrap(np.full(tuple(1 if i == axis else d for i, d in enumerate(input.shape)),
                                       input.shape[axis], np.int64))
    position = M.clamp_min(M.floor_divide(M.sub(present, 1), 2), 0)
    out_values, out_indices = S.gather(values, axis, position), S.gather(order, axis, position)
    if not keepdim:
        out_values, out_indices = S.squeeze(out_values, axis), S.squeeze(out_indices, axis)
    return out_values, out_indices


def mode(input, dim=-1, keepdim=False):
    """The most frequent value along dim (the smallest of equally frequent ones) and the index
    of its last occurrence (nan values count as equal to each other)."""
    if input.ndim == 0:
        return mode_result(M.clone(input), Tensor._wrap(np.zeros((), np.int64)))
    axis = _dim(dim, input.ndim, "mode")
    n = input.shape[axis]
    if n == 0:
        return _empty_values_indices(mode_result, "mode", input, axis, keepdim)
    values, order = sort(input, axis)
    later, earlier = S._slice_axis(values, axis, 1, n), S._slice_axis(values, axis, 0, n - 1)
    same = M.eq(later, earlier)
    if input.is_floating_point():
        same = M.logical_or(same, M.logical_and(M.isnan(later), M.isnan(earlier)))
    first_shape = tuple(1 if i == axis else d for i, d in enumerate(values.shape))
    same = S.cat([Tensor._wrap(np.zeros(first_shape, bool)), same], axis)
    positions = Tensor._wrap(np.arange(n).reshape(tuple(n if i == axis else 1 for i in range(input.ndim))))
    run_start = R.cummax(where(same, 0, positions), axis).values
    run_length = M.add(M.sub(positions, run_start), 1)
    best = R.argmax(run_length, axis, keepdim=True)  # the end of the first longest run
    out_values, out_indices = S.gather(values, axis, best), S.gather(order, axis, best)
    if not keepdim:
        out_values, out_indices = S.squeeze(out_values, axis), S.squeeze(out_indices, axis)
    return mode_result(out_values, out_indices)


# ----------------------------------------------------------------------------- counting

def _floating_only(kernel, input):
    if not input.is_floating_point():
        from .bitwise import kernel_refuses
        raise kernel_refuses(kernel, input.dtype)


def _bin_counts(positions, inside, weights, bins, dtype):
    """Counts (or summed weights) of the positions where `inside`, as a float tensor of `bins`."""
    ones = weights if weights is not None else Tensor._wrap(np.ones(positions.shape, dtype))
    amounts = where(inside, M.to_dtype(ones, dtypes.from_numpy(dtype)), 0.0)
    zeros = Tensor._wrap(np.zeros(bins, dtype))
    return S.scatter_add(zeros, 0, where(inside, positions, 0), amounts)


def _linear_positions(x, left, right, bins, edges=None):
    """PyTorch's bin of each x in [left, right]: (x - left) * bins / (right - left) truncated,
    moved to agree with `edges` where given (LINEAR_INTERPOLATION_WITH_LOCAL_SEARCH), the right
    edge in the last bin."""
    inside = M.logical_and(M.ge(x, left), M.le(x, right))  # (nan is outside)
    safe = where(inside, x, left)
    position = M.to_dtype(M.div(M.mul(M.sub(safe, left), bins), M.sub(right, left)), dtypes.int64)
    if edges is not None:  # upper_bound over edges[max(0, pos - 1) : min(pos + 2, bins + 1)], minus 1
        low = M.clamp_min(M.sub(position, 1), 0)
        high = M.clamp_max(M.add(position, 2), bins + 1)
        total = M.sub(low, 1)
        for step in range(3):
            index = M.add(low, step)
            usable = M.lt(index, high)
            edge = S.index_select(edges, 0, M.clamp_max(index, bins))
            total = M.add(total, M.to_dtype(M.logical_and(usable, M.le(edge, safe)), dtypes.int64))
        position = total
    return where(M.eq(position, bins), bins - 1, position), inside


@keeps_device
def histc(input, bins=100, min=0, max=0):
    """A histogram of input's values in `bins` equal bins over [min, max] (input's own range when
    min == max, widened by 1 each way if that is a point); values outside are ignored."""
    _floating_only("histogram_cpu", input)
    if bins <= 0:
        raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins} for dimension 0")
    x = S.reshape(input, (-1,)).detach()
    low, high = float(min), float(max)
    if low == high and x.shape[0]:
        data = _host(x, "histc() range")
        low, high = float(data.min()), float(data.max())
    if low == high:
        low, high = low - 1, high + 1
    if not (np.isfinite(low) and np.isfinite(high)):
        raise RuntimeError(f"torch.histc: range of [{_number(low)}, {_number(high)}] is not finite")
    if low > high:
        raise RuntimeError("torch.histc: max must be larger than min")
    dtype = input._data.dtype
    left, right = (Tensor._wrap(np.asarray(v, dtype)) for v in (low, high))
    positions, inside = _linear_positions(x, left, right, bins)
    return _bin_counts(positions, inside, None, bins, dtype)


def _torch_linspace(start, end, steps, dtype):
    """torch.linspace's values: from the start for the first half, from the end for the rest."""
    if steps == 1:
        return np.asarray([start], dtype)
    step = (np.asarray(end, dtype) - np.asarray(start, dtype)) / np.asarray(steps - 1, dtype)
    i = np.arange(steps)
    half = steps // 2
    forward = np.asarray(start, dtype) + step * i.astype(dtype)
    backward = np.asarray(end, dtype) - step * (steps - 1 - i).astype(dtype)
    return np.where(i < half, forward, backward).astype(dtype)


@keeps_device
def histogram(input, bins, *, range=None, weight=None, density=False):
    """(hist, bin_edges): a histogram of input's values in `bins` equal bins over `range` (input's
    own range by default, widened by 0.5 each way if that is a point) or between the edges of a
    1-d tensor `bins`; optional weights; density divides by the total and the bin widths."""
    _floating_only("histogramdd", input)
    dtype = input._data.dtype
    if weight is not None and weight.dtype is not input.dtype:
        from .linalg import cpp_type_name
        raise RuntimeError(f"torch.histogramdd: if weight tensor is provided, input tensor and weight tensor should "
                           f"have the same dtype, but got input({cpp_type_name(input.dtype)}), and "
                           f"weight({cpp_type_name(weight.dtype)})")
    x = S.reshape(input, (-1,)).detach()
    w = None if weight is None else S.reshape(weight, (-1,)).detach()
    if isinstance(bins, Tensor):
        edges = bins.detach()
        count = edges.shape[0] - 1
        position = _upper_bound(edges, x)  # PyTorch's BINARY_SEARCH
        position = where(M.eq(position, count), count - 1, position)
        inside = M.logical_and(M.ge(x, S.select(edges, 0, 0)), M.le(x, S.select(edges, 0, count)))
        hist = _bin_counts(where(inside, position, 0), inside, w, count, dtype)
    else:
        if bins <= 0:
            raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins} for dimension 0")
        if range is not None:
            low, high = float(range[0]), float(range[1])
        elif x.shape[0]:
            data = _host(x, "histogram() range")
            low, high = float(data.min()), float(data.max())
        else:
            low, high = 0.0, 0.0
        if not (np.isfinite(low) and np.isfinite(high)):
            raise RuntimeError(f"torch.histogramdd: dimension 0's range [{_number(low)}, {_number(high)}] is not "
                               f"finite")
        if low > high:
            raise RuntimeError(f"torch.histogramdd: min should not exceed max, but got min {_number(low)} max "
                               f"{_number(high)} for dimension 0")
        if low == high:
            low, high = low - 0.5, high + 0.5
        edges = Tensor._wrap(_torch_linspace(low, high, bins + 1, dtype))
        left, right = (Tensor._wrap(np.asarray(v, dtype)) for v in (low, high))
        position, inside = _linear_positions(x, left, right, bins, edges)
        hist = _bin_counts(position, inside, w, bins, dtype)
    if density:
        widths = M.sub(S._slice_axis(edges, 0, 1, edges.shape[0]), S._slice_axis(edges, 0, 0, edges.shape[0] - 1))
        hist = M.div(hist, M.mul(R.sum(hist), widths))
    return histogram_result(hist, edges)


def _upper_bound(edges, x):
    """std::upper_bound(edges, x) - edges - 1 for each x (a binary search, as PyTorch's)."""
    from .searching import binary_search
    return M.sub(binary_search(edges, x, right=True), 1)


def bincount(input, weights=None, minlength=0):
    """How often each value 0, 1, ... occurs in a 1-d non-negative integer tensor (or the sum of
    the weights at its positions: float32 for float32 weights, float64 for any others); at least
    minlength bins, one past the largest value otherwise."""
    if input.dtype.category != 1:
        from .bitwise import kernel_refuses
        raise kernel_refuses("bincount_cpu", input.dtype)
    if minlength < 0:
        raise RuntimeError("minlength should be >= 0")
    if input.ndim != 1:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if weights is not None and (weights.ndim != 1 or weights.shape[0] != input.shape[0]):
        raise RuntimeError("weights should be 1-d and have the same length as input")
    values = _host(input, "bincount() size")
    if values.size and values.min() < 0:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    size = max(int(values.max()) + 1 if values.size else 0, minlength)
    index = M.to_dtype(input, dtypes.int64)
    if weights is None:
        ones = Tensor._wrap(np.ones(input.shape, np.int64))
        return S.scatter_add(Tensor._wrap(np.zeros(size, np.int64)), 0, index, ones)
    dtype = np.float32 if weights.dtype is dtypes.float32 else np.float64
    amounts = M.to_dtype(weights.detach(), dtypes.from_numpy(np.dtype(dtype)))
    return S.scatter_add(Tensor._wrap(np.zeros(size, dtype)), 0, index, amounts)


# name -> function (the Tensor methods torch has of these)
TENSOR_METHODS = {
    "cov": cov, "corrcoef": corrcoef, "quantile": quantile, "nanquantile": nanquantile, "nanmedian": nanmedian,
    "mode": mode, "histc": histc, "histogram": histogram, "bincount": bincount,
}
