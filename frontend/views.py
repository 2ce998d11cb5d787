"""Aliasing: which tensors share memory, how each view was derived, and one version counter.

The model is PyTorch's. A view (the result of a view primitive such as reshape, permute,
slice or expand, or of basic indexing) records its root `_base` and the chain of steps that
derives it from that root, a replayable view function; `detach()` and `.data` give aliases of
the root that autograd does not connect. A root and its views share one `VersionCounter`
(`.data` gets its own, as in PyTorch), bumped by every in-place write. Eager autograd checks the
versions of what it saved; `Tensor._inplace` writes through views and rebases autograd history
onto the root (CopySlices); the tracer uses the same chains to functionalize writes
(`scatter_into_base`) and to regenerate live views after one. A write also invalidates the
history of views PyTorch cannot re-derive (`bump_version`), and `refuse_overlap` applies
PyTorch's checks of an in-place op's operands against the memory it writes.
"""
import weakref

import numpy as np

from ember.runtime.device_arrays import DeviceBuffer
from .dispatch import STATE


class VersionCounter:
    """Counts in-place writes to one piece of memory; shared by a root and its views. `shared`
    turns True once a view or alias takes the counter: only then can a write affect another
    tensor's history (a plain tensor's write checks no views)."""

    __slots__ = ("value", "shared")

    def __init__(self):
        self.value = 0
        self.shared = False


def version_counter(tensor):
    counter = tensor._vc
    if counter is None:
        counter = tensor._vc = VersionCounter()
    return counter


def wrote_in_place(tensor):
    """An in-place op that found nothing to write (x[:] = x, a copy_ of the same memory): the
    version still moves, as in PyTorch, and a tracer learns that saved values may be stale."""
    bump_version(tensor)
    if STATE.recorder is not None:
        STATE.recorder.wrote = True


def bump_version(tensor):
    """Record an in-place write into `tensor`'s memory (every writer calls this)."""
    counter = version_counter(tensor)
    counter.value += 1
    if counter.shared:
        _invalidate_views(tensor, counter)


def _invalidate_views(written, counter):
    """PyTorch re-derives a view's history after a write to its memory, except for the views whose
    history it cannot re-derive: the outputs of split, chunk and unbind (one node serves them all)
    and views made under no_grad (they have none). Those become `StaleView`s: reading their history
    raises PyTorch's error, so that using them in grad mode, or backward through them, fails."""
    for alias in live_aliases(written._base if written._base is not None else written):
        if alias._creation is not None and alias._vc is counter and not alias._detached:
            from .tensor import Tensor, StaleView
            if type(alias) is Tensor:
                alias.__class__ = StaleView


class ViewStep:
    """One step of a view's derivation: a view primitive and its attrs."""

    __slots__ = ("prim", "attrs")

    def __init__(self, prim, attrs):
        self.prim, self.attrs = prim, attrs

    def apply(self, tensor):
        return self.prim.bind(tensor, **self.attrs)

    def apply_array(self, array):
        return self.prim.impl(array, **self.attrs)

    def writable_through(self):
        """Does the primitive say how a write through it changes its input? (Views that repeat
        elements, expand and unfold, do not: see _scatter_by_position.)"""
        return self.prim.view_update is not None

    def update(self, base, new_view):
        """`base` with this step's view of it replaced by `new_view` (in primitives)."""
        return self.prim.view_update(base, new_view, **self.attrs)

    def __eq__(self, other):
        return type(other) is ViewStep and other.prim is self.prim and other.attrs == self.attrs

    def __repr__(self):
        return f"{self.prim.name}({self.attrs})"


class IndexStep:
    """A basic-indexing step (ints, slices, None, Ellipsis): `t[key]` as eager indexing takes it."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def apply(self, tensor):
        from .indexing import lowered_getitem
        return lowered_getitem(tensor, self.key)

    def apply_array(self, array):
        from .indexing import basic_view_array
        return basic_view_array(array, self.key)

    def writable_through(self):
        return True

    def update(self, base, new_view):
        from .indexing import functional_setitem
        return functional_setitem(base, self.key, new_view)

    def __eq__(self, other):
        return type(other) is IndexStep and other.key == self.key

    def __repr__(self):
        return f"index({self.key!r})"


# ----------------------------------------------------------------------------- registering aliases

def register_view(view, source, step):
    """`view` was derived from `source` by `step` and shares its memory."""
    root = source._base if source._base is not None else source
    view._base = root
    view._view_chain = source._view_chain + (step,)
    view._vc = counter = version_counter(source)
    counter.shared = True
    if source._detached:
        view._detached = True
    if not STATE.grad_enabled:  # (as PyTorch: the mode a view is made in replaces what it inherits)
        view._creation = "no_grad"
        if source.requires_grad:
            view.requires_grad = True  # as PyTorch: a view of a tensor that requires grad does, with no history
    elif source._creation is not None:
        view._creation = source._creation
    _remember(root, view)


def make_alias(source, share_version):
    """A tensor over `source`'s memory with no autograd link: `detach()` (same version counter)
    or `.data` (a counter of its own, so its writes go unseen by autograd, as in PyTorch)."""
    from .tensor import Tensor
    alias = Tensor._wrap(source._data)
    root = source._base if source._base is not None else source
    alias._base = root
    alias._view_chain = source._view_chain
    alias._detached = True
    if share_version:
        alias._vc = counter = version_counter(source)
        counter.shared = True
    _remember(root, alias)
    return alias


def mark_multi_output(pieces, op_name):
    """The views `op_name` (split, chunk, unbind) returns, as PyTorch marks them: in-place ops
    that autograd would record are refused on them, and a write to their memory invalidates
    their history (one backward node serves all of them, so none can be re-derived alone)."""
    for number, piece in enumerate(pieces):
        if piece._base is not None and STATE.grad_enabled:  # (under no_grad they are no_grad views)
            piece._creation = "multi_output"
            piece._output_nr, piece._created_by = number, op_name
    return pieces


_PRUNE_AT = 64


def _remember(root, alias):
    aliases = root._aliases  # (an attribute, not root.__dict__: reading __dict__ slows every later access)
    if aliases is None:
        aliases = root._aliases = {}
    elif len(aliases) >= _PRUNE_AT:  # forget the dead ones now and then
        for key in [k for k, ref in aliases.items() if ref() is None]:
            del aliases[key]
    aliases[id(alias)] = weakref.ref(alias)


def live_aliases(root):
    """The live tensors derived from `root` (views and detached aliases), not `root` itself."""
    aliases = root._aliases
    if not aliases:
        return []
    found = []
    for key, ref in list(aliases.items()):
        tensor = ref()
        if tensor is None:
            del aliases[key]
        elif tensor._base is root:
            found.append(tensor)
    return found


def chain_suffix(chain, prefix):
    """`chain` less `prefix` when `prefix` starts it, else None."""
    if len(prefix) > len(chain) or chain[:len(prefix)] != prefix:
        return None
    return chain[len(prefix):]


# ----------------------------------------------------------------------------- replaying and writing

def replay(chain, tensor):
    """Apply a view chain to `tensor` through the dispatcher (recorded like any op)."""
    for step in chain:
        tensor = step.apply(tensor)
    return tensor


def replay_array(chain, array):
    for step in chain:
        array = step.apply_array(array)
    return array


def scatter_into_base(base, chain, new_view):
    """`base` with `replay(chain, base)` replaced by `new_view`: the functional form of a
    write through a view, built from the view primitives' update rules."""
    if not chain:
        return new_view
    step = chain[0]
    if not step.writable_through():
        return _scatter_by_position(base, chain, new_view)
    inner = step.apply(base)
    return step.update(base, scatter_into_base(inner, chain[1:], new_view))


def _scatter_by_position(base, chain, new_view):
    """The write through a chain with a step that repeats elements (expand): which element of
    `base` each element of the view is, found by replaying the chain on the positions
    0..n-1, and an index_put of the view's values there. Where several view elements are one
    base element, the writes PyTorch allows give them one value (fill_, a copy of the same
    memory); the first is taken."""
    from ember.ops import PRIMITIVES
    from .tensor import Tensor
    positions = np.arange(int(np.prod(base.shape)), dtype=np.int64).reshape(base.shape)
    for step in chain:
        positions = step.apply_array(positions)
    positions, first = np.unique(np.asarray(positions).reshape(-1), return_index=True)
    values = PRIMITIVES["reshape"].bind(new_view, shape=(int(np.prod(new_view.shape)),))
    if len(first) != values.shape[0]:
        values = PRIMITIVES["take"].bind(values, Tensor._wrap(first.astype(np.int64)), axis=0)
    flat = PRIMITIVES["reshape"].bind(base, shape=(int(np.prod(base.shape)),))
    updated = PRIMITIVES["index_put"].bind(flat, Tensor._wrap(positions), values, axis=0)
    return PRIMITIVES["reshape"].bind(updated, shape=tuple(base.shape))


def has_internal_overlap(array):
    """Do two elements of `array` share memory (an expanded or sliding-window view)? (An empty
    array has no two elements.)"""
    if array.size == 0:
        return False
    strides = [abs(s) for s, n in zip(array.strides, array.shape) if n > 1]
    if not strides:
        return False
    if 0 in strides:
        return True
    if array.flags.c_contiguous or array.flags.f_contiguous:
        return False
    # a dimension's stride must exceed the extent of all smaller-stride dimensions
    dims = sorted((abs(s), n) for s, n in zip(array.strides, array.shape) if n > 1)
    extent = array.itemsize
    for stride, n in dims:
        if stride < extent:
            return True
        extent = stride * (n - 1) + extent
    return False


def writable(array):
    """`array` if numpy lets it be written; else, when its memory can be written, the same
    elements made writable (numpy's broadcast_to views are read-only, PyTorch writes through an
    expand); else None. Only a target to write into: its `.base` does not lead to the owner."""
    if array.flags.writeable:
        return array
    owner = memory_owner(array)
    if not (isinstance(owner, np.ndarray) and owner.flags.writeable or isinstance(owner, DeviceBuffer)):
        return None
    interface = dict(array.__array_interface__)
    interface["data"] = (interface["data"][0], False)  # (address, read-only)
    return np.asarray(_Memory(interface, owner))


class _Memory:
    """An array interface over memory `owner` holds (numpy keeps this object, and so the owner, alive)."""

    def __init__(self, interface, owner):
        self.__array_interface__ = interface
        self.owner = owner


def root_of(tensor):
    """The tensor whose memory a view reads (the tensor itself when it is no view)."""
    return tensor if tensor._base is None else tensor._base


def memory_owner(array):
    """The object owning an array's memory (numpy keeps views' `.base` pointing at it)."""
    base = array.base
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if base is not None and not isinstance(base, np.ndarray):
        inner = getattr(base, "base", None)  # numpy's as_strided holds its source in a DummyArray
        if isinstance(inner, np.ndarray):
            return memory_owner(inner)
    return array if base is None else base


# ----------------------------------------------------------------------------- operands overlapping the output

def refuse_overlap(target, operand, op_name, refuse_full=False, operand_strides=None):
    """PyTorch's check of an in-place op's operand against the tensor it writes: an operand
    that shares some, but not all, of the written memory (`x[1:].copy_(x[:-1])`,
    `x.add_(x.t())`) is refused, since the result would depend on the order of reads and
    writes; the same memory read as written (`y.mul_(y)`) is allowed. Index ops (index_add_,
    scatter_) refuse any overlap (`refuse_full`). As at::get_overlap_status, tensors that are
    not dense are not compared. `operand_strides`: the operand's strides as PyTorch has them,
    where numpy's differ (an expanded value), compared exactly."""
    a, b = target._data, operand._data
    if a is b:
        overlap = "full"
    elif a.base is None and b.base is None:
        return  # two arrays that each own their memory
    elif memory_owner(a) is not memory_owner(b) or not a.size or not b.size:
        return
    elif not (_non_overlapping_and_dense(a) and _non_overlapping_and_dense(b)):
        return  # PyTorch's "too hard": not checked
    else:
        a_begin, b_begin = a.__array_interface__["data"][0], b.__array_interface__["data"][0]
        a_end, b_end = a_begin + a.nbytes, b_begin + b.nbytes
        if a_begin == b_begin and a_end == b_end:
            same = a.strides == operand_strides if operand_strides is not None else _same_strides(a, b)
            overlap = "full" if same else "partial"
        elif a_begin < b_end and b_begin < a_end:
            overlap = "partial"
        else:
            return
    if overlap == "partial" or refuse_full:
        raise RuntimeError(
            f"{op_name}: unsupported operation: some elements of the input tensor and the written-to tensor "
            f"refer to a single memory location. Please clone() the tensor before performing the operation. "
            f"(written-to: {_geometry(target)}; input: {_geometry(operand)})")


def same_elements(a, b, b_strides=None):
    """Do arrays `a` and `b` (b broadcast to a's shape) hold the same elements at the same
    addresses, in the same dtype? PyTorch's copy_ then returns at once: nothing to write.
    `b_strides`: b's strides as PyTorch has them (an expanded value), compared exactly."""
    if a.dtype != b.dtype or memory_owner(a) is not memory_owner(b):
        return False
    if b.shape != a.shape:
        try:
            b = np.broadcast_to(b, a.shape)
        except ValueError:
            return False
    if b_strides is not None:
        return a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.strides == b_strides
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and all(sa == sb for sa, sb, n in zip(a.strides, b.strides, a.shape) if n != 1 or (sa and sb)))
    # (PyTorch compares size-1 dims' strides too; numpy's 0 there may stand for a dense one)


def _same_strides(a, b):
    """PyTorch compares the strides, those of size-1 dims too; numpy gives a size-1 dim stride 0
    where PyTorch keeps a dense one (expand, a new axis), so a 0 there is not compared."""
    return a.ndim == b.ndim and all(sa == sb for sa, sb, na, nb in zip(a.strides, b.strides, a.shape, b.shape)
                                    if na != 1 or nb != 1 or (sa and sb))


def _non_overlapping_and_dense(array):
    """Do the elements fill a block of memory exactly, in some order of the dimensions?"""
    if array.flags.c_contiguous or array.flags.f_contiguous:
        return True
    expected = array.itemsize
    for stride, size in sorted((s, n) for s, n in zip(array.strides, array.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _geometry(tensor):
    data = tensor._data
    return (f"shape {list(data.shape)}, strides {[s // data.itemsize for s in data.strides]}, "
            f"storage offset {tensor.storage_offset()}")
