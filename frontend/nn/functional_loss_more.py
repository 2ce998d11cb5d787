"""Margin, embedding and likelihood losses and the distances of ember.nn.functional (re-exported
there): cosine_embedding_loss ... triplet_margin_with_distance_loss, cosine_similarity,
pairwise_distance and pdist, written with Tensor operations (no gathers: class targets become
one-hot masks), with PyTorch's semantics: reductions, legacy size_average/reduce, shape and
target checks, and PyTorch's gradients at the kinks and at clamped norms and variances.
"""
import math

import numpy as np

from ember import dtypes
from ..low_precision import computes_in_float32
from ember.frontend.creation import full_like
from ember.frontend.dispatch import STATE
from ember.frontend.grad_mode import is_grad_enabled
from ember.frontend.tensor import Tensor
from ember.frontend import math_ops as M
from ember.frontend import reductions as R
from ember.frontend import shape_ops as S
from ember.frontend.linalg import scalar_type_name
from ember.frontend.reductions import _root_at_zero_safe
from .functional_conv import where_named
from .functional_loss import (REDUCTIONS, _check_reduction, _reduce, _shape_text, _softplus_of_negative,
                              legacy_reduction)

_COSINE_EPSILON = 1e-12  # added to the squared magnitudes in cosine_embedding_loss (ATen's EPSILON)


def _eager():
    """Value checks (a target in range, a variance >= 0) run only in eager mode: while
    tracing they would make the program depend on the data."""
    return STATE.recorder is None


def _positive(cut):
    """cut where cut > 0, else 0, with no gradient at 0 (the `z > 0` test of PyTorch's
    multi-margin kernels; clamp_min would pass the gradient at 0)."""
    return M.where(M.gt(cut, 0), cut, 0.0)


def _clamped_min_keep_gradient(value, low):
    """max(value, low) whose gradient is the identity everywhere: PyTorch clamps the variance
    of gaussian_nll_loss and the norms of cosine_similarity in place under no_grad. Where the
    clamp bites, value - value.detach() is exactly 0 (value is finite there), so the result is
    exactly `low`."""
    frozen = value.detach()
    return M.where(M.lt(frozen, low), M.add(M.sub(value, frozen), low), value)


def _invalid_reduction(reduction, op):
    """The Python-level losses' own wording: '<reduction> is not valid'."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{where_named(op)}: {reduction} is not valid (expected one of {', '.join(REDUCTIONS)})")


def _long_target(op, target, input):
    if target.dtype is not dtypes.int64:
        raise RuntimeError(f"{where_named(op)}: expected scalar type Long but found "
                           f"{scalar_type_name(target.dtype)}: target {_shape_text(target)} must hold class indices "
                           f"as int64 (e.g. target.long()); input is {_shape_text(input)}")


def _class_range(input, op):
    """(frames, classes) of a multi-class margin loss's input: [C], [N, C] or a 0-d single score."""
    if not ((input.ndim == 2 and input.shape[1] != 0) or (input.ndim == 1 and input.shape[0] != 0)
            or input.ndim == 0):
        raise RuntimeError(f"{where_named(op)}: Expected non-empty vector or matrix with optional 0-dim batch size, "
                           f"but got: {list(input.shape)}")
    if input.ndim <= 1:
        return 1, (1 if input.ndim == 0 else input.shape[0])
    return input.shape[0], input.shape[1]


def _classes(count):
    return Tensor._wrap(np.arange(count, dtype=np.int64))


# ----------------------------------------------------------------------------- embedding losses

def cosine_embedding_loss(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    """1 - cos(x1, x2) where target is 1, max(0, cos(x1, x2) - margin) where it is -1, 0 elsewhere;
    cos = <x1, x2> / sqrt((|x1|^2 + 1e-12)(|x2|^2 + 1e-12)) over the last dim."""
    op = "cosine_embedding_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, op)
    if target.ndim not in (0, 1):
        raise RuntimeError(f"{where_named(op)}: 0D or 1D target tensor expected, multi-target not supported "
                           f"(got target {_shape_text(target)})")
    if target.ndim == 1 and not (input1.ndim == 2 and input2.ndim == 2):
        raise RuntimeError(f"{where_named(op)}: 1D target tensor expects 2D input tensors, but found inputs with "
                           f"sizes {list(input1.shape)} and {list(input2.shape)}.")
    if target.ndim == 0 and not (input1.ndim == 1 and input2.ndim == 1):
        raise RuntimeError(f"{where_named(op)}: 0D target tensor expects 1D input tensors, but found inputs with "
                           f"sizes {list(input1.shape)} and {list(input2.shape)}.")
    dim = target.ndim
    dot = R.sum(M.mul(input1, input2), dim)
    square1 = M.add(R.sum(M.mul(input1, input1), dim), _COSINE_EPSILON)
    square2 = M.add(R.sum(M.mul(input2, input2), dim), _COSINE_EPSILON)
    cos = M.div(dot, M.sqrt(M.mul(square1, square2)))
    similar = M.where(M.eq(target, 1), M.sub(1.0, cos), 0.0)
    dissimilar = M.where(M.eq(target, -1), M.clamp_min(M.sub(cos, margin), 0.0), 0.0)
    return _reduce(M.add(similar, dissimilar), reduction, op)


def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None, reduction="mean"):
    """x where target is 1, max(0, margin - x) where it is -1 (PyTorch's rule for other values:
    the sum of both, from `target != -1` and `target != 1`); target broadcasts with input."""
    op = "hinge_embedding_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, op)
    below_margin = M.where(M.ne(target, 1), M.clamp_min(M.sub(margin, input), 0.0), 0.0)
    itself = M.where(M.ne(target, -1), input, 0.0)
    return _reduce(M.add(below_margin, itself), reduction, op)


def margin_ranking_loss(input1, input2, target, margin=0, size_average=None, reduce=None, reduction="mean"):
    """max(0, -target * (x1 - x2) + margin); the three tensors must have one number of dims."""
    op = "margin_ranking_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, op)
    if input1.ndim != input2.ndim or input1.ndim != target.ndim:
        raise RuntimeError(f"{where_named(op)}: All input tensors should have same dimension but got sizes: "
                           f"input1: {list(input1.shape)}, input2: {list(input2.shape)}, "
                           f"target: {list(target.shape)}")
    loss = M.clamp_min(M.add(M.mul(M.neg(target), M.sub(input1, input2)), margin), 0.0)
    return _reduce(loss, reduction, op)


# ----------------------------------------------------------------------------- multi-class margins

def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None, reduce=None,
                      reduction="mean"):
    """sum over i != y of w[y] max(0, margin - x[y] + x[i])^p / C, for input [N, C] (or [C]) and
    int64 class targets [N]; p is 1 or 2."""
    op = "multi_margin_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, op)
    if p != 1 and p != 2:
        raise ValueError(f"{where_named(op)}: only p == 1 and p == 2 supported (got p={p})")
    if weight is not None and weight.ndim != 1:
        raise ValueError(f"{where_named(op)}: weight must be one-dimensional, got weight {_shape_text(weight)}")
    frames, classes = _class_range(input, op)
    if not (target.ndim <= 1 and target.numel() == frames):
        raise RuntimeError(f"{where_named(op)}: target tensor should be 1-D with size equal to the number of input "
                           f"samples (batch size). Expected target size [{frames}], but got {list(target.shape)}. "
                           f"Input has shape {list(input.shape)}.")
    if weight is not None and weight.numel() != classes:
        raise RuntimeError(f"{where_named(op)}: inconsistent weight size, expected {classes} but got "
                           f"{list(weight.shape)}")
    _long_target(op, target, input)
    if weight is not None and weight.dtype is not input.dtype:  # PyTorch does not promote the weight
        raise RuntimeError(f"{where_named(op)}: expected scalar type {scalar_type_name(input.dtype)} but found "
                           f"{scalar_type_name(weight.dtype)}: weight {_shape_text(weight)} must have the dtype of "
                           f"input {_shape_text(input)}")
    if weight is not None and weight.requires_grad and is_grad_enabled():
        raise RuntimeError(f"{where_named(op)}: The function 'multi_margin_loss' is not differentiable with respect "
                           f"to argument 'weight'. This input cannot have requires_grad True.")
    if _eager() and target.numel():
        values = target._data
        bad = (values < 0) | (values >= classes)
        if bad.any():
            raise RuntimeError(f"{where_named(op)}: target out of range: {int(values[bad].reshape(-1)[0])} "
                               f"for {classes} classes")
    scores = S.reshape(input, (frames, classes))
    hits = M.eq(S.reshape(target, (frames, 1)), _classes(classes))  # [N, C] one-hot of the targets
    picked = R.sum(M.where(hits, scores, 0.0), 1, keepdim=True)
    cut = _positive(M.add(M.sub(margin, picked), scores))
    if p == 2:
        cut = M.mul(cut, cut)
    if weight is not None:
        cut = M.mul(cut, R.sum(M.where(hits, weight, 0.0), 1, keepdim=True))
    loss = M.div(R.sum(M.where(hits, 0.0, cut), 1), float(classes))
    if reduction == "none":
        return loss if target.ndim > 0 else S.reshape(loss, ())
    return _reduce(loss, reduction, op)


def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """sum over the targets j and the non-target classes i of max(0, 1 - (x[y_j] - x[i])) / C.
    target [N, C] (or [C]) lists int64 class indices, ended by the first -1."""
    op = "multilabel_margin_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, op)
    frames, classes = _class_range(input, op)
    if input.ndim <= 1:
        fits = target.ndim <= 1 and target.numel() == classes
    else:
        fits = target.ndim == 2 and tuple(target.shape) == (frames, classes)
    if not fits:
        raise RuntimeError(f"{where_named(op)}: inconsistent target size: {list(target.shape)} for input of size: "
                           f"{list(input.shape)}")
    _long_target(op, target, input)
    if _eager() and target.numel():
        values = target._data
        bad = (values < -1) | (values >= classes)
        if bad.any():
            raise RuntimeError(f"{where_named(op)}: argument #2 'target' is out of range: "
                               f"{int(values[bad].reshape(-1)[0])} (expected class indices in [0, {classes}), "
                               f"-1 ending the list)")
    scores = S.reshape(input, (frames, classes))
    labels = S.reshape(target, (frames, classes))
    # the entries before the first negative one are the targets
    listed = M.eq(R.cumsum(M.to_dtype(M.lt(labels, 0), dtypes.int64), 1), 0)           # [N, K]
    hits = M.logical_and(M.eq(S.unsqueeze(labels, 2), _classes(classes)), S.unsqueeze(listed, 2))  # [N, K, C]
    is_target = R.any(hits, 1)                                                         # [N, C]
    picked = R.sum(M.where(hits, S.unsqueeze(scores, 1), 0.0), 2, keepdim=True)       # [N, K, 1]: x[y_j]
    cut = _positive(M.add(M.sub(1.0, picked), S.unsqueeze(scores, 1)))               # [N, K, C]
    counted = M.logical_and(S.unsqueeze(listed, 2), M.logical_not(S.unsqueeze(is_target, 1)))
    loss = M.div(R.sum(M.where(counted, cut, 0.0), (1, 2)), float(classes))
    if reduction == "none":
        return loss if target.ndim > 1 else S.reshape(loss, ())
    return _reduce(loss, reduction, op)


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """-(t log sigmoid(x) + (1 - t) log sigmoid(-x)), weighted, averaged over the last (class) dim."""
    op = "multilabel_soft_margin_loss"
    if size_average is not None or reduce is not None:
        reduction = legacy_reduction(size_average, reduce, reduction)
    _invalid_reduction(reduction, op)
    # -log sigmoid(x) = log(1 + exp(-x)), computed without overflow
    loss = M.add(M.mul(target, _softplus_of_negative(input)),
                 M.mul(M.sub(1.0, target), _softplus_of_negative(M.neg(input))))
    if weight is not None:
        loss = M.mul(loss, weight)
    loss = M.div(R.sum(loss, input.ndim - 1), float(input.shape[-1]))
    return _reduce(loss, reduction, op)


# ----------------------------------------------------------------------------- likelihoods

def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None,
                     reduction="mean"):
    """exp(x) - t x (log_input) or x - t log(x + eps); full adds Stirling's t log t - t +
    0.5 log(2 pi t) where t > 1."""
    op = "poisson_nll_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, op)
    if log_input:
        loss = M.sub(M.exp(input), M.mul(target, input))
    else:
        loss = M.sub(input, M.mul(target, M.log(M.add(input, eps))))
    if full:
        # Stirling's term of a target <= 1 is 0; it is computed on 2 there, so a zero count
        # makes no 0 * log 0 (PyTorch's target gradient is nan at 0, this one is 0)
        small = M.le(target, 1)
        counts = M.where(small, 2.0, target)
        stirling = M.add(M.sub(M.mul(counts, M.log(counts)), counts),
                         M.mul(M.log(M.mul(counts, 2 * math.pi)), 0.5))
        loss = M.add(loss, M.where(small, 0.0, stirling))
    return _reduce(loss, reduction, op)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """0.5 (log max(var, eps) + (x - t)^2 / max(var, eps)) (+ 0.5 log 2 pi when full). var has the
    input's shape, or one dim fewer, or one dim of size 1 (homoscedastic), or is a float; the
    clamp passes the gradient through, as PyTorch's in-place clamp under no_grad."""
    op = "gaussian_nll_loss"
    if isinstance(var, float):
        if var < 0:
            raise ValueError(f"{where_named(op)}: var has negative entry/entries (got var={var})")
        var = full_like(input, var)
    elif not isinstance(var, Tensor):
        raise TypeError(f"{where_named(op)}: var must be a Tensor or a float, got {type(var).__name__}")
    elif _eager() and var.numel() and bool((var._data < 0).any()):
        raise ValueError(f"{where_named(op)}: var has negative entry/entries")
    if tuple(var.shape) != tuple(input.shape):
        if tuple(input.shape[:-1]) == tuple(var.shape):
            var = S.unsqueeze(var, -1)
        elif not (input.ndim == var.ndim
                  and sum(v for i, v in zip(input.shape, var.shape) if i != v) == 1):
            raise ValueError(f"{where_named(op)}: var is of incorrect size: var {_shape_text(var)} for input "
                             f"{_shape_text(input)} (expected the input's shape, its shape without the last dim, "
                             f"or one dim of size 1)")
    _invalid_reduction(reduction, op)
    var = _clamped_min_keep_gradient(var, eps)
    diff = M.sub(input, target)
    loss = M.mul(M.add(M.log(var), M.div(M.mul(diff, diff), var)), 0.5)
    if full:
        loss = M.add(loss, 0.5 * math.log(2 * math.pi))
    return _reduce(loss, reduction, op)


# ----------------------------------------------------------------------------- distances

def _vector_norm(x, p, dim, keepdim=False):
    """The p-norm over `dim` with PyTorch's gradient rules (linalg_vector_norm's backward):
    0 where the norm is 0, a zero element takes no gradient for p < 1, p = 0 counts the
    non-zeros with a zero gradient, and +-inf shares the gradient among ties."""
    p = float(p)
    if p == 0:
        counted = M.where(M.ne(x, 0), 1.0, M.mul(x, 0.0))  # the second branch: a zero-gradient path
        return R.sum(M.to_dtype(counted, x.dtype) if x.is_floating_point() else counted, dim, keepdim)
    if p in (1.0, 2.0, math.inf, -math.inf):
        return R.norm(x, p, dim, keepdim)
    size = M.abs(x)
    if p > 1:
        powered = M.pow(size, p)
    else:  # |x|^p of a zero element has an infinite slope: select it away
        zero = M.eq(size, 0)
        powered = M.where(zero, 0.0 if p > 0 else math.inf, M.pow(M.where(zero, 1.0, size), p))
    return _root_at_zero_safe(R.sum(powered, dim, keepdim), lambda total: M.pow(total, 1.0 / p))


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """||x1 - x2 + eps||_p over the last dim of the broadcast inputs."""
    innermost = max(x1.ndim, x2.ndim) - 1
    return _vector_norm(M.add(M.sub(x1, x2), eps), p, innermost, keepdim)


@computes_in_float32
def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """sum(x1 / max(||x1||, eps) * x2 / max(||x2||, eps)) over `dim` of the broadcast inputs
    (each normalised first, so |result| <= 1); the clamped norms pass their gradient through,
    as PyTorch's clamp under no_grad. Integer inputs take the other input's floating dtype."""
    common = dtypes.result_type([t.dtype for t in (x1, x2) if t.ndim], [t.dtype for t in (x1, x2) if not t.ndim],
                                [])
    if not common.is_floating_point:
        raise RuntimeError(f"{where_named('cosine_similarity')}: expected common dtype to be floating point, yet "
                           f"common dtype is {scalar_type_name(common)} (x1 {_shape_text(x1)}, x2 {_shape_text(x2)})")
    x1 = x1 if x1.is_floating_point() else M.to_dtype(x1, common)
    x2 = x2 if x2.is_floating_point() else M.to_dtype(x2, common)
    x1, x2 = S.broadcast_tensors(x1, x2)
    norm1 = _clamped_min_keep_gradient(R.norm(x1, 2, dim, keepdim=True), eps)
    norm2 = _clamped_min_keep_gradient(R.norm(x2, 2, dim, keepdim=True), eps)
    return R.sum(M.mul(M.div(x1, norm1), M.div(x2, norm2)), dim)


def pdist(input, p=2):
    """The p-norm distance between every pair of rows i < j of input [N, M], in row-major
    order of the pairs: [N (N - 1) / 2]. Unlike pairwise_distance, no eps, and for p = inf
    every tied element takes the whole gradient (PyTorch's pdist backward)."""
    op = "pdist"
    if input.ndim != 2:
        raise RuntimeError(f"{where_named(op)}: pdist only supports 2D tensors, got: {input.ndim}D "
                           f"(input {_shape_text(input)})")
    if not input.is_floating_point():
        raise RuntimeError(f"{where_named(op)}: pdist only supports floating-point dtypes, got "
                           f"{_shape_text(input)}")
    if p < 0:
        raise RuntimeError(f"{where_named(op)}: pdist only supports non-negative p values, got p={p}")
    first, second = np.triu_indices(input.shape[0], 1)
    diff = M.sub(S.index_select(input, 0, Tensor._wrap(first.astype(np.int64))),
                 S.index_select(input, 0, Tensor._wrap(second.astype(np.int64))))
    if float(p) != math.inf:
        return _vector_norm(diff, p, 1)
    size = M.abs(diff)
    distance = R.amax(size.detach(), 1)
    ties = M.eq(size.detach(), S.unsqueeze(distance, 1))
    # distance + (s - s.detach()): the value of amax, the gradient sign(diff) at every tie
    summed = R.sum(M.where(ties, size, 0.0), 1)
    slope = M.sub(summed, summed.detach())
    return M.add(distance, M.where(M.isfinite(summed.detach()), slope, 0.0))


# ----------------------------------------------------------------------------- triplet losses

def _triplet_dims(anchor, positive, negative, op):
    if not (anchor.ndim == positive.ndim == negative.ndim):
        raise RuntimeError(f"{where_named(op)}: The anchor, positive, and negative tensors are expected to have "
                           f"the same number of dimensions, but got: anchor {anchor.ndim}D, positive "
                           f"{positive.ndim}D, and negative {negative.ndim}D inputs")


def _check_margin(margin, op):
    if margin <= 0:
        raise ValueError(f"{where_named(op)}: margin must be greater than 0, got {margin}")


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False, size_average=None,
                        reduce=None, reduction="mean"):
    """max(0, margin + d(a, p) - d(a, n)) with d the pairwise p-norm distance; swap uses
    min(d(a, n), d(p, n))."""
    op = "triplet_margin_loss"
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, op)
    _check_margin(margin, op)
    _triplet_dims(anchor, positive, negative, op)
    near = pairwise_distance(anchor, positive, p, eps)
    far = pairwise_distance(anchor, negative, p, eps)
    if swap:
        far = M.minimum(far, pairwise_distance(positive, negative, p, eps))
    return _reduce(M.clamp_min(M.add(M.sub(near, far), margin), 0.0), reduction, op)


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None, margin=1.0,
                                      swap=False, reduction="mean"):
    """triplet_margin_loss with any distance_function(x1, x2) -> distances (pairwise_distance
    by default)."""
    op = "triplet_margin_with_distance_loss"
    _check_reduction(reduction, op)
    _check_margin(margin, op)
    _triplet_dims(anchor, positive, negative, op)
    distance = pairwise_distance if distance_function is None else distance_function
    near = distance(anchor, positive)
    far = distance(anchor, negative)
    if swap:
        far = M.minimum(far, distance(positive, negative))
    return _reduce(M.clamp_min(M.add(M.sub(near, far), margin), 0.0), reduction, op)
