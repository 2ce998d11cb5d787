"""Pooling layers with torch.nn's arguments, forward and reprs: AvgPool1d/2d/3d,
AdaptiveAvgPool1d/2d/3d, MaxPool1d/2d/3d and AdaptiveMaxPool1d/2d/3d (return_indices),
MaxUnpool1d/2d/3d and LPPool1d/2d/3d, over nn.functional's pools."""
from . import functional as F
from .functional_conv import pair
from .functional_conv3d import adaptive_avg_pool3d, avg_pool3d, max_pool3d
from .functional_pool_more import (adaptive_max_pool1d, adaptive_max_pool2d, adaptive_max_pool3d, lp_pool1d,
                                   lp_pool2d, lp_pool3d, max_pool1d, max_pool2d, max_unpool1d, max_unpool2d,
                                   max_unpool3d)
from .module import Module


def _single(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


class AvgPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
        super().__init__()
        self.kernel_size = _single(kernel_size)
        self.stride = _single(stride if stride is not None else kernel_size)
        self.padding = _single(padding)
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, input):
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(AdaptiveAvgPool2d):
    def forward(self, input):
        return F.adaptive_avg_pool1d(input, self.output_size)


from .pooling import AdaptiveAvgPool2d


class _MaxPoolNd(Module):
    """torch's _MaxPoolNd: the arguments as given (stride defaults to kernel_size)."""

    pool = None

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False, ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, input):
        return type(self).pool(input, self.kernel_size, self.stride, self.padding, self.dilation,
                               ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """Max over windows of [N, C, L]; with return_indices, (values, positions along L)."""
    pool = staticmethod(max_pool1d)


class MaxPool2d(_MaxPoolNd):
    """Max over windows of [N, C, H, W]; with return_indices, (values, flat positions in H*W)."""
    pool = staticmethod(max_pool2d)


class MaxPool3d(_MaxPoolNd):
    """Max over windows of [N, C, D, H, W]; with return_indices, (values, flat positions in D*H*W)."""
    pool = staticmethod(max_pool3d)


class AvgPool3d(Module):
    """Average over windows of [N, C, D, H, W] (torch.nn.AvgPool3d)."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        return avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool3d(AdaptiveAvgPool2d):
    """Average over adaptive bins of [N, C, D, H, W] (torch.nn.AdaptiveAvgPool3d)."""

    def forward(self, input):
        return adaptive_avg_pool3d(input, self.output_size)


class _AdaptiveMaxPoolNd(Module):
    pool = None

    def __init__(self, output_size, return_indices=False):
        super().__init__()
        self.output_size = output_size
        self.return_indices = return_indices

    def forward(self, input):
        return type(self).pool(input, self.output_size, self.return_indices)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """Max over adaptive bins of [N, C, L]; with return_indices, (values, positions along L)."""
    pool = staticmethod(adaptive_max_pool1d)


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """Max over adaptive bins of [N, C, H, W]; with return_indices, (values, flat positions in H*W)."""
    pool = staticmethod(adaptive_max_pool2d)


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """Max over adaptive bins of [N, C, D, H, W]; with return_indices, (values, flat positions in D*H*W)."""
    pool = staticmethod(adaptive_max_pool3d)


class _MaxUnpoolNd(Module):
    """torch's MaxUnpool: kernel_size, stride (defaults to kernel_size) and padding as dims-tuples."""

    dims = 2
    unpool = None

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        n = self.dims
        self.kernel_size = pair(kernel_size, n, "kernel_size")
        self.stride = pair(stride if stride is not None else kernel_size, n, "stride")
        self.padding = pair(padding, n, "padding")

    def forward(self, input, indices, output_size=None):
        return type(self).unpool(input, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool1d(_MaxUnpoolNd):
    """Partial inverse of MaxPool1d: each value to its index, zeros elsewhere."""
    dims = 1
    unpool = staticmethod(max_unpool1d)


class MaxUnpool2d(_MaxUnpoolNd):
    """Partial inverse of MaxPool2d: each value to its flat index in H_out*W_out, zeros elsewhere."""
    dims = 2
    unpool = staticmethod(max_unpool2d)


class MaxUnpool3d(_MaxUnpoolNd):
    """Partial inverse of MaxPool3d: each value to its flat index in D_out*H_out*W_out, zeros elsewhere."""
    dims = 3
    unpool = staticmethod(max_unpool3d)


class _LPPoolNd(Module):
    """torch's _LPPoolNd: (sum over each window of x**norm_type) ** (1/norm_type)."""

    pool = None

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False):
        super().__init__()
        self.norm_type = norm_type
        self.kernel_size = kernel_size
        self.stride = stride
        self.ceil_mode = ceil_mode

    def forward(self, input):
        return type(self).pool(input, float(self.norm_type), self.kernel_size, self.stride, self.ceil_mode)

    def extra_repr(self):
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"ceil_mode={self.ceil_mode}")


class LPPool1d(_LPPoolNd):
    """Power-average pooling over [N, C, L]."""
    pool = staticmethod(lp_pool1d)


class LPPool2d(_LPPoolNd):
    """Power-average pooling over [N, C, H, W]."""
    pool = staticmethod(lp_pool2d)


class LPPool3d(_LPPoolNd):
    """Power-average pooling over [N, C, D, H, W]."""
    pool = staticmethod(lp_pool3d)
