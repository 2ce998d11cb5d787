"""`SGD`: stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.

A port of PyTorch's single-tensor (foreach=False) update; the step runs under no_grad with
Tensor in-place ops, so a trace records it as a functional update of params and buffers.
"""
from .array_updates import sgd_step
from .optimizer import Optimizer, check_hyperparameter


class SGD(Optimizer):
    """p <- p - lr * g, where g is the (weight-decayed, momentum-averaged) gradient.

    With momentum m and dampening d: buf <- m * buf + (1 - d) * g (buf starts as the first g);
    Nesterov uses g + m * buf, plain momentum uses buf. maximize ascends instead.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None):
        check_hyperparameter(lr >= 0.0, f"Invalid learning rate: {lr}")
        check_hyperparameter(momentum >= 0.0, f"Invalid momentum value: {momentum}")
        check_hyperparameter(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
        check_hyperparameter(not nesterov or (momentum > 0 and dampening == 0),
                             "Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults)

    def _state_for(self, param, group):
        # torch keeps no state for a parameter until there is a momentum buffer (made in _update)
        return self.state[param] if group["momentum"] != 0 else {}

    @staticmethod
    def _update(param, state, group):
        if sgd_step(param, state, group):  # (eager, plain arrays: the same ops on numpy directly)
            return
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        weight_decay, nesterov = group["weight_decay"], group["nesterov"]
        grad = param.grad if not group["maximize"] else -param.grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = grad.clone().detach()
                state["momentum_buffer"] = buf
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        param.add_(grad, alpha=-lr)
