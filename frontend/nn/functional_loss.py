"""Loss functions of ember.nn.functional (re-exported there), written with Tensor operations.

cross_entropy is log_softmax plus a one-hot built by comparing the targets against an
arange (no gather), with torch's semantics for class weights (weighted mean), ignore_index
and label smoothing, for class-index and probability targets.
"""
import warnings

import numpy as np

from ember import dtypes
from ember.frontend.dispatch import STATE
from ember.frontend.tensor import Tensor
from ember.frontend import math_ops as M
from ember.frontend import reductions as R
from ember.frontend import shape_ops as S
from ember.frontend.linalg import scalar_type_name
from .functional_conv import where_named
from ..low_precision import computes_in_float32

REDUCTIONS = ("none", "mean", "sum")


def _shape_text(t):
    return f"{t.dtype.short}[{','.join(str(d) for d in t.shape)}]"


def legacy_reduction(size_average, reduce, reduction):
    """torch's deprecated size_average/reduce arguments -> a reduction string."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _reduce(loss, reduction, op):
    if reduction == "none":
        return loss
    if reduction == "mean":
        return R.mean(loss)
    if reduction == "sum":
        return R.sum(loss)
    raise ValueError(f"{where_named(op)}: {reduction!r} is not a valid value for reduction "
                     f"(expected one of {', '.join(REDUCTIONS)})")


def _check_reduction(reduction, op):
    if reduction not in REDUCTIONS:
        raise ValueError(f"{where_named(op)}: {reduction!r} is not a valid value for reduction "
                         f"(expected one of {', '.join(REDUCTIONS)})")


def _same_size(op, input, target, warn):
    if tuple(target.shape) == tuple(input.shape):
        return
    message = (f"{where_named(op)}: Using a target size ({target.shape}) that is different to the input size "
               f"({input.shape}) is deprecated. Please ensure they have the same size.")
    if not warn:
        raise ValueError(message)
    warnings.warn(message + " This will likely lead to incorrect results due to broadcasting.", stacklevel=3)


def _float_target(target, input):
    if not isinstance(target, Tensor):
        return Tensor._wrap(np.asarray(target, dtype=input._data.dtype))
    return target


# ----------------------------------------------------------------------------- regression losses

@computes_in_float32
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "mse_loss")
    target = _float_target(target, input)
    _same_size("mse_loss", input, target, warn=True)
    diff = M.sub(input, target)
    return _reduce(M.mul(diff, diff), reduction, "mse_loss")


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "l1_loss")
    target = _float_target(target, input)
    _same_size("l1_loss", input, target, warn=True)
    return _reduce(M.abs(M.sub(input, target)), reduction, "l1_loss")


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, |d| - 0.5 beta elsewhere."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "smooth_l1_loss")
    if beta < 0:
        raise RuntimeError(f"smooth_l1_loss does not support negative values for beta, got {beta}")
    target = _float_target(target, input)
    _same_size("smooth_l1_loss", input, target, warn=True)
    distance = M.abs(M.sub(input, target))
    if beta == 0:
        return _reduce(distance, reduction, "smooth_l1_loss")
    near = M.lt(distance, beta)
    inside = _inside(distance, beta)
    quadratic = M.div(M.mul(M.mul(inside, inside), 0.5), beta)
    loss = M.where(near, quadratic, M.sub(distance, 0.5 * beta))
    return _reduce(loss, reduction, "smooth_l1_loss")


def _inside(distance, bound):
    """The distance where the quadratic branch is taken, 0 beyond `bound`: the branch the
    `where` discards then has a finite slope (no 0 * inf = nan for an infinite distance),
    while nan still reaches it and gives PyTorch's nan gradient."""
    return M.where(M.ge(distance, bound), 0.0, distance)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """0.5 d^2 where |d| < delta, delta (|d| - 0.5 delta) elsewhere."""
    _check_reduction(reduction, "huber_loss")
    target = _float_target(target, input)
    _same_size("huber_loss", input, target, warn=True)
    distance = M.abs(M.sub(input, target))
    near = M.lt(distance, delta)
    inside = _inside(distance, delta)
    quadratic = M.mul(M.mul(inside, inside), 0.5)
    loss = M.where(near, quadratic, M.mul(M.sub(distance, 0.5 * delta), delta))
    return _reduce(loss, reduction, "huber_loss")


# ----------------------------------------------------------------------------- classification

def _class_targets(op, input, target, ignore_index):
    """Check a class-index target against input [N,C,...] and return it as int64."""
    expected = (input.shape[0],) + tuple(input.shape[2:])
    if target.is_floating_point() or target.dtype is dtypes.bool_:
        alternative = ", or class probabilities of the input's shape and dtype" if op == "cross_entropy" else ""
        raise RuntimeError(
            f"{where_named(op)}: target {_shape_text(target)} must hold class indices of an integer dtype "
            f"(expected shape {list(expected)}, e.g. target.long()){alternative}; input is {_shape_text(input)}")
    if tuple(target.shape) != expected:
        raise ValueError(f"{where_named(op)}: expected target of shape {list(expected)} (class indices) for input "
                         f"{_shape_text(input)}, got {_shape_text(target)}")
    if STATE.recorder is None and target.numel():  # eager only: a value check would be a guard when tracing
        values = target._data
        bad = (values != ignore_index) & ((values < 0) | (values >= input.shape[1]))
        if bad.any():
            raise IndexError(f"{where_named(op)}: Target {int(values[bad].reshape(-1)[0])} is out of bounds "
                             f"for {input.shape[1]} classes.")
    return M.to_dtype(target, dtypes.int64)


def _class_hits(logp, target):
    """Boolean [N,C,...]: True where the class equals the target (a one-hot without gather)."""
    classes = logp.shape[1]
    index = Tensor._wrap(np.arange(classes, dtype=np.int64).reshape((1, classes) + (1,) * (logp.ndim - 2)))
    return M.eq(S.unsqueeze(target, 1), index)


def _class_weights(weight, logp, op):
    if weight is None:
        return None
    classes = logp.shape[1]
    if tuple(weight.shape) != (classes,):
        raise RuntimeError(f"{where_named(op)}: weight {_shape_text(weight)} should hold one value per class "
                           f"({classes})")
    if weight.dtype is not logp.dtype:  # PyTorch does not promote the class weights
        raise RuntimeError(f"{where_named(op)}: expected scalar type {scalar_type_name(logp.dtype)} but found "
                           f"{scalar_type_name(weight.dtype)}: weight {_shape_text(weight)} must have the dtype of "
                           f"input {_shape_text(logp)}")
    return S.reshape(weight, (1, classes) + (1,) * (logp.ndim - 2))


def _nll(op, logp, target, weight, ignore_index, reduction):
    """-logp[n, target[n]] * w[target[n]]; mean divides by the weights' sum.

    An ignored target's loss is selected away (a `where`, not a product with 0), so it is +0
    and passes exactly 0 gradient back: a batch whose targets are all ignored has a nan 'mean'
    (0 / 0, as in PyTorch) whose gradient is 0, not nan. Returns (reduced loss, validity mask,
    per-sample weights, class weights) for label smoothing to reuse."""
    hits = _class_hits(logp, target)
    valid = M.ne(target, ignore_index)
    picked = M.neg(R.sum(M.where(hits, logp, 0.0), 1))
    class_weights = _class_weights(weight, logp, op)
    if class_weights is None:
        sample_weights = M.to_dtype(valid, logp.dtype)
        losses = M.where(valid, picked, 0.0)
    else:
        sample_weights = M.where(valid, R.sum(M.where(hits, class_weights, 0.0), 1), 0.0)
        losses = M.where(valid, M.mul(picked, sample_weights), 0.0)
    return _reduce_weighted(losses, sample_weights, reduction), valid, sample_weights, class_weights


def _reduce_weighted(losses, sample_weights, reduction):
    """'mean' divides by the total weight of the samples (nan when it is 0, as in PyTorch)."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return R.sum(losses)
    return M.div(R.sum(losses), R.sum(sample_weights))


def _batched(input, target, op, class_index):
    """Unbatched input [C] -> [1,C] (target likewise); returns whether to squeeze the result."""
    if input.ndim == 0:
        raise ValueError(f"{where_named(op)}: input must have at least 1 dim, got {_shape_text(input)}")
    if input.ndim == 1:
        return S.unsqueeze(input, 0), S.unsqueeze(target, 0), True
    return input, target, False


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """Negative log likelihood of log-probabilities input [N,C,...] at class-index targets [N,...]."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "nll_loss")
    input, target, unbatched = _batched(input, target, "nll_loss", True)
    target = _class_targets("nll_loss", input, target, ignore_index)
    loss = _nll("nll_loss", input, target, weight, ignore_index, reduction)[0]
    return S.squeeze(loss, 0) if unbatched and reduction == "none" else loss


@computes_in_float32
def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """log_softmax over dim 1 then the NLL of class-index targets [N,...] (any integer dtype) or
    the cross entropy with probability targets of the input's shape."""
    from .functional import log_softmax
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    if not isinstance(target, Tensor):
        raise TypeError(f"cross_entropy: target must be a Tensor, got {type(target).__name__}")
    input, target, unbatched = _batched(input, target, "cross_entropy", True)
    logp = log_softmax(input, 1)
    classes = input.shape[1]
    if target.is_floating_point() and tuple(target.shape) == tuple(input.shape):
        loss = _soft_cross_entropy(logp, target, weight, reduction, label_smoothing, classes)
    else:
        target = _class_targets("cross_entropy", input, target, ignore_index)
        loss, valid, sample_weights, class_weights = _nll("cross_entropy", logp, target, weight, ignore_index,
                                                          reduction)
        if label_smoothing > 0.0:
            weighted = logp if class_weights is None else M.mul(logp, class_weights)
            smooth = _reduce_weighted(M.where(valid, M.neg(R.sum(weighted, 1)), 0.0), sample_weights, reduction)
            loss = M.add(M.mul(loss, 1.0 - label_smoothing), M.mul(smooth, label_smoothing / classes))
    return S.squeeze(loss, 0) if unbatched and reduction == "none" else loss


def _soft_cross_entropy(logp, target, weight, reduction, label_smoothing, classes):
    # probabilities of another floating dtype promote, as in PyTorch (float32 logits with
    # float64 targets give a float64 loss)
    if label_smoothing > 0.0:
        target = M.add(M.mul(target, 1.0 - label_smoothing), label_smoothing / classes)
    product = M.mul(logp, target)
    class_weights = _class_weights(weight, logp, "cross_entropy")
    if class_weights is not None:
        product = M.mul(product, class_weights)
    if reduction == "none":
        return M.neg(R.sum(product, 1))
    total = M.neg(R.sum(product))
    if reduction == "sum":
        return total
    return M.div(total, float(logp.numel() // classes))


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None, reduction="mean"):
    """-(t log x + (1 - t) log(1 - x)) with each log clamped at -100, and PyTorch's input
    gradient (x - t) / max(x (1 - x), 1e-12), finite at x = 0 and x = 1. That is not the slope
    of the clamped logs, so the loss is value + (x - x.detach()) * slope: exactly the value
    forward, the chosen slope backward. (The target's gradient is the clamped logs' slope:
    PyTorch's -logit(x), except at x = 0 or 1, where PyTorch's is infinite and this one is
    +-100.)"""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "binary_cross_entropy")
    target = _float_target(target, input)
    _same_size("binary_cross_entropy", input, target, warn=False)
    for name, other in (("target", target), ("weight", weight)):
        if other is not None and other.dtype is not input.dtype:  # PyTorch's BCE does not promote
            raise RuntimeError(f"{where_named('binary_cross_entropy')}: Found dtype {scalar_type_name(other.dtype)} "
                               f"but expected {scalar_type_name(input.dtype)}: {name} {_shape_text(other)} for input "
                               f"{_shape_text(input)}")
    if STATE.recorder is None and input.numel() and (input._data.min() < 0 or input._data.max() > 1):
        raise RuntimeError(f"{where_named('binary_cross_entropy')}: all elements of input should be between "
                           f"0 and 1 (use BCEWithLogitsLoss for logits)")
    x = input.detach()
    loss = M.sub(M.mul(M.sub(target, 1.0), M.clamp_min(M.log1p(M.neg(x)), -100.0)),
                 M.mul(target, M.clamp_min(M.log(x), -100.0)))
    slope = M.div(M.sub(x, target.detach()), M.clamp_min(M.mul(M.sub(1.0, x), x), _BCE_EPSILON))
    loss = M.add(loss, M.mul(M.sub(input, x), slope))
    if weight is not None:
        loss = M.mul(loss, weight)
    return _reduce(loss, reduction, "binary_cross_entropy")


_BCE_EPSILON = 1e-12  # PyTorch's floor under x (1 - x) in the BCE gradient


def _softplus_of_negative(x):
    """log(1 + exp(-x)) without overflow in either branch (so the VJP has no inf * 0)."""
    negative_side = M.add(M.neg(x), M.log1p(M.exp(M.clamp_guard(x, max=0.0))))
    positive_side = M.log1p(M.exp(M.neg(M.clamp_guard(x, min=0.0))))
    return M.where(M.lt(x, 0), negative_side, positive_side)


@computes_in_float32
def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """BCE of sigmoid(input) in the stable form (1 - t) x + (1 + (pw - 1) t) log(1 + exp(-x))."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    _check_reduction(reduction, "binary_cross_entropy_with_logits")
    target = _float_target(target, input)
    _same_size("binary_cross_entropy_with_logits", input, target, warn=False)
    softplus_neg = _softplus_of_negative(input)
    if pos_weight is not None:
        log_weight = M.add(M.mul(M.sub(pos_weight, 1.0), target), 1.0)
        softplus_neg = M.mul(log_weight, softplus_neg)
    loss = M.add(M.mul(M.sub(1.0, target), input), softplus_neg)
    if weight is not None:
        loss = M.mul(loss, weight)
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """target * (log target - input) with input as log-probabilities; 'batchmean' divides by N."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if log_target:
        loss = M.mul(M.exp(target), M.sub(target, input))
    else:
        # PyTorch's xlogy(t, t) - t * input: 0 log 0 = 0, a negative target gives nan
        zero = M.eq(target, 0)
        t_log_t = M.where(zero, 0.0, M.mul(target, M.log(M.where(zero, 1.0, target))))
        loss = M.sub(t_log_t, M.mul(target, input))
    if reduction == "batchmean":
        return M.div(R.sum(loss), float(input.shape[0] if input.ndim else 1))
    return _reduce(loss, reduction, "kl_div")


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    reduction = legacy_reduction(size_average, reduce, reduction)
    if isinstance(target, Tensor) and target.requires_grad and STATE.grad_enabled:
        raise RuntimeError("The function 'soft_margin_loss' is not differentiable with respect to argument "
                           "'target'. This input cannot have requires_grad True.")  # (PyTorch's words exactly)
    return _reduce(_softplus_of_negative(M.mul(input, target)), reduction, "soft_margin_loss")
