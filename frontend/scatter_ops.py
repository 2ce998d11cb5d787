"""PyTorch's scatter, index and put family: index_put, index_copy, index_fill, index_reduce,
scatter_reduce, the *_scatter ops, masked_scatter, put, fill_diagonal_, diag_embed, fill.

Each is composed from the indexing primitives (index_put, index_add, scatter_add, slice_update,
take) and where/reductions, so eager autograd and ember.compile both differentiate it. The
in-place forms write the out-of-place result through `Tensor._inplace`.
"""
import warnings

import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from . import math_ops as M, reductions as R, shape_ops as S
from .dispatch import STATE
from .indexing import _AdvancedPlan, _basic_plan, _drop_leading_ones, _expand_key, functional_setitem
from .linalg import scalar_type_name
from .tensor import Tensor, _dim, leaf_view_write_error


def _tensor_argument(value, op, name, position):
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}(): argument '{name}' (position {position}) must be Tensor, not {type(value).__name__}")


def _constant(array):
    return Tensor._wrap(np.asarray(array))


def _wrapped(index, size):
    """int64 `index` with negative entries counted from the end (as a primitive, so it traces)."""
    index = M.to_dtype(index, dtypes.int64)
    return M.where(M.lt(index, 0), M.add(index, size), index)


def _out_of_range(index, low, high):
    """The first entry of `index` outside [low, high), or None (an eager check of the values)."""
    values = index._data
    if values.size and (values.min() < low or values.max() >= high):
        return int(values.min()) if values.min() < low else int(values.max())
    return None


def _as_vector(input):
    """A 0-d tensor is indexed as a 1-element vector: (the vector, how to undo it)."""
    if input.ndim:
        return input, lambda out: out
    return S.reshape(input, (1,)), lambda out: S.reshape(out, ())


def _inplace_form(fn, name):
    """`fn`'s in-place method: the result written into self; tensor arguments may not overlap it."""
    def method(self, *args, **kwargs):
        operands = tuple(a for a in args + tuple(kwargs.values()) if isinstance(a, Tensor))
        operands += tuple(t for a in args if isinstance(a, (tuple, list)) for t in a if isinstance(t, Tensor))
        return self._inplace(lambda current: fn(current, *args, **kwargs), name, operands, True)
    method.__name__ = name
    return method


# ----------------------------------------------------------------------------- index_put

def index_put(input, indices, values, accumulate=False):
    """input with input[indices] = values (torch.index_put); accumulate=True adds, duplicates too."""
    _tensor_argument(values, "index_put", "values", 3)
    return _index_put(input, indices, values, accumulate)


def _index_put_method(self, indices, values, accumulate=False):
    _tensor_argument(values, "index_put", "values", 2)
    return _index_put(self, indices, values, accumulate)


def _index_put(input, indices, values, accumulate):
    indices = _index_tuple(input, indices)
    if values.dtype is not input.dtype:
        raise RuntimeError(f"Index put requires the source and destination dtypes match, got "
                           f"{scalar_type_name(input.dtype)} for the destination and {scalar_type_name(values.dtype)} "
                           f"for the source.")
    shape = _indexing_result_shape(input, indices)
    try:
        fits = np.broadcast_shapes(tuple(values.shape), shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise RuntimeError(f"shape mismatch: value tensor of shape {list(values.shape)} cannot be broadcast to "
                           f"indexing result of shape {list(shape)}")
    mask = indices[0]
    if (len(indices) == 1 and mask.dtype is dtypes.bool_ and mask.shape == input.shape and values.numel() == 1
            and not (accumulate and input.dtype is dtypes.bool_)):
        value = S.reshape(values, ())  # one value under a full mask: a where, which traces without a guard
        return M.where(mask, M.add(input, value) if accumulate else value, input)
    if not accumulate:
        return functional_setitem(input, indices, values)
    _, _, _, _, advanced = _basic_plan(input, _expand_key(input, indices))
    plan = _AdvancedPlan(tuple(input.shape), advanced)
    added = plan.to_front(S.expand(_drop_leading_ones(values, len(plan.result_shape)), plan.result_shape))
    flat = plan.flattened(input)
    # one index: index_add counts negatives from the end and checks the range itself (compiled
    # too); several: their linear index is in range (each was checked against its dim)
    linear = plan.linear if len(plan.positions) == 1 else _wrapped(plan.linear, flat.shape[plan.axis])
    return plan.unflattened(P["index_add"].bind(flat, linear, added, axis=plan.axis))


def _index_tuple(input, indices):
    if isinstance(indices, Tensor) or not isinstance(indices, (tuple, list)):
        raise TypeError(f"index_put(): argument 'indices' (position 2) must be tuple of Tensors, not "
                        f"{type(indices).__name__}")
    checked = []
    for i, index in enumerate(indices):
        if not isinstance(index, Tensor):
            raise TypeError(f"expected Tensor as element {i} in argument 1, but got {type(index).__name__}")
        if index.dtype is dtypes.uint8:
            warnings.warn("indexing with dtype torch.uint8 is now deprecated, please use a dtype torch.bool instead.",
                          UserWarning, stacklevel=3)
            index = M.to_dtype(index, dtypes.bool_)
        if index.dtype is not dtypes.bool_ and index.dtype.category != 1:
            raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
        checked.append(index)
    if not checked:
        raise RuntimeError("index_put(): expected at least one index tensor, got an empty tuple of indices")
    used = sum(max(t.ndim, 1) if t.dtype is dtypes.bool_ else 1 for t in checked)
    if used > input.ndim:
        raise IndexError(f"too many indices for tensor of dimension {input.ndim} (got {used})")
    return tuple(checked)


def _indexing_result_shape(input, indices):
    """input[indices].shape for a tuple of index tensors (masks checked against the dims they cover)."""
    shape, dim, index_shapes = tuple(input.shape), 0, []
    for index in indices:
        if index.dtype is dtypes.bool_:
            for k, size in enumerate(index.shape):
                if size != shape[dim + k]:
                    raise IndexError(f"The shape of the mask {list(index.shape)} at index {k} does not match the shape "
                                     f"of the indexed tensor {list(shape)} at index {dim + k}")
            index_shapes.append((int(np.count_nonzero(index._data)),))
            dim += index.ndim
        else:
            index_shapes.append(tuple(index.shape))
            dim += 1
    try:
        front = np.broadcast_shapes(*index_shapes)
    except ValueError:
        shapes = ", ".join(str(list(s)) for s in index_shapes)
        raise IndexError(f"shape mismatch: indexing tensors could not be broadcast together with shapes {shapes}") from None
    return tuple(front) + shape[dim:]


# ----------------------------------------------------------------------------- index_copy / index_fill

def index_copy(input, dim, index, source):
    """input with input.select(dim, index[i]) = source.select(dim, i) (torch.index_copy)."""
    op = "index_copy_"
    axis = _dim(dim, input.ndim, op)
    if index.ndim > 1:
        raise IndexError(f"{op}(): Index should have dimension 1 or 0 (got {index.ndim})")
    if index.dtype is not dtypes.int64:
        raise RuntimeError(f"{op}(): Expected a long tensor for index, but got {scalar_type_name(index.dtype)}")
    if source.dtype is not input.dtype:
        raise RuntimeError(f"{op}(): self and source expected to have the same dtype, but got (self) "
                           f"{scalar_type_name(input.dtype)} and (source) {scalar_type_name(source.dtype)}")
    if input.ndim or source.ndim > 1:  # (a 0-d input takes a 0-d or 1-element source)
        if source.ndim != input.ndim:
            raise IndexError(f"{op}(): When source and destination are not scalars, their dimensionality must "
                             f"match. Source dimensionality ({source.ndim}), destination dimensionality ({input.ndim})")
        rest = [d for d in range(input.ndim) if d != axis]
        if any(input.shape[d] != source.shape[d] for d in rest):
            raise RuntimeError(
                f"{op}(): Source/destination tensor must have same slice shapes. Destination slice shape: "
                f"{' '.join(str(input.shape[d]) for d in rest)} at dimension {axis} and source slice shape: "
                f"{' '.join(str(source.shape[d]) for d in rest)} at dimension 0.")
    count = source.shape[axis] if source.ndim else 1
    if index.numel() != count:
        raise IndexError(f"{op}(): Number of indices ({index.numel()}) should be equal to source.size(dim) ({count})")
    size = input.shape[axis] if input.ndim else 1
    bad = _out_of_range(index, 0, size)
    if bad is not None:
        raise IndexError(f"{op}(): index {bad} is out of bounds for dimension {axis} with size {size}")
    vector, back = _as_vector(input)
    source = source if input.ndim else S.reshape(source, (1,))
    index = S._no_negative_indices(S.reshape(index, (-1,)), size, op, axis)  # (compiled: out of range, checked)
    return back(P["index_put"].bind(vector, index, source, axis=axis))


def index_fill(input, dim, index, value):
    """input with every slice input.select(dim, i), i in index, set to `value` (torch.index_fill)."""
    op = "index_fill_"
    axis = _dim(dim, input.ndim, op)
    if index.dtype is not dtypes.int64:
        raise IndexError(f"{op}(): Expected dtype int64 for index.")
    if index.ndim > 1:
        raise RuntimeError("Index has to be a vector/scalar")
    if isinstance(value, Tensor) and value.ndim:
        raise RuntimeError(f"{op} only supports a 0-dimensional value tensor, but got tensor with {value.ndim} "
                           f"dimension(s).")
    size = input.shape[axis] if input.ndim else 1
    bad = _out_of_range(index, -size, size)
    if bad is not None:
        raise IndexError(f"index {bad} is out of bounds for dimension {axis} with size {size}")
    vector, back = _as_vector(input)
    filled = _hit_mask(S.reshape(index, (-1,)), size)
    filled = S.reshape(filled, (1,) * axis + (size,) + (1,) * (vector.ndim - axis - 1))
    value = M.to_dtype(value, input.dtype) if isinstance(value, Tensor) else M.constant(value, input.dtype)
    return back(M.where(filled, value, vector))


def _hit_mask(index, size):
    """A bool vector of `size`: True where the (1-D) index names a position (negatives from the end)."""
    counts = P["index_add"].bind(_constant(np.zeros(size, np.int64)), _wrapped(index, size),
                                 _constant(np.ones(tuple(index.shape), np.int64)), axis=0)
    return M.gt(counts, 0)


# ----------------------------------------------------------------------------- scatter_reduce / index_reduce

_SCATTER_REDUCTIONS = {"sum": "sum", "prod": "prod", "mean": "mean", "amax": "amax", "amin": "amin",
                       "max": "amax", "min": "amin"}  # (torch also takes the old names max and min)


def scatter_reduce(input, dim, index, src, reduce, *, include_self=True):
    """input with src reduced into it at index along dim (torch.scatter_reduce): sum, prod, mean,
    amax or amin of all values scattered to a position, input's own value included when
    include_self. Positions no index names keep input's value."""
    _tensor_argument(src, "scatter_reduce", "src", 4)
    return _checked_scatter_reduce(input, dim, index, src, reduce, include_self)


def _scatter_reduce_method(self, dim, index, src, reduce, *, include_self=True):
    _tensor_argument(src, "scatter_reduce", "src", 3)
    return _checked_scatter_reduce(self, dim, index, src, reduce, include_self)


def _checked_scatter_reduce(input, dim, index, src, reduce, include_self):
    if reduce not in _SCATTER_REDUCTIONS:
        raise RuntimeError(f"reduce argument must be either sum, prod, mean, amax or amin, got {reduce}")
    axis = _dim(dim, input.ndim, "scatter_reduce")
    if index.dtype not in (dtypes.int32, dtypes.int64):
        raise RuntimeError("scatter(): Expected dtype int32/int64 for index")
    if src.dtype is not input.dtype:
        raise RuntimeError("scatter(): Expected self.dtype to be equal to src.dtype")
    if index.ndim != input.ndim:
        raise RuntimeError("Index tensor must have the same number of dimensions as self tensor")
    if index.ndim != src.ndim:
        raise RuntimeError("Index tensor must have the same number of dimensions as src tensor")
    if any(i > s for d, (i, s) in enumerate(zip(index.shape, input.shape)) if d != axis) or any(
            i > s for i, s in zip(index.shape, src.shape)):
        raise RuntimeError(f"Expected index {list(index.shape)} to be no larger than self {list(input.shape)} apart "
                           f"from dimension {axis} and to be no larger size than src {list(src.shape)}")
    size = input.shape[axis] if input.ndim else 1
    bad = _out_of_range(index, 0, size)
    if bad is not None:
        raise RuntimeError(f"index {bad} is out of bounds for dimension {axis} with size {size}")
    if _SCATTER_REDUCTIONS[reduce] == "mean" and input.dtype is dtypes.bool_:
        raise NotImplementedError("\"scatter_gather_tensor_cpu_reduce_mean\" not implemented for 'Bool'")
    vector, back = _as_vector(input)
    if not input.ndim:
        index, src = S.reshape(index, (1,)), S.reshape(src, (1,))
    index = S._no_negative_indices(M.to_dtype(index, dtypes.int64), size, "scatter_reduce", axis)
    return back(_scatter_reduce(vector, axis, index, src, _SCATTER_REDUCTIONS[reduce], include_self))


def _scatter_reduce(input, axis, index, src, reduce, include_self):
    shape, index_shape = tuple(input.shape), tuple(index.shape)
    if index.numel() == 0:
        return M.clone(input)
    if tuple(src.shape) != index_shape:
        src = _leading_block(src, index_shape)
    counts = P["scatter_add"].bind(_constant(np.zeros(shape, np.int64)), index,
                                   _constant(np.ones(index_shape, np.int64)), axis=axis)
    hit = M.gt(counts, 0)
    if reduce in ("sum", "mean"):
        base = input if include_self else M.where(hit, M.constant(0, input.dtype), input)
        total = P["scatter_add"].bind(base, index, src, axis=axis)
        if reduce == "sum":
            return total
        divisor = M.where(hit, M.add(counts, 1) if include_self else counts, 1)
        mean = M.div(total, divisor) if input.dtype.is_floating_point else M.floor_divide(total, divisor)
        return M.where(hit, M.to_dtype(mean, input.dtype), input)
    return _dense_reduce(input, axis, index, src, reduce, include_self, counts)


def _dense_reduce(input, axis, index, src, reduce, include_self, counts):
    """prod, amax or amin scattered along `axis`: every candidate value is laid out against every
    target position (a one-hot axis of input's size, the reduction's identity elsewhere) and
    reduced over the candidates. Memory grows as index.numel() x input.shape[axis]; in return the
    reductions' own VJPs give torch's gradients (ties share evenly, zeros in products)."""
    size = input.shape[axis]
    region_shape = tuple(index.shape[:axis]) + (size,) + tuple(index.shape[axis + 1:])
    region = _leading_block(input, region_shape)
    values, targets = src, index
    if include_self:  # input's own values are one more candidate for their own positions
        own = np.arange(size).reshape((1,) * axis + (size,) + (1,) * (input.ndim - axis - 1))
        values = S.cat([region, src], axis)
        targets = S.cat([_constant(np.broadcast_to(own, region_shape).copy()), index], axis)
    one_hot = M.eq(S.unsqueeze(targets, -1), _constant(np.arange(size)))
    identity = M.constant(_identity(reduce, input.dtype), input.dtype)
    laid_out = M.where(one_hot, S.unsqueeze(values, -1), identity)
    reduced = {"prod": R.prod, "amax": R.amax, "amin": R.amin}[reduce](laid_out, axis)
    reduced = M.to_dtype(S.movedim(reduced, -1, axis), input.dtype)
    if not include_self:
        reduced = M.where(M.gt(_leading_block(counts, region_shape), 0), reduced, region)
    if region_shape == tuple(input.shape):
        return reduced
    return P["slice_update"].bind(input, reduced, starts=(0,) * input.ndim, stops=region_shape,
                                  steps=(1,) * input.ndim)


def _identity(reduce, dtype):
    if reduce == "prod":
        return 1
    low = reduce == "amax"
    if dtype is dtypes.bool_:
        return not low
    if dtype.is_floating_point:
        return -np.inf if low else np.inf
    info = np.iinfo(dtype.np)
    return info.min if low else info.max


def _leading_block(x, shape):
    """x[:shape[0], :shape[1], ...] (index and src may be smaller than input outside `dim`)."""
    if tuple(x.shape) == tuple(shape):
        return x
    return P["slice"].bind(x, starts=(0,) * x.ndim, stops=tuple(shape), steps=(1,) * x.ndim)


def index_reduce(input, dim, index, source, reduce, *, include_self=True):
    """input with source's slices reduced into input.select(dim, index[i]) (torch.index_reduce):
    prod, mean, amax or amin, input's own slice included when include_self."""
    warnings.warn("index_reduce() is in beta and the API may change at any time.", UserWarning, stacklevel=2)
    if reduce not in ("prod", "mean", "amax", "amin"):
        raise RuntimeError(f"index_reduce(): Expected reduce to be one of prod, mean, amax or amin but got {reduce}.")
    op = "index_reduce_"
    axis = _dim(dim, input.ndim, "index_reduce")
    if index.ndim > 1:
        raise IndexError(f"{op}(): Index is supposed to be a vector, but got dim: {index.ndim} with type: "
                         f"{scalar_type_name(index.dtype)} and size: {list(index.shape)}")
    if index.dtype not in (dtypes.int32, dtypes.int64):
        raise RuntimeError(f"{op}(): Expected dtype int32/int64 for index but got: {scalar_type_name(index.dtype)}")
    if source.dtype is not input.dtype:
        raise RuntimeError(f"{op}(): self ({scalar_type_name(input.dtype)}) and source "
                           f"({scalar_type_name(source.dtype)}) must have the same scalar type")
    count = source.shape[axis] if source.ndim else 1
    if index.numel() != count:
        raise RuntimeError(f"{op}(): Number of indices ({index.numel()}) should be equal to source.size(dim): "
                           f"({count}), for dim: {axis}")
    if source.ndim != input.ndim or any(a != b for d, (a, b) in enumerate(zip(input.shape, source.shape)) if d != axis):
        raise RuntimeError(f"source tensor shape must match self tensor shape, excluding the specified dimension. "
                           f"Got self.shape = {list(input.shape)} source.shape = {list(source.shape)}")
    size = input.shape[axis] if input.ndim else 1
    if _out_of_range(index, 0, size) is not None:
        raise IndexError("index out of range in self")
    if input.dtype is dtypes.bool_ and reduce == "mean":
        raise NotImplementedError("\"index_reduce_func_cpu_\" not implemented for 'Bool'")
    vector, back = _as_vector(input)
    source = source if source.ndim else S.reshape(source, (1,))
    index = S._no_negative_indices(M.to_dtype(index, dtypes.int64), size, "index_reduce", axis)
    column = S.reshape(index, (1,) * axis + (-1,) + (1,) * (vector.ndim - axis - 1))
    return back(_scatter_reduce(vector, axis, S.expand(column, tuple(source.shape)), source, reduce, include_self))


# ----------------------------------------------------------------------------- select / slice / diagonal scatter

def _src_must_fit(src, expected):
    if tuple(src.shape) != tuple(expected):
        raise RuntimeError(f"expected src to have a size equal to the slice of self. src size = {list(src.shape)}, "
                           f"slice size = {list(expected)}")


def _slice_update(input, src, axis, start, stop, step):
    starts, stops, steps = [0] * input.ndim, list(input.shape), [1] * input.ndim
    starts[axis], stops[axis], steps[axis] = start, stop, step
    return P["slice_update"].bind(input, M.to_dtype(src, input.dtype), starts=tuple(starts), stops=tuple(stops),
                                  steps=tuple(steps))


def select_scatter(input, src, dim, index):
    """input with input.select(dim, index) replaced by src (torch.select_scatter)."""
    axis = _dim(dim, input.ndim, "select_scatter")
    size = input.shape[axis] if input.ndim else 1
    if not -size <= index < size or not input.ndim:
        raise IndexError(f"select(): index {index} out of range for tensor of size {list(input.shape)} at "
                         f"dimension {axis}")
    index = int(index) % size
    _src_must_fit(src, input.shape[:axis] + input.shape[axis + 1:])
    return _slice_update(input, S.unsqueeze(src, axis), axis, index, index + 1, 1)


def slice_scatter(input, src, dim=0, start=None, end=None, step=1):
    """input with input[..., start:end:step, ...] (along dim) replaced by src (torch.slice_scatter)."""
    axis = _dim(dim, input.ndim, "slice_scatter")
    if step <= 0:
        raise RuntimeError("slice step must be positive")
    size = input.shape[axis]
    start, stop, step = slice(start, end, step).indices(size)
    stop = max(stop, start)
    region = input.shape[:axis] + (len(range(start, stop, step)),) + input.shape[axis + 1:]
    _src_must_fit(src, region)
    return _slice_update(input, src, axis, start, stop, step)


def diagonal_scatter(input, src, offset=0, dim1=0, dim2=1):
    """input with input.diagonal(offset, dim1, dim2) replaced by src (torch.diagonal_scatter):
    the two dims moved last and flattened, src put at the diagonal's flat positions."""
    moved, rows, cols, positions = _diagonal_positions(input, offset, dim1, dim2, "diagonal_scatter")
    lead = tuple(moved.shape[:-2])
    _src_must_fit(src, lead + (len(positions),))
    if not len(positions):
        return M.clone(input)
    flat = S.reshape(moved, lead + (rows * cols,))
    written = P["index_put"].bind(flat, _constant(positions), M.to_dtype(src, input.dtype), axis=len(lead))
    d1, d2 = _dim(dim1, input.ndim, "diagonal_scatter"), _dim(dim2, input.ndim, "diagonal_scatter")
    return S.movedim(S.reshape(written, lead + (rows, cols)), (-2, -1), (d1, d2))


def _diagonal_positions(input, offset, dim1, dim2, op):
    """input with dim1, dim2 moved last (rows, cols), and the diagonal's positions in those two
    dims flattened: [i, i + offset] (offset >= 0) or [i - offset, i]."""
    d1, d2 = _dim(dim1, input.ndim, op), _dim(dim2, input.ndim, op)
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    moved = S.movedim(input, (d1, d2), (-2, -1))
    rows, cols = input.shape[d1], input.shape[d2]
    count = max(0, min(rows, cols - offset) if offset >= 0 else min(rows + offset, cols))
    start = offset if offset >= 0 else -offset * cols
    return moved, rows, cols, start + np.arange(count, dtype=np.int64) * (cols + 1)


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """A tensor whose diagonals (offset, over the new dims dim1 and dim2) hold input's last dim."""
    ndim = input.ndim + 1
    d1, d2 = _dim(dim1, ndim, "diag_embed"), _dim(dim2, ndim, "diag_embed")
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    side = input.shape[-1] + abs(int(offset))
    shape = list(input.shape[:-1])
    for d in sorted((d1, d2)):
        shape.insert(d, side)
    zeros = _constant(np.zeros(tuple(shape), input.dtype.np))
    return diagonal_scatter(zeros, input, offset, d1, d2)


# ----------------------------------------------------------------------------- masked_scatter / put

def masked_scatter(input, mask, source):
    """input with the positions where mask is True taken, in row-major order, from source's first
    elements (torch.masked_scatter). Which source element lands where is a cumulative count of
    the mask, so the op traces without reading the mask's values."""
    _tensor_argument(source, "masked_scatter", "source", 3)
    return _masked_scatter(input, mask, source, in_place=False)


def _masked_scatter_method(self, mask, source):
    _tensor_argument(source, "masked_scatter", "source", 2)
    return _masked_scatter(self, mask, source, in_place=False)


def _masked_scatter(input, mask, source, in_place):
    if mask.dtype is not dtypes.bool_:
        raise RuntimeError(f"masked_scatter_ only supports boolean masks, but got mask with dtype "
                           f"{scalar_type_name(mask.dtype)}")
    if source.dtype is not input.dtype:
        raise RuntimeError(f"masked_scatter: expected self and source to have same dtypes but got"
                           f"{scalar_type_name(input.dtype)} and {scalar_type_name(source.dtype)}")
    shape = _masked_shape(input, mask, in_place)
    mask, input = S.expand(mask, shape), S.expand(input, shape)
    ones = int(np.count_nonzero(mask._data))
    if ones > source.numel():
        raise RuntimeError("Number of elements of source < number of ones in mask")
    if source.numel() == 0:
        return M.clone(input)
    flat_mask = S.reshape(mask, (-1,))
    taken = M.sub(R.cumsum(M.to_dtype(flat_mask, dtypes.int64), 0), 1)
    taken = M.where(flat_mask, taken, 0)
    values = P["take"].bind(S.reshape(source, (-1,)), taken, axis=0)
    return M.where(mask, S.reshape(values, shape), input)


def _masked_shape(input, mask, in_place):
    shape = tuple(input.shape)
    if in_place:
        lead = len(shape) - mask.ndim
        if lead < 0:
            raise RuntimeError(f"expand(CPUBoolType{{{list(mask.shape)}}}, size={list(shape)}): the number of sizes "
                               f"provided ({len(shape)}) must be greater or equal to the number of dimensions in the "
                               f"tensor ({mask.ndim})")
        for i, size in enumerate(mask.shape):
            if size not in (1, shape[lead + i]):
                target = shape[lead + i]
                raise RuntimeError(f"The expanded size of the tensor ({target}) must match the existing size ({size}) "
                                   f"at non-singleton dimension {lead + i}.  Target sizes: {list(shape)}.  Tensor "
                                   f"sizes: {list(mask.shape)}")
        return shape
    try:
        return tuple(np.broadcast_shapes(shape, tuple(mask.shape)))
    except ValueError:
        a, b = tuple(mask.shape)[::-1], shape[::-1]
        dim = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y and 1 not in (x, y))
        raise RuntimeError(f"The size of tensor a ({a[dim]}) must match the size of tensor b ({b[dim]}) at "
                           f"non-singleton dimension {max(len(a), len(b)) - 1 - dim}") from None


def masked_scatter_(self, mask, source):
    _tensor_argument(source, "masked_scatter_", "source", 2)
    return self._inplace(lambda current: _masked_scatter(current, mask, source, in_place=True), "masked_scatter_",
                         (mask, source) if isinstance(source, Tensor) else (mask,), True)


def put(input, index, source, accumulate=False):
    """input, seen as 1-D, with input[index] = source (accumulate: +=), as torch.put."""
    op = "put_"
    if index.dtype is not dtypes.int64:
        raise RuntimeError(f"{op}(): Expected a long tensor for index, but got {scalar_type_name(index.dtype)}")
    if source.dtype is not input.dtype:
        raise RuntimeError(f"{op}(): self and source expected to have the same dtype, but got self.dtype = "
                           f"{scalar_type_name(input.dtype)} and source.dtype = {scalar_type_name(source.dtype)}")
    if source.numel() != index.numel():
        raise IndexError(f"{op}(): Expected source and index to have the same number of elements, but got "
                         f"source.numel() = {source.numel()}, index.numel() = {index.numel()}")
    size = input.numel()
    if size == 0 and index.numel():
        raise IndexError(f"{op}(): Tried to put elements into an empty tensor")
    bad = _out_of_range(index, -size, size)
    if bad is not None:
        raise IndexError(f"out of range: tried to access index {bad} on a tensor of {size} elements.")
    if index.numel() == 0:
        return M.clone(input)
    flat, where_to = S.reshape(input, (-1,)), _wrapped(S.reshape(index, (-1,)), size)
    primitive = P["index_add"] if accumulate else P["index_put"]
    return S.reshape(primitive.bind(flat, where_to, S.reshape(source, (-1,)), axis=0), tuple(input.shape))


# ----------------------------------------------------------------------------- fill_diagonal_, fill, small forms

def fill_diagonal_(self, fill_value, wrap=False):
    """Fill the main diagonal (all dims equal for > 2 dims) in place; wrap=True continues a tall
    matrix's diagonal every cols + 1 rows, as numpy.fill_diagonal (positions as torch gives them
    for a contiguous tensor)."""
    shape = tuple(self.shape)
    if len(shape) < 2:
        raise RuntimeError("dimensions must larger than 1")
    if len(shape) > 2 and len(set(shape)) != 1:
        raise RuntimeError("all dimensions of input must be of equal length")
    rows, cols = shape[0], shape[1]
    if wrap and len(shape) == 2 and rows > cols + 1:
        positions = np.arange(0, rows * cols, cols + 1)
    else:
        step = sum(int(np.prod(shape[d + 1:])) for d in range(len(shape)))
        positions = np.arange(min(shape)) * step
    if self.numel() == 0:
        return self
    if STATE.grad_enabled and self.requires_grad and self.grad_fn is None:
        raise leaf_view_write_error("fill_diagonal_", (len(positions),), self)  # (torch writes through a view)
    value = fill_value.item() if isinstance(fill_value, Tensor) else fill_value
    values = _constant(np.full(len(positions), value).astype(self.dtype.np))

    def filled(current):
        flat = S.reshape(current, (-1,))
        return S.reshape(P["index_put"].bind(flat, _constant(positions.astype(np.int64)), values, axis=0), shape)
    return self._inplace(filled, "fill_diagonal_")


def _fill_value(value):
    if isinstance(value, Tensor) and value.ndim:
        raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor with {value.ndim} dimensions.")
    return value


def fill(input, value):
    """A new tensor of input's shape and dtype holding `value` (torch.fill); gradients: none to
    input, the sum to a tensor value."""
    value = _fill_value(value)
    value = M.to_dtype(value, input.dtype) if isinstance(value, Tensor) else M.constant(value, input.dtype)
    return M.where(_constant(np.zeros((), bool)), input, value)


def fill_(input, value):
    return input.fill_(_fill_value(value))


def zero_(input):
    return input.zero_()


def detach(input):
    return input.detach()


def detach_(input):
    return input.detach_()


def is_same_size(input, other):
    _tensor_argument(other, "is_same_size", "other", 2)
    return tuple(input.shape) == tuple(other.shape)


def _is_same_size_method(self, other):
    _tensor_argument(other, "is_same_size", "other", 1)
    return tuple(self.shape) == tuple(other.shape)


TENSOR_METHODS = {
    "index_put": _index_put_method, "index_put_": _inplace_form(_index_put_method, "index_put_"),
    "index_copy": index_copy, "index_copy_": _inplace_form(index_copy, "index_copy_"),
    "index_fill": index_fill, "index_reduce": index_reduce,
    "index_reduce_": _inplace_form(index_reduce, "index_reduce_"),
    "scatter_reduce": _scatter_reduce_method,
    "scatter_reduce_": _inplace_form(_scatter_reduce_method, "scatter_reduce_"),
    "select_scatter": select_scatter, "slice_scatter": slice_scatter, "diagonal_scatter": diagonal_scatter,
    "masked_scatter": _masked_scatter_method, "masked_scatter_": masked_scatter_,
    "put": put, "put_": _inplace_form(put, "put_"), "fill_diagonal_": fill_diagonal_,
    "is_same_size": _is_same_size_method, "diag_embed": diag_embed,
}


def index_put_(input, indices, values, accumulate=False):
    _tensor_argument(values, "index_put_", "values", 3)
    return input.index_put_(indices, values, accumulate)
