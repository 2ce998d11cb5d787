"""Splitting a guarded trace into segments, and running a segment.

A trace with guards g0..gk is cut into k+1 segments: segment i holds the ops recorded
before guard i and exports the guard's value plus every value a live Python tensor still
held at that point (later code can only use what is alive). Segments form a tree keyed by
guard outcomes; a new outcome compiles only the segments after the guard.
"""
import math
from collections import Counter

import numpy as np

from ember.ir import PLACEHOLDERS, Graph
from ember.ir.symbols import evaluate
from .dispatch import eager_bind
from .tensor import Tensor
from .random import default_generator


class Segment:
    """One compiled piece of a trace: its graph, its runner, and what follows it."""

    def __init__(self, graph, guard, runner):
        self.graph = graph
        self.guard = guard  # the Guard ending this segment, or None for the last one
        self.runner = runner
        self.device = None  # the runtime device its trace's tensors were on (None: the host)
        self.children = {}  # guard outcome -> Segment
        self.result = None  # last segment: the traced function's return value (tensors as templates)
        self.result_nodes = []  # last segment: the node of each tensor in `result`, in order
        self.output_views = {}  # last segment: results that are views of inputs/params (see Tracer.finish)
        self.outputs_without_grad = []  # last segment: positions of results that eagerly require no grad
        self.cleared_grads = []  # last segment: weakrefs to the tensors whose .grad the call set to None
        self.passthrough = {}  # with_autograd -> positions of results that are an input or param unchanged
        self.outputs_requiring_grad = []  # last segment: (position, has history) of results that eagerly require grad
        self.freed_outputs = []  # last segment: results whose history a backward() in the function freed
        self.views_of_outputs = []  # last segment: results that are views of other results (Tracer.finish)
        self.stale_outputs = {}  # last segment: {position: error} of results whose history eagerly cannot be read
        self.backward_error = None  # last segment: the error eager backward() from the results raises
        self.mutations = []  # last segment: Mutation list (node ids valid in the trace's numbering)
        # last segment: (kind, target, (kind, target, view chain, detached, creation)) of `w.grad = x`
        # for an argument, param or closed-over x or a view of one (compiled_results.grads_as_views)
        self.grads_are_views = []
        self.grads_held = {}  # last segment: .grads bound by path that shared memory when traced (bound_grads)
        self.fresh_grads = set()  # last segment: (kind, target) of .grad mutations that set a new tensor
        self.externals = {}  # param name -> weakref of a closed-over tensor
        self._adoptable = None  # see adoptable_mutations
        self.replays_autograd = False  # a dynamic segment whose compiled backward could not be built
        self._handed_out = None  # see returned_or_written
        self._params_read_later = None  # see run
        self.rng_inputs = [n for n in graph.inputs if graph.node(n).attrs.get("rng")]
        self.param_nodes = tuple(graph.params.items())  # (name, node) pairs, read on every call

    def returned_or_written(self):
        """The nodes whose values the caller receives: results and mutations' new values."""
        if self._handed_out is None:
            self._handed_out = frozenset(self.result_nodes).union(m.node for m in self.mutations)
        return self._handed_out

    def adoptable_mutations(self):
        """Mutation nodes whose array may become the target's own array after a run instead of
        being copied into it: each written to one target only and not also returned."""
        if self._adoptable is None:
            written = Counter(m.node for m in self.mutations)
            self._adoptable = frozenset(n for n, times in written.items() if times == 1) - set(self.result_nodes)
        return self._adoptable

    def run(self, env, params, with_autograd, backend=None):
        """Compute this segment's outputs into `env` (arrays, or tensors when autograd records:
        a compiled backward from the autodiff pass where the segment allows, else a replay
        of its ops through eager autograd)."""
        for node in self.rng_inputs:
            env[node] = np.asarray(default_generator.np.integers(0, 2 ** 62), dtype=np.int64)
        if with_autograd:
            from .compiled_autograd import can_use_compiled_backward, run_with_compiled_backward
            if backend is not None and can_use_compiled_backward(self):
                run_with_compiled_backward(self, env, params, backend)
            else:
                replay_with_autograd(self.graph, env, params)
            return
        inputs = {i: array_of(env[i]) for i in self.graph.inputs}
        arrays = {name: params[name]._data for name, _ in self.param_nodes}
        env.update(self.runner(inputs, arrays))
        if self._params_read_later is None:
            params_out = {node for _, node in self.param_nodes} & set(self.result_nodes)
            self._params_read_later = self.guard is not None or bool(params_out)
        if self._params_read_later:  # a guard, a later segment or the result reads a param node
            for name, node in self.param_nodes:
                env[node] = arrays[name]


def walk_segments(segment):
    """Every segment of a trace tree, from `segment` down."""
    stack = [segment]
    while stack:
        s = stack.pop()
        yield s
        stack.extend(s.children.values())


def same_program(tree, pieces):
    """Does a new trace (split_trace's pieces) follow the cached tree with the same segment graphs?"""
    segment = tree.root
    for sub, guard in pieces:
        if segment is None or not same_structure(segment.graph, sub):
            return False
        segment = segment.children.get(guard.expected) if guard is not None else None
    return True


def same_structure(a, b):
    """graph_structure(a) == graph_structure(b), node by node and stopping at the first
    difference: the plain fields compare as they are, attributes by `_comparable` where a
    value is neither an int nor a string (two traces of a training step: 7,000 nodes each)."""
    if (a.name, a.inputs, list(a.params.items()), a.outputs) != (b.name, b.inputs, list(b.params.items()), b.outputs) \
            or len(a) != len(b) or len(a.mutations) != len(b.mutations) or len(a.guards) != len(b.guards):
        return False
    if [(m.kind, m.target, m.node) for m in a.mutations] != [(m.kind, m.target, m.node) for m in b.mutations] \
            or [(g.node, _comparable(g.expected), g.how, g.source, g.code) for g in a.guards] \
            != [(g.node, _comparable(g.expected), g.how, g.source, g.code) for g in b.guards]:
        return False
    other = b.node_data()
    for n, d in a.node_data().items():
        e = other.get(n)
        if e is None or d["op"] != e["op"] or d["inputs"] != e["inputs"] or d["shape"] != e["shape"] \
                or d["dtype"] != e["dtype"] or d["name"] != e["name"] or d.get("source", "") != e.get("source", ""):
            return False
        x, y = d["attrs"], e["attrs"]
        if x.keys() != y.keys():
            return False
        for key, value in x.items():
            theirs = y[key]
            kind = type(value)
            plain = kind is type(theirs) and (kind is int or kind is str)
            if not (value == theirs if plain else _comparable(value) == _comparable(theirs)):
                return False
    return True


def graph_structure(graph):
    """Everything the IR's JSON form holds of a graph (nodes with their ids, ops, operands,
    shapes, dtypes, attributes, names and source lines; inputs, params, outputs, mutations,
    guards), as comparable tuples: built without the JSON text or a topological sort."""
    nodes = tuple((n, d["op"], d["inputs"], d["shape"], d["dtype"], _comparable(d["attrs"]), d["name"],
                   d.get("source", "")) for n, d in sorted(graph.nx.nodes(data=True), key=lambda item: item[0]))
    return (graph.name, nodes, tuple(graph.inputs), tuple(graph.params.items()), tuple(graph.outputs),
            tuple((m.kind, m.target, m.node) for m in graph.mutations),
            tuple((g.node, _comparable(g.expected), g.how, g.source, g.code) for g in graph.guards))


def _comparable(value):
    """An attribute value as an equality-safe key, as its JSON text would compare: arrays by
    dtype, shape and bytes, numbers with their type and the sign of a zero."""
    kind = type(value)  # (the common attributes first: this runs over every node of two traces)
    if kind is int or kind is str:
        return (kind is int, value)
    if kind is tuple and all(type(v) is int for v in value):
        return ("ints", value)
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return ("dict", tuple((_comparable(k), _comparable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_comparable(v) for v in value))
    if isinstance(value, (bool, int, float, np.number, np.bool_)):  # (typed: True, 1, 1.0 differ; 0.0, -0.0 too)
        if value != value:
            return ("nan",)
        return (type(value).__name__, value.item() if isinstance(value, np.generic) else value,
                math.copysign(1.0, value) if value == 0 else 0)
    return value


def array_of(value):
    """The numpy array of a tensor, or the value itself when it is one already."""
    return value._data if isinstance(value, Tensor) else value


def replay_with_autograd(graph, env, params):
    """Run a segment by binding its primitives on tensors, so eager autograd records a tape
    through exactly the ops of the graph (the backward of a compiled call)."""
    for node_id in graph.inputs:
        if not isinstance(env[node_id], Tensor):
            env[node_id] = Tensor._wrap(np.asarray(env[node_id]))
    for name, node_id in graph.params.items():
        env[node_id] = params[name]
    from ember.ops import PRIMITIVES
    sizes = None
    if graph.symbols is not None:  # (a dynamic program: its attributes at this call's sizes)
        sizes = graph.symbols.sizes_or_raise(lambda node: env[node].shape, graph)
    for node in graph.nodes():
        if node.id in env:
            continue
        attrs = node.attrs if sizes is None else evaluate(node.attrs, sizes)
        env[node.id] = eager_bind(PRIMITIVES[node.op], [env[i] for i in node.inputs], attrs)


def split_trace(tracer, graph):
    """Cut a finished trace at its guards: a list of (segment graph, guard or None)."""
    bounds = [0] + list(tracer.guard_positions) + [graph._next_id]
    pieces = []
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        last = k == len(bounds) - 2
        if last:
            wanted = set(graph.outputs) | {m.node for m in graph.mutations}
            guard = None
        else:
            guard = graph.guards[k]
            wanted = {guard.node} | set(tracer.alive_at_guard[k])
        pieces.append((_subgraph(graph, lo, hi, wanted, f"{graph.name}.{k}"), guard))
    return pieces


def _subgraph(graph, lo, hi, wanted, name):
    """Nodes with ids in [lo, hi) as a graph; values from elsewhere become its inputs."""
    sub = Graph(name)
    fields = graph.node_data()
    body = [i for i in graph.node_order() if lo <= i < hi and fields[i]["op"] not in PLACEHOLDERS]
    inside = set(body)

    def bring(node_id):
        if node_id in sub:
            return
        node = graph.node(node_id)
        if node.op == "param":
            sub.add_param(node.attrs["name"], node.shape, node.dtype, node_id=node_id)
        elif node.op == "input":
            attrs = {k: v for k, v in node.attrs.items() if k != "index"}
            sub.add_input(node.shape, node.dtype, node.name, node_id=node_id, **attrs)
        else:
            sub.add_input(node.shape, node.dtype, node.name, node_id=node_id, carried=True)

    for node_id in body:
        data = fields[node_id]
        for i in data["inputs"]:
            if i not in inside:
                bring(i)
        sub.copy_node(node_id, data)
    for n in wanted:
        if n not in inside and graph.node(n).op == "param":
            bring(n)  # a guard on, or a return of, a param no op here reads
    sub.outputs = sorted(n for n in wanted if n in inside)
    if graph.symbols is not None:  # (a dynamic trace is one segment: every symbol's inputs are here)
        sub.symbols = graph.symbols
    return sub
