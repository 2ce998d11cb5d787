"""`Rprop`: resilient backpropagation, per-coordinate step sizes grown or shrunk by the sign
agreement of successive gradients; only the gradient's sign moves the parameter.

A port of PyTorch's single-tensor (foreach=False) update under no_grad, written with `where`
(PyTorch's capturable form) so eager and traced steps are the same ops and need no guard.
"""
from ..creation import full_like, zeros_like
from ..math_ops import where
from .optimizer import Optimizer, check_hyperparameter, scalar_step_tensor


class Rprop(Optimizer):
    """s = sign(g * g_prev): step sizes are multiplied by etaplus where s > 0, etaminus where
    s < 0 (and that coordinate's g is taken as 0), 1 where s = 0, then clamped to step_sizes;
    p <- p - sign(g) * step_size; g_prev <- g. maximize ascends instead."""

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, capturable=False, foreach=None,
                 maximize=False, differentiable=False):
        check_hyperparameter(0.0 <= lr, f"Invalid learning rate: {lr}")
        check_hyperparameter(0.0 < etas[0] < 1.0 < etas[1], f"Invalid eta values: {etas[0]}, {etas[1]}")
        defaults = dict(lr=lr, etas=etas, step_sizes=step_sizes, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, capturable=capturable)
        super().__init__(params, defaults)

    @staticmethod
    def _init_state(param, state, group):
        state["step"] = scalar_step_tensor()
        state["prev"] = zeros_like(param)
        state["step_size"] = full_like(param.grad, group["lr"])

    @staticmethod
    def _update(param, state, group):
        etaminus, etaplus = group["etas"]
        step_size_min, step_size_max = group["step_sizes"]
        grad = param.grad if not group["maximize"] else -param.grad
        prev, step_size = state["prev"], state["step_size"]
        state["step"] += 1  # not used by the formula; kept for PyTorch's state format
        sign = grad.mul(prev).sign()
        sign = where(sign.gt(0), etaplus, sign)
        sign = where(sign.lt(0), etaminus, sign)
        sign = where(sign.eq(0), 1, sign)
        step_size.mul_(sign).clamp_(step_size_min, step_size_max)
        grad = where(sign.eq(etaminus), 0, grad)  # after a sign change, skip this coordinate's step
        param.addcmul_(grad.sign(), step_size, value=-1)
        prev.copy_(grad)
