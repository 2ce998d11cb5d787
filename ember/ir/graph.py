"""The IR every stage shares: a `Graph` of op applications, viewable as a networkx MultiDiGraph.

A node is one primitive application (or an `input` / `param` placeholder) with ordered
operands, shape, dtype, static attrs and a readable name from the user's model. The graph
also lists its inputs, named params, outputs, mutations (values written back to a param
or input after a run) and guards (values the Python code branched on while tracing).
networkx (about 0.1 s to import) loads only when something asks for `graph.nx` (a pass's
algorithm, a dump): Graph's own methods (build, read, copy, JSON) work on the dicts it shares.
"""
from dataclasses import dataclass, field

from ember import dtypes
from ember.ops import PRIMITIVES, Spec, describe
from .symbols import SymDim

PLACEHOLDERS = ("input", "param")


@dataclass
class Guard:
    """A tensor value that flowed into Python while tracing: the trace is valid only while
    `node` evaluates to `expected` (compared as `key(value)`)."""

    node: int
    expected: object  # the Python value seen (bool, number, list, or bytes of an array)
    how: str  # "bool()", "item()", "int()", "tolist()", "numpy()", ...
    source: str = ""  # "model.py:41"
    code: str = ""  # the source line, e.g. "if x.sum() > 0:"

    def describe(self):
        where = f" at {self.source}" if self.source else ""
        code = f" ({self.code})" if self.code else ""
        return f"guard{where}{code}: {self.how} == {self.expected!r}"


@dataclass
class Mutation:
    """After a run, the value of `node` is written into a param (by name) or an input (by
    index), or into its `.grad` (kinds param_grad / input_grad: a backward inside the program)."""

    kind: str  # "param", "input", "param_grad" or "input_grad"
    target: object  # param name or input index
    node: int


@dataclass
class NodeView:
    """Read-only view of one node's attributes, as returned by `Graph.node(id)`."""

    id: int
    op: str
    inputs: tuple
    shape: tuple
    dtype: str
    attrs: dict = field(default_factory=dict)
    name: str = ""
    source: str = ""  # "model.py:41": recorded for nodes reports must place (host-only ops)

    @property
    def spec(self):
        return Spec(self.shape, dtypes.from_name(self.dtype))

    @property
    def is_placeholder(self):
        return self.op in PLACEHOLDERS


class Graph:
    """An ember program. Build with `add_input`, `add_param` and `add_node`; read with
    `nodes()`, `node(i)`, `users(i)`; print with `str(graph)`; check with `verify()`."""

    def __init__(self, name="graph"):
        self.name = name
        # networkx's MultiDiGraph layout, held here so that building, reading, copying and
        # serialising a graph never imports networkx; `self.nx` wraps these same dicts
        self._node = {}  # node id -> {"op", "inputs", "shape", "dtype", "attrs", "name"[, "source"]}
        self._succ = {}  # operand -> {user: {position: {}}} (networkx's `_adj`)
        self._pred = {}  # user -> {operand: the same {position: {}} dict}
        self._nx = None
        self.inputs = []  # node ids of `input` placeholders, in call order
        self.params = {}  # param name -> node id
        self.outputs = []  # node ids
        self.mutations = []  # Mutation
        self._mutation_keys = None  # see add_mutation
        self.guards = []  # Guard
        self.symbols = None  # a dynamic graph's size symbols (frontend/dynamic_shapes.SymbolTable)
        self._next_id = 0

    @property
    def nx(self):
        """This graph as a networkx MultiDiGraph (edges keyed by operand position), built on first
        use over the graph's own dicts: a change made through either is seen by both."""
        if self._nx is None:
            import networkx  # here, not at import: see the module docstring
            view = networkx.MultiDiGraph()
            # (networkx's setter for `_adj` points `_succ` at the same dict)
            view._node, view._adj, view._pred = self._node, self._succ, self._pred
            self._nx = view
        return self._nx

    # ------------------------------------------------------------------ building
    def _new_id(self, wanted=None):
        if wanted is not None:
            if wanted in self._node:
                raise ValueError(f"node %{wanted} already exists in {self.name}")
            self._next_id = max(self._next_id, wanted + 1)
            return wanted
        node_id = self._next_id
        self._next_id += 1
        return node_id

    def add_input(self, shape, dtype, name, node_id=None, **attrs):
        node_id = self._new_id(node_id)
        self._insert(node_id, {"op": "input", "inputs": (), "shape": tuple(shape), "dtype": _dtype_name(dtype),
                               "attrs": dict(attrs, index=len(self.inputs)), "name": name})
        self.inputs.append(node_id)
        return node_id

    def add_param(self, param_name, shape, dtype, node_id=None):
        if param_name in self.params:
            return self.params[param_name]
        node_id = self._new_id(node_id)
        self._insert(node_id, {"op": "param", "inputs": (), "shape": tuple(shape), "dtype": _dtype_name(dtype),
                               "attrs": {"name": param_name}, "name": param_name})
        self.params[param_name] = node_id
        return node_id

    def add_node(self, op, inputs, shape, dtype, attrs=None, name="", node_id=None, source=""):
        node_id = self._new_id(node_id)
        inputs = tuple(inputs)
        shape = tuple(d if type(d) is int else _size(d) for d in shape)  # (plain ints, or symbolic sizes)
        data = {"op": op, "inputs": inputs, "shape": shape, "dtype": _dtype_name(dtype), "attrs": dict(attrs or {}),
                "name": name or f"{op}_{node_id}"}
        if source:
            data["source"] = source
        self._insert(node_id, data)
        return node_id

    def copy_node(self, node_id, data):
        """Add a node of another graph under its id, from its fields (`node_data()[node_id]`)."""
        self._insert(self._new_id(node_id), dict(data, attrs=dict(data["attrs"])))
        return node_id

    def _insert(self, node_id, data):
        """Record a new node and its operand edges as MultiDiGraph.add_node and add_edge would (an
        edge per operand, keyed by its position; one key dict shared by both directions): a
        trace adds thousands of nodes, and this takes a third of the time those calls took."""
        succ, pred = self._succ, self._pred
        missing = [i for i in data["inputs"] if i not in succ]
        if missing:
            raise ValueError(f"{self.name}: {data['op']} node reads %{missing[0]}, which is not in the graph")
        self._node[node_id] = data
        succ[node_id] = {}
        into = pred[node_id] = {}
        for position, source in enumerate(data["inputs"]):
            keys = into.get(source)
            if keys is None:
                keys = into[source] = succ[source][node_id] = {}
            keys[position] = {}
        if self._nx is not None:
            self._forget_networkx_results()

    def _forget_networkx_results(self):
        """After a change made on the dicts: drop what networkx cached for the graph as it was."""
        cache = getattr(self._nx, "__networkx_cache__", None)
        if cache:
            cache.clear()

    def add_guard(self, guard):
        self.guards.append(guard)

    def add_mutation(self, kind, target, node):
        """The graph writes `node` back into `target` (a later one for the same target replaces
        it). The (kind, target) pairs are indexed while `mutations` is the list this made."""
        known = self._mutation_keys
        if known is None or known[0] is not self.mutations or known[1] != len(self.mutations):
            known = self._mutation_keys = [self.mutations, 0, {(m.kind, m.target) for m in self.mutations}]
        if (kind, target) in known[2]:
            self.mutations = known[0] = [m for m in self.mutations if (m.kind, m.target) != (kind, target)]
        known[2].add((kind, target))
        self.mutations.append(Mutation(kind, target, node))
        known[1] = len(self.mutations)

    def remove_node(self, node_id):
        """Remove a node and its edges in and out, as MultiDiGraph.remove_node does but without
        loading networkx (the autodiff pass prunes unused gradient nodes with it on every trace)."""
        if node_id not in self._node:
            raise ValueError(f"remove_node: %{node_id} is not in {self.name}")
        del self._node[node_id]
        for user in self._succ.pop(node_id):
            del self._pred[user][node_id]
        for source in self._pred.pop(node_id):
            del self._succ[source][node_id]
        self._forget_networkx_results()
        self.inputs = [i for i in self.inputs if i != node_id]
        self.params = {k: v for k, v in self.params.items() if v != node_id}

    def replace_uses(self, old, new):
        """Make every user of `old` (and the outputs, mutations, guards) refer to `new`."""
        for user in list(self.users(old)):
            data = self.nx.nodes[user]
            data["inputs"] = tuple(new if i == old else i for i in data["inputs"])
            self.nx.remove_edges_from([(old, user, k) for k in list(self.nx[old][user])])
            for position, source in enumerate(data["inputs"]):
                if source == new and not self.nx.has_edge(new, user, position):
                    self.nx.add_edge(new, user, key=position)
        self.outputs = [new if o == old else o for o in self.outputs]
        for m in self.mutations:
            if m.node == old:
                m.node = new
        for g in self.guards:
            if g.node == old:
                g.node = new

    # ------------------------------------------------------------------ reading
    def __contains__(self, node_id):
        return node_id in self._node

    def __len__(self):
        return len(self._node)

    def node(self, node_id):
        data = self._node[node_id]  # (the dict itself: `nx.nodes[id]` costs 5x more, and this is called per use)
        return NodeView(node_id, data["op"], data["inputs"], data["shape"], data["dtype"], data["attrs"], data["name"],
                        data.get("source", ""))

    def nodes(self):
        """Every node in a valid execution order: ids ascending (topological for traced graphs;
        passes that insert nodes keep it by construction, verified by `verify`), else the
        topological order that takes the smallest ready id first (fusion's recomputed clones)."""
        return [self.node(i) for i in self.node_order()]

    def node_order(self):
        """The ids of `nodes()`, in its order."""
        if self._ids_are_topological():
            return sorted(self._node)
        import networkx  # (a pass added a node that earlier ids read): the topological order closest to ids
        return list(networkx.lexicographical_topological_sort(self.nx))

    def _ids_are_topological(self):
        return all(src < dst for dst, sources in self._pred.items() for src in sources)

    def node_data(self):
        """{node id: its fields} (op, inputs, shape, dtype, attrs, name, source), in insertion
        order: the graph's own dict, for reading many nodes without a NodeView each."""
        return self._node

    def ancestors(self, node_id):
        """The ids of the nodes `node_id` depends on, through any path (not itself)."""
        return _reachable(self._pred, node_id)

    def descendants(self, node_id):
        """The ids of the nodes that depend on `node_id`, through any path (not itself)."""
        return _reachable(self._succ, node_id)

    def users(self, node_id):
        return list(self._succ[node_id])  # (each user once, in edge order)

    def spec(self, node_id):
        data = self._node[node_id]
        return Spec(data["shape"], dtypes.from_name(data["dtype"]))

    def describe(self, node_id):
        return describe(self.spec(node_id))

    def copy(self, name=None):
        other = Graph(name or self.name)
        # the dicts filled directly, as _insert fills them (MultiDiGraph.copy goes through
        # add_nodes_from and add_edges_from: a quarter of the passes' time on a training step)
        other._node.update((n, {**data, "attrs": dict(data["attrs"])}) for n, data in self._node.items())
        succ, pred = other._succ, other._pred
        for u, users in self._succ.items():  # (one key dict per edge, shared by both directions;
            succ[u] = {v: {key: dict(data) for key, data in keys.items()} for v, keys in users.items()}
        for v, sources in self._pred.items():  # both in the source's orders)
            pred[v] = {u: succ[u][v] for u in sources}
        other.inputs = list(self.inputs)
        other.params = dict(self.params)
        other.outputs = list(self.outputs)
        other.mutations = [Mutation(m.kind, m.target, m.node) for m in self.mutations]
        other.guards = [Guard(g.node, g.expected, g.how, g.source, g.code) for g in self.guards]
        other.symbols = self.symbols
        other._next_id = self._next_id
        return other

    def renumbered(self, order, name=None):
        """A copy whose nodes run in `order` (every node id, a topological order): inputs and
        params keep their ids (callers bind arguments by them); the other nodes are numbered
        after the last of those, ascending in `order` (a scheduling pass's result)."""
        placeholders = [n for n in order if self._node[n]["op"] in PLACEHOLDERS]
        first = max(placeholders, default=-1) + 1
        new_id = {n: n for n in placeholders}
        for n in order:
            if n not in new_id:
                new_id[n] = first + len(new_id) - len(placeholders)
        order = sorted(order, key=new_id.__getitem__)
        if len(new_id) != len(self) or set(new_id) != set(self._node):
            raise ValueError(f"renumbered: the order must list each of the {len(self)} nodes of {self.name} once")
        other = Graph(name or self.name)
        for old in order:
            data = dict(self._node[old])
            data["attrs"] = dict(data["attrs"])
            data["inputs"] = tuple(new_id[i] for i in data["inputs"])
            if any(source >= new_id[old] for source in data["inputs"]):
                raise ValueError(f"renumbered: %{old} comes before its operand in the order")
            other._insert(new_id[old], data)
        other.inputs = [new_id[i] for i in self.inputs]
        other.params = {k: new_id[v] for k, v in self.params.items()}
        other.outputs = [new_id[o] for o in self.outputs]
        other.mutations = [Mutation(m.kind, m.target, new_id[m.node]) for m in self.mutations]
        other.guards = [Guard(new_id[g.node], g.expected, g.how, g.source, g.code) for g in self.guards]
        if self.symbols is not None:
            other.symbols = self.symbols.renumbered(new_id)
        other._next_id = max(new_id.values(), default=-1) + 1
        return other

    # ------------------------------------------------------------------ dumps and checks
    def __str__(self):
        from .text import format_graph
        return format_graph(self)

    def print(self, file=None):
        print(str(self), file=file)

    def verify(self):
        from .verify import verify
        verify(self)
        return self

    def to_json(self, indent=None):
        from .json_format import graph_to_json
        return graph_to_json(self, indent)

    @staticmethod
    def from_json(text):
        from .json_format import graph_from_json
        return graph_from_json(text)

    def to_dot(self):
        from .dot import graph_to_dot
        return graph_to_dot(self)

    def to_graphml(self):
        from .json_format import graph_to_graphml
        return graph_to_graphml(self)

    def stats(self):
        from .stats import graph_stats
        return graph_stats(self)

    def __eq__(self, other):
        if not isinstance(other, Graph):
            return NotImplemented
        return self.to_json() == other.to_json()

    __hash__ = object.__hash__


def _reachable(edges, start):
    found, stack = set(), [start]
    while stack:
        for other in edges[stack.pop()]:
            if other not in found:
                found.add(other)
                stack.append(other)
    found.discard(start)
    return found


def _size(d):
    return d if isinstance(d, SymDim) else int(d)


def _dtype_name(dtype):
    return dtype.name if isinstance(dtype, dtypes.DType) else str(dtype)


def primitive_of(node):
    """The Primitive of a non-placeholder node."""
    return PRIMITIVES[node.op]
