"""Indexing and index assignment: ints, slices, None, Ellipsis, integer tensors, boolean masks.

Plain eager reads and writes use numpy's indexing directly (same semantics as PyTorch).
When autograd or a tracer records, a key is lowered to primitives: one `slice` plus one
`reshape` for the basic part, `take` for integer tensors (masks become their indices), and
`slice_update` / `index_put` / `where` for assignment, applied through the in-place rules.
"""
import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from ember.runtime import device_arrays
from .dispatch import STATE
from .tensor import Tensor, _observe, internal_overlap_error, leaf_view_write_error
from .math_ops import promote_operands, to_dtype, where, constant
from .views import (IndexStep, bump_version, has_internal_overlap, refuse_overlap, register_view, same_elements,
                    writable, wrote_in_place)
from .device_tensors import keeps_device


def _numpy_key(key):
    if isinstance(key, tuple):
        return tuple(_numpy_key(k) for k in key)
    if isinstance(key, Tensor):
        return key._data
    if isinstance(key, list) and any(isinstance(k, Tensor) for k in key):
        return np.asarray([k._data if isinstance(k, Tensor) else k for k in key])
    return key


def _is_int(k):
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


def _is_advanced(k):
    return isinstance(k, (np.ndarray, list))


def _mixes_integers_and_arrays(key):
    """Does a (numpy) key hold both an integer and an index array? Cheap for the usual keys."""
    kinds = {type(k) for k in key}
    return (np.ndarray in kinds or list in kinds) and any(issubclass(t, (int, np.integer)) and t is not bool
                                                          for t in kinds)


def _integers_first(key):
    """PyTorch selects integer indices before advanced indexing, so `x[1, :, idx]` is
    `x[1][:, idx]`; numpy treats the integer as one more advanced index, which moves the
    indexed dims to the front. Split such a key into a basic part and an advanced part."""
    basic, advanced = [], []
    for k in key:
        if _is_int(k):
            basic.append(k)
        elif _is_advanced(k):
            dims = np.ndim(k) if np.asarray(k).dtype == bool else 1
            basic.extend([slice(None)] * dims)
            advanced.append(k)
        elif k is None:
            basic.append(None)
            advanced.append(slice(None))
        else:  # a slice or Ellipsis
            basic.append(k)
            advanced.append(k if k is Ellipsis else slice(None))
    return tuple(basic), tuple(advanced)


def _recording(*tensors):
    return STATE.recorder is not None or (STATE.grad_enabled and any(
        isinstance(t, Tensor) and t.requires_grad for t in tensors))


def getitem(x, key):
    if device_arrays.in_use and not x.is_cuda and any(isinstance(k, Tensor) and k.is_cuda for k in
                                                      (key if isinstance(key, tuple) else (key,))):
        raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
    if not _recording(x) and not x.is_cuda:  # (on a device: the primitives, which run there)
        key = _numpy_key(key)
        try:
            if type(key) is tuple and _mixes_integers_and_arrays(key):
                basic, advanced = _integers_first(key)
                return Tensor._wrap(np.asarray(x._data[basic][advanced]))
            if _is_basic(key):  # a view, as in PyTorch (x[0] of a vector too: a 0-d view)
                view = Tensor._wrap(basic_view_array(x._data, key))
                register_view(view, x, IndexStep(key))
                return view
            return Tensor._wrap(np.asarray(x._data[key]))
        except IndexError as error:
            raise _index_error(error, x, "indexing") from None
    try:
        return lowered_getitem(x, key)
    except IndexError as error:
        raise _index_error(error, x, "indexing") from None


def basic_view_array(array, key):
    """numpy's view for a basic key; an int for every dim still gives a 0-d view, not a scalar."""
    entries = key if type(key) is tuple else (key,)
    return array[entries if Ellipsis in entries else entries + (Ellipsis,)]


def _is_basic(key):
    """Ints, slices, None and one Ellipsis only: numpy and PyTorch both return a view."""
    entries = key if type(key) is tuple else (key,)
    ellipses = 0
    for k in entries:
        if k is Ellipsis:
            ellipses += 1
        elif not (k is None or type(k) is slice or _is_int(k)):
            return False
    return ellipses <= 1


def _index_error(error, x, doing):
    """numpy's wording ('axis') in PyTorch's ('dimension'), with the tensor's shape."""
    message = str(error).replace(" for axis ", " for dimension ")
    return IndexError(f"{message} ({doing} a tensor of shape {list(x.shape)})")


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


def lowered_getitem(x, key):
    entries = _expand_key(x, key)
    starts, stops, steps, out_shape, advanced = _basic_plan(x, entries)
    out = x
    if (starts, stops, steps) != ([0] * x.ndim, list(x.shape), [1] * x.ndim):
        out = P["slice"].bind(x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    if tuple(out.shape) != out_shape or out is x and not advanced:  # (x[:] is a new view too, as in PyTorch)
        out = P["reshape"].bind(out, shape=out_shape)
    if advanced:
        out = _take_advanced(out, advanced)
    return out


def _index_tensor(index, size, dim):
    if index.dtype.category != 1:
        raise IndexError(f"tensors used as indices must be long, int or bool tensors, got {index.dtype}")
    index = to_dtype(index, dtypes.int64)
    if index.numel():
        _check_bounds(index, size, dim)
    return index


def _check_bounds(index, size, dim):
    data = index._data
    if data.max() >= size or data.min() < -size:
        bad = int(data.max()) if data.max() >= size else int(data.min())
        raise IndexError(f"index {bad} is out of bounds for dimension {dim} with size {size}")


class _AdvancedPlan:
    """Index tensors at `positions` of a tensor of `shape`, combined the numpy/PyTorch way:
    their dims are moved to the front and flattened into one, addressed by one `linear`
    index tensor (built from primitives, so it traces). `result_shape` is x[key]'s shape:
    adjacent index tensors keep their place, separated ones go first."""

    def __init__(self, shape, advanced):
        from .shape_ops import broadcast_tensors
        self.shape = shape
        self.positions = [p for p, _ in advanced]
        indices = [_index_tensor(t, shape[p], p) for p, t in advanced]
        if len(indices) > 1:
            indices = broadcast_tensors(*indices)
        self.rest = [i for i in range(len(shape)) if i not in self.positions]
        self.linear = None
        for p, idx in zip(self.positions, indices):
            if len(indices) > 1 and STATE.recorder is not None:
                # traced: each index is checked against its own dim, by a take (which checks its
                # index) of zeros of that dim's size added to it; the zeros are one broadcast
                # scalar, no data (the linear index below stays in range of the flattened dims
                # even when one index is not; eager code checked the values above)
                zeros = P["broadcast_to"].bind(constant(0, dtypes.int64), shape=(shape[p],))
                idx = idx + P["take"].bind(zeros, idx, axis=0)
            if len(indices) > 1:
                idx = where(P["lt"].bind(idx, constant(0, dtypes.int64)), idx + shape[p], idx)
            self.linear = idx if self.linear is None else self.linear * shape[p] + idx
        index_shape = tuple(self.linear.shape)
        first = self.positions[0]
        self.adjacent = self.positions == list(range(first, first + len(self.positions)))
        self.front_shape = index_shape + tuple(shape[i] for i in self.rest)
        if self.adjacent:
            before = tuple(shape[i] for i in self.rest if i < first)
            self.result_shape = before + index_shape + tuple(shape[i] for i in self.rest if i > first)
        else:
            self.result_shape = self.front_shape

    def flattened(self, x):
        """x with the indexed dims moved to the front and flattened into dim 0."""
        from .shape_ops import permute, reshape
        if len(self.positions) == 1:
            return x  # one index tensor addresses its own dim directly
        moved = permute(x, self.positions + self.rest)
        return reshape(moved, (-1,) + tuple(self.shape[i] for i in self.rest))

    def unflattened(self, flat):
        from .shape_ops import permute, reshape
        if len(self.positions) == 1:
            return flat
        order = self.positions + self.rest
        moved = reshape(flat, tuple(self.shape[i] for i in order))
        return permute(moved, [order.index(i) for i in range(len(order))])

    @property
    def axis(self):
        return self.positions[0] if len(self.positions) == 1 else 0

    def to_front(self, result):
        """x[key]-shaped values rearranged to match `flattened` (index dims first)."""
        from .shape_ops import movedim
        if len(self.positions) == 1 or not self.adjacent or self.positions[0] == 0:
            return result
        nd, first = self.linear.ndim, self.positions[0]
        return movedim(result, list(range(first, first + nd)), list(range(nd)))

    def from_front(self, taken):
        from .shape_ops import movedim
        if len(self.positions) == 1 or not self.adjacent or self.positions[0] == 0:
            return taken
        nd, first = self.linear.ndim, self.positions[0]
        return movedim(taken, list(range(nd)), list(range(first, first + nd)))


def _take_advanced(x, advanced):
    plan = _AdvancedPlan(tuple(x.shape), advanced)
    return plan.from_front(P["take"].bind(plan.flattened(x), plan.linear, axis=plan.axis))


def _put_advanced(x, advanced, value):
    plan = _AdvancedPlan(tuple(x.shape), advanced)
    from .shape_ops import expand
    values = plan.to_front(expand(_drop_leading_ones(value, len(plan.result_shape)), plan.result_shape))
    flat = plan.flattened(x)
    return plan.unflattened(P["index_put"].bind(flat, plan.linear, values, axis=plan.axis))


def _drop_leading_ones(value, ndim):
    """Like numpy and PyTorch, a value may carry extra leading dims of size 1."""
    from .shape_ops import reshape
    extra = value.ndim - ndim
    if extra > 0 and all(d == 1 for d in value.shape[:extra]):
        return reshape(value, tuple(value.shape[extra:]))
    return value


# ----------------------------------------------------------------------------- assignment

def setitem(x, key, value):
    if isinstance(value, (list, tuple)):
        value = Tensor._wrap(np.asarray(value, dtype=x._data.dtype))
    grad_mode = STATE.grad_enabled
    if grad_mode and x.requires_grad and x.grad_fn is None and _selects_a_view(x, key):
        # PyTorch writes through the view x[key]: the error names a view of the leaf
        raise leaf_view_write_error("index assignment", _basic_region(x, key).shape, x)
    if isinstance(value, Tensor):
        if _rewrites_its_own_memory(x, key, value):  # as PyTorch's copy_: nothing to write
            x._check_writable("index assignment", grad_mode, internal_overlap=False)  # (its checks stay)
            wrote_in_place(x)
            return
        _refuse_overlapping_value(x, key, value, grad_mode)
    if not _recording(x, value):
        x._check_writable("index assignment", grad_mode, False)  # (internal overlap: of the region)
        key = _numpy_key(key)
        value = value._data if isinstance(value, Tensor) else value
        data = x._data
        if data.ndim and has_internal_overlap(data):
            _refuse_overlapping_region(data, key)
        try:
            try:
                if type(key) is tuple and _mixes_integers_and_arrays(key):
                    _assign(data, key, value)
                else:
                    data[key] = value
            except ValueError:
                if data.flags.writeable:
                    raise
                _assign(writable(data), key, value)  # an expanded tensor: writes its base's memory
        except IndexError as error:
            raise _index_error(error, x, "assigning into") from None
        bump_version(x)
        return
    overlapping = x._data.ndim and has_internal_overlap(x._data)
    if overlapping:  # an expanded tensor: only the region written must not overlap
        numpy_key = _numpy_key(key)
        _refuse_overlapping_region(x._data, numpy_key)
        if _is_basic(numpy_key):
            # write through the region's view, so that the write reaches the base's elements
            # under the region (each base element appears several times in x)
            x._check_writable("index assignment", grad_mode, internal_overlap=False)
            region = getitem(x, key)
            try:
                region._inplace(lambda current: functional_setitem(current, Ellipsis, value), "index assignment")
            except IndexError as error:
                raise _index_error(error, x, "assigning into") from None
            return
    try:
        x._inplace(lambda current: functional_setitem(current, key, value), "index assignment",
                   internal_overlap=not overlapping)
    except IndexError as error:
        raise _index_error(error, x, "assigning into") from None


def _assign(array, key, value):
    """array[key] = value, with PyTorch's order for integer and index-array keys."""
    if type(key) is tuple and _mixes_integers_and_arrays(key):
        basic, advanced = _integers_first(key)
        array[basic][advanced] = value  # basic indexing gives a view: this writes the array
    else:
        array[key] = value


def _refuse_overlapping_region(data, key):
    """An expanded tensor may be written where the key selects elements of distinct memory
    (`e[0] = v`), as in PyTorch; index tensors and masks write it too (PyTorch deprecates that)."""
    if _is_basic(key):
        region = basic_view_array(data, key)
        if region.ndim and has_internal_overlap(region):
            raise internal_overlap_error("index assignment", region)


def _rewrites_its_own_memory(x, key, value):
    """`x[key] = value` where the value, expanded to the region x[key], is that region's own
    memory: PyTorch's copy_ returns at once."""
    data = value._data
    if data.base is None and x._data.base is None and data is not x._data:
        return False
    numpy_key = _numpy_key(key)
    if not _is_basic(numpy_key):
        return False
    try:
        region = basic_view_array(x._data, numpy_key)
        strides = _strides_of_torch_expand(data, region.shape)
    except (IndexError, ValueError):
        return False
    return same_elements(region, data, strides)


def _basic_region(x, key):
    """The view of x that PyTorch's setitem writes into: the key's basic part (ints, None,
    slices), index tensors and masks taking whole dims."""
    numpy_key = _numpy_key(key)
    basic, _ = _integers_first(numpy_key if type(numpy_key) is tuple else (numpy_key,))
    return basic_view_array(x._data, basic)


def _selects_a_view(x, key):
    """Does the key's basic part select less than all of x (`x[:]` and `x[...]` are x itself)?"""
    try:
        region, data = _basic_region(x, key), x._data
    except (IndexError, ValueError, TypeError):
        return False  # the assignment raises its own error
    return (region.shape != data.shape or region.strides != data.strides
            or region.__array_interface__["data"][0] != data.__array_interface__["data"][0])


def _refuse_overlapping_value(x, key, value, grad_mode):
    """PyTorch's overlap checks of `x[key] = value`, made after its autograd checks. A basic key
    copies the value, expanded to the region's shape, into the view x[key]: a partial overlap is
    refused, and a 0-d value fills, unchecked. Index tensors put the value into the basic part
    of x, which it may not overlap at all; a mask with a 0-d value fills, unchecked."""
    data = x._data
    if value._data.base is None and data.base is None and value._data is not data:
        return  # the value owns its memory (the usual case)
    numpy_key = _numpy_key(key)
    basic = _is_basic(numpy_key)
    entries = numpy_key if type(numpy_key) is tuple else (numpy_key,)
    if value._data.ndim == 0 and (basic or len(entries) == 1 and np.asarray(entries[0]).dtype == bool):
        return
    x._check_writable("index assignment", grad_mode, internal_overlap=False)
    if data.ndim and has_internal_overlap(data):
        _refuse_overlapping_region(data, numpy_key)
    try:
        region = Tensor._wrap(_basic_region(x, key))
        if not basic:
            refuse_overlap(region, value, "index assignment", refuse_full=True)
            return
        source = value._data
        if source.shape != region.shape:  # PyTorch expands the value: a broadcast dim is not dense
            source = np.broadcast_to(_without_leading_ones(source, region.ndim), region.shape)
        strides = _strides_of_torch_expand(value._data, region.shape)
    except (IndexError, ValueError):
        return  # the assignment itself raises its error
    refuse_overlap(region, value if source is value._data else Tensor._wrap(source), "index assignment",
                   operand_strides=strides)


def _strides_of_torch_expand(array, shape):
    """The strides PyTorch's expand gives `array` expanded to `shape` (its overlap checks compare
    strides): a new leading dim of size 1 gets the dense stride of the dims after it, where
    numpy gives 0; a dim the expand repeats gets 0."""
    source = _without_leading_ones(array, len(shape))
    lead = len(shape) - source.ndim
    if lead < 0:
        raise ValueError("value has more dims than the region")
    strides = [0] * len(shape)
    for i in range(len(shape) - 1, -1, -1):
        j = i - lead
        size = source.shape[j] if j >= 0 else 1
        stride = source.strides[j] if j >= 0 else (strides[i + 1] * shape[i + 1] if i + 1 < len(shape)
                                                     else source.itemsize)
        if size != shape[i]:
            if size != 1:
                raise ValueError(f"cannot expand {source.shape} to {shape}")
            stride = 0
        strides[i] = stride
    return tuple(strides)


def _without_leading_ones(array, ndim):
    extra = array.ndim - ndim
    if extra > 0 and all(d == 1 for d in array.shape[:extra]):
        return array.reshape(array.shape[extra:])
    return array


def functional_setitem(x, key, value):
    """x with x[key] = value, built from primitives: slice_update for the basic part,
    index_put on the flattened indexed dims for index tensors and masks."""
    (value,) = promote_operands((value,)) if not isinstance(value, Tensor) else (value,)
    value = to_dtype(value, x.dtype)
    if isinstance(key, Tensor) and key.dtype is dtypes.bool_ and tuple(key.shape) == tuple(x.shape) \
            and value.numel() == 1:
        return where(key, value.reshape(()), x)
    entries = _expand_key(x, key)
    starts, stops, steps, out_shape, advanced = _basic_plan(x, entries)
    from .shape_ops import expand, reshape
    region_shape = tuple(len(range(a, b, c)) for a, b, c in zip(starts, stops, steps))
    whole = (starts, stops, steps) == ([0] * x.ndim, list(x.shape), [1] * x.ndim)
    if not advanced:
        v = expand(_drop_leading_ones(value, len(out_shape)), out_shape)
        region = reshape(v, region_shape)
    else:
        region = x if whole else P["slice"].bind(x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
        region = reshape(_put_advanced(reshape(region, out_shape), advanced, value), region_shape)
    if whole and advanced:
        return region
    return P["slice_update"].bind(x, region, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


@keeps_device
def nonzero(input, as_tuple=False):
    _observe(input, "nonzero()")
    found = np.nonzero(input._data)
    if as_tuple:
        return tuple(Tensor._wrap(i.astype(np.int64)) for i in found)
    return Tensor._wrap(np.stack(found, axis=1).astype(np.int64) if found else np.zeros((0, 0), np.int64))


@keeps_device
def argwhere(input):
    return nonzero(input)


def masked_fill(input, mask, value):
    return where(to_dtype(mask, dtypes.bool_), value, input)


def masked_select(input, mask):
    from .shape_ops import expand
    mask = expand(mask, tuple(np.broadcast_shapes(tuple(input.shape), tuple(mask.shape))))
    return getitem(expand(input, tuple(mask.shape)), mask)
