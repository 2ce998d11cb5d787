"""Tensor.unfold, a sliding-window view, and the in-place metadata ops t_, transpose_, swapaxes_,
swapdims_, squeeze_ and unsqueeze_, which give a tensor a new view of its own memory.

unfold is the unfold_windows view primitive over a unit row, so writes through it reach the
base and its VJP sums the windows back. A metadata op keeps the aliasing model of views.py
right: the tensor's view chain (or, for a root, its views' chains) and its autograd history
follow the new layout, and the shared version counter moves, as in PyTorch.
"""
import numpy as np

from ember.ops import PRIMITIVES as P
from . import shape_ops as S, views
from .dispatch import STATE, run_eagerly
from .tensor import _dim


def unfold(input, dimension, size, step):
    """All slices of `size` elements along `dimension`, `step` apart, as a new last dim: a view
    of input's memory (Tensor.unfold)."""
    dim = _dim(dimension, input.ndim, "unfold")
    length = input.shape[dim] if input.ndim else 1
    if size > length:
        raise RuntimeError(f"maximum size for tensor at dimension {dim} is {length} but size is {size}")
    if size < 0:
        raise RuntimeError(f"size is {size} but must be >= 0")
    if step <= 0:
        raise RuntimeError(f"step is {step} but must be > 0")
    if input.ndim == 0:
        return S.reshape(unfold(S.reshape(input, (1,)), 0, size, step), (size,))
    moved = S.movedim(input, dim, -1)
    lead = tuple(moved.shape[:-1])
    row = P["reshape"].bind(moved, shape=lead + (1, length))
    attrs = {"kernel": (1, int(size)), "stride": (1, int(step)), "dilation": (1, 1)}
    windows = _as_view_of(P["unfold_windows"].bind(row, **attrs), row, views.ViewStep(P["unfold_windows"], attrs))
    count = windows.shape[-3]
    return S.movedim(P["reshape"].bind(windows, shape=lead + (count, int(size))), -2, dim)


def _as_view_of(windows, source, step):
    """`windows` recorded as the view of `source` it is. numpy's as_strided (which unfold_windows
    uses) hands out an array whose `.base` is a numpy-internal DummyArray, so views.memory_owner
    does not find `source`'s memory: eager_bind records no view and views.writable refuses writes.
    The same strided array over the owner's buffer fixes both; once memory_owner follows the
    DummyArray (views.py), `windows._base` is set already and this returns at once."""
    array = windows._data
    if windows._base is not None or array.base is None:
        return windows
    owner = views.memory_owner(source._data)
    if not isinstance(owner, np.ndarray) or not owner.flags.writeable:
        return windows
    offset = array.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    windows._data = np.ndarray(array.shape, array.dtype, buffer=owner, offset=offset, strides=array.strides)
    views.register_view(windows, source, step)
    return windows


# ----------------------------------------------------------------------------- in-place metadata ops

def t_(self):
    if self.ndim > 2:
        raise RuntimeError(f"t_() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
    return _restride(self, "t_", _permute_step(self, (1, 0) if self.ndim == 2 else ()))


def transpose_(self, dim0, dim1):
    n = self.ndim
    a, b = _dim(dim0, n, "transpose_"), _dim(dim1, n, "transpose_")
    perm = list(range(n))
    if n:
        perm[a], perm[b] = perm[b], perm[a]
    return _restride(self, "transpose_", _permute_step(self, tuple(perm)))


def swapaxes_(self, axis0, axis1):
    return transpose_(self, axis0, axis1)


def swapdims_(self, dim0, dim1):
    return transpose_(self, dim0, dim1)


def squeeze_(self, dim=None):
    shape = tuple(self.shape)
    if dim is None:
        drop = {i for i, d in enumerate(shape) if d == 1}
    else:
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        drop = {a for a in (_dim(d, self.ndim, "squeeze_") for d in dims) if shape and shape[a] == 1}
    return _restride(self, "squeeze_", _reshape_step(tuple(d for i, d in enumerate(shape) if i not in drop)))


def unsqueeze_(self, dim):
    at = _dim(dim, self.ndim + 1, "unsqueeze_")
    shape = tuple(self.shape)
    return _restride(self, "unsqueeze_", _reshape_step(shape[:at] + (1,) + shape[at:]))


def _permute_step(tensor, perm):
    if perm == tuple(range(len(perm))):
        return _reshape_step(tuple(tensor.shape))  # (a new view all the same, as torch's)
    return views.ViewStep(P["permute"], {"perm": perm})


def _reshape_step(shape):
    return views.ViewStep(P["reshape"], {"shape": shape})


def _inverse(step, old_shape):
    if step.prim is P["permute"]:
        perm = step.attrs["perm"]
        return views.ViewStep(P["permute"], {"perm": tuple(perm.index(i) for i in range(len(perm)))})
    return _reshape_step(old_shape)


def _restride(self, name, step):
    """Give `self` the view `step` of its current layout, in place: same memory, new shape and
    strides. A view's chain from its root gets the step; a root's views get the inverse step
    first (their chains start from the root's layout). Autograd history takes the view op's
    node (grad mode), the version counter moves, and a tracer rebinds the tensor's node."""
    grad_mode = STATE.grad_enabled
    self._check_writable(name, grad_mode, internal_overlap=False)  # (torch refuses as for any in-place op)
    recorder = STATE.recorder
    if recorder is not None and not _made_in_trace(recorder, self):
        run_eagerly(f"changes the shape of a tensor from outside the function in place ({name})")
    elif recorder is not None and grad_mode and self.requires_grad:
        # the version bump fails backwards that saved the tensor (eagerly, as torch); the traced
        # program records a rebind only, which would not
        run_eagerly(f"changes the shape of a tensor with autograd history in place ({name})")
    old_shape = tuple(self.shape)
    current = self._current_value(grad_mode)
    new = step.apply(current)
    self._data = new._data
    if self._base is not None:
        self._view_chain = self._view_chain + (step,)
    else:
        inverse = _inverse(step, old_shape)
        for alias in views.live_aliases(self):
            alias._view_chain = (inverse,) + alias._view_chain
    if grad_mode and new.grad_fn is not None:
        self.grad_fn = new.grad_fn
    views.bump_version(self)
    if recorder is not None:
        recorder.rebind(self, new._node[1])
    return self


def _made_in_trace(recorder, tensor):
    """Was `tensor` made by the code being traced (not an argument, param or outside tensor,
    whose new layout a compiled call could not give back to the caller)?"""
    if id(tensor) in recorder.known:
        return False
    token = tensor._node
    return tensor._born is recorder or (token is not None and token[0] is recorder)


TENSOR_METHODS = {
    "unfold": unfold, "t_": t_, "transpose_": transpose_, "swapaxes_": swapaxes_, "swapdims_": swapdims_,
    "squeeze_": squeeze_, "unsqueeze_": unsqueeze_,
}
