"""Sorting and selection: sort, argsort, topk, unique. Indices come from the `argsort`
primitive; values are gathered with them, so gradients flow to the selected elements.
"""
from collections import namedtuple

import numpy as np

from ember.ops import PRIMITIVES as P
from .shape_ops import gather, _slice_axis
from .tensor import Tensor, _dim, _observe
from .device_tensors import keeps_device, like

values_indices = namedtuple("values_indices", "values indices")


def argsort(input, dim=-1, descending=False, stable=False):
    if input.ndim == 0:
        return Tensor._wrap(like(np.zeros((), np.int64), input._data))
    return P["argsort"].bind(input, axis=_dim(dim, input.ndim, "argsort"), descending=bool(descending))


def sort(input, dim=-1, descending=False, stable=False):
    if input.ndim == 0:
        return values_indices(input, Tensor._wrap(like(np.zeros((), np.int64), input._data)))
    indices = argsort(input, dim, descending)
    return values_indices(gather(input, dim, indices), indices)


def msort(input):
    return sort(input, 0).values


def topk(input, k, dim=-1, largest=True, sorted=True):
    dim = _dim(dim, input.ndim, "topk")
    if not 0 <= k <= input.shape[dim]:
        raise RuntimeError(f"topk: selected index k={k} out of range for dim {dim} of size {input.shape[dim]}")
    order = argsort(input, dim, descending=largest)
    indices = _slice_axis(order, dim, 0, k)
    return values_indices(gather(input, dim, indices), indices)


def kthvalue(input, k, dim=-1, keepdim=False):
    dim = _dim(dim, input.ndim, "kthvalue")
    order = argsort(input, dim)
    indices = _slice_axis(order, dim, k - 1, k)
    values = gather(input, dim, indices)
    if not keepdim:
        from .shape_ops import squeeze
        values, indices = squeeze(values, dim), squeeze(indices, dim)
    return values_indices(values, indices)


@keeps_device
def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """Forward only: the distinct values depend on the data (a guard while tracing)."""
    _observe(input, "unique()")
    if dim is not None:
        values, inverse, counts = np.unique(input._data, return_inverse=True, return_counts=True, axis=dim)
    else:
        # (each NaN its own value, as PyTorch's sorted unique)
        values, inverse, counts = np.unique(input._data, return_inverse=True, return_counts=True, equal_nan=False)
        inverse = inverse.reshape(input.shape)
    out = [Tensor._wrap(values)]
    if return_inverse:
        out.append(Tensor._wrap(inverse.astype(np.int64)))
    if return_counts:
        out.append(Tensor._wrap(counts.astype(np.int64)))
    return out[0] if len(out) == 1 else tuple(out)
