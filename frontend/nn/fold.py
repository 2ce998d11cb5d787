"""im2col and col2im: torch.nn.functional.unfold / fold and the Unfold / Fold layers.

unfold pads (the `pad` primitive), takes the sliding blocks as a strided view
(`unfold_windows`) and lays them out as [N, C*KH*KW, L]; fold is its transpose: the blocks go
back with `fold_windows` (overlaps add up) and the padding is sliced off. Both are existing
primitives with VJPs and loop lowerings, so autograd and ember.compile see through them.
"""
import operator

from ember.ops import PRIMITIVES as P
from ember.frontend import shape_ops as S
from ember.frontend.linalg import scalar_type_name
from .functional_conv import _shape_text, where_named
from .module import Module


def _pair(value, name, op, position):
    """torch's _pair: an int -> (v, v); a sequence must hold exactly 2 ints (im2col's int[2])."""
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * 2
    if len(values) != 2:
        user_op = {"im2col": "unfold", "col2im": "fold"}[op]
        raise RuntimeError(f"{where_named(user_op)}: It is expected {name} equals to 2, but got size {len(values)}")
    try:
        return tuple(operator.index(v) for v in values)
    except TypeError:
        wrong = next(i for i, v in enumerate(values) if not hasattr(v, "__index__"))
        raise TypeError(f"{op}(): argument '{name}' (position {position}) must be tuple of ints, but found element "
                        f"of type {type(values[wrong]).__name__} at pos {wrong}") from None


def _check_geometry(op, kernel, dilation, padding, stride):
    """im2col's and col2im's shared checks, in PyTorch's order and words."""
    checks = (("kernel size should be greater than zero", "kernel", kernel, kernel[0] > 0 and kernel[1] > 0),
              ("dilation should be greater than zero", "dilation", dilation, dilation[0] > 0 and dilation[1] > 0),
              ("padding should be non-negative", "pad", padding, padding[0] >= 0 and padding[1] >= 0),
              ("stride should be greater than zero", "stride", stride, stride[0] > 0 and stride[1] > 0))
    for words, name, (height, width), valid in checks:
        if not valid:
            raise RuntimeError(f"{where_named(op)}: {words}, but got {name}_height: {height} {name}_width: {width}")


def _blocks(size, kernel, dilation, padding, stride):
    """The number of sliding blocks along one dim (floor division, as PyTorch's div_rtn)."""
    return (size + 2 * padding - (dilation * (kernel - 1) + 1)) // stride + 1


def _geometry_text(kernel, dilation, padding, stride=None):
    text = f"kernel_size={kernel}, dilation={dilation}, padding={padding}"
    return text if stride is None else f"{text}, stride={stride}"


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """im2col: input [N, C, H, W] (or unbatched [C, H, W]) -> [N, C*KH*KW, L], where column l
    holds the l-th sliding block (row-major over the block grid), channel-major then kernel
    row then kernel column."""
    op = "unfold"
    kernel, dilation = _pair(kernel_size, "kernel_size", "im2col", 2), _pair(dilation, "dilation", "im2col", 3)
    padding, stride = _pair(padding, "padding", "im2col", 4), _pair(stride, "stride", "im2col", 5)
    _check_geometry(op, kernel, dilation, padding, stride)
    shape = tuple(input.shape)
    batched = input.ndim == 4
    if input.ndim not in (3, 4) or 0 in shape[1 if batched else 0:]:
        raise RuntimeError(f"{where_named(op)}: Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and "
                           f"other non-zero dimensions for input, but got: {list(shape)} "
                           f"(input {_shape_text(input)})")
    if input.dtype.category == 1:
        raise NotImplementedError(f"{where_named(op)}: \"im2col_out_cpu\" not implemented for "
                                  f"'{scalar_type_name(input.dtype)}' (input {_shape_text(input)})")
    height, width = shape[-2:]
    blocks = tuple(_blocks(s, k, d, p, t) for s, k, d, p, t in zip((height, width), kernel, dilation, padding, stride))
    if blocks[0] < 1 or blocks[1] < 1:
        raise RuntimeError(f"{where_named(op)}: Given input with spatial size ({height}, {width}), "
                           f"{_geometry_text(kernel, dilation, padding)}, calculated shape of the array of sliding "
                           f"blocks as {blocks}, but its components must be at least one. "
                           f"(input {_shape_text(input)})")
    x = input if batched else S.unsqueeze(input, 0)
    if any(padding):
        x = P["pad"].bind(x, lo=(0, 0) + padding, hi=(0, 0) + padding, interior=(0,) * 4, value=0)
    windows = P["unfold_windows"].bind(x, kernel=kernel, stride=stride, dilation=dilation)  # N,C,OH,OW,KH,KW
    batch, channels = x.shape[0], x.shape[1]
    columns = S.reshape(S.permute(windows, (0, 1, 4, 5, 2, 3)),
                        (batch, channels * kernel[0] * kernel[1], blocks[0] * blocks[1]))
    return columns if batched else S.squeeze(columns, 0)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """col2im: input [N, C*KH*KW, L] (or unbatched [C*KH*KW, L]) -> [N, C, *output_size], summing
    each column's block back into place (overlapping blocks add up); the transpose of unfold."""
    op = "fold"
    size = _pair(output_size, "output_size", "col2im", 2)
    kernel, dilation = _pair(kernel_size, "kernel_size", "col2im", 3), _pair(dilation, "dilation", "col2im", 4)
    padding, stride = _pair(padding, "padding", "col2im", 5), _pair(stride, "stride", "col2im", 6)
    _check_geometry(op, kernel, dilation, padding, stride)
    shape = tuple(input.shape)
    batched = input.ndim == 3
    if input.ndim not in (2, 3) or 0 in shape[1 if batched else 0:]:
        raise RuntimeError(f"{where_named(op)}: Expected 2D or 3D (batch mode) tensor for input with possibly 0 batch "
                           f"size and non-zero dimensions for input, but got: {list(shape)} "
                           f"(input {_shape_text(input)})")
    if not input.is_floating_point():
        raise NotImplementedError(f"{where_named(op)}: \"col2im_out_cpu\" not implemented for "
                                  f"'{scalar_type_name(input.dtype)}' (input {_shape_text(input)})")
    planes, length = shape[-2:]
    if planes % (kernel[0] * kernel[1]):
        raise RuntimeError(f"{where_named(op)}: Expected size of input's dimension 1 to be divisible by the product of "
                           f"kernel_size, but got input.size(1)={planes} and kernel_size={kernel}. "
                           f"(input {_shape_text(input)})")
    blocks = tuple(_blocks(s, k, d, p, t) for s, k, d, p, t in zip(size, kernel, dilation, padding, stride))
    geometry = f"Given output_size={size}, {_geometry_text(kernel, dilation, padding, stride)}"
    if length != blocks[0] * blocks[1]:
        raise RuntimeError(f"{where_named(op)}: {geometry}, expected size of input's dimension 2 to match the "
                           f"calculated number of sliding blocks {blocks[0]} * {blocks[1]} = {blocks[0] * blocks[1]}, "
                           f"but got input.size(2)={length}. (input {_shape_text(input)})")
    if blocks[0] < 1 or blocks[1] < 1:
        raise RuntimeError(f"{where_named(op)}: {geometry}, calculated shape of the array of sliding blocks as "
                           f"{blocks}, which is invalid. (input {_shape_text(input)})")
    x = input if batched else S.unsqueeze(input, 0)
    batch, channels = x.shape[0], planes // (kernel[0] * kernel[1])
    windows = S.permute(S.reshape(x, (batch, channels) + kernel + blocks), (0, 1, 4, 5, 2, 3))  # N,C,OH,OW,KH,KW
    padded = tuple(s + 2 * p for s, p in zip(size, padding))
    out = P["fold_windows"].bind(windows, size=padded, stride=stride, dilation=dilation)
    if any(padding):
        out = P["slice"].bind(out, starts=(0, 0) + padding, stops=(batch, channels) + tuple(
            p + s for p, s in zip(padding, size)), steps=(1,) * 4)
    return out if batched else S.squeeze(out, 0)


# ----------------------------------------------------------------------------- modules

class Unfold(Module):
    """Sliding blocks of [N, C, H, W] as columns: [N, C*KH*KW, L] (F.unfold)."""

    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = padding
        self.stride = stride

    def forward(self, input):
        return unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}, "
                f"stride={self.stride}")


class Fold(Module):
    """Columns of sliding blocks summed back into [N, C, *output_size] (F.fold)."""

    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.output_size = output_size
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = padding
        self.stride = stride

    def forward(self, input):
        return fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (f"output_size={self.output_size}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding}, stride={self.stride}")
