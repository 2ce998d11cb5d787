"""Elementwise primitives: unary math, binary arithmetic and comparisons, where, convert,
and the `constant` source. Binary operands broadcast numpy-style and share one dtype (the
frontend promotes first); each VJP sums its cotangent back to the operand's shape. Each row
also holds the primitive's scalar lowering rule, which every compiler target reads.
erfinv's approximation (Chebyshev pieces, ember/ops/erf_coefficients.py) is evaluated here
eagerly, as compiler/llvm/math.py emits it; eager erf and erfc are libm's.
"""
import math
import warnings
from decimal import Decimal, localcontext

import numpy as np

from . import compose as C
from .erf_coefficients import _DIGITS, _PI, erfinv_pieces
from .registry import OpError, Spec, describe, register
from .shape_rules import broadcast_shapes, require_float, same_dtype
from ember import dtypes


# numpy ufuncs warn on inf/nan results (inf - inf, 0 * inf); PyTorch does not, so neither do we.
# The hot binary ops would pay ~1 us a call (70% of an eager add) for np.errstate, so the
# warnings numpy raises from this module's and reduce's calls are filtered instead, by module
# and by numpy's wording: nothing else is silenced.
warnings.filterwarnings("ignore", r"(invalid value|overflow|divide by zero|underflow) encountered",
                        RuntimeWarning, r"ember\.ops\.(elementwise|reduce)$")


def _quiet(fn):
    """numpy ufuncs warn on inf/nan results; PyTorch does not, so neither do we."""
    def impl(*arrays, **attrs):
        with np.errstate(all="ignore"):
            return fn(*arrays, **attrs)
    impl.__name__ = getattr(fn, "__name__", "impl")
    return impl


# ----------------------------------------------------------------------------- unary

def _float_unary_rule(name):
    def infer(x):
        require_float(name, x)
        return Spec(x.shape, x.dtype)
    return infer


# what PyTorch suggests instead of arithmetic on bool tensors
_BOOL_HINTS = {"neg": "; to invert a mask use `~` or logical_not()",
               "sub": "; use `^` or logical_xor() instead"}


def _any_unary_rule(name):
    def infer(x):
        if x.dtype is dtypes.bool_:
            raise OpError(name, f"is not defined for bool tensors, got {describe(x)}{_BOOL_HINTS.get(name, '')}")
        return Spec(x.shape, x.dtype)
    return infer


def _zero_vjp(g, out, x):
    return (C.mul(g, C.scalar(0, g)),)


_erf_scalar, _erfc_scalar = np.frompyfunc(math.erf, 1, 1), np.frompyfunc(math.erfc, 1, 1)


def _erf(x):
    return np.asarray(_erf_scalar(x)).astype(x.dtype)  # (frompyfunc gives a 0-d array a Python float)


def _erfc(x):
    """libm's erfc in float64 (1 - erf would lose the tail: erfc(4) in float32, erfc(6) in
    float64 would round to 0), then rounded once to x's dtype."""
    return np.asarray(_erfc_scalar(x)).astype(x.dtype)


def _sigmoid(x):
    # from d = exp(-|x|) <= 1: no overflow, and d / (1 + d) keeps the relative precision of tiny
    # results for very negative x (0.5 + 0.5 * tanh(x / 2) cancels to 0 below about -40 in float64)
    d = np.exp(-np.abs(x))
    return (np.where(x >= 0, 1, d) / (1 + d)).astype(x.dtype, copy=False)


def _relu(x):
    return np.maximum(x, 0).astype(x.dtype, copy=False)


def _rsqrt(x):
    return 1 / np.sqrt(x)


def _reciprocal(x):
    return 1 / x


# ----------------------------------------------------------------------------- erfinv (eager)

def _erfinv(x):
    """numpy's missing erfinv: the pieces for x's dtype, evaluated in float64 (so float32
    results are rounded once), in blocks that stay in cache through the Chebyshev sums."""
    pieces = erfinv_pieces(x.dtype == np.float64)
    flat = x.reshape(-1).astype(np.float64)
    out = np.empty_like(flat)
    with np.errstate(all="ignore"):
        for start in range(0, flat.size, _ERFINV_BLOCK):
            out[start:start + _ERFINV_BLOCK] = _erfinv_block(flat[start:start + _ERFINV_BLOCK], pieces)
    return out.reshape(x.shape).astype(x.dtype, copy=False)


_ERFINV_BLOCK = 8192


def _erfinv_block(x, pieces):
    """erfinv of a float64 block: each piece where its variable is in range, +-inf at +-1."""
    w = -np.log((1 - x) * (1 + x))
    variables = {"w": w, "sqrt_w": np.sqrt(w)}
    g = np.full(x.shape, np.nan)
    ends = [piece[1] for piece in pieces[1:]] + [np.inf]
    for n, ((variable, low, high, coefficients), end) in enumerate(zip(pieces, ends)):
        v = variables[variable]
        following = variables[pieces[n + 1][0]] if n + 1 < len(pieces) else v
        inside = (v >= low) & (following < end)  # where piece n + 1's variable is below its start
        y = np.clip((2 * v[inside] - (low + high)) / (high - low), -1, 1)
        value = np.polynomial.chebyshev.chebval(y, coefficients)
        g[inside] = math.sqrt(math.pi) / 2 + v[inside] * value if variable == "w" else value
    out = x * g
    ones = np.abs(x) == 1
    out[ones] = np.copysign(np.inf, x[ones])
    return out


# ----------------------------------------------------------------------------- scalar lowering rules
# `rule(s, *operands, **attrs)`: the primitive's value per element, built with the loop IR's
# vocabulary `s` (compiler/loop_ir.py ScalarBuilder). Targets compile the core ops themselves and
# supply the float math functions (`s.op("exp", x)`) from their intrinsic tables.

def _math(function):
    """A float math function every target supplies (exp, sqrt, floor, ...)."""
    return lambda s, x: s.op(function, x)


def _relu_lowering(s, x):
    return s.where(s.lt(x, 0), 0, x)


def _abs_lowering(s, x):
    return s.op("abs", x) if s.is_float(x) else s.where(s.lt(x, 0), s.neg(x), x)


def _sign_lowering(s, x):
    """(x > 0) - (x < 0): as torch, nan and -0.0 give 0."""
    return s.sub(s.cast(s.gt(x, 0), x.dtype), s.cast(s.lt(x, 0), x.dtype))


def _sign(x):
    """torch.sign: -1, 0 or 1; nan and -0.0 give 0 (numpy keeps nan and -0.0)."""
    if x.dtype.kind != "f":
        return np.sign(x)
    return np.where(x < 0, -1, np.where(x > 0, 1, 0)).astype(x.dtype)


def _in_float64(ufunc):
    """numpy's float32 loops of arcsin, arctan and arctan2 are up to 3 ulp off (PyTorch's within
    1): float32 operands are computed in float64 and rounded once."""
    def impl(*arrays):
        with np.errstate(all="ignore"):
            return ufunc(*[a.astype(np.float64, copy=False) for a in arrays]).astype(arrays[0].dtype, copy=False)
    impl.__name__ = ufunc.__name__
    return impl


def _split(value, dtype):
    """(hi, lo): the Decimal `value` as the nearest `dtype` number plus the rest, rounded."""
    cast = np.float32 if dtype == "float32" else np.float64
    with localcontext() as context:
        context.prec = _DIGITS
        hi = cast(value)
        return float(hi), float(cast(value - Decimal(float(hi))))


_PI_PARTS = {dtype: _split(_PI, dtype) for dtype in ("float32", "float64")}
_HALF_PI_PARTS = {dtype: (hi / 2, lo / 2) for dtype, (hi, lo) in _PI_PARTS.items()}  # (exact halvings)


def _atan2_lowering(s, y, x):
    """atan2 from one arctangent of a ratio in [0, 1] (the targets' "atan"): atan(min/max of
    |x|, |y|), reflected into its octant as pi/2 -+ a or pi - a (pi in two parts, so the
    constant's rounding adds nothing), the sign of y copied on. x's sign bit decides the
    half-plane, so atan2(+-0, -0) = +-pi as in C; 0/0 and inf/inf take the ratios 0 and 1."""
    dtype = x.dtype
    ay, ax = s.op("abs", y), s.op("abs", x)
    big, small = s.op("maximum", ax, ay), s.op("minimum", ax, ay)
    ratio = s.where(s.eq(big, 0), 0, s.where(s.eq(small, big), 1, s.div(small, big)))  # nan stays nan
    a = s.op("atan", ratio)
    swapped = s.gt(ay, ax)
    negative_x = s.lt(s.op("copysign", s.const(1.0, dtype), x), 0)
    (half_hi, half_lo), (pi_hi, pi_lo) = _HALF_PI_PARTS[dtype], _PI_PARTS[dtype]
    zero = s.const(0.0, dtype)
    hi = s.where(swapped, s.const(half_hi, dtype), s.where(negative_x, s.const(pi_hi, dtype), zero))
    lo = s.where(swapped, s.const(half_lo, dtype), s.where(negative_x, s.const(pi_lo, dtype), zero))
    signed = s.where(s.logical_xor(swapped, negative_x), s.neg(a), a)
    return s.op("copysign", s.add(s.add(lo, signed), hi), y)


def _cosine_of_asin(s, x):
    """sqrt(1 - x^2), nan beyond |x| = 1: as (1 - x)(1 + x) from |x| = 1/2 on, where 1 - |x| is
    exact (the relative precision near +-1 that asin and acos need), 1 - x*x below."""
    square = s.where(s.lt(s.op("abs", x), 0.5), s.sub(1, s.mul(x, x)), s.mul(s.sub(1, x), s.add(1, x)))
    return s.op("sqrt", square)


def _asin_vjp(g, out, x):
    """PyTorch's rule: g * rsqrt(1 - x^2) (inf at +-1, nan beyond)."""
    return (C.mul(g, _p("rsqrt").bind(C.sub(C.scalar(1, x), C.mul(x, x)))),)


def _erfinv_vjp(g, out, x):
    """PyTorch's rule: sqrt(pi)/2 * exp(erfinv(x)^2) * g."""
    return (C.mul(C.mul(C.scalar(math.sqrt(math.pi) / 2, out), _p("exp").bind(C.mul(out, out))), g),)


_UNARY = {
    # name: (impl, float-only, vjp(g, out, x), lowering)
    "neg": (np.negative, False, lambda g, out, x: (C.neg(g),), lambda s, x: s.neg(x)),
    "exp": (_quiet(np.exp), True, lambda g, out, x: (C.mul(g, out),), _math("exp")),
    "log": (_quiet(np.log), True, lambda g, out, x: (C.div(g, x),), _math("log")),
    "log1p": (_quiet(np.log1p), True, lambda g, out, x: (C.div(g, C.add(x, C.scalar(1, x))),), _math("log1p")),
    "expm1": (_quiet(np.expm1), True, lambda g, out, x: (C.mul(g, C.add(out, C.scalar(1, out))),), _math("expm1")),
    "sqrt": (_quiet(np.sqrt), True, lambda g, out, x: (C.div(C.mul(g, C.scalar(0.5, g)), out),), _math("sqrt")),
    "rsqrt": (_quiet(_rsqrt), True,
              lambda g, out, x: (C.mul(g, C.mul(C.mul(out, C.mul(out, out)), C.scalar(-0.5, out))),),
              lambda s, x: s.div(1, s.op("sqrt", x))),
    "reciprocal": (_quiet(_reciprocal), True, lambda g, out, x: (C.neg(C.mul(g, C.mul(out, out))),),
                   lambda s, x: s.div(1, x)),
    "sin": (_quiet(np.sin), True, lambda g, out, x: (C.mul(g, _p("cos").bind(x)),), _math("sin")),
    "cos": (_quiet(np.cos), True, lambda g, out, x: (C.neg(C.mul(g, _p("sin").bind(x))),), _math("cos")),
    "tanh": (np.tanh, True, lambda g, out, x: (C.mul(g, C.sub(C.scalar(1, out), C.mul(out, out))),), _math("tanh")),
    "sigmoid": (_sigmoid, True, lambda g, out, x: (C.mul(g, C.mul(out, C.sub(C.scalar(1, out), out))),),
                _math("sigmoid")),
    "atan": (_in_float64(np.arctan), True, lambda g, out, x: (C.div(g, C.add(C.mul(x, x), C.scalar(1, x))),),
             _math("atan")),
    "asin": (_in_float64(np.arcsin), True, _asin_vjp, lambda s, x: _atan2_lowering(s, x, _cosine_of_asin(s, x))),
    "acos": (_in_float64(np.arccos), True, lambda g, out, x: (C.neg(_asin_vjp(g, out, x)[0]),),
             lambda s, x: _atan2_lowering(s, _cosine_of_asin(s, x), x)),
    "erfinv": (_erfinv, True, _erfinv_vjp, _math("erfinv")),
    "erf": (_erf, True, lambda g, out, x: (
        C.mul(g, C.mul(C.scalar(2 / math.sqrt(math.pi), x), _p("exp").bind(C.neg(C.mul(x, x))))),), _math("erf")),
    "erfc": (_erfc, True, lambda g, out, x: (
        C.mul(g, C.mul(C.scalar(-2 / math.sqrt(math.pi), x), _p("exp").bind(C.neg(C.mul(x, x))))),), _math("erfc")),
    # PyTorch passes the gradient where relu(x) > 0 and where x is nan (threshold_backward's
    # `out <= 0 ? 0 : g`); relu's output is never negative, so `out != 0` says the same
    "relu": (_relu, False, lambda g, out, x: (
        C.where(_p("ne").bind(out, C.scalar(0, out)), g, C.scalar(0, g)),), _relu_lowering),
    "abs": (np.abs, False, lambda g, out, x: (C.mul(g, _p("sign").bind(x)),), _abs_lowering),
    "sign": (_sign, False, _zero_vjp, _sign_lowering),
    "floor": (np.floor, True, _zero_vjp, _math("floor")),
    "ceil": (np.ceil, True, _zero_vjp, _math("ceil")),
    "round": (np.round, True, _zero_vjp, _math("round")),  # half to even, as numpy
}


def _p(name):
    from .registry import PRIMITIVES
    return PRIMITIVES[name]


for _name, (_impl, _float_only, _vjp, _lowering) in _UNARY.items():
    _rule = _float_unary_rule(_name) if _float_only else _any_unary_rule(_name)
    register(_name, "elementwise", _impl, _rule, _vjp, lowering=_lowering)


def _logical_not_rule(x):
    return Spec(x.shape, dtypes.bool_)


register("logical_not", "elementwise", np.logical_not, _logical_not_rule,
         lowering=lambda s, x: s.logical_not(s.cast(x, "bool")))  # numpy: any nonzero value is true


# ----------------------------------------------------------------------------- binary

def _binary_rule(name, float_only=False, result=None):
    def infer(a, b):
        dtype = same_dtype(name, a, b)
        if float_only:
            require_float(name, a)
        elif dtype is dtypes.bool_ and result is None:
            raise OpError(name, f"is not defined for bool tensors, got {describe(a)} and {describe(b)}"
                                f"{_BOOL_HINTS.get(name, '')}")
        return Spec(broadcast_shapes(name, a, b), result or dtype)
    return infer


def _add_vjp(g, out, a, b):
    return C.sum_to(g, a.shape), C.sum_to(g, b.shape)


def _sub_vjp(g, out, a, b):
    return C.sum_to(g, a.shape), C.sum_to(C.neg(g), b.shape)


def _mul_vjp(g, out, a, b):
    # each cotangent only when wanted: the other operand's value may have been overwritten in
    # place since (allowed, as in PyTorch, when nothing needs it)
    return (C.sum_to(C.mul(g, b), a.shape) if C.needs_grad(a) else None,
            C.sum_to(C.mul(g, a), b.shape) if C.needs_grad(b) else None)


def _div_vjp(g, out, a, b):
    """PyTorch's rule, from the operands (not the result: writing the result in place later
    leaves the backward valid, writing an operand fails it, as in PyTorch): -g * ((a / b) / b)
    for b, which overflows only where the slope does (b * b would from |b| ~ 1e19 in float32)."""
    return (C.sum_to(C.div(g, b), a.shape) if C.needs_grad(a) else None,
            C.sum_to(C.neg(C.mul(g, C.div(C.div(a, b), b))), b.shape) if C.needs_grad(b) else None)


def _pow_vjp(g, out, a, b):
    """PyTorch's rules: d/da = b a^(b-1), taken as 0 where b == 0 (so x ** 0 has slope 0 at
    x = 0 and at nan); d/db = a^b log(a), taken as 0 where a == 0 and b >= 0 (0 * log 0), nan
    for a negative base."""
    zero = C.scalar(0, g)
    ga = gb = None
    if C.needs_grad(a):
        slope = C.mul(b, _p("pow").bind(a, C.sub(b, C.scalar(1, b))))
        ga = C.sum_to(C.where(_p("eq").bind(b, zero), zero, C.mul(g, slope)), a.shape)
    if C.needs_grad(b):
        flat = _p("logical_and").bind(_p("eq").bind(a, zero), _p("ge").bind(b, zero))
        gb = C.sum_to(C.where(flat, zero, C.mul(g, C.mul(out, _p("log").bind(a)))), b.shape)
    return ga, gb


def _extremum_vjp(a_loses, b_loses):
    """PyTorch's rule: the operand that lost gets 0, a tie splits the gradient evenly, and
    where the comparison is unordered (a nan) both operands get all of it."""
    def vjp(g, out, a, b):
        zero = C.scalar(0, g)
        shared = C.where(_p("eq").bind(a, b), C.mul(g, C.scalar(0.5, g)), g)
        ga = C.sum_to(C.where(_p(a_loses).bind(a, b), zero, shared), a.shape) if C.needs_grad(a) else None
        gb = C.sum_to(C.where(_p(b_loses).bind(a, b), zero, shared), b.shape) if C.needs_grad(b) else None
        return ga, gb
    return vjp


def _atan2_vjp(g, out, y, x):
    """PyTorch's rule: g * x / (x^2 + y^2) for y and -g * y / (x^2 + y^2) for x, with the
    reciprocal taken as 0 where x^2 + y^2 is 0 (the origin, and where the squares underflow)."""
    zero = C.scalar(0, g)
    squares = C.add(C.mul(y, y), C.mul(x, x))
    recip = C.where(_p("eq").bind(squares, zero), zero, _p("reciprocal").bind(squares))
    return (C.sum_to(C.mul(C.mul(g, x), recip), y.shape) if C.needs_grad(y) else None,
            C.sum_to(C.mul(C.mul(g, C.neg(y)), recip), x.shape) if C.needs_grad(x) else None)


def _remainder_vjp(g, out, a, b):
    return C.sum_to(g, a.shape), C.sum_to(C.neg(C.mul(g, _p("floor_divide").bind(a, b))), b.shape)


def _check_integer_divisor(b):
    if b.dtype.kind in "iu" and not np.all(b):
        raise ZeroDivisionError("integer division by zero")  # as PyTorch; numpy would give 0


def _remainder(a, b):
    """x % y with y's sign, as PyTorch (and the lowering below): fmod moved to the sign of y
    where it is not zero, so a zero result keeps x's sign (numpy's remainder gives y's)."""
    _check_integer_divisor(b)
    with np.errstate(all="ignore"):
        if a.dtype.kind != "f":
            return np.remainder(a, b)
        r = np.fmod(a, b)
        return np.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)


def _floor_divide(a, b):
    _check_integer_divisor(b)
    with np.errstate(all="ignore"):
        return np.floor_divide(a, b)


def _in_one_layout(ufunc):
    """A binary ufunc whose broadcast operand is first laid out like the full one, when large.

    numpy iterates in the memory order of the operands; a broadcast operand held in another
    order than the full one (a pooling VJP's per-window share, row-major, against batch-last
    windows) makes the inner loop stride across memory, 20x slower than one copy of the
    (small) broadcast data into the full operand's order."""
    def impl(a, b):
        if a.size + b.size >= _RELAYOUT_MIN_SIZE and a.ndim == b.ndim > 1:
            a, b = _broadcast_in_layout_of_full(a, b)
        return ufunc(a, b)
    impl.__name__ = ufunc.__name__
    return impl


_RELAYOUT_MIN_SIZE = 1 << 16


def _broadcast_in_layout_of_full(a, b):
    a_spread, b_spread = _is_spread(a, b), _is_spread(b, a)
    if a_spread == b_spread:
        return a, b
    small, full = (a, b) if a_spread else (b, a)
    shared = [axis for axis, (st, d, e) in enumerate(zip(small.strides, small.shape, full.shape))
              if st != 0 and d > 1 and e > 1]
    if sorted(shared, key=lambda axis: -abs(small.strides[axis])) == \
            sorted(shared, key=lambda axis: -abs(full.strides[axis])):
        return a, b
    compact = small[tuple(slice(0, 1) if st == 0 else slice(None) for st in small.strides)]
    order = sorted(range(full.ndim), key=lambda axis: -abs(full.strides[axis]))
    relaid = np.empty([compact.shape[axis] for axis in order], dtype=compact.dtype)
    relaid[...] = compact.transpose(order)
    small = np.broadcast_to(relaid.transpose(np.argsort(order)), small.shape)
    return (small, full) if a_spread else (full, small)


def _is_spread(x, other):
    """Is x broadcast (size 1 or stride 0) along an axis where `other` is not?"""
    return any((d == 1 or st == 0) and e > 1 for st, d, e in zip(x.strides, x.shape, other.shape))


def _pow_lowering(s, x, y):
    if s.is_float(x) and y.is_const:  # the common constant exponents need no call
        if y.attr == 2.0:
            return s.mul(x, x)
        if y.attr == 1.0:
            return x
        if y.attr == 0.5:
            return s.op("sqrt", x)
        if y.attr == -1.0:
            return s.div(1, x)
    return s.op("pow", x, y)


def _python_division(s, x, y, want):
    """Python's signs for floor division (`want` "quotient") and modulo ("remainder")."""
    if s.is_float(x):
        return _float_floor_divide(s, x, y) if want == "quotient" else _float_remainder(s, x, y)
    s.check(s.ne(y, 0), "ZeroDivisionError", "integer division by zero")
    # a zero divisor gives 0 (the check reports it); x // -1 negates without C's INT_MIN trap
    minus_one = s.eq(y, -1)
    unsafe = s.logical_or(s.eq(y, 0), minus_one)
    safe = s.where(unsafe, 1, y)
    q, r = s.trunc_div(x, safe), s.trunc_rem(x, safe)
    fix = s.logical_and(s.ne(r, 0), s.lt(s.bitwise_xor(r, y), 0))  # r and y of opposite signs
    if want == "quotient":
        return s.where(minus_one, s.neg(x), s.where(unsafe, 0, s.where(fix, s.sub(q, 1), q)))
    return s.where(unsafe, 0, s.where(fix, s.add(r, y), r))


def _float_remainder(s, x, y):
    """Python's x % y: C's fmod moved to the sign of y."""
    r = s.trunc_rem(x, y)
    fix = s.logical_and(s.ne(r, 0), s.logical_xor(s.lt(r, 0), s.lt(y, 0)))
    return s.where(fix, s.add(r, y), r)


def _float_floor_divide(s, x, y):
    """numpy's float floor_divide: (x - fmod(x, y)) / y rounded to the nearest integer below,
    as npy_divmod computes it; x / y when y == 0."""
    mod = s.trunc_rem(x, y)
    div = s.div(s.sub(x, mod), y)
    fix = s.logical_and(s.ne(mod, 0), s.logical_xor(s.lt(y, 0), s.lt(mod, 0)))
    div = s.where(fix, s.sub(div, 1), div)
    floored = s.op("floor", div)
    floored = s.where(s.gt(s.sub(div, floored), 0.5), s.add(floored, 1), floored)
    quotient = s.div(x, y)
    nonzero_div = s.where(s.eq(div, 0), s.op("copysign", s.const(0.0, x.dtype), quotient), floored)
    return s.where(s.eq(y, 0), quotient, nonzero_div)


def _op_lowering(name):
    """An op the targets compute directly (arithmetic, comparisons, maximum/minimum)."""
    return lambda s, a, b: s.op(name, a, b)


def _logical_lowering(name):
    return lambda s, a, b: s.op(name, s.cast(a, "bool"), s.cast(b, "bool"))  # any nonzero value is true


register("add", "elementwise", _in_one_layout(np.add), _binary_rule("add"), _add_vjp, lowering=_op_lowering("add"))
register("sub", "elementwise", _in_one_layout(np.subtract), _binary_rule("sub"), _sub_vjp, lowering=_op_lowering("sub"))
register("mul", "elementwise", _in_one_layout(np.multiply), _binary_rule("mul"), _mul_vjp, lowering=_op_lowering("mul"))
register("div", "elementwise", _quiet(_in_one_layout(np.true_divide)), _binary_rule("div", float_only=True),
         _div_vjp, lowering=_op_lowering("div"))
def _power(a, b):
    """numpy's power; integers to negative powers as PyTorch (1 ** -n = 1, (-1) ** -n = +-1, else 0)."""
    if a.dtype.kind in "iu" and b.dtype.kind in "iu" and (b < 0).any():
        negative, magnitude = b < 0, np.where(b < 0, 0, b)
        odd = (np.abs(b) % 2 == 1)
        small = np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), 0)).astype(np.result_type(a, b))
        return np.where(negative, small, np.power(a, magnitude))
    return np.power(a, b)


register("pow", "elementwise", _quiet(_power), _binary_rule("pow"), _pow_vjp, lowering=_pow_lowering)
register("maximum", "elementwise", _in_one_layout(np.maximum), _binary_rule("maximum"), _extremum_vjp("lt", "gt"),
         lowering=_op_lowering("maximum"))  # nan-propagating, as numpy's
register("minimum", "elementwise", _in_one_layout(np.minimum), _binary_rule("minimum"), _extremum_vjp("gt", "lt"),
         lowering=_op_lowering("minimum"))
register("atan2", "elementwise", _in_float64(np.arctan2), _binary_rule("atan2", float_only=True), _atan2_vjp,
         lowering=_atan2_lowering)
register("remainder", "elementwise", _remainder, _binary_rule("remainder"), _remainder_vjp,
         lowering=lambda s, a, b: _python_division(s, a, b, "remainder"))
register("floor_divide", "elementwise", _floor_divide, _binary_rule("floor_divide"),
         lowering=lambda s, a, b: _python_division(s, a, b, "quotient"))

for _name, _impl in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
                     ("gt", np.greater), ("ge", np.greater_equal)):
    register(_name, "elementwise", _impl, _binary_rule(_name, result=dtypes.bool_), lowering=_op_lowering(_name))
for _name, _impl in (("logical_and", np.logical_and), ("logical_or", np.logical_or),
                     ("logical_xor", np.logical_xor)):
    register(_name, "elementwise", _impl, _binary_rule(_name, result=dtypes.bool_), lowering=_logical_lowering(_name))


# ----------------------------------------------------------------------------- where, convert, constant

def _where_rule(cond, a, b):
    if cond.dtype is not dtypes.bool_:
        raise OpError("where", f"condition must be bool, got {describe(cond)}")
    dtype = same_dtype("where", a, b)
    return Spec(broadcast_shapes("where", cond, a, b), dtype)


def _where_vjp(g, out, cond, a, b):
    zero = C.scalar(0, g)
    return None, C.sum_to(C.where(cond, g, zero), a.shape), C.sum_to(C.where(cond, zero, g), b.shape)


def _where(cond, a, b):
    """np.where branches per element and mispredicts on a data-dependent mask (a relu's VJP):
    large selections pick the bits instead, with an all-ones/all-zeros integer mask. Exact."""
    if a.dtype.kind not in "fiu" or a.dtype != b.dtype or cond.size < _BIT_SELECT_MIN_SIZE:
        return np.where(cond, a, b)
    shape = np.broadcast_shapes(cond.shape, a.shape, b.shape)
    bits = np.dtype(f"i{a.dtype.itemsize}")
    mask = np.subtract(bits.type(0), cond, dtype=bits)  # -1 (all ones) where cond holds, else 0
    picked = np.bitwise_and(a.view(bits), mask)
    if b.size != 1 or b.reshape(()).view(bits) != 0:  # b == +0 (a relu's VJP) adds nothing
        np.invert(mask, out=mask)
        other = np.bitwise_and(b.view(bits), mask)
        picked = np.bitwise_or(picked, other, out=picked if picked.shape == shape else None)
    if picked.shape != shape:
        return np.where(cond, a, b)
    return picked.view(a.dtype)


_BIT_SELECT_MIN_SIZE = 4096


register("where", "elementwise", _where, _where_rule, _where_vjp, lowering=lambda s, cond, a, b: s.where(cond, a, b))


def _convert(x, dtype):
    if x.dtype == dtype:
        return x.astype(dtype, order="C")  # clone() lands here: row-major, whatever the source's strides
    if dtype in ("float16", "bfloat16") and x.dtype.itemsize > (4 if x.dtype.kind == "f" else 2):
        x = x.astype(np.float32)  # as PyTorch: float64 and int32/int64 reach 2-byte floats through float32
    # a cast keeps the source's memory order (as torch's preserve_format) when its elements fill
    # a block of memory exactly: a cast of a transposed array then streams, and the elementwise
    # ops that follow see operands of one layout; others (expanded, sliced) become row-major
    return x.astype(dtype, order="K" if _dense(x) else "C")


def _dense(x):
    """Do x's elements fill a block of memory exactly, in some order of its dims?"""
    if x.flags.c_contiguous or x.flags.f_contiguous:
        return True
    extent = x.itemsize
    for stride, n in sorted((abs(s), n) for s, n in zip(x.strides, x.shape) if n > 1):
        if stride != extent:
            return False
        extent *= n
    return True


def _convert_rule(x, dtype):
    return Spec(x.shape, dtypes.from_name(dtype))


def _convert_vjp(g, out, x, dtype):
    if not (x.dtype.is_floating_point and dtypes.from_name(dtype).is_floating_point):
        return (None,)  # a cast to or from integers is not differentiable (as in PyTorch)
    return (C.convert(g, x.dtype),)


register("convert", "elementwise", _convert, _convert_rule, _convert_vjp, lowering=lambda s, x, dtype: s.cast(x, dtype))


def _constant(value, shape, dtype):
    if shape == ():  # the scalars VJP rules make: np.full costs 3x more
        return np.array(value, dtype=dtype)
    return np.full(shape, value, dtype=dtype)


def _constant_rule(value, shape, dtype):
    return Spec(tuple(shape), dtypes.from_name(dtype))


register("constant", "source", _constant, _constant_rule)
