"""Normalization layers: BatchNorm1d/2d/3d and InstanceNorm1d/2d/3d (on NormBase: running stats as
buffers), LayerNorm, GroupNorm, RMSNorm."""
import warnings

from ember import dtypes
from ember.frontend.autograd import no_grad
from ember.frontend.creation import empty, ones, zeros, tensor
from . import functional as F
from . import init
from .functional_conv import _shape_text, where_named
from .linear import factory
from .module import Module
from .parameter import Parameter


class NormBase(Module):
    """torch's _NormBase, shared by BatchNorm and InstanceNorm: an optional affine weight (and
    bias), and running_mean/running_var/num_batches_tracked buffers when tracking statistics."""

    _version = 2

    def __init__(self, num_features, eps, momentum, affine, track_running_stats, dtype=None, bias=True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        kind = factory(dtype)
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


class _BatchNorm(NormBase):
    """torch's _BatchNorm: momentum=None means a cumulative moving average."""

    expected_dims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype, bias)

    def _check_input_dim(self, input):
        if input.dim() not in self.expected_dims:
            wanted = " or ".join(f"{d}D" for d in self.expected_dims)
            raise ValueError(f"{type(self).__name__}: expected {wanted} input (got {input.dim()}D input "
                             f"of shape {list(input.shape)})")
        channels = input.shape[1] if input.dim() > 1 else input.shape[0]
        if channels != self.num_features:
            raise ValueError(f"{type(self).__name__}: input of shape {list(input.shape)} has {channels} "
                             f"channels, expected num_features={self.num_features}")

    def forward(self, input):
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return F.batch_norm(input,
                            self.running_mean if track else None,
                            self.running_var if track else None,
                            self.weight, self.bias, use_batch_stats, factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalization over [N, C] or [N, C, L]."""
    expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalization over [N, C, H, W]."""
    expected_dims = (4,)


class BatchNorm3d(_BatchNorm):
    """Batch normalization over [N, C, D, H, W]: statistics over N, D, H and W per channel."""
    expected_dims = (5,)


class _InstanceNorm(NormBase):
    """torch's _InstanceNorm (on _NormBase): optional affine weight/bias and running stats
    buffers; instance statistics in training, and in eval unless track_running_stats."""

    dims = None  # spatial dims: an input has dims + 1 (unbatched) or dims + 2 dims

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False,
                 device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype, bias)

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
            return self._apply_instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._apply_instance_norm(input)

    def _apply_instance_norm(self, input):
        return F.instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
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


def _trailing_shape(normalized_shape):
    """LayerNorm's and RMSNorm's normalized_shape, an int or a sequence, as a tuple."""
    return (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)


class LayerNorm(Module):
    """Normalise over the trailing `normalized_shape` dims, with an elementwise affine."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = _trailing_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        kind = factory(dtype)
        if elementwise_affine:
            self.weight = Parameter(ones(self.normalized_shape, dtype=kind))
            if bias:
                self.bias = Parameter(zeros(self.normalized_shape, dtype=kind))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self):
        if self.elementwise_affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalise each sample over groups of channels, with a per-channel affine (bias optional)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        kind = factory(dtype)
        if affine:
            self.weight = Parameter(ones(num_channels, dtype=kind))
            if bias:
                self.bias = Parameter(zeros(num_channels, dtype=kind))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def reset_parameters(self):
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(Module):
    """Root-mean-square normalisation over the trailing `normalized_shape` dims (no centering),
    with an elementwise scale (`weight`, ones), as torch.nn.RMSNorm; eps None is the dtype's
    machine epsilon."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = _trailing_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(ones(self.normalized_shape, dtype=factory(dtype)))
        else:
            self.register_parameter("weight", None)

    def reset_parameters(self):
        if self.elementwise_affine:
            init.ones_(self.weight)

    def forward(self, input):
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
