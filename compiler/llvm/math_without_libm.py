"""sin, cos and pow as inlined LLVM code without libm calls, for targets whose LLVM backend has
none (NVPTX: the PTX target takes TRIG_EMITTERS and `emit_pow` behind an intrinsic name of its
own; the CPU keeps llvm.sin/llvm.cos/llvm.pow, which its libm computes). Computed in double
precision (compiler/llvm/math.py `_in_double`), with Payne-Hanek-free Cody-Waite reduction by
pi/2 in four parts and pow through a double-double log; see tests/test_ptx_math.py for the bounds.
"""
import math
from decimal import Decimal, localcontext

from .math import _exp_core, _in_double, _ln2_parts, _log_reduce, _pi, _split_high

def _half_pi_parts():
    """pi/2 as four doubles: three of 33 significant bits and the rest rounded, 152 bits in
    all. With r = fma(-k, part, r) each step is exact for integers |k| < 2^51: k * part is a
    multiple of the part's last bit, and so is the remainder, which is small enough to fit."""
    with localcontext() as context:
        context.prec = 70
        rest, parts = _pi(60) / 2, []
        for _ in range(3):
            parts.append(_split_high(float(rest), 20))
            rest -= Decimal(parts[-1])
        return parts + [float(rest)]


_HALF_PI_PARTS = _half_pi_parts()
# Taylor series on |r| <= pi/4, truncated below 2^-60 of the result:
# sin r = r + r z S(z), cos r = 1 - z/2 + z^2 C(z) with z = r^2
_SIN_SERIES = [(-1) ** n / math.factorial(2 * n + 1) for n in range(1, 9)]
_COS_SERIES = [(-1) ** n / math.factorial(2 * n) for n in range(2, 9)]
# k = round(x * 2/pi) must fit round_to_int (|k| < 2^51); beyond, there is no reduction
_TRIG_LIMIT = 2.0 ** 50
# log(m) = 2 atanh(s) = 2s + 2s^3/3 + 2s^5 (1/5 + s^2/7 + ...), |s| <= 0.172: terms to s^23
_ATANH_TAIL = [1.0 / (2 * n + 1) for n in range(2, 12)]


def _two_thirds():
    """2/3 as a double and the double nearest to what it lacks."""
    with localcontext() as context:
        context.prec = 40
        return 2.0 / 3.0, float(Decimal(2) / 3 - Decimal(2.0 / 3.0))


_TWO_THIRDS = _two_thirds()


def _sin_cos(e, x, quarter_turns):
    """sin(x + quarter_turns * pi/2) in doubles: x = k*pi/2 + r, |r| <= pi/4, by Cody-Waite
    with pi/2 in four parts; then +-sin(r) or +-cos(r) by the quadrant k + quarter_turns."""
    b = e.b
    k_float, k_int = e.round_to_int(e.mul(x, e.const(2 / math.pi)))
    r = x
    for part in _HALF_PI_PARTS:  # FMAs: each step exact while |k| < 2^51 (see _half_pi_parts)
        r = e.fma(k_float, e.const(-part), r)
    z = e.mul(r, r)
    sine = e.add(r, e.mul(e.mul(r, z), e.estrin(z, _SIN_SERIES)))
    # 1 - z/2 rounded, plus what that rounding lost (computed exactly), plus the rest
    half_z = e.mul(z, e.const(0.5))
    w = e.sub(e.const(1.0), half_z)
    lost = e.sub(e.sub(e.const(1.0), w), half_z)
    cosine = e.add(w, e.add(lost, e.mul(e.mul(z, z), e.estrin(z, _COS_SERIES))))
    quadrant = b.add(k_int, e.iconst(quarter_turns)) if quarter_turns else k_int
    odd = b.icmp_unsigned("!=", b.and_(quadrant, e.iconst(1)), e.iconst(0))
    negative = b.icmp_unsigned("!=", b.and_(quadrant, e.iconst(2)), e.iconst(0))
    value = e.select(odd, cosine, sine)
    value = e.select(negative, e.neg(value), value)
    if not quarter_turns:  # sin(-0) = -0 (the polynomial's r + r*z*S(z) gives +0)
        value = e.select(e.eq(x, e.const(0.0)), x, value)
    # inf and nan give nan (r is nan already); so do arguments past the reduction's range
    return e.select(e.lt(e.abs(x), e.const(_TRIG_LIMIT)), value, e.const(math.nan))


def emit_sin(builder, x):
    """sin(x): Cody-Waite reduction by pi/2 and Taylor polynomials, in doubles (floats are
    widened first); accuracy and range in the module docstring."""
    return _in_double(builder, "sin", lambda e, v: _sin_cos(e, v, 0), x)


def emit_cos(builder, x):
    """cos(x) = sin(x + pi/2): the quadrant moved on by one (see emit_sin)."""
    return _in_double(builder, "cos", lambda e, v: _sin_cos(e, v, 1), x)


def _log_double_double(e, a):
    """(hi, lo) with hi + lo = log(a) to about 2^-60 relative, for finite doubles a > 0:
    a = 2^k m, log m = 2 atanh(s) = 2s + 2s^3/3 + 2s^5 R(s^2) with s = (m-1)/(m+1). The
    terms up to 2s^3/3 (over 99.98% of log m) are carried with their rounding errors, from
    exact FMA products and remainders and Fast2Sum; the rest is small enough for doubles."""
    m, k = _log_reduce(e, a)
    f = e.sub(m, e.const(1.0))  # exact: m is within a factor 2 of 1
    u = e.add(f, e.const(2.0))
    u_lo = e.sub(f, e.sub(u, e.const(2.0)))  # 2 + f = u + u_lo exactly
    s = e.div(f, u)
    s_lo = e.div(e.sub(e.fma(e.neg(s), u, f), e.mul(s, u_lo)), u)  # f/(2+f) - s
    w = e.mul(s, s)
    w_lo = e.fma(s, s, e.neg(w))
    cube = e.mul(s, w)
    cube_lo = e.muladd(s, w_lo, e.fma(s, w, e.neg(cube)))  # s^3 = cube + cube_lo
    two_thirds_hi, two_thirds_lo = _TWO_THIRDS
    lead = e.mul(cube, e.const(two_thirds_hi))
    lead_lo = e.add(e.fma(cube, e.const(two_thirds_hi), e.neg(lead)),
                    e.muladd(cube, e.const(two_thirds_lo), e.mul(cube_lo, e.const(two_thirds_hi))))
    rest = e.mul(e.mul(e.add(cube, cube), w), e.estrin(w, _ATANH_TAIL))
    # s_lo moves 2s + 2s^3/3 by (2 + 2s^2) s_lo
    slope = e.mul(e.add(s_lo, s_lo), e.add(e.const(1.0), w))
    two_s = e.add(s, s)
    head = e.add(two_s, lead)
    head_lo = e.add(e.add(e.sub(two_s, head), lead), e.add(e.add(lead_lo, slope), rest))
    ln2_hi, ln2_lo = _ln2_parts(True)
    k_hi = e.mul(k, e.const(ln2_hi))  # exact; |k_hi| >= |head| unless k = 0
    hi = e.add(k_hi, head)
    lo = e.add(e.add(e.sub(k_hi, hi), head), e.muladd(k, e.const(ln2_lo), head_lo))
    total = e.add(hi, lo)
    return total, e.add(e.sub(hi, total), lo)


def _pow(e, x, y):
    """x ** y in doubles with C's (and numpy's, PyTorch's) special cases; see emit_pow."""
    b = e.b
    zero, one, inf, nan = (e.const(v) for v in (0.0, 1.0, math.inf, math.nan))
    a = e.abs(x)
    finite_positive = b.and_(e.gt(a, zero), e.lt(a, inf))
    hi, lo = _log_double_double(e, e.select(finite_positive, a, one))
    log_special = e.select(e.eq(a, zero), e.neg(inf), e.select(e.eq(a, inf), inf, nan))
    hi, lo = e.select(finite_positive, hi, log_special), e.select(finite_positive, lo, zero)
    # y * (hi + lo) = t + t_lo, the product's rounding error from an FMA
    t = e.mul(y, hi)
    t_lo = e.add(e.fma(y, hi, e.neg(t)), e.mul(y, lo))
    saturates = b.not_(b.and_(e.gt(t, e.const(-746.0)), e.lt(t, e.const(710.0))))  # 0, inf, or nan
    magnitude = _exp_core(e, t, e.select(saturates, zero, t_lo))
    magnitude = e.select(b.and_(e.eq(a, one), e.eq(e.abs(y), inf)), one, magnitude)  # (-1) ** +-inf
    integer = e.eq(e.floor(y), y)  # infinities count as even integers
    half = e.mul(y, e.const(0.5))
    odd = b.and_(integer, b.fcmp_ordered("!=", e.floor(half), half))
    result = e.select(b.and_(odd, e.sign_bit_set(x)), e.neg(magnitude), magnitude)
    negative_finite = b.and_(e.lt(x, zero), e.gt(x, e.neg(inf)))
    result = e.select(b.and_(negative_finite, b.not_(integer)), nan, result)
    result = e.select(e.eq(y, zero), one, result)  # x ** 0 = 1, nan included
    return e.select(e.eq(x, one), one, result)  # 1 ** y = 1, nan included


def emit_pow(builder, x, y):
    """x ** y = exp(y * log|x|) with log|x| in double-double and the product's error fed into
    exp's reduced argument, so float64 results stay within a few ulp even where y*log|x| is
    large; floats are computed in doubles. Signs and special values as C's pow: a negative x
    gives the signed power for an integer y and nan for another finite y; x ** +-0 = 1 and
    1 ** y = 1 (nan included), (-1) ** +-inf = 1; zeros and infinities as C."""
    return _in_double(builder, "pow", _pow, x, y)


# sin and cos without libm calls, for targets whose LLVM backend has none (NVPTX; pow, of two
# operands, is `emit_pow` behind an intrinsic name of the target's own); the CPU keeps
# llvm.sin/llvm.cos/llvm.pow, which its libm computes
TRIG_EMITTERS = {"sin": emit_sin, "cos": emit_cos}
