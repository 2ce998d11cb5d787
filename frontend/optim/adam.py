"""`Adam` and `AdamW`: adaptive moment estimation, with L2 or decoupled weight decay and AMSGrad.

A port of PyTorch's single-tensor (foreach=False) update. `capturable=True` keeps the bias
corrections as tensor ops on the step counter (PyTorch's capturable formula), so a traced
training step needs no guard on the step count and compiles once.
"""
from ember.dtypes import float64
from ember.frontend.dispatch import STATE
from ..creation import zeros_like
from .array_updates import adam_step
from .optimizer import Optimizer, check_hyperparameter, scalar_step_tensor


class Adam(Optimizer):
    """m <- b1 m + (1-b1) g, v <- b2 v + (1-b2) g^2,
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).

    weight_decay adds wd * p to g (L2), or with decoupled_weight_decay=True (AdamW) scales p by
    (1 - lr * wd) first; amsgrad uses the running maximum of v.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, decoupled_weight_decay=False):
        check_hyperparameter(0.0 <= lr, f"Invalid learning rate: {lr}")
        check_hyperparameter(0.0 <= eps, f"Invalid epsilon value: {eps}")
        check_hyperparameter(0.0 <= betas[0] < 1.0, f"Invalid beta parameter at index 0: {betas[0]}")
        check_hyperparameter(0.0 <= betas[1] < 1.0, f"Invalid beta parameter at index 1: {betas[1]}")
        check_hyperparameter(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(param, state, group):
        state["step"] = scalar_step_tensor()
        state["exp_avg"] = zeros_like(param)
        state["exp_avg_sq"] = zeros_like(param)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = zeros_like(param)

    @staticmethod
    def _update(param, state, group):
        if adam_step(param, state, group):  # (eager, plain arrays: the same ops on numpy directly)
            return
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        grad = param.grad if not group["maximize"] else -param.grad
        exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        step_t += 1
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        max_exp_avg_sq = state.get("max_exp_avg_sq") if group["amsgrad"] else None
        if max_exp_avg_sq is not None:
            max_exp_avg_sq.maximum_(exp_avg_sq)
        second_moment = max_exp_avg_sq if max_exp_avg_sq is not None else exp_avg_sq
        # while tracing, the tensor form keeps the step count out of Python (no guard per step)
        if group["capturable"] or STATE.recorder is not None:
            if not group["capturable"]:  # (traced: the corrections in float64, as eagerly in Python floats)
                step_t = step_t.to(float64)
            bias_correction1 = 1 - beta1 ** step_t
            bias_correction2 = 1 - beta2 ** step_t
            step_size_neg = (lr / bias_correction1).neg()
            bias_correction2_sqrt = bias_correction2.sqrt()
            denom = (second_moment.sqrt() / (bias_correction2_sqrt * step_size_neg)).add_(eps / step_size_neg)
            param.addcdiv_(exp_avg, denom)
        else:
            step = step_t.item()
            bias_correction1 = 1 - beta1 ** step
            bias_correction2 = 1 - beta2 ** step
            step_size = lr / bias_correction1
            bias_correction2_sqrt = bias_correction2 ** 0.5
            denom = (second_moment.sqrt() / bias_correction2_sqrt).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p <- p * (1 - lr * wd) before the
    Adam update; weight_decay defaults to 1e-2."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         foreach=foreach, maximize=maximize, capturable=capturable, decoupled_weight_decay=True)
