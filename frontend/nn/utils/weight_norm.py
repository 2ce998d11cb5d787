"""The legacy torch.nn.utils.weight_norm / remove_weight_norm and spectral_norm / remove_spectral_norm:
forward pre-hooks that recompute `module.<name>` (a plain tensor attribute) before each call,
from the parameters <name>_g and <name>_v (weight norm) or from <name>_orig and the buffers
<name>_u, <name>_v (spectral norm, one power-iteration step per training-mode call).
parametrizations.py holds the modern versions and the arithmetic both share.
"""
import warnings

from ember.frontend import linalg as L
from ember.frontend import math_ops as M
from ember.frontend import shape_ops as S
from ember.frontend.autograd import no_grad
from .. import functional as F
from ..conv_transpose import _ConvTransposeNd
from ..module import _settings_version
from ..parameter import Parameter
from .parametrizations import norm_except_dim, weight_norm_function

__all__ = ["WeightNorm", "weight_norm", "remove_weight_norm", "SpectralNorm", "spectral_norm",
           "remove_spectral_norm"]


def _remove_pre_hook(module, kind, name):
    """Undo the `kind` hook of `name` (hook.remove) and unregister it; False if there is none."""
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, kind) and hook.name == name:
            hook.remove(module)
            del module._forward_pre_hooks[key]
            _settings_version[0] += 1  # as RemovableHandle.remove: compiled callers re-read the hooks
            return True
    return False


class WeightNorm:
    """The forward pre-hook of the legacy weight_norm: module.<name> = g * v / ||v||."""

    def __init__(self, name, dim):
        self.name = name
        self.dim = -1 if dim is None else dim

    def compute_weight(self, module):
        g = getattr(module, self.name + "_g")
        v = getattr(module, self.name + "_v")
        return weight_norm_function(v, g, self.dim)

    @staticmethod
    def apply(module, name, dim):
        warnings.warn("`ember.nn.utils.weight_norm` is deprecated in favor of "
                      "`ember.nn.utils.parametrizations.weight_norm`.", FutureWarning, stacklevel=3)
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm) and hook.name == name:
                raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter {name}")
        fn = WeightNorm(name, dim)
        weight = getattr(module, name)
        del module._parameters[name]
        module.register_parameter(name + "_g", Parameter(norm_except_dim(weight, 2, fn.dim).detach()))
        module.register_parameter(name + "_v", Parameter(weight.detach()))
        setattr(module, name, fn.compute_weight(module))
        module.register_forward_pre_hook(fn)
        return fn

    def remove(self, module):
        weight = self.compute_weight(module)
        delattr(module, self.name)
        del module._parameters[self.name + "_g"]
        del module._parameters[self.name + "_v"]
        setattr(module, self.name, Parameter(weight.detach()))

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module))


def weight_norm(module, name="weight", dim=0):
    """Replace the parameter `name` by <name>_g (the norm over every dim but `dim`, or over all
    when dim is None) and <name>_v (the direction); a forward pre-hook recomputes
    `module.<name>` = g * v / ||v|| before each call. Deprecated in favor of
    ember.nn.utils.parametrizations.weight_norm."""
    WeightNorm.apply(module, name, dim)
    return module


def remove_weight_norm(module, name="weight"):
    """Make `name` a plain parameter again, holding the current g * v / ||v||."""
    if not _remove_pre_hook(module, WeightNorm, name):
        raise ValueError(f"weight_norm of '{name}' not found in {module}")
    return module


class SpectralNorm:
    """The forward pre-hook of the legacy spectral_norm: module.<name> = <name>_orig / sigma."""

    _version = 1

    def __init__(self, name="weight", n_power_iterations=1, dim=0, eps=1e-12):
        self.name = name
        self.dim = dim
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but "
                             f"got n_power_iterations={n_power_iterations}")
        self.n_power_iterations = n_power_iterations
        self.eps = eps

    def reshape_weight_to_matrix(self, weight):
        if self.dim != 0:
            weight = S.permute(weight, (self.dim, *(d for d in range(weight.ndim) if d != self.dim)))
        return S.reshape(weight, (weight.shape[0], -1))

    def compute_weight(self, module, do_power_iteration):
        """weight / (u . W v); in training, first v <- normalize(W^T u), u <- normalize(W v),
        written into the buffers (torch's out=), and u, v cloned for autograd."""
        weight = getattr(module, self.name + "_orig")
        u = getattr(module, self.name + "_u")
        v = getattr(module, self.name + "_v")
        weight_mat = self.reshape_weight_to_matrix(weight)
        if do_power_iteration:
            with no_grad():
                for _ in range(self.n_power_iterations):
                    v.copy_(F.normalize(L.mv(S.t(weight_mat), u), dim=0, eps=self.eps))
                    u.copy_(F.normalize(L.mv(weight_mat, v), dim=0, eps=self.eps))
                u, v = u.clone(), v.clone()
        sigma = L.dot(u, L.mv(weight_mat, v))
        return M.div(weight, sigma)

    def remove(self, module):
        with no_grad():
            weight = self.compute_weight(module, do_power_iteration=False)
        delattr(module, self.name)
        delattr(module, self.name + "_u")
        delattr(module, self.name + "_v")
        delattr(module, self.name + "_orig")
        module.register_parameter(self.name, Parameter(weight.detach()))

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module, do_power_iteration=module.training))

    @staticmethod
    def apply(module, name, n_power_iterations, dim, eps):
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm) and hook.name == name:
                raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter {name}")
        fn = SpectralNorm(name, n_power_iterations, dim, eps)
        weight = module._parameters[name]
        if weight is None:
            raise ValueError(f"`SpectralNorm` cannot be applied as parameter `{name}` is None")
        with no_grad():
            weight_mat = fn.reshape_weight_to_matrix(weight)
            h, w = weight_mat.shape
            u = F.normalize(weight.new_empty(h).normal_(0, 1), dim=0, eps=fn.eps)
            v = F.normalize(weight.new_empty(w).normal_(0, 1), dim=0, eps=fn.eps)
        delattr(module, fn.name)
        module.register_parameter(fn.name + "_orig", weight)
        setattr(module, fn.name, weight.data)
        module.register_buffer(fn.name + "_u", u)
        module.register_buffer(fn.name + "_v", v)
        module.register_forward_pre_hook(fn)
        return fn


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Replace the parameter `name` by <name>_orig and the buffers <name>_u, <name>_v (random unit
    vectors); a forward pre-hook sets `module.<name>` = W / sigma(W) before each call, sigma by
    power iteration (advanced only in training mode). `dim` is the output dim: 1 for
    transposed convolutions, else 0, by default."""
    if dim is None:
        dim = 1 if isinstance(module, _ConvTransposeNd) else 0
    SpectralNorm.apply(module, name, n_power_iterations, dim, eps)
    return module


def remove_spectral_norm(module, name="weight"):
    """Make `name` a plain parameter again, holding the current W / sigma (no power iteration)."""
    if not _remove_pre_hook(module, SpectralNorm, name):
        raise ValueError(f"spectral_norm of '{name}' not found in {module}")
    return module
