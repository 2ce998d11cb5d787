"""Nested results (tuples, lists, dicts, named tuples) holding tensors: flattening them with a
readable path per tensor, and templates that keep a traced function's return structure without
its tensors (the compiled call rebuilds its result from one). Used by the tracer and ember.compile.
"""
from .tensor import Tensor


def flatten_tensors(value, path="out"):
    """Tensors inside nested tuples/lists/dicts, with a readable path for each."""
    if isinstance(value, Tensor):
        return [(path, value)]
    if isinstance(value, (tuple, list)):
        return [item for i, v in enumerate(value) for item in flatten_tensors(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in flatten_tensors(v, f"{path}[{k!r}]")]
    return []


class TensorSlot:
    """Stands for a returned tensor in a result template (the template keeps no trace data)."""

    def __repr__(self):
        return "<tensor>"


TENSOR_SLOT = TensorSlot()


def template_of(value):
    """The traced function's return value with every tensor replaced by TENSOR_SLOT."""
    return rebuild(value, iter(lambda: TENSOR_SLOT, None))


def rebuild(value, replacements):
    """`value` with each tensor (or TENSOR_SLOT) replaced by the next item of `replacements`."""
    if isinstance(value, Tensor) or value is TENSOR_SLOT:
        return next(replacements)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(rebuild(v, replacements) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(rebuild(v, replacements) for v in value)
    if isinstance(value, dict):
        return type(value)((k, rebuild(v, replacements)) for k, v in value.items())
    return value
