"""lgamma, digamma, polygamma, mvlgamma, i0 and ember.special (frontend/special_functions.py,
ember/ops/special.py): float64 values against 50-digit Decimal references (Stirling and
Euler-Maclaurin series with Bernoulli numbers from Fractions, power series of the Bessel
functions and erf, asymptotic series) and known closed forms, within 1e-12 relative; PyTorch's
values at the poles and edges; gradients against float64 finite differences; eager against
ember.compile; dtypes, Tensor methods, in-place forms, out= and errors."""
import math
from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np
import pytest

import ember
from finite_differences import check_vjp

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

INF, NAN = math.inf, math.nan
EULER_GAMMA = 0.57721566490153286060651209


# ----------------------------------------------------------------------------- Decimal references

def _bernoulli(n):
    """B_n (B_1 = +1/2) by the Akiyama-Tanigawa algorithm."""
    a = [Fraction(0)] * (n + 1)
    for m in range(n + 1):
        a[m] = Fraction(1, m + 1)
        for j in range(m, 0, -1):
            a[j - 1] = j * (a[j - 1] - a[j])
    return a[0]


B2J = [Decimal(b.numerator) / Decimal(b.denominator) for b in (_bernoulli(2 * j) for j in range(1, 16))]
DIGITS = 50


def _shift(x):
    """How far to move x up before the asymptotic series (x + n >= 40)."""
    return max(0, math.ceil(40 - x))


def lgamma_reference(x):
    """log|Gamma(x)| = Stirling's series at x + n, minus log|x (x+1) ... (x+n-1)|."""
    with localcontext() as context:
        context.prec = DIGITS
        x, n = Decimal(x), _shift(x)
        a = x + n
        value = (a - Decimal("0.5")) * a.ln() - a + _half_log_two_pi()
        for j, b in enumerate(B2J, 1):
            value += b / (2 * j * (2 * j - 1) * a ** (2 * j - 1))
        return float(value - sum(abs(x + k).ln() for k in range(n)))


def _half_log_two_pi():
    pi = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
    return (2 * pi).ln() / 2


def digamma_reference(x):
    with localcontext() as context:
        context.prec = DIGITS
        x, n = Decimal(x), _shift(x)
        a = x + n
        value = a.ln() - 1 / (2 * a)
        for j, b in enumerate(B2J, 1):
            value -= b / (2 * j * a ** (2 * j))
        return float(value - sum(1 / (x + k) for k in range(n)))


def zeta_reference(s, q):
    """Hurwitz zeta(s, q) for an integer s >= 2 (any non-integer q) or a real s > 1 (q > 0)."""
    with localcontext() as context:
        context.prec = DIGITS
        s, q, n = Decimal(s), Decimal(q), _shift(q)
        power = (lambda b, e: b ** int(e)) if s == s.to_integral_value() else (lambda b, e: b ** e)
        total = sum(power(q + k, -s) for k in range(n))
        a = q + n
        tail = a * power(a, -s) / (s - 1) + power(a, -s) / 2
        rising = s * power(a, -s) / a
        factorial = Decimal(1)
        for j, b in enumerate(B2J, 1):
            factorial *= (2 * j - 1) * (2 * j)
            tail += b / factorial * rising
            rising *= (s + 2 * j - 1) * (s + 2 * j) / (a * a)
        return float(total + tail)


def polygamma_reference(n, x):
    return (-1) ** (n + 1) * math.factorial(n) * zeta_reference(n + 1, x)


def bessel_reference(order, x, scaled=False):
    """I_order(x) (times exp(-|x|) when scaled) by its power series, all terms positive."""
    with localcontext() as context:
        context.prec = DIGITS + 20
        half = Decimal(abs(x)) / 2
        term = half if order == 1 else Decimal(1)
        total, k = term, 0
        while term > total * Decimal(10) ** -(DIGITS + 5):
            k += 1
            term = term * half * half / (k * (k + order))
            total += term
        if scaled:
            total *= (-2 * half).exp()
        return math.copysign(float(total), x) if order == 1 else float(total)


def erfc_reference(z):
    """erfc(z) in Decimal: 1 - the Taylor series of erf below 9, the asymptotic series above."""
    with localcontext() as context:
        context.prec = 90
        z = Decimal(z)
        pi = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
        if z < 0:
            return 2 - erfc_reference(-z)
        if z < 9:
            term, total, n = z, z, 0
            while abs(term) > Decimal(10) ** -80:
                n += 1
                term = -term * z * z / n
                total += term / (2 * n + 1)
            return 1 - 2 / pi.sqrt() * total
        term, total = Decimal(1), Decimal(1)
        for n in range(1, 40):
            term = -term * (2 * n - 1) / (2 * z * z)
            total += term
        return total * (-z * z).exp() / (z * pi.sqrt())


def erfcx_reference(x):
    """exp(x^2) erfc(x); its asymptotic series itself from 9 on (exp(x^2) would overflow Decimal)."""
    with localcontext() as context:
        context.prec = 90
        x = Decimal(x)
        if x < 9:
            return float((x * x).exp() * erfc_reference(x))
        pi = Decimal("3.14159265358979323846264338327950288419716939937510582097494459")
        term, total = Decimal(1), Decimal(1)
        for n in range(1, 40):
            term = -term * (2 * n - 1) / (2 * x * x)
            total += term
        return float(total / (x * pi.sqrt()))


def log_ndtr_reference(x):
    with localcontext() as context:
        context.prec = 90
        return float((erfc_reference(-Decimal(x) / Decimal(2).sqrt()) / 2).ln())


def assert_close(got, expected, rtol=1e-12, atol=1e-300):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def f64(values):
    return ember.tensor(np.asarray(values, np.float64))


GRID = np.concatenate([np.linspace(-9.75, 9.75, 40) + 0.013, [1e-8, 0.5, 1.5, 2.5, 3.3, 17.2, 123.4, 1e5]])


# ----------------------------------------------------------------------------- values

def test_lgamma_matches_stirling_reference_and_pytorchs_poles():
    assert_close(ember.lgamma(f64(GRID)).numpy(), [lgamma_reference(x) for x in GRID], atol=1e-14)
    out = ember.lgamma(f64([0.0, -0.0, -1.0, -2.0, INF, -INF, NAN])).numpy()
    assert np.isnan(out[-1]) and (out[:-1] == INF).all()
    assert ember.lgamma(ember.tensor([1, 2, 3])).dtype is ember.float32


def test_digamma_matches_reference_closed_forms_and_pytorchs_edges():
    assert_close(ember.digamma(f64(GRID)).numpy(), [digamma_reference(x) for x in GRID], atol=1e-14)
    known = ember.digamma(f64([1.0, 0.5, 2.0])).numpy()
    assert_close(known, [-EULER_GAMMA, -EULER_GAMMA - 2 * math.log(2), 1 - EULER_GAMMA], rtol=1e-15)
    x = np.array([0.3, -2.7, 4.4])  # the reflection formula
    reflection = ember.digamma(f64(1 - x)).numpy() - ember.digamma(f64(x)).numpy()
    assert_close(reflection, math.pi / np.tan(math.pi * x), rtol=1e-13)
    edges = ember.digamma(f64([0.0, -0.0, -1.0, -3.0, INF, -INF, 1e-300, -1e-300])).numpy()
    np.testing.assert_allclose(edges, [-INF, INF, NAN, NAN, INF, NAN, -1e300, 1e300], rtol=1e-15)


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_polygamma_matches_hurwitz_zeta_reference(n):
    x = GRID[np.abs(GRID) < 50]
    assert_close(ember.polygamma(n, f64(x)).numpy(), [polygamma_reference(n, v) for v in x], rtol=2e-12)


def test_polygamma_closed_forms_zero_order_and_poles():
    zeta3 = 1.2020569031595942854
    got = [ember.polygamma(1, f64([1.0])).item(), ember.polygamma(1, f64([0.5])).item(),
           ember.polygamma(2, f64([1.0])).item(), ember.polygamma(3, f64([1.0])).item()]
    assert_close(got, [math.pi ** 2 / 6, math.pi ** 2 / 2, -2 * zeta3, math.pi ** 4 / 15], rtol=1e-15)
    np.testing.assert_array_equal(ember.polygamma(0, f64(GRID)).numpy(), ember.digamma(f64(GRID)).numpy())
    poles = f64([0.0, -1.0, -2.0])
    assert (ember.polygamma(1, poles).numpy() == INF).all() and (ember.polygamma(2, poles).numpy() == -INF).all()
    assert ember.polygamma(3, f64([INF])).item() == 0.0


def test_mvlgamma_sums_shifted_lgammas():
    x = np.array([2.1, 3.7, 10.0])
    for p in (1, 2, 5):
        expected = [sum(lgamma_reference(v - i / 2) for i in range(p)) + p * (p - 1) / 4 * math.log(math.pi)
                    for v in x]
        assert_close(ember.mvlgamma(f64(x), p).numpy(), expected)
        assert_close(ember.special.multigammaln(f64(x), p).numpy(), expected)
    assert ember.mvlgamma(ember.tensor([1, 3]), p=1).dtype is ember.float32


def test_modified_bessel_functions_match_their_power_series():
    x = np.array([-35.0, -7.5, -1e-3, 0.0, 0.25, 1.0, 4.2, 12.0, 29.9, 30.1, 48.0, 200.0])
    assert_close(ember.i0(f64(x)).numpy(), [bessel_reference(0, v) for v in x], rtol=2e-14)
    assert_close(ember.special.i1(f64(x)).numpy(), [bessel_reference(1, v) for v in x], rtol=2e-14)
    assert_close(ember.special.i0e(f64(x)).numpy(), [bessel_reference(0, v, scaled=True) for v in x], rtol=2e-14)
    assert_close(ember.special.i1e(f64(x)).numpy(), [bessel_reference(1, v, scaled=True) for v in x], rtol=2e-14)
    # finite where exp(|x|) alone would overflow, inf beyond
    big = ember.i0(f64([710.0, 720.0])).numpy()
    assert np.isfinite(big[0]) and big[1] == INF


def test_erfcx_log_ndtr_and_ndtr_match_decimal_erfc():
    x = np.array([-26.0, -5.0, -0.5, 0.0, 0.3, 2.0, 7.9, 8.1, 30.0, 1e4])
    assert_close(ember.special.erfcx(f64(x)).numpy(), [erfcx_reference(v) for v in x], rtol=5e-15)
    assert ember.special.erfcx(f64([INF])).item() == 0.0 and ember.special.erfcx(f64([-INF])).item() == INF
    y = np.array([-200.0, -38.0, -10.0, -1.5, -0.2, 0.0, 1.0, 6.0])
    assert_close(ember.special.log_ndtr(f64(y)).numpy(), [log_ndtr_reference(v) for v in y], rtol=1e-14)
    # ndtr is PyTorch's (1 + erf(x / sqrt 2)) / 2
    np.testing.assert_allclose(ember.special.ndtr(f64([0.0, 1.0, -2.0])).numpy(),
                               [0.5, 0.8413447460685429, 0.022750131948179195], rtol=1e-12)


def test_ndtri_inverts_ndtr_into_the_tails():
    p = np.array([1e-300, 1e-20, 1e-5, 0.02, 0.25, 0.5, 0.6, 0.975, 1 - 1e-12])
    x = ember.special.ndtri(f64(p)).numpy()
    back = np.array([math.exp(log_ndtr_reference(v)) for v in x])
    assert (np.abs(back - p) <= 4e-15 * np.maximum(1, x * x) * p).all(), (back, p)  # (p's condition ~ x^2)
    assert_close(x[7], 1.959963984540054, rtol=1e-15)
    np.testing.assert_array_equal(ember.special.ndtri(f64([0.0, 1.0, -0.5, 2.0, NAN])).numpy(),
                                  [-INF, INF, NAN, NAN, NAN])


def test_zeta_matches_reference_and_cephes_domain():
    s = np.array([2.0, 3.0, 4.5, 2.0, 7.0, 3.0])
    q = np.array([1.0, 0.3, 2.2, 50.0, 1e-3, -2.5])
    assert_close(ember.special.zeta(f64(s), f64(q)).numpy(), [zeta_reference(a, b) for a, b in zip(s, q)])
    assert_close(ember.special.zeta(f64([2.0]), f64([1.0])).item(), math.pi ** 2 / 6, rtol=1e-15)
    edges = ember.special.zeta(f64([1.0, 0.5, 2.5, 3.0]), f64([1.0, 1.0, -1.5, -3.0])).numpy()
    np.testing.assert_array_equal(edges, [INF, NAN, NAN, INF])
    np.testing.assert_allclose(ember.special.zeta(2, f64([1.0, 2.0])).numpy(),
                               [math.pi ** 2 / 6, math.pi ** 2 / 6 - 1], rtol=1e-14)


def test_entr_xlog1py_and_spherical_bessel_j0():
    np.testing.assert_array_equal(ember.special.entr(f64([0.0, -1.0, NAN])).numpy(), [0.0, -INF, NAN])
    assert_close(ember.special.entr(f64([0.5, 2.0])).numpy(), [0.5 * math.log(2), -2 * math.log(2)])
    out = ember.special.xlog1py(f64([0.0, 0.0, 1.0, 1.0, 2.0]), f64([NAN, -1.0, -1.0, -2.0, 3.0])).numpy()
    np.testing.assert_array_equal(out[:4], [NAN, 0.0, -INF, NAN])
    assert_close(out[4], 2 * math.log(4))
    j0 = ember.special.spherical_bessel_j0(f64([0.0, 1.0, INF]))
    assert_close(j0.numpy(), [1.0, math.sin(1.0), 0.0])
    assert not ember.special.spherical_bessel_j0(ember.tensor([1.0], requires_grad=True)).requires_grad


def test_special_namespace_aliases_and_out():
    x = ember.tensor([0.25, 0.5, 2.0])
    for alias, function in (("gammaln", ember.lgamma), ("psi", ember.digamma), ("expit", ember.sigmoid),
                            ("erf", ember.erf), ("erfc", ember.erfc), ("log1p", ember.log1p), ("exp2", ember.exp2),
                            ("expm1", ember.expm1), ("sinc", ember.sinc), ("i0", ember.i0), ("logit", ember.logit)):
        np.testing.assert_array_equal(getattr(ember.special, alias)(x).numpy(), function(x).numpy(), err_msg=alias)
    np.testing.assert_array_equal(ember.special.softmax(x, 0).numpy(), ember.softmax(x, 0).numpy())
    assert ember.special.log_softmax(x, 0, dtype=ember.float64).dtype is ember.float64
    out = ember.empty(3)
    assert ember.special.gammaln(x, out=out) is out
    np.testing.assert_array_equal(out.numpy(), ember.lgamma(x).numpy())
    import ember.special as special_module
    assert special_module is ember.special and "polygamma" in dir(ember.special)


# ----------------------------------------------------------------------------- gradients

SMOOTH = np.array([0.3, 1.7, 4.2, -2.6, 7.9])


@pytest.mark.parametrize("fn", [
    ember.lgamma, ember.digamma, lambda x: ember.polygamma(1, x), lambda x: ember.polygamma(2, x),
    lambda x: ember.mvlgamma(x + 8, 3), ember.i0, ember.special.i0e, ember.special.i1, ember.special.i1e,
    ember.special.erfcx, ember.special.log_ndtr, ember.special.ndtr, lambda x: ember.special.entr(x.abs()),
], ids=["lgamma", "digamma", "trigamma", "polygamma2", "mvlgamma", "i0", "i0e", "i1", "i1e", "erfcx", "log_ndtr",
        "ndtr", "entr"])
def test_gradients_match_finite_differences(fn):
    check_vjp(fn, [SMOOTH], rtol=1e-6)


def test_ndtri_and_xlog1py_gradients():
    check_vjp(ember.special.ndtri, [np.array([0.01, 0.3, 0.5, 0.9])], rtol=1e-6)
    check_vjp(ember.special.xlog1py, [np.array([0.5, -1.5, 2.0]), np.array([0.2, 3.0, -0.5])], rtol=1e-6)


def test_pytorchs_gradients_at_zero():
    x = ember.tensor([0.0, 0.0, 0.0, 0.0], dtype=ember.float64, requires_grad=True)
    a, b = x[:2], x[2:]
    (ember.special.i1(a).sum() + ember.special.i1e(b).sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 0.5, 0.5, 0.5])  # the limits, not 0/0
    y = ember.tensor([0.0, 2.0], dtype=ember.float64, requires_grad=True)
    ember.special.xlog1py(y, ember.tensor([2.0, 3.0], dtype=ember.float64)).sum().backward()
    assert_close(y.grad.numpy(), [math.log(3), math.log(4)])  # log1p(other) at input == 0 too
    z = ember.tensor([1.5], requires_grad=True)
    assert not ember.special.zeta(z, 2.0).requires_grad  # no derivative, as in PyTorch


def test_compiled_matches_eager_with_gradients():
    def special(x):
        return (ember.lgamma(x) + ember.digamma(x) * ember.polygamma(1, x) + ember.i0(x) + ember.special.i1e(x)
                + ember.special.erfcx(x) + ember.special.log_ndtr(x) + ember.mvlgamma(x + 3, 2)).sum()
    arrays = [np.array([0.4, 1.3, 2.8, 6.1])]

    def gradient(fn):
        x = ember.tensor(arrays[0], requires_grad=True)
        out = fn(x)
        out.backward()
        return out.item(), x.grad.numpy()
    compiled = ember.compile(special)
    gradient(compiled)
    (value, grad), (compiled_value, compiled_grad) = gradient(special), gradient(compiled)
    assert compiled_value == pytest.approx(value, rel=1e-14)
    np.testing.assert_allclose(compiled_grad, grad, rtol=1e-14)


def test_special_primitives_are_host_only_callbacks():
    from ember.ops import PRIMITIVES
    for name in ("lgamma", "digamma", "polygamma", "bessel_i0", "bessel_i1e", "erfcx", "ndtri", "log_ndtr", "zeta"):
        assert PRIMITIVES[name].host_only and PRIMITIVES[name].kind == "opaque", name


# ----------------------------------------------------------------------------- dtypes, methods, errors

def test_float32_and_integer_inputs():
    x32 = ember.tensor([0.5, 2.5, 7.0])
    for fn in (ember.lgamma, ember.digamma, ember.i0, ember.special.i1, ember.special.ndtri):
        assert fn(x32).dtype is ember.float32
        assert fn(ember.tensor([1, 2])).dtype is ember.float32
    np.testing.assert_allclose(ember.lgamma(x32).numpy(), [lgamma_reference(v) for v in (0.5, 2.5, 7.0)], rtol=1e-6)
    assert ember.special.i1e(ember.tensor([True])).dtype is ember.float32


def test_tensor_methods_and_in_place_forms():
    x = ember.tensor([0.5, 2.5])
    np.testing.assert_array_equal(x.polygamma(2).numpy(), ember.polygamma(2, x).numpy())
    np.testing.assert_array_equal(x.mvlgamma(2).numpy(), ember.mvlgamma(x, 2).numpy())
    for name, fn in (("lgamma_", ember.lgamma), ("digamma_", ember.digamma), ("i0_", ember.i0)):
        y = x.clone()
        assert getattr(y, name)() is y
        np.testing.assert_array_equal(y.numpy(), fn(x).numpy())
    y = x.clone()
    y.polygamma_(1)
    np.testing.assert_array_equal(y.numpy(), ember.polygamma(1, x).numpy())
    y = x.clone()
    ember.i0_(y)
    np.testing.assert_array_equal(y.numpy(), ember.i0(x).numpy())


def test_pytorchs_errors():
    with pytest.raises(RuntimeError, match=r"polygamma\(n, x\) does not support negative n\."):
        ember.polygamma(-1, ember.tensor([1.0]))
    with pytest.raises(TypeError, match="argument 'n'"):
        ember.polygamma(1.5, ember.tensor([1.0]))
    with pytest.raises(RuntimeError, match="p has to be greater than or equal to 1"):
        ember.mvlgamma(ember.tensor([2.0]), 0)
