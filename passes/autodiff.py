"""Reverse-mode autodiff over the IR, with the SAME VJP rules eager autograd uses.

`gradients(graph, outputs, wrt)` appends gradient nodes to the graph: it walks the nodes
between `wrt` and `outputs` in reverse, applies each primitive's VJP rule to symbolic IR
values (binding primitives adds nodes; nothing is computed), sums fan-out, and prunes
every node no requested gradient needs. `split_forward_backward` turns a forward graph into
a forward program that also returns the activations the backward reads (the saved
activations, chosen explicitly) and a backward program that starts from them.
"""
from dataclasses import dataclass, field

from ember.ir import Graph
from ember.ir.symbols import SymDim, SymbolTable, used_symbols
from ember.ops import PRIMITIVES, Spec
from ember.ops.registry import in_mode


class SymbolicValue:
    """An IR value as VJP rules see it: a node with a shape and a dtype, no data."""

    __slots__ = ("node", "shape", "dtype")

    def __init__(self, node, shape, dtype):
        self.node, self.shape, self.dtype = node, tuple(shape), dtype

    def __repr__(self):
        return f"%{self.node}"


class GraphBuilder:
    """The dispatcher while VJP rules run symbolically: each bind adds a node."""

    def __init__(self, graph, name_prefix="grad"):
        self.graph = graph
        self.prefix = name_prefix
        self.added = []
        self.source = ""  # the model line of the forward node being differentiated (provenance)

    def value(self, node_id):
        spec = self.graph.spec(node_id)
        return SymbolicValue(node_id, spec.shape, spec.dtype)

    def bind(self, prim, operands, attrs):
        specs = [Spec(v.shape, v.dtype) for v in operands]
        out = prim.infer(*specs, **attrs)
        node = self.graph.add_node(prim.name, [v.node for v in operands], out.shape, out.dtype, attrs,
                                   f"{self.prefix}.{prim.name}", source=self.source)
        self.added.append(node)
        return SymbolicValue(node, out.shape, out.dtype)


def _between(graph, outputs, wrt):
    """Nodes on some path from a `wrt` node to an `outputs` node."""
    reach_back = set(outputs)
    for o in outputs:
        reach_back |= graph.ancestors(o)
    reach_fwd = set(wrt)
    for w in wrt:
        reach_fwd |= graph.descendants(w)
    return reach_back & reach_fwd


def gradients(graph, outputs, wrt, seeds=None, name_prefix="grad"):
    """Add the gradients of sum(seed_i * output_i) with respect to each `wrt` node.

    `seeds` are node ids of cotangents (default: ones, for scalar losses). Returns
    {wrt node: gradient node or None when the output does not depend on it}."""
    builder = GraphBuilder(graph, name_prefix)
    relevant = _between(graph, outputs, wrt)
    cotangent = {}
    with in_mode(builder):  # VJP rules bind on IR values: the builder records them
        for i, out in enumerate(outputs):
            if seeds is not None:
                seed = builder.value(seeds[i])
            else:
                spec = graph.spec(out)
                seed = PRIMITIVES["constant"].bind(value=1, shape=tuple(spec.shape), dtype=spec.dtype.name)
            _accumulate(cotangent, out, seed)
        order = [n for n in graph.nodes() if n.id in relevant]
        for node in reversed(order):
            g = cotangent.get(node.id)
            if g is None or node.is_placeholder:
                continue
            prim = PRIMITIVES[node.op]
            if prim.vjp is None:
                continue
            operands = [builder.value(i) for i in node.inputs]
            builder.source = node.source
            grads = prim.vjp(g, builder.value(node.id), *operands, **node.attrs)
            for source, gi in zip(node.inputs, grads):
                if gi is not None and source in relevant:
                    _accumulate(cotangent, source, gi)
    result = {w: (cotangent[w].node if w in cotangent else None) for w in wrt}
    _prune(graph, builder.added, set(n for n in result.values() if n is not None))
    return result


def _accumulate(cotangent, node, value):
    prior = cotangent.get(node)
    cotangent[node] = value if prior is None else PRIMITIVES["add"].bind(prior, value)


def _prune(graph, added, keep):
    """Remove added nodes that no kept gradient reads (VJP rules build every operand's
    cotangent; only the requested ones survive)."""
    needed, stack, data = set(keep), list(keep), graph.node_data()
    while stack:  # (one walk back from every kept node: their ancestors)
        for source in data[stack.pop()]["inputs"]:
            if source not in needed:
                needed.add(source)
                stack.append(source)
    for node in reversed(added):
        if node not in needed and node in graph and not graph.users(node):
            graph.remove_node(node)


@dataclass
class ForwardBackward:
    """A forward program that also returns saved activations, and its backward program.

    forward: inputs/params as the original graph; outputs = original outputs + saved.
    backward: inputs = saved activations, then one cotangent per original output;
    params as needed; outputs = one gradient per `wrt` entry (None entries are omitted and
    listed in `missing`)."""

    forward: Graph
    backward: Graph
    saved: list  # forward node ids returned as activations, in backward input order
    wrt: list  # forward placeholder ids whose gradients the backward returns
    grad_outputs: list = field(default_factory=list)  # backward output ids, aligned with present wrt
    missing: list = field(default_factory=list)
    seeds: list = field(default_factory=list)  # backward input ids of the output cotangents
    # a dynamic program's backward: {input id: symbol} of inputs that only carry a size (an array of
    # that length) for symbols no other backward input gives (the caller passes them)
    size_carriers: dict = field(default_factory=dict)


def split_forward_backward(graph, wrt, outputs=None):
    """Differentiate `outputs` (default: the graph's floating-point outputs) with respect to
    the placeholders `wrt`; cut the result into a forward and a backward program."""
    joint = graph.copy(f"{graph.name}.joint")
    chosen = joint.outputs if outputs is None else outputs
    float_outputs = [o for o in chosen if joint.spec(o).dtype.is_floating_point]
    seeds = []
    for o in float_outputs:
        spec = joint.spec(o)
        seeds.append(joint.add_input(spec.shape, spec.dtype, f"grad_{joint.node(o).name}", cotangent=True))
    grads = gradients(joint, float_outputs, wrt, seeds=seeds)
    backward_nodes = _backward_region(joint, seeds, grads)
    saved = sorted({i for n in backward_nodes for i in joint.node(n).inputs
                    if i not in backward_nodes and joint.node(i).op not in ("param",) and i not in seeds})
    forward = graph.copy(f"{graph.name}.forward")
    forward.outputs = list(graph.outputs) + [s for s in saved if s not in graph.outputs]
    backward = Graph(f"{graph.name}.backward")
    for s in saved:
        node = joint.node(s)
        backward.add_input(node.shape, node.dtype, node.name, node_id=s, saved=True)
    for seed in seeds:
        node = joint.node(seed)
        backward.add_input(node.shape, node.dtype, node.name, node_id=seed, cotangent=True)
    for n in sorted(backward_nodes):
        node = joint.node(n)
        for i in node.inputs:
            if i not in backward and joint.node(i).op == "param":
                backward.add_param(joint.node(i).attrs["name"], joint.node(i).shape, joint.node(i).dtype, node_id=i)
        backward.add_node(node.op, node.inputs, node.shape, node.dtype, node.attrs, node.name, node_id=n,
                          source=node.source)
    present = [w for w in wrt if grads[w] is not None]
    backward.outputs = [grads[w] for w in present]
    carriers = _size_carriers(graph, backward)
    return ForwardBackward(forward, backward, saved, present, list(backward.outputs),
                           [w for w in wrt if grads[w] is None], list(seeds), carriers)


def _size_carriers(graph, backward):
    """For a dynamic graph: the backward's symbol table, read from its inputs where one is `s`
    or c*s along a dim, else from an added input of shape [s] that only carries the size (mean's
    backward needs the count its inputs do not show). Returns {carrier input id: symbol}."""
    if graph.symbols is None:
        return {}
    table = SymbolTable.of_inputs(backward, missing_ok=True) or SymbolTable({})
    used = used_symbols(backward)
    carriers = {}
    for name in graph.symbols.sources:
        if name not in table.sources and name in used:
            node = backward.add_input((SymDim.symbol(name),), "int8", f"size_{name}", size_of=name)
            table.sources[name] = [(node, 0)]
            carriers[node] = name
    backward.symbols = table
    return carriers


def _backward_region(graph, seeds, grads):
    """Nodes added by autodiff that the gradients need (they all depend on a seed or are
    gradient-only constants)."""
    import networkx as nx
    region = set()
    for g in grads.values():
        if g is None:
            continue
        region.add(g)
        region |= nx.ancestors(graph.nx, g)
    forward = set()
    for o in graph.outputs:
        forward |= nx.ancestors(graph.nx, o) | {o}
    region -= forward
    return {n for n in region if graph.node(n).op not in ("input", "param") and n not in seeds}
