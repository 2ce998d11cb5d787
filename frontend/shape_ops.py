"""Shape and layout operations: reshape/view, permute, transpose, squeeze/unsqueeze, expand,
repeat, cat/stack/split/chunk, flip, narrow, gather, tril/triu.

Each one resolves PyTorch's conveniences (-1 sizes, negative dims, lists of sizes) into the
movement primitives, so the IR only ever sees explicit shapes and axes.
"""
import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from ember.ops.registry import OpError
from .dispatch import STATE, current_module
from .tensor import Tensor, _dim
from .math_ops import promote_operands
from .views import mark_multi_output
from .autograd import saves_like_pytorch
from .device_tensors import keeps_device


def _sizes(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    # (ints as they are: a size watched while a trace makes dims dynamic keeps its expression)
    return tuple(d if type(d) is not bool and isinstance(d, int) else int(d) for d in shape)


def _resolve(shape, numel, op, source):
    shape = list(shape)
    unknown = [i for i, d in enumerate(shape) if d == -1]
    if len(unknown) > 1:
        raise RuntimeError(f"{op}: only one dimension can be inferred, got shape {shape}")
    known = 1
    for d in shape:
        if d != -1:
            known *= d
    if unknown:
        if known == 0 or numel % known:
            raise _shape_error(op, shape, source)
        shape[unknown[0]] = numel // known
    elif known != numel:
        raise _shape_error(op, shape, source)
    return tuple(shape)


def _shape_error(op, shape, source):
    where = f"{op} ({current_module()})" if current_module() else op
    dims = ",".join(map(str, source.shape))
    return RuntimeError(f"{where}: shape {shape} is invalid for input {source.dtype.short}[{dims}] "
                        f"of size {source.numel()}")


def same_view(input):
    """A view op that changes nothing still returns a new view, as in PyTorch (not the tensor
    itself: a view taken under no_grad, or in-place errors, must see a view)."""
    return P["reshape"].bind(input, shape=tuple(input.shape))


def reshape(input, *shape):
    shape = _resolve(_sizes(shape), input.numel(), "reshape", input)
    if tuple(input.shape) == shape:
        return same_view(input)
    return P["reshape"].bind(input, shape=shape)


def view(input, *shape):
    if len(shape) == 1 and isinstance(shape[0], dtypes.DType):
        raise RuntimeError("view(dtype) is not supported; use .to(dtype)")
    shape = _resolve(_sizes(shape), input.numel(), "view", input)
    if tuple(input.shape) == shape:
        return same_view(input)
    out = P["reshape"].bind(input, shape=shape)
    if out._base is None and input.numel() > 1:  # numpy had to copy: PyTorch refuses
        raise RuntimeError(f"view size is not compatible with input tensor's size and stride (at least one "
                           f"dimension spans across two contiguous subspaces): shape {list(input.shape)}, "
                           f"strides {list(input.stride())}, requested {list(shape)}. Use .reshape(...) "
                           f"instead.")
    return out


def view_as(input, other):
    return view(input, tuple(other.shape))


def reshape_as(input, other):
    return reshape(input, tuple(other.shape))


def permute(input, *dims):
    dims = _sizes(dims)
    if len(dims) != input.ndim:
        raise RuntimeError(f"permute: the order {list(dims)} must name each of the {input.ndim} dims of a "
                           f"tensor of shape {list(input.shape)} once")
    dims = tuple(_dim(d, input.ndim, "permute") for d in dims)
    if dims == tuple(range(input.ndim)):
        return same_view(input)
    return P["permute"].bind(input, perm=dims)


def transpose(input, dim0, dim1):
    n = input.ndim
    if n < 2 and dim0 in (0, -1) and dim1 in (0, -1):
        return same_view(input)
    perm = list(range(n))
    a, b = _dim(dim0, n, "transpose"), _dim(dim1, n, "transpose")
    perm[a], perm[b] = perm[b], perm[a]
    return permute(input, perm)


swapaxes = swapdims = transpose


def t(input):
    if input.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {input.ndim}D")
    return transpose(input, 0, 1) if input.ndim == 2 else same_view(input)  # (a view, as in PyTorch)


def movedim(input, source, destination):
    source = [source] if isinstance(source, int) else list(source)
    destination = [destination] if isinstance(destination, int) else list(destination)
    n = input.ndim
    source = [s % n for s in source]
    destination = [d % n for d in destination]
    order = [i for i in range(n) if i not in source]
    for dst, src in sorted(zip(destination, source)):
        order.insert(dst, src)
    return permute(input, order)


def flatten(input, start_dim=0, end_dim=-1):
    n = input.ndim
    if n == 0:
        return reshape(input, (1,))
    start, end = _dim(start_dim, n, "flatten"), _dim(end_dim, n, "flatten")
    shape = tuple(input.shape)
    return reshape(input, shape[:start] + (-1,) + shape[end + 1:]) if start <= end else input


def unflatten(input, dim, sizes):
    dim = _dim(dim, input.ndim, "unflatten")
    shape = tuple(input.shape)
    sizes = _resolve(tuple(sizes), shape[dim], "unflatten", input)
    return reshape(input, shape[:dim] + sizes + shape[dim + 1:])


def unsqueeze(input, dim):
    n = input.ndim + 1
    dim = _dim(dim, n, "unsqueeze")
    shape = tuple(input.shape)
    return P["reshape"].bind(input, shape=shape[:dim] + (1,) + shape[dim:])


def squeeze(input, dim=None):
    shape = tuple(input.shape)
    if dim is None:
        axes = {i for i, d in enumerate(shape) if d == 1}
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        axes = {_dim(d, input.ndim, "squeeze") for d in dims}
        axes = {a for a in axes if shape and shape[a] == 1}
    if not axes:
        return same_view(input)
    return P["reshape"].bind(input, shape=tuple(d for i, d in enumerate(shape) if i not in axes))


def expand(input, *sizes):
    sizes = _sizes(sizes)
    lead = len(sizes) - input.ndim
    if lead < 0:
        raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal "
                           f"to the number of dimensions in the tensor ({input.ndim})")
    shape = tuple(input.shape)
    target = tuple(shape[i - lead] if d == -1 else d for i, d in enumerate(sizes))
    if target == shape:
        return same_view(input)
    return _bind_movement("broadcast_to", input, shape=target)


def expand_as(input, other):
    return expand(input, tuple(other.shape))


def broadcast_to(input, shape):
    return expand(input, tuple(shape))


def broadcast_tensors(*tensors):
    shape = np.broadcast_shapes(*(tuple(t.shape) for t in tensors))
    return tuple(expand(t, shape) for t in tensors)


def _bind_movement(name, input, **attrs):
    try:
        return P[name].bind(input, **attrs)
    except OpError as error:
        raise RuntimeError(str(error)) from None


def repeat(input, *repeats):
    repeats = _sizes(repeats)
    if len(repeats) < input.ndim:
        raise RuntimeError("repeat: Number of dimensions of repeat dims can not be smaller than number "
                           "of dimensions of tensor")
    shape = (1,) * (len(repeats) - input.ndim) + tuple(input.shape)
    interleaved = []
    for r, d in zip(repeats, shape):
        interleaved += [1, d]
    x = reshape(input, tuple(interleaved))
    x = expand(x, tuple(v for r, d in zip(repeats, shape) for v in (r, d)))
    return reshape(x, tuple(r * d for r, d in zip(repeats, shape)))


def tile(input, dims):
    dims = tuple(dims)
    return repeat(input, (1,) * (input.ndim - len(dims)) + dims)


def cat(tensors, dim=0):
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or list(tensors)[:1]
    if not tensors:
        raise RuntimeError("cat(): expected a non-empty list of Tensors")
    tensors = promote_operands(tensors)
    dim = _dim(dim, tensors[0].ndim, "cat")
    return P["concat"].bind(*tensors, axis=dim)


concat = concatenate = cat


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    first = tuple(tensors[0].shape)
    for i, t in enumerate(tensors):
        if tuple(t.shape) != first:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(first)} at entry 0 "
                               f"and {list(t.shape)} at entry {i}")
    dim = _dim(dim, len(first) + 1, "stack")
    return cat([unsqueeze(t, dim) for t in tensors], dim)


def hstack(tensors):
    return cat(tensors, 0 if tensors[0].ndim == 1 else 1)


def vstack(tensors):
    return cat([t if t.ndim > 1 else unsqueeze(t, 0) for t in tensors], 0)


def narrow(input, dim, start, length):
    dim = _dim(dim, input.ndim, "narrow")
    start = int(start) % input.shape[dim] if int(start) < 0 else int(start)
    return _slice_axis(input, dim, start, start + int(length))


def _slice_axis(input, axis, start, stop, step=1):
    shape = tuple(input.shape)
    if not 0 <= start <= stop <= shape[axis]:
        raise IndexError(f"slice [{start}:{stop}] is out of range for dim {axis} of size {shape[axis]}")
    if start == 0 and stop == shape[axis] and step == 1:
        return same_view(input)
    starts = [0] * len(shape)
    stops = list(shape)
    steps = [1] * len(shape)
    starts[axis], stops[axis], steps[axis] = start, stop, step
    return P["slice"].bind(input, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


def split(input, split_size_or_sections, dim=0):
    dim = _dim(dim, input.ndim, "split")
    size = input.shape[dim]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        bounds = [(i, min(i + step, size)) for i in range(0, size, step)] or [(0, 0)]
    else:
        sections = list(split_size_or_sections)
        if sum(sections) != size:
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {size} "
                               f"(input tensor's size at dimension {dim}), but got split_sizes={sections}")
        bounds, start = [], 0
        for s in sections:
            bounds.append((start, start + s))
            start += s
    name = "Split" if isinstance(split_size_or_sections, int) else "SplitWithSizes"
    return _multi_output_views(tuple(_slice_axis(input, dim, lo, hi) for lo, hi in bounds), name)


def chunk(input, chunks, dim=0):
    size = input.shape[_dim(dim, input.ndim, "chunk")]
    step = -(-size // chunks)
    return split(input, max(step, 1), dim)


def unbind(input, dim=0):
    dim = _dim(dim, input.ndim, "unbind")
    return _multi_output_views(tuple(squeeze(_slice_axis(input, dim, i, i + 1), dim)
                                     for i in range(input.shape[dim])), "Unbind")


def _multi_output_views(pieces, op_name):
    """PyTorch refuses in-place ops that autograd records on the outputs of split, chunk and
    unbind (one backward node serves them all); mark them so (see Tensor._check_view_rebase)."""
    if STATE.grad_enabled:
        mark_multi_output(pieces, op_name)
    return pieces


def flip(input, dims):
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    return P["flip"].bind(input, axes=tuple(_dim(d, input.ndim, "flip") for d in dims))


def fliplr(input):
    if input.ndim < 2:
        raise RuntimeError("Input must be >= 2-d.")
    return flip(input, (1,))


def flipud(input):
    if input.ndim < 1:
        raise RuntimeError("Input must be >= 1-d.")
    return flip(input, (0,))


def roll(input, shifts, dims=None):
    if dims is None:
        return reshape(roll(flatten(input), shifts, 0), tuple(input.shape))
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    out = input
    for shift, dim in zip(shifts, dims):
        dim = _dim(dim, input.ndim, "roll")
        size = input.shape[dim]
        shift %= size
        if shift:
            out = cat([_slice_axis(out, dim, size - shift, size), _slice_axis(out, dim, 0, size - shift)], dim)
    return out


def gather(input, dim, index, sparse_grad=False):
    axis = _dim(dim, input.ndim, "gather")
    index = _no_negative_indices(index, input.shape[axis] if input.ndim else 1, "gather", axis)
    out = P["gather"].bind(input, index, axis=axis)
    return saves_like_pytorch(out, (input,))  # GatherBackward saves the input (and the index)


def take_along_dim(input, indices, dim):
    return gather(input, dim, indices)


def index_select(input, dim, index):
    """input's slices at `index` along `dim`. A negative index is out of range, as in torch."""
    axis = _dim(dim, input.ndim, "index_select")
    return P["take"].bind(input, _no_negative_indices(index, input.shape[axis] if input.ndim else 1,
                                                      "index_select", axis), axis=axis)


def _no_negative_indices(index, size, op, axis):
    """`index` whose negative entries are refused, as torch's index_select and gather do (the
    take and gather primitives wrap them, as Python indexing does): eagerly with torch's words,
    and in compiled code by sending them past the end, where the primitive's bounds check fails."""
    if not isinstance(index, Tensor) or index.dtype.category != 1:
        return index
    if STATE.recorder is None:
        values = index._data
        if values.size and values.min() < 0:
            raise IndexError(f"{op}(): index {int(values.min())} is out of range in self (dim {axis} of size {size})")
        return index
    from .math_ops import lt, where
    return where(lt(index, 0), size, index)


def scatter_add(input, dim, index, src):
    return P["scatter_add"].bind(input, index, src, axis=_dim(dim, input.ndim, "scatter_add"))


def scatter(input, dim, index, src=None, value=None, reduce=None):
    """out = input, then out[..., index[i, j], ...] = src[i, j] along `dim` (torch.scatter),
    as one index_put on the flattened tensor. `src` may be a tensor or a number."""
    if reduce is not None:
        if reduce != "add":
            raise RuntimeError(f"scatter: reduce={reduce!r} is not supported; use 'add' or scatter_add")
        src = src if isinstance(src, Tensor) else full_like_shape(index, value if src is None else src, input.dtype)
        return scatter_add(input, dim, index, src)
    dim = _dim(dim, input.ndim, "scatter")
    shape, index_shape = tuple(input.shape), tuple(index.shape)
    if index.ndim != input.ndim or any(i > n for d, (i, n) in enumerate(zip(index_shape, shape)) if d != dim):
        raise RuntimeError(f"scatter: index of shape {list(index_shape)} does not fit input of shape "
                           f"{list(shape)} along dim {dim}")
    if index.numel() and (int(index._data.min()) < 0 or int(index._data.max()) >= shape[dim]):
        bad = int(index._data.min()) if int(index._data.min()) < 0 else int(index._data.max())
        raise IndexError(f"scatter: index {bad} is out of bounds for dimension {dim} with size {shape[dim]}")
    strides = np.cumprod((1,) + shape[:0:-1])[::-1]
    # the flat position of every index element, less the part its value along `dim` adds
    grid = np.indices(index_shape, sparse=True)
    base = sum(grid[d] * int(strides[d]) for d in range(input.ndim) if d != dim) + np.zeros(index_shape, np.int64)
    from .math_ops import add, mul, to_dtype
    flat_index = reshape(add(Tensor._wrap(base.astype(np.int64)), mul(to_dtype(index, dtypes.int64), int(strides[dim]))),
                         (-1,))
    if isinstance(src, Tensor):
        values = src[tuple(slice(0, n) for n in index_shape)] if tuple(src.shape) != index_shape else src
        values = to_dtype(values, input.dtype)
    else:
        values = full_like_shape(index, value if src is None else src, input.dtype)
    out = P["index_put"].bind(reshape(input, (-1,)), flat_index, reshape(values, (-1,)), axis=0)
    return reshape(out, shape)


def full_like_shape(like, value, dtype):
    """A constant tensor of `like`'s shape holding `value` (non-differentiable bookkeeping)."""
    return Tensor._wrap(np.full(tuple(like.shape), value, dtype=dtype.np))


def index_add(input, dim, index, source, alpha=1):
    from .math_ops import mul, to_dtype
    source = to_dtype(source if alpha == 1 else mul(source, alpha), input.dtype)
    return P["index_add"].bind(input, index, source, axis=_dim(dim, input.ndim, "index_add"))


@keeps_device
def repeat_interleave(input, repeats=None, dim=None, output_size=None):
    """Repeat each element (or slice along `dim`) `repeats` times; `repeats` may be a tensor."""
    if repeats is None:  # torch.repeat_interleave(repeats): each index repeated
        counts = input
        return Tensor._wrap(np.repeat(np.arange(counts.numel()), counts._data.reshape(-1)).astype(np.int64))
    if dim is None:
        input, dim = flatten(input), 0
    dim = _dim(dim, input.ndim, "repeat_interleave")
    size = input.shape[dim]
    if isinstance(repeats, Tensor) and repeats.numel() != 1:
        from .tensor import _observe
        _observe(repeats, "repeat_interleave counts")
        if repeats.numel() != size:
            raise RuntimeError(f"repeat_interleave: repeats must have the same size as input along dim {dim}: "
                               f"{repeats.numel()} vs {size}")
        index = np.repeat(np.arange(size), repeats._data.reshape(-1)).astype(np.int64)
        return P["take"].bind(input, Tensor._wrap(index), axis=dim)
    times = int(repeats)
    shape = tuple(input.shape)
    x = unsqueeze(input, dim + 1)
    x = expand(x, shape[:dim + 1] + (times,) + shape[dim + 1:])
    return reshape(x, shape[:dim] + (size * times,) + shape[dim + 1:])


def diag(input, diagonal=0):
    """A vector becomes a square matrix with it on the `diagonal`; a matrix gives that diagonal."""
    if input.ndim == 1:
        n, k = input.shape[0], int(diagonal)
        m = n + abs(k)
        # the vector spread out by m zeros lands on the diagonal of the flattened m x m matrix
        lo = k if k >= 0 else -k * m
        used = n + (n - 1) * m if n else 0
        spread = P["pad"].bind(input, lo=(lo,), hi=(m * m - lo - used,), interior=(m,), value=0)
        return reshape(spread, (m, m))
    if input.ndim != 2:
        raise RuntimeError(f"diag: expected a 1-D or 2-D tensor, got shape {list(input.shape)}")
    rows, cols = input.shape
    k = int(diagonal)
    count = max(0, min(rows, cols - k) if k >= 0 else min(rows + k, cols))
    start = k if k >= 0 else -k * cols
    flat = reshape(input, (-1,))
    if not count:
        return _slice_axis(flat, 0, 0, 0)
    return _slice_axis(flat, 0, start, start + (count - 1) * (cols + 1) + 1, cols + 1)


def contiguous(input, memory_format=None):
    if input._data.flags.c_contiguous:
        return input
    # a row-major copy (convert to its own dtype copies in C order): a reshape could give back a
    # view of the same strided memory (numpy drops a size-1 dim without copying)
    return P["convert"].bind(input, dtype=input.dtype.name)


def _triangle_mask(input, diagonal, lower):
    """j - i <= diagonal (lower) or >= diagonal, built from aranges: in a compiled program of
    dynamic sizes, a mask of any size (frontend/dynamic_shapes.py)."""
    from .creation import arange
    from . import math_ops as M
    rows, cols = input.shape[-2], input.shape[-1]
    offsets = M.sub(arange(cols).reshape(1, cols), arange(rows).reshape(rows, 1))
    return M.le(offsets, diagonal) if lower else M.ge(offsets, diagonal)


def tril(input, diagonal=0):
    from .math_ops import where
    return where(_triangle_mask(input, diagonal, True), input, 0)


def triu(input, diagonal=0):
    from .math_ops import where
    return where(_triangle_mask(input, diagonal, False), input, 0)


def select(input, dim, index):
    """The slice at `index` along `dim`, without that dim: a view, as torch.select."""
    dim = _dim(dim, input.ndim, "select")
    size = input.shape[dim]
    if not -size <= index < size:
        raise IndexError(f"select(): index {index} out of range for tensor of size {list(input.shape)} at "
                         f"dimension {dim}")
    return input[(slice(None),) * dim + (int(index),)]


def diagonal(input, offset=0, dim1=0, dim2=1):
    """input[..., i, i + offset] over dims dim1 and dim2, that new dim last: a view of input's
    memory, as torch.diagonal. ember makes that view where the two dims are adjacent in a
    contiguous tensor (a strided slice of them flattened) and refuses the rest rather than
    return a copy that later writes would not reach."""
    dim1, dim2 = _dim(dim1, input.ndim, "diagonal"), _dim(dim2, input.ndim, "diagonal")
    if dim1 == dim2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    if dim1 > dim2:
        dim1, dim2, offset = dim2, dim1, -offset
    if dim2 != dim1 + 1 or not input._data.flags.c_contiguous:
        raise NotImplementedError(f"diagonal(dim1={dim1}, dim2={dim2}) of {list(input.shape)}: ember makes the "
                                  f"diagonal view only over two adjacent dims of a contiguous tensor; use "
                                  f"x.movedim(({dim1}, {dim2}), (-2, -1)).contiguous().diagonal(offset, -2, -1) (a copy)")
    rows, cols = input.shape[dim1], input.shape[dim2]
    count = max(0, min(rows, cols - offset) if offset >= 0 else min(rows + offset, cols))
    start = offset if offset >= 0 else -offset * cols
    lead, tail = tuple(input.shape[:dim1]), tuple(input.shape[dim2 + 1:])
    flat = reshape(input, lead + (rows * cols,) + tail)
    stop = start + (count - 1) * (cols + 1) + 1 if count else start
    taken = _slice_axis(flat, dim1, start if count else 0, stop if count else 0, cols + 1)
    return movedim(taken, dim1, -1) if tail else taken

