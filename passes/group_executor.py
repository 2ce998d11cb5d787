"""Runs a fused, memory-planned graph kernel by kernel inside ONE numpy arena (for tests).

It is the proof that fusion and memory planning compose: every planned buffer is a view at
its offset in a single uint8 arena, kernels read their inputs from there, and the results
must equal the plain interpreter's. Dead buffers are poisoned so a plan that lets a kernel
read a value after its slot was reused, or before it was written, gives wrong results.
"""
import numpy as np

from ember.ops import PRIMITIVES

POISON = 0xFF  # NaN for floats, -1 for ints


def _array(value):
    """A numpy array from an array or an ember Tensor."""
    return np.asarray(getattr(value, "_data", value))


def execute_planned(graph, fusion, plan, inputs, params=None, poison=True):
    """Run `graph` group by group in an arena of `plan.arena_bytes`.

    `inputs` in `graph.inputs` order, `params` {name: array}. Returns the outputs followed by
    the mutation values (in `graph.mutations` order), as fresh arrays."""
    params = params or {}
    if len(inputs) != len(graph.inputs):
        raise TypeError(f"{graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    arena = np.full(plan.arena_bytes, POISON if poison else 0, dtype=np.uint8)
    external = {node: _array(value) for node, value in zip(graph.inputs, inputs)}
    for name, node in graph.params.items():
        if name not in params:
            raise KeyError(f"{graph.name}: no value bound for param {name!r}")
        external[node] = _array(params[name])
    taken_over = set(plan.in_place.values())

    def view(node_id):
        buffer = plan.buffers[node_id]
        node = graph.node(node_id)
        raw = arena[buffer.offset:buffer.offset + buffer.nbytes]
        return raw.view(np.dtype(node.dtype)).reshape(node.shape)

    for node in graph.nodes():
        if node.op == "constant":
            external[node.id] = PRIMITIVES["constant"].impl(**node.attrs)

    def read(node_id, group):
        if node_id in plan.buffers:
            return view(node_id)
        if node_id in external:
            return external[node_id]
        raise RuntimeError(f"{graph.name}: g{group.id} {group.name} reads %{node_id} "
                           f"({graph.node(node_id).name}), which no earlier kernel wrote")

    for group in fusion.groups:
        local = {}
        for node_id in group.nodes:
            node = graph.node(node_id)
            operands = [local[i] if i in local else read(i, group) for i in node.inputs]
            local[node_id] = np.asarray(PRIMITIVES[node.op].impl(*operands, **node.attrs))
        for output in group.outputs:
            if output in plan.buffers:
                view(output)[...] = local[output]
            else:
                external[output] = np.array(local[output], copy=True)
        if poison:
            for node_id, buffer in plan.buffers.items():
                if buffer.last_step == group.id and node_id not in taken_over:
                    arena[buffer.offset:buffer.offset + buffer.nbytes] = POISON

    def result(node_id):
        if node_id not in external:
            raise RuntimeError(f"{graph.name}: result %{node_id} was planned into the arena, not returned")
        return np.array(external[node_id], copy=True)

    return [result(o) for o in graph.outputs] + [result(m.node) for m in graph.mutations]
