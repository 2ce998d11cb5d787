"""Primitives that only steer gradients: `stop_gradient` and `overwrite`.

Both are identities on values. They exist so that a traced (functional) graph differentiates
exactly as eager autograd did: `stop_gradient` marks where eager autograd recorded nothing
(`detach()`, `.data`, ops under `no_grad` on tensors that require grad); `overwrite(old, new)`
is a tensor given a new value without autograd seeing it (an in-place op under `no_grad` on a
tensor that requires grad: its gradient still flows to its history, as eagerly). The simplify
pass removes both once autodiff has run, so no target ever lowers them.
"""
import numpy as np

from .registry import OpError, Spec, describe, register


def _identity_rule(x):
    return Spec(x.shape, x.dtype)


def _copy(x):
    return np.array(x, copy=True)


register("stop_gradient", "elementwise", _copy, _identity_rule)  # no VJP: nothing flows through


def _overwrite_rule(old, new):
    if tuple(old.shape) != tuple(new.shape) or old.dtype is not new.dtype:
        raise OpError("overwrite", f"new value {describe(new)} must match {describe(old)}")
    return Spec(old.shape, old.dtype)


register("overwrite", "elementwise", lambda old, new: np.array(new, copy=True), _overwrite_rule,
         lambda g, out, old, new: (g, None))
