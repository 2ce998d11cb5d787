"""Aliasing: which tensors share memory, how each view was derived, and one version counter.

The model is PyTorch's. A view (the result of a view primitive such as reshape, permute,
slice or expand, or of basic indexing) records its root `_base` and the chain of steps that
derives it from that root, a replayable view function; `detach()` and `.data` give aliases of
the root that autograd does not connect. A root and its views share one `VersionCounter`
(`.data` gets its own, as in PyTorch), bumped by every in-place write. Eager autograd checks the
versions of what it saved; `Tensor._inplace` writes through views and rebases autograd history
onto the root (CopySlices); the tracer uses the same chains to functionalize writes
(`scatter_into_base`) and to regenerate live views after one.
"""
import weakref

import numpy as np

from .dispatch import STATE


class VersionCounter:
    """Counts in-place writes to one piece of memory; shared by a root and its views."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


def version_counter(tensor):
    counter = tensor._vc
    if counter is None:
        counter = tensor._vc = VersionCounter()
    return counter


def bump_version(tensor):
    version_counter(tensor).value += 1


class ViewStep:
    """One step of a view's derivation: a view primitive and its attrs."""

    __slots__ = ("prim", "attrs")

    def __init__(self, prim, attrs):
        self.prim, self.attrs = prim, attrs

    def apply(self, tensor):
        return self.prim.bind(tensor, **self.attrs)

    def apply_array(self, array):
        return self.prim.impl(array, **self.attrs)

    def update(self, base, new_view):
        """`base` with this step's view of it replaced by `new_view` (in primitives)."""
        if self.prim.view_update is None:
            raise RuntimeError(f"{self.prim.name}: this view cannot be written through (its elements overlap "
                               "in memory); clone() it before writing")
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
    view._vc = version_counter(source)
    if source._detached:
        view._detached = True
    creation = source._creation
    if creation is not None or not STATE.grad_enabled:
        view._creation = creation or "no_grad"
        if source.requires_grad and not STATE.grad_enabled:
            view.requires_grad = True  # as PyTorch: a view of a tensor that requires grad does, with no history
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
        alias._vc = version_counter(source)
    _remember(root, alias)
    return alias


_PRUNE_AT = 64


def _remember(root, alias):
    aliases = root.__dict__.get("_aliases")
    if aliases is None:
        aliases = root._aliases = {}
    elif len(aliases) >= _PRUNE_AT:  # forget the dead ones now and then
        for key in [k for k, ref in aliases.items() if ref() is None]:
            del aliases[key]
    aliases[id(alias)] = weakref.ref(alias)


def live_aliases(root):
    """The live tensors derived from `root` (views and detached aliases), not `root` itself."""
    aliases = root.__dict__.get("_aliases")
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
    inner = step.apply(base)
    return step.update(base, scatter_into_base(inner, chain[1:], new_view))


def has_internal_overlap(array):
    """Do two elements of `array` share memory (an expanded or sliding-window view)?"""
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


def memory_owner(array):
    """The object owning an array's memory (numpy keeps views' `.base` pointing at it)."""
    base = array.base
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return array if base is None else base
