"""Graphviz DOT export: nodes labelled with op, shape and name; inputs, params and outputs
styled apart. `ember dump --format svg` renders it with Graphviz's `dot`."""
from ember.ops import describe

_STYLE = {
    "input": 'shape=box, style="rounded,filled", fillcolor="#cfe8ff"',
    "param": 'shape=box, style="rounded,filled", fillcolor="#fff2b3"',
    "output": 'shape=ellipse, style=filled, fillcolor="#d5f5d5"',
    "op": 'shape=ellipse',
}


def _escape(text):
    return str(text).replace("\\", "\\\\").replace('"', '\\"')


def graph_to_dot(graph, group_of=None):
    """`group_of(node_id) -> (group id, kernel name)` draws fusion groups as clusters."""
    lines = [f'digraph "{_escape(graph.name)}" {{', "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    outputs = set(graph.outputs)
    clusters = {}
    for node in graph.nodes():
        kind = node.op if node.op in ("input", "param") else ("output" if node.id in outputs else "op")
        title = node.attrs["name"] if node.op == "param" else node.op
        label = f"%{node.id} {title}\\n{describe(node.spec)}"
        if node.name and node.op not in ("param",):
            label += f"\\n{_escape(node.name)}"
        line = f'  n{node.id} [label="{label}", {_STYLE[kind]}];'
        group = group_of(node.id) if group_of else None
        if group is not None:
            clusters.setdefault(group, []).append(line)
        else:
            lines.append(line)
    for (group, kernel), members in sorted(clusters.items(), key=lambda kv: kv[0][0]):
        lines.append(f'  subgraph cluster_{group} {{ label="{_escape(kernel)}"; style=dashed;')
        lines.extend("  " + m for m in members)
        lines.append("  }")
    for src, dst, key in sorted(graph.nx.edges(keys=True)):
        lines.append(f"  n{src} -> n{dst};")
    lines.append("}")
    return "\n".join(lines)
