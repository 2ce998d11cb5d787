"""Index and product constructions: cartesian_prod, combinations, tril_indices, triu_indices and
vander. The index patterns depend only on shapes (computed once, in numpy); the values are read
with index_select, expand and cumprod, so gradients flow and ember.compile traces them.
"""
import itertools

import numpy as np

from ember import dtypes
from . import math_ops as M, reductions as R, shape_ops as S
from .tensor import Tensor
from .device_tensors import keeps_device


def _shape_text(shape):
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _require_vector(t):
    if t.ndim != 1:
        raise RuntimeError(f"Expect a 1D vector, but got shape {_shape_text(t.shape)}")


def cartesian_prod(*tensors):
    """Every combination of one element from each 1-d tensor, as rows (itertools.product's
    order); a single tensor is returned as it is."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if not tensors:
        raise RuntimeError("meshgrid expects a non-empty TensorList")
    for t in tensors:
        _require_vector(t)
    if len(tensors) == 1:
        return tensors[0]
    if any(t.dtype is not tensors[0].dtype for t in tensors):
        raise RuntimeError("meshgrid expects all tensors to have the same dtype")
    sizes = tuple(t.shape[0] for t in tensors)
    total = int(np.prod(sizes))
    columns = []
    for axis, t in enumerate(tensors):
        shape = tuple(size if i == axis else 1 for i, size in enumerate(sizes))
        columns.append(S.reshape(S.expand(S.reshape(t, shape), sizes), (total,)))
    return S.stack(columns, dim=1)


@keeps_device
def combinations(input, r=2, with_replacement=False):
    """The length-r combinations of a 1-d tensor's elements, as rows (itertools.combinations'
    order, or combinations_with_replacement's)."""
    _require_vector(input)
    if r < 0:
        raise RuntimeError(f"Expect a non-negative number, but got {r}")
    if r == 0:
        return Tensor._wrap(np.empty((0,), input._data.dtype))
    choose = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    rows = np.array(list(choose(range(input.shape[0]), r)), np.int64).reshape(-1, r)
    picked = S.index_select(input, 0, Tensor._wrap(rows.reshape(-1)))
    return S.reshape(picked, rows.shape)


def _triangle_indices(name, row, col, offset, dtype, lower):
    for what, size in (("row", row), ("col", col)):
        if size < 0:
            raise RuntimeError(f"{what} must be non-negative, got{size}")
    dtype = dtypes.as_dtype(dtype) if dtype is not None else dtypes.int64
    if dtype.category != 1:
        from .bitwise import kernel_refuses
        raise kernel_refuses(name, dtype)
    rows, cols = np.tril_indices(row, offset, col) if lower else np.triu_indices(row, offset, col)
    return Tensor._wrap(np.stack([rows, cols]).astype(dtype.np).reshape(2, -1))


def tril_indices(row, col, offset=0, *, dtype=None, device=None, layout=None):
    """The (row, column) indices of the lower triangle of a row x col matrix (j - i <= offset),
    row by row, as a 2 x N tensor."""
    return _triangle_indices("tril_indices", row, col, offset, dtype, lower=True)


def triu_indices(row, col, offset=0, *, dtype=None, device=None, layout=None):
    """The (row, column) indices of the upper triangle of a row x col matrix (j - i >= offset),
    row by row, as a 2 x N tensor."""
    return _triangle_indices("triu_indices", row, col, offset, dtype, lower=False)


def vander(x, N=None, increasing=False):
    """The Vandermonde matrix: columns x^(N-1), ..., x^1, x^0 (the reverse with increasing),
    the powers by cumprod as PyTorch's; integer and bool inputs give int64."""
    if x.ndim != 1:
        raise RuntimeError("x must be a one-dimensional tensor.")
    n = x.shape[0] if N is None else N
    if n < 0:
        raise RuntimeError("N must be non-negative.")
    dtype = dtypes.promote(x.dtype, dtypes.int64)
    x = M.to_dtype(x, dtype)
    ones = Tensor._wrap(np.ones((x.shape[0], min(n, 1)), dtype.np))
    if n > 1:
        powers = R.cumprod(S.expand(S.unsqueeze(x, 1), (x.shape[0], n - 1)), 1)
        result = S.cat([ones, powers], dim=1)
    else:
        result = ones
    return result if increasing else S.flip(result, (1,))
