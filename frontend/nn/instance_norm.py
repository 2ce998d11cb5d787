"""Instance normalization: torch.nn.functional.instance_norm and InstanceNorm1d/2d/3d.

Each (sample, channel) is normalised over its spatial dims, composed from reductions and
elementwise ops, so autograd and the compiler see through it. In training with running stats,
the stats move (under no_grad) by the batch's mean of the per-instance statistics, as PyTorch's
instance_norm (batch norm over [1, N*C, ...]) does.
"""
import math
import warnings

from ember import dtypes
from ember.frontend.autograd import no_grad
from ember.frontend.creation import empty, ones, zeros, tensor
from ember.frontend import math_ops as M
from ember.frontend import reductions as R
from ember.frontend import shape_ops as S
from ember.frontend.linalg import scalar_type_name
from . import init, linear  # (modules, not names: functional.py imports this file)
from .functional_conv import _shape_text, where_named
from .module import Module
from .parameter import Parameter


def _verify_spatial_size(input):
    if input.ndim < 3 or math.prod(input.shape[2:]) == 1:
        raise ValueError(f"{where_named('instance_norm')}: Expected more than 1 spatial element when training, "
                         f"got input size {_torch_size(input)} (input {_shape_text(input)})")


def _torch_size(input):
    return f"torch.Size({list(input.shape)})"


def _check_arguments(input, running_mean, running_var, weight, bias, use_input_stats):
    """PyTorch's checks, in its order: dtype, running stats given, sizes, parameter dtypes."""
    op = where_named("instance_norm")
    if not input.is_floating_point():
        raise NotImplementedError(f"{op}: \"batch_norm\" not implemented for '{scalar_type_name(input.dtype)}' "
                                  f"(input {_shape_text(input)})")
    if not use_input_stats and (running_mean is None or running_var is None):
        raise RuntimeError(f"{op}: Expected running_mean and running_var to be defined when use_input_stats is "
                           f"false (input {_shape_text(input)})")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must either both be None or neither be None")
    if input.ndim < 2:
        raise IndexError(f"{op}: Dimension out of range (expected to be in range of [-1, 0], but got 1): "
                         f"input {_shape_text(input)} has no channel dim")
    batch, channels = input.shape[0], input.shape[1]
    named = (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var))
    for name, t in named:
        # (PyTorch normalises [1, N*C, ...] with each per-channel tensor repeated N times)
        if t is not None and batch * t.numel() != batch * channels:
            raise RuntimeError(f"{op}: {name} should contain {batch * channels} elements not {batch * t.numel()} "
                               f"(input {_shape_text(input)} has {channels} channels, {name} {_shape_text(t)})")
    for name, t in named[:2]:
        if t is not None and t.dtype is not input.dtype:
            words = ("expect parameter to have scalar type of Float" if input.dtype is dtypes.float32
                     else "all inputs must share same datatype.")
            raise RuntimeError(f"{op}: mixed dtype (CPU): {words} (input {_shape_text(input)}, {name} "
                               f"{_shape_text(t)})")


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None, use_input_stats=True,
                  momentum=0.1, eps=1e-5):
    """Normalise each [n, c] slice of input [N, C, *spatial] over its spatial dims (biased
    variance), then scale by weight[c] and shift by bias[c]. With use_input_stats=False the
    running stats normalise instead; with it and running stats given, they move by `momentum`
    towards the batch's mean of the instance means and unbiased variances."""
    if use_input_stats:
        _verify_spatial_size(input)
    _check_arguments(input, running_mean, running_var, weight, bias, use_input_stats)
    batch, channels = input.shape[0], input.shape[1]
    spatial = tuple(range(2, input.ndim))
    per_channel = (1, channels) + (1,) * len(spatial)
    if use_input_stats:
        mean = R.mean(input, spatial, keepdim=True)
        centered = M.sub(input, mean)
        var = R.mean(M.mul(centered, centered), spatial, keepdim=True)
        if running_mean is not None:
            _update_running_stats(running_mean, running_var, mean, var, momentum, batch, channels,
                                  math.prod(input.shape[2:]))
    else:
        mean = M.to_dtype(S.reshape(running_mean, per_channel), input.dtype)
        var = M.to_dtype(S.reshape(running_var, per_channel), input.dtype)
        centered = M.sub(input, mean)
    out = M.mul(centered, M.rsqrt(M.add(var, eps)))
    if weight is not None:
        out = M.mul(out, S.reshape(weight, per_channel))
    if bias is not None:
        out = M.add(out, S.reshape(bias, per_channel))
    return out


def _update_running_stats(running_mean, running_var, mean, var, momentum, batch, channels, count):
    with no_grad():
        instance_mean = S.reshape(mean, (batch, channels))
        unbiased = M.mul(S.reshape(var, (batch, channels)), count / (count - 1) if count > 1 else float("nan"))
        running_mean.copy_(M.add(M.mul(running_mean, 1.0 - momentum), M.mul(R.mean(instance_mean, 0), momentum)))
        running_var.copy_(M.add(M.mul(running_var, 1.0 - momentum), M.mul(R.mean(unbiased, 0), momentum)))


# ----------------------------------------------------------------------------- modules

class _InstanceNorm(Module):
    """torch's _InstanceNorm (on _NormBase): optional affine weight/bias and running stats
    buffers; instance statistics in training, and in eval unless track_running_stats."""

    _version = 2
    dims = None  # spatial dims: an input has dims + 1 (unbatched) or dims + 2 dims

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        kind = linear.factory(dtype)
        if affine:
            self.weight = Parameter(empty(num_features, dtype=kind))
            if bias:
                self.bias = Parameter(empty(num_features, dtype=kind))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, dtype=kind))
            self.register_buffer("running_var", ones(num_features, dtype=kind))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=dtypes.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1)
                self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        unbatched = self.dims + 1
        if input.dim() not in (unbatched, unbatched + 1):
            raise ValueError(f"{where_named(type(self).__name__)}: expected {unbatched}D or {unbatched + 1}D input "
                             f"(got {input.dim()}D input) (input {_shape_text(input)})")
        feature_dim = input.dim() - unbatched
        features = input.shape[feature_dim]
        if features != self.num_features:
            if self.affine:
                raise ValueError(f"{where_named(type(self).__name__)}: expected input's size at dim={feature_dim} "
                                 f"to match num_features ({self.num_features}), but got: {features}. "
                                 f"(input {_shape_text(input)})")
            warnings.warn(f"input's size at dim={feature_dim} does not match num_features. You can silence this "
                          f"warning by not passing in num_features, which is not used because affine=False",
                          stacklevel=3)
        if input.dim() == unbatched:
            return S.squeeze(self._apply_instance_norm(S.unsqueeze(input, 0)), 0)
        return self._apply_instance_norm(input)

    def _apply_instance_norm(self, input):
        return instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                             self.training or not self.track_running_stats,
                             self.momentum if self.momentum is not None else 0.0, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization over [N, C, L] or unbatched [C, L]."""
    dims = 1


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization over [N, C, H, W] or unbatched [C, H, W]."""
    dims = 2


class InstanceNorm3d(_InstanceNorm):
    """Instance normalization over [N, C, D, H, W] or unbatched [C, D, H, W]."""
    dims = 3
