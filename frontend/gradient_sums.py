"""Eager backward's sums of gradients, in place where the engine made the array (autograd._propagate).

A node's pending gradient is the sum of what its consumers' VJPs gave. The engine used to
allocate a new array per sum, and a slice's VJP pads its gradient to the full shape first:
the three slices of a fused q/k/v projection cost three padded arrays and two sums per layer.
Here a pending gradient the engine itself allocated (a sum, or a slice's padded gradient)
takes the next contribution in place, and a slice's gradient is added straight into its
input's pending gradient. The bits are those of padding and summing (PyTorch's), -0.0
included. Traces and create_graph keep the functional sums (a tracer must see them).
"""
import numpy as np

from ember.ops import PRIMITIVES

SLICE = PRIMITIVES["slice"]


def accumulate_owned(table, key, value, owned, slice_node=None):
    """Add `value` to the pending gradient table[key] (autograd._accumulate in eager backward):
    in place into an array this backward made (a sum, or the padded gradient of `slice_node`, a
    slice). `owned` maps a node's id to [its pending gradient, the first slice's attrs or None]."""
    prior = table.get(key)
    if prior is None:
        table[key] = value
        if slice_node is not None:
            owned[key] = [value, slice_node.attrs]
    elif key in owned and owned[key][0] is prior and _writable_sum(prior) and \
            prior._data.shape == value._data.shape and prior._data.dtype == value._data.dtype and \
            type(value._data) is np.ndarray:
        np.add(prior._data, value._data, out=prior._data)
        owned[key][1] = None
    else:
        table[key] = prior + value
        owned[key] = [table[key], None]


def _writable_sum(tensor):
    """A whole array of its own (a zero gradient may be a read-only broadcast constant)."""
    data = tensor._data
    return type(data) is np.ndarray and data.flags.writeable and data.flags.c_contiguous


def _region(attrs):
    return tuple(slice(lo, hi, st) for lo, hi, st in zip(attrs["starts"], attrs["stops"], attrs["steps"]))


def _disjoint(first, second):
    """Do two slices (attrs) select no common element (some dim's index sets are disjoint)?"""
    for lo1, hi1, st1, lo2, hi2, st2 in zip(first["starts"], first["stops"], first["steps"],
                                            second["starts"], second["stops"], second["steps"]):
        if min(hi1, hi2) <= max(lo1, lo2) or (st1 == st2 and (lo1 - lo2) % st1):
            return True
    return False


def add_into_slice(node, g, node_grads, owned):
    """A slice node's gradient added straight into its input's pending gradient, when that is
    an array this backward made: the padded array the slice's VJP would build is never made.
    False (the VJP runs) otherwise. The bits are those of padding and summing: the first
    slice's region gets the +0.0 the second's padding would have added (-0.0 becomes 0.0);
    a second slice overlapping the first takes the VJP (then -0.0 + -0.0 stays -0.0)."""
    (_, fn, requires_grad, _), = node.saved
    if fn is None or not requires_grad:
        return False
    prior = node_grads.get(id(fn))
    entry = owned.get(id(fn))
    if prior is None or entry is None or entry[0] is not prior or not _writable_sum(prior) \
            or prior._data.dtype != g._data.dtype or type(g._data) is not np.ndarray:
        return False
    first = entry[1]
    if first is not None and not _disjoint(first, node.attrs):
        return False
    region = prior._data[_region(node.attrs)]
    if region.shape != g._data.shape:
        return False
    if first is not None:
        first_region = prior._data[_region(first)]
        np.add(first_region, 0.0, out=first_region)
        entry[1] = None
    np.add(region, g._data, out=region)
    return True
