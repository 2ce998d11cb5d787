"""Reductions (sum, amax, amin, prod, argmax, argmin) and the scans and sorts (cumsum,
argsort). `axes` is always a normalised tuple by the time a primitive is bound.
"""
import itertools

import numpy as np

from . import compose as C
from .registry import OpError, Spec, describe, register, PRIMITIVES
from .shape_rules import normalize_axes, normalize_axis, reduced_shape
from ember import dtypes


def _reduce_rule(name, result_dtype=None):
    def infer(x, axes, keepdims):
        normalize_axes(name, axes, len(x.shape))
        for a in axes:
            if x.shape[a] == 0 and name in ("amax", "amin"):
                raise OpError(name, f"cannot reduce over dim {a} of size 0 of {describe(x)}")
        dtype = result_dtype or x.dtype
        if name in ("sum", "prod") and x.dtype.category < 2:
            dtype = dtypes.int64  # PyTorch sums bools and ints as int64
        return Spec(reduced_shape(x.shape, axes, keepdims), dtype)
    return infer


def _sum(x, axes, keepdims):
    if x.dtype.kind == "f":
        fast = _small_trailing_reduce(np.add, x, axes, keepdims)
        if fast is not None:
            return fast
        if 0 in axes and len(axes) < x.ndim and x.shape[0] > 1 and x.size >= _TREE_MIN_SIZE:
            # the batch axis last: a batch-last array keeps long contiguous runs the longest
            # (a row-major one pays ~2x numpy's own sum here, still well under a copy)
            for axis in sorted(axes, key=lambda a: a == 0):
                x = _halve_axis(x, axis)
            # summing the now size-1 axes below adds nothing
    # add.reduce: np.sum's Python wrapper costs more than summing a small operand
    out = np.add.reduce(_row_major(x), axis=axes, keepdims=keepdims,
                        dtype=np.int64 if x.dtype.kind in "biu" else None)
    return np.asarray(out)


# A large partial sum over the batch axis (and others: a conv bias gradient, batch-norm
# statistics) first adds halves pairwise: elementwise adds give the same bits in any layout,
# so a batch-last operand needs no row-major copy of all of it, only of what remains. The
# tree depends on shapes alone.
_TREE_MIN_SIZE = 1 << 16
_TREE_STOP_SIZE = 1 << 13  # below this, numpy's sum of a row-major copy is cheaper


def _halve_axis(x, axis):
    """Sum `axis` down to size 1 as a tree of pairwise elementwise adds (until x is small)."""
    lead = (slice(None),) * axis
    while x.shape[axis] > 1 and x.size > _TREE_STOP_SIZE:
        n = x.shape[axis]
        half = n // 2
        pairs = np.add(x[lead + (slice(0, half),)], x[lead + (slice(half, 2 * half),)])
        if n % 2:
            pairs[lead + (slice(0, 1),)] += x[lead + (slice(2 * half, n),)]
        x = pairs
    return x


def _row_major(x):
    """numpy's summation order follows the operand's memory layout (pairwise along a contiguous
    axis, sequential across others): summing a row-major copy gives the same bits whatever
    buffer holds the value (eager views, batch-last conv results, the executor's arena)."""
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _prod(x, axes, keepdims):
    out = np.prod(_row_major(x), axis=axes, keepdims=keepdims, dtype=np.int64 if x.dtype.kind in "biu" else None)
    return np.asarray(out)


def _small_trailing_reduce(ufunc, x, axes, keepdims):
    """Reductions over a few trailing elements (pooling windows) as elementwise ufunc calls
    over slices: numpy's generic reduce is slow for inner extents of 2-4. None if not such."""
    nd, count = x.ndim, len(axes)
    if not count or nd < 3 or count == nd or tuple(axes) != tuple(range(nd - count, nd)):
        return None
    window_shape = x.shape[nd - count:]
    window = 1
    for extent in window_shape:
        window *= extent
    if window > 16 or window < 2:
        return None
    # views, no reshape copy (itertools: np.ndindex costs more than a small pooling pass)
    taps = [x[(Ellipsis,) + index] for index in itertools.product(*[range(d) for d in window_shape])]
    out = ufunc(taps[0], taps[1])
    for tap in taps[2:]:
        ufunc(out, tap, out=out)
    if keepdims:
        out = out.reshape(out.shape + (1,) * len(axes))
    return out


def _amax(x, axes, keepdims):
    fast = _small_trailing_reduce(np.maximum, x, axes, keepdims)
    return fast if fast is not None else np.asarray(np.max(x, axis=axes, keepdims=keepdims))


def _amin(x, axes, keepdims):
    fast = _small_trailing_reduce(np.minimum, x, axes, keepdims)
    return fast if fast is not None else np.asarray(np.min(x, axis=axes, keepdims=keepdims))


def _sum_vjp(g, out, x, axes, keepdims):
    return (C.expand_reduced(g, x.shape, axes, keepdims),)


def _extremum_vjp(g, out, x, axes, keepdims):
    # ties share the gradient evenly (PyTorch's amax/amin rule); a slice holding nan reduces to
    # nan, and its nan entries share the gradient (PyTorch's max()/min(): eq alone matches none)
    hits = PRIMITIVES["eq"].bind(x, C.expand_reduced(out, x.shape, axes, keepdims))
    if x.dtype.is_floating_point:
        hits = PRIMITIVES["logical_or"].bind(hits, PRIMITIVES["ne"].bind(x, x))
    hits = C.mask_of(hits, x)
    count = C.reduce_sum(hits, axes, keepdims=True)
    if not keepdims:
        g = C.reshape(g, count.shape)
    share = C.div(g, count)  # divided at the reduced size, then spread over the hits
    return (C.mul(C.broadcast_to(share, x.shape), hits),)


def _prod_vjp(g, out, x, axes, keepdims):
    # d prod / d x_i is the product of the other factors. Dividing the product by x_i fails at
    # zeros, so split each slice into its nonzero factors (their product P) and its zeros.
    # The other zeros' product is 1, or the one other zero, or 0: written with the sum of the
    # zero entries (0 in value, slope 1), it keeps second derivatives right as well.
    eq = PRIMITIVES["eq"]
    zero, one = C.scalar(0, x), C.scalar(1, x)
    is_zero = eq.bind(x, zero)
    safe_x = C.where(is_zero, one, x)
    nonzero_prod = PRIMITIVES["prod"].bind(safe_x, axes=axes, keepdims=True)
    zero_count = C.reduce_sum(C.mask_of(is_zero, x), axes, keepdims=True)
    zero_sum = C.reduce_sum(C.where(is_zero, x, zero), axes, keepdims=True)

    def count_is(n):
        return eq.bind(zero_count, C.scalar(n, x))
    zeros_besides_nonzero = C.where(count_is(0), one, C.where(count_is(1), zero_sum, zero))
    zeros_besides_zero = C.where(count_is(1), one, C.where(count_is(2), C.sub(zero_sum, x), zero))
    grad = C.where(is_zero, C.mul(nonzero_prod, zeros_besides_zero),
                   C.div(C.mul(nonzero_prod, zeros_besides_nonzero), safe_x))
    return (C.mul(C.expand_reduced(g, x.shape, axes, keepdims), grad),)


register("sum", "reduce", _sum, _reduce_rule("sum"), _sum_vjp)
register("prod", "reduce", _prod, _reduce_rule("prod"), _prod_vjp)
register("amax", "reduce", _amax, _reduce_rule("amax"), _extremum_vjp)
register("amin", "reduce", _amin, _reduce_rule("amin"), _extremum_vjp)


def _arg_rule(name):
    def infer(x, axis, keepdims):
        if axis is None:
            if x.shape and 0 in x.shape:
                raise OpError(name, f"cannot take {name} of an empty tensor {describe(x)}")
            return Spec((1,) * len(x.shape) if keepdims else (), dtypes.int64)
        axis = normalize_axis(name, axis, len(x.shape))
        if x.shape and x.shape[axis] == 0:
            raise OpError(name, f"cannot reduce over dim {axis} of size 0 of {describe(x)}")
        return Spec(reduced_shape(x.shape, (axis,) if x.shape else (), keepdims), dtypes.int64)
    return infer


def _arg_impl(fn):
    def impl(x, axis, keepdims):
        if axis is None:
            out = np.asarray(fn(x.reshape(-1)), dtype=np.int64)
            return out.reshape((1,) * x.ndim) if keepdims else out
        if x.ndim == 0:
            return np.zeros((), np.int64)
        return np.asarray(fn(x, axis=axis, keepdims=keepdims), dtype=np.int64)
    return impl


register("argmax", "reduce", _arg_impl(np.argmax), _arg_rule("argmax"))
register("argmin", "reduce", _arg_impl(np.argmin), _arg_rule("argmin"))


def _cumsum_rule(x, axis):
    normalize_axis("cumsum", axis, len(x.shape))
    return Spec(x.shape, dtypes.int64 if x.dtype.category < 2 else x.dtype)


def _cumsum(x, axis):
    if x.ndim == 0:
        return x.astype(np.int64 if x.dtype.kind in "biu" else x.dtype)
    return np.cumsum(x, axis=axis, dtype=np.int64 if x.dtype.kind in "biu" else None)


def _cumsum_vjp(g, out, x, axis):
    flip = PRIMITIVES["flip"]
    cumsum = PRIMITIVES["cumsum"]
    return (flip.bind(cumsum.bind(flip.bind(g, axes=(axis,)), axis=axis), axes=(axis,)),)


register("cumsum", "opaque", _cumsum, _cumsum_rule, _cumsum_vjp)


def _argsort_rule(x, axis, descending):
    normalize_axis("argsort", axis, len(x.shape))
    return Spec(x.shape, dtypes.int64)


def _argsort(x, axis, descending):
    if x.ndim == 0:
        return np.zeros((), np.int64)
    if descending:
        # stable descending order: sort the reversed array, then map indices back
        flipped = np.flip(x, axis)
        idx = np.argsort(flipped, axis=axis, kind="stable")
        idx = x.shape[axis] - 1 - idx
        return np.flip(idx, axis).astype(np.int64)
    return np.argsort(x, axis=axis, kind="stable").astype(np.int64)


# host-only: no target sorts yet (a loop form needs data-dependent loops the loop IR lacks);
# the CPU target calls this numpy implementation back, a GPU target refuses the program
register("argsort", "opaque", _argsort, _argsort_rule, host_only=True)
