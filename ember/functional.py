"""`ember.functional`: the functions PyTorch exposes as `torch.functional` (and at top level)."""
import numpy as np

from ember.frontend.array_more import at_least
from ember.frontend.linalg import einsum
from ember.frontend.reductions import norm
from ember.frontend.shape_ops import broadcast_tensors, split, reshape
from ember.frontend.sorting import unique
from ember.frontend.tensor import Tensor, Size


def broadcast_shapes(*shapes):
    return Size(np.broadcast_shapes(*[tuple(s) if not isinstance(s, int) else (s,) for s in shapes]))


def meshgrid(*tensors, indexing="ij"):
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    sizes = [t.numel() for t in tensors]
    if indexing == "xy" and len(tensors) >= 2:
        sizes[0], sizes[1] = sizes[1], sizes[0]
    grids = []
    for i, t in enumerate(tensors):
        axis = i
        if indexing == "xy" and len(tensors) >= 2 and i < 2:
            axis = 1 - i
        shape = [1] * len(tensors)
        shape[axis] = t.numel()
        grids.append(reshape(t, tuple(shape)).expand(*sizes))
    return tuple(grids)


def tensordot(a, b, dims=2):
    """Contract the last `dims` dims of a with the first of b (or explicit dim lists)."""
    if isinstance(dims, int):
        dims_a, dims_b = list(range(a.ndim - dims, a.ndim)), list(range(dims))
    else:
        dims_a, dims_b = [list(d) if isinstance(d, (list, tuple)) else [d] for d in dims]
    letters = "abcdefghijklmnopqrstuvwxyz"
    sub_a = list(letters[:a.ndim])
    sub_b = list(letters[a.ndim:a.ndim + b.ndim])
    for da, db in zip(dims_a, dims_b):
        sub_b[db] = sub_a[da]
    out = [c for i, c in enumerate(sub_a) if i not in [d % a.ndim for d in dims_a]]
    out += [c for i, c in enumerate(sub_b) if i not in [d % b.ndim for d in dims_b]]
    return einsum(f"{''.join(sub_a)},{''.join(sub_b)}->{''.join(out)}", a, b)


def atleast_1d(*tensors):
    """Each tensor with at least one dim: () -> (1,); one tensor in, one out; several, or a list
    or tuple of them, give a tuple."""
    return at_least("atleast_1d", tensors, lambda t: t if t.ndim >= 1 else reshape(t, (1,)))


def atleast_2d(*tensors):
    """Each tensor with at least two dims: () -> (1, 1), (n,) -> (1, n) (see atleast_1d)."""
    return at_least("atleast_2d", tensors,
                    lambda t: t if t.ndim >= 2 else reshape(t, (1,) * (2 - t.ndim) + tuple(t.shape)))


__all__ = ["broadcast_shapes", "broadcast_tensors", "einsum", "meshgrid", "norm", "split", "tensordot",
           "unique", "atleast_1d", "atleast_2d", "Tensor"]
