"""Contractions: batched matmul and conv2d with its two gradient contractions.

They are primitives (not compositions) because their lowering matters: the backends emit
tiled, packed kernels for them. conv2d's VJP is expressed with conv2d_grad_input and
conv2d_grad_weight, whose own VJPs close the set, so higher-order gradients work.
"""
import numpy as np

from . import compose as C
from .movement import _unfold, _fold, _window_out
from .registry import OpError, Spec, describe, register, PRIMITIVES
from .shape_rules import broadcast_shapes, same_dtype


# ----------------------------------------------------------------------------- matmul

def _matmul_rule(a, b):
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise OpError("matmul", f"needs operands of at least 2 dims, got {describe(a)} and {describe(b)}")
    dtype = same_dtype("matmul", a, b)
    if dtype.category == 0:
        raise OpError("matmul", f"is not defined for bool tensors, got {describe(a)} and {describe(b)}")
    if a.shape[-1] != b.shape[-2]:
        raise OpError("matmul", f"shapes {describe(a)} and {describe(b)} cannot be multiplied "
                                f"({a.shape[-1]} != {b.shape[-2]})")
    try:
        batch = broadcast_shapes("matmul", Spec(a.shape[:-2], dtype), Spec(b.shape[:-2], dtype))
    except OpError as error:
        raise OpError("matmul", f"batch dims of {describe(a)} and {describe(b)} are not broadcastable "
                                f"({error.detail.split('(')[-1]}") from None
    return Spec(batch + (a.shape[-2], b.shape[-1]), dtype)


def _matmul_vjp(g, out, a, b):
    matmul = PRIMITIVES["matmul"]
    ga = C.sum_to(matmul.bind(g, C.swap_last(b)), a.shape)
    gb = C.sum_to(matmul.bind(C.swap_last(a), g), b.shape)
    return ga, gb


register("matmul", "contraction", np.matmul, _matmul_rule, _matmul_vjp)


# ----------------------------------------------------------------------------- conv2d

def _conv_geometry(op, x, w_shape, stride, padding, dilation, groups):
    n, c, h, width = x.shape
    o, cg, kh, kw = w_shape
    if c != cg * groups:
        raise OpError(op, f"input {describe(x)} has {c} channels, weight {list(w_shape)} expects "
                          f"{cg * groups}" + (f" ({groups} groups of {cg})" if groups > 1 else ""))
    if o % groups:
        raise OpError(op, f"{o} output channels do not divide into {groups} groups")
    oh = _window_out(h + 2 * padding[0], kh, stride[0], dilation[0])
    ow = _window_out(width + 2 * padding[1], kw, stride[1], dilation[1])
    if oh < 1 or ow < 1:
        raise OpError(op, f"kernel {kh}x{kw} (dilation {tuple(dilation)}) is larger than the padded "
                          f"input {describe(x)} with padding {tuple(padding)}")
    return n, o, oh, ow


def _conv2d_rule(x, w, stride, padding, dilation, groups):
    if len(x.shape) != 4 or len(w.shape) != 4:
        raise OpError("conv2d", f"needs a 4-d input and weight, got {describe(x)} and {describe(w)}")
    dtype = same_dtype("conv2d", x, w)
    return Spec(_conv_geometry("conv2d", x, w.shape, stride, padding, dilation, groups), dtype)


def _padded(x, padding):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _grouped(array, axis, groups):
    return np.split(array, groups, axis=axis) if groups > 1 else [array]


def _conv2d(x, w, stride, padding, dilation, groups):
    windows = _unfold(_padded(x, padding), w.shape[2:], stride, dilation)  # N,C,OH,OW,KH,KW
    outs = [np.tensordot(u, wg, axes=([1, 4, 5], [1, 2, 3]))  # N,OH,OW,Og
            for u, wg in zip(_grouped(windows, 1, groups), _grouped(w, 0, groups))]
    out = outs[0] if groups == 1 else np.concatenate(outs, axis=3)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def _conv2d_vjp(g, out, x, w, stride, padding, dilation, groups):
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gx = PRIMITIVES["conv2d_grad_input"].bind(g, w, input_shape=tuple(x.shape), **attrs)
    gw = PRIMITIVES["conv2d_grad_weight"].bind(x, g, weight_shape=tuple(w.shape), **attrs)
    return gx, gw


register("conv2d", "contraction", _conv2d, _conv2d_rule, _conv2d_vjp)


def _grad_input_rule(g, w, input_shape, stride, padding, dilation, groups):
    x = Spec(tuple(input_shape), w.dtype)
    expected = _conv_geometry("conv2d_grad_input", x, w.shape, stride, padding, dilation, groups)
    if tuple(g.shape) != expected:
        raise OpError("conv2d_grad_input", f"output gradient {describe(g)} does not match {list(expected)}")
    same_dtype("conv2d_grad_input", g, w)
    return x


def _conv2d_grad_input(g, w, input_shape, stride, padding, dilation, groups):
    n, c, h, width = input_shape
    parts = [np.tensordot(gg, wg, axes=([1], [0]))  # N,OH,OW,Cg,KH,KW
             for gg, wg in zip(_grouped(g, 1, groups), _grouped(w, 0, groups))]
    windows = parts[0] if groups == 1 else np.concatenate(parts, axis=3)
    windows = windows.transpose(0, 3, 1, 2, 4, 5)  # N,C,OH,OW,KH,KW
    ph, pw = padding
    full = _fold(windows, (h + 2 * ph, width + 2 * pw), stride, dilation)
    return np.ascontiguousarray(full[:, :, ph:ph + h, pw:pw + width])


def _grad_input_vjp(u, out, g, w, input_shape, stride, padding, dilation, groups):
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gg = PRIMITIVES["conv2d"].bind(u, w, **attrs)
    gw = PRIMITIVES["conv2d_grad_weight"].bind(u, g, weight_shape=tuple(w.shape), **attrs)
    return gg, gw


register("conv2d_grad_input", "contraction", _conv2d_grad_input, _grad_input_rule, _grad_input_vjp)


def _grad_weight_rule(x, g, weight_shape, stride, padding, dilation, groups):
    expected = _conv_geometry("conv2d_grad_weight", x, weight_shape, stride, padding, dilation, groups)
    if tuple(g.shape) != expected:
        raise OpError("conv2d_grad_weight", f"output gradient {describe(g)} does not match {list(expected)}")
    return Spec(tuple(weight_shape), same_dtype("conv2d_grad_weight", x, g))


def _conv2d_grad_weight(x, g, weight_shape, stride, padding, dilation, groups):
    windows = _unfold(_padded(x, padding), weight_shape[2:], stride, dilation)
    parts = [np.tensordot(gg, u, axes=([0, 2, 3], [0, 2, 3]))  # Og,Cg,KH,KW
             for gg, u in zip(_grouped(g, 1, groups), _grouped(windows, 1, groups))]
    return parts[0] if groups == 1 else np.concatenate(parts, axis=0)


def _grad_weight_vjp(v, out, x, g, weight_shape, stride, padding, dilation, groups):
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gx = PRIMITIVES["conv2d_grad_input"].bind(g, v, input_shape=tuple(x.shape), **attrs)
    gg = PRIMITIVES["conv2d"].bind(x, v, **attrs)
    return gx, gg


register("conv2d_grad_weight", "contraction", _conv2d_grad_weight, _grad_weight_rule, _grad_weight_vjp)
