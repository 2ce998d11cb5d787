"""Convolution and pooling functions of ember.nn.functional (re-exported there).

conv2d binds the `conv2d` contraction primitive (asymmetric 'same' padding pads first) and
adds the bias; conv1d is conv2d over a unit height. Pooling pads (-inf for max, 0 for avg),
takes sliding windows with the `unfold_windows` primitive and reduces the last two dims.
"""
import numpy as np

from ember.ops import PRIMITIVES as P
from ..low_precision import computes_in_float32
from ember.frontend.dispatch import current_module
from ember.frontend.tensor import Tensor
from ember.frontend import shape_ops as S
from ember.frontend import math_ops as M
from ember.frontend import reductions as R
from ember.frontend.linalg import cpp_type_name


def _empty_sequence(value):
    """stride=() or [] means "the kernel size" in torch's pools (a numpy integer is no sequence)."""
    return isinstance(value, (tuple, list)) and len(value) == 0


def pair(value, n=2, name="argument"):
    """An int or a sequence -> an n-tuple of ints (torch's _pair / _single)."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1 and n > 1:
            return tuple(value) * n
        if len(value) != n:
            raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {value}")
        return tuple(int(v) for v in value)
    return (int(value),) * n


def where_named(op):
    module = current_module()
    return f"{op} ({module})" if module else op


def _shape_text(t):
    return f"{t.dtype.short}[{','.join(str(d) for d in t.shape)}]"


# ----------------------------------------------------------------------------- convolution

def _same_padding(kernel, dilation, op, stride):
    if any(s != 1 for s in stride):
        raise ValueError(f"{where_named(op)}: padding='same' is not supported for strided convolutions")
    lo, hi = [], []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        lo.append(total // 2)
        hi.append(total - total // 2)
    return tuple(lo), tuple(hi)


def _conv_padding(padding, kernel, dilation, stride, op, n):
    """-> (symmetric padding for the primitive, extra (lo, hi) padding to apply first or None)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * n, None
        if padding == "same":
            lo, hi = _same_padding(kernel, dilation, op, stride)
            if lo == hi:
                return lo, None
            return (0,) * n, (lo, hi)
        raise ValueError(f"{where_named(op)}: invalid padding string {padding!r}, should be one of 'valid', 'same'")
    return pair(padding, n, "padding"), None


def check_conv_dtypes(op, input, weight, bias):
    """PyTorch's convolutions do not promote: a float64 input to a float32 layer (or an int64
    one) is an error naming both dtypes, in PyTorch's words and with the shapes."""
    for name, other in (("weight", weight), ("bias", bias)):
        if other is not None and other._data.dtype != input._data.dtype:  # (numpy's: cheap)
            raise RuntimeError(f"{where_named(op)}: Input type ({cpp_type_name(input.dtype)}) and {name} type "
                               f"({cpp_type_name(other.dtype)}) should be the same: input {_shape_text(input)}, "
                               f"{name} {_shape_text(other)}")


def _check_conv_parameters(op, stride, padding, dilation, groups):
    """PyTorch's refusals of a convolution's parameters, in its words."""
    for bad, message in ((int(groups) <= 0, "non-positive groups is not supported"),
                         (min(stride) <= 0, "non-positive stride is not supported"),
                         (min(padding) < 0, "negative padding is not supported"),
                         (min(dilation) <= 0, f"dilation should be greater than zero, but got dilation_height: "
                                              f"{dilation[0]}, dilation_width: {dilation[1]}")):
        if bad:
            raise RuntimeError(f"{where_named(op)}: {message}")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution of input [N,C,H,W] (or unbatched [C,H,W]) with weight [O,C/groups,KH,KW]."""
    if input.ndim not in (3, 4):
        raise RuntimeError(f"{where_named('conv2d')}: expected a 3-D (unbatched) or 4-D (batched) input, "
                           f"got {_shape_text(input)}")
    if weight.ndim != 4:
        raise RuntimeError(f"{where_named('conv2d')}: expected a 4-D weight, got {_shape_text(weight)}")
    check_conv_dtypes("conv2d", input, weight, bias)
    unbatched = input.ndim == 3
    x = S.unsqueeze(input, 0) if unbatched else input
    stride, dilation = pair(stride, 2, "stride"), pair(dilation, 2, "dilation")
    sym, extra = _conv_padding(padding, weight.shape[2:], dilation, stride, "conv2d", 2)
    _check_conv_parameters("conv2d", stride, sym, dilation, groups)
    if extra is not None:
        (lo_h, lo_w), (hi_h, hi_w) = extra
        x = P["pad"].bind(x, lo=(0, 0, lo_h, lo_w), hi=(0, 0, hi_h, hi_w), interior=(0, 0, 0, 0), value=0)
    out = P["conv2d"].bind(x, weight, stride=stride, padding=sym, dilation=dilation, groups=int(groups))
    if bias is not None:
        out = M.add(out, S.reshape(bias, (1, -1, 1, 1)))
    return S.squeeze(out, 0) if unbatched else out


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution of input [N,C,L] (or [C,L]) with weight [O,C/groups,K], as conv2d over height 1."""
    if input.ndim not in (2, 3):
        raise RuntimeError(f"{where_named('conv1d')}: expected a 2-D (unbatched) or 3-D (batched) input, "
                           f"got {_shape_text(input)}")
    check_conv_dtypes("conv1d", input, weight, bias)
    if not isinstance(padding, str):
        padding = (0, pair(padding, 1, "padding")[0])
    elif padding == "same":
        _same_padding(weight.shape[2:], pair(dilation, 1), "conv1d", pair(stride, 1))
    out = conv2d(S.unsqueeze(input, -2), S.unsqueeze(weight, -2), bias,
                 stride=(1, pair(stride, 1)[0]), padding=padding, dilation=(1, pair(dilation, 1)[0]), groups=groups)
    return S.squeeze(out, -2)


# ----------------------------------------------------------------------------- pooling geometry

def _pool_out(size, kernel, stride, pad, dilation, ceil_mode):
    """torch's pooling_output_shape: ceil mode drops a window that would start in the right padding."""
    span = dilation * (kernel - 1) + 1
    numerator = size + 2 * pad - span + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_geometry(op, x, kernel, stride, padding, dilation, ceil_mode):
    kernel = pair(kernel, 2, "kernel_size")
    stride = kernel if stride is None or _empty_sequence(stride) else pair(stride, 2, "stride")
    padding, dilation = pair(padding, 2, "padding"), pair(dilation, 2, "dilation")
    for k, p in zip(kernel, padding):
        if p > k // 2:
            raise RuntimeError(f"{where_named(op)}: pad should be at most half of effective kernel size, "
                               f"but got pad={p}, kernel_size={k}")
    outs, highs = [], []
    for size, k, s, p, d in zip(x.shape[-2:], kernel, stride, padding, dilation):
        out = _pool_out(size, k, s, p, d, ceil_mode)
        if out < 1:
            raise RuntimeError(f"{where_named(op)}: input {_shape_text(x)} is too small for kernel {kernel} "
                               f"(padding {padding}, dilation {dilation}): output size would be {out}")
        needed = (out - 1) * s + d * (k - 1) + 1
        highs.append(max(p, needed - size - p))
        outs.append(out)
    return kernel, stride, padding, dilation, tuple(outs), tuple(highs)


def _windows(x, kernel, stride, padding, dilation, highs, fill):
    lead = (0,) * (x.ndim - 2)
    if any(padding) or any(h for h in highs):
        x = P["pad"].bind(x, lo=lead + tuple(padding), hi=lead + tuple(highs),
                          interior=(0,) * x.ndim, value=fill)
    return P["unfold_windows"].bind(x, kernel=tuple(kernel), stride=tuple(stride), dilation=tuple(dilation))


def _check_pool_input(op, x, dims):
    if x.ndim not in (dims + 1, dims + 2):
        raise RuntimeError(f"{where_named(op)}: expected a {dims + 1}-D (unbatched) or {dims + 2}-D (batched) "
                           f"input, got {_shape_text(x)}")


# ----------------------------------------------------------------------------- max / avg pooling

def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if return_indices:
        raise NotImplementedError("max_pool2d: return_indices=True is not supported by ember")
    _check_pool_input("max_pool2d", input, 2)
    kernel, stride, padding, dilation, _, highs = _pool_geometry(
        "max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    fill = -np.inf if input.is_floating_point() else np.iinfo(input._data.dtype).min
    windows = _windows(input, kernel, stride, padding, dilation, highs, fill)
    return P["amax"].bind(windows, axes=(input.ndim, input.ndim + 1), keepdims=False)


def _avg_divisor(sizes, kernel, stride, padding, outs, count_include_pad):
    """torch's avg_pool divisor per output position: the window clipped to the padded input
    (count_include_pad) or to the real input."""
    per_axis = []
    for size, k, s, p, out in zip(sizes, kernel, stride, padding, outs):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)
        if count_include_pad:
            per_axis.append(end - start)
        else:
            per_axis.append(np.minimum(end, size) - np.maximum(start, 0))
    return np.multiply.outer(per_axis[0], per_axis[1])


@computes_in_float32
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    _check_pool_input("avg_pool2d", input, 2)
    kernel, stride, padding, dilation, outs, highs = _pool_geometry(
        "avg_pool2d", input, kernel_size, stride, padding, 1, ceil_mode)
    windows = _windows(input, kernel, stride, padding, dilation, highs, 0)
    total = P["sum"].bind(windows, axes=(input.ndim, input.ndim + 1), keepdims=False)
    if divisor_override:
        return M.div(total, float(divisor_override))
    divisor = _avg_divisor(input.shape[-2:], kernel, stride, padding, outs, count_include_pad)
    if np.all(divisor == divisor.flat[0]):
        return M.div(total, float(divisor.flat[0]))
    return M.div(total, Tensor._wrap(divisor.astype(input._data.dtype)))


def _as_2d_pool(fn, input, kernel_size, stride, padding, extra):
    """Run a 2-D pool over [..., 1, L] for the 1-D variants."""
    k = pair(kernel_size, 1, "kernel_size")[0]
    s = k if stride is None or _empty_sequence(stride) else pair(stride, 1, "stride")[0]
    p = pair(padding, 1, "padding")[0]
    out = fn(S.unsqueeze(input, -2), (1, k), (1, s), (0, p), **extra)
    return S.squeeze(out, -2)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    _check_pool_input("max_pool1d", input, 1)
    d = pair(dilation, 1, "dilation")[0]
    return _as_2d_pool(max_pool2d, input, kernel_size, stride, padding,
                       dict(dilation=(1, d), ceil_mode=ceil_mode, return_indices=return_indices))


@computes_in_float32
def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    _check_pool_input("avg_pool1d", input, 1)
    return _as_2d_pool(avg_pool2d, input, kernel_size, stride, padding,
                       dict(ceil_mode=ceil_mode, count_include_pad=count_include_pad))


# ----------------------------------------------------------------------------- adaptive pooling

def _adaptive_matrix(size, out, dtype):
    """[out, size] averaging matrix: row i averages input[floor(i*size/out) : ceil((i+1)*size/out)]."""
    matrix = np.zeros((out, size), dtype=dtype)
    for i in range(out):
        start = (i * size) // out
        end = -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _adaptive_sizes(op, input, output_size, dims):
    sizes = output_size if isinstance(output_size, (list, tuple)) else (output_size,) * dims
    if len(sizes) != dims:
        raise ValueError(f"{where_named(op)}: output_size must have {dims} elements, got {output_size}")
    return tuple(input.shape[-dims + i] if s is None else int(s) for i, s in enumerate(sizes))


@computes_in_float32
def adaptive_avg_pool2d(input, output_size):
    _check_pool_input("adaptive_avg_pool2d", input, 2)
    oh, ow = _adaptive_sizes("adaptive_avg_pool2d", input, output_size, 2)
    h, w = input.shape[-2:]
    if oh < 1 or ow < 1:
        raise RuntimeError(f"adaptive_avg_pool2d: output size ({oh}, {ow}) must be positive")
    if h % oh == 0 and w % ow == 0:
        lead = tuple(input.shape[:-2])
        blocks = S.reshape(input, lead + (oh, h // oh, ow, w // ow))
        return R.mean(blocks, dim=(input.ndim - 1, input.ndim + 1))
    dtype = input._data.dtype
    rows = Tensor._wrap(_adaptive_matrix(h, oh, dtype))
    cols = Tensor._wrap(_adaptive_matrix(w, ow, dtype).T.copy())
    from ember.frontend.linalg import matmul
    return matmul(matmul(rows, input), cols)


def adaptive_avg_pool1d(input, output_size):
    _check_pool_input("adaptive_avg_pool1d", input, 1)
    size = output_size[0] if isinstance(output_size, (list, tuple)) else output_size
    return S.squeeze(adaptive_avg_pool2d(S.unsqueeze(input, -2), (1, size)), -2)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    if return_indices:
        raise NotImplementedError("adaptive_max_pool2d: return_indices=True is not supported by ember")
    _check_pool_input("adaptive_max_pool2d", input, 2)
    oh, ow = _adaptive_sizes("adaptive_max_pool2d", input, output_size, 2)
    h, w = input.shape[-2:]
    if h % oh or w % ow:
        rows = [S.narrow(input, -2, (i * h) // oh, -((-(i + 1) * h) // oh) - (i * h) // oh) for i in range(oh)]
        out_rows = []
        for row in rows:
            cells = [R.amax(S.narrow(row, -1, (j * w) // ow, -((-(j + 1) * w) // ow) - (j * w) // ow),
                            dim=(-2, -1), keepdim=True) for j in range(ow)]
            out_rows.append(S.cat(cells, -1))
        return S.cat(out_rows, -2)
    return max_pool2d(input, (h // oh, w // ow))

