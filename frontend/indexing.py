"""Indexing and index assignment: ints, slices, None, Ellipsis, integer tensors, boolean masks.

Plain eager reads and writes use numpy's indexing directly (same semantics as PyTorch).
When autograd or a tracer records, a key is lowered to primitives: one `slice` plus one
`reshape` for the basic part, `take` for integer tensors (masks become their indices), and
`slice_update` / `index_put` / `where` for assignment, applied through the in-place rules.
"""
import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from .dispatch import STATE
from .tensor import Tensor, _observe
from .math_ops import promote_operands, to_dtype, where, constant


def _numpy_key(key):
    if isinstance(key, tuple):
        return tuple(_numpy_key(k) for k in key)
    if isinstance(key, Tensor):
        return key._data
    if isinstance(key, list) and any(isinstance(k, Tensor) for k in key):
        return np.asarray([k._data if isinstance(k, Tensor) else k for k in key])
    return key


def _recording(*tensors):
    return STATE.recorder is not None or (STATE.grad_enabled and any(
        isinstance(t, Tensor) and t.requires_grad for t in tensors))


def getitem(x, key):
    if not _recording(x):
        try:
            return Tensor._wrap(np.asarray(x._data[_numpy_key(key)]))
        except IndexError as error:
            raise IndexError(f"{error} (indexing a tensor of shape {list(x.shape)})") from None
    return _lowered_getitem(x, key)


def _expand_key(x, key):
    """Split a key into per-dim entries; Ellipsis expanded; bool masks turned into indices."""
    if not isinstance(key, tuple):
        key = (key,)
    entries = []
    for k in key:
        if isinstance(k, list):
            k = Tensor._wrap(np.asarray(k))
        if isinstance(k, np.ndarray):
            k = Tensor._wrap(k)
        if isinstance(k, Tensor) and k.dtype is dtypes.bool_:
            _observe(k, "a boolean mask index")
            entries.extend(Tensor._wrap(i) for i in np.nonzero(k._data))
            continue
        entries.append(k)
    used = sum(1 for k in entries if k is not None and k is not Ellipsis)
    ellipses = [i for i, k in enumerate(entries) if k is Ellipsis]
    if len(ellipses) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if used > x.ndim:
        raise IndexError(f"too many indices for tensor of dimension {x.ndim}")
    if ellipses:
        at = ellipses[0]
        entries[at:at + 1] = [slice(None)] * (x.ndim - used)
    else:
        entries += [slice(None)] * (x.ndim - used)
    return entries


def _basic_plan(x, entries):
    """starts/stops/steps over x's dims, the shape after dropping int dims and adding None
    dims, and the advanced (tensor) entries with their positions in that result."""
    shape = tuple(x.shape)
    starts, stops, steps, out_shape, advanced = [], [], [], [], []
    dim = 0
    for k in entries:
        if k is None:
            out_shape.append(1)
            continue
        size = shape[dim]
        if isinstance(k, slice):
            if k.step is not None and int(k.step) <= 0:
                raise ValueError("step must be greater than zero")
            lo, hi, st = k.indices(size)
            hi = max(hi, lo)
            starts.append(lo), stops.append(hi), steps.append(st)
            out_shape.append(len(range(lo, hi, st)))
        elif isinstance(k, Tensor):
            starts.append(0), stops.append(size), steps.append(1)
            advanced.append((len(out_shape), k))
            out_shape.append(size)
        else:
            i = int(k)
            if not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for dimension {dim} with size {size}")
            i %= size
            starts.append(i), stops.append(i + 1), steps.append(1)
        dim += 1
    return starts, stops, steps, tuple(out_shape), advanced


def _lowered_getitem(x, key):
    entries = _expand_key(x, key)
    starts, stops, steps, out_shape, advanced = _basic_plan(x, entries)
    out = x
    if (starts, stops, steps) != ([0] * x.ndim, list(x.shape), [1] * x.ndim):
        out = P["slice"].bind(x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    if tuple(out.shape) != out_shape:
        out = P["reshape"].bind(out, shape=out_shape)
    if advanced:
        out = _take_advanced(out, advanced)
    return out


def _index_tensor(index, size):
    if index.dtype.category != 1:
        raise IndexError(f"tensors used as indices must be long, int or bool tensors, got {index.dtype}")
    index = to_dtype(index, dtypes.int64)
    if index.numel():
        _check_bounds(index, size)
    return index


def _check_bounds(index, size):
    data = index._data
    if data.max() >= size or data.min() < -size:
        bad = int(data.max()) if data.max() >= size else int(data.min())
        raise IndexError(f"index {bad} is out of bounds for dimension with size {size}")


def _take_advanced(x, advanced):
    """numpy's rule: adjacent index tensors keep their place, separated ones go first."""
    positions = [p for p, _ in advanced]
    shape = tuple(x.shape)
    indices = [_index_tensor(t, shape[p]) for p, t in advanced]
    if len(indices) == 1:
        return P["take"].bind(x, indices[0], axis=positions[0])
    from .shape_ops import broadcast_tensors, permute, reshape, movedim
    indices = broadcast_tensors(*indices)
    rest = [i for i in range(len(shape)) if i not in positions]
    moved = permute(x, positions + rest)
    flat = reshape(moved, (-1,) + tuple(shape[i] for i in rest))
    linear = None
    for p, idx in zip(positions, indices):
        idx = where(P["lt"].bind(idx, constant(0, dtypes.int64)), idx + shape[p], idx)
        linear = idx if linear is None else linear * shape[p] + idx
    out = P["take"].bind(flat, linear, axis=0)
    adjacent = positions == list(range(positions[0], positions[0] + len(positions)))
    if adjacent and positions[0] != 0:
        nd = linear.ndim
        out = movedim(out, list(range(nd)), list(range(positions[0], positions[0] + nd)))
    return out


# ----------------------------------------------------------------------------- assignment

def setitem(x, key, value):
    if isinstance(value, (list, tuple)):
        value = Tensor._wrap(np.asarray(value, dtype=x._data.dtype))
    if not _recording(x, value):
        if x.requires_grad and x.grad_fn is None and STATE.grad_enabled:
            x._inplace(lambda cur: cur, "index assignment")  # raises the leaf error
        if not x._data.flags.writeable:
            x._data = np.array(x._data)
        x._data[_numpy_key(key)] = value._data if isinstance(value, Tensor) else value
        x._version += 1
        return
    x._inplace(lambda current: _functional_setitem(current, key, value), "index assignment")


def _functional_setitem(x, key, value):
    (value,) = promote_operands((value,)) if not isinstance(value, Tensor) else (value,)
    value = to_dtype(value, x.dtype)
    if isinstance(key, Tensor) and key.dtype is dtypes.bool_ and tuple(key.shape) == tuple(x.shape) \
            and value.numel() == 1:
        return where(key, value.reshape(()), x)
    entries = _expand_key(x, key)
    starts, stops, steps, out_shape, advanced = _basic_plan(x, entries)
    from .shape_ops import expand, reshape
    if not advanced:
        region = tuple(len(range(a, b, c)) for a, b, c in zip(starts, stops, steps))
        v = expand(value, out_shape) if tuple(value.shape) != out_shape else value
        v = reshape(v, region)
        return P["slice_update"].bind(x, v, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    if len(advanced) == 1 and all(st == 1 and lo == 0 and hi == d for lo, hi, st, d
                                  in zip(starts, stops, steps, x.shape)) and len(out_shape) == x.ndim:
        position, index = advanced[0]
        index = _index_tensor(index, x.shape[position])
        target = tuple(x.shape[:position]) + tuple(index.shape) + tuple(x.shape[position + 1:])
        return P["index_put"].bind(x, index, expand(value, target), axis=position)
    raise IndexError("this combination of index tensors and slices cannot be assigned to while "
                     "recording gradients; assign inside `with ember.no_grad():` or index one dim at a time")


def nonzero(input, as_tuple=False):
    _observe(input, "nonzero()")
    found = np.nonzero(input._data)
    if as_tuple:
        return tuple(Tensor._wrap(i.astype(np.int64)) for i in found)
    return Tensor._wrap(np.stack(found, axis=1).astype(np.int64) if found else np.zeros((0, 0), np.int64))


def masked_fill(input, mask, value):
    return where(to_dtype(mask, dtypes.bool_), value, input)


def masked_select(input, mask):
    from .shape_ops import expand
    mask = expand(mask, tuple(np.broadcast_shapes(tuple(input.shape), tuple(mask.shape))))
    return getitem(expand(input, tuple(mask.shape)), mask)
