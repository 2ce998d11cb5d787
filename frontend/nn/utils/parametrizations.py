"""ember.nn.utils.parametrizations: torch.nn.utils.parametrizations' weight_norm and spectral_norm,
as parametrization modules registered through parametrize.py (weight = g * v / ||v||; weight /
sigma, with sigma from power iteration on buffers `_u`, `_v`). Also home of `norm_except_dim`
and `weight_norm_function` (torch._weight_norm), which the legacy hooks in weight_norm.py share.
"""
from ember.frontend import linalg as L
from ember.frontend import math_ops as M
from ember.frontend import reductions as R
from ember.frontend import shape_ops as S
from ember.frontend.autograd import no_grad
from ember.frontend.tensor import Tensor
from .. import functional as F
from ..conv_transpose import _ConvTransposeNd
from ..module import Module
from . import parametrize

__all__ = ["spectral_norm", "weight_norm"]


def norm_except_dim(v, pow=2, dim=0):
    """torch.norm_except_dim: the `pow`-norm of v over every dim but `dim`, kept as size-1 dims
    (dim=-1: over the whole tensor, a 0-d result)."""
    if dim == -1:
        return R.norm(v, pow)
    dim = dim % v.ndim
    others = tuple(d for d in range(v.ndim) if d != dim)
    if not others:  # a 1-D tensor normed "per element"
        return M.abs(v)
    return R.norm(v, pow, others, keepdim=True)


def weight_norm_function(v, g, dim=0):
    """torch._weight_norm: v * (g / ||v||), the norm over every dim but `dim`."""
    return M.mul(v, M.div(g, norm_except_dim(v, 2, dim)))


class _WeightNorm(Module):
    def __init__(self, dim=0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return weight_norm_function(weight_v, weight_g, self.dim)

    def right_inverse(self, weight):
        return norm_except_dim(weight, 2, self.dim), weight


def weight_norm(module, name="weight", dim=0):
    """Parametrize `module.<name>` as g * v / ||v|| (the norm over every dim but `dim`; over the
    whole tensor when dim is None): g is parametrizations.<name>.original0, v original1.
    State dicts of the legacy weight_norm (<name>_g, <name>_v) load into it."""
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)

    def legacy_keys_hook(state_dict, prefix):
        g_key, v_key = f"{prefix}{name}_g", f"{prefix}{name}_v"
        if g_key in state_dict and v_key in state_dict:
            state_dict[f"{prefix}parametrizations.{name}.original0"] = state_dict.pop(g_key)
            state_dict[f"{prefix}parametrizations.{name}.original1"] = state_dict.pop(v_key)

    hooks = module.__dict__.setdefault("_load_state_dict_pre_hooks", {})
    hooks[len(hooks)] = legacy_keys_hook
    return module


class _SpectralNorm(Module):
    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of [-{ndim}, {ndim - 1}] but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but "
                             f"got n_power_iterations={n_power_iterations}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            weight_mat = self._reshape_weight_to_matrix(weight)
            h, w = weight_mat.shape
            u = weight_mat.new_empty(h).normal_(0, 1)
            v = weight_mat.new_empty(w).normal_(0, 1)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=self.eps))
            self._power_method(weight_mat, 15)  # start from good estimates of the singular vectors

    def _reshape_weight_to_matrix(self, weight):
        if self.dim != 0:
            weight = S.permute(weight, (self.dim, *(d for d in range(weight.ndim) if d != self.dim)))
        return S.flatten(weight, 1)

    def _power_method(self, weight_mat, n_power_iterations):
        """u <- normalize(W v), v <- normalize(W^T u), written into the buffers in place (as
        torch's out=), without autograd."""
        with no_grad():
            for _ in range(n_power_iterations):
                self._u.copy_(F.normalize(L.mv(weight_mat, self._v), dim=0, eps=self.eps))
                self._v.copy_(F.normalize(L.mv(S.transpose(weight_mat, 0, 1), self._u), dim=0, eps=self.eps))

    def forward(self, weight):
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        weight_mat = self._reshape_weight_to_matrix(weight)
        if self.training:
            self._power_method(weight_mat, self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()
        sigma = L.dot(u, L.mv(weight_mat, v))
        return M.div(weight, sigma)

    def right_inverse(self, value):
        return value


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Parametrize `module.<name>` as W / sigma(W), sigma estimated by `n_power_iterations`
    steps of power iteration per training-mode access (buffers parametrizations.<name>.0._u and
    _v). `dim` is the output dim: 1 for transposed convolutions, else 0, by default."""
    weight = getattr(module, name, None)
    if not isinstance(weight, Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = 1 if isinstance(module, _ConvTransposeNd) else 0
    parametrize.register_parametrization(module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))
    return module
