"""torch's special functions: lgamma, digamma, polygamma, mvlgamma, i0, and the `ember.special`
namespace (torch.special: gammaln, psi, multigammaln, i0e, i1, i1e, erfcx, ndtr, ndtri, log_ndtr,
zeta, entr, xlog1py and the aliases of ember's own functions). The transcendental functions bind
the host-only primitives of ember/ops/special.py (their VJPs are written in primitives); the
others compose math_ops and math_more, so autograd and ember.compile take them all.
"""
import math
import sys
import types

import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from . import math_ops as M, math_more as MM, reductions as R, shape_ops as S
from .math_ops import promote_operands, where
from .tensor import Tensor


def _floating(input):
    """Integer and bool tensors become the default float dtype, as torch's float functions do."""
    if not isinstance(input, Tensor):
        input = M.constant(input, dtypes.scalar_dtype(input))
    return input if input.is_floating_point() else M.to_dtype(input, dtypes.defaults.floating)


def _unary(primitive, name, doc):
    prim = P[primitive]

    def function(input):
        return prim.bind(_floating(input))
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    return function


lgamma = _unary("lgamma", "lgamma", "log |Gamma(x)|; +inf at 0, the negative integers and -inf.")
digamma = _unary("digamma", "digamma", "d/dx lgamma(x); -inf at +0, +inf at -0, nan at the negative integers.")
i0 = _unary("bessel_i0", "i0", "The modified Bessel function of the first kind, order 0.")
i0e = _unary("bessel_i0e", "i0e", "exp(-|x|) i0(x).")
i1 = _unary("bessel_i1", "i1", "The modified Bessel function of the first kind, order 1.")
i1e = _unary("bessel_i1e", "i1e", "exp(-|x|) i1(x).")
erfcx = _unary("erfcx", "erfcx", "exp(x^2) erfc(x), without the overflow and underflow of the product.")
ndtri = _unary("ndtri", "ndtri", "The standard normal quantile: ndtr(ndtri(p)) = p; nan outside [0, 1].")
log_ndtr = _unary("log_ndtr", "log_ndtr", "log of the standard normal CDF, accurate far into the left tail.")


def polygamma(n, input):
    """The n-th derivative of digamma (n = 0 is digamma itself)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"polygamma(): argument 'n' (position 1) must be int, not {type(n).__name__}")
    if n < 0:
        raise RuntimeError("polygamma(n, x) does not support negative n.")
    x = _floating(input)
    return P["digamma"].bind(x) if n == 0 else P["polygamma"].bind(x, n=int(n))


def mvlgamma(input, p):
    """The multivariate log-gamma function of dimension p:
    sum over i < p of lgamma(x - i/2), plus p (p - 1) / 4 log(pi)."""
    if p < 1:
        raise RuntimeError("p has to be greater than or equal to 1")
    x = _floating(input)
    shifts = Tensor._wrap((-np.arange(p) / 2).astype(x._data.dtype))
    terms = lgamma(M.add(S.unsqueeze(x, -1), shifts))
    return M.add(R.sum(terms, -1), p * (p - 1) / 4 * math.log(math.pi))


def zeta(input, other):
    """The Hurwitz zeta function, sum over k >= 0 of (other + k)^-input (Cephes' domain:
    inf at input == 1 and at non-positive integer `other`, nan for input < 1)."""
    if not isinstance(input, Tensor) and not isinstance(other, Tensor):
        raise TypeError("zeta(): at least one of input and other must be a Tensor")
    s, q = promote_operands((input, other), at_least=dtypes.defaults.floating)
    return P["zeta"].bind(s, q)


def ndtr(input):
    """The standard normal CDF, (1 + erf(x / sqrt 2)) / 2 as PyTorch computes it."""
    x = _floating(input)
    return M.mul(M.add(M.erf(M.mul(x, 1 / math.sqrt(2))), 1.0), 0.5)


def entr(input):
    """-x log x elementwise: 0 at 0, -inf for x < 0, nan at nan."""
    x = _floating(input)
    positive = M.gt(x, 0)
    inside = M.neg(M.mul(x, M.log(where(positive, x, 1.0))))
    outside = where(M.eq(x, 0), 0.0, where(M.isnan(x), x, float("-inf")))
    return where(positive, inside, outside)


def xlog1py(input, other):
    """input * log1p(other), 0 where input == 0 (unless other is nan); float result. As
    PyTorch's, input's gradient is log1p(other) at input == 0 too, other's is 0 there."""
    a, b = promote_operands((input, other), at_least=dtypes.defaults.floating)
    zero = M.logical_and(M.eq(a, 0), M.logical_not(M.isnan(b)))
    log_b = M.log1p(b.detach())
    at_zero = M.mul(a, where(M.isfinite(log_b), log_b, 0.0))
    return where(zero, at_zero, M.mul(a, M.log1p(where(zero, 0.0, b))))


def spherical_bessel_j0(input):
    """sin(x) / x, 1 at 0 and 0 at +-inf. Not differentiable (as in PyTorch: no gradient)."""
    x = _floating(input).detach()
    zero = M.eq(x, 0)
    safe = where(zero, 1.0, x)
    return where(zero, 1.0, where(M.isinf(x), 0.0, M.div(M.sin(safe), safe)))


def _no_gradient(fn, name):
    def function(input):
        return fn(_floating(input).detach())
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"{fn.__name__}, without a gradient (as PyTorch's special.{name})."
    return function


def _softmax(name):
    def function(input, dim, *, dtype=None):
        from .nn import functional as F
        return getattr(F, name)(input, dim, dtype=dtype)
    function.__name__ = function.__qualname__ = name
    return function


def _special_namespace():
    """`ember.special`: torch.special's functions that ember has, each taking out=."""
    from .out_arguments import with_out
    functions = {
        "gammaln": lgamma, "digamma": digamma, "psi": digamma, "polygamma": polygamma,
        "multigammaln": mvlgamma, "i0": i0, "i0e": i0e, "i1": i1, "i1e": i1e, "erf": M.erf, "erfc": MM.erfc,
        "erfcx": erfcx, "erfinv": M.erfinv, "expit": M.sigmoid, "logit": MM.logit, "xlogy": MM.xlogy,
        "xlog1py": xlog1py, "log1p": M.log1p, "expm1": M.expm1, "exp2": M.exp2, "sinc": MM.sinc,
        "logsumexp": R.logsumexp, "softmax": _softmax("softmax"), "log_softmax": _softmax("log_softmax"),
        "ndtr": ndtr, "ndtri": ndtri, "log_ndtr": log_ndtr, "entr": entr, "zeta": zeta, "round": M.round,
        "spherical_bessel_j0": spherical_bessel_j0,
        "modified_bessel_i0": _no_gradient(i0, "modified_bessel_i0"),
        "modified_bessel_i1": _no_gradient(i1, "modified_bessel_i1"),
    }
    module = types.ModuleType("ember.special", "torch.special's functions (frontend/special_functions.py).")
    for name, fn in functions.items():
        setattr(module, name, fn if name in ("softmax", "log_softmax") else with_out(fn, f"special.{name}"))
    module.__all__ = sorted(functions)
    sys.modules.setdefault("ember.special", module)  # `import ember.special` once the frontend is loaded
    return module


special = _special_namespace()


def i0_(input):
    """torch.i0_(input): input.i0_()."""
    return input.i0_()


# name -> function; names ending in "_" are in-place forms of the function given
TENSOR_METHODS = {
    "lgamma": lgamma, "lgamma_": lgamma, "digamma": digamma, "digamma_": digamma,
    "polygamma": lambda self, n: polygamma(n, self), "polygamma_": lambda self, n: polygamma(n, self),
    "mvlgamma": mvlgamma, "mvlgamma_": mvlgamma, "i0": i0, "i0_": i0,
}
