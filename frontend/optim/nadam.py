"""`NAdam`: Adam with Nesterov momentum and Dozat's momentum schedule (momentum_decay).

A port of PyTorch's single-tensor (foreach=False) update under no_grad; the running product
of the momentum schedule lives in the state as `mu_product`. `capturable=True`, and any traced
step, computes the schedule with tensor ops on the step counter (no guard on the step count).
"""
from ember.dtypes import float64
from ember.frontend.dispatch import STATE
from ..creation import ones_like, zeros_like
from .optimizer import Optimizer, check_hyperparameter, scalar_step_tensor


class NAdam(Optimizer):
    """mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay)), m <- b1 m + (1 - b1) g,
    v <- b2 v + (1 - b2) g^2, p <- p - lr (1 - mu_t) / (1 - prod mu_1..t) * g / denom
    - lr mu_{t+1} / (1 - prod mu_1..t+1) * m / denom, denom = sqrt(v / (1 - b2^t)) + eps.
    weight_decay is L2, or with decoupled_weight_decay=True scales p by (1 - lr * wd) first."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False):
        check_hyperparameter(0.0 <= lr, f"Invalid learning rate: {lr}")
        check_hyperparameter(0.0 <= eps, f"Invalid epsilon value: {eps}")
        check_hyperparameter(0.0 <= betas[0] < 1.0, f"Invalid beta parameter at index 0: {betas[0]}")
        check_hyperparameter(0.0 <= betas[1] < 1.0, f"Invalid beta parameter at index 1: {betas[1]}")
        check_hyperparameter(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        check_hyperparameter(0.0 <= momentum_decay, f"Invalid momentum_decay value: {momentum_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable)
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(param, state, group):
        state["step"] = scalar_step_tensor()
        state["mu_product"] = ones_like(state["step"])
        state["exp_avg"] = zeros_like(param)
        state["exp_avg_sq"] = zeros_like(param)

    @staticmethod
    def _update(param, state, group):
        lr, eps, weight_decay, momentum_decay = group["lr"], group["eps"], group["weight_decay"], \
            group["momentum_decay"]
        beta1, beta2 = group["betas"]
        grad = param.grad if not group["maximize"] else -param.grad
        exp_avg, exp_avg_sq, mu_product, step_t = state["exp_avg"], state["exp_avg_sq"], state["mu_product"], \
            state["step"]
        step_t += 1
        # while tracing, the tensor form keeps the step count out of Python (no guard per step)
        tensor_step = group["capturable"] or STATE.recorder is not None
        # (traced, not capturable: the step in float64, as eagerly in Python floats)
        step = (step_t if group["capturable"] else step_t.to(float64)) if tensor_step else step_t.item()
        bias_correction2 = 1 - beta2 ** step
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
        mu_product.mul_(mu)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.div(bias_correction2).sqrt().add_(eps)
        if group["capturable"] or group["differentiable"]:
            mu_product_next = mu_product * mu_next
            param.addcdiv_(grad * (-lr * (1.0 - mu) / (1.0 - mu_product)), denom)
            param.addcdiv_(exp_avg * (-lr * mu_next / (1.0 - mu_product_next)), denom)
        else:
            # the float32 (default scalar dtype) product, as PyTorch reads it; traced, as a float64
            # tensor (no guard on its value), so the rates below are the eager float64 ones
            product = mu_product.to(float64) if tensor_step else mu_product.item()
            param.addcdiv_(grad, denom, value=-lr * (1.0 - mu) / (1.0 - product))
            param.addcdiv_(exp_avg, denom, value=-lr * mu_next / (1.0 - product * mu_next))
