"""`ASGD`: averaged stochastic gradient descent (Polyak & Juditsky), with the averaged
parameters kept in the state as `ax`.

A port of PyTorch's single-tensor (foreach=False) update under no_grad. The step size `eta` and
averaging weight `mu` are 0-d state tensors; `capturable=True`, and any traced step, updates
them with tensor ops (no guard on the step count).
"""
from ember.frontend.dispatch import STATE
from ..creation import full, ones_like, zeros_like
from ..math_ops import maximum
from .optimizer import Optimizer, check_hyperparameter, scalar_step_tensor


class ASGD(Optimizer):
    """p <- p (1 - lambd eta) - eta g; ax <- ax + mu (p - ax) (ax = p while mu is 1);
    then eta = lr / (1 + lambd lr t)^alpha and mu = 1 / max(1, t - t0).
    weight_decay adds wd * p to g (L2); maximize ascends instead."""

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, foreach=None,
                 maximize=False, differentiable=False, capturable=False):
        check_hyperparameter(0.0 <= lr, f"Invalid learning rate: {lr}")
        check_hyperparameter(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(param, state, group):
        state["step"] = scalar_step_tensor()
        state["eta"] = full((), group["lr"], dtype=state["step"].dtype)
        state["mu"] = ones_like(state["step"])
        state["ax"] = zeros_like(param)

    @staticmethod
    def _update(param, state, group):
        lr, lambd, alpha, t0, weight_decay = group["lr"], group["lambd"], group["alpha"], group["t0"], \
            group["weight_decay"]
        grad = param.grad if not group["maximize"] else -param.grad
        mu, ax, eta, step_t = state["mu"], state["ax"], state["eta"], state["step"]
        step_t += 1
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        # while tracing, the tensor form keeps eta, mu and the step count out of Python (no guards)
        if group["capturable"] or STATE.recorder is not None:
            param.mul_(1 - lambd * eta)
            param.addcmul_(grad, eta, value=-1)
            ax.add_(param.sub(ax).mul_(mu))
            eta.copy_(lr / ((1 + lambd * lr * step_t) ** alpha))
            mu.copy_(1 / maximum(step_t - t0, ones_like(step_t)))
        else:
            eta_value = eta.item()
            param.mul_(1 - lambd * eta_value)
            param.add_(grad, alpha=-eta_value)
            if mu.item() != 1:
                ax.add_(param.sub(ax).mul_(mu))
            else:
                ax.copy_(param)
            step = step_t.item()
            eta.fill_(lr / ((1 + lambd * lr * step) ** alpha))
            mu.fill_(1 / max(1, step - t0))
