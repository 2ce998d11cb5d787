"""Which tensors eager mode's numpy fast paths may compute on directly.

The one-node ops (frontend/nn/eager_linear.py, eager_layer_norm.py, eager_attention.py) and
the optimizers' in-place updates (frontend/optim/array_updates.py) run numpy on the tensors'
arrays outside any trace, for CPU tensors of one float32 or float64 dtype; everything else
(a trace, a GPU or low-precision tensor, mixed dtypes) composes primitives as before.
"""
import numpy as np

from ember.runtime import device_arrays
from .dispatch import STATE
from .tensor import Tensor

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def host_float_arrays(*tensors):
    """The tensors' arrays (None stays None) outside a trace when every tensor is a CPU tensor
    of one float32 or float64 dtype; otherwise None."""
    if STATE.recorder is not None:
        return None
    arrays = []
    for t in tensors:
        if t is None:
            arrays.append(None)
            continue
        if not isinstance(t, Tensor) or type(t._data) is not np.ndarray:
            return None
        arrays.append(t._data)
    present = [a for a in arrays if a is not None]
    if not present or present[0].dtype not in FLOATS or any(a.dtype != present[0].dtype for a in present) \
            or not device_arrays.in_host_memory(*present):
        return None
    return arrays


def needs_grad(*tensors):
    """Does an eager result of these tensors get an autograd node (grad mode, one requires grad)?"""
    return STATE.grad_enabled and any(t is not None and t.requires_grad for t in tensors)
