"""Eager optimizer steps and gradient clipping written straight into the tensors' numpy arrays.

Outside a trace, an update composed of Tensor ops pays ember's dispatch and in-place machinery
per op: AdamW's 16 ops per parameter made its step and clip_grad_norm_ 14 ms of an eager
GPT step where PyTorch takes 3.7. Here the same float operations run in the same order as
numpy ufuncs writing in place (so the results are bitwise those of the composed ops), and the
version counters move as the composed in-place ops would move them. Adam, AdamW, SGD and
clip_grad_norm_ use it when `plain_arrays` accepts every tensor involved; otherwise (a trace,
a GPU or low-precision tensor, overlapping or non-contiguous memory, a tensor hyperparameter)
they compose Tensor ops as before.
"""
import numpy as np

from ember.ops import PRIMITIVES
from ..eager_arrays import host_float_arrays
from ..tensor import Tensor
from ..views import bump_version

_NUMBER = (float, int)


def plain_arrays(*tensors):
    """The tensors' arrays when an update may write them directly: outside a trace, CPU tensors
    of one float32 or float64 dtype, contiguous and writable, none overlapping another's memory
    (the composed ops would see each write through an alias; these would not). Else None."""
    arrays = host_float_arrays(*tensors) if tensors and all(t is not None for t in tensors) else None
    if arrays is None:
        return None
    for i, a in enumerate(arrays):
        if not a.flags.c_contiguous or not a.flags.writeable or any(
                a is b or (a.base is not None or b.base is not None) and np.may_share_memory(a, b)
                for b in arrays[:i]):  # (arrays owning their memory overlap only if one)
            return None
    return arrays


def numbers(*values):
    """Whether every hyperparameter is a Python number (a tensor learning rate composes ops)."""
    return all(type(v) in _NUMBER for v in values)


def _bump(tensor, times):
    for _ in range(times):
        bump_version(tensor)


def adam_step(param, state, group):
    """Adam's update of one parameter in place (Adam._update's ops, op for op); False where
    the arrays cannot be written directly (the caller composes ops then)."""
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    if group["capturable"] or not numbers(lr, eps, weight_decay, beta1, beta2):
        return False
    step_t = state["step"]
    tensors = [param, param.grad, state["exp_avg"], state["exp_avg_sq"]]
    if group["amsgrad"]:
        tensors.append(state["max_exp_avg_sq"])
    arrays = plain_arrays(*tensors)
    if arrays is None or not isinstance(step_t, Tensor) or type(step_t._data) is not np.ndarray \
            or step_t._data.shape != () or len({a.shape for a in arrays}) != 1 or arrays[0].ndim == 0:
        return False  # (a 0-d parameter: numpy's ufuncs give scalars, not arrays to write into)
    with np.errstate(all="ignore"):  # (inf and nan flow through silently, as through the composed ops)
        _adam_arrays(param, state, group, arrays, step_t)
    return True


def _adam_arrays(param, state, group, arrays, step_t):
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    p, grad, exp_avg, exp_avg_sq = arrays[:4]
    scalar = p.dtype.type  # (a Python number meets a float tensor in the tensor's dtype)
    if group["maximize"]:
        grad = np.negative(grad)
    np.add(step_t._data, 1, out=step_t._data)
    bump_version(step_t)
    if weight_decay != 0:
        if group["decoupled_weight_decay"]:
            np.multiply(p, scalar(1 - lr * weight_decay), out=p)
            bump_version(param)
        else:
            grad = np.add(grad, np.multiply(p, scalar(weight_decay)))
    weight = 1 - beta1  # exp_avg.lerp_(grad, weight), from the nearer end as math_ops.lerp
    if -0.5 < weight < 0.5:
        np.add(exp_avg, np.multiply(np.subtract(grad, exp_avg), scalar(weight)), out=exp_avg)
    else:
        np.subtract(grad, np.multiply(np.subtract(grad, exp_avg), scalar(1.0 - weight)), out=exp_avg)
    bump_version(state["exp_avg"])
    np.multiply(exp_avg_sq, scalar(beta2), out=exp_avg_sq)  # .mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    np.add(exp_avg_sq, np.multiply(np.multiply(grad, grad), scalar(1 - beta2)), out=exp_avg_sq)
    _bump(state["exp_avg_sq"], 2)
    second_moment = exp_avg_sq
    if group["amsgrad"]:
        second_moment = arrays[4]
        np.maximum(second_moment, exp_avg_sq, out=second_moment)
        bump_version(state["max_exp_avg_sq"])
    step = step_t._data.item()
    step_size = lr / (1 - beta1 ** step)
    denom = np.divide(np.sqrt(second_moment), scalar((1 - beta2 ** step) ** 0.5))
    np.add(denom, scalar(eps), out=denom)
    np.add(p, np.multiply(np.divide(exp_avg, denom), scalar(-step_size)), out=p)  # addcdiv_(.., -step_size)
    bump_version(param)


def sgd_step(param, state, group):
    """SGD's update of one parameter in place (SGD._update's ops, op for op); False where the
    arrays cannot be written directly."""
    lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
    weight_decay = group["weight_decay"]
    if not numbers(lr, momentum, dampening, weight_decay):
        return False
    buf_t = state.get("momentum_buffer") if momentum != 0 else None
    arrays = plain_arrays(*[t for t in (param, param.grad, buf_t) if t is not None])
    if arrays is None or len({a.shape for a in arrays}) != 1 or arrays[0].ndim == 0:
        return False
    with np.errstate(all="ignore"):
        _sgd_arrays(param, state, group, arrays, buf_t)
    return True


def _sgd_arrays(param, state, group, arrays, buf_t):
    lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
    weight_decay = group["weight_decay"]
    p, grad = arrays[:2]
    scalar = p.dtype.type
    if group["maximize"]:
        grad = np.negative(grad)
    if weight_decay != 0:
        grad = np.add(grad, np.multiply(p, scalar(weight_decay)))
    if momentum != 0:
        if buf_t is None:
            state["momentum_buffer"] = Tensor._wrap(np.array(grad, copy=True))
            buf = state["momentum_buffer"]._data
        else:
            buf = arrays[2]
            np.multiply(buf, scalar(momentum), out=buf)  # buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            np.add(buf, grad if dampening == 0 else np.multiply(grad, scalar(1 - dampening)), out=buf)
            _bump(buf_t, 2)
        grad = np.add(grad, np.multiply(buf, scalar(momentum))) if group["nesterov"] else buf
    np.add(p, np.multiply(grad, scalar(-lr)), out=p)  # param.add_(grad, alpha=-lr)
    bump_version(param)


def clip_by_total_norm(grads, max_norm, error_if_nonfinite):
    """clip_grad_norm_ with norm_type 2 on the gradients' arrays (the composed ops' values:
    each gradient's norm, their norm, then the coefficient); the total norm as a 0-d tensor, or
    None where the arrays cannot be written directly."""
    arrays = plain_arrays(*grads)
    if arrays is None:
        return None
    with np.errstate(all="ignore"):
        return _clip_arrays(grads, arrays, max_norm, error_if_nonfinite)


def _clip_arrays(grads, arrays, max_norm, error_if_nonfinite):
    sum_impl, scalar = PRIMITIVES["sum"].impl, arrays[0].dtype.type
    norms = np.stack([np.sqrt(sum_impl(np.multiply(a, a), axes=tuple(range(a.ndim)), keepdims=False))
                      for a in arrays])
    total = np.sqrt(sum_impl(np.multiply(norms, norms), axes=(0,), keepdims=False))
    if error_if_nonfinite and not np.isfinite(total):
        return None  # (the composed path raises PyTorch's error)
    coefficient = np.minimum(np.divide(scalar(max_norm), np.add(total, scalar(1e-6))), scalar(1.0))
    for g, a in zip(grads, arrays):
        if coefficient != 1.0:  # (x * 1 is x, bit for bit, nan and -0 included)
            np.multiply(a, coefficient, out=a)
        bump_version(g)
    return Tensor._wrap(np.asarray(total))
