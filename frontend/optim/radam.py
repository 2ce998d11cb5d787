"""`RAdam`: Adam with the variance of its adaptive learning rate rectified (Liu et al.).

A port of PyTorch's single-tensor (foreach=False) update under no_grad. Until the length of
the approximated SMA, rho_t, exceeds 5 the step is plain momentum SGD. `capturable=True`, and
any traced step, makes that choice with `where` on tensors (no guard on the step count).
"""
from ember.dtypes import float64
from ember.frontend.dispatch import STATE
from ..creation import zeros_like
from ..math_ops import where
from .optimizer import Optimizer, check_hyperparameter, scalar_step_tensor


class RAdam(Optimizer):
    """m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2, m_hat = m / (1 - b1^t);
    rho_inf = 2 / (1 - b2) - 1, rho_t = rho_inf - 2 t b2^t / (1 - b2^t); if rho_t > 5:
    p <- p - lr m_hat r_t sqrt(1 - b2^t) / (sqrt(v) + eps) with the rectification
    r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t)), else p <- p - lr m_hat.
    weight_decay is L2, or with decoupled_weight_decay=True scales p by (1 - lr * wd) first."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
                 *, foreach=None, maximize=False, capturable=False, differentiable=False):
        check_hyperparameter(0.0 <= lr, f"Invalid learning rate: {lr}")
        check_hyperparameter(0.0 <= eps, f"Invalid epsilon value: {eps}")
        check_hyperparameter(0.0 <= betas[0] < 1.0, f"Invalid beta parameter at index 0: {betas[0]}")
        check_hyperparameter(0.0 <= betas[1] < 1.0, f"Invalid beta parameter at index 1: {betas[1]}")
        check_hyperparameter(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize, foreach=foreach,
                        capturable=capturable, decoupled_weight_decay=decoupled_weight_decay,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(param, state, group):
        state["step"] = scalar_step_tensor()
        state["exp_avg"] = zeros_like(param)
        state["exp_avg_sq"] = zeros_like(param)

    @staticmethod
    def _update(param, state, group):
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        grad = param.grad if not group["maximize"] else -param.grad
        exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
        step_t += 1
        # while tracing, the tensor form keeps the step count out of Python (no guard per step)
        # (traced, not capturable: in float64, as eagerly in Python floats; rho_t cancels in float32)
        tensor_form = group["capturable"] or STATE.recorder is not None
        step = (step_t if group["capturable"] else step_t.to(float64)) if tensor_form else step_t.item()
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        bias_corrected_exp_avg = exp_avg / bias_correction1
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * (beta2 ** step) / bias_correction2

        def rectification():
            return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5

        def adaptive_lr():
            return (bias_correction2 ** 0.5) / exp_avg_sq.sqrt().add_(eps)

        if tensor_form:
            update = where(rho_t > 5.0, rectification() * adaptive_lr(), 1.0)
            param.add_(bias_corrected_exp_avg * lr * update, alpha=-1.0)
        elif rho_t > 5.0:
            param.add_(bias_corrected_exp_avg * lr * adaptive_lr() * rectification(), alpha=-1.0)
        else:
            param.add_(bias_corrected_exp_avg * lr, alpha=-1.0)
