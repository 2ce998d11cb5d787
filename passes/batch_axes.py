"""Which axis of every value carries the batch, and a proof that batch rows never mix: the
analysis behind a dynamic batch in `ember.export_library` (it runs on traced graphs, beside
the pass pipeline, and changes nothing).

The same model is traced at two batch sizes. `batch_axes(big, small)` first checks that the
two graphs are one program with the batch substituted (same nodes, operands and attributes,
shapes differing only in one axis, from the big batch to the small one); the axis that
changed is the node's batch axis (None where no axis did). Then every node is checked with
its op's rule (`RULES`): row b of its result depends only on row b of its batch operands
(elementwise ops, reductions over other axes, matmul rows, convolution over the batch, ...).
A program that passes can run a batch of any size as chunks of the traced sizes, each row
computed exactly as in one big call. Anything else raises BatchDependence naming the op,
the node and its model line: a reduction or concat over the batch, a shape that depends on
the batch in another way, an op without a rule.
"""
import math


class BatchDependence(ValueError):
    """Rows of the batch mix (or might mix) somewhere in the program."""


def batch_axes(big, small, sizes):
    """{node id: batch axis or None} for graph `big` (traced at batch sizes[0]), after checking
    that `small` (traced at sizes[1]) is the same program with the batch changed and that rows
    never mix."""
    axes = {}
    compare_programs(big, small, axes, sizes)
    for node in big.nodes():
        if node.op in ("input", "param", "constant"):
            if node.op == "input" and axes[node.id] != 0:
                raise BatchDependence(f"input {node.name or node.id} {list(node.shape)}: its first dim must be "
                                      f"the batch (every input of a dynamic-batch export is batched along dim 0)")
            continue
        operands = [axes[i] for i in node.inputs]
        if all(a is None for a in operands):
            if axes[node.id] is None:
                continue  # computed from params and constants alone: the same for every row
            if node.op != "broadcast_to":  # (spreading one value over every row is fine)
                raise BatchDependence(f"{_where(node)}: it makes a batch-sized value from values without a batch "
                                      f"(row b would be picked by its position, e.g. table[:x.shape[0]])")
            continue
        rule = RULES.get(node.op)
        problem = "ember has no batch rule for this op" if rule is None else \
            rule(big, node, [big.node(i) for i in node.inputs], operands, axes[node.id])
        if problem:
            raise BatchDependence(f"{_where(node)}: {problem}")
    return axes


def compare_programs(big, small, axes, sizes):
    """Fill `axes` from the shapes of the two traces (at batch sizes `sizes`); BatchDependence
    where they are not one program with the batch changed."""
    big_ids, small_ids = [n.id for n in big.nodes()], [n.id for n in small.nodes()]
    if sorted(big_ids) != sorted(small_ids) or big.outputs != small.outputs or big.inputs != small.inputs:
        raise BatchDependence(f"{big.name}: the traced program changes with the batch size ({len(big_ids)} nodes at "
                              f"one size, {len(small_ids)} at another): the model's Python code depends on the batch")
    for node in big.nodes():
        other = small.node(node.id)
        if node.op != other.op or list(node.inputs) != list(other.inputs) or node.dtype != other.dtype:
            raise BatchDependence(f"{_where(node)}: the traced program changes with the batch size "
                                  f"({other.op} at the smaller batch)")
        changed = [k for k, (a, b) in enumerate(zip(node.shape, other.shape)) if a != b]
        if len(node.shape) != len(other.shape) or len(changed) > 1:
            raise BatchDependence(f"{_where(node)}: shape {list(node.shape)} becomes {list(other.shape)} at a smaller "
                                  f"batch; a dynamic batch needs one batch axis per value")
        if changed and (node.shape[changed[0]], other.shape[changed[0]]) != tuple(sizes):
            raise BatchDependence(f"{_where(node)}: shape {list(node.shape)} at batch {sizes[0]} becomes "
                                  f"{list(other.shape)} at batch {sizes[1]}: a dim changes with the batch without "
                                  f"being the batch")
        axes[node.id] = changed[0] if changed else None
        _compare_attrs(node, other, axes[node.id])


def _compare_attrs(node, other, axis):
    for name in set(node.attrs) | set(other.attrs):
        a, b = node.attrs.get(name), other.attrs.get(name)
        if _same(a, b):
            continue
        if axis is not None and (node.op, name) in _SIZE_ATTRS and len(a) == len(b) == len(node.shape) \
                and [k for k in range(len(a)) if a[k] != b[k]] == [axis] \
                and (a[axis], b[axis]) == (node.shape[axis], other.shape[axis]):
            continue
        if axis is not None and node.op in ("slice", "slice_update") and name == "stops" and len(a) == len(b) \
                and [k for k in range(len(a)) if a[k] != b[k]] == [axis]:
            continue  # the batch axis taken whole: the slice rules check it against the operand
        if node.op == "constant" and name == "value" and _uniform(a) is not None and _uniform(b) is not None \
                and _same(_uniform(a), _uniform(b)):
            continue  # the same fill at both sizes (torch.zeros(x.shape[0], 6))
        raise BatchDependence(f"{_where(node)}: its {name} depends on the batch size ({_short(a)} at one size, "
                              f"{_short(b)} at another)")


_SIZE_ATTRS = {("reshape", "shape"), ("broadcast_to", "shape"), ("random", "shape"), ("constant", "shape"),
               ("conv2d_grad_input", "input_shape")}


def _uniform(value):
    """The one value every element of `value` has (as a 1-element array: NaN compares equal
    through _same), or None."""
    import numpy as np
    flat = np.asarray(value).reshape(-1)
    return flat[:1] if flat.size and _same(flat, np.broadcast_to(flat[:1], flat.shape)) else None


def _short(value):
    import numpy as np
    return np.array2string(np.asarray(value), threshold=6, edgeitems=2).replace("\n", "") \
        if hasattr(value, "shape") else repr(value)


def _same(a, b):
    """Equal values (NaN equal to NaN: a clamp's or an ELU's NaN-propagating constants)."""
    import numpy as np
    if hasattr(a, "shape") or hasattr(b, "shape") or isinstance(a, float) or isinstance(b, float):
        try:
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
                return False
            return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
        except (TypeError, ValueError):
            return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _where(node):
    source = f" at {node.source}" if getattr(node, "source", "") else ""
    return f"{node.op} (%{node.id} {node.name}){source}"


# ----------------------------------------------------------------------------- the rules
# Each rule gets (graph, node, operand nodes, operand batch axes, the node's batch axis) and
# returns None when rows stay apart, else what mixes them.

def _elementwise(graph, node, operands, axes, out):
    for operand, axis in zip(operands, axes):
        if axis is not None and axis + len(node.shape) - len(operand.shape) != out:
            return "its operands carry the batch on different axes"
    return None


def _reduce(graph, node, operands, axes, out):
    axis = axes[0]
    if axis is None:
        return None
    reduced = node.attrs.get("axes")
    if reduced is None:
        reduced = None if node.attrs.get("axis") is None else (node.attrs["axis"],)
    ndim = len(operands[0].shape)
    if reduced is None or axis in [r % ndim for r in reduced]:
        return "it reduces over the batch (rows mix)"
    return None


def _along_axis(graph, node, operands, axes, out):
    """cumsum, argsort, flip, concat: fine unless they run along the batch axis."""
    along = node.attrs.get("axes", node.attrs.get("axis"))
    along = along if isinstance(along, (tuple, list)) else (along,)
    ndim = len(node.shape)
    if out is not None and out in [a % ndim for a in along]:
        return "it runs along the batch axis (rows mix)"
    if any(a is not None and a != out for a in axes):
        return "its operands carry the batch on different axes"
    return None


def _reshape(graph, node, operands, axes, out):
    axis, before, after = axes[0], operands[0].shape, node.shape
    if axis is None:
        return None
    if out is None or math.prod(before[:axis]) != math.prod(after[:out]) or before[axis] != after[out]:
        return f"it folds the batch axis of {list(before)} into other dims ({list(after)})"
    return None


def _permute(graph, node, operands, axes, out):
    axis = axes[0]
    if axis is not None and list(node.attrs["perm"]).index(axis) != out:
        return "the batch axis moves in a way ember cannot follow"
    return None


def _broadcast(graph, node, operands, axes, out):
    axis = axes[0]
    if axis is not None and axis + len(node.shape) - len(operands[0].shape) != out:
        return "the batch axis moves in a way ember cannot follow"
    return None  # a value the same for every row, spread over the batch: fine


def _slice(graph, node, operands, axes, out):
    axis = axes[0]
    if axis is None:
        return None
    starts, steps = node.attrs["starts"], node.attrs["steps"]
    if starts[axis] != 0 or steps[axis] != 1 or node.attrs["stops"][axis] != operands[0].shape[axis] or out != axis:
        return "it slices the batch axis (rows are picked by position)"
    return _elementwise(graph, node, operands, axes, out) if node.op == "slice_update" else None


def _pad(graph, node, operands, axes, out):
    axis = axes[0]
    if axis is not None and (node.attrs["lo"][axis] or node.attrs["hi"][axis] or node.attrs["interior"][axis]
                             or out != axis):
        return "it pads the batch axis"
    return None


def _windows(trailing):
    def rule(graph, node, operands, axes, out):
        axis = axes[0]
        if axis is not None and (axis >= len(operands[0].shape) - trailing or out != axis):
            return "its windows run over the batch axis"
        return None
    return rule


def _take(graph, node, operands, axes, out):
    """take(x, idx, axis): rows of a batched x must not be the axis taken from; a batched idx
    (token ids into an embedding table) picks from an unbatched x."""
    (x_axis, idx_axis), along = axes, node.attrs["axis"] % len(operands[0].shape)
    if x_axis is not None and idx_axis is not None:
        return "both the table and the indices carry the batch"
    if x_axis is not None:
        expected = x_axis if x_axis < along else x_axis + len(operands[1].shape) - 1
        return "it takes along the batch axis" if x_axis == along or expected != out else None
    if along + idx_axis != out:
        return "the batch axis moves in a way ember cannot follow"
    return None


def _gather(graph, node, operands, axes, out):
    (x_axis, idx_axis), along = axes, node.attrs["axis"] % len(operands[0].shape)
    if x_axis is None or idx_axis != x_axis or out != x_axis or along == x_axis:
        return "it gathers across the batch (the input and the indices must both carry it, not along it)"
    return None


def _matmul(graph, node, operands, axes, out):
    (a, b), (a_node, b_node) = axes, operands
    if a is not None and a == len(a_node.shape) - 1 or b is not None and b == len(b_node.shape) - 2:
        return "it contracts over the batch (rows mix)"
    for axis, operand in ((a, a_node), (b, b_node)):
        if axis is not None and axis + len(node.shape) - len(operand.shape) != out:
            return "its operands carry the batch on different axes"
    return None


def _conv(graph, node, operands, axes, out):
    if axes[0] != 0 or out != 0 or any(a is not None for a in axes[1:]):
        return "a convolution must take the batch along its input's first dim"
    return None


def _scatter_like(graph, node, operands, axes, out):
    """index_add, scatter_add, index_put: every operand that carries the batch carries it on
    the result's axis, and the op does not write along it. index_add's and index_put's index
    is a list of positions along `axis`, the same for every row: it must not carry the batch."""
    along = node.attrs["axis"] % len(node.shape)
    if out is None or along == out or any(a is not None and a != out for a in axes):
        return "it writes across the batch"
    if node.op in ("index_add", "index_put") and axes[1] is not None:
        return "its index positions depend on the batch (every row is written at all of them)"
    return None


RULES = {
    **{op: _elementwise for op in (
        "abs", "add", "ceil", "convert", "cos", "div", "eq", "erf", "erfc", "exp", "expm1", "floor", "floor_divide",
        "ge", "gt", "le", "log", "log1p", "logical_and", "logical_not", "logical_or", "logical_xor", "lt", "maximum",
        "minimum", "mul", "ne", "neg", "overwrite", "pow", "reciprocal", "relu", "remainder", "replace_value",
        "round", "rsqrt", "sigmoid", "sign", "sin", "sqrt", "stop_gradient", "sub", "tanh", "where")},
    **{op: _reduce for op in ("sum", "prod", "amax", "amin", "argmax", "argmin")},
    **{op: _along_axis for op in ("cumsum", "argsort", "flip", "concat")},
    "reshape": _reshape, "permute": _permute, "broadcast_to": _broadcast,
    "slice": _slice, "slice_update": _slice, "pad": _pad,
    "unfold_windows": _windows(2), "fold_windows": _windows(4),
    "take": _take, "gather": _gather, "matmul": _matmul, "conv2d": _conv,
    "conv2d_grad_input": _conv,  # (a transposed convolution)
    **{op: _scatter_like for op in ("index_add", "scatter_add", "index_put")},
}
