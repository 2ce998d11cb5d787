"""Inlined math for LLVM kernels: exp, log, log1p, expm1, tanh, sigmoid, erf, erfc, atan, erfinv
(and, for targets without libm, sin, cos and pow) without calls.

Scalar expressions (compiler/llvm/scalar.py) call `emit_<fn>(builder, x)` for float or double
scalars or vectors. Each emitter writes a polynomial approximation with fmul/fadd/fdiv (and
the llvm.fmuladd intrinsic), fcmp/select and integer bit operations only, no library calls,
so LLVM's loop vectoriser vectorises the loops that contain them (a call to expf blocks it). Special values follow numpy: exp(-inf) = 0,
exp(large) = inf, log(0) = -inf, log(negative) = nan, nan in gives nan out, tanh and sigmoid
saturate, results reach into the subnormal range where numpy's do.

Accuracy against float64 numpy (tests/test_llvm_math.py measures it over millions of float32
points and checks the bounds): float32 within 2 ulp for exp, log, log1p, expm1, erf and atan,
within 2.5 ulp for tanh, sigmoid and erfinv. float64 uses the same algorithms with longer
polynomials and stays within 4 ulp (measured 1-2; relative error under 1e-15), erfinv within 6
(measured 5, just below 4 = erfinv(1 - 3e-8), where the ulp halves). erfc computes in doubles
(floats widened: their results are float64's rounded once) and keeps the tail's relative precision
down to the subnormals: float64 within 2 ulp of 40-digit values (4 of libm's erfc, itself 2 off).
No fast-math flags are set on these instructions: the range reductions depend on exact IEEE rounding.

Coefficients are derived here, not copied: Taylor coefficients for exp/expm1/log (their
reduced ranges are small enough) and Chebyshev interpolants of erf and of atan's tail computed
with numpy at import (`chebyshev_coefficients`), evaluated with Clenshaw's recurrence; erfinv's
pieces come from ember/ops (`erfinv_pieces`, which numpy evaluates eagerly), so eager and
compiled erfinv are one approximation; erfc's pieces (of erfcx, `erfc_pieces`) come from there
too (eager erfc is libm's). asin, acos and atan2 lower to atan (their rules in ember/ops).

sin, cos (TRIG_EMITTERS) and pow (`emit_pow`, two operands), in compiler/llvm/math_without_libm.py,
are for targets without libm (the PTX target; the CPU keeps llvm.sin/cos/pow). They compute in doubles, floats widened
first (a float result is then within about half an ulp: measured, numpy's float64 result
rounded); they use llvm.fma for exact products and llvm.floor. sin/cos: Cody-Waite reduction by pi/2 in four parts, exact
for |x| < 2^50 (nan from there on: no Payne-Hanek), Taylor polynomials on |r| <= pi/4;
float64 within 4 ulp (measured 3). pow: exp(y * log|x|) with log|x| in double-double, C's
special cases; float64 within 4 ulp (measured 1). tests/test_ptx_math.py checks them.
"""
import functools
import math
from decimal import Decimal, getcontext, localcontext

import numpy as np
from llvmlite import ir

from ember.ops.erf_coefficients import ERFC_CUTOFF, erfc_pieces, erfinv_pieces


# ----------------------------------------------------------------------------- constants

def _split_high(value, low_zero_bits):
    """`value` with its lowest `low_zero_bits` mantissa bits cleared (as a double), so that
    a product by a small integer is exact (Cody & Waite range reduction)."""
    bits = np.array(value, dtype=np.float64).view(np.uint64)
    return float((bits & ~np.uint64((1 << low_zero_bits) - 1)).view(np.float64))


def _ln2_parts(double):
    """(ln2_hi, ln2_lo) with ln2_hi * k exact for |k| < 2^11 and ln2_hi + ln2_lo = ln 2."""
    getcontext().prec = 40
    ln2 = Decimal(2).ln()
    # float: ln2_hi keeps 12 mantissa bits (products exact up to |k| < 2^12 in 24 bits);
    # double: 32 bits (exact up to |k| < 2^21 in 53 bits)
    high = _split_high(float(ln2), 52 - (32 if double else 12))
    low = float(ln2 - Decimal(high))
    return high, low


def _taylor_exp(degree):
    """1/n! for n = 0..degree."""
    return [1.0 / math.factorial(n) for n in range(degree + 1)]


def chebyshev_coefficients(function, low, high, count):
    """Chebyshev interpolation coefficients of `function` on [low, high] (count nodes).

    sum(c[j] * T_j(y)) with y = (2t - low - high) / (high - low) approximates function(t);
    interpolation at Chebyshev nodes is within a small factor of the best (minimax) fit.
    """
    k = np.arange(count)
    nodes = np.cos(np.pi * (k + 0.5) / count)
    values = np.array([function(0.5 * (high - low) * y + 0.5 * (high + low)) for y in nodes])
    basis = np.cos(np.pi * np.outer(np.arange(count), k + 0.5) / count)
    coefficients = 2.0 / count * basis @ values
    coefficients[0] /= 2
    return [float(c) for c in coefficients]


def _taylor_erf_over_x(terms):
    """erf(x)/x = 2/sqrt(pi) * sum((-u)^n / (n! (2n+1))) in u = x*x."""
    return [2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(terms)]


def _scaled_erfc(t):
    """erfc(x) * exp(x*x) as a function of t = 1/x."""
    x = 1.0 / t
    return math.erfc(x) * math.exp(x * x)


# erf saturates to 1 (rounded) beyond 3.92 in float32 and 5.93 in float64
_ERF_SATURATION = {False: 4.0, True: 6.0}
_ERF_SPLIT = 1.0  # Taylor below, the erfc form above
def _erf_over_x_powers(count):
    """erf(x)/x as a polynomial in u = x*x on [0, 1] (coefficients of u**n): its Chebyshev
    interpolant, in powers of u (8 terms: 4e-11 relative, where Taylor needs 11)."""
    def erf_over_x(u):
        return math.erf(math.sqrt(u)) / math.sqrt(u) if u > 0 else 2 / math.sqrt(math.pi)
    in_y = np.polynomial.chebyshev.cheb2poly(chebyshev_coefficients(erf_over_x, 0.0, 1.0, count))
    return [float(c) for c in np.polynomial.Polynomial(in_y)(np.polynomial.Polynomial([-1.0, 2.0])).coef]


_ERF_SMALL = {False: _erf_over_x_powers(8), True: _taylor_erf_over_x(19)}
_ERF_LARGE = {double: chebyshev_coefficients(_scaled_erfc, 1 / _ERF_SATURATION[double], 1 / _ERF_SPLIT, n)
              for double, n in ((False, 11), (True, 30))}
# float32 evaluates the tail's interpolant by Horner in powers of y (its coefficients decay
# from 0.31: well conditioned), half the operations of Clenshaw's recurrence
_ERF_LARGE_POWERS = [float(c) for c in np.polynomial.chebyshev.cheb2poly(_ERF_LARGE[False])]


def _atan_decimal(t):
    """atan(t) for a Decimal |t| <= 2/3 by its Taylor series (the context's precision)."""
    total, power, k, sign = Decimal(0), t, 1, 1
    tiny = Decimal(10) ** -(getcontext().prec + 2)
    while abs(power) > tiny:
        total += sign * power / k
        power, k, sign = power * t * t, k + 2, -sign
    return total


@functools.cache
def _atan_anchors():
    """{double: [(hi, lo) of atan(c)]} for fdlibm's anchors c = 1/2, 1, 3/2, inf: hi the nearest
    float (or double), lo the rest rounded, so hi + (small + lo) adds the anchor unrounded."""
    with localcontext() as context:
        context.prec = 50
        half_pi = _pi(45) / 2
        values = [_atan_decimal(Decimal("0.5")), half_pi / 2, half_pi - _atan_decimal(Decimal(2) / 3), half_pi]
        anchors = {}
        for double, cast in ((False, np.float32), (True, np.float64)):
            parts = []
            for value in values:
                hi = cast(value)
                parts.append((float(hi), float(cast(value - Decimal(float(hi))))))
            anchors[double] = parts
        return anchors


def _atan_tail(z):
    """(atan(t) / t - 1) / z for z = t*t in [0, 0.2]: sum((-1)^(n+1) z^n / (2n + 3)) (no cancellation)."""
    return sum((-1) ** (n + 1) * z ** n / (2 * n + 3) for n in range(60))


# atan: fdlibm's reduction of |x| by the interval it falls in (upper bounds below) to
# t = (|x| - c) / (1 + c|x|), |t| <= 7/16, atan|x| = atan(c) + t + t z Q(z) with z = t^2 and Q a
# Chebyshev interpolant of _atan_tail on [0, (7/16)^2]
_ATAN_BOUNDS = (7 / 16, 11 / 16, 19 / 16, 39 / 16)
_ATAN_Z_MAX = (7 / 16) ** 2
_ATAN_TAIL = {double: chebyshev_coefficients(_atan_tail, 0.0, _ATAN_Z_MAX, n) for double, n in ((False, 7), (True, 14))}


# ----------------------------------------------------------------------------- typed helpers

class _Emitter:
    """Arithmetic on one builder for one float/double scalar or vector type."""

    def __init__(self, builder, x, op):
        value_type = x.type
        element = value_type.element if isinstance(value_type, ir.VectorType) else value_type
        if not isinstance(element, (ir.FloatType, ir.DoubleType)):
            raise TypeError(f"llvm_math.emit_{op}: needs a float or double scalar or vector, "
                            f"got {value_type}")
        self.b = builder
        self.type = value_type
        self.double = isinstance(element, ir.DoubleType)
        self.bits = 64 if self.double else 32
        self.mantissa_bits = 52 if self.double else 23
        self.bias = 1023 if self.double else 127
        int_element = ir.IntType(self.bits)
        self.int_type = (ir.VectorType(int_element, value_type.count)
                         if isinstance(value_type, ir.VectorType) else int_element)

    # constants
    def const(self, value):
        return self._splat(self.type, float(value))

    def iconst(self, value):
        return self._splat(self.int_type, int(value))

    @staticmethod
    def _splat(value_type, value):
        if isinstance(value_type, ir.VectorType):
            return ir.Constant(value_type, [value] * value_type.count)
        return ir.Constant(value_type, value)

    # float arithmetic (no fast-math flags: the range reductions rely on exact rounding)
    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def lt(self, a, b):
        return self.b.fcmp_ordered("<", a, b)

    def gt(self, a, b):
        return self.b.fcmp_ordered(">", a, b)

    def ge(self, a, b):
        return self.b.fcmp_ordered(">=", a, b)

    def eq(self, a, b):
        return self.b.fcmp_ordered("==", a, b)

    def is_nan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def select(self, condition, a, b):
        return self.b.select(condition, a, b)

    def clamp(self, a, low, high):
        """min(max(a, low), high); nan stays nan."""
        a = self.select(self.lt(a, self.const(low)), self.const(low), a)
        return self.select(self.gt(a, self.const(high)), self.const(high), a)

    # bit-level
    def to_bits(self, a):
        return self.b.bitcast(a, self.int_type)

    def from_bits(self, a):
        return self.b.bitcast(a, self.type)

    def abs(self, a):
        return self.from_bits(self.b.and_(self.to_bits(a), self.iconst((1 << (self.bits - 1)) - 1)))

    def copysign(self, magnitude, sign_source):
        """`magnitude` (non-negative) with the sign bit of `sign_source`."""
        sign = self.b.and_(self.to_bits(sign_source), self.iconst(1 << (self.bits - 1)))
        return self.from_bits(self.b.or_(self.to_bits(magnitude), sign))

    def pow2(self, k):
        """2.0**k for an integer vector k inside the normal exponent range."""
        biased = self.b.add(k, self.iconst(self.bias))
        return self.from_bits(self.b.shl(biased, self.iconst(self.mantissa_bits)))

    def muladd(self, a, b, c):
        """a * b + c through llvm.fmuladd: one FMA where the target has fast FMA (one rounding,
        never less accurate than the two), a multiply and an add elsewhere."""
        return self.intrinsic("llvm.fmuladd", a, b, c)

    def fma(self, a, b, c):
        """a * b + c with one rounding (llvm.fma: an FMA instruction, or libm's fma where the
        machine has none): what an exact product error (`fma(a, b, -a*b)`) needs."""
        return self.intrinsic("llvm.fma", a, b, c)

    def floor(self, a):
        return self.intrinsic("llvm.floor", a)

    def intrinsic(self, name, *operands):
        """A call of the overloaded LLVM intrinsic `name` on operands of this type, declared
        once per module."""
        element = "f64" if self.double else "f32"
        suffix = f"v{self.type.count}{element}" if isinstance(self.type, ir.VectorType) else element
        full = f"{name}.{suffix}"
        module = self.b.module
        function = module.globals.get(full)
        if function is None:
            function = ir.Function(module, ir.FunctionType(self.type, [self.type] * len(operands)), name=full)
        return self.b.call(function, list(operands))

    def neg(self, a):
        return self.b.fneg(a)

    def sign_bit_set(self, a):
        return self.b.icmp_signed("<", self.to_bits(a), self.iconst(0))

    def estrin(self, t, coefficients):
        """sum(coefficients[n] * t**n) by Estrin's scheme: pairs c[2i] + c[2i+1]*t combined
        with powers t^2, t^4, ...; the same terms as Horner's rule, but a dependency chain of
        log2(n) multiply-adds instead of n, so a vectorised loop is not bound by FMA latency."""
        terms = [self.muladd(self.const(coefficients[i + 1]), t, self.const(coefficients[i]))
                 if i + 1 < len(coefficients) else self.const(coefficients[i])
                 for i in range(0, len(coefficients), 2)]
        power = self.mul(t, t)
        while len(terms) > 1:
            terms = [self.muladd(terms[i + 1], power, terms[i]) if i + 1 < len(terms) else terms[i]
                     for i in range(0, len(terms), 2)]
            if len(terms) > 1:
                power = self.mul(power, power)
        return terms[0]

    def horner(self, t, coefficients):
        """sum(coefficients[n] * t**n)."""
        result = self.const(coefficients[-1])
        for c in reversed(coefficients[:-1]):
            result = self.muladd(result, t, self.const(c))
        return result

    def clenshaw(self, y, coefficients, first_rest=0.0):
        """sum(coefficients[j] * T_j(y)) by Clenshaw's recurrence (stable for Chebyshev);
        `first_rest` is added to the other terms before the first coefficient (what rounding
        took off that coefficient, where it dominates the sum)."""
        two_y = self.add(y, y)
        b1, b2 = self.const(0.0), self.const(0.0)
        for c in reversed(coefficients[1:]):
            b1, b2 = self.add(self.sub(self.mul(two_y, b1), b2), self.const(c)), b1
        rest = self.sub(self.mul(y, b1), b2)
        if first_rest:
            rest = self.add(rest, self.const(first_rest))
        return self.add(rest, self.const(coefficients[0]))

    def round_to_int(self, a):
        """(nearest integer as float, as int) for |a| < 2^22 (float) / 2^51 (double).

        Adding 1.5 * 2^mantissa_bits rounds to an integer in the FPU's round-to-nearest mode;
        the integer is then the low bits of the sum's representation.
        """
        magic = self.const(1.5 * 2.0 ** self.mantissa_bits)
        shifted = self.add(a, magic)
        as_float = self.sub(shifted, magic)
        as_int = self.b.sub(self.to_bits(shifted), self.to_bits(magic))
        return as_float, as_int

    def reduce_ln2(self, x):
        """(r, k_float, k_int) with x = k*ln2 + r, |r| <= ln2/2 (Cody-Waite, two-part ln2)."""
        k_float, k_int = self.round_to_int(self.mul(x, self.const(1 / math.log(2))))
        ln2_hi, ln2_lo = _ln2_parts(self.double)
        # k * ln2_hi is exact, so an FMA (or a multiply and a subtraction) subtracts it exactly
        r = self.muladd(k_float, self.const(-ln2_hi), x)
        r = self.muladd(k_float, self.const(-ln2_lo), r)
        return r, k_float, k_int

    def expm1_reduced(self, r):
        """exp(r) - 1 for |r| <= ln2/2: r + r^2 * (1/2 + r/6 + ...) (Taylor)."""
        degree = 13 if self.double else 7
        tail = self.estrin(r, _taylor_exp(degree)[2:])
        return self.add(r, self.mul(self.mul(r, r), tail))


# ----------------------------------------------------------------------------- emitters

def emit_exp(builder, x):
    """exp(x): 2^k * (1 + expm1(r)) with the 2^k built in two halves so that results down to
    the smallest subnormal and the overflow to inf come out right."""
    return _exp_core(_Emitter(builder, x, "exp"), x)


def _exp_core(e, x, tail=None):
    """exp(x + tail) for a `tail` far below x's last place (pow's double-double exponent), or
    exp(x) without one."""
    low, high = (-746.0, 710.0) if e.double else (-104.0, 89.0)
    clamped = e.clamp(x, low, high)
    r, _, k = e.reduce_ln2(clamped)
    if tail is not None:
        r = e.add(r, tail)
    p = e.add(e.const(1.0), e.expm1_reduced(r))
    half = e.b.ashr(k, e.iconst(1))
    # a nan passes the clamp and makes r, p and so the product nan: no select needed
    return e.mul(e.mul(p, e.pow2(half)), e.pow2(e.b.sub(k, half)))


def emit_expm1(builder, x):
    """exp(x) - 1, accurate near 0: 2^k * expm1(r) + (2^k - 1) while 2^k - 1 is exact, else
    2^k * (expm1(r) + 1) - 1 (where the -1 no longer matters)."""
    e = _Emitter(builder, x, "expm1")
    low, high, exact_k = (-40.0, 710.0, 53) if e.double else (-20.0, 89.0, 24)
    clamped = e.clamp(x, low, high)
    r, _, k = e.reduce_ln2(clamped)
    em = e.expm1_reduced(r)
    half = builder.ashr(k, e.iconst(1))
    scale_a, scale_b = e.pow2(half), e.pow2(builder.sub(k, half))
    scale = e.mul(scale_a, scale_b)  # inf only where k is large and `big` is chosen
    small = e.add(e.mul(scale, em), e.sub(scale, e.const(1.0)))
    big = e.sub(e.mul(e.mul(e.add(em, e.const(1.0)), scale_a), scale_b), e.const(1.0))
    is_small = builder.icmp_signed("<", k, e.iconst(exact_k))
    result = e.select(is_small, small, big)
    # nan stays nan, and -0 stays -0
    return e.select(e.is_nan(x), x, e.select(e.eq(x, e.const(0.0)), x, result))


def _log_core(e, x):
    """log(x) for finite x > 0 (subnormals included); other inputs give garbage."""
    m, k = _log_reduce(e, x)
    # log(1+f) = 2 atanh(s), s = f/(2+f): log = f - hfsq + s*(hfsq + R(s^2)),
    # R(w) = sum_{n>=1} 2/(2n+1) w^n
    f = e.sub(m, e.const(1.0))
    s = e.div(f, e.add(f, e.const(2.0)))
    w = e.mul(s, s)
    terms = 11 if e.double else 5
    series = [0.0] + [2.0 / (2 * n + 1) for n in range(1, terms + 1)]
    R = e.horner(w, series)
    hfsq = e.mul(e.const(0.5), e.mul(f, f))
    ln2_hi, ln2_lo = _ln2_parts(e.double)
    inner = e.add(e.mul(s, e.add(hfsq, R)), e.mul(k, e.const(ln2_lo)))
    return e.sub(e.mul(k, e.const(ln2_hi)), e.sub(e.sub(hfsq, inner), f))


def _log_reduce(e, x):
    """(m, k) with x = 2^k * m, m in [sqrt(2)/2, sqrt(2)), k a float, for finite x > 0."""
    b = e.b
    # subnormals: scale into the normal range first
    subnormal = e.lt(x, e.const(2.0 ** (1 - e.bias)))
    scale_bits = e.mantissa_bits + 2
    x = e.select(subnormal, e.mul(x, e.const(2.0 ** scale_bits)), x)
    bits = e.to_bits(x)
    exponent = b.sub(b.lshr(bits, e.iconst(e.mantissa_bits)), e.iconst(e.bias))
    mantissa_mask = (1 << e.mantissa_bits) - 1
    m = e.from_bits(b.or_(b.and_(bits, e.iconst(mantissa_mask)), e.iconst(e.bias << e.mantissa_bits)))
    # m in [1, 2): move to [sqrt(2)/2, sqrt(2)) so log(m) is small and symmetric
    big = e.gt(m, e.const(math.sqrt(2.0)))
    m = e.select(big, e.mul(m, e.const(0.5)), m)
    k = b.sitofp(exponent, e.type)
    k = e.add(k, e.select(big, e.const(1.0), e.const(0.0)))
    k = e.sub(k, e.select(subnormal, e.const(float(scale_bits)), e.const(0.0)))
    return m, k


def _log_specials(e, x, result):
    """numpy's special values: log(0) = -inf, log(<0) = nan, log(inf) = inf, nan -> nan."""
    result = e.select(e.eq(x, e.const(math.inf)), e.const(math.inf), result)
    result = e.select(e.eq(x, e.const(0.0)), e.const(-math.inf), result)
    result = e.select(e.lt(x, e.const(0.0)), e.const(math.nan), result)
    return e.select(e.is_nan(x), x, result)


def emit_log(builder, x):
    """log(x): x = 2^k * m, m in [sqrt(2)/2, sqrt(2)), log = k*ln2 + log(m) with log(m) from
    the atanh series in s = (m-1)/(m+1)."""
    e = _Emitter(builder, x, "log")
    return _log_specials(e, x, _log_core(e, x))


def emit_log1p(builder, x):
    """log(1 + x), accurate near 0: log(u) + (x - (u - 1)) / u with u = 1 + x rounded (the
    second term puts back what rounding u lost)."""
    e = _Emitter(builder, x, "log1p")
    u = e.add(e.const(1.0), x)
    correction = e.div(e.sub(x, e.sub(u, e.const(1.0))), u)
    result = e.add(_log_core(e, u), correction)
    result = e.select(e.eq(x, e.const(0.0)), x, result)  # -0 stays -0
    return _log_specials(e, u, result)


def emit_tanh(builder, x):
    """tanh(|x|) = -em / (em + 2) with em = expm1(-2|x|) near 0 (no cancellation), and
    (1 - d) / (1 + d) with d = exp(-2|x|) further out (d keeps its relative precision, so
    the result rounds well up to the saturation at 1); the sign is copied back."""
    e = _Emitter(builder, x, "tanh")
    a = e.abs(x)
    em, d = _expm1_and_exp_nonpositive(e, e.mul(a, e.const(-2.0)))
    near_zero = e.lt(a, e.const(0.5))
    one = e.const(1.0)
    numerator = e.select(near_zero, e.sub(e.const(0.0), em), e.sub(one, d))
    denominator = e.select(near_zero, e.add(em, e.const(2.0)), e.add(one, d))
    return e.copysign(e.div(numerator, denominator), x)


def _expm1_and_exp_nonpositive(e, z):
    """(expm1(z), exp(z)) for z <= 0 or nan from one range reduction: with z = k*ln2 + r,
    exp(z) = 2^k * (1 + p) and expm1(z) = 2^k * p + (2^k - 1), p = expm1(r)."""
    z = e.clamp(z, -40.0 if e.double else -20.0, 0.0)
    r, _, k = e.reduce_ln2(z)
    p = e.expm1_reduced(r)
    scale = e.pow2(k)
    scaled_p = e.mul(scale, p)
    return e.add(scaled_p, e.sub(scale, e.const(1.0))), e.add(scaled_p, scale)


def emit_sigmoid(builder, x):
    """1 / (1 + exp(-x)) computed from d = exp(-|x|) <= 1 (no overflow): 1/(1+d) for x >= 0,
    d/(1+d) for x < 0, so tiny results for very negative x keep their precision."""
    e = _Emitter(builder, x, "sigmoid")
    d = emit_exp(builder, e.sub(e.const(0.0), e.abs(x)))
    numerator = e.select(e.ge(x, e.const(0.0)), e.const(1.0), d)
    return e.div(numerator, e.add(e.const(1.0), d))


def emit_erf(builder, x):
    """erf(x): |x| < 1: x + x * (P(x^2) - 1) (float32: a Chebyshev interpolant in powers of x^2;
    float64: Taylor); otherwise 1 - exp(-x^2) * Q(1/|x|) with Q a Chebyshev interpolant of
    erfc(x)*exp(x^2) in 1/x (float32: in powers); the sign is copied back."""
    e = _Emitter(builder, x, "erf")
    a = e.abs(x)
    # |x| < 1
    u = e.mul(a, a)
    # x + x*(P(u) - 1): the correction is small (P(0) - 1 = 0.128), so rounding is too
    coefficients = _ERF_SMALL[e.double]
    small = e.add(a, e.mul(a, e.horner(u, [coefficients[0] - 1.0] + coefficients[1:])))
    # |x| >= 1: t = 1/|x| clamped into the fitted interval [1/saturation, 1]
    lo, hi = 1.0 / _ERF_SATURATION[e.double], 1.0 / _ERF_SPLIT
    t = e.clamp(e.div(e.const(1.0), a), lo, hi)
    y = e.add(e.mul(t, e.const(2.0 / (hi - lo))), e.const(-(hi + lo) / (hi - lo)))
    series = e.clenshaw(y, _ERF_LARGE[True]) if e.double else e.horner(y, _ERF_LARGE_POWERS)
    tail = e.mul(emit_exp(builder, e.sub(e.const(0.0), u)), series)
    large = e.sub(e.const(1.0), tail)
    result = e.select(e.lt(a, e.const(_ERF_SPLIT)), small, large)
    return e.select(e.is_nan(x), x, e.copysign(result, x))


def emit_erfc(builder, x):
    """erfc(x) in doubles (floats are widened, so their results are rounded once; the float loop
    vectorises at the double width): exp(-a^2) * erfcx(a) for a = |x|, erfcx from the Chebyshev
    pieces ember/ops derives (`erfc_pieces`), erfc(-a) = 2 - erfc(a). a^2 = h^2 + (a - h)(a + h)
    for h, a with the low 27 bits of its mantissa cleared (h^2 exact): exp's reduction takes k
    from a^2 and subtracts k ln2 from h^2 exactly, then the rest, so the tail keeps its relative
    precision down to the subnormals. erfcx is multiplied into exp's 1 + q by one FMA before the
    scaling by 2^k (one rounding in the subnormals). +-inf give 0 and 2, nan stays nan."""
    return _in_double(builder, "erfc", _erfc, x)


def _erfc(e, x):
    a = e.clamp(e.abs(x), 0.0, ERFC_CUTOFF)  # erfc rounds to 0 from the cutoff on; nan stays nan
    erfcx = None
    for variable, low, high, coefficients, first_rest in reversed(erfc_pieces()):
        v = e.clamp(a if variable == "a" else e.div(e.const(1.0), a), low, high)
        y = e.add(e.mul(v, e.const(2 / (high - low))), e.const(-(high + low) / (high - low)))
        value = e.clenshaw(y, coefficients, first_rest)
        if low == 0.0:  # (erfcx(a) - 1) / a
            value = e.muladd(value, a, e.const(1.0))
        else:  # a * erfcx(a)
            value = e.div(value, a)
        erfcx = value if erfcx is None else e.select(e.lt(a, e.const(high)), value, erfcx)
    head = e.from_bits(e.b.and_(e.to_bits(a), e.iconst(-(1 << 27))))
    square = e.mul(head, head)  # exact: 26 significant bits squared
    tail = e.mul(e.sub(a, head), e.add(a, head))
    k_float, k = e.round_to_int(e.mul(e.add(square, tail), e.const(-1 / math.log(2))))
    ln2_hi, ln2_lo = _ln2_parts(True)
    r = e.sub(e.muladd(k_float, e.const(-ln2_hi), e.neg(square)), tail)
    q = e.expm1_reduced(e.muladd(k_float, e.const(-ln2_lo), r))
    half = e.b.ashr(k, e.iconst(1))
    scaled = e.mul(e.mul(e.muladd(q, erfcx, erfcx), e.pow2(half)), e.pow2(e.b.sub(k, half)))
    return e.select(e.sign_bit_set(x), e.sub(e.const(2.0), scaled), scaled)


def emit_atan(builder, x):
    """atan(x): |x| reduced by fdlibm's intervals to t = (|x| - c) / (1 + c|x|) (the numerators
    exact), atan(c) + t + t z Q(z) summed from the small end with atan(c) in two parts; the
    sign copied back. atan(+-inf) = +-pi/2, nan stays nan."""
    e = _Emitter(builder, x, "atan")
    a = e.abs(x)
    one = e.const(1.0)
    half_pi, three_halves, unit, half = _atan_anchors()[e.double][::-1]
    # from the top interval down: |x| >= 39/16 takes c = inf (t = -1/|x|), nan included
    numerator, denominator, (hi, lo) = e.const(-1.0), a, (e.const(part) for part in half_pi)
    intervals = [
        (e.sub(a, e.const(1.5)), e.add(one, e.mul(e.const(1.5), a)), three_halves),
        (e.sub(a, one), e.add(a, one), unit),
        (e.sub(e.add(a, a), one), e.add(e.const(2.0), a), half),
        (a, one, (0.0, 0.0)),
    ]
    for bound, (num, den, (c_hi, c_lo)) in zip(reversed(_ATAN_BOUNDS), intervals):
        inside = e.lt(a, e.const(bound))
        numerator, denominator = e.select(inside, num, numerator), e.select(inside, den, denominator)
        hi, lo = e.select(inside, e.const(c_hi), hi), e.select(inside, e.const(c_lo), lo)
    t = e.div(numerator, denominator)
    z = e.mul(t, t)
    q = e.clenshaw(e.add(e.mul(z, e.const(2.0 / _ATAN_Z_MAX)), e.const(-1.0)), _ATAN_TAIL[e.double])
    small = e.add(e.muladd(e.mul(t, z), q, lo), t)
    return e.copysign(e.add(hi, small), x)


def emit_erfinv(builder, x):
    """erfinv(x) = x * g(w), w = -log((1 - x)(1 + x)), g from the pieces ember/ops defines
    (`erfinv_pieces`: Chebyshev interpolants in w and sqrt(w)), each evaluated with its variable
    clamped to its interval and the right one selected. +-1 gives +-inf, |x| > 1 nan."""
    e = _Emitter(builder, x, "erfinv")
    pieces = erfinv_pieces(e.double)
    one = e.const(1.0)
    w = e.neg(_log_core(e, e.mul(e.sub(one, x), e.add(one, x))))  # garbage where |x| >= 1: replaced below
    variables = {"w": w, "sqrt_w": e.intrinsic("llvm.sqrt", e.clamp(w, 0.0, math.inf))}
    g = following = None
    for variable, low, high, coefficients in reversed(pieces):
        v = e.clamp(variables[variable], low, high)
        y = e.add(e.mul(v, e.const(2 / (high - low))), e.const(-(high + low) / (high - low)))
        value = e.clenshaw(y, coefficients)
        if variable == "w":  # g = sqrt(pi)/2 + w * r(w)
            value = e.muladd(v, value, e.const(math.sqrt(math.pi) / 2))
        if g is None:
            g = value
        else:
            next_variable, next_low = following
            g = e.select(e.lt(variables[next_variable], e.const(next_low)), value, g)
        following = variable, low
    a = e.abs(x)
    result = e.mul(x, g)
    result = e.select(e.eq(a, one), e.copysign(e.const(math.inf), x), result)
    result = e.select(e.gt(a, one), e.const(math.nan), result)
    return e.select(e.is_nan(x), x, result)


def _pi(digits):
    """pi to `digits` decimal digits by Machin's formula, 16 atan(1/5) - 4 atan(1/239)."""
    with localcontext() as context:
        context.prec = digits + 10
        tiny = Decimal(10) ** -(digits + 5)

        def atan_of_inverse(n):
            total, power, k, sign = Decimal(0), Decimal(1) / n, 1, 1
            while power > tiny:
                total += sign * power / k
                power, k, sign = power / (n * n), k + 2, -sign
            return total
        return +(16 * atan_of_inverse(5) - 4 * atan_of_inverse(239))


def _in_double(builder, op, compute, *operands):
    """compute(emitter, *operands) in double precision: float operands are widened and the
    result rounded back once, so a float result is within about half an ulp of the double."""
    e = _Emitter(builder, operands[0], op)
    if e.double:
        return compute(e, *operands)
    value_type = operands[0].type
    double = (ir.VectorType(ir.DoubleType(), value_type.count) if isinstance(value_type, ir.VectorType)
              else ir.DoubleType())
    wide = [builder.fpext(operand, double) for operand in operands]
    return builder.fptrunc(compute(_Emitter(builder, wide[0], op), *wide), value_type)



EMITTERS = {
    "exp": emit_exp, "log": emit_log, "log1p": emit_log1p, "expm1": emit_expm1,
    "tanh": emit_tanh, "sigmoid": emit_sigmoid, "erf": emit_erf, "erfc": emit_erfc, "atan": emit_atan,
    "erfinv": emit_erfinv,
}

# sin, cos and pow without libm calls (compiler/llvm/math_without_libm.py), for targets whose LLVM
# backend has none (NVPTX); re-exported here beside the others
from .math_without_libm import TRIG_EMITTERS, emit_cos, emit_pow, emit_sin  # noqa: E402,F401
