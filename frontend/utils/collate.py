"""Batch assembly for the DataLoader: `default_collate` (a list of samples -> one batch) and
`default_convert` (one sample -> tensors, for `batch_size=None`).

Follows torch.utils.data's rules: tensors and numpy arrays stack along a new dim 0, Python
floats become float64 and ints int64 tensors, strings stay a list, and containers (tuples,
lists, dicts, namedtuples) are collated per field.
"""
import collections.abc
import numbers

import numpy as np

from ember import dtypes
from ..tensor import Tensor

COLLATE_ERROR = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"


def _stack_tensors(batch):
    """Stack same-shaped tensors along a new dim 0. A batch of constants (the usual case in data
    loading) is stacked in numpy; a tensor that needs gradients goes through `ember.stack`."""
    first = tuple(batch[0].shape)
    for position, item in enumerate(batch):
        if tuple(item.shape) != first:
            raise RuntimeError(f"default_collate: stack expects each tensor to be equal size, but got "
                               f"{list(first)} at entry 0 and {list(item.shape)} at entry {position}")
    if any(item.requires_grad or item._node is not None for item in batch):
        from ..shape_ops import stack
        return stack(batch, 0)
    result_dtype = batch[0].dtype
    for item in batch[1:]:
        result_dtype = dtypes.promote(result_dtype, item.dtype)
    return Tensor._wrap(np.stack([item._data for item in batch]).astype(result_dtype.np, copy=False))


def _is_string_array(array):
    return array.dtype.kind in "USO"


def _is_namedtuple(value):
    return isinstance(value, tuple) and hasattr(value, "_fields")


def default_collate(batch):
    """Merge a list of samples into a batch; see the module docstring for the rules."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack_tensors(batch)
    if isinstance(elem, np.ndarray) or isinstance(elem, np.generic) and not isinstance(elem, (np.str_, np.bytes_)):
        if _is_string_array(np.asarray(elem)):
            raise TypeError(COLLATE_ERROR.format(np.asarray(elem).dtype))
        return _stack_tensors([Tensor._wrap(np.asarray(item)) for item in batch])
    if isinstance(elem, bool):
        return Tensor._wrap(np.array(batch, dtype=np.bool_))
    if isinstance(elem, numbers.Integral):
        return Tensor._wrap(np.array(batch, dtype=np.int64))
    if isinstance(elem, float):
        return Tensor._wrap(np.array(batch, dtype=np.float64))
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        collated = {key: default_collate([sample[key] for sample in batch]) for key in elem}
        try:
            return type(elem)(collated)
        except TypeError:
            return collated  # a mapping type that can't be built from a dict
    if _is_namedtuple(elem):
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(sample) != size for sample in batch):
            raise RuntimeError("default_collate: each element in list of batch should be of equal size")
        transposed = [default_collate(list(field)) for field in zip(*batch)]
        if isinstance(elem, tuple):
            return transposed  # torch returns tuples as lists
        try:
            return type(elem)(transposed)
        except TypeError:
            return transposed
    raise TypeError(COLLATE_ERROR.format(type(elem)))


def default_convert(data):
    """Turn numpy arrays (and arrays inside containers) into tensors, leaving everything else;
    used instead of collation when the DataLoader has `batch_size=None`."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, (np.ndarray, np.generic)) and not _is_string_array(np.asarray(data)):
        return Tensor._wrap(np.asarray(data))
    if isinstance(data, collections.abc.Mapping):
        converted = {key: default_convert(value) for key, value in data.items()}
        try:
            return type(data)(converted)
        except TypeError:
            return converted
    if _is_namedtuple(data):
        return type(data)(*(default_convert(field) for field in data))
    if isinstance(data, tuple):
        return [default_convert(field) for field in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        converted = [default_convert(field) for field in data]
        try:
            return type(data)(converted)
        except TypeError:
            return converted
    return data
