"""Eager F.scaled_dot_product_attention as one autograd node over numpy arrays.

Composed of primitives, causal attention is about fifteen autograd nodes (scale, mask, the
softmax's max, shift, exp, sum and divide, two matmuls) and twice as many ops backward, each a
pass over the [batch, heads, L, S] scores: 2.3 ms per call on an 8x4x64x32 input where
PyTorch's fused kernel takes 1.1. Here, outside a trace, the forward runs the composed ops'
numpy arithmetic in place on one scores buffer (the same values, bit for bit) and one node
takes the attention backward of the saved weights P:
    dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dP * P)) * scale,  dQ = dS K,  dK = dS^T Q.
A double backward (create_graph) composes that formula from differentiable ops. Dropout,
explicit masks, grouped-query heads, broadcast batch dims, traces, GPU and low-precision
tensors compose primitives (functional_attention.py).
"""
import numpy as np

from ember.ops import PRIMITIVES
from ..custom_function import Function
from ..dispatch import STATE
from ..eager_arrays import host_float_arrays, needs_grad
from ..linalg import matmul
from .. import math_ops as M
from .. import reductions as R
from .. import shape_ops as S
from ..tensor import Tensor

def eager_attention(query, key, value, is_causal, scale):
    """softmax(q k^T * scale, causal-masked) v through one autograd node, or None where it does
    not apply (see the module docstring)."""
    arrays = host_float_arrays(query, key, value) if all(type(t) is Tensor for t in (query, key, value)) else None
    if arrays is None:
        return None
    q, k, v = arrays
    if not q.ndim == k.ndim == v.ndim or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2] \
            or 0 in q.shape + k.shape + v.shape:
        return None
    weights = _weights(q, k, is_causal, scale)
    out = PRIMITIVES["matmul"].impl(weights, v)
    if not needs_grad(query, key, value):
        return Tensor._wrap(out)
    # (the result is made in forward, never an argument, which Function.apply would give a detached alias)
    return ScaledDotProductAttention.apply(query, key, value, out, weights, is_causal, scale)


def _weights(q, k, is_causal, scale):
    """softmax(q k^T * scale) with the causal mask, as functional_attention composes it (matmul,
    mul, masked_fill, then functional.softmax's amax, sub, exp, sum, div), in place."""
    scores = PRIMITIVES["matmul"].impl(q, np.swapaxes(k, -1, -2))
    np.multiply(scores, q.dtype.type(scale), out=scores)
    if is_causal:
        length, source = scores.shape[-2:]
        np.copyto(scores, -np.inf, where=np.triu(np.ones((length, source), dtype=bool), 1))
    last = (scores.ndim - 1,)
    with np.errstate(all="ignore"):
        np.subtract(scores, PRIMITIVES["amax"].impl(scores, axes=last, keepdims=True), out=scores)
        np.exp(scores, out=scores)
        np.divide(scores, PRIMITIVES["sum"].impl(scores, axes=last, keepdims=True), out=scores)
    return scores


class ScaledDotProductAttention(Function):
    @staticmethod
    def forward(ctx, query, key, value, out, weights, is_causal, scale):
        ctx.save_for_backward(query, key, value)
        ctx.weights, ctx.is_causal, ctx.scale = weights, is_causal, scale
        return Tensor._wrap(out)

    @staticmethod
    def backward(ctx, g):
        query, key, value = ctx.saved_tensors
        if STATE.grad_enabled:  # create_graph: differentiable ops
            grads = _composed_backward(query, key, value, g, ctx.is_causal, ctx.scale)
        else:
            grads = [Tensor._wrap(a) for a in _array_backward(query._data, key._data, value._data, g._data,
                                                              ctx.weights, ctx.scale)]
        return tuple(gi if need else None for gi, need in zip(grads, ctx.needs_input_grad[:3])) + (None,) * 4


def _array_backward(q, k, v, g, weights, scale):
    matmul_impl = PRIMITIVES["matmul"].impl
    dv = matmul_impl(np.swapaxes(weights, -1, -2), g)
    dscores = matmul_impl(g, np.swapaxes(v, -1, -2))
    row = np.add.reduce(np.multiply(dscores, weights), axis=-1, keepdims=True)
    np.subtract(dscores, row, out=dscores)
    np.multiply(dscores, weights, out=dscores)
    np.multiply(dscores, q.dtype.type(scale), out=dscores)
    return matmul_impl(dscores, k), matmul_impl(np.swapaxes(dscores, -1, -2), q), dv


def _composed_backward(query, key, value, g, is_causal, scale):
    from .functional import softmax
    from ..creation import ones
    from ..indexing import masked_fill
    scores = M.mul(matmul(query, S.transpose(key, -2, -1)), scale)
    if is_causal:
        length, source = query.shape[-2], key.shape[-2]
        scores = masked_fill(scores, M.logical_not(S.tril(ones(length, source)).bool()), float("-inf"))
    weights = softmax(scores, dim=-1)
    dv = matmul(S.transpose(weights, -2, -1), g)
    dweights = matmul(g, S.transpose(value, -2, -1))
    dscores = M.mul(M.mul(weights, M.sub(dweights, R.sum(M.mul(dweights, weights), -1, keepdim=True))), scale)
    return matmul(dscores, key), matmul(S.transpose(dscores, -2, -1), query), dv
