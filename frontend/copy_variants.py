"""torch's *_copy functions (a view op whose result is a fresh tensor, never sharing memory),
split_with_sizes, and the unsafe_* splits (pieces that share memory with the input but are not
views: no shared version counter, no write-back of history, as in PyTorch).

Each copy is the view op of shape_ops / inplace_views followed by a clone, so gradients are the
view's; out= writes the result into a given tensor as torch's out= does (out_arguments.write_out).
"""
import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from . import math_ops as M, shape_ops as S
from .inplace_views import unfold
from .out_arguments import write_out
from .scatter_ops import _diagonal_positions
from .tensor import Tensor, _dim, _observe


def _fresh(result, input):
    """`result` as a tensor of its own memory (a view or the input itself is cloned)."""
    if result is input or result._base is not None:
        return M.clone(result)
    return result


def _finish(result, input, out, name):
    if isinstance(result, tuple):
        result = tuple(_fresh(r, input) for r in result)
        if out is None:
            return result
        if not isinstance(out, (tuple, list)) or len(out) != len(result):
            raise TypeError(f"{name}(): argument 'out' must be a list of {len(result)} Tensors")
        for i, (target, piece) in enumerate(zip(out, result)):
            if tuple(target.shape) != tuple(piece.shape):
                raise RuntimeError(f"{name}(): out[{i}] has shape {list(target.shape)}, but the result has shape "
                                   f"{list(piece.shape)} (a list of outputs is not resized)")
            write_out(target, piece, name)
        return None
    result = _fresh(result, input)
    return result if out is None else write_out(out, result, name)


def _int_argument(value, op, name, position, kind="int"):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{op}(): argument '{name}' (position {position}) must be {kind}, not {type(value).__name__}")


def _sizes_argument(value, op, name, position):
    if not isinstance(value, (tuple, list, Tensor)) and not hasattr(value, "__len__"):
        raise TypeError(f"{op}(): argument '{name}' (position {position}) must be tuple of ints, not "
                        f"{type(value).__name__}")
    return [int(v) for v in value]


def alias_copy(input, *, out=None):
    return _finish(input, input, out, "alias_copy")


def detach_copy(input, *, out=None):
    return _finish(M.clone(input.detach()), input, out, "detach_copy")


def expand_copy(input, size, *, implicit=False, out=None):
    size = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
    return _finish(S.expand(input, size), input, out, "expand_copy")


def permute_copy(input, dims, *, out=None):
    return _finish(S.permute(input, tuple(dims)), input, out, "permute_copy")


def select_copy(input, dim, index, *, out=None):
    return _finish(S.select(input, dim, index), input, out, "select_copy")


def slice_copy(input, dim=0, start=None, end=None, step=1, *, out=None):
    axis = _dim(dim, input.ndim, "slice_copy")
    if step <= 0:
        raise RuntimeError("slice step must be positive")
    lo, hi, step = slice(start, end, step).indices(input.shape[axis])
    return _finish(S._slice_axis(input, axis, lo, max(lo, hi), step), input, out, "slice_copy")


def narrow_copy(input, dim, start, length, *, out=None):
    axis = _dim(dim, input.ndim, "narrow_copy")
    size, start, length = input.shape[axis], int(start), int(length)
    if not -size <= start <= size:
        raise IndexError(f"start out of range (expected to be in range of [{-size}, {size}], but got {start})")
    start = start + size if start < 0 else start
    if length < 0 or start + length > size:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({size}).")
    return _finish(S._slice_axis(input, axis, start, start + length), input, out, "narrow_copy")


def squeeze_copy(input, dim=None, *, out=None):
    return _finish(S.squeeze(input, dim), input, out, "squeeze_copy")


def unsqueeze_copy(input, dim, *, out=None):
    return _finish(S.unsqueeze(input, dim), input, out, "unsqueeze_copy")


def t_copy(input, *, out=None):
    return _finish(S.t(input), input, out, "t_copy")


def transpose_copy(input, dim0, dim1, *, out=None):
    return _finish(S.transpose(input, dim0, dim1), input, out, "transpose_copy")


def unfold_copy(input, dimension, size, step, *, out=None):
    return _finish(unfold(input, dimension, size, step), input, out, "unfold_copy")


def diagonal_copy(input, offset=0, dim1=0, dim2=1, *, out=None):
    """input.diagonal(offset, dim1, dim2) as a new tensor, for any two dims (the view, ember's
    diagonal, needs two adjacent dims of a contiguous tensor; a copy has no such limit)."""
    moved, rows, cols, positions = _diagonal_positions(input, offset, dim1, dim2, "diagonal_copy")
    lead = tuple(moved.shape[:-2])
    flat = S.reshape(moved, lead + (rows * cols,))
    taken = P["take"].bind(flat, Tensor._wrap(positions), axis=len(lead))
    return _finish(taken, input, out, "diagonal_copy")


def view_copy(input, size=None, dtype=None, *, out=None):
    """input.view(size) as a new tensor (any strides: a copy need not be a view), or input's bytes
    read as `dtype` (torch's view(dtype); not differentiable, computed from the values)."""
    if isinstance(size, dtypes.DType) or isinstance(size, np.dtype) or size in (float, int, bool):
        size, dtype = None, size
    if (size is None) == (dtype is None):
        raise TypeError("view_copy() expects either a size (tuple of ints) or a dtype")
    if size is not None:
        if isinstance(size, (int, np.integer)):
            raise TypeError(f"view_copy(): argument 'size' (position 2) must be tuple of ints, not "
                            f"{type(size).__name__}")
        return _finish(S.reshape(input, tuple(size)), input, out, "view_copy")
    return _finish(_bitcast(input, dtypes.as_dtype(dtype)), input, out, "view_copy")


def _bitcast(input, dtype):
    if dtype is input.dtype:
        return M.clone(input)
    old, new = input._data.itemsize, dtype.np.itemsize
    if old != new:
        if input.ndim == 0:
            raise RuntimeError(f"self.dim() cannot be 0 to view {_name(input.dtype)} as {_name(dtype)} "
                               f"(different element sizes)")
        if new > old and input.shape[-1] % (new // old):
            raise RuntimeError(f"self.size(-1) must be divisible by {new // old} to view {_name(input.dtype)} as "
                               f"{_name(dtype)} (different element sizes), but got {input.shape[-1]}")
    _observe(input, "view_copy(dtype)")  # (a reinterpretation of the bytes: no primitive, so a guard)
    return Tensor._wrap(np.ascontiguousarray(input._data).view(dtype.np).copy())


def _name(dtype):
    from .linalg import scalar_type_name
    return scalar_type_name(dtype)


def split_copy(input, split_size, dim=0, *, out=None):
    _int_argument(split_size, "split_copy", "split_size", 2)
    return _finish(S.split(input, split_size, dim), input, out, "split_copy")


def split_with_sizes_copy(input, split_sizes, dim=0, *, out=None):
    sizes = _sizes_argument(split_sizes, "split_with_sizes_copy", "split_sizes", 2)
    return _finish(S.split(input, sizes, dim), input, out, "split_with_sizes_copy")


def unbind_copy(input, dim=0, *, out=None):
    return _finish(S.unbind(input, dim), input, out, "unbind_copy")


def split_with_sizes(input, split_sizes, dim=0):
    """Views of consecutive pieces of the given sizes along dim (torch.split with a list)."""
    return S.split(input, _sizes_argument(split_sizes, "split_with_sizes", "split_sizes", 1), dim)


def unsafe_split(input, split_size, dim=0):
    _int_argument(split_size, "unsafe_split", "split_size", 2)
    return _not_views(S.split(input, split_size, dim))


def unsafe_chunk(input, chunks, dim=0):
    _int_argument(chunks, "unsafe_chunk", "chunks", 2)
    return _not_views(S.chunk(input, chunks, dim))


def unsafe_split_with_sizes(input, split_sizes, dim=0):
    sizes = _sizes_argument(split_sizes, "unsafe_split_with_sizes", "split_sizes", 2)
    return _not_views(S.split(input, sizes, dim))


_VIEW_FIELDS = ("_base", "_view_chain", "_vc", "_creation", "_output_nr", "_created_by", "_detached")


def _not_views(pieces):
    """split's pieces, made PyTorch's unsafe_split outputs: the same memory, but not views of the
    input (each its own version counter; an in-place op on one is allowed, records into its own
    history only, and is not seen by the input's autograd: the caller's promise that it will not
    happen)."""
    for piece in pieces:
        for field in _VIEW_FIELDS:
            piece.__dict__.pop(field, None)
    return pieces


TENSOR_METHODS = {
    "narrow_copy": narrow_copy, "split_with_sizes": split_with_sizes, "unsafe_split": unsafe_split,
    "unsafe_chunk": unsafe_chunk, "unsafe_split_with_sizes": unsafe_split_with_sizes,
}
