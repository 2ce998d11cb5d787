"""torch's `out=` keyword: a result written into a tensor the caller gave, which is returned.

`write_out(out, result)` follows PyTorch's rules: out must not need gradients (nor, in grad mode,
the result), the result's dtype must cast safely to out's (same kind or wider), and an out of
another shape (not a view) is resized, with torch's deprecation warning when it held elements.
The write is an in-place copy: views of out see it, autograd's version counter moves.
"""
import functools
import inspect

import numpy as np

from ember import dtypes
from .dispatch import STATE
from .tensor import Tensor


# torch 2.13's functions that take out= (from their documented signatures); ember.__init__ gives the
# public function of each name that ember has this keyword through `with_out`
OUT_FUNCTIONS = frozenset("""
    abs acos acosh add addbmm addcdiv addcmul addmm addmv addr all amax amin angle any arange asin
    asinh atan atan2 atanh baddbmm bernoulli bitwise_and bitwise_not bitwise_or bitwise_xor bmm
    bucketize cat ceil chain_matmul cholesky cholesky_inverse cholesky_solve clamp clip
    column_stack complex concat copysign cos cosh cross cummax cummin cumprod cumsum deg2rad diag
    diff digamma div dot dstack empty eq erf erfc erfinv exp exp2 expm1 eye fix float_power floor
    floor_divide fmax fmin fmod frac frexp full gather gcd ge geqrf ger greater greater_equal gt
    heaviside histc histogram hstack hypot i0 igamma igammac index_select inner inverse isneginf
    isposinf kron kthvalue lcm ldexp le lerp less less_equal lgamma linspace log log10 log1p log2
    logaddexp logaddexp2 logcumsumexp logical_and logical_not logical_or logical_xor logit logspace
    logsumexp lt lu_solve lu_unpack masked_select matmul matrix_power max maximum mean min minimum
    mm mode msort mul multinomial multiply mv mvlgamma nan_to_num nanmean nanquantile narrow_copy
    ne neg negative nextafter nonzero norm normal not_equal ones ormqr outer polar polygamma pow
    quantile rad2deg rand randint randn randperm range reciprocal remainder renorm round row_stack
    rsqrt searchsorted sgn sigmoid sign signbit sin sinc sinh sqrt square stack std std_mean sub
    svd take_along_dim tan tanh topk triangular_solve tril triu trunc var var_mean vdot vstack
    where xlogy zeros
    sum prod sort argsort argmax argmin median cumsum
""".split())


def with_out(function, name):
    """`function` taking torch's out= (a tensor, or a tuple of them for a tuple result)."""
    try:
        if "out" in inspect.signature(function).parameters:
            return function  # (it writes out= itself)
    except (TypeError, ValueError):
        return function

    @functools.wraps(function)
    def call(*args, out=None, **kwargs):
        result = function(*args, **kwargs)
        if out is None:
            return result
        if STATE.grad_enabled and any(isinstance(r, Tensor) and r.requires_grad
                                      for r in (result if isinstance(result, tuple) else (result,))):
            raise RuntimeError(f"{name}(): functions with out=... arguments don't support automatic differentiation, "
                               f"but one of the arguments requires grad.")
        if isinstance(result, tuple):
            if not isinstance(out, (tuple, list)) or len(out) != len(result):
                raise TypeError(f"{name}(): argument 'out' must be tuple of {len(result)} Tensors")
            written = [write_out(o, r, name) for o, r in zip(out, result)]
            return type(result)(*written) if hasattr(result, "_fields") else tuple(written)
        return write_out(out, result, name)
    return call


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
        if out._base is not None:
            raise RuntimeError(f"{op}: out= is a view of shape {list(out.shape)} and the result has shape "
                               f"{list(result.shape)}; a view cannot be resized")
        if out.numel() != 0:
            import warnings
            warnings.warn(f"An output with one or more elements was resized since it had shape {list(out.shape)}, "
                          f"which does not match the required output shape {list(result.shape)}. This behavior is "
                          f"deprecated, and in a future PyTorch release outputs will not be resized unless they "
                          f"have zero elements. You can explicitly reuse an out tensor t by resizing it, inplace, to "
                          f"zero elements with t.resize_(0).", UserWarning, stacklevel=3)
        out.data = Tensor._wrap(np.empty(tuple(result.shape), target.np))
    from ember.frontend.autograd import no_grad
    with no_grad():
        out.copy_(result)
    return out
