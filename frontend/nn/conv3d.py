"""3-D convolution layers: Conv3d and ConvTranspose3d (torch.nn), on functional_conv3d.

Parameters, initialisation, padding modes, `output_size` and reprs are conv.py's and
conv_transpose.py's (_ConvNd, _ConvTransposeNd) with three spatial dims.
"""
from .conv import _ConvNd
from .conv_transpose import _ConvTransposeNd
from .functional_conv3d import conv3d, conv_transpose3d


class Conv3d(_ConvNd):
    """3-D convolution over [N, C, D, H, W] with weight [out_channels, in_channels/groups, KD, KH, KW]."""

    dims = 3

    def forward(self, input):
        input, padding = self._mode_padded(input)
        return conv3d(input, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution over [N, C, D, H, W] with weight [in_channels, out_channels/groups, KD, KH, KW]."""

    dims = 3

    def forward(self, input, output_size=None):
        return conv_transpose3d(input, self.weight, self.bias, self.stride, self.padding,
                                self._output_padding(input, output_size), self.groups, self.dilation)
