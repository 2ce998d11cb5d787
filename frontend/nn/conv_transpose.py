"""Transposed convolution layers: ConvTranspose1d and ConvTranspose2d (torch.nn), zero padding only.

The weight is [in_channels, out_channels/groups, *kernel_size], initialised as PyTorch does
(kaiming_uniform(a=sqrt(5)) on that shape's fan, the bias uniform in +-1/sqrt(fan_in)); forward
calls functional_conv_transpose, with output_padding taken from `output_size` when given.
"""
from ember.frontend.creation import empty
from .conv import _ConvNd, _ntuple
from .functional_conv import _shape_text
from .functional_conv_transpose import conv_transpose1d, conv_transpose2d
from .linear import factory
from .module import Module
from .parameter import Parameter


class _ConvTransposeNd(_ConvNd):
    """Shared parameters and `output_size` handling; reset_parameters and extra_repr are _ConvNd's."""

    dims = 2

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None):
        Module.__init__(self)
        name = type(self).__name__
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {name}')
        if groups <= 0:
            raise ValueError(f"{name}: groups must be a positive integer")
        if in_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups:
            raise ValueError(f"{name}: out_channels ({out_channels}) must be divisible by groups ({groups})")
        if isinstance(padding, str):
            raise ValueError(f"{name}: padding must be an int or a tuple of ints, got {padding!r} "
                             f"(transposed convolutions take no padding strings)")
        n = self.dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _ntuple(kernel_size, n)
        self.stride = _ntuple(stride, n)
        self.padding = _ntuple(padding, n)
        self.dilation = _ntuple(dilation, n)
        self.transposed = True
        self.output_padding = _ntuple(output_padding, n)
        self.groups = groups
        self.padding_mode = padding_mode
        self.weight = Parameter(empty((in_channels, out_channels // groups) + self.kernel_size,
                                      dtype=factory(dtype)))
        if bias:
            self.bias = Parameter(empty(out_channels, dtype=factory(dtype)))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _output_padding(self, input, output_size):
        """The output_padding that makes the output `output_size` (PyTorch's checks and words)."""
        if output_size is None:
            return self.output_padding
        n = self.dims
        leading = 2 if input.ndim == n + 2 else 1
        output_size = [int(v) for v in output_size]
        if len(output_size) == leading + n:
            output_size = output_size[leading:]
        if len(output_size) != n:
            raise ValueError(f"{type(self).__name__}: ConvTranspose{n}D: for {input.ndim}D input, output_size must "
                             f"have {n} or {leading + n} elements (got {len(output_size)}): input {_shape_text(input)}")
        spatial = list(input.shape[leading:])
        min_sizes = [(size - 1) * s - 2 * p + d * (k - 1) + 1 for size, s, p, d, k in
                     zip(spatial, self.stride, self.padding, self.dilation, self.kernel_size)]
        max_sizes = [low + s - 1 for low, s in zip(min_sizes, self.stride)]
        for size, low, high in zip(output_size, min_sizes, max_sizes):
            if size < low or size > high:
                raise ValueError(f"{type(self).__name__}: requested an output size of {output_size}, but valid "
                                 f"sizes range from {min_sizes} to {max_sizes} (for an input of {spatial}): "
                                 f"input {_shape_text(input)}")
        return tuple(size - low for size, low in zip(output_size, min_sizes))


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution over [N, C, H, W] with weight [in_channels, out_channels/groups, KH, KW]."""

    dims = 2

    def forward(self, input, output_size=None):
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                self._output_padding(input, output_size), self.groups, self.dilation)


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution over [N, C, L] with weight [in_channels, out_channels/groups, K]."""

    dims = 1

    def forward(self, input, output_size=None):
        return conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding,
                                self._output_padding(input, output_size), self.groups, self.dilation)
