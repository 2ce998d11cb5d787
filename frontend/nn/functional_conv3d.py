"""3-D convolution and pooling of ember.nn.functional (re-exported there): conv3d, conv_transpose3d,
max_pool3d, avg_pool3d, adaptive_avg_pool3d, and the window machinery every max pool with
indices shares (functional_pool_more builds the 1-D/2-D/adaptive variants on it).

conv3d stacks the depth taps as channels and binds one `conv2d`; conv_transpose3d runs the 2-D
transposed convolution per depth tap and adds the taps into place (`index_add`). A max pool
reads its windows through a constant table of flat input positions (`take`), picks the first
maximum (`argmax`) and gathers it, so values, PyTorch's flat indices and the gradient (to that
one element) all come from existing primitives.
"""
import functools
import math
import warnings

import numpy as np

from ember.ops import PRIMITIVES as P
from ember.frontend.tensor import Tensor
from ember.frontend import math_ops as M
from ember.frontend import reductions as R
from ember.frontend import shape_ops as S
from ember.frontend.linalg import matmul, scalar_type_name
from .functional_conv import _adaptive_matrix, _pool_out, _shape_text, where_named
from .functional_conv_transpose import _check, _error, _expand, _transpose_2d, transposed_output_sizes

_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
_EMPTY_PLANE_SOURCE = {"max_pool3d": "max_pool3d_with_indices_out_cpu_template", "avg_pool3d": "avg_pool3d"}


def pool_error(op, words, input):
    """PyTorch's words first (its users know them), then the input's dtype and shape."""
    return RuntimeError(f"{where_named(op)}: {words}: input {_shape_text(input)}")


# ----------------------------------------------------------------------------- pooling arguments and checks

def pool_tuple(op, dims, value, name, avg=False):
    """An int or a sequence of 1 or `dims` ints -> a dims-tuple, refused in PyTorch's words."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return (int(value[0]),) * dims
        if len(value) == dims:
            return tuple(int(v) for v in value)
        if dims == 1:
            raise RuntimeError(f"{op}() argument '{name}' should contain one int (got {len(value)})")
        count = _COUNT_WORDS[dims]
        if name == "stride":
            form = f"must be omitted, a single int, or a tuple of {count} ints" if avg else \
                f"must either be omitted, a single int, or a tuple of {count} ints"
        elif name == "dilation":
            form = f"must be either a single int, or a tuple of {count} ints"
        else:
            form = f"must be a single int, or a tuple of {count} ints" if avg else \
                f"must either be a single int, or a tuple of {count} ints"
        raise RuntimeError(f"{op}: {name} {form}")
    return (int(value),) * dims


def pool_arguments(op, dims, kernel_size, stride, padding, dilation=1, avg=False):
    kernel = pool_tuple(op, dims, kernel_size, "kernel_size", avg)
    no_stride = stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0)
    stride = kernel if no_stride else pool_tuple(op, dims, stride, "stride", avg)
    padding = pool_tuple(op, dims, padding, "padding", avg)
    dilation = pool_tuple(op, dims, dilation, "dilation", avg)
    return kernel, stride, padding, dilation


def check_pool_rank(op, input, dims, words):
    if input.ndim not in (dims + 1, dims + 2):
        raise pool_error(op, words, input)


def rank_words(op, input, dims):
    """PyTorch's words for an input of the wrong rank, per pool."""
    if dims == 1:
        return (f"Expected 2 to 3 dimensions, but got {input.ndim}-dimensional tensor for argument #1 'self' "
                f"(while checking arguments for {op})")
    return f"non-empty {dims + 1}D or {dims + 2}D (batch mode) tensor expected for input"


def _trunc_half(value):
    return int(value / 2)  # C++'s integer division (toward zero)


def _as_planes(values, neutral, dims):
    """A 1-D pool's parameters as the 2-D ones PyTorch's messages name (height = neutral)."""
    return (neutral,) + tuple(values) if dims == 1 else tuple(values)


def pool_geometry(op, input, dims, kernel, stride, padding, dilation, ceil_mode, avg=False):
    """PyTorch's pooling_output_shape and pool2d/3d_shape_check, in its order and words
    (a 1-D pool is checked as 2-D over a unit height); -> output sizes."""
    sizes = tuple(input.shape[-dims:])
    outs = []
    for size, k, s, p, d in zip(sizes, kernel, stride, padding, dilation):
        if s == 0:
            raise pool_error(op, "stride should not be zero", input)
        if p < 0:
            raise pool_error(op, f"pad must be non-negative, but got pad: {p}", input)
        if p > _trunc_half((k - 1) * d + 1):
            raise pool_error(op, f"pad should be at most half of effective kernel size, but got pad={p}, "
                                 f"kernel_size={k} and dilation={d}", input)
        outs.append(_pool_out(size, k, s, p, d, ceil_mode))
    letters = ("T", "H", "W") if dims == 3 else ("H", "W")
    k_, s_, d_ = (_as_planes(v, 1, dims) for v in (kernel, stride, dilation))
    p_, sizes_, outs_ = _as_planes(padding, 0, dims), _as_planes(sizes, 1, dims), _as_planes(outs, 1, dims)
    for values, prefix, what in ((k_, "k", "kernel size"), (s_, "d", "stride"), (d_, "dilation", "dilation")):
        if any(v <= 0 for v in values):
            listed = " ".join(f"{prefix}{letter}: {v}" for letter, v in zip(letters, values))
            raise pool_error(op, f"{what} should be greater than zero, but got {listed}", input)
    batched = input.ndim == dims + 2
    for axis in range(1 if batched else 0, input.ndim):
        if input.shape[axis] == 0:
            if dims == 3:
                raise pool_error(op, f"{_EMPTY_PLANE_SOURCE[op]}(): Expected input's non-batch dimensions to have "
                                     f"positive length, but input has a shape of {list(input.shape)} and non-batch "
                                     f"dimension {axis - batched} has length zero!", input)
            shown = list(input.shape[:-1]) + [1, input.shape[-1]] if dims == 1 else list(input.shape)
            raise pool_error(op, f"Expected {dims + 1 + (dims == 1)}D or {dims + 2 + (dims == 1)}D (batch mode) "
                                 f"tensor with optional 0 dim batch size for input, but got:{shown}", input)
    if avg and dims == 3 and any(size < k for size, k in zip(sizes, kernel)):
        (t, h, w), (kt, kh, kw) = sizes, kernel
        raise pool_error(op, f"input image (T: {t} H: {h} W: {w}) smaller than kernel size "
                             f"(kT: {kt} kH: {kh} kW: {kw})", input)
    if any(_trunc_half(k) < p for k, p in zip(kernel, padding)):
        if dims == 3:
            (kt, kh, kw), (pt, ph, pw) = kernel, padding
            words = f"kT: {kt} kW: {kw} kH: {kh} padT: {pt} padW: {pw} padH: {ph}"
        else:
            (kh, kw), (ph, pw) = k_, p_
            words = f"padW = {pw}, padH = {ph}, kW = {kw}, kH = {kh}"
        raise pool_error(op, f"pad should be smaller than or equal to half of kernel size, but got {words}", input)
    if any(o < 1 for o in outs):
        planes = input.shape[-dims - 1]
        raise pool_error(op, f"Given input size: ({'x'.join(str(v) for v in (planes,) + sizes_)}). Calculated "
                             f"output size: ({'x'.join(str(v) for v in (planes,) + outs_)}). Output size is too small",
                         input)
    return tuple(outs)


# ----------------------------------------------------------------------------- window tables

def _pool_taps(size, kernel, stride, padding, dilation, out):
    """[out, kernel] input positions of each window along one axis, and which lie in the input."""
    taps = np.arange(out)[:, None] * stride - padding + np.arange(kernel)[None, :] * dilation
    return taps, (taps >= 0) & (taps < size)


def adaptive_bounds(size, out):
    """PyTorch's adaptive bins: [floor(i*size/out), ceil((i+1)*size/out)) for each output i."""
    index = np.arange(out)
    return (index * size) // out, -((-(index + 1) * size) // out)


def _adaptive_taps(size, out):
    start, end = adaptive_bounds(size, out)
    width = int((end - start).max()) if out else 1
    taps = start[:, None] + np.arange(width)[None, :]
    return taps, taps < end[:, None]


def _flat_table(per_axis, sizes):
    """The per-axis taps combined into [P, K] flat input positions (P: output positions, K: taps,
    both row-major). A tap outside the input reads its window's first valid tap along that axis:
    it never changes the maximum, and where every element ties (all -inf) the first valid one
    wins, as in PyTorch's loop."""
    dims = len(sizes)
    table = np.zeros((), np.int64)
    for axis, (taps, valid) in enumerate(per_axis):
        first = taps[np.arange(taps.shape[0]), valid.argmax(axis=1)] if taps.size else taps[:, :1]
        clean = np.where(valid, taps, first[:, None]).astype(np.int64)
        shape = [1] * (2 * dims)
        shape[axis], shape[dims + axis] = clean.shape
        table = table * sizes[axis] + clean.reshape(shape)
    outs, kernel = table.shape[:dims], table.shape[dims:]
    table = table.reshape(int(np.prod(outs)), int(np.prod(kernel)))
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=256)
def pool_window_table(sizes, kernel, stride, padding, dilation, outs):
    return _flat_table([_pool_taps(*args) for args in zip(sizes, kernel, stride, padding, dilation, outs)], sizes)


@functools.lru_cache(maxsize=256)
def adaptive_window_table(sizes, outs):
    return _flat_table([_adaptive_taps(size, out) for size, out in zip(sizes, outs)], sizes)


def max_over_windows(input, dims, table, outs):
    """(values, indices) of the first maximum of each window of `table` ([P, K] flat positions
    into the last `dims` axes). The value is gathered at its index, so its gradient reaches that
    one element (PyTorch's max-pool backward)."""
    lead = tuple(input.shape[:-dims])
    flat = S.reshape(input, lead + (math.prod(input.shape[-dims:]),))
    axis = len(lead)
    windows = P["take"].bind(flat, Tensor._wrap(table), axis=axis)  # lead + [P, K]
    first = P["argmax"].bind(windows, axis=axis + 1, keepdims=False)  # lead + [P]
    positions, taps = table.shape
    offsets = Tensor._wrap(np.arange(positions, dtype=np.int64) * taps)
    indices = P["take"].bind(Tensor._wrap(table.reshape(-1)), M.add(first, offsets), axis=0)
    values = P["gather"].bind(flat, indices, axis=axis)
    return S.reshape(values, lead + tuple(outs)), S.reshape(indices, lead + tuple(outs))


def max_pool_with_indices(op, input, dims, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """max_pool{1,2,3}d with PyTorch's flat indices (into each plane's D*H*W), unbatched or batched."""
    kernel, stride, padding, dilation = pool_arguments(op, dims, kernel_size, stride, padding, dilation)
    check_pool_rank(op, input, dims, rank_words(op, input, dims))
    outs = pool_geometry(op, input, dims, kernel, stride, padding, dilation, ceil_mode)
    table = pool_window_table(tuple(input.shape[-dims:]), kernel, stride, padding, dilation, outs)
    return max_over_windows(input, dims, table, outs)


# ----------------------------------------------------------------------------- convolution

def _conv3d_padding(op, padding, kernel, dilation, stride, named):
    """-> ((lo_d, lo_h, lo_w), (hi_d, hi_h, hi_w)) from an int, a sequence or 'same'/'valid'."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0), (0, 0, 0)
        if padding != "same":
            raise _error(op, f"Invalid padding string: {padding!r}", named)
        if any(s != 1 for s in stride):
            raise _error(op, "padding='same' is not supported for strided convolutions", named)
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        lo = tuple(t // 2 for t in totals)
        hi = tuple(t - t // 2 for t in totals)
        if lo != hi:
            warnings.warn("Using padding='same' with even kernel lengths and odd dilation may require a "
                          "zero-padded copy of the input be created", UserWarning, stacklevel=3)
        return lo, hi
    padding = _expand(padding, 3, "padding", op, named)
    return padding, padding


def _check_conv3d(op, x, weight, bias, stride, dilation, groups, lo, hi, named):
    """PyTorch's checks of a convolution's operands, in its order and words."""
    if any(p < 0 for p in lo):
        raise _error(op, "negative padding is not supported", named)
    if any(s <= 0 for s in stride):
        raise _error(op, "non-positive stride is not supported", named)
    if any(d <= 0 for d in dilation):
        raise _error(op, "non-positive dilation is not supported", named)
    if groups <= 0:
        raise _error(op, "non-positive groups is not supported", named)
    for other in (weight, bias):
        if other is not None and other._data.dtype != x._data.dtype:
            raise _error(op, f"expected scalar type {scalar_type_name(x.dtype)} but found "
                             f"{scalar_type_name(other.dtype)}", named)
    if weight.shape[0] % groups:
        raise _error(op, f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                         f"but got weight of size [{list(weight.shape)}] instead", named)
    if x.shape[1] != weight.shape[1] * groups:
        raise _error(op, f"Given groups={groups}, weight of size {list(weight.shape)}, expected input"
                         f"{list(x.shape)} to have {weight.shape[1] * groups} channels, but got {x.shape[1]} "
                         f"channels instead", named)
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != weight.shape[0]):
        raise _error(op, f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with "
                         f"{weight.shape[0]} elements, but got bias of size {list(bias.shape)} instead", named)
    padded = [size + a + b for size, a, b in zip(x.shape[2:], lo, hi)]
    spans = [d * (k - 1) + 1 for k, d in zip(weight.shape[2:], dilation)]
    if any(p < s for p, s in zip(padded, spans)):
        raise _error(op, f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). Kernel size: "
                         f"({' x '.join(map(str, spans))}). Kernel size can't be greater than actual input size",
                     named)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """3-D convolution of input [N, C, D, H, W] (or unbatched [C, D, H, W]) with weight
    [O, C/groups, KD, KH, KW] (torch.nn.functional.conv3d). The depth taps become channels,
    [N*OD, C*KD, H, W], and one conv2d with the weight as [O, C/groups*KD, KH, KW] computes it."""
    op = "conv3d"
    named = [("input", input), ("weight", weight), ("bias", bias)]
    if input.ndim not in (4, 5):
        raise _error(op, f"Expected 4D (unbatched) or 5D (batched) input to {op}, but got input of size: "
                         f"{list(input.shape)}", named)
    stride = _expand(stride, 3, "stride", op, named)
    dilation = _expand(dilation, 3, "dilation", op, named)
    if weight.ndim != 5:
        raise _error(op, f"expected stride to be a single integer value or a list of {weight.ndim - 2} values to "
                         f"match the convolution dimensions, but got stride={list(stride)}", named)
    groups = int(groups)
    lo, hi = _conv3d_padding(op, padding, tuple(weight.shape[2:]), dilation, stride, named)
    unbatched = input.ndim == 4
    x = S.unsqueeze(input, 0) if unbatched else input
    _check_conv3d(op, x, weight, bias, stride, dilation, groups, lo, hi, named)
    symmetric_hw = lo[1:] == hi[1:]
    pad_lo = (0, 0, lo[0]) + ((0, 0) if symmetric_hw else lo[1:])
    pad_hi = (0, 0, hi[0]) + ((0, 0) if symmetric_hw else hi[1:])
    if any(pad_lo) or any(pad_hi):
        x = P["pad"].bind(x, lo=pad_lo, hi=pad_hi, interior=(0,) * 5, value=0)
    n, c, depth = x.shape[:3]
    out_channels, _, kd, kh, kw = weight.shape
    (sd, sh, sw), (dd, dh, dw) = stride, dilation
    od = (depth - dd * (kd - 1) - 1) // sd + 1
    taps = np.arange(od, dtype=np.int64)[:, None] * sd + np.arange(kd, dtype=np.int64)[None, :] * dd
    stacked = P["take"].bind(x, Tensor._wrap(taps), axis=2)  # [N, C, OD, KD, H, W]
    stacked = S.reshape(S.permute(stacked, (0, 2, 1, 3, 4, 5)), (n * od, c * kd) + tuple(x.shape[3:]))
    flat_weight = S.reshape(weight, (out_channels, -1, kh, kw))
    y = P["conv2d"].bind(stacked, flat_weight, stride=(sh, sw), padding=lo[1:] if symmetric_hw else (0, 0),
                         dilation=(dh, dw), groups=groups)
    y = S.permute(S.reshape(y, (n, od) + tuple(y.shape[1:])), (0, 2, 1, 3, 4))
    if bias is not None:
        y = M.add(y, S.reshape(bias, (1, -1, 1, 1, 1)))
    return S.squeeze(y, 0) if unbatched else y


def _check_transposed_3d(op, x, weight, stride, padding, output_padding, dilation, named):
    """The checks whose words name depth, height and width (functional_conv_transpose._check
    words them for two dims and runs the others)."""
    if weight.ndim != 5 or weight._data.dtype != x._data.dtype:
        return  # _check refuses these first, in PyTorch's order
    if any(d <= 0 for d in dilation):
        dd, dh, dw = dilation
        raise _error(op, f"dilation should be greater than zero, but got dilation_depth: {dd}, "
                         f"dilation_height: {dh}, dilation_width: {dw}", named)
    if any(extra >= s and extra >= d for extra, s, d in zip(output_padding, stride, dilation)):
        words = " ".join(f"{what}_{axis}: {v}" for what, values in
                         (("output_padding", output_padding), ("stride", stride), ("dilation", dilation))
                         for axis, v in zip(("depth", "height", "width"), values))
        raise _error(op, f"output padding must be smaller than either stride or dilation, but got {words}", named)
    sizes = tuple(x.shape[2:])
    outs = transposed_output_sizes(sizes, weight.shape[2:], stride, padding, output_padding, dilation)
    if any(o < 1 for o in outs):
        raise _error(op, f"Given input size per channel: ({' x '.join(map(str, sizes))}). Calculated output size "
                         f"per channel: ({' x '.join(map(str, outs))}). Output size is too small", named)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """3-D transposed convolution of input [N, C_in, D, H, W] (or unbatched) with weight
    [C_in, C_out/groups, KD, KH, KW] (torch.nn.functional.conv_transpose3d): one 2-D transposed
    convolution over [N*D, C_in, H, W] gives every depth tap as a channel, and `index_add` adds
    tap kd of input depth d into output depth d*stride + kd*dilation - padding."""
    op = "conv_transpose3d"
    named = [("input", input), ("weight", weight), ("bias", bias)]
    if input.ndim not in (4, 5):
        raise _error(op, f"Expected 4D (unbatched) or 5D (batched) input to {op}, but got input of size: "
                         f"{list(input.shape)}", named)
    unbatched = input.ndim == 4
    x = S.unsqueeze(input, 0) if unbatched else input
    stride, padding, output_padding, dilation = (
        _expand(value, 3, name, op, named) for name, value in
        (("stride", stride), ("padding", padding), ("output_padding", output_padding), ("dilation", dilation)))
    groups = int(groups)
    _check_transposed_3d(op, x, weight, stride, padding, output_padding, dilation, named)
    outs = _check(op, x, weight, bias, stride, padding, output_padding, groups, dilation)
    n, _, depth, height, width = x.shape
    kd = weight.shape[2]
    planes = S.reshape(S.permute(x, (0, 2, 1, 3, 4)), (n * depth, x.shape[1], height, width))
    flat_weight = S.reshape(weight, (weight.shape[0], -1) + tuple(weight.shape[3:]))
    y = _transpose_2d(planes, flat_weight, stride[1:], padding[1:], output_padding[1:], groups, dilation[1:], outs[1:])
    out_channels = y.shape[1] // kd
    y = S.permute(S.reshape(y, (n, depth, out_channels, kd) + outs[1:]), (0, 2, 1, 3, 4, 5))
    y = S.reshape(y, (n, out_channels, depth * kd) + outs[1:])
    targets = (np.arange(depth)[:, None] * stride[0] + np.arange(kd)[None, :] * dilation[0] - padding[0]).reshape(-1)
    kept = np.flatnonzero((targets >= 0) & (targets < outs[0]))
    if len(kept) < len(targets):
        y = P["take"].bind(y, Tensor._wrap(kept.astype(np.int64)), axis=2)
    zeros = P["constant"].bind(value=0, shape=(n, out_channels) + outs, dtype=y.dtype.name)
    y = P["index_add"].bind(zeros, Tensor._wrap(targets[kept].astype(np.int64)), y, axis=2)
    if bias is not None:
        y = M.add(y, S.reshape(M.to_dtype(bias, y.dtype), (1, -1, 1, 1, 1)))
    return S.squeeze(y, 0) if unbatched else y


# ----------------------------------------------------------------------------- 3-D pooling

def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool3d over [N, C, D, H, W] or [C, D, H, W]; with return_indices,
    also each maximum's flat index into its plane's D*H*W."""
    values, indices = max_pool_with_indices("max_pool3d", input, 3, kernel_size, stride, padding, dilation,
                                            ceil_mode)
    return (values, indices) if return_indices else values


def avg_divisor(sizes, kernel, stride, padding, outs, count_include_pad):
    """PyTorch's avg_pool divisor at each output position: the window clipped to the padded
    input (count_include_pad) or to the input itself, for any number of axes."""
    divisor = np.ones((), np.int64)
    for size, k, s, p, out in zip(sizes, kernel, stride, padding, outs):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)
        extent = end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0)
        divisor = np.multiply.outer(divisor, extent)
    return divisor


def avg_pool_nd(op, input, dims, kernel, stride, padding, outs, count_include_pad, divisor_override):
    """Window sums over a zero-padded input (one `take` through a table of padded positions),
    divided as PyTorch divides (an integer input truncates)."""
    sizes = tuple(input.shape[-dims:])
    highs = tuple(max(p, (o - 1) * s + k - size - p) for size, k, s, p, o in zip(sizes, kernel, stride, padding, outs))
    x = input
    if any(padding) or any(highs):
        lead = (0,) * (input.ndim - dims)
        x = P["pad"].bind(x, lo=lead + tuple(padding), hi=lead + highs, interior=(0,) * input.ndim, value=0)
    padded = tuple(x.shape[-dims:])
    table = pool_window_table(padded, kernel, stride, (0,) * dims, (1,) * dims, outs)
    lead = tuple(input.shape[:-dims])
    windows = P["take"].bind(S.reshape(x, lead + (math.prod(padded),)), Tensor._wrap(table), axis=len(lead))
    total = S.reshape(P["sum"].bind(windows, axes=(len(lead) + 1,), keepdims=False), lead + tuple(outs))
    rounding = None if input.is_floating_point() else "trunc"
    if divisor_override is not None:
        return M.div(total, int(divisor_override), rounding_mode=rounding)
    divisor = avg_divisor(sizes, kernel, stride, padding, outs, count_include_pad)
    if divisor.size and np.all(divisor == divisor.flat[0]):
        return M.div(total, int(divisor.flat[0]), rounding_mode=rounding)
    kind = input._data.dtype if input.is_floating_point() else np.int64
    return M.div(total, Tensor._wrap(divisor.astype(kind)), rounding_mode=rounding)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """torch.nn.functional.avg_pool3d over [N, C, D, H, W] or [C, D, H, W]."""
    op = "avg_pool3d"
    kernel, stride, padding, _ = pool_arguments(op, 3, kernel_size, stride, padding, avg=True)
    check_pool_rank(op, input, 3, rank_words(op, input, 3))
    if divisor_override is not None and not isinstance(divisor_override, (int, np.integer)):
        raise TypeError(f"avg_pool3d(): argument 'divisor_override' must be int, not "
                        f"{type(divisor_override).__name__}")
    outs = pool_geometry(op, input, 3, kernel, stride, padding, (1, 1, 1), ceil_mode, avg=True)
    if divisor_override == 0:
        raise pool_error(op, "divisor must be not zero", input)
    return avg_pool_nd(op, input, 3, kernel, stride, padding, outs, count_include_pad, divisor_override)


def adaptive_output_sizes(op, input, output_size, dims, words):
    """output_size (an int, or a sequence with None for 'keep') -> a dims-tuple of ints."""
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != dims:
            raise pool_error(op, words, input)
        sizes = output_size
    else:
        sizes = (output_size,) * dims
    return tuple(input.shape[-dims + i] if s is None else int(s) for i, s in enumerate(sizes))


def check_adaptive_input(op, input, dims, what, empty_planes=False):
    """PyTorch's refusal of an empty plane (unless `empty_planes`) and, for the CPU kernels it
    names, of integer inputs."""
    batched = input.ndim == dims + 2
    for axis in range(1 if batched else 0, input.ndim):
        if input.shape[axis] == 0 and not empty_planes:
            raise pool_error(op, f"{op}(): Expected input to have non-zero size for non-batch dimensions, but input "
                                 f"has sizes {list(input.shape)} with dimension {axis} being empty", input)
    if not input.is_floating_point():
        raise NotImplementedError(f"{where_named(op)}: \"{what}\" not implemented for "
                                  f"'{scalar_type_name(input.dtype)}'")


def adaptive_avg_pool3d(input, output_size):
    """torch.nn.functional.adaptive_avg_pool3d: bin i of an axis averages
    [floor(i*L/out), ceil((i+1)*L/out)); separable, so one averaging matrix per axis."""
    op = "adaptive_avg_pool3d"
    check_pool_rank(op, input, 3, f"adaptive_avg_pool3d(): Expected 4D or 5D tensor, but got {list(input.shape)}")
    od, oh, ow = adaptive_output_sizes(op, input, output_size, 3, "adaptive_avg_pool3d: output_size must be 3")
    if min(od, oh, ow) < 0:
        raise pool_error(op, f"adaptive_avg_pool3d: elements of output_size must be greater than or equal to 0 but "
                             f"received {{{od}, {oh},{ow}}}", input)
    check_adaptive_input(op, input, 3, "adaptive_avg_pool3d_cpu", empty_planes=True)
    lead = tuple(input.shape[:-3])
    depth, height, width = input.shape[-3:]
    if min(depth, height, width) == 0:  # the mean of no elements, as PyTorch gives
        return P["constant"].bind(value=math.nan, shape=lead + (od, oh, ow), dtype=input.dtype.name)
    if min(od, oh, ow) > 0 and depth % od == 0 and height % oh == 0 and width % ow == 0:
        blocks = S.reshape(input, lead + (od, depth // od, oh, height // oh, ow, width // ow))
        k = len(lead)
        return R.mean(blocks, dim=(k + 1, k + 3, k + 5))
    dtype = input._data.dtype
    y = matmul(input, Tensor._wrap(_adaptive_matrix(width, ow, dtype).T.copy()))  # [..., D, H, OW]
    y = matmul(Tensor._wrap(_adaptive_matrix(height, oh, dtype)), y)  # [..., D, OH, OW]
    y = matmul(Tensor._wrap(_adaptive_matrix(depth, od, dtype)), S.reshape(y, lead + (depth, oh * ow)))
    return S.reshape(y, lead + (od, oh, ow))
