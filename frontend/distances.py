"""Norm-based functions: cdist (pairwise p-norm distances between two sets of row vectors) and
renorm (slices scaled down to a maximum norm). Composed from math_ops, reductions and matmul,
with PyTorch's gradients where the chain rule would give nan (zero distances, ties of the
infinity norm), so eager autograd and ember.compile both take them.
"""
import numpy as np

from . import math_ops as M, reductions as R, shape_ops as S, linalg as L
from .math_ops import where
from .tensor import Tensor, _dim

_COMPUTE_MODES = ("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist")


def _root_or_zero(total, root):
    """root(total), 0 with a zero gradient where total is 0."""
    zero = M.eq(total, 0)
    return where(zero, 0.0, root(where(zero, 1.0, total)))


def _pairwise_norm(diff, p):
    """The p-norm over the last dim of `diff`, with PyTorch's _cdist_backward gradients."""
    size = M.abs(diff)
    if p == 0:  # a count: a zero gradient, as PyTorch's (the where keeps the result in the graph)
        count = R.sum(M.to_dtype(M.ne(diff, 0), diff.dtype), -1)
        return where(Tensor._wrap(np.ones(count.shape, bool)), count, R.sum(diff, -1))
    if p == 1:
        return R.sum(size, -1)
    if p == 2:
        return _root_or_zero(R.sum(M.mul(diff, diff), -1), M.sqrt)
    if p == float("inf"):
        # the value is the largest |diff|; the gradient goes to every element that reaches it
        # (PyTorch's rule, where amax would share it among ties): |d| - |d|.detach() adds 0
        largest = R.amax(size.detach(), -1, keepdim=True)
        reaching = M.to_dtype(M.eq(size.detach(), largest), diff.dtype)
        return M.add(S.squeeze(largest, -1), R.sum(M.mul(M.sub(size, size.detach()), reaching), -1))
    nonzero = M.ne(size, 0)
    powers = where(nonzero, M.pow(where(nonzero, size, 1.0), p), 0.0)
    return _root_or_zero(R.sum(powers, -1), lambda total: M.pow(total, 1.0 / p))


def _euclidean_by_matmul(x1, x2):
    """PyTorch's _euclidean_dist: |x1|^2 + |x2|^2 - 2 x1.x2 in one matmul, clamped at 1e-30."""
    x1_norm = R.sum(M.mul(x1, x1), -1, keepdim=True)
    x2_norm = R.sum(M.mul(x2, x2), -1, keepdim=True)
    x1_pad, x2_pad = (Tensor._wrap(np.ones(t.shape, t._data.dtype)) for t in (x1_norm, x2_norm))
    left = S.cat([M.mul(x1, -2), x1_norm, x1_pad], -1)
    right = S.cat([x2, x2_pad, x2_norm], -1)
    return M.sqrt(M.clamp_min(L.matmul(left, S.transpose(right, -1, -2)), 1e-30))


def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    """The p-norm distance between each row of x1 (..., P, M) and each row of x2 (..., R, M):
    (..., P, R), the batch dims broadcast. For p = 2 the distances come from one matmul when
    compute_mode asks for it, or by default when P or R exceeds 25 (as PyTorch: faster, less
    accurate for close points)."""
    for name, t in (("X1", x1), ("X2", x2)):
        if t.ndim < 2:
            raise RuntimeError(f"cdist only supports at least 2D tensors, {name} got: {t.ndim}D")
    if x1.shape[-1] != x2.shape[-1]:
        raise RuntimeError(f"X1 and X2 must have the same number of columns. X1: {x1.shape[-1]} X2: {x2.shape[-1]}")
    if compute_mode not in _COMPUTE_MODES:
        raise ValueError(f"{compute_mode} is not a valid value for compute_mode")
    for name, t in (("X1", x1), ("X2", x2)):
        if not t.is_floating_point():
            raise RuntimeError(f"cdist only supports floating-point dtypes, {name} got: {L.scalar_type_name(t.dtype)}")
    if p < 0:
        raise RuntimeError("cdist only supports non-negative p values")
    if x1.dtype is not x2.dtype:
        raise RuntimeError(f"expected scalar type {L.scalar_type_name(x1.dtype)} but found "
                           f"{L.scalar_type_name(x2.dtype)}")
    rows1, rows2 = x1.shape[-2], x2.shape[-2]
    by_matmul = p == 2 and (compute_mode == "use_mm_for_euclid_dist" or
                            (compute_mode == "use_mm_for_euclid_dist_if_necessary" and (rows1 > 25 or rows2 > 25)))
    if by_matmul:
        return _euclidean_by_matmul(x1, x2)
    diff = M.sub(S.unsqueeze(x1, -2), S.unsqueeze(x2, -3))  # (..., P, R, M)
    return _pairwise_norm(diff, float(p))


def renorm(input, p, dim, maxnorm):
    """Each slice input.select(dim, i) whose p-norm exceeds maxnorm scaled by
    maxnorm / (norm + 1e-7), as PyTorch's (the others unchanged)."""
    if p <= 0:
        raise RuntimeError("renorm: non-positive-norm not supported")
    if maxnorm < 0:
        raise RuntimeError(f"renorm: expected maxnorm to be >= 0 but got {float(maxnorm):g}")
    if input.ndim <= 1:
        raise RuntimeError(f"renorm: input needs at least 2 dimensions, got {input.ndim} dimensions")
    axis = _dim(dim, input.ndim, "renorm")
    others = tuple(i for i in range(input.ndim) if i != axis)
    norm = R.norm(input, p, others, keepdim=True)
    factor = where(M.gt(norm, maxnorm), M.div(maxnorm, M.add(norm, 1e-7)), 1.0)
    return M.mul(input, M.to_dtype(factor, input.dtype))


TENSOR_METHODS = {"renorm": renorm, "renorm_": renorm}
