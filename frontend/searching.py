"""Searching sorted tensors: searchsorted, bucketize, isin, and unique_consecutive.

searchsorted binds the `searchsorted` primitive (ember/ops/special.py: PyTorch's binary search,
step for step, so nan and unsorted boundaries give PyTorch's answers; host-only when compiled).
unique_consecutive has a data-dependent size: it reads its input on the host (a guard while
tracing), as torch.unique does.
"""
import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from . import math_ops as M, shape_ops as S
from .math_ops import promote_operands, where
from .sorting import sort
from .tensor import Tensor, _dim, _observe
from .device_tensors import keeps_device

def binary_search(sequence, values, right=False):
    """PyTorch's binary search (the `searchsorted` primitive) of each value in the innermost
    dim of `sequence` (a 1-d sequence serves every value), in their promoted dtype. int64."""
    a, v = promote_operands((sequence, values))
    return P["searchsorted"].bind(a, v, right=bool(right))


def _shape_text(shape):
    return "[" + ", ".join(str(d) for d in shape) + "]"


def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None, sorter=None):
    """Indices where `input`'s values would be inserted into the innermost dim of
    sorted_sequence to keep it sorted: the first such place, or the last with right=True
    (side="right"). A 1-d sequence serves every value; otherwise the leading dims must match.
    `sorter` gives the order that sorts an unsorted sequence."""
    if side is not None:
        if side not in ("left", "right"):
            raise RuntimeError(f"torch.searchsorted(): side can only be 'left' or 'right' but got {side}")
        if right and side == "left":
            raise RuntimeError("torch.searchsorted(): side and right can't be set to opposites, got side of left while "
                               "right was True")
        right = side == "right"
    boundaries = sorted_sequence
    if boundaries.ndim == 0:
        raise RuntimeError("torch.searchsorted(): boundaries tensor should have positive dimension, but got 0 "
                           "dimension")
    scalar = not isinstance(input, Tensor)
    if scalar:
        if boundaries.ndim != 1:
            raise RuntimeError(f"torch.searchsorted(): input value can be a scalar only when boundaries tensor "
                               f"dimension is 1, but we got boundaries tensor dim({boundaries.ndim}) and input "
                               f"value's dim(0) numel(1)")
        input = M.constant(input, dtypes.scalar_dtype(input))
    elif boundaries.ndim != 1 and (input.ndim != boundaries.ndim or input.shape[:-1] != boundaries.shape[:-1]):
        raise RuntimeError(f"torch.searchsorted(): boundaries tensor should be 1 dimension or the first N-1 dimensions "
                           f"of boundaries tensor and input value tensor must match, but we got boundaries tensor "
                           f"{_shape_text(boundaries.shape)} and input value tensor {_shape_text(input.shape)}")
    for operand in (boundaries, input):
        if operand.dtype is dtypes.bool_:
            from .bitwise import kernel_refuses
            raise kernel_refuses("searchsorted_out_cpu", operand.dtype)
    if sorter is not None:
        if sorter.dtype is not dtypes.int64:
            from .linalg import scalar_type_name
            raise RuntimeError(f"torch.searchsorted(): sorter must be a tensor of long dtype but got dtype "
                               f"{scalar_type_name(sorter.dtype)}")
        if tuple(sorter.shape) != tuple(boundaries.shape):
            raise RuntimeError(f"torch.searchsorted(): boundary and sorter must have the same size, but got boundary "
                               f"tensor {_shape_text(boundaries.shape)}and got sorter tensor "
                               f"{_shape_text(sorter.shape)}")
        order = sorter._data
        _observe(sorter, "searchsorted() sorter range check")
        if order.size and (order.min() < 0 or order.max() >= boundaries.shape[-1]):
            raise RuntimeError("torch.searchsorted(): sorter index out of range")
        boundaries = S.gather(boundaries, -1, sorter)
    out = binary_search(boundaries.detach(), input.detach(), right=right)
    return M.to_dtype(out, dtypes.int32) if out_int32 else out


def bucketize(input, boundaries, *, out_int32=False, right=False):
    """The bucket of each value among the 1-d sorted boundaries: searchsorted(boundaries, input)."""
    if boundaries.ndim != 1:
        raise RuntimeError(f"boundaries tensor must be 1 dimension, but got dim({boundaries.ndim})")
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


def isin(elements, test_elements, *, assume_unique=False, invert=False):
    """Whether each element of `elements` is in `test_elements` (nan is in nothing); a bool
    tensor of elements' shape. By sorting the test elements and a binary search of each element."""
    if not isinstance(elements, Tensor) and not isinstance(test_elements, Tensor):
        raise TypeError("isin(): at least one of elements and test_elements must be a Tensor")
    elements, test_elements = promote_operands((elements, test_elements))
    found = Tensor._wrap(np.zeros(elements.shape, bool))
    tests = S.reshape(test_elements.detach(), (-1,))
    if tests.shape[0]:
        ordered = sort(tests, 0).values
        # nan sorts last; searched as +inf so that the search stays monotone (it matches nothing)
        searchable = where(M.isnan(ordered), float("inf"), ordered) if ordered.is_floating_point() else ordered
        position = M.clamp_max(binary_search(searchable, elements.detach()), tests.shape[0] - 1)
        candidate = S.reshape(S.index_select(ordered, 0, S.reshape(position, (-1,))), tuple(elements.shape))
        found = M.eq(candidate, elements.detach())
    return M.logical_not(found) if invert else found


@keeps_device
def unique_consecutive(input, return_inverse=False, return_counts=False, dim=None):
    """The first of each run of equal consecutive elements (slices along dim); optionally the
    run each element belongs to and the length of each run. Forward only (no gradient)."""
    _observe(input, "unique_consecutive()")
    data = input._data
    if dim is None:
        flat = data.reshape(-1)
        starts = np.ones(flat.shape, bool)
        starts[1:] = flat[1:] != flat[:-1]
        values = flat[starts]
        inverse = (np.cumsum(starts) - 1).reshape(data.shape)
        size = flat.shape[0]
    else:
        axis = _dim(dim, data.ndim, "unique_consecutive")
        moved = np.moveaxis(data, axis, 0)
        size = moved.shape[0]
        starts = np.ones(size, bool)
        if size > 1:
            starts[1:] = (moved[1:] != moved[:-1]).reshape(size - 1, -1).any(axis=1)
        values = np.moveaxis(moved[starts], 0, axis)
        inverse = np.cumsum(starts) - 1
    counts = np.diff(np.append(np.flatnonzero(starts), size))
    out = [Tensor._wrap(np.ascontiguousarray(values))]
    if return_inverse:
        out.append(Tensor._wrap(inverse.astype(np.int64)))
    if return_counts:
        out.append(Tensor._wrap(counts.astype(np.int64)))
    return out[0] if len(out) == 1 else tuple(out)


# name -> function (the Tensor methods torch has of these)
TENSOR_METHODS = {"unique_consecutive": unique_consecutive}
