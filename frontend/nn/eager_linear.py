"""Eager F.linear as one autograd node over numpy arrays (outside a trace).

Composed, a linear layer is three autograd nodes (the weight's transpose, the matmul, the bias
add, which allocates a second output) and their backward adds a transpose, reshapes and a
sum_to: 17 layers of an eager GPT step pay that per call. Here the forward is the composed
matmul's numpy arithmetic with the bias added in place (the same values, bit for bit), and one
node (its grad_fn named as PyTorch's: AddmmBackward0, MmBackward0, ViewBackward0...) gives
    dx = g @ W,  dW = g^T @ x (rows of every leading dim),  db = sum of g over leading dims.
A double backward (create_graph) composes the same formula from differentiable ops.
"""
import numpy as np

from ember.ops import PRIMITIVES
from ..custom_function import Function
from ..dispatch import STATE
from ..eager_arrays import host_float_arrays, needs_grad
from ..linalg import matmul
from .. import reductions as R
from .. import shape_ops as S
from ..tensor import Tensor

def eager_linear(input, weight, bias):
    """x @ weight.T + bias through one node, or None where it does not apply (a trace, a GPU or
    non-float32/float64 tensor, a weight that is not 2-D, a bias that is not [out_features])."""
    if type(input) is not Tensor or weight.ndim != 2 or input.ndim < 1 or 0 in weight.shape \
            or (bias is not None and tuple(bias.shape) != tuple(weight.shape[:1])):
        return None
    arrays = host_float_arrays(input, weight, bias)
    if arrays is None:
        return None
    x, w, b = arrays
    y = PRIMITIVES["matmul"].impl(x, w.T)
    if b is not None:
        np.add(y, b, out=y)  # (matmul's result is memory of its own)
    if not needs_grad(input, weight, bias):
        return Tensor._wrap(y)
    node = (Addmm if bias is not None else Mm) if input.ndim == 2 else \
        (View if x.flags.c_contiguous else Add) if bias is not None else UnsafeView
    # (the bias first, as PyTorch's addmm(bias, x, weight.t()): its hooks fire first; the result
    # is made in forward, never an argument, which Function.apply would give a detached alias)
    return node.apply(bias, input, weight, y)


class Addmm(Function):  # (grad_fn AddmmBackward0, as PyTorch's linear with a bias on a matrix)
    @staticmethod
    def forward(ctx, bias, x, weight, y):
        need_b, need_x, need_w = ctx.needs_input_grad[:3]
        ctx.save_for_backward(x if need_w else None, weight if need_x else None)  # (what backward reads, as PyTorch)
        ctx.shape = tuple(x.shape)
        return Tensor._wrap(y)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_b, need_x, need_w = ctx.needs_input_grad[:3]
        lead = tuple(range(len(ctx.shape) - 1))
        if STATE.grad_enabled:  # create_graph: differentiable ops
            dx = matmul(g, weight) if need_x else None
            dw = matmul(S.t(S.reshape(g, (-1, g.shape[-1]))), S.reshape(x, (-1, x.shape[-1]))) if need_w else None
            db = (R.sum(g, lead) if lead else g) if need_b else None
            return db, dx, dw, None
        matmul_impl, gd = PRIMITIVES["matmul"].impl, g._data
        dx = Tensor._wrap(matmul_impl(gd, weight._data)) if need_x else None
        dw = None
        if need_w:
            a = x._data
            dw = Tensor._wrap(matmul_impl(gd.reshape(-1, gd.shape[-1]).T, a.reshape(-1, a.shape[-1])))
        db = None
        if need_b:
            db = Tensor._wrap(PRIMITIVES["sum"].impl(gd, axes=lead, keepdims=False) if lead else np.array(gd))
        return db, dx, dw, None


class Mm(Addmm):  # (the grad_fn names PyTorch's linear gives: no bias, a matrix)
    pass


class View(Addmm):  # (a bias, more than two dims)
    pass


class UnsafeView(Addmm):  # (no bias, more than two dims)
    pass


class Add(Addmm):  # (a bias, more than two dims, a non-contiguous input)
    pass
