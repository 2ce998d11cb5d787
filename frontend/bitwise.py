"""torch's integer bit functions and the float bit-level ones: bitwise and/or/xor/not, shifts,
gcd and lcm (and the `&`, `|`, `^`, `~`, `<<`, `>>` operators on integer tensors), frexp, ldexp
and nextafter. and/or/xor/gcd/nextafter bind ember/ops/special.py's primitives; the rest are
composed from math_ops, so eager autograd and ember.compile both take them.
"""
from collections import namedtuple

import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from . import math_ops as M
from .math_ops import promote_operands, where
from .tensor import Tensor

_NUMBER = (int, float, bool, np.number, np.bool_)
frexp_result = namedtuple("frexp", "mantissa exponent")


def kernel_refuses(kernel, dtype):
    """PyTorch's error for a kernel (`bitwise_and_cpu`) without an implementation for `dtype`."""
    from .linalg import scalar_type_name
    return NotImplementedError(f'"{kernel}" not implemented for \'{scalar_type_name(dtype)}\'')


def _integer_operands(kernel, input, other, allow_bool):
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        raise TypeError(f"{kernel}(): at least one of input and other must be a Tensor, got "
                        f"({type(input).__name__}, {type(other).__name__})")
    a, b = promote_operands((input, other))
    dtype = a.dtype
    if dtype.category == 2 or (dtype is dtypes.bool_ and not allow_bool):
        raise kernel_refuses(f"{kernel}_cpu", dtype)
    return a, b


def _bitwise(name, logical):
    def bitwise(input, other):
        a, b = _integer_operands(name, input, other, allow_bool=True)
        if a.dtype is dtypes.bool_:
            return P[logical].bind(a, b)
        return P[name].bind(a, b)
    bitwise.__name__ = name
    bitwise.__doc__ = f"{name} of integer or bool tensors (a Python number broadcasts)."
    return bitwise


bitwise_and = _bitwise("bitwise_and", "logical_and")
bitwise_or = _bitwise("bitwise_or", "logical_or")
bitwise_xor = _bitwise("bitwise_xor", "logical_xor")


def bitwise_not(input):
    """~x: logical not of bools; -x - 1 for integers (~x in two's complement, 255 - x for uint8)."""
    if input.dtype is dtypes.bool_:
        return M.logical_not(input)
    if input.dtype.category != 1:
        raise kernel_refuses("bitwise_not_cpu", input.dtype)
    return M.sub(M.neg(input), 1)


def _bits(dtype):
    return 8 * dtype.itemsize


def bitwise_left_shift(input, other):
    """input * 2^other, wrapping in the dtype; 0 where other is negative or at least the width
    (PyTorch's rule)."""
    a, b = _integer_operands("lshift", input, other, allow_bool=False)
    inside = M.logical_and(M.ge(b, 0), M.lt(b, _bits(a.dtype)))
    shifted = M.mul(a, M.pow(M.constant(2, a.dtype), where(inside, b, 0)))
    return where(inside, shifted, 0)


def bitwise_right_shift(input, other):
    """floor(input / 2^other) (an arithmetic shift); where other is negative or the sign bit's
    place or beyond, the sign fill: -1 for negative values, 0 for the others (PyTorch's rule)."""
    a, b = _integer_operands("rshift", input, other, allow_bool=False)
    widest = _bits(a.dtype) - (0 if a.dtype is dtypes.uint8 else 1)  # 2^widest would wrap
    inside = M.logical_and(M.ge(b, 0), M.lt(b, widest))
    shifted = M.floor_divide(a, M.pow(M.constant(2, a.dtype), where(inside, b, 0)))
    zero = M.constant(0, a.dtype)
    sign_fill = zero if a.dtype is dtypes.uint8 else where(M.lt(a, 0), M.constant(-1, a.dtype), zero)
    return where(inside, shifted, sign_fill)


def _tensor_other(name, other):
    if not isinstance(other, Tensor):
        raise TypeError(f"{name}(): argument 'other' (position 2) must be Tensor, not {type(other).__name__}")


def gcd(input, other):
    """The greatest common divisor, non-negative; gcd(0, 0) = 0."""
    _tensor_other("gcd", other)
    a, b = _integer_operands("gcd", input, other, allow_bool=False)
    return P["gcd"].bind(a, b)


def lcm(input, other):
    """|a / gcd(a, b) * b|, 0 where gcd is 0: PyTorch's formula, computed as C++ computes it
    (in int64 for int64, in int for the narrower types, which are then wrapped to their width)."""
    _tensor_other("lcm", other)
    a, b = _integer_operands("lcm", input, other, allow_bool=False)
    divisor = P["gcd"].bind(a, b)
    zero = M.eq(divisor, 0)
    wide = [M.to_dtype(t, dtypes.int64) for t in (a, divisor, b)]
    quotient = M.floor_divide(wide[0], where(zero, 1, wide[1]))
    return M.to_dtype(where(zero, 0, M.abs(M.mul(quotient, wide[2]))), a.dtype)


# ----------------------------------------------------------------------------- floats

def frexp(input):
    """(mantissa, exponent) with input = mantissa * 2^exponent, |mantissa| in [0.5, 1) and an
    int32 exponent; zeros, infinities and nan give (input, 0). Computed in float64 from
    log2 |x| (off by one at most, then corrected), scaling by two powers of 2 so that neither
    overflows; the mantissa's gradient is grad / 2^exponent, as PyTorch's."""
    if not input.is_floating_point():
        raise RuntimeError("torch.frexp() only supports floating-point dtypes")
    x = M.to_dtype(input, dtypes.float64)
    special = M.logical_or(M.eq(x, 0), M.logical_not(M.isfinite(x)))
    safe = where(special, 1.0, x)
    magnitude = M.abs(safe).detach()
    exponent = M.add(M.floor(M.log2(magnitude)), 1.0)
    first = M.floor(M.mul(M.neg(exponent), 0.5))
    mantissa = M.mul(M.mul(safe, M.pow(2.0, first)), M.pow(2.0, M.sub(M.neg(exponent), first)))
    for too_big, factor, step in ((True, 0.5, 1.0), (False, 2.0, -1.0)):
        size = M.abs(mantissa).detach()
        off = M.ge(size, 1.0) if too_big else M.lt(size, 0.5)
        mantissa = where(off, M.mul(mantissa, factor), mantissa)
        exponent = where(off, M.add(exponent, step), exponent)
    mantissa = where(special, x, mantissa)
    exponent = where(special, 0.0, exponent)
    return frexp_result(M.to_dtype(mantissa, input.dtype), M.to_dtype(exponent, dtypes.int32))


def ldexp(input, other):
    """input * 2^other, in the operands' promoted dtype (at least the default float)."""
    _tensor_other("ldexp", other)
    a, b = promote_operands((input, other), at_least=dtypes.defaults.floating)
    return M.mul(a, M.pow(2.0, b))


def nextafter(input, other):
    """The next floating-point value after input towards other (other itself where they are
    equal). The gradient passes to input unchanged, other gets none, as in PyTorch."""
    _tensor_other("nextafter", other)
    a, b = promote_operands((input, other))
    if not a.is_floating_point():
        raise kernel_refuses("nextafter_cpu", a.dtype)
    return P["nextafter"].bind(a, b, dtype=a.dtype.name)


def _inplace_function(name):
    def function(input, *args, **kwargs):
        return getattr(input, name)(*args, **kwargs)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"torch.{name}(input, ...): input.{name}(...), in place."
    return function


gcd_, lcm_, ldexp_ = _inplace_function("gcd_"), _inplace_function("lcm_"), _inplace_function("ldexp_")


def _reflected(fn):
    def method(self, other):
        return fn(other, self)
    return method


def _operator(fn):
    """A binary operator: NotImplemented for operands that are neither tensors nor numbers."""
    def method(self, other):
        if not isinstance(other, (Tensor,) + _NUMBER):
            return NotImplemented
        return fn(self, other)
    return method


# name -> function; names ending in "_" and `__i*__` are in-place forms of the function given
TENSOR_METHODS = {
    "bitwise_and": bitwise_and, "bitwise_or": bitwise_or, "bitwise_xor": bitwise_xor, "bitwise_not": bitwise_not,
    "bitwise_left_shift": bitwise_left_shift, "bitwise_right_shift": bitwise_right_shift,
    "bitwise_and_": bitwise_and, "bitwise_or_": bitwise_or, "bitwise_xor_": bitwise_xor,
    "bitwise_not_": bitwise_not, "bitwise_left_shift_": bitwise_left_shift,
    "bitwise_right_shift_": bitwise_right_shift,
    "__and__": _operator(bitwise_and), "__or__": _operator(bitwise_or), "__xor__": _operator(bitwise_xor),
    "__rand__": _operator(_reflected(bitwise_and)), "__ror__": _operator(_reflected(bitwise_or)),
    "__rxor__": _operator(_reflected(bitwise_xor)),
    "__lshift__": _operator(bitwise_left_shift), "__rshift__": _operator(bitwise_right_shift),
    "__rlshift__": _operator(_reflected(bitwise_left_shift)), "__rrshift__": _operator(_reflected(bitwise_right_shift)),
    "__iand__": bitwise_and, "__ior__": bitwise_or, "__ixor__": bitwise_xor,
    "__ilshift__": bitwise_left_shift, "__irshift__": bitwise_right_shift,
    "gcd": gcd, "gcd_": gcd, "lcm": lcm, "lcm_": lcm, "frexp": frexp, "ldexp": ldexp, "ldexp_": ldexp,
    "nextafter": nextafter, "nextafter_": nextafter,
}
