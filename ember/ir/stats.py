"""Op counts, FLOPs and bytes per node and in total (`graph.stats()`).

FLOPs count multiply-adds as 2; elementwise ops cost one per output element, reductions one
per input element, movement ops none. Bytes are what an unfused program reads and writes.
"""
from collections import Counter
from dataclasses import dataclass, field

from ember.ops import PRIMITIVES


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def node_flops(graph, node):
    if node.is_placeholder:
        return 0
    prim = PRIMITIVES[node.op]
    out = _numel(node.shape)
    if node.op == "matmul":
        return 2 * out * graph.spec(node.inputs[0]).shape[-1]
    if node.op in ("conv2d", "conv2d_grad_input", "conv2d_grad_weight"):
        x_spec = node.spec if node.op == "conv2d_grad_input" else graph.spec(node.inputs[0])
        w_shape = graph.spec(node.inputs[1]).shape if node.op != "conv2d_grad_weight" else node.shape
        o, cg, kh, kw = w_shape
        n = x_spec.shape[0]
        y_spec = graph.spec(node.inputs[0]) if node.op == "conv2d_grad_input" else (
            node.spec if node.op == "conv2d" else graph.spec(node.inputs[1]))
        return 2 * n * o * y_spec.shape[2] * y_spec.shape[3] * cg * kh * kw
    if prim.kind == "elementwise":
        return out
    if prim.kind in ("reduce", "window"):
        return _numel(graph.spec(node.inputs[0]).shape)
    return 0


def node_bytes(graph, node):
    itemsize = node.spec.dtype.itemsize
    total = _numel(node.shape) * itemsize
    for i in node.inputs:
        spec = graph.spec(i)
        total += _numel(spec.shape) * spec.dtype.itemsize
    return total


@dataclass
class GraphStats:
    ops: Counter
    flops: int
    bytes: int
    per_node: list = field(default_factory=list)  # (node id, op, flops, bytes)

    def __str__(self):
        counts = ", ".join(f"{op} x{n}" for op, n in sorted(self.ops.items()))
        return (f"{sum(self.ops.values())} ops ({counts})\n"
                f"{self.flops:,} FLOPs, {self.bytes:,} bytes moved unfused")


def graph_stats(graph):
    ops, flops, moved, per_node = Counter(), 0, 0, []
    for node in graph.nodes():
        if node.is_placeholder:
            continue
        f, b = node_flops(graph, node), node_bytes(graph, node)
        ops[node.op] += 1
        flops += f
        moved += b
        per_node.append((node.id, node.op, f, b))
    return GraphStats(ops, flops, moved, per_node)
