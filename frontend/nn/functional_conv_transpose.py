"""Transposed convolutions of ember.nn.functional: conv_transpose1d and conv_transpose2d.

A transposed convolution is the input-gradient of a convolution, so conv_transpose2d binds the
`conv2d_grad_input` contraction primitive, whose VJPs (conv2d, conv2d_grad_weight) close the
set: eager autograd, the autodiff pass and every target take it as it is. conv_transpose1d is
conv_transpose2d over a unit height. Checks and their wording follow PyTorch's.
"""
from ember.ops import PRIMITIVES as P
from ember.frontend import math_ops as M
from ember.frontend import shape_ops as S
from ember.frontend.linalg import scalar_type_name
from .functional_conv import where_named, _shape_text


def _expand(value, n, name, op, named):
    """An int or a list of 1 or n ints -> an n-tuple (PyTorch's expand_param_if_needed)."""
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return (int(value[0]),) * n
        if len(value) != n:
            raise _error(op, f"expected {name} to be a single integer value or a list of {n} values to match "
                             f"the convolution dimensions, but got {name}={list(value)}", named)
        return tuple(int(v) for v in value)
    return (int(value),) * n


def _parameters(op, n, named, stride, padding, output_padding, dilation):
    return tuple(_expand(value, n, name, op, named) for name, value in
                 (("stride", stride), ("padding", padding), ("output_padding", output_padding),
                  ("dilation", dilation)))


def _error(op, words, named):
    """PyTorch's words first (its users know them), then every operand's dtype and shape."""
    listed = ", ".join(f"{name} {_shape_text(t)}" for name, t in named if t is not None)
    return RuntimeError(f"{where_named(op)}: {words}: {listed}")


def _as_height_width(values, neutral):
    """1-D parameters as the (height, width) pair PyTorch's messages name (height = neutral)."""
    return (neutral,) + tuple(values) if len(values) == 1 else tuple(values)


def transposed_output_sizes(sizes, kernel, stride, padding, output_padding, dilation):
    """(L - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1, per spatial dim."""
    return tuple((size - 1) * s - 2 * p + d * (k - 1) + extra + 1
                 for size, k, s, p, extra, d in zip(sizes, kernel, stride, padding, output_padding, dilation))


def _check(op, batched, weight, bias, stride, padding, output_padding, groups, dilation):
    """PyTorch's checks of a transposed convolution, in its order and words; -> output sizes."""
    named = [("input", batched), ("weight", weight), ("bias", bias)]
    dims = len(stride)
    if weight.ndim != dims + 2:
        raise _error(op, f"expected a {dims + 2}-D weight (in_channels, out_channels/groups, *kernel_size), "
                         f"got a {weight.ndim}-D one", named)
    if batched._data.dtype != weight._data.dtype:
        raise _error(op, f"expected scalar type {scalar_type_name(batched.dtype)} but found "
                         f"{scalar_type_name(weight.dtype)}", named)
    if groups <= 0:
        raise _error(op, "non-positive groups is not supported", named)
    if any(s <= 0 for s in stride):
        raise _error(op, "non-positive stride is not supported", named)
    if any(p < 0 for p in padding):
        raise _error(op, "negative padding is not supported", named)
    if any(p < 0 for p in output_padding):
        raise _error(op, "negative output_padding is not supported", named)
    if any(d <= 0 for d in dilation):
        dh, dw = _as_height_width(dilation, 1)
        raise _error(op, f"dilation should be greater than zero, but got dilation_height: {dh}, "
                         f"dilation_width: {dw}", named)
    if weight.shape[0] % groups:
        raise _error(op, f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                         f"but got weight of size {list(weight.shape)} instead", named)
    if batched.shape[1] != weight.shape[0]:
        raise _error(op, f"Given transposed=1, weight of size {list(weight.shape)}, expected input"
                         f"{list(batched.shape)} to have {weight.shape[0]} channels, but got {batched.shape[1]} "
                         f"channels instead", named)
    out_channels = weight.shape[1] * groups
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != out_channels):
        raise _error(op, f"Given transposed=1, weight of size {list(weight.shape)}, expected bias to be "
                         f"1-dimensional with {out_channels} elements, but got bias of size {list(bias.shape)} "
                         f"instead", named)
    if any(extra >= s and extra >= d for extra, s, d in zip(output_padding, stride, dilation)):
        (oh, ow), (sh, sw), (dh, dw) = (_as_height_width(output_padding, 0), _as_height_width(stride, 1),
                                        _as_height_width(dilation, 1))
        raise _error(op, f"output padding must be smaller than either stride or dilation, but got "
                         f"output_padding_height: {oh} output_padding_width: {ow} stride_height: {sh} "
                         f"stride_width: {sw} dilation_height: {dh} dilation_width: {dw}", named)
    sizes = tuple(batched.shape[2:])
    outs = transposed_output_sizes(sizes, weight.shape[2:], stride, padding, output_padding, dilation)
    if any(o < 1 for o in outs):
        given = " x ".join(str(v) for v in _as_height_width(sizes, 1))
        calculated = " x ".join(str(v) for v in _as_height_width(outs, 1))
        raise _error(op, f"Given input size per channel: ({given}). Calculated output size per channel: "
                         f"({calculated}). Output size is too small", named)
    return outs


def _transpose_2d(x, weight, stride, padding, output_padding, groups, dilation, outs):
    """conv2d_grad_input over [N, C_in, H, W]. The primitive takes output sizes whose convolution
    gives back H, W: (L-1)*s - 2p + d*(k-1) + 1 + e for e < stride. An axis whose output padding
    reaches the stride (allowed when below the dilation) is computed uncropped, then cut."""
    kernel = weight.shape[2:]
    bound_padding, bound_sizes, cuts = [], [], []
    for axis, (size, k, s, p, extra, d, out) in enumerate(
            zip(x.shape[2:], kernel, stride, padding, output_padding, dilation, outs)):
        if extra < s:
            bound_padding.append(p)
            bound_sizes.append(out)
        else:
            full = (size - 1) * s + d * (k - 1) + 1
            bound_padding.append(0)
            bound_sizes.append(full)
            cuts.append((axis + 2, p, out, full))
    shape = (x.shape[0], weight.shape[1] * groups) + tuple(bound_sizes)
    y = P["conv2d_grad_input"].bind(x, weight, input_shape=shape, stride=tuple(stride),
                                    padding=tuple(bound_padding), dilation=tuple(dilation), groups=int(groups))
    for axis, start, length, full in cuts:
        if start + length > full:  # output padding past the last tap: zeros, as PyTorch gives
            hi = [0] * y.ndim
            hi[axis] = start + length - full
            y = P["pad"].bind(y, lo=(0,) * y.ndim, hi=tuple(hi), interior=(0,) * y.ndim, value=0)
        y = S.narrow(y, axis, start, length)
    return y


def _add_bias(y, bias, dims):
    if bias is None:
        return y
    if bias._data.dtype != y._data.dtype:  # PyTorch adds a bias of another dtype in the output's
        bias = M.to_dtype(bias, y.dtype)
    return M.add(y, S.reshape(bias, (1, -1) + (1,) * dims))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution of input [N, C_in, H, W] (or unbatched [C_in, H, W]) with weight
    [C_in, C_out/groups, KH, KW] -> [N, C_out, H_out, W_out], H_out = (H-1)*stride - 2*padding +
    dilation*(KH-1) + output_padding + 1 (torch.nn.functional.conv_transpose2d)."""
    op = "conv_transpose2d"
    if input.ndim not in (3, 4):
        raise RuntimeError(f"{where_named(op)}: Expected 3D (unbatched) or 4D (batched) input to {op}, but got "
                           f"input of size: {list(input.shape)}: input {_shape_text(input)}")
    unbatched = input.ndim == 3
    x = S.unsqueeze(input, 0) if unbatched else input
    stride, padding, output_padding, dilation = _parameters(
        op, 2, [("input", input), ("weight", weight)], stride, padding, output_padding, dilation)
    groups = int(groups)
    outs = _check(op, x, weight, bias, stride, padding, output_padding, groups, dilation)
    y = _add_bias(_transpose_2d(x, weight, stride, padding, output_padding, groups, dilation, outs), bias, 2)
    return S.squeeze(y, 0) if unbatched else y


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """1-D transposed convolution of input [N, C_in, L] (or [C_in, L]) with weight [C_in, C_out/groups, K],
    as conv_transpose2d over a unit height (torch.nn.functional.conv_transpose1d)."""
    op = "conv_transpose1d"
    if input.ndim not in (2, 3):
        raise RuntimeError(f"{where_named(op)}: Expected 2D (unbatched) or 3D (batched) input to {op}, but got "
                           f"input of size: {list(input.shape)}: input {_shape_text(input)}")
    unbatched = input.ndim == 2
    x = S.unsqueeze(input, 0) if unbatched else input
    stride, padding, output_padding, dilation = _parameters(
        op, 1, [("input", input), ("weight", weight)], stride, padding, output_padding, dilation)
    groups = int(groups)
    outs = _check(op, x, weight, bias, stride, padding, output_padding, groups, dilation)
    y = _transpose_2d(S.unsqueeze(x, -2), S.unsqueeze(weight, -2), (1,) + stride, (0,) + padding,
                      (0,) + output_padding, groups, (1,) + dilation, (1,) + outs)
    y = _add_bias(S.squeeze(y, -2), bias, 1)
    return S.squeeze(y, 0) if unbatched else y
