"""Contractions: batched matmul and conv2d with its two gradient contractions.

They are primitives (not compositions) because their lowering matters: the backends emit
tiled, packed kernels for them. conv2d's VJP is expressed with conv2d_grad_input and
conv2d_grad_weight, whose own VJPs close the set, so higher-order gradients work. The conv
numpy implementations (eager mode, the interpreter) live in conv_batch_last.
"""
import numpy as np

from . import compose as C
from . import conv_batch_last
from .movement import _window_out
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
    ga = C.sum_to(matmul.bind(g, C.swap_last(b)), a.shape) if C.needs_grad(a) else None
    if not C.needs_grad(b):
        gb = None
    elif len(b.shape) == 2 and len(a.shape) > 2:
        # a matrix applied to every row of a batch (a Linear layer on [batch, tokens, features]):
        # its gradient sums a^T @ g over the batch, one product over all rows (k = batch * rows)
        # instead of one per batch entry and a sum
        rows = int(np.prod(a.shape[:-1]))
        gb = matmul.bind(C.swap_last(C.reshape(a, (rows, a.shape[-1]))), C.reshape(g, (rows, g.shape[-1])))
    else:
        gb = C.sum_to(matmul.bind(C.swap_last(a), g), b.shape)
    return ga, gb


def _matmul(a, b):
    """numpy's matmul; a stack of matrices times one matrix as one product over all rows (one
    BLAS call, as PyTorch folds it, where numpy would call BLAS per matrix of the stack)."""
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous:
        rows = int(np.prod(a.shape[:-1]))
        return np.matmul(a.reshape(rows, a.shape[-1]), b).reshape(a.shape[:-1] + b.shape[-1:])
    return np.matmul(a, b)


register("matmul", "contraction", _matmul, _matmul_rule, _matmul_vjp)


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


def _conv2d_vjp(g, out, x, w, stride, padding, dilation, groups):
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gx = PRIMITIVES["conv2d_grad_input"].bind(g, w, input_shape=tuple(x.shape), **attrs) if C.needs_grad(x) else None
    gw = PRIMITIVES["conv2d_grad_weight"].bind(x, g, weight_shape=tuple(w.shape), **attrs) if C.needs_grad(w) else None
    return gx, gw


register("conv2d", "contraction", conv_batch_last.conv2d, _conv2d_rule, _conv2d_vjp)


def _grad_input_rule(g, w, input_shape, stride, padding, dilation, groups):
    x = Spec(tuple(input_shape), w.dtype)
    expected = _conv_geometry("conv2d_grad_input", x, w.shape, stride, padding, dilation, groups)
    if tuple(g.shape) != expected:
        raise OpError("conv2d_grad_input", f"output gradient {describe(g)} does not match {list(expected)}")
    same_dtype("conv2d_grad_input", g, w)
    return x


def _grad_input_vjp(u, out, g, w, input_shape, stride, padding, dilation, groups):
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gg = PRIMITIVES["conv2d"].bind(u, w, **attrs)
    gw = PRIMITIVES["conv2d_grad_weight"].bind(u, g, weight_shape=tuple(w.shape), **attrs)
    return gg, gw


register("conv2d_grad_input", "contraction", conv_batch_last.conv2d_grad_input, _grad_input_rule, _grad_input_vjp)


def _grad_weight_rule(x, g, weight_shape, stride, padding, dilation, groups):
    expected = _conv_geometry("conv2d_grad_weight", x, weight_shape, stride, padding, dilation, groups)
    if tuple(g.shape) != expected:
        raise OpError("conv2d_grad_weight", f"output gradient {describe(g)} does not match {list(expected)}")
    return Spec(tuple(weight_shape), same_dtype("conv2d_grad_weight", x, g))


def _grad_weight_vjp(v, out, x, g, weight_shape, stride, padding, dilation, groups):
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    gx = PRIMITIVES["conv2d_grad_input"].bind(g, v, input_shape=tuple(x.shape), **attrs)
    gg = PRIMITIVES["conv2d"].bind(x, v, **attrs)
    return gx, gg


register("conv2d_grad_weight", "contraction", conv_batch_last.conv2d_grad_weight, _grad_weight_rule, _grad_weight_vjp)
