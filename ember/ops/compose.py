"""The small vocabulary VJP rules are written in: primitives applied through `bind`.

Nothing here touches numpy arrays, so a rule built from these runs unchanged on eager tensors
(eager autograd) and on IR values (the autodiff pass). Values only need `.shape` and `.dtype`.
"""
from .registry import PRIMITIVES


def _p(name):
    return PRIMITIVES[name]


def needs_grad(x):
    """Does this operand want a cotangent? Eager tensors say so; IR values always do (the
    autodiff pass prunes what nobody reads). Lets costly VJPs skip unwanted work."""
    return getattr(x, "requires_grad", True)


def scalar(value, like):
    """A 0-d constant with `like`'s dtype (broadcasts in elementwise ops)."""
    return _p("constant").bind(value=value, shape=(), dtype=like.dtype.name)


def zeros(shape, like):
    return _p("constant").bind(value=0, shape=tuple(shape), dtype=like.dtype.name)


def add(a, b):
    return _p("add").bind(a, b)


def sub(a, b):
    return _p("sub").bind(a, b)


def mul(a, b):
    return _p("mul").bind(a, b)


def div(a, b):
    return _p("div").bind(a, b)


def neg(a):
    return _p("neg").bind(a)


def where(cond, a, b):
    return _p("where").bind(cond, a, b)


def convert(x, dtype):
    return x if x.dtype is dtype else _p("convert").bind(x, dtype=dtype.name)


def mask_of(cond, like):
    """A comparison result as 0/1 values of `like`'s dtype."""
    return convert(cond, like.dtype)


def reshape(x, shape):
    shape = tuple(shape)
    return x if tuple(x.shape) == shape else _p("reshape").bind(x, shape=shape)


def permute(x, perm):
    perm = tuple(perm)
    return x if perm == tuple(range(len(perm))) else _p("permute").bind(x, perm=perm)


def swap_last(x):
    n = len(x.shape)
    return permute(x, tuple(range(n - 2)) + (n - 1, n - 2))


def broadcast_to(x, shape):
    shape = tuple(shape)
    return x if tuple(x.shape) == shape else _p("broadcast_to").bind(x, shape=shape)


def reduce_sum(x, axes, keepdims=False):
    axes = tuple(axes)
    if not axes:
        return x
    return _p("sum").bind(x, axes=axes, keepdims=keepdims)


def sum_to(g, shape):
    """Undo broadcasting: sum `g` down to `shape` (the VJP of broadcast_to)."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = len(g.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    out = reduce_sum(g, axes, keepdims=True)
    return reshape(out, shape)


def expand_reduced(g, in_shape, axes, keepdims):
    """Broadcast a reduction's result (or cotangent) back over the reduced axes."""
    if not keepdims:
        g = reshape(g, tuple(1 if i in axes else d for i, d in enumerate(in_shape)))
    return broadcast_to(g, in_shape)
