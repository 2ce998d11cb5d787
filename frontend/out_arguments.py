"""torch's `out=` keyword: a result written into a tensor the caller gave, which is returned.

`write_out(out, result)` follows PyTorch's rules: out must not need gradients, the result's dtype
must cast safely to out's (same kind or wider), and an out of another shape is refused unless it
holds no elements (torch resizes it then; ember replaces its storage the same way). The write is an
in-place copy: views of out see it, autograd's version counter moves.
"""
import numpy as np

from ember import dtypes
from .dispatch import STATE
from .tensor import Tensor


def write_out(out, result, op="out="):
    if not isinstance(out, Tensor):
        raise TypeError(f"{op}: argument 'out' must be Tensor, not {type(out).__name__}")
    if out.requires_grad and STATE.grad_enabled:
        raise RuntimeError(f"{op}: functions with out=... arguments don't support automatic differentiation, but "
                           f"one of the arguments requires grad.")
    source, target = dtypes.as_dtype(result.dtype), dtypes.as_dtype(out.dtype)
    if source.category > target.category:
        from .linalg import scalar_type_name
        raise RuntimeError(f"{op}: result type {scalar_type_name(source)} can't be cast to the desired output type "
                           f"{scalar_type_name(target)}")
    if tuple(out.shape) != tuple(result.shape):
        if out.numel() != 0 or out._base is not None:
            raise RuntimeError(f"{op}: out= has shape {list(out.shape)} and the result {list(result.shape)}; ember "
                               f"resizes only an empty out= tensor (as torch does without a warning)")
        out.data = Tensor._wrap(np.empty(tuple(result.shape), target.np))
    from ember.frontend.autograd import no_grad
    with no_grad():
        out.copy_(result)
    return out
