"""`Adamax`: Adam with the infinity norm (a running max of |g|) in place of the second moment.

A port of PyTorch's single-tensor (foreach=False) update under no_grad. `capturable=True`, and
any traced step, keeps the bias correction as tensor ops on the step counter, so ember.compile
records the update without a guard on the step count.
"""
from ember.dtypes import float64
from ember.frontend.dispatch import STATE
from ..creation import zeros_like
from .optimizer import Optimizer, check_hyperparameter, scalar_step_tensor


class Adamax(Optimizer):
    """m <- b1 m + (1 - b1) g, u <- max(b2 u, |g| + eps), p <- p - lr / (1 - b1^t) * m / u.
    weight_decay adds wd * p to g (L2); maximize ascends instead."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, *,
                 maximize=False, differentiable=False, capturable=False):
        check_hyperparameter(0.0 <= lr, f"Invalid learning rate: {lr}")
        check_hyperparameter(0.0 <= eps, f"Invalid epsilon value: {eps}")
        check_hyperparameter(0.0 <= betas[0] < 1.0, f"Invalid beta parameter at index 0: {betas[0]}")
        check_hyperparameter(0.0 <= betas[1] < 1.0, f"Invalid beta parameter at index 1: {betas[1]}")
        check_hyperparameter(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(param, state, group):
        state["step"] = scalar_step_tensor()
        state["exp_avg"] = zeros_like(param)
        state["exp_inf"] = zeros_like(param)

    @staticmethod
    def _update(param, state, group):
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        grad = param.grad if not group["maximize"] else -param.grad
        exp_avg, exp_inf, step_t = state["exp_avg"], state["exp_inf"], state["step"]
        step_t += 1
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_inf.mul_(beta2).maximum_(grad.abs().add_(eps))
        if group["capturable"]:
            neg_bias_correction = (beta1 ** step_t - 1).div_(lr)
            param.addcdiv_(exp_avg, exp_inf * neg_bias_correction)
        else:  # (traced: the rate from the step as a float64 tensor, as eagerly in Python floats, no guard)
            step = step_t.to(float64) if STATE.recorder is not None else step_t.item()
            clr = lr / (1 - beta1 ** step)
            param.addcdiv_(exp_avg, exp_inf, value=-clr)
