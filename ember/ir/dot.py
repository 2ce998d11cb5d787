"""Graphviz DOT export: nodes labelled with op, shape, name and model line; inputs, params and
outputs styled apart. `ember dump --format svg` renders it with Graphviz's `dot`.

A training step (a graph with gradient nodes, named `grad.*` by autodiff) is drawn in labelled
clusters, forward, backward and optimizer update, left to right, with the parameters in a
column on the left and the values written back (updated parameters, optimizer state,
gradients) on the right; edges are bundled (`concentrate`). Given the fusion (`kernels`), each
fused kernel is one box inside its phase, labelled with its name and model lines, instead of
one node per op.
"""
from ember.ops import describe
from .provenance import describe_sources

_STYLE = {
    "input": 'shape=box, style="rounded,filled", fillcolor="#cfe8ff"',
    "param": 'shape=box, style="rounded,filled", fillcolor="#fff2b3"',
    "output": 'shape=ellipse, style=filled, fillcolor="#d5f5d5"',
    "op": 'shape=ellipse',
    "kernel": 'shape=box, style="filled", fillcolor="#eeeeee"',
    "written": 'shape=box, style="rounded,filled", fillcolor="#ffd9b3"',
}
PHASES = (("forward", "forward", "#eef6ff"), ("backward", "backward", "#fff0f0"),
          ("update", "optimizer update", "#f0fff0"))


def _escape(text):
    return str(text).replace("\\", "\\\\").replace('"', '\\"')


def phases_of(graph):
    """{node id: "forward" | "backward" | "update"} for a training step (gradient nodes are named
    grad.*; nodes computed from gradients that are not gradients update the parameters and
    optimizer state); None for a graph without gradients."""
    phase = {}
    for node in graph.nodes():
        if node.is_placeholder:
            continue
        if node.name.startswith("grad."):
            phase[node.id] = "backward"
        elif any(phase.get(i) in ("backward", "update") for i in node.inputs):
            phase[node.id] = "update"
        else:
            phase[node.id] = "forward"
    return phase if "backward" in phase.values() else None


def _node_line(node, kind, outputs, annotate=None):
    title = node.attrs["name"] if node.op == "param" else node.op
    label = f"%{node.id} {title}\\n{describe(node.spec)}"
    if node.name and node.op not in ("param",):
        label += f"\\n{_escape(node.name)}"
    if node.source:
        label += f"\\n{_escape(node.source)}"
    note = annotate(node) if annotate else None
    if note:
        label += f"\\n{_escape(note)}"
    return f'n{node.id} [label="{label}", {_STYLE[kind]}];'


def graph_to_dot(graph, group_of=None, kernels=None, annotate=None):
    """`group_of(node_id) -> (group id, kernel name)` draws fusion groups as clusters of their
    nodes; `kernels` (a Fusion) draws a training step's kernels as one box each; `annotate(node)`
    adds a line to a node's label (the planned stage's arena offsets)."""
    phase = phases_of(graph)
    if phase is not None:
        return _training_dot(graph, phase, kernels, annotate)
    lines = [f'digraph "{_escape(graph.name)}" {{', "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=10];']
    outputs = set(graph.outputs)
    clusters = {}
    for node in graph.nodes():
        kind = node.op if node.op in ("input", "param") else ("output" if node.id in outputs else "op")
        line = "  " + _node_line(node, kind, outputs, annotate)
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


def _training_dot(graph, phase, fusion, annotate=None):
    """The training-step picture: see the module docstring."""
    outputs = set(graph.outputs)
    box = {}  # node id -> the DOT node that draws it
    members = {name: [] for name, _, _ in PHASES}
    if fusion is not None:
        for group in fusion.groups:
            votes = [phase.get(n, "forward") for n in group.nodes]
            where = phase.get(group.root, max(set(votes), key=votes.count))
            sources = describe_sources(graph, group.nodes, limit=2)
            label = f"g{group.id} {_escape(group.name)}" + (f"\\n{_escape(sources)}" if sources else "")
            members[where].append(f'k{group.id} [label="{label}", {_STYLE["kernel"]}];')
            for n in group.nodes:
                box[n] = f"k{group.id}"
    left, right = [], []
    for node in graph.nodes():
        if node.id in box:
            continue
        if node.is_placeholder:
            left.append(_node_line(node, node.op, outputs))
        elif node.op == "constant" and fusion is not None:
            continue  # (inlined into kernels)
        else:
            kind = "output" if node.id in outputs else "op"
            members[phase.get(node.id, "forward")].append(_node_line(node, kind, outputs, annotate))
        box[node.id] = f"n{node.id}"
    for k, m in enumerate(graph.mutations):
        target = m.target if m.kind.startswith("param") else f"input[{m.target}]"
        target += ".grad" if m.kind.endswith("_grad") else ""
        right.append(f'w{k} [label="{_escape(target)} <-", {_STYLE["written"]}];')
    lines = [f'digraph "{_escape(graph.name)}" {{', "  rankdir=LR; concentrate=true; newrank=true;",
             "  nodesep=0.15; ranksep=0.4;", '  node [fontname="Helvetica", fontsize=10];',
             '  subgraph cluster_parameters { label="parameters and inputs"; style=dotted; rank=same;']
    lines += ["    " + line for line in left] + ["  }"]
    for name, title, color in PHASES:
        if members[name]:
            lines.append(f'  subgraph cluster_{name} {{ label="{title}"; style=filled; fillcolor="{color}";')
            lines += ["    " + line for line in members[name]] + ["  }"]
    if right:
        lines.append('  subgraph cluster_written { label="written back"; style=dotted; rank=same;')
        lines += ["    " + line for line in right] + ["  }"]
    edges = set()
    for src, dst, _ in graph.nx.edges(keys=True):
        a, b = box.get(src), box.get(dst)
        if a and b and a != b:
            edges.add((a, b))
    for k, m in enumerate(graph.mutations):
        if m.node in box:
            edges.add((box[m.node], f"w{k}"))
    lines += [f"  {a} -> {b};" for a, b in sorted(edges)]
    lines.append("}")
    return "\n".join(lines)
