"""Padding: torch.nn.functional.pad and the padding layers (ZeroPad, ConstantPad, ReflectionPad,
ReplicationPad, CircularPad, each 1d/2d/3d), with PyTorch's semantics and checks.

Constant padding crops (negative amounts) with slices and pads with the `pad` primitive; the
other modes gather each padded dim with a constant index (`take`), so autograd, the tracer and
the compiler see only existing primitives.
"""
import operator

import numpy as np

from ember.ops import PRIMITIVES as P
from ember.frontend.tensor import Tensor
from ember.frontend import math_ops as M
from ember.frontend import shape_ops as S
from .functional_conv import _shape_text, where_named
from .module import Module

MODES = ("constant", "reflect", "replicate", "circular")
_KERNEL_NAMES = {"reflect": "reflection_pad", "replicate": "replication_pad"}
_SUPPORTED_COMBINATIONS = ("Supported combinations for non-constant padding:\n"
                           "  - 2D or 3D input: padding size = 2 (pads last dimension)\n"
                           "  - 3D or 4D input: padding size = 4 (pads last 2 dimensions)\n"
                           "  - 4D or 5D input: padding size = 6 (pads last 3 dimensions)")


def _error(kind, torch_words, input, pad, mode):
    """PyTorch's message first (so its users recognise it), then the op, shapes and mode."""
    return kind(f"{where_named('pad')}: {torch_words} (input {_shape_text(input)}, pad {tuple(pad)}, "
                f"mode {mode!r})")


def _pad_amounts(pad):
    """`pad` as a tuple of Python ints (PyTorch takes ints or anything with __index__, no floats)."""
    amounts = []
    for position, amount in enumerate(pad):
        try:
            amounts.append(operator.index(amount))
        except TypeError:
            raise TypeError(f"pad(): argument 'pad' (position 2) must be tuple of ints, but found element "
                            f"of type {type(amount).__name__} at pos {position}") from None
    return tuple(amounts)


def pad(input, pad, mode="constant", value=None):
    """torch.nn.functional.pad: `pad` lists (left, right) amounts per dim, starting from the last
    dim; negative amounts crop. 'constant' takes any rank; 'reflect', 'replicate' and 'circular'
    pad the last 1, 2 or 3 dims of an input with one or two more dims (unbatched or batched)."""
    if mode not in MODES:
        raise NotImplementedError(f"{where_named('pad')}: Unrecognised padding mode {mode} "
                                  f"(expected one of {', '.join(MODES)})")
    amounts = _pad_amounts(pad)
    if len(amounts) % 2:
        raise _error(RuntimeError, "Padding length must be divisible by 2", input, amounts, mode)
    if len(amounts) > 2 * input.ndim:
        raise _error(RuntimeError, f"Padding length should be less than or equal to two times the input "
                                   f"dimension but got padding length {len(amounts)} and input of dimension "
                                   f"{input.ndim}", input, amounts, mode)
    # (axis, lo, hi) for each padded dim, last dim first
    sides = [(input.ndim - 1 - i, amounts[2 * i], amounts[2 * i + 1]) for i in range(len(amounts) // 2)]
    if mode == "constant":
        return _constant_pad(input, sides, 0 if value is None else value, amounts)
    if value is not None and value != 0:
        raise _error(RuntimeError, f'Padding mode "{mode}" doesn\'t take in value argument', input, amounts, mode)
    _check_non_constant(input, sides, mode, amounts)
    out = input
    if mode == "circular":  # PyTorch crops first, then wraps around what is left
        out = _crop(out, sides)
        sides = [(axis, max(lo, 0), max(hi, 0)) for axis, lo, hi in sides]
    for axis, lo, hi in sides:
        if lo or hi:
            index = _source_index(out.shape[axis], lo, hi, mode)
            out = S.index_select(out, axis, Tensor._wrap(index))
    return M.clone(out) if out is input else out


def _crop(input, sides):
    """Apply the negative amounts (PyTorch's narrow()s)."""
    out = input
    for axis, lo, hi in sides:
        start = max(-lo, 0)
        length = out.shape[axis] - start + min(hi, 0)
        if lo < 0 or hi < 0:
            out = S.narrow(out, axis, start, length)
    return out


def _constant_pad(input, sides, value, amounts):
    for axis, lo, hi in sides:
        kept = input.shape[axis] + min(lo, 0) + min(hi, 0)
        if kept < 0:
            raise _error(RuntimeError, f"narrow(): length must be non-negative. (the input size "
                                       f"{input.shape[axis]}, plus negative padding {lo} and {hi}, resulted in "
                                       f"a negative output size in dim {axis})", input, amounts, "constant")
    out = _crop(input, sides)
    lo = [0] * input.ndim
    hi = [0] * input.ndim
    for axis, low, high in sides:
        lo[axis], hi[axis] = max(low, 0), max(high, 0)
    if not any(lo) and not any(hi):
        return M.clone(out)  # (a new tensor, as PyTorch's constant_pad_nd)
    return P["pad"].bind(out, lo=tuple(lo), hi=tuple(hi), interior=(0,) * input.ndim, value=value)


def _check_non_constant(input, sides, mode, amounts):
    """PyTorch's checks for reflect, replicate and circular, in its order and words."""
    dims = len(sides)
    if not dims or input.ndim not in (dims + 1, dims + 2):
        raise _error(NotImplementedError, f"Padding size {2 * dims} is not supported for {input.ndim}D input "
                                          f"tensor.\n{_SUPPORTED_COMBINATIONS}", input, amounts, mode)
    shape = tuple(input.shape)
    if mode in _KERNEL_NAMES:
        if input.dtype.category == 0:
            raise _error(NotImplementedError, f'"{_KERNEL_NAMES[mode]}{dims}d" not implemented for \'Bool\'',
                         input, amounts, mode)
        batched = input.ndim == dims + 2
        if any(size == 0 for size in shape[1 if batched else 0:]):
            raise _error(RuntimeError, f"Expected {dims + 1}D or {dims + 2}D (batch mode) tensor with possibly 0 "
                                       f"batch size and other non-zero dimensions for input, but got: "
                                       f"{list(shape)}", input, amounts, mode)
    out_shape = list(shape)
    for axis, lo, hi in sides:
        out_shape[axis] = shape[axis] + lo + hi
    if mode == "circular":
        for axis, lo, hi in reversed(sides):  # (PyTorch checks the first padded dim first)
            if lo > shape[axis] or hi > shape[axis]:
                raise _error(RuntimeError, "Padding value causes wrapping around more than once.",
                             input, amounts, mode)
            if out_shape[axis] < 0:
                raise _error(RuntimeError, "Negative padding value is resulting in an empty dimension",
                             input, amounts, mode)
        for axis, lo, hi in sides:
            kept = shape[axis] + min(lo, 0) + min(hi, 0)
            if max(lo, hi) > kept:  # (PyTorch reads memory it never wrote here)
                raise _error(RuntimeError, f"Padding value causes wrapping around more than once. (padding "
                                           f"({lo}, {hi}) of dim {axis}, size {shape[axis]}, wraps around more "
                                           f"than the elements left after cropping)", input, amounts, mode)
        return
    if mode == "reflect":
        for i, (axis, lo, hi) in enumerate(sides):
            if lo >= shape[axis] or hi >= shape[axis]:
                raise _error(RuntimeError, f"Argument #{4 + 2 * i}: Padding size should be less than the "
                                           f"corresponding input dimension, but got: padding ({lo}, {hi}) at "
                                           f"dimension {axis} of input {list(shape)}", input, amounts, mode)
    outs = [out_shape[axis] for axis, _, _ in reversed(sides)]  # (D,) H, W
    if all(size < 1 for size in outs):
        names = "DHW"[3 - dims:]
        given = ", ".join(f"{name}: {shape[axis]}" for name, (axis, _, _) in zip(names, reversed(sides)))
        made = " ".join(f"{name}: {size}" for name, size in zip(names, outs))
        if dims == 3:
            given = given.replace(", ", " ", 1)  # (PyTorch's wording: "D: 3 H: 4, W: 5")
        if dims == 2 and mode == "replicate":
            given += " "  # (and "H: 3, W: 4 )")
        raise _error(RuntimeError, f"input ({given}) is too small. Calculated output {made}", input, amounts, mode)
    if any(size < 0 for size in out_shape):
        negative = next(size for size in out_shape if size < 0)
        raise _error(RuntimeError, f"Trying to create tensor with negative dimension {negative}: "
                                   f"{out_shape}", input, amounts, mode)


def _source_index(size, lo, hi, mode):
    """For each output position along a dim padded by (lo, hi), the input position it reads.
    Position k = j - lo of the input (k < 0 or k >= size outside it) reflects once about the
    edges (reflect), clamps to them (replicate) or wraps (circular, on the already-cropped dim)."""
    positions = np.arange(-lo, size + hi)
    if mode == "replicate":
        index = np.clip(positions, 0, size - 1)
    elif mode == "circular":
        index = positions % size
    else:
        index = np.where(positions < 0, -positions, np.where(positions >= size, 2 * (size - 1) - positions,
                                                             positions))
    return index.astype(np.int64)


# ----------------------------------------------------------------------------- modules

def _ntuple(value, n):
    """torch.nn.modules.utils._ntuple: an iterable as a tuple (its length unchecked), else n copies."""
    try:
        return tuple(value)
    except TypeError:
        return (value,) * n


class _ConstantPadNd(Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, input):
        return pad(input, self.padding, "constant", self.value)

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    """Pad the last dim with `value`: padding is an int or (left, right)."""

    def __init__(self, padding, value):
        super().__init__(value)
        self.padding = _ntuple(padding, 2)


class ConstantPad2d(_ConstantPadNd):
    """Pad the last 2 dims with `value`: padding is an int or (left, right, top, bottom)."""

    def __init__(self, padding, value):
        super().__init__(value)
        self.padding = _ntuple(padding, 4)


class ConstantPad3d(_ConstantPadNd):
    """Pad the last 3 dims with `value`: padding is an int or (left, right, top, bottom, front, back)."""

    def __init__(self, padding, value):
        super().__init__(value)
        self.padding = _ntuple(padding, 6)


class ZeroPad1d(ConstantPad1d):
    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return f"{self.padding}"


class ZeroPad2d(ConstantPad2d):
    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return f"{self.padding}"


class ZeroPad3d(ConstantPad3d):
    def __init__(self, padding):
        super().__init__(padding, 0.0)

    def extra_repr(self):
        return f"{self.padding}"


class _PadNd(Module):
    """A non-constant padding layer: `mode` and the number of padded dims are the class's."""
    mode = None
    dims = None

    def __init__(self, padding):
        super().__init__()
        self.padding = _ntuple(padding, 2 * self.dims)

    def forward(self, input):
        return pad(input, self.padding, self.mode)

    def extra_repr(self):
        return f"{self.padding}"


class _CircularPadNd(_PadNd):
    mode = "circular"

    def forward(self, input):
        # (PyTorch's CircularPad layers check the rank themselves, with a ValueError)
        if input.dim() not in (self.dims + 1, self.dims + 2):
            raise ValueError(f"expected {self.dims + 1}D or {self.dims + 2}D input (got {input.dim()}D input)")
        return pad(input, self.padding, self.mode)


class ReflectionPad1d(_PadNd):
    mode, dims = "reflect", 1


class ReflectionPad2d(_PadNd):
    mode, dims = "reflect", 2


class ReflectionPad3d(_PadNd):
    mode, dims = "reflect", 3


class ReplicationPad1d(_PadNd):
    mode, dims = "replicate", 1


class ReplicationPad2d(_PadNd):
    mode, dims = "replicate", 2


class ReplicationPad3d(_PadNd):
    mode, dims = "replicate", 3


class CircularPad1d(_CircularPadNd):
    dims = 1


class CircularPad2d(_CircularPadNd):
    dims = 2


class CircularPad3d(_CircularPadNd):
    dims = 3
