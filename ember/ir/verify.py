"""The IR verifier: edges agree with operand lists, every node's shape and dtype follow its
op's rule, the graph is acyclic, and inputs, params, outputs, guards and mutations name
real nodes. Every pass's output is verified in the tests.
"""
from ember import dtypes
from ember.ops import PRIMITIVES, OpError, Spec


class VerifyError(ValueError):
    """The graph breaks an IR invariant; the message names the node and what is wrong."""


def verify(graph):
    import networkx as nx  # a Graph has loaded it already; `import ember.ir` does not (see graph.py)
    from .text import format_node
    if not nx.is_directed_acyclic_graph(graph.nx):
        raise VerifyError(f"{graph.name}: the graph has a cycle")
    for node in graph.nodes():
        where = f"{graph.name}: node {format_node(graph, node)}"
        for i in node.inputs:
            if i not in graph.nx:
                raise VerifyError(f"{where}: operand %{i} does not exist")
        edges = sorted((key, src) for src, _, key in graph.nx.in_edges(node.id, keys=True))
        if edges != list(enumerate(node.inputs)):
            raise VerifyError(f"{where}: edges {edges} disagree with operands {list(node.inputs)}")
        if node.dtype not in ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64"):
            raise VerifyError(f"{where}: unknown dtype {node.dtype}")
        if node.op == "input":
            if node.id not in graph.inputs:
                raise VerifyError(f"{where}: input placeholder missing from graph.inputs")
            continue
        if node.op == "param":
            if graph.params.get(node.attrs.get("name")) != node.id:
                raise VerifyError(f"{where}: param placeholder missing from graph.params")
            continue
        if node.op not in PRIMITIVES:
            raise VerifyError(f"{where}: unknown op {node.op!r}")
        specs = [graph.spec(i) for i in node.inputs]
        try:
            rule = PRIMITIVES[node.op].infer(*specs, **node.attrs)
        except OpError as error:
            raise VerifyError(f"{where}: {error}") from None
        except TypeError as error:
            raise VerifyError(f"{where}: bad attrs or operand count: {error}") from None
        if tuple(rule.shape) != tuple(node.shape) or rule.dtype.name != node.dtype:
            expected = Spec(tuple(rule.shape), rule.dtype)
            raise VerifyError(f"{where}: the op's rule gives {_describe(expected)}")
    for name, node_id in graph.params.items():
        if node_id not in graph.nx or graph.nx.nodes[node_id]["op"] != "param":
            raise VerifyError(f"{graph.name}: param {name} names %{node_id}, which is not a param node")
    for i in graph.inputs:
        if i not in graph.nx or graph.nx.nodes[i]["op"] != "input":
            raise VerifyError(f"{graph.name}: input %{i} is not an input node")
    for o in graph.outputs:
        if o not in graph.nx:
            raise VerifyError(f"{graph.name}: output %{o} does not exist")
    for m in graph.mutations:
        if m.node not in graph.nx:
            raise VerifyError(f"{graph.name}: mutation of {m.target} names missing node %{m.node}")
        if m.kind not in ("param", "input", "param_grad", "input_grad"):
            raise VerifyError(f"{graph.name}: mutation kind {m.kind!r} is not param, input, param_grad or input_grad")
        on_param = m.kind.startswith("param")
        if on_param and m.target not in graph.params:
            raise VerifyError(f"{graph.name}: mutation names unknown param {m.target}")
        if not on_param and not 0 <= m.target < len(graph.inputs):
            raise VerifyError(f"{graph.name}: mutation names unknown input {m.target}")
        target = graph.params[m.target] if on_param else graph.inputs[m.target]
        if graph.spec(target) != graph.spec(m.node):
            raise VerifyError(f"{graph.name}: mutation of {m.target} changes its type "
                              f"{graph.describe(target)} -> {graph.describe(m.node)}")
    for g in graph.guards:
        if g.node not in graph.nx:
            raise VerifyError(f"{graph.name}: {g.describe()} names missing node %{g.node}")
    return graph


def _describe(spec):
    from ember.ops import describe
    return describe(Spec(spec.shape, dtypes.as_dtype(spec.dtype)))
