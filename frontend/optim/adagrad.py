"""`Adagrad`: per-coordinate learning rates from the running sum of squared gradients.

A port of PyTorch's single-tensor (foreach=False) update, written with Tensor in-place ops
under no_grad so a trace records it functionally.
"""
from ..creation import full_like
from ember.dtypes import float64
from ember.frontend.dispatch import STATE
from .optimizer import Optimizer, check_hyperparameter, scalar_step_tensor


class Adagrad(Optimizer):
    """sum <- sum + g^2; p <- p - clr * g / (sqrt(sum) + eps), clr = lr / (1 + (t - 1) * lr_decay).
    The state starts at construction, sum filled with initial_accumulator_value."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False):
        check_hyperparameter(0.0 <= lr, f"Invalid learning rate: {lr}")
        check_hyperparameter(0.0 <= lr_decay, f"Invalid lr_decay value: {lr_decay}")
        check_hyperparameter(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        check_hyperparameter(0.0 <= initial_accumulator_value,
                             f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        check_hyperparameter(0.0 <= eps, f"Invalid epsilon value: {eps}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for param in group["params"]:
                self._state_for(param, group)  # PyTorch's Adagrad makes its state up front

    @staticmethod
    def _init_state(param, state, group):
        state["step"] = scalar_step_tensor()
        state["sum"] = full_like(param, group["initial_accumulator_value"])

    @staticmethod
    def _update(param, state, group):
        lr, lr_decay, eps, weight_decay = group["lr"], group["lr_decay"], group["eps"], group["weight_decay"]
        step_t, state_sum = state["step"], state["sum"]
        step_t += 1
        grad = param.grad if not group["maximize"] else -param.grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        # without decay the rate is lr exactly; with decay, a traced step computes it from the step
        # tensor in float64 (as Python's float arithmetic eagerly), so it needs no guard on the step
        if lr_decay == 0:
            clr = lr
        elif STATE.recorder is not None:
            clr = lr / (1 + (step_t.to(float64) - 1) * lr_decay)
        else:
            clr = lr / (1 + (step_t.item() - 1) * lr_decay)
        state_sum.addcmul_(grad, grad, value=1)
        std = state_sum.sqrt().add_(eps)
        param.addcdiv_(grad, std, value=-clr)
