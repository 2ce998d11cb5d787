"""`RMSprop`: gradient scaled by a running root-mean-square, optionally centered and with momentum.

A port of PyTorch's single-tensor (foreach=False) update, written with Tensor in-place ops
under no_grad so a trace records it functionally.
"""
from ..creation import zeros_like
from .optimizer import Optimizer, check_hyperparameter, scalar_step_tensor


class RMSprop(Optimizer):
    """v <- alpha v + (1 - alpha) g^2; avg = sqrt(v) + eps (centered: sqrt(v - gbar^2) + eps with
    gbar <- alpha gbar + (1 - alpha) g); then p <- p - lr g / avg, or with momentum
    buf <- momentum buf + g / avg and p <- p - lr buf."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False):
        check_hyperparameter(0.0 <= lr, f"Invalid learning rate: {lr}")
        check_hyperparameter(0.0 <= eps, f"Invalid epsilon value: {eps}")
        check_hyperparameter(0.0 <= momentum, f"Invalid momentum value: {momentum}")
        check_hyperparameter(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        check_hyperparameter(0.0 <= alpha, f"Invalid alpha value: {alpha}")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach, maximize=maximize)
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(param, state, group):
        state["step"] = scalar_step_tensor()
        state["square_avg"] = zeros_like(param)
        if group["momentum"] > 0:
            state["momentum_buffer"] = zeros_like(param)
        if group["centered"]:
            state["grad_avg"] = zeros_like(param)

    @staticmethod
    def _update(param, state, group):
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        grad = param.grad if not group["maximize"] else -param.grad
        square_avg = state["square_avg"]
        state["step"] += 1  # not used by the formula; kept for PyTorch's state format
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, 1 - alpha)
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            avg = square_avg.sqrt()
        avg = avg.add_(eps)
        if momentum > 0:
            buf = state["momentum_buffer"]
            buf.mul_(momentum).addcdiv_(grad, avg)
            param.add_(buf, alpha=-lr)
        else:
            param.addcdiv_(grad, avg, value=-lr)
