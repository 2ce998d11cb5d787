"""Primitives that only steer gradients: `stop_gradient`, `overwrite` and `replace_value`.

All are identities on values (the last argument's). They exist so that a traced (functional) graph differentiates
exactly as eager autograd did: `stop_gradient` marks where eager autograd recorded nothing
(`detach()`, `.data`, ops under `no_grad` on tensors that require grad); `overwrite(old, new)`
is a tensor given a new value without autograd seeing it (an in-place op under `no_grad` on a
tensor that requires grad: its gradient still flows to its history, as eagerly);
`replace_value(old, new)` is `copy_` as PyTorch differentiates it (the old value gets a zero
gradient, so backward still runs, and version-checks, its history). The simplify pass removes
all three once autodiff has run; their lowering rules (the identity) keep a graph that still
holds one compilable anyway.
"""
import numpy as np

from .compose import needs_grad, zeros
from .registry import OpError, Spec, describe, register


def _identity_rule(x):
    return Spec(x.shape, x.dtype)


def _copy(x):
    return np.array(x, copy=True)


register("stop_gradient", "elementwise", _copy, _identity_rule,  # no VJP: nothing flows through
         lowering=lambda s, x: x)


def _overwrite_rule(old, new, name="overwrite"):
    if tuple(old.shape) != tuple(new.shape) or old.dtype is not new.dtype:
        raise OpError(name, f"new value {describe(new)} must match {describe(old)}")
    return Spec(old.shape, old.dtype)


register("overwrite", "elementwise", lambda old, new: np.array(new, copy=True), _overwrite_rule,
         lambda g, out, old, new: (g, None), lowering=lambda s, old, new: new)


register("replace_value", "elementwise", lambda old, new: np.array(new, copy=True),
         lambda old, new: _overwrite_rule(old, new, "replace_value"),
         lambda g, out, old, new: (zeros(g.shape, g) if needs_grad(old) else None, g),
         lowering=lambda s, old, new: new)
