"""Special-function primitives (lgamma, digamma, polygamma, Hurwitz zeta, modified Bessel I0/I1,
erfcx, the normal quantile and log-CDF), nextafter, PyTorch's binary search and gcd, evaluated in
float64 numpy (series, recurrences, asymptotic expansions; no scipy) and host-only: compiled code
calls them back. The integer bitwise and/or/xor lower to scalar expressions. The frontend builds
on these in frontend/special_functions.py, bitwise.py and searching.py.
"""
import math
from fractions import Fraction

import numpy as np

from ember import dtypes
from . import compose as C
from .registry import OpError, Spec, describe, register
from .shape_rules import broadcast_shapes, require_float, same_dtype


def _p(name):
    from .registry import PRIMITIVES
    return PRIMITIVES[name]


# ----------------------------------------------------------------------------- shared numerics

# B_2j / (2j)! for j = 1..10: the Euler-Maclaurin and Stirling-series coefficients
_BERNOULLI_2J = (Fraction(1, 6), Fraction(-1, 30), Fraction(1, 42), Fraction(-1, 30), Fraction(5, 66),
                 Fraction(-691, 2730), Fraction(7, 6), Fraction(-3617, 510), Fraction(43867, 798),
                 Fraction(-174611, 330))
_EULER_MACLAURIN = tuple(float(b / math.factorial(2 * j)) for j, b in enumerate(_BERNOULLI_2J, 1))
_DIGAMMA_SERIES = tuple(float(b / (2 * j)) for j, b in enumerate(_BERNOULLI_2J, 1))


def _in_float64(fn):
    """`fn` on float64 copies of the operands (broadcast), its result in the first operand's dtype."""
    def impl(*arrays, **attrs):
        dtype = arrays[0].dtype
        with np.errstate(all="ignore"):
            out = fn(*np.broadcast_arrays(*[np.asarray(a, np.float64) for a in arrays]), **attrs)
        return np.asarray(out).astype(dtype, copy=False)
    impl.__name__ = fn.__name__
    return impl


def _lgamma_of_float(x):
    if x <= 0 and x == math.floor(x):
        return math.inf  # a pole
    try:
        return math.lgamma(x)
    except OverflowError:
        return math.inf


_lgamma_scalar = np.frompyfunc(_lgamma_of_float, 1, 1)


def lgamma(x):
    """log|Gamma(x)|: +inf at the poles (0, -1, -2, ...) and at -inf, as PyTorch's."""
    out = np.full(x.shape, np.nan)
    finite = np.isfinite(x)
    out[finite] = _lgamma_scalar(x[finite]).astype(np.float64)
    out[np.isinf(x)] = np.inf
    return out


def digamma(x):
    """psi(x): shifted above 10 by psi(x) = psi(x + 1) - 1/x, then the Stirling series; x < 0
    by reflection, psi(x) = psi(1 - x) - pi / tan(pi x). -inf at +0 and +inf at -0 (PyTorch's),
    nan at the negative integers and -inf."""
    x = np.array(x, np.float64)
    out = np.zeros(x.shape)
    negative = x < 0
    turn = x[negative] - np.round(x[negative])  # tan(pi x) is pi-periodic: an exact reduction
    with np.errstate(divide="ignore", invalid="ignore"):
        cotangent = np.where(turn == 0, np.nan, math.pi / np.tan(math.pi * turn))
    out[negative] = -cotangent
    x[negative] = 1 - x[negative]
    small = x < 10
    while small.any():
        out[small] -= 1 / x[small]
        x[small] += 1
        small = x < 10
    inverse_square = 1 / (x * x)
    series = np.zeros(x.shape)
    for coefficient in reversed(_DIGAMMA_SERIES):
        series = (series + coefficient) * inverse_square
    return out + np.log(x) - 0.5 / x - series  # (at x = +-0 the first step's 1/x made it -+inf)


def _zeta_positive(s, q):
    """Hurwitz zeta(s, q) for s > 1 and q > 0 (arrays of one shape): the first terms summed
    until q + n >= max(16, s) + 4, then Euler-Maclaurin with 10 Bernoulli terms."""
    total = np.zeros(q.shape)
    a = q.copy()
    start = np.maximum(16.0, s) + 4
    low = a < start
    while low.any():
        total[low] += a[low] ** -s[low]
        a[low] += 1
        low = a < start
    power = a ** -s
    tail = a * power / (s - 1) + 0.5 * power
    rising = s * power / a  # s (s + 1) ... (s + 2j - 2) a^(-s - 2j + 1), for j = 1
    inverse_square = 1 / (a * a)
    for j, coefficient in enumerate(_EULER_MACLAURIN, 1):
        tail += coefficient * rising
        rising = rising * (s + 2 * j - 1) * (s + 2 * j) * inverse_square
    return total + tail


def hurwitz_zeta(s, q):
    """zeta(s, q) = sum over k >= 0 of (q + k)^-s, as Cephes (PyTorch's special.zeta) defines it:
    inf at s == 1 and at q a non-positive integer, nan for s < 1 and for a non-integer s with
    q <= 0; a negative q with an integer s sums its negative terms as
    (-1)^s (zeta(s, r) - zeta(s, r + m)), r the part of -q above m - 1."""
    s, q = (np.array(a, np.float64) for a in np.broadcast_arrays(s, q))
    out = np.full(s.shape, np.nan)
    valid = (s > 1) & ~np.isnan(q)
    pole = valid & (q <= 0) & (q == np.floor(q))
    out[(s == 1) & ~np.isnan(q)] = np.inf
    out[pole] = np.inf
    out[valid & (q == np.inf)] = 0.0
    positive = valid & (q > 0) & (q < np.inf)
    out[positive] = _zeta_positive(s[positive], q[positive])
    negative = valid & (q < 0) & ~pole & (s == np.floor(s))
    if negative.any():
        sn, qn = s[negative], q[negative]
        m = np.ceil(-qn)
        r = -qn - m + 1
        sign = np.where(np.mod(sn, 2) == 1, -1.0, 1.0)
        out[negative] = sign * (_zeta_positive(sn, r) - _zeta_positive(sn, r + m)) + _zeta_positive(sn, qn + m)
    return out


def polygamma(x, n):
    """The n-th derivative of digamma: (-1)^(n+1) n! zeta(n + 1, x) for n >= 1."""
    if n == 0:
        return digamma(x)
    scale = (-1.0) ** (n + 1) * math.factorial(n)
    return scale * hurwitz_zeta(np.full(np.shape(x), n + 1.0), x)


# ---- modified Bessel functions of order 0 and 1, scaled by exp(-|x|)

_BESSEL_SERIES_BELOW = 30.0  # the power series below, the asymptotic expansion above (both < 1e-15)


def _bessel_scaled(x, order):
    """exp(-|x|) I_order(x) for order 0 or 1."""
    x = np.asarray(x, np.float64)
    z = np.abs(x)
    out = np.empty(x.shape)
    near = z <= _BESSEL_SERIES_BELOW
    if near.any():
        zn = z[near]
        quarter_square = zn * zn / 4
        term = np.ones(zn.shape)
        total = term.copy()
        for k in range(1, int(zn.max() * 1.5) + 40):
            term = term * quarter_square / (k * (k + order))
            total += term
        if order == 1:
            total *= zn / 2
        out[near] = total * np.exp(-zn)
    far = ~near & ~np.isnan(z)
    if far.any():
        zf = z[far]
        term = np.ones(zf.shape)
        total = term.copy()
        for k in range(1, 40):
            term = term * ((2 * k - 1) ** 2 - 4 * order * order) / (8 * k * zf)
            total += term
        out[far] = np.where(np.isinf(zf), 0.0, total / np.sqrt(2 * math.pi * zf))
    out[np.isnan(z)] = np.nan
    return np.copysign(out, x) if order == 1 else out


def bessel_i0e(x):
    return _bessel_scaled(x, 0)


def bessel_i1e(x):
    return _bessel_scaled(x, 1)


def _unscaled(scaled, x, odd):
    """I(x) = exp(|x|) I(x)e, exp(|x|) in two halves (finite wherever the result is); +-inf at
    +-inf (the sign of x for the odd I1)."""
    half = np.exp(np.abs(x) / 2)
    out = np.array(scaled * half * half, np.float64)  # (an array also for 0-d operands)
    infinite = np.isinf(x)
    out[infinite] = np.copysign(np.inf, x[infinite]) if odd else np.inf
    return out


def bessel_i0(x):
    return _unscaled(bessel_i0e(x), x, odd=False)


def bessel_i1(x):
    return _unscaled(bessel_i1e(x), x, odd=True)


# ---- erfcx, the normal log-CDF and quantile

_erfc_scalar = np.frompyfunc(math.erfc, 1, 1)
_SPLITTER = 134217729.0  # 2^27 + 1 (Veltkamp)


def _exp_of_square(x):
    """exp(x * x) without the rounding of x * x (x * x = hi + lo exactly)."""
    hi = x * x
    c = _SPLITTER * x
    x_hi = c - (c - x)
    x_lo = x - x_hi
    lo = ((x_hi * x_hi - hi) + 2 * x_hi * x_lo) + x_lo * x_lo
    return np.exp(hi) * (1 + lo)


def erfcx(x):
    """exp(x^2) erfc(x): exp(x^2) erfc(x) below 8, the asymptotic series above, and
    2 exp(x^2) - erfcx(-x) for x < 0."""
    x = np.asarray(x, np.float64)
    z = np.abs(x)
    out = np.empty(x.shape)
    near = z < 8
    out[near] = _exp_of_square(z[near]) * _erfc_scalar(z[near]).astype(np.float64)
    far = ~near & ~np.isnan(z)
    zf = z[far]
    inverse = 1 / (2 * zf * zf)
    term, total = np.ones(zf.shape), np.ones(zf.shape)
    for k in range(1, 25):
        term = -term * (2 * k - 1) * inverse
        total += term
    out[far] = total / (zf * math.sqrt(math.pi))
    out[np.isnan(z)] = np.nan
    negative = x < 0
    out[negative] = 2 * _exp_of_square(z[negative]) - out[negative]
    out[x == -np.inf] = np.inf
    return out


def log_ndtr(x):
    """log of the standard normal CDF: log(erfcx(-x / sqrt 2) / 2) - x^2 / 2 below -1,
    log1p(-erfc(x / sqrt 2) / 2) above."""
    x = np.asarray(x, np.float64)
    out = np.empty(x.shape)
    low = x < -1
    xl = x[low]
    out[low] = np.log(erfcx(-xl / math.sqrt(2)) / 2) - xl * xl / 2
    high = ~low
    out[high] = np.log1p(-_erfc_scalar(x[high] / math.sqrt(2)).astype(np.float64) / 2)
    return out


def ndtri(p):
    """The standard normal quantile: -sqrt(2) erfinv(1 - 2p) for p in [1/4, 3/4] (1 - 2p is
    exact there); in the tails Newton's method on log ndtr(x) = log(q), q = min(p, 1 - p)
    (1 - p is exact for p >= 1/2)."""
    from .elementwise import _erfinv
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    central = (p >= 0.25) & (p <= 0.75)
    out[central] = -math.sqrt(2) * _erfinv(1 - 2 * p[central])
    tail = ((p > 0) & (p < 0.25)) | ((p > 0.75) & (p < 1))
    q = np.where(p[tail] < 0.5, p[tail], 1 - p[tail])
    log_q = np.log(q)
    t = -2 * log_q
    guess_deep = -np.sqrt(np.maximum(t - np.log(t) - math.log(2 * math.pi), 0.0))
    guess_near = -math.sqrt(2) * _erfinv(np.clip(1 - 2 * q, -1.0, 1.0))
    x = np.where(q < 1e-3, guess_deep, guess_near)
    for _ in range(8):
        log_cdf = log_ndtr(x)
        slope = np.exp(-x * x / 2 - log_cdf) / math.sqrt(2 * math.pi)
        x = x - (log_cdf - log_q) / slope
    out[tail] = np.where(p[tail] < 0.5, x, -x)
    out[p == 0] = -np.inf
    out[p == 1] = np.inf
    return out


# ----------------------------------------------------------------------------- primitives

def _float_rule(name):
    def infer(x, **attrs):
        require_float(name, x)
        return Spec(x.shape, x.dtype)
    return infer


def _float_binary_rule(name):
    def infer(a, b):
        same_dtype(name, a, b)
        require_float(name, a)
        return Spec(broadcast_shapes(name, a, b), a.dtype)
    return infer


def _sign_of(x):
    return _p("sign").bind(x)


def _is_tiny(x):
    """|x| <= eps of x's dtype: where PyTorch's i1/i1e backward takes the limit 0.5."""
    eps = float(np.finfo(x.dtype.np).eps) if x.dtype.np.kind == "f" else float(np.finfo(np.float32).eps)
    return _p("le").bind(_p("abs").bind(x), C.scalar(eps, x)), eps


def _i1_vjp(g, out, x):
    """PyTorch's: g (i0(x) - i1(x) / x), 0.5 g where |x| <= eps."""
    tiny, eps = _is_tiny(x)
    safe = C.where(tiny, C.scalar(eps, x), x)
    slope = C.sub(_p("bessel_i0").bind(safe), C.div(out, safe))
    return (C.mul(g, C.where(tiny, C.scalar(0.5, x), slope)),)


def _i1e_vjp(g, out, x):
    """PyTorch's: g (i0e(x) - i1e(x) (sgn(x) + 1/x)), 0.5 g where |x| <= eps."""
    tiny, eps = _is_tiny(x)
    safe = C.where(tiny, C.scalar(eps, x), x)
    slope = C.sub(_p("bessel_i0e").bind(safe),
                  C.mul(out, C.add(_sign_of(safe), _p("reciprocal").bind(safe))))
    return (C.mul(g, C.where(tiny, C.scalar(0.5, x), slope)),)


def _normal_density_over_cdf(log_cdf, x):
    """d/dx log ndtr(x) = exp(-x^2/2 - log ndtr(x)) / sqrt(2 pi)."""
    exponent = C.neg(C.add(log_cdf, C.mul(C.scalar(0.5, x), C.mul(x, x))))
    return C.mul(C.scalar(1 / math.sqrt(2 * math.pi), x), _p("exp").bind(exponent))


def _inverse_normal_density(quantile):
    """d/dp ndtri(p) = sqrt(2 pi) exp(ndtri(p)^2 / 2)."""
    exponent = C.mul(C.scalar(0.5, quantile), C.mul(quantile, quantile))
    return C.mul(C.scalar(math.sqrt(2 * math.pi), quantile), _p("exp").bind(exponent))


def _two_over_sqrt_pi(like):
    return C.scalar(2 / math.sqrt(math.pi), like)


_UNARY = {
    # name: (float64 numpy function, VJP)
    "lgamma": (lgamma, lambda g, out, x: (C.mul(g, _p("digamma").bind(x)),)),
    "digamma": (digamma, lambda g, out, x: (C.mul(g, _p("polygamma").bind(x, n=1)),)),
    "bessel_i0": (bessel_i0, lambda g, out, x: (C.mul(g, _p("bessel_i1").bind(x)),)),
    "bessel_i0e": (bessel_i0e, lambda g, out, x: (
        C.mul(g, C.sub(_p("bessel_i1e").bind(x), C.mul(_sign_of(x), out))),)),
    "bessel_i1": (bessel_i1, _i1_vjp),
    "bessel_i1e": (bessel_i1e, _i1e_vjp),
    "erfcx": (erfcx, lambda g, out, x: (
        C.mul(g, C.sub(C.mul(C.scalar(2.0, x), C.mul(x, out)), _two_over_sqrt_pi(x))),)),
    "log_ndtr": (log_ndtr, lambda g, out, x: (C.mul(g, _normal_density_over_cdf(out, x)),)),
    "ndtri": (ndtri, lambda g, out, x: (C.mul(g, _inverse_normal_density(out)),)),
}

# host-only: series and recurrences with data-dependent trip counts; compiled programs call
# these numpy implementations back (CPU), a target without host callbacks refuses them
for _name, (_fn, _vjp) in _UNARY.items():
    register(_name, "opaque", _in_float64(_fn), _float_rule(_name), _vjp, host_only=True)


def _polygamma_rule(x, n):
    require_float("polygamma", x)
    if not isinstance(n, int) or n < 0:
        raise OpError("polygamma", f"n must be a non-negative integer, got {n!r}")
    return Spec(x.shape, x.dtype)


register("polygamma", "opaque", _in_float64(polygamma), _polygamma_rule,
         lambda g, out, x, n: (C.mul(g, _p("polygamma").bind(x, n=n + 1)),), host_only=True)


# no VJP: PyTorch implements no derivative of zeta either
register("zeta", "opaque", _in_float64(hurwitz_zeta), _float_binary_rule("zeta"), host_only=True)


def _nextafter_vjp(g, out, a, b, dtype):
    """PyTorch's: the gradient passes to `input` unchanged, `other` gets zeros."""
    return (C.sum_to(g, a.shape) if C.needs_grad(a) else None,
            C.sum_to(C.mul(g, C.scalar(0, g)), b.shape) if C.needs_grad(b) else None)


def _nextafter(a, b, dtype):
    """np.nextafter in the operands' `dtype` (eager mode computes float16 and bfloat16 ops on
    float32 copies: the step must still be the 2-byte type's)."""
    target = dtypes.from_name(dtype).np
    return np.nextafter(a.astype(target, copy=False), b.astype(target, copy=False))


def _nextafter_rule(a, b, dtype):
    return _float_binary_rule("nextafter")(a, b)


register("nextafter", "opaque", _nextafter, _nextafter_rule, _nextafter_vjp, host_only=True)


# ----------------------------------------------------------------------------- search

def _binary_search(sequence, values, right):
    """PyTorch's cus_lower_bound (cus_upper_bound with `right`) for every value at once: halve
    [lo, hi) while !(mid >= value) (!(mid > value)) moves lo past mid. Its exact steps, so nan
    and unsorted sequences give PyTorch's answers. `sequence` is 1-d, or (..., n) with values
    (..., m) of the same leading dims."""
    n = sequence.shape[-1]
    lo = np.zeros(values.shape, np.int64)
    hi = np.full(values.shape, n, np.int64)
    active = lo < hi
    while active.any():
        mid = lo + (hi - lo) // 2
        safe = np.minimum(mid, n - 1)
        middle = sequence[safe] if sequence.ndim == 1 else np.take_along_axis(sequence, safe, -1)
        with np.errstate(invalid="ignore"):
            moves = ~(middle > values) if right else ~(middle >= values)
        lo = np.where(active & moves, mid + 1, lo)
        hi = np.where(active & ~moves, mid, hi)
        active = lo < hi
    return lo


def _searchsorted_rule(sequence, values, right):
    same_dtype("searchsorted", sequence, values)
    if len(sequence.shape) != 1 and (len(values.shape) != len(sequence.shape)
                                     or values.shape[:-1] != sequence.shape[:-1]):
        raise OpError("searchsorted", f"the sequence {describe(sequence)} must be 1-d or have the leading dims of "
                                      f"the values {describe(values)}")
    return Spec(values.shape, dtypes.int64)


# host-only: a search's trip count depends on the data (as a loop nest it would be as deep as the
# sequence is long, or fused into expressions that double with every halving)
register("searchsorted", "opaque", _binary_search, _searchsorted_rule, host_only=True)


# ----------------------------------------------------------------------------- integers

def _integer_binary_rule(name):
    def infer(a, b):
        dtype = same_dtype(name, a, b)
        if dtype.category != 1:
            raise OpError(name, f"takes integer operands, got {describe(a)} and {describe(b)}")
        return Spec(broadcast_shapes(name, a, b), dtype)
    return infer


def _gcd(a, b):
    return np.gcd(a, b).astype(np.result_type(a, b), copy=False)


register("gcd", "opaque", _gcd, _integer_binary_rule("gcd"), host_only=True)  # Euclid: a data-dependent loop


def _top_bit(dtype):
    bits = 8 * dtypes.from_name(dtype).itemsize
    return bits, (1 << (bits - 1)) if dtype == "uint8" else -(1 << (bits - 1))


def _and_lowering(s, a, b):
    """a & b from the integer core ops: a + b - (a ^ b) is 2 (a & b) modulo 2^bits, so its
    logical shift right by one gives every bit but the top one, which is set where both
    operands' top bits are."""
    bits, top = _top_bit(a.dtype)
    low = s.shift_right_logical(s.sub(s.add(a, b), s.bitwise_xor(a, b)), 1)
    both_top = s.mul(s.shift_right_logical(a, bits - 1), s.shift_right_logical(b, bits - 1))
    return s.add(low, s.mul(both_top, top))


def _or_lowering(s, a, b):
    return s.add(_and_lowering(s, a, b), s.bitwise_xor(a, b))  # disjoint bits: + is |


register("bitwise_and", "elementwise", np.bitwise_and, _integer_binary_rule("bitwise_and"), lowering=_and_lowering)
register("bitwise_or", "elementwise", np.bitwise_or, _integer_binary_rule("bitwise_or"), lowering=_or_lowering)
register("bitwise_xor", "elementwise", np.bitwise_xor, _integer_binary_rule("bitwise_xor"),
         lowering=lambda s, a, b: s.bitwise_xor(a, b))
