"""The readable text form of a graph: one line per node, shapes and dtypes on every line.

    %7 = add(%5, %6) : f32[64,120]  # fc1
    %9 = argsort(%8, axis=1, descending=False) : i64[4,6]  # argsort_9 (host-only)

A host-only primitive (ember/ops `host_only=True`) says so: compiled code runs it as a numpy
callback on the CPU, and no other target takes it.
"""
import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES, Spec, describe


def format_attr(value):
    if isinstance(value, np.ndarray):
        if value.size <= 4:
            return repr(value.tolist())
        return f"<array {describe(Spec(value.shape, dtypes.from_numpy(value.dtype)))}>"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(format_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def format_node(graph, node):
    spec = describe(node.spec)
    if node.op == "input":
        extra = " carried" if node.attrs.get("carried") else ""
        head = f"%{node.id} = input[{node.attrs.get('index', '?')}]{extra}"
    elif node.op == "param":
        head = f"%{node.id} = param {node.attrs['name']}"
    else:
        operands = [f"%{i}" for i in node.inputs]
        operands += [f"{k}={format_attr(v)}" for k, v in node.attrs.items()]
        head = f"%{node.id} = {node.op}({', '.join(operands)})"
    comment = f"  # {node.name}" if node.name and node.op != "param" else ""
    prim = PRIMITIVES.get(node.op)
    if prim is not None and prim.host_only:
        comment = (comment or "  #") + f" (host-only{f', {node.source}' if node.source else ''})"
    elif node.source:
        comment = (comment or "  #") + f" ({node.source})"
    return f"{head} : {spec}{comment}"


def format_graph(graph, annotate=None):
    """`annotate(node) -> str` may append per-node notes (fusion groups, buffer offsets)."""
    lines = [f"graph {graph.name}({', '.join(f'%{i}' for i in graph.inputs)}) {{"]
    for node in graph.nodes():
        line = "  " + format_node(graph, node)
        if annotate is not None:
            note = annotate(node)
            if note:
                line += f"  [{note}]"
        lines.append(line)
    lines.append(f"  return {', '.join(f'%{o}' for o in graph.outputs)}")
    for m in graph.mutations:
        target = m.target if m.kind.startswith("param") else f"input[{m.target}]"
        target += ".grad" if m.kind.endswith("_grad") else ""
        lines.append(f"  mutate {target} <- %{m.node}")
    for g in graph.guards:
        lines.append(f"  guard %{g.node}.{g.how} == {g.expected!r}" + (f"  # {g.source}: {g.code}" if g.source else ""))
    lines.append("}")
    return "\n".join(lines)
