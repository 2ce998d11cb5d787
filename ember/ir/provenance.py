"""Provenance: which lines of the user's model an IR node, a kernel or a piece of generated
code came from. The tracer records each node's `source` ("model.py:41", the file's base name so
that compiled bytes do not depend on where the project lives); node names carry the module path
("conv1", "fc1.add"). Text dumps, `ember dump --stage kernels`, the LLVM and assembly dumps,
EMBER_DEBUG=2's kernel times and the HTML report all read it through here."""


def sources_of(graph, node_ids):
    """[(source, [node names])] for the nodes, grouped by source line in first-seen order
    (nodes without a source are left out)."""
    found = {}
    for node_id in node_ids:
        if node_id not in graph:
            continue
        node = graph.node(node_id)
        if node.source:
            names = found.setdefault(node.source, [])
            if node.name not in names:
                names.append(node.name)
    return list(found.items())


def describe_sources(graph, node_ids, limit=3):
    """`model.py:15 (conv1, relu_1); model.py:16 (pool)`: the model lines of these nodes, with
    at most `limit` node names per line."""
    parts = []
    for source, names in sources_of(graph, node_ids):
        shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
        parts.append(f"{source} ({shown})")
    return "; ".join(parts)


def annotate_functions(text, notes, comment=";"):
    """LLVM IR or assembly text with a `; from: ...` line before each kernel function (`notes`:
    {function name: description}); other lines unchanged."""
    if not notes:
        return text
    lines = []
    for line in text.splitlines():
        name = _function_defined(line)
        if name in notes and notes[name]:
            lines.append(f"{comment} kernel {name} from: {notes[name]}")
        lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _function_defined(line):
    """The function a line starts: `define ... @"name"(` / `define ... @name(` in LLVM IR,
    `.visible .entry name(` in PTX, `name:` at the start of a line in assembly."""
    if line.startswith(".visible .entry "):
        return line[len(".visible .entry "):].partition("(")[0]
    if line.startswith("define "):
        at = line.find("@")
        if at < 0:
            return None
        rest = line[at + 1:]
        if rest.startswith('"'):
            return rest[1:rest.index('"', 1)]
        return rest[:rest.find("(")]
    if line and not line[0].isspace() and line.endswith(":") and not line.startswith((".", "#")):
        return line[:-1]
    return None
