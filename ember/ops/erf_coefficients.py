"""The coefficients of the erf family's approximations, derived in Decimal arithmetic on first
use (no copied constants): erfinv's pieces (numpy's missing erfinv, eagerly, and the compiled
one) and erfc's pieces of erfcx (compiled; eager erfc is libm's). ember/ops/elementwise.py and
compiler/llvm/math.py evaluate them.
"""
import functools
import math
from decimal import Decimal, localcontext

# ----------------------------------------------------------------------------- erfinv
# erfinv(x) = x * g(w) in Giles's variable w = -log((1 - x)(1 + x)) (1 - x is exact near 1):
# g is smooth in w for moderate |x| and in sqrt(w) towards |x| = 1. Each piece interpolates g
# (Chebyshev) on an interval of its variable; the first holds r(w) = (g(w) - sqrt(pi)/2) / w, so
# g = sqrt(pi)/2 + w * r(w) keeps its precision at small |x|. The split points cover every |x|
# below 1 in the dtype (|x| = 1 - 2^-24 has w = 15.9, 1 - 2^-53 has w = 36.0). Accuracy, with
# the pieces evaluated in that arithmetic: float32 within 2.5 ulp, float64 within 6 ulp.
# (variable, low, high, interpolation nodes); piece i + 1 takes over from its `low` on
_ERFINV_SPLITS = {False: (("w", 0.0, 5.0, 10), ("sqrt_w", 5.0 ** 0.5, 4.0, 10)),
                  True: (("w", 0.0, 6.25, 24), ("sqrt_w", 2.5, 4.0, 20), ("sqrt_w", 4.0, 6.05, 21))}
_PI = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
_DIGITS = 60  # working precision of the derivation (Decimal digits)


@functools.cache
def erfinv_pieces(double):
    """((variable, low, high, Chebyshev coefficients), ...) of erfinv's approximation for float64
    (`double`) or float32 arithmetic, derived in Decimal arithmetic on first use (~30 ms)."""
    with localcontext() as context:
        context.prec = _DIGITS
        half_sqrt_pi = _PI.sqrt() / 2
        pieces = []
        for variable, low, high, count in _ERFINV_SPLITS[double]:
            if variable == "w":
                function = lambda w: (_erfinv_ratio(w) - half_sqrt_pi) / w  # noqa: E731
            else:
                function = lambda v: _erfinv_ratio(v * v)  # noqa: E731
            pieces.append((variable, low, high, _chebyshev_decimal(function, low, high, count)))
    return tuple(pieces)


# ----------------------------------------------------------------------------- erfc (compiled)
# erfc(a) = exp(-a^2) erfcx(a), a = |x| (erfc(-a) = 2 - erfc(a)); erfcx by Chebyshev in three pieces:
# (erfcx(a) - 1) / a on [0, 1/2], a erfcx(a) on [1/2, 2] and in t = 1/a from a = 2 to 27.3 (erfc is
# 0 beyond in float64); errors below 1e-18. compiler/llvm/math.py `emit_erfc` evaluates them in doubles.
ERFC_CUTOFF = 27.3
# (variable, low, high, interpolation nodes)
_ERFC_SPLITS = (("a", 0.0, 0.5, 15), ("a", 0.5, 2.0, 21), ("t", 1 / ERFC_CUTOFF, 0.5, 24))


@functools.cache
def erfc_pieces():
    """((variable, low, high, Chebyshev coefficients, the first coefficient's rounding error),
    ...) of erfcx for the compiled erfc, derived in Decimal arithmetic on first use (~70 ms)."""
    with localcontext() as context:
        context.prec = _DIGITS
        functions = (lambda a: (_erfcx_decimal(a) - 1) / a, lambda a: a * _erfcx_decimal(a),
                     lambda t: _erfcx_decimal(1 / t) / t)
        return tuple((variable, low, high, *_chebyshev_decimal(function, low, high, count, first_rest=True))
                     for (variable, low, high, count), function in zip(_ERFC_SPLITS, functions))


def _erfcx_decimal(a):
    """exp(a^2) erfc(a) for a Decimal a > 0: exp(a^2) (1 - erf(a)) by erf's series below 1 (no
    cancellation worth a digit there); above, Laplace's continued fraction
    1 / (sqrt(pi) (a + (1/2) / (a + (2/2) / (a + (3/2) / ...)))), whose error falls as
    exp(-2.8 a sqrt(terms)): 1600 / a^2 terms are beyond the working precision."""
    if a < 1:
        return (a * a).exp() * (1 - _erf_decimal(a))
    tail = a
    for n in range(int(1600 / (a * a)) + 20, 0, -1):
        tail = a + Decimal(n) / 2 / tail
    return 1 / (_PI.sqrt() * tail)


def _erfinv_ratio(w):
    """erfinv(x) / x for x = sqrt(1 - exp(-w)), a Decimal w > 0, to the context's precision:
    Winitzki's closed form (2e-3), Newton in floats (erfc near 1), two Newton steps in Decimal."""
    x = (1 - (-w).exp()).sqrt()
    wf, a = float(w), 0.147
    t = 2 / (math.pi * a) - wf / 2
    y = math.sqrt((wf / a) / (math.sqrt(t * t + wf / a) + t))
    tail, near = float((-w).exp() / (1 + x)), float(x)  # 1 - x, x
    for _ in range(4):
        miss = tail - math.erfc(y) if y > 0.5 else math.erf(y) - near
        y -= miss / (2 / math.sqrt(math.pi) * math.exp(-y * y))
    y = Decimal(y)
    for _ in range(2):
        y -= (_erf_decimal(y) - x) * _PI.sqrt() / 2 * (y * y).exp()
    return y / x


def _erf_decimal(y):
    """erf(y) = 2/sqrt(pi) * sum((-1)^n y^(2n+1) / (n! (2n+1))) for 0 <= y < 7 (the terms
    cancel to at most 10^-22 of themselves there: the working precision absorbs it)."""
    square, term, total, n = y * y, y, y, 0
    tiny = Decimal(10) ** -(_DIGITS - 5)
    while abs(term) > tiny:
        n += 1
        term = -term * square / n
        total += term / (2 * n + 1)
    return total * 2 / _PI.sqrt()


def _chebyshev_decimal(function, low, high, count, first_rest=False):
    """Chebyshev interpolation coefficients (floats) of `function` (Decimal -> Decimal) on
    [low, high] at `count` nodes, the cosine sums in Decimal so the coefficients are the
    interpolant's own rounded (float sums would leave errors of a few ulp in it). With
    `first_rest`, (coefficients, what rounding took off the first one)."""
    def cosine(m):  # cos(pi * m / (2 count)) by its Taylor series
        angle = _PI * (m % (4 * count)) / (2 * count)
        total = term = Decimal(1)
        n, tiny = 0, Decimal(10) ** -(_DIGITS - 5)
        while abs(term) > tiny:
            n += 2
            term = -term * angle * angle / (n * (n - 1))
            total += term
        return total
    cosines = [cosine(m) for m in range(4 * count)]
    low, high = Decimal(low), Decimal(high)
    values = [function((high - low) / 2 * cosines[2 * k + 1] + (high + low) / 2) for k in range(count)]
    sums = [sum(values[k] * cosines[j * (2 * k + 1) % (4 * count)] for k in range(count))
            * (1 if j else Decimal("0.5")) * 2 / count for j in range(count)]
    coefficients = [float(c) for c in sums]
    return (coefficients, float(sums[0] - Decimal(coefficients[0]))) if first_rest else coefficients
