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
from ember.frontend import math_ops as M
from ember.frontend import reductions as R
from ember.frontend import shape_ops as S
from ember.frontend.linalg import scalar_type_name
from .functional_conv import _shape_text, where_named


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
