"""More of torch's elementwise functions (deg2rad, erfc, fmax, copysign, logit, sinc, xlogy, ...),
each composed from math_ops' functions, so eager autograd and ember.compile both handle them
without new primitives. dtype rules follow PyTorch's: integer inputs of the float-only
functions give the default float dtype; binary ones promote as math_ops.promote_operands.
"""
import math

import numpy as np

from ember import dtypes
from .low_precision import computes_in_float32
from . import math_ops as M
from .math_ops import promote_operands, to_dtype, where, constant
from .dispatch import STATE
from .tensor import Tensor


def _floating(input):
    return input if dtypes.is_floating_np(input._data.dtype) else to_dtype(input, dtypes.defaults.floating)


def deg2rad(input):
    return M.mul(_floating(input), math.pi / 180.0)


def rad2deg(input):
    return M.mul(_floating(input), 180.0 / math.pi)


def erfc(input):
    """1 - erf(x) without the cancellation (the erfc primitive): the tail keeps its relative
    precision down to the subnormals, as PyTorch's."""
    return M.erfc(input)


def fix(input):
    return M.trunc(input)


def float_power(input, exponent):
    """pow in double precision: float64 operands and result, whatever the inputs' dtypes."""
    if STATE.inplace_target is input and input.dtype is not dtypes.float64:
        from .linalg import scalar_type_name
        raise RuntimeError(f"the base given to float_power_ has dtype {scalar_type_name(input.dtype)} but the "
                           f"operation's result requires dtype Double")
    a = to_dtype(input, dtypes.float64) if isinstance(input, Tensor) else float(input)
    b = to_dtype(exponent, dtypes.float64) if isinstance(exponent, Tensor) else float(exponent)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError("float_power(): at least one of input and exponent must be a Tensor")
    return M.pow(a, b)


def _nan_ignoring(name, input, other):
    if not isinstance(other, Tensor):
        raise TypeError(f"{name}(): argument 'other' (position 2) must be Tensor, not {type(other).__name__}")
    a, b = promote_operands((input, other))
    pick = M.maximum(a, b) if name == "fmax" else M.minimum(a, b)
    if not dtypes.is_floating_np(a._data.dtype):
        return pick
    return where(M.isnan(a), b, where(M.isnan(b), a, pick))


def fmax(input, other):
    """maximum, except that a nan loses to a number (nan only where both are nan)."""
    return _nan_ignoring("fmax", input, other)


def fmin(input, other):
    """minimum, except that a nan loses to a number (nan only where both are nan)."""
    return _nan_ignoring("fmin", input, other)


def signbit(input):
    """True where the sign bit is set: negative numbers, -0.0 and -inf (1 / -0.0 is -inf)."""
    x = input if isinstance(input, Tensor) else constant(input, dtypes.scalar_dtype(input))
    kind = x._data.dtype.kind
    if kind == "b" or kind == "u":
        return M.zeros_bool(x)
    if kind != "f":
        return M.lt(x, 0)
    return M.logical_or(M.lt(x, 0), M.logical_and(M.eq(x, 0), M.lt(M.reciprocal(x.detach()), 0)))


def copysign(input, other):
    """|input| with the sign of `other` (signed zeros included); float result."""
    a, b = promote_operands((input, other), at_least=dtypes.defaults.floating)
    magnitude = M.abs(a)
    return where(signbit(b.detach()), M.neg(magnitude), magnitude)  # (a's dtype, float16 included)


def heaviside(input, values):
    """0 where input < 0 (and at nan, as PyTorch's), `values` where input == 0, 1 where input > 0.
    As PyTorch, input and values must have one dtype; the step has no derivative, so the
    result carries no gradient."""
    if input.dtype is not values.dtype:
        raise RuntimeError("heaviside is not yet implemented for tensors with different dtypes.")
    x, values = input.detach(), values.detach()
    step = where(M.gt(x, 0), constant(1, x.dtype), constant(0, x.dtype))
    return where(M.eq(x, 0), values, step)


def logit(input, eps=None):
    """log(p / (1 - p)), p clamped to [eps, 1 - eps] when eps is given (gradient 0 outside,
    as PyTorch's)."""
    p = _floating(input)
    if eps is not None:
        p = M.clamp(p, eps, 1.0 - eps)
    return M.log(M.div(p, M.sub(1.0, p)))


@computes_in_float32
def sinc(input):
    """sin(pi x) / (pi x), 1 at 0; the quotient reads a guarded operand at 0, so the gradient
    there is 0 rather than nan."""
    x = _floating(input)
    zero = M.eq(x, 0)
    safe = M.mul(where(zero, 1.0, x), math.pi)
    return where(zero, 1.0, M.div(M.sin(safe), safe))


def xlogy(input, other):
    """input * log(other), 0 where input == 0 (unless other is nan); float result. As PyTorch's,
    the gradient for input is log(other) at input == 0 too, and other's is 0 there."""
    a, b = promote_operands((input, other), at_least=dtypes.defaults.floating)
    zero = M.logical_and(M.eq(a, 0), M.logical_not(M.isnan(b)))
    log_b = M.log(b.detach())
    at_zero = M.mul(a, where(M.isfinite(log_b), log_b, 0.0))  # 0, with slope log(other)
    return where(zero, at_zero, M.mul(a, M.log(where(zero, 1.0, b))))


def sgn(input):
    """sign for real tensors (x / |x| for complex ones, which ember does not have); nan gives 0,
    as PyTorch's."""
    out = M.sign(input)
    return where(M.isnan(input), 0.0, out) if input.is_floating_point() else out


def positive(input):
    if input.dtype is dtypes.bool_:
        raise RuntimeError("The `+` operator, on a bool tensor is not supported.")
    return input


def isposinf(input):
    return M.eq(input, float("inf")) if input.is_floating_point() else M.zeros_bool(input)


def isneginf(input):
    return M.eq(input, float("-inf")) if input.is_floating_point() else M.zeros_bool(input)


def isreal(input):
    """True everywhere: ember's tensors are real."""
    return M.logical_not(M.zeros_bool(input))


def is_complex(input):
    return False


def is_signed(input):
    return input.dtype not in (dtypes.bool_, dtypes.uint8)


def rsub(input, other, alpha=1):
    """other - alpha * input."""
    return M.sub(other, input, alpha=alpha)


def scalar_tensor(s, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False):
    """A 0-d tensor holding `s`, of the default float dtype unless `dtype` says otherwise."""
    dtype = dtypes.as_dtype(dtype) or dtypes.defaults.floating
    out = Tensor._wrap(np.asarray(s, dtype=dtype.np))
    return out.requires_grad_(True) if requires_grad else out
