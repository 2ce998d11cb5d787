"""Reductions over tensors: sum, mean, max/min (with indices), amax, argmax, prod, var, std,
norm, logsumexp, all, any, cumsum. `dim` may be an int, a tuple of ints or None (all dims).
"""
import builtins
import warnings
from collections import namedtuple

import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from ember.ops.shape_rules import normalize_axes
from .math_ops import to_dtype, sub, mul, div, sqrt, log, exp, add, abs, pow, promote_operands, clone
from .dispatch import STATE
from .tensor import Tensor
from .autograd import saves_like_pytorch, saves_no_values_like_pytorch
from .low_precision import computes_in_float32
from .device_tensors import like

values_indices = namedtuple("values_indices", "values indices")


def _axes(op, dim, ndim):
    from ember.ops.registry import OpError
    try:
        axes = normalize_axes(op, dim, ndim)
    except OpError as error:
        raise IndexError(str(error)) from None
    return axes if ndim else ()  # a 0-d tensor accepts dim 0 or -1 and has nothing to reduce


def _count(shape, axes):
    n = 1
    for a in axes:
        n *= shape[a]
    return n


def sum(input, dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        input = to_dtype(input, dtype)
    axes = _axes("sum", dim, input.ndim)
    if not axes and input.ndim:
        return P["convert"].bind(input, dtype=input.dtype.name)
    return _as_requested(P["sum"].bind(input, axes=axes, keepdims=keepdim), dtype)


def _as_requested(result, dtype):
    """A sum or product in the `dtype=` asked for (integers otherwise widen to int64)."""
    return result if dtype is None else to_dtype(result, dtype)


@computes_in_float32
def mean(input, dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        input = to_dtype(input, dtype)
    if not input.is_floating_point():
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a floating "
                           f"point or complex dtype. Got: {input.dtype}")
    axes = _axes("mean", dim, input.ndim)
    total = P["sum"].bind(input, axes=axes, keepdims=keepdim)
    return saves_no_values_like_pytorch(div(total, float(_count(input.shape, axes))))  # (MeanBackward0)


def amax(input, dim=(), keepdim=False):
    return P["amax"].bind(input, axes=_axes("amax", dim if dim != () else None, input.ndim), keepdims=keepdim)


def amin(input, dim=(), keepdim=False):
    return P["amin"].bind(input, axes=_axes("amin", dim if dim != () else None, input.ndim), keepdims=keepdim)


def _extremum(name, arg_name):
    def reduce(input, dim=None, keepdim=False, other=None):
        if isinstance(dim, Tensor):  # torch.max(a, b) is maximum
            from .math_ops import maximum, minimum
            return (maximum if name == "amax" else minimum)(input, dim)
        if dim is None:  # ties share the gradient evenly, as in PyTorch
            return P[name].bind(input, axes=_axes(name, None, input.ndim), keepdims=False)
        (axis,) = _axes(name[1:], (dim,), input.ndim) or (None,)
        if axis is None:  # a 0-d tensor
            return values_indices(P["convert"].bind(input, dtype=input.dtype.name),
                                  Tensor._wrap(like(np.zeros((), np.int64), input._data)))
        # the values are gathered at the indices, so the gradient goes to that one element
        # (PyTorch's rule for max(dim)/min(dim); amax/amin split it among ties instead)
        indices = P[arg_name].bind(input, axis=axis, keepdims=True)
        values = P["gather"].bind(input, indices, axis=axis)
        if not keepdim:
            reduced = tuple(d for i, d in enumerate(input.shape) if i != axis)
            values = P["reshape"].bind(values, shape=reduced)
            indices = P["reshape"].bind(indices, shape=reduced)
        return values_indices(values, indices)
    reduce.__name__ = name[1:]
    return reduce


max = _extremum("amax", "argmax")
min = _extremum("amin", "argmin")


def argmax(input, dim=None, keepdim=False):
    return P["argmax"].bind(input, axis=dim, keepdims=keepdim)


def argmin(input, dim=None, keepdim=False):
    return P["argmin"].bind(input, axis=dim, keepdims=keepdim)


def prod(input, dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        input = to_dtype(input, dtype)
    # (PyTorch's backward reads the input and the result: a write to either fails it)
    return _as_requested(saves_like_pytorch(P["prod"].bind(input, axes=_axes("prod", dim, input.ndim),
                                                           keepdims=keepdim), (input,), output=True), dtype)


@computes_in_float32
def var(input, dim=None, unbiased=None, keepdim=False, correction=None):
    return _variance("var", input, dim, unbiased, keepdim, correction)


def _variance(op, input, dim, unbiased, keepdim, correction):
    """sum((x - mean)^2) / max(0, N - correction) over `dim`, N the elements reduced into each
    output (numel over output numel, as PyTorch counts it): with no degrees of freedom left
    the division by 0 gives inf or nan, and PyTorch's warning names `op`."""
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    axes = _axes(op, dim, input.ndim)
    outputs = _count(input.shape, [a for a in range(input.ndim) if a not in axes])
    freedom = input.numel() // builtins.max(outputs, 1) - correction
    if freedom <= 0:
        warnings.warn(f"{op}(): degrees of freedom is <= 0. Correction should be strictly less than the reduction "
                      f"factor (input numel divided by output numel).", UserWarning, stacklevel=4)
    centered = sub(input, mean(input, axes, keepdim=True))
    total = P["sum"].bind(mul(centered, centered), axes=axes, keepdims=keepdim)
    return saves_like_pytorch(div(total, float(builtins.max(freedom, 0))), (input,))


@computes_in_float32
def std(input, dim=None, unbiased=None, keepdim=False, correction=None):
    return sqrt(_variance("std", input, dim, unbiased, keepdim, correction))


@computes_in_float32
def var_mean(input, dim=None, unbiased=None, keepdim=False, correction=None):
    return _variance("var_mean", input, dim, unbiased, keepdim, correction), mean(input, dim, keepdim)


@computes_in_float32
def std_mean(input, dim=None, unbiased=None, keepdim=False, correction=None):
    return sqrt(_variance("std_mean", input, dim, unbiased, keepdim, correction)), mean(input, dim, keepdim)


@computes_in_float32
def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    if dtype is not None:
        input = to_dtype(input, dtype)
    if p in ("fro", 2, 2.0):  # (NormBackward saves the input and the norm)
        return saves_like_pytorch(_root_at_zero_safe(sum(mul(input, input), dim, keepdim), sqrt), (input,), True)
    if p in (float("inf"), "inf"):
        return amax(abs(input), dim if dim is not None else (), keepdim)
    if p in (float("-inf"),):
        return amin(abs(input), dim if dim is not None else (), keepdim)
    if p == 1:
        return sum(abs(input), dim, keepdim)
    if p == 0:
        from .math_ops import ne
        return sum(to_dtype(ne(input, 0), input.dtype), dim, keepdim)
    return _root_at_zero_safe(sum(pow(abs(input), p), dim, keepdim), lambda total: pow(total, 1.0 / p))


def _root_at_zero_safe(total, root):
    """root(total), with PyTorch's gradient of a zero norm: 0, not the 0 * inf = nan that
    the chain rule through the root would give."""
    from .math_ops import where, eq
    is_zero = eq(total, 0)
    return where(is_zero, 0.0, root(where(is_zero, 1.0, total)))


@computes_in_float32
def logsumexp(input, dim, keepdim=False):
    axes = _axes("logsumexp", dim, input.ndim)
    shift = P["amax"].bind(input.detach(), axes=axes, keepdims=True)
    from .math_ops import where, isinf
    shift = where(isinf(shift), 0.0, shift)  # all -inf rows stay -inf instead of nan
    total = P["sum"].bind(exp(sub(input, shift)), axes=axes, keepdims=True)
    out = add(log(total), shift)
    if not keepdim:
        from .shape_ops import reshape
        out = reshape(out, tuple(d for i, d in enumerate(input.shape) if i not in axes))
    return saves_like_pytorch(out, (input,), output=True)  # (PyTorch's backward reads both)


def _logical_reduce(op, prim, empty_value, input, dim, keepdim):
    x = to_dtype(input, dtypes.bool_)
    axes = _axes(op, dim, x.ndim)
    if not x.numel():  # nothing to reduce over: all() is True, any() is False
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keepdim else \
            tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return Tensor._wrap(np.full(shape, empty_value))
    return P[prim].bind(x, axes=axes, keepdims=keepdim)


def all(input, dim=None, keepdim=False):
    return _logical_reduce("all", "amin", True, input, dim, keepdim)


def any(input, dim=None, keepdim=False):
    return _logical_reduce("any", "amax", False, input, dim, keepdim)


def count_nonzero(input, dim=None):
    from .math_ops import ne
    return sum(ne(input, 0), dim)


def cumsum(input, dim, dtype=None):
    if dtype is not None:
        _check_inplace_dtype(input, dtype)
        input = to_dtype(input, dtype)
    return _as_requested(P["cumsum"].bind(input, axis=_cumulative_axis(input, dim, "cumsum")), dtype)


def _check_inplace_dtype(input, dtype):
    """cumsum_/cumprod_ with a `dtype` other than the tensor's: PyTorch refuses the call."""
    if input is STATE.inplace_target and dtypes.as_dtype(dtype).name != input.dtype.name:
        from .linalg import cpp_type_name
        raise RuntimeError(f"Bad in-place call: input tensor dtype {cpp_type_name(input.dtype)} and output tensor "
                           f"dtype {cpp_type_name(dtypes.as_dtype(dtype))} should match")


def _cumulative_axis(input, dim, op):
    """`dim` checked as torch checks it (a 0-d tensor takes 0 or -1) and made non-negative."""
    from .tensor import _dim
    return _dim(dim, builtins.max(input.ndim, 1), op)


def aminmax(input, dim=None, keepdim=False):
    return namedtuple("aminmax", "min max")(amin(input, dim if dim is not None else (), keepdim),
                                            amax(input, dim if dim is not None else (), keepdim))


def dist(input, other, p=2):
    return norm(sub(*promote_operands((input, other))), p)


def median(input, dim=None, keepdim=False):
    """The lower median (PyTorch's): the element of rank (n - 1) // 2; with `dim`, values and indices."""
    from .sorting import kthvalue
    if dim is None:
        flat = P["reshape"].bind(input, shape=(input.numel(),)) if input.ndim != 1 else input
        return kthvalue(flat, (flat.shape[0] - 1) // 2 + 1, 0).values
    size = input.shape[dim] if input.ndim else 1
    return kthvalue(input, (size - 1) // 2 + 1, dim, keepdim)


def trace(input):
    if input.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, got shape {list(input.shape)}")
    from .shape_ops import diag
    return sum(diag(input))


def sum_to_size(input, *size):
    """Sum `input` down to `size` (the shape it was broadcast from)."""
    from .creation import _sizes
    size = _sizes(size)
    lead = input.ndim - len(size)
    if lead < 0 or builtins.any(d != 1 and d != n for d, n in zip(size, input.shape[lead:])):
        raise RuntimeError(f"sum_to_size: size {list(size)} is not expandable to size {list(input.shape)}")
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(size) if d == 1 and input.shape[lead + i] != 1)
    out = P["sum"].bind(input, axes=axes, keepdims=True) if axes else input
    from .shape_ops import reshape
    return reshape(out, size)


@computes_in_float32
def cumprod(input, dim, *, dtype=None):
    """Running products along `dim`, by doubling (log2(n) rounds: y[k:] *= y[:-k]), so that its
    gradient, zeros included, is the product rule's through plain multiplications. As PyTorch's
    CumprodBackward, it saves its input and its output: writing either in place fails backward."""
    given = input
    if dtype is not None:
        _check_inplace_dtype(input, dtype)
        input = to_dtype(input, dtype)
    elif input.dtype.category < 2:
        input = to_dtype(input, dtypes.int64)  # PyTorch accumulates bools and integers as int64
    from .shape_ops import _slice_axis, cat
    axis = _cumulative_axis(input, dim, "cumprod")
    size = input.shape[axis] if input.ndim else 1
    if size < 2:
        return input
    # cumprod_: the products below save slices of the input, which the write would overwrite;
    # they take them from a copy (PyTorch's cumprod_ keeps the original values too)
    result = clone(input) if input is STATE.inplace_target else input
    step = 1
    while step < size:
        head = _slice_axis(result, axis, 0, step)
        tail = mul(_slice_axis(result, axis, step, size), _slice_axis(result, axis, 0, size - step))
        result = cat([head, tail], dim=axis)
        step *= 2
    return saves_like_pytorch(result, (given,), output=True)


def cummax(input, dim):
    """(values, indices): the running maximum along `dim` and where it was last reached (a NaN,
    once seen, stays the maximum, at its first index), as torch.cummax."""
    return _running_extreme(input, dim, "cummax")


def cummin(input, dim):
    """(values, indices): the running minimum along `dim` (see cummax)."""
    return _running_extreme(input, dim, "cummin")


def _running_extreme(input, dim, op):
    """By doubling over (value, index) pairs: the later element wins when it is a NaN, or when it
    is at least as good and the earlier is no NaN (torch's rule); the values are then gathered
    from the input at the indices, so that gradients flow to the elements chosen."""
    from .math_ops import ge, le, isnan, logical_and, logical_not, logical_or, where
    from .shape_ops import _slice_axis, cat, gather
    from .creation import arange
    axis = _cumulative_axis(input, dim, op)
    if input.ndim == 0:
        return namedtuple(op, "values indices")(input.clone(), Tensor._wrap(like(np.zeros((), np.int64), input._data)))
    size = input.shape[axis]
    shape = [1] * input.ndim
    shape[axis] = size
    index = arange(size).reshape(shape).expand(*input.shape).contiguous()
    value = input.detach()
    better = ge if op == "cummax" else le
    floating = input.is_floating_point()
    step = 1
    while step < size:
        left_v, left_i = _slice_axis(value, axis, 0, size - step), _slice_axis(index, axis, 0, size - step)
        right_v, right_i = _slice_axis(value, axis, step, size), _slice_axis(index, axis, step, size)
        wins = better(right_v, left_v)
        if floating:
            wins = logical_or(isnan(right_v), logical_and(wins, logical_not(isnan(left_v))))
        value = cat([_slice_axis(value, axis, 0, step), where(wins, right_v, left_v)], dim=axis)
        index = cat([_slice_axis(index, axis, 0, step), where(wins, right_i, left_i)], dim=axis)
        step *= 2
    return namedtuple(op, "values indices")(gather(input, axis, index), index)
