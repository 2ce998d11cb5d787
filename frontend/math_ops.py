"""Elementwise tensor math: arithmetic, comparisons, unary functions, where, clamp, casts.

Operands are promoted with PyTorch's rules (ember.dtypes.result_type) and cast with the
`convert` primitive, so the primitives always see one dtype. Python scalars become 0-d
constant tensors that broadcast.
"""
import math

import numpy as np

from ember import dtypes
from .low_precision import computes_in_float32
from ember.ops import PRIMITIVES as P
from .autograd import saves_like_pytorch
from .dispatch import STATE
from .runtime_scalars import ScalarInput
from .tensor import Tensor
from .views import version_counter
from .device_tensors import keeps_device

_NUMBER = (int, float, bool, np.number, np.bool_)


def to_dtype(t, dtype):
    dtype = dtypes.as_dtype(dtype)
    if t._data.dtype == dtype.np:
        return t
    return P["convert"].bind(t, dtype=dtype.name)


def cast_operand(t, dtype):
    """`t` converted to `dtype` as an operand of the op about to run (never handed to the user).
    The copy shares `t`'s version counter: PyTorch's op saves `t` itself for backward, so a later
    in-place write to `t` must still fail that backward."""
    cast = P["convert"].bind(t, dtype=dtype.name)
    if t is not STATE.inplace_target:  # (the op's own write must not invalidate what it saved)
        cast._vc = version_counter(t)
    return cast


def constant(value, dtype):
    """A 0-d tensor for a Python scalar operand (an integer outside a small integer dtype's range
    wraps around, as PyTorch casts it: int8 + 200 adds -56). A runtime scalar of a trace
    (frontend/runtime_scalars.py) gives its input tensor, rounded to `dtype` as the number would be."""
    if type(value) is ScalarInput:
        return to_dtype(value.tensor, dtype)
    try:
        return Tensor._wrap(np.asarray(value, dtype=dtype.np))
    except OverflowError:
        return Tensor._wrap(np.asarray(value, dtype=np.int64).astype(dtype.np))


def operand(value, dtype):
    """`constant(value, dtype)` for one op's operand alone (`x * 0.5`): it never reaches the
    caller, so a trace may give every equal one one node (Tracer._constant)."""
    wrapped = constant(value, dtype)
    wrapped._operand = type(value) is not ScalarInput
    return wrapped


def _operand_dtypes(operands):
    dimensioned, zero_dim, scalars = [], [], []
    for x in operands:
        if isinstance(x, Tensor):
            (dimensioned if x._data.ndim else zero_dim).append(x.dtype)
        elif isinstance(x, _NUMBER):  # (a runtime scalar of a trace reads as a float: runtime_scalars.py)
            scalars.append(dtypes.scalar_dtype(x))
        else:
            raise TypeError(f"unsupported operand type {type(x).__name__}; expected a Tensor or a number")
    return dimensioned, zero_dim, scalars


def promote_operands(operands, at_least=None, wrap=None):
    """Cast tensors and wrap scalars to one dtype: PyTorch's result type (or at_least's category).
    `wrap=operand` where the caller only binds them into one op."""
    result = dtypes.result_type(*_operand_dtypes(operands))
    if at_least is not None and result.category < at_least.category:
        result = at_least
    out = []
    for x in operands:
        if isinstance(x, Tensor):
            out.append(x if x._data.dtype == result.np else cast_operand(x, result))
        else:
            out.append((wrap or constant)(x, result))
    return out


_BOOL = np.dtype(bool)
# PyTorch adds bool tensors as logical or and multiplies them as logical and
_LOGICAL_FOR_BOOL = {"add": "logical_or", "mul": "logical_and", "maximum": "logical_or", "minimum": "logical_and"}


# with a Python number, PyTorch's CPU kernels of these ops compute on float16/bfloat16 tensors in
# float32 with the number unrounded, and round the result once (div too: see div); the others
# (add, sub, pow, remainder...) round the number to the tensor's dtype first, as ember does
_SCALAR_KEPT_IN_FLOAT32 = {"mul", "floor_divide"}


def _wrapped_number(x, result_dtype):
    """Is `x` what PyTorch's kernels take as a number beside a 2-byte float tensor: a Python
    number, or a 0-d tensor of another dtype (its value is used unrounded)?"""
    return not isinstance(x, Tensor) or (x._data.ndim == 0 and x._data.dtype != result_dtype)


def _with_number_in_float32(name, a, b, dtype):
    wide = [to_dtype(x, dtypes.float32) if isinstance(x, Tensor) else constant(x, dtypes.float32) for x in (a, b)]
    return to_dtype(P[name].bind(*wide), dtype)


_FLOAT_NP = (np.dtype(np.float32), np.dtype(np.float64))
_PYTHON_NUMBER = (float, int)  # (exactly these types: not bool, numpy scalars or runtime scalars)


def binary(name, a, b):
    ta, tb = type(a), type(b)
    if ta is Tensor:
        if tb is Tensor:
            dtype = a._data.dtype
            if dtype == b._data.dtype and (dtype is not _BOOL or name not in _LOGICAL_FOR_BOOL):
                return P[name].bind(a, b)
        elif tb in _PYTHON_NUMBER and a._data.dtype in _FLOAT_NP:  # x * 0.5: the number takes x's dtype
            return P[name].bind(a, operand(b, a.dtype))
    elif tb is Tensor and ta in _PYTHON_NUMBER and b._data.dtype in _FLOAT_NP:
        return P[name].bind(operand(a, b.dtype), b)
    a_in, b_in = a, b
    a, b = promote_operands((a, b), wrap=operand)
    if a._data.dtype in dtypes.LOW_PRECISION_NP and name in _SCALAR_KEPT_IN_FLOAT32 \
            and (_wrapped_number(a_in, a._data.dtype) or _wrapped_number(b_in, a._data.dtype)):
        return _with_number_in_float32(name, a_in, b_in, a.dtype)
    if a._data.dtype is _BOOL and name in _LOGICAL_FOR_BOOL:
        name = _LOGICAL_FOR_BOOL[name]
    return P[name].bind(a, b)


def add(input, other, alpha=1):
    if type(alpha) is Tensor:  # (a tensor learning rate, -lr: no value read, so no guard when traced)
        return binary("add", input, mul(other, alpha))
    return binary("add", input, other) if alpha == 1 else _with_alpha("add", add, input, other, alpha)


def sub(input, other, alpha=1):
    if type(alpha) is Tensor:
        return binary("sub", input, mul(other, alpha))
    return binary("sub", input, other) if alpha == 1 else _with_alpha("sub", sub, input, other, alpha)


def _with_alpha(name, op, input, other, alpha):
    """input +- alpha * other. On two tensors of one 2-byte float dtype, as PyTorch: alpha
    rounded to the dtype, the rest in float32, rounded once."""
    if (isinstance(input, Tensor) and isinstance(other, Tensor) and input._data.dtype == other._data.dtype
            and input._data.dtype in dtypes.LOW_PRECISION_NP):
        alpha = float(np.asarray(alpha, input._data.dtype).astype(np.float32))
        return to_dtype(op(to_dtype(input, dtypes.float32), to_dtype(other, dtypes.float32), alpha), input.dtype)
    return binary(name, input, other if alpha == 1 else mul(other, alpha))


def mul(input, other):
    return binary("mul", input, other)


def div(input, other, rounding_mode=None):
    if rounding_mode == "floor":
        out = floor_divide(input, other)
        if STATE.grad_enabled and out.is_floating_point() and any(
                isinstance(t, Tensor) and t.requires_grad for t in (input, other)):
            # as PyTorch: the result requires grad, and its gradient is zero
            out = P["replace_value"].bind(P["floor"].bind(div(input, other)), out)
        return out
    if type(input) is Tensor and type(other) in _PYTHON_NUMBER and input._data.dtype in _FLOAT_NP:
        out = P["div"].bind(input, operand(other, input.dtype))  # (x / 2: the number takes x's dtype)
        return trunc(out) if rounding_mode == "trunc" else out
    a, b = promote_operands((input, other), at_least=dtypes.defaults.floating, wrap=operand)
    if a._data.dtype in dtypes.LOW_PRECISION_NP and (_wrapped_number(input, a._data.dtype)
                                                     or _wrapped_number(other, a._data.dtype)):
        out = _with_number_in_float32("div", input, other, a.dtype)
    else:
        out = P["div"].bind(a, b)
    if rounding_mode == "trunc":
        out = trunc(out)
        result = dtypes.result_type(*_operand_dtypes((input, other)))
        if not result.is_floating_point:
            out = to_dtype(out, result)
    return out


def true_divide(input, other):
    return div(input, other)


def floor_divide(input, other):
    return binary("floor_divide", input, other)


def remainder(input, other):
    return binary("remainder", input, other)


def fmod(input, other):
    """The remainder with the dividend's sign (C's fmod), from remainder (which takes the divisor's).
    On a 2-byte float tensor a Python number is rounded to its dtype, the rest runs in float32."""
    if isinstance(input, Tensor) and input._data.dtype in dtypes.LOW_PRECISION_NP and isinstance(other, _NUMBER):
        other = float(np.asarray(other, input._data.dtype).astype(np.float32))
    return _fmod(input, other)


@computes_in_float32
def _fmod(input, other):
    a, b = promote_operands((input, other))
    r = remainder(a, b)
    differs = logical_and(ne(r, 0), ne(lt(r, 0), lt(a, 0)))
    return where(differs, sub(r, b), r)


def pow(input, exponent):
    if isinstance(exponent, _NUMBER) and isinstance(input, Tensor):
        if exponent < 0 and isinstance(exponent, (int, np.integer)) and input.dtype.category <= 1:
            # (a tensor of negative exponents gives 0 or +-1 instead: see ember/ops/elementwise.py)
            raise RuntimeError("Integers to negative integer powers are not allowed.")
        if exponent == 2 and (input.is_floating_point() or not isinstance(exponent, float)):
            return mul(input, input)  # (an integer tensor ** 2.0 is float, as PyTorch's)
        if exponent == 1:
            return P["convert"].bind(input, dtype=input.dtype.name)
        # (PyTorch's pow saves its input: a later write to it fails the backward)
        if exponent == 0.5 and input.is_floating_point():
            return saves_like_pytorch(P["sqrt"].bind(input), (input,))
        if exponent == -1 and input.is_floating_point():
            return saves_like_pytorch(P["reciprocal"].bind(input), (input,))
        if exponent == -0.5 and input.is_floating_point():  # as PyTorch: (-0.0) ** -0.5 is -inf, (-inf) ** -0.5 nan
            return saves_like_pytorch(P["rsqrt"].bind(input), (input,))
    return binary("pow", input, exponent)


def maximum(input, other):
    return binary("maximum", input, other)


def minimum(input, other):
    return binary("minimum", input, other)


def neg(input):
    return P["neg"].bind(input)


def _compare(name):
    def compare(input, other):
        return binary(name, input, other)
    compare.__name__ = name
    return compare


eq, ne, lt, le, gt, ge = (_compare(n) for n in ("eq", "ne", "lt", "le", "gt", "ge"))
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne


def _logical(name):
    def logical(input, other):
        a = to_dtype(input, dtypes.bool_) if isinstance(input, Tensor) else constant(bool(input), dtypes.bool_)
        b = to_dtype(other, dtypes.bool_) if isinstance(other, Tensor) else constant(bool(other), dtypes.bool_)
        return P[name].bind(a, b)
    logical.__name__ = name
    return logical


logical_and, logical_or, logical_xor = (_logical(n) for n in ("logical_and", "logical_or", "logical_xor"))


def logical_not(input):
    return P["logical_not"].bind(to_dtype(input, dtypes.bool_))


def bitwise_not(input):
    """~x: logical not of bools; for integers -x - 1, which is ~x in two's complement (and
    255 - x for uint8) with wrap-around at the ends of the range, as C's ~."""
    if input.dtype is dtypes.bool_:
        return logical_not(input)
    if input.dtype.category != 1:
        raise TypeError(f"bitwise_not (~) is only implemented on integer and Boolean tensors, got "
                        f"{input.dtype.short}[{','.join(str(d) for d in input.shape)}]")
    return sub(neg(input), 1)


# ----------------------------------------------------------------------------- unary

def _float_unary(name):
    prim = P[name]

    def unary(input):
        if not dtypes.is_floating_np(input._data.dtype):
            input = to_dtype(input, dtypes.defaults.floating)
        return prim.bind(input)
    unary.__name__ = name
    return unary


(exp, log, log1p, expm1, sqrt, rsqrt, reciprocal, sin, cos, tanh, sigmoid, erf, erfc) = (
    _float_unary(n) for n in ("exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "reciprocal",
                              "sin", "cos", "tanh", "sigmoid", "erf", "erfc"))


def _same_dtype_unary(name):
    prim = P[name]

    def unary(input):
        return prim.bind(input)
    unary.__name__ = name
    return unary


abs, sign, relu = (_same_dtype_unary(n) for n in ("abs", "sign", "relu"))


def _rounding(name):
    prim = P[name]

    def unary(input, **kwargs):
        if not dtypes.is_floating_np(input._data.dtype):
            return input  # rounding an integer tensor is the identity
        if kwargs.get("decimals"):
            scale = 10.0 ** kwargs["decimals"]
            return div(prim.bind(mul(input, scale)), scale)
        return prim.bind(input)
    unary.__name__ = name
    return unary


floor, ceil, round = (_rounding(n) for n in ("floor", "ceil", "round"))


def trunc(input):
    return where(lt(input, 0), ceil(input), floor(input))


def frac(input):
    return sub(input, trunc(input))


def square(input):
    return mul(input, input)


@computes_in_float32
def log2(input):
    return div(log(input), float(np.log(2.0)))


@computes_in_float32
def log10(input):
    return div(log(input), float(np.log(10.0)))


@computes_in_float32
def exp2(input):
    return exp(mul(input, float(np.log(2.0))))


@computes_in_float32
def tan(input):
    return div(sin(input), cos(input))


@computes_in_float32
def sinh(input):
    # expm1 keeps small arguments exact ((e - 1/e) / 2 cancels), and exp(-x) rather than 1 / e
    # keeps the slope finite where exp(x) underflows to 0
    return mul(sub(expm1(input), expm1(neg(input))), 0.5)


@computes_in_float32
def cosh(input):
    return mul(add(exp(input), exp(neg(input))), 0.5)


# ----------------------------------------------------------------------------- inverse trigonometric and hyperbolic
# atan, asin, acos, atan2 and erfinv are primitives (one arctangent and erfinv's pieces are the
# polynomials the compiler emits); the rest are compositions, accurate over the whole domain:
# no cancellation, overflow or underflow short of the result's own.

atan, asin, acos, erfinv = (_float_unary(n) for n in ("atan", "asin", "acos", "erfinv"))
arctan, arcsin, arccos = atan, asin, acos


def atan2(input, other):
    """The angle of (other, input) in (-pi, pi], C's signed zeros and infinities; integer and
    bool operands give the default float dtype, as in PyTorch."""
    a, b = promote_operands((input, other), at_least=dtypes.defaults.floating)
    return P["atan2"].bind(a, b)


arctan2 = atan2


def _float_operands(name, input, other):
    """Promoted operands of an op PyTorch has no integer kernel for (hypot, logaddexp)."""
    a, b = promote_operands((input, other))
    if not dtypes.is_floating_np(a._data.dtype):
        from .linalg import scalar_type_name
        raise NotImplementedError(f"\"{name}_cpu\" not implemented for '{scalar_type_name(a.dtype)}'")
    return a, b


def _big_threshold(x):
    """Where asinh and acosh switch to log(2|x|): 1/sqrt(eps) of x's dtype (float32 2^12, float64
    2^26), from which on the neglected 1/(4x^2) is below half an ulp; x^2 is far from overflow."""
    return 2.0 ** math.ceil(-math.log2(np.finfo(x._data.dtype).eps) / 2)


@computes_in_float32
def asinh(input):
    """log(|x| + sqrt(x^2 + 1)) with the sign of x: log1p(|x| + |x| q), q = |x| / (1 + sqrt(1 + x^2))
    (exact near 0) below the threshold, log(|x|) + log(2) above it. |x| is x times +-1, so the
    slope at 0 is 1 (abs's would be 0); each branch reads an operand guarded to its own range,
    so the branch a `where` discards puts no 0 * inf into the gradient; zeros pass as they are
    (-0 included)."""
    x = input if dtypes.is_floating_np(input._data.dtype) else to_dtype(input, dtypes.defaults.floating)
    big = _big_threshold(x)
    sign = where(lt(x, 0), constant(-1.0, x.dtype), constant(1.0, x.dtype))
    a = mul(x, sign)
    large = gt(a, big)
    small = where(large, 0.0, a)
    near = log1p(add(small, mul(small, div(small, add(sqrt(add(mul(small, small), 1.0)), 1.0)))))
    far = add(log(where(large, a, big)), float(np.log(2.0)))
    out = where(eq(x, 0), x, mul(where(large, far, near), sign))
    return saves_like_pytorch(out, (input,))


@computes_in_float32
def acosh(input):
    """log(x + sqrt(x^2 - 1)) as log1p(t + sqrt(t) sqrt(t + 2)), t = x - 1 (exact near 1), below
    the threshold, log(x) + log(2) above it, each branch reading an operand guarded to its own
    range. sqrt(t) makes every x < 1 nan (sqrt(t (t + 2)) is real again below -1, and its
    product's gradient would be inf * 0 at 1, where PyTorch's is inf)."""
    x = input if dtypes.is_floating_np(input._data.dtype) else to_dtype(input, dtypes.defaults.floating)
    big = _big_threshold(x)
    large = gt(x, big)
    t = sub(where(large, big, x), 1.0)
    near = log1p(add(t, mul(sqrt(t), sqrt(add(t, 2.0)))))
    far = add(log(where(large, x, big)), float(np.log(2.0)))
    return saves_like_pytorch(where(large, far, near), (input,))


@computes_in_float32
def atanh(input):
    """(log1p(x) - log1p(-x)) / 2: the two logs have opposite signs, so nothing cancels; +-inf
    at +-1, nan beyond."""
    x = input if dtypes.is_floating_np(input._data.dtype) else to_dtype(input, dtypes.defaults.floating)
    return saves_like_pytorch(mul(sub(log1p(x), log1p(neg(x))), 0.5), (input,))


arcsinh, arccosh, arctanh = asinh, acosh, atanh


@computes_in_float32
def hypot(input, other):
    """sqrt(x^2 + y^2) as big * sqrt(1 + (small / big)^2) over |x|, |y|: no overflow or
    underflow in between; C's hypot at the edges (0 at the origin, inf where either is inf,
    even beside a nan). The gradient is x / hypot, y / hypot as PyTorch's (nan at the origin),
    except beside an infinity: 0 for both (PyTorch: 0 for the finite operand, nan for the other)."""
    a, b = _float_operands("hypot", input, other)
    ax, ay = abs(a), abs(b)
    infinite = logical_or(isinf(ax), isinf(ay))
    big = where(infinite, 1.0, maximum(ax, ay))  # (guarded: the discarded branch's slopes stay finite)
    ratio = div(minimum(ax, ay), big)
    out = where(eq(big, 0), big, mul(big, sqrt(add(mul(ratio, ratio), 1.0))))
    out = where(infinite, float("inf"), out)
    return saves_like_pytorch(out, (a, b), output=True)


@computes_in_float32
def logaddexp(input, other):
    """log(exp(x) + exp(y)) as max + log1p(exp(-|x - y|)) (PyTorch's formula); equal operands
    add log(2) directly, so equal infinities give themselves rather than inf - inf."""
    a, b = _float_operands("logaddexp", input, other)
    tail = log1p(exp(neg(abs(sub(a, b)))))
    return saves_like_pytorch(add(maximum(a, b), where(eq(a, b), float(np.log(2.0)), tail)), (a, b))


@computes_in_float32
def logaddexp2(input, other):
    """log2(2^x + 2^y) as max + log1p(2^-|x - y|) / log(2); 2^-d is pow (exp(-d log 2) would
    lose d * eps of the small term to rounding)."""
    a, b = _float_operands("logaddexp2", input, other)
    tail = mul(log1p(pow(2.0, neg(abs(sub(a, b))))), float(1 / np.log(2.0)))
    return saves_like_pytorch(add(maximum(a, b), where(eq(a, b), 1.0, tail)), (a, b))


@keeps_device
def where(condition, input=None, other=None):
    if input is None and other is None:
        from .indexing import nonzero
        return nonzero(condition, as_tuple=True)
    if not isinstance(condition, Tensor):
        condition = constant(bool(condition), dtypes.bool_)
    condition = to_dtype(condition, dtypes.bool_)
    a, b = promote_operands((input, other), wrap=operand)
    return P["where"].bind(condition, a, b)


def clamp(input, min=None, max=None):
    """min(max(input, min), max), nan staying nan. The gradient passes where min <= input <= max
    (at the bounds too) and is 0 elsewhere, at nan included, as in PyTorch."""
    if min is None and max is None:
        raise RuntimeError("clamp: At least one of 'min' or 'max' must not be None")
    out = input
    if min is not None:
        out = where(lt(out, min), min, out)
    if max is not None:
        out = where(gt(out, max), max, out)
    if input.is_floating_point():
        out = where(ne(input, input), float("nan"), out)  # nan stays nan but takes no gradient
    if out.dtype is not input.dtype and not isinstance(min, Tensor) and not isinstance(max, Tensor):
        out = to_dtype(out, dtypes.promote(input.dtype, out.dtype))
    return saves_like_pytorch(out, (input,))  # ClampBackward saves the input


clip = clamp


def clamp_guard(input, min=None, max=None):
    """Clamp the operand of a branch that a `where` then discards beyond the bound (an exp that
    would overflow): unlike clamp, nan passes through with its gradient, so a nan input still
    gives the nan gradient PyTorch's fused kernels give."""
    out = input
    if min is not None:
        out = where(lt(out, min), min, out)
    if max is not None:
        out = where(gt(out, max), max, out)
    return out


def clamp_min(input, min):
    return clamp(input, min=min)


def clamp_max(input, max):
    return clamp(input, max=max)


@computes_in_float32
def lerp(input, end, weight):
    """input + weight * (end - input), computed from the nearer end as PyTorch does (exact at
    weight 1, and an infinite input gives an infinite result instead of inf - inf). As in
    PyTorch, `end` (and a tensor weight) must have the input's dtype."""
    if type(weight) is ScalarInput:  # a runtime scalar of a trace: a 0-d weight of the input's dtype
        weight = constant(weight, input.dtype)
    for name, other in (("end", end), ("weight", weight)):
        if isinstance(other, Tensor) and isinstance(input, Tensor) and other.dtype is not input.dtype:
            raise RuntimeError(f"lerp: expected dtype {input.dtype.name} for `{name}` but got dtype {other.dtype.name}"
                               f" (input {input.dtype.short}[{','.join(str(d) for d in input.shape)}], {name} "
                               f"{other.dtype.short}[{','.join(str(d) for d in other.shape)}])")
    if isinstance(weight, _NUMBER):
        if -0.5 < weight < 0.5:
            return add(input, mul(sub(end, input), weight))
        return sub(end, mul(sub(end, input), 1.0 - weight))
    near_start = add(input, mul(sub(end, input), weight))
    near_end = sub(end, mul(sub(end, input), sub(1.0, weight)))
    return where(lt(abs(weight), 0.5), near_start, near_end)


def isnan(input):
    return ne(input, input)


@keeps_device
def isinf(input):
    return eq(abs(input), float("inf")) if input.is_floating_point() else zeros_bool(input)


@keeps_device
def isfinite(input):
    return logical_not(logical_or(isnan(input), isinf(input))) if input.is_floating_point() else \
        logical_not(zeros_bool(input))


def zeros_bool(input):
    return Tensor._wrap(np.zeros(input.shape, dtype=bool))


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):
    finfo = dtypes.finfo(input.dtype)  # (bfloat16's limits come from ml_dtypes)
    out = where(isnan(input), nan, input)
    out = where(eq(out, float("inf")), finfo.max if posinf is None else posinf, out)
    return where(eq(out, float("-inf")), finfo.min if neginf is None else neginf, out)


@computes_in_float32
def addcmul(input, tensor1, tensor2, value=1):
    return add(input, mul(mul(tensor1, tensor2), value))


@computes_in_float32
def addcdiv(input, tensor1, tensor2, value=1):
    return add(input, mul(div(tensor1, tensor2), value))


def clone(input, memory_format=None):
    return P["convert"].bind(input, dtype=input.dtype.name)


subtract, multiply, divide, negative = sub, mul, div, neg
