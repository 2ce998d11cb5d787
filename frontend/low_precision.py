"""float16 and bfloat16 as PyTorch's CPU computes them: per op in float32, rounded once.

Primitives get this in eager mode from `dispatch.in_float32`. The composite functions written
in several primitives (mean, softmax, layer_norm, gelu, the losses...) are single kernels in
PyTorch that compute in float32 inside; `computes_in_float32` gives ember's composites the same
rounding: a 2-byte floating `input` (and tensor arguments of its dtype, a norm's weights) is
cast to float32, the function runs, and its floating results are cast back (the casts are ops
like any other: autograd and ember.compile see them).
"""
import functools

from ember import dtypes


def computes_in_float32(fn):
    """Decorate a function whose first argument is a tensor (see the module docstring).
    A `dtype=` keyword the caller gives decides the result's dtype itself."""

    @functools.wraps(fn)
    def wrapper(input, *args, **kwargs):
        data = getattr(input, "_data", None)
        if data is None or data.dtype not in dtypes.LOW_PRECISION_NP:
            return fn(input, *args, **kwargs)
        from .math_ops import to_dtype
        low = input._data.dtype

        def widened(value):  # the weights of a norm come in the input's dtype: widened with it
            return to_dtype(value, dtypes.float32) if getattr(getattr(value, "_data", None), "dtype", None) == low \
                else value

        args = [widened(a) for a in args]
        kwargs = {k: widened(v) for k, v in kwargs.items()}
        result = fn(to_dtype(input, dtypes.float32), *args, **kwargs)
        if kwargs.get("dtype") is not None:
            return result
        return _cast_floating(result, input.dtype, to_dtype)

    return wrapper


def _cast_floating(result, dtype, to_dtype):
    if isinstance(result, tuple):
        return type(result)(*(_cast_floating(r, dtype, to_dtype) for r in result)) if hasattr(result, "_fields") \
            else tuple(_cast_floating(r, dtype, to_dtype) for r in result)
    if getattr(result, "dtype", None) is dtypes.float32:
        return to_dtype(result, dtype)
    return result
