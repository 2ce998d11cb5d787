"""Fusion: partition a graph into kernels (groups), each lowerable to ONE loop nest.

Sits after autodiff and (optional) simplify, before memory planning and lowering:
`fuse(graph)` returns a `Fusion` whose groups, in schedule order, are the program's kernels
(a result, not a graph attribute: passes/pipeline.py keeps it). The pass mutates `graph` in place (see "Recomputation").

Every group has one output read by other kernels, its `root` (the last node); every other
member is used only inside the group. Values crossing groups are roots, graph inputs, params
or constants. Graph outputs, mutation sources and guard nodes computed inside a group are
extra `outputs` that only the caller reads; they are evaluated at the root's flat index
(reached through same-shape elementwise ops and reshapes), so a kernel stores them where it
stores the root (e.g. an SGD step's new momentum buffer beside the new weight). Group shapes:

- pointwise (kind "elementwise" or "movement"): elementwise and movement ops only. The loop
  nest iterates over the root's shape; every member is an expression evaluated at the index
  that the movement ops (reshape, permute, broadcast, slice, pad as guarded loads, concat,
  flip, unfold_windows, take/gather as indirect loads) map the root index to.
- reduce (anchor sum/prod/amax/amin/argmax/argmin, kind "reduce"): iterates over the anchor's
  INPUT shape with the reduced axes innermost. The prologue (pointwise members feeding the
  anchor, e.g. pooling's unfold_windows or softmax's exp(x - max)) is evaluated per input
  element; the epilogue runs once per anchor output element after the accumulation.
- window (anchor fold_windows, kind "window"): iterates over the anchor's output with the
  kernel window innermost (a gather of the windows covering each position); prologue and
  epilogue as for reduce.
- contraction (anchor matmul/conv2d/conv2d_grad_*): the contraction plus a pointwise epilogue
  over its output. The prologue holds only index-map movement ops on the operands (e.g. the
  weight's transpose `permute` of a Linear): they are the contraction's loads, not kernels.
- opaque (index_add, scatter_add, index_put, cumsum, argsort, random): the op alone; its
  operands are materialised values.

The epilogue of an anchored group is the `spine` from the anchor to the root plus side
branches. Spine ops keep the index space: elementwise ops whose output shape equals the
spine operand's shape (the side operands broadcast to it), and the bijections reshape and
permute (the root is stored at the index they map to). Side branches are pointwise trees
evaluated at the spine's index. A group holds at most one anchor (contraction, reduction,
window or opaque op): two reductions never share a kernel.

Scalar `constant` nodes (a fill of one value) belong to no group: each group that reads them
lists them in `Group.constants` and inlines the value. Array constants are external values,
like params, and appear in `Group.inputs`.

Recomputation (the cost rule). A pointwise producer whose users fall in several groups is
recomputed in each of them when its recompute tree (itself and the pointwise producers it
would drag along, stopping at materialised values: roots, placeholders, constants) has at
most RECOMPUTE_MAX_OPS elementwise ops and RECOMPUTE_MAX_NODES nodes; otherwise it is
materialised as the root of its own group. Recomputing is made explicit in the IR: the
producer is cloned (name suffix `.recompute`, a new node id) for every extra consuming group,
so each node belongs to exactly one group and the interpreter's results do not change.
Graph outputs, mutation sources and guard nodes are always group outputs (the root or an
extra output); operands of opaque ops are materialised roots.
"""
from dataclasses import dataclass, field

import numpy as np

from ember.ops import PRIMITIVES

ANCHOR_KINDS = ("contraction", "reduce", "window")
# movement ops that are pure index maps: allowed as a contraction's loads
INDEX_MAP_MOVEMENT = frozenset({"reshape", "permute", "broadcast_to", "slice", "pad", "concat", "flip",
                                "unfold_windows"})
# bijective movement ops allowed on an anchored group's spine
SPINE_MOVEMENT = frozenset({"reshape", "permute"})
RECOMPUTE_MAX_OPS = 8
# elementwise ops whose inlined math costs tens of vector operations: never recomputed in a
# second kernel (GELU's erf in its backward); stored once by the first kernel that needs them
COSTLY_OPS = frozenset({"erf", "erfc", "erfinv", "atan", "atan2", "asin", "acos"})
RECOMPUTE_MAX_NODES = 16
NAME_MAX_OPS = 4


def is_external(node):
    """Placeholders and constants: values no kernel computes."""
    return node.op in ("input", "param", "constant")


def is_scalar_constant(node):
    return node.op == "constant" and np.ndim(node.attrs["value"]) == 0


def op_kind(node):
    """The fusion kind of a non-external node; the `random` source counts as opaque."""
    kind = PRIMITIVES[node.op].kind
    return "opaque" if kind == "source" else kind


def is_pointwise(node):
    return op_kind(node) in ("elementwise", "movement")


def required_roots(graph):
    """Nodes that must be materialised group outputs: graph outputs, mutation sources, guards."""
    wanted = list(graph.outputs) + [m.node for m in graph.mutations] + [g.node for g in graph.guards]
    return {n for n in wanted if not is_external(graph.node(n))}


def continues_spine(user, operand):
    """Can `user` extend an anchored group's spine past `operand` without leaving its index space?"""
    if op_kind(user) == "elementwise":
        return tuple(user.shape) == tuple(operand.shape)
    return user.op in SPINE_MOVEMENT


def keeps_flat_index(user, operand):
    """Does `user` read `operand` at the flat (row-major) index it writes?"""
    if user.op == "reshape":
        return True
    if user.op == "broadcast_to" or op_kind(user) == "elementwise":
        return tuple(user.shape) == tuple(operand.shape)
    return False


@dataclass
class Group:
    """One kernel. `nodes` in topological order; `outputs` in topological order, ending with
    the root (earlier ones are extra outputs at the root's flat index that only the caller
    reads); `anchor` is the contraction/reduce/window/opaque node, or the root for pointwise
    groups. `prologue` and `epilogue` split an anchored group's other members (nodes feeding
    the anchor; nodes evaluated at the anchor's output index; a node may be in both); both
    are empty for pointwise groups. `constants` are the scalar constants the kernel inlines."""

    id: int
    kind: str
    nodes: tuple
    anchor: int
    inputs: tuple
    outputs: tuple
    name: str
    constants: tuple = ()
    prologue: tuple = ()
    epilogue: tuple = ()

    @property
    def root(self):
        return self.outputs[-1]

    def describe(self):
        nodes = " ".join(f"%{n}" for n in self.nodes)
        reads = " ".join(f"%{n}" for n in self.inputs) or "-"
        writes = " ".join(f"%{n}" for n in self.outputs)
        return f"g{self.id} {self.name} ({self.kind}): {nodes}  reads {reads}  writes {writes}"


@dataclass
class Fusion:
    """The kernels of a graph: `groups` in schedule order, `group_of` {node id: group id} for
    every node a kernel computes (placeholders and constants have none)."""

    graph: object
    groups: list
    group_of: dict = field(default_factory=dict)

    @property
    def kernel_count(self):
        return len(self.groups)

    def annotate(self, node):
        """For `format_graph(graph, annotate=fusion.annotate)`: `g3 conv2d_bias_relu_...`."""
        group_id = self.group_of.get(node.id)
        if group_id is None:
            return "inlined" if is_scalar_constant(node) else ""
        return f"g{group_id} {self.groups[group_id].name}"

    def format(self):
        """The graph dump with each node's kernel, ending with the kernel count."""
        from ember.ir.text import format_graph
        return format_graph(self.graph, annotate=self.annotate) + f"\nkernels: {self.kernel_count}"

    def describe(self):
        return "\n".join([g.describe() for g in self.groups] + [f"kernels: {self.kernel_count}"])

    def check(self):
        """Prove the partition is a valid schedule of loop-nest-shaped kernels (the rules in
        this module's docstring); raises AssertionError naming the group and node."""
        check_fusion(self.graph, self)
        return self


# ----------------------------------------------------------------------------- partitioning

class _Draft:
    """A group while it is being grown."""

    def __init__(self, root, anchor=None, kind=None, closed=False):
        self.root = root
        self.anchor = anchor
        self.kind = kind  # the anchor's kind, or None for pointwise drafts
        self.closed = closed  # opaque: accepts no producer
        self.members = {root}
        self.loads = set()  # members that feed a contraction's operands
        self.extra_outputs = set()  # required members other than the root


class _Partitioner:
    def __init__(self, graph):
        self.graph = graph
        self.required = required_roots(graph)
        self.draft_of = {}
        self.drafts = []
        self.clone_of = {}  # recomputed clone -> the node it copies

    def new_draft(self, root, **kw):
        draft = _Draft(root, **kw)
        self.drafts.append(draft)
        self.draft_of[root] = draft
        return draft

    def join(self, draft, node_id):
        if self._feeds_loads(draft, node_id):
            draft.loads.add(node_id)
        draft.members.add(node_id)
        self.draft_of[node_id] = draft

    def _feeds_loads(self, draft, node_id):
        return any(u in draft.members and ((u == draft.anchor and draft.kind == "contraction") or u in draft.loads)
                   for u in self.graph.users(node_id))

    def accepts(self, draft, node_id):
        if draft.closed:
            return False
        return not self._feeds_loads(draft, node_id) or self.graph.node(node_id).op in INDEX_MAP_MOVEMENT

    def at_root_index(self, draft, node_id, memo=None):
        """Is `node_id` (a member or a candidate) evaluated at `draft`'s root flat index?"""
        if node_id == draft.root:
            return True
        memo = {} if memo is None else memo
        if node_id not in memo:
            node = self.graph.node(node_id)
            memo[node_id] = all(self.at_root_index(draft, u, memo) and keeps_flat_index(self.graph.node(u), node)
                                for u in self.graph.users(node_id) if u in draft.members)
        return memo[node_id]

    def run(self):
        order = [n.id for n in self.graph.nodes()]
        self.position = {n: i for i, n in enumerate(order)}  # (kernels run in the order of their roots)
        self._grow_anchors(order)
        for node_id in reversed(order):
            if node_id not in self.draft_of and not is_external(self.graph.node(node_id)):
                self._place(node_id)
        return self.drafts

    def _grow_anchors(self, order):
        """Each contraction, reduction and window op anchors a group and takes its spine:
        the chain of single users that keeps its output's index space."""
        graph = self.graph
        for node_id in order:
            node = graph.node(node_id)
            if is_external(node) or op_kind(node) not in ANCHOR_KINDS:
                continue
            draft = self.new_draft(node_id, anchor=node_id, kind=op_kind(node))
            tip = node
            while True:
                users = graph.users(tip.id)
                if len(users) != 1 or users[0] in self.draft_of:
                    break
                user = graph.node(users[0])
                if not is_pointwise(user) or not continues_spine(user, tip):
                    break
                # past a required node (it becomes an extra output) the spine keeps the flat index
                if (tip.id in self.required or draft.extra_outputs) and not keeps_flat_index(user, tip):
                    break
                if tip.id in self.required:
                    draft.extra_outputs.add(tip.id)
                self.join(draft, user.id)
                draft.root = user.id
                tip = user

    def _place(self, node_id):
        """Put a node whose users are all placed: into its consumers' group, recomputed into
        each consuming group, or materialised as a new group's root."""
        graph = self.graph
        node = graph.node(node_id)
        if not is_pointwise(node):  # opaque and random sources stand alone
            self.new_draft(node_id, anchor=node_id, kind="opaque", closed=True)
            return
        consumers = list(dict.fromkeys(self.draft_of[u] for u in graph.users(node_id)))
        if not consumers or not all(self.accepts(d, node_id) for d in consumers):
            self.new_draft(node_id)
        elif node_id in self.required:
            if len(consumers) == 1 and self.at_root_index(consumers[0], node_id):
                self.join(consumers[0], node_id)
                consumers[0].extra_outputs.add(node_id)
            else:
                self.new_draft(node_id)
        elif len(consumers) == 1:
            self.join(consumers[0], node_id)
        else:
            cheap, costly = self._recompute_tree(node_id)
            first = self._first_consumer(node_id, consumers) if costly else None
            if cheap:
                self.join(consumers[0], node_id)
                for draft in consumers[1:]:
                    self.join(draft, self._clone_for(draft, node_id))
            elif first is not None:  # stored beside the first consumer's root, read by the others
                self.join(first, node_id)
                first.extra_outputs.add(node_id)
            else:
                self.new_draft(node_id)

    def _first_consumer(self, node_id, consumers):
        """The consuming draft that runs first (kernels run in the order of their roots), if it
        can compute a costly node once and store it at its root index for the others: it reads
        the node there and depends on none of them. Else None."""
        first = min(consumers, key=lambda d: self.position[d.root])
        if not self.accepts(first, node_id) or not self.at_root_index(first, node_id):
            return None
        others = set().union(*(d.members for d in consumers if d is not first))
        graph, seen, stack = self.graph, set(), list(first.members)
        while stack:  # the ancestors of the draft's members: none may be another consumer's
            for producer in graph.node(stack.pop()).inputs:
                if producer not in seen and producer != node_id:
                    seen.add(producer)
                    stack.append(producer)
        return None if seen & others else first

    def _recompute_tree(self, node_id):
        """(cheap, costly): the cost rule, whether the recompute tree has at most
        RECOMPUTE_MAX_OPS elementwise ops, RECOMPUTE_MAX_NODES nodes and none of COSTLY_OPS;
        and whether it has one of COSTLY_OPS. The tree stops at values that are or will be
        materialised: externals, required nodes, non-pointwise nodes and already placed
        producers (placed before their users only by `_grow_anchors`, so read from outside
        only as roots)."""
        graph = self.graph
        ops = nodes = costly = 0
        seen, stack = set(), [node_id]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            node = graph.node(current)
            if current != node_id and (is_external(node) or current in self.draft_of or current in self.required
                                       or not is_pointwise(node)):
                continue
            nodes += 1
            ops += op_kind(node) == "elementwise"
            costly += node.op in COSTLY_OPS
            stack.extend(node.inputs)
        return ops <= RECOMPUTE_MAX_OPS and nodes <= RECOMPUTE_MAX_NODES and not costly, bool(costly)

    def _clone_for(self, draft, node_id):
        """A copy of `node_id` that the members of `draft` read instead of the original."""
        graph = self.graph
        node = graph.node(node_id)
        clone = graph.add_node(node.op, node.inputs, node.shape, node.dtype, dict(node.attrs),
                               name=f"{node.name}.recompute", source=node.source)
        self.clone_of[clone] = self.clone_of.get(node_id, node_id)
        for user in graph.users(node_id):
            if user in draft.members:
                _rewire(graph, user, node_id, clone)
        return clone


def _rewire(graph, user, old, new):
    """Make `user` read `new` wherever it read `old` (one user only, unlike Graph.replace_uses)."""
    data = graph.nx.nodes[user]
    positions = [k for k, source in enumerate(data["inputs"]) if source == old]
    data["inputs"] = tuple(new if source == old else source for source in data["inputs"])
    for k in positions:
        graph.nx.remove_edge(old, user, key=k)
        graph.nx.add_edge(new, user, key=k)


# ----------------------------------------------------------------------------- groups

def fuse(graph):
    """Partition `graph` into kernels; returns the `Fusion`.

    Mutates `graph` in place only by cloning recomputed producers (new ids; surviving node
    ids, outputs, mutations and guards are untouched)."""
    # kernels run in the order of the graph as given (a schedule pass may have chosen it): a
    # recomputed clone takes its original's place, however networkx would order the new ids
    position = {n.id: i for i, n in enumerate(graph.nodes())}
    partitioner = _Partitioner(graph)
    drafts = partitioner.run()
    for clone, original in partitioner.clone_of.items():
        position[clone] = position[original] - 0.5 + clone / (4 * graph._next_id)
    drafts.sort(key=lambda d: position[d.root])
    groups = [_finish_group(graph, i, d, position) for i, d in enumerate(drafts)]
    _unique_names(groups)
    return Fusion(graph, groups, {n: g.id for g in groups for n in g.nodes})


def _finish_group(graph, group_id, draft, position):
    nodes = tuple(sorted(draft.members, key=position.__getitem__))
    inputs, constants = [], []
    for n in nodes:
        for source in graph.node(n).inputs:
            if source in draft.members:
                continue
            bucket = constants if is_scalar_constant(graph.node(source)) else inputs
            if source not in bucket:
                bucket.append(source)
    anchor = draft.anchor if draft.anchor is not None else draft.root
    if draft.kind is not None:
        kind = draft.kind
        prologue, epilogue = _split_around_anchor(graph, nodes, anchor, draft.root)
    else:
        kind = "elementwise" if any(op_kind(graph.node(n)) == "elementwise" for n in nodes) else "movement"
        prologue, epilogue = (), ()
    outputs = tuple(n for n in nodes if n in draft.extra_outputs) + (draft.root,)
    group = Group(group_id, kind, nodes, anchor, tuple(inputs), outputs, "", tuple(constants),
                  prologue, epilogue)
    group.name = kernel_name(graph, group)
    return group


def _split_around_anchor(graph, nodes, anchor, root):
    """(prologue, epilogue): members feeding the anchor, members evaluated at its output."""
    members = set(nodes)
    before, after = set(), set()
    for n in reversed(nodes):
        if n == anchor:
            continue
        if n == root:
            after.add(n)
            continue
        users = [u for u in graph.users(n) if u in members]
        if any(u == anchor or u in before for u in users):
            before.add(n)
        if any(u != anchor and u in after for u in users):
            after.add(n)
    return tuple(n for n in nodes if n in before), tuple(n for n in nodes if n in after)


def at_root_index(graph, group):
    """The members a kernel evaluates at the root's flat index: those whose every path to
    the root inside the group keeps the flat index (same-shape elementwise ops, reshapes)."""
    members = set(group.nodes)
    aligned = {group.root}
    for n in reversed(group.nodes):
        node = graph.node(n)
        users = [u for u in graph.users(n) if u in members]
        if n != group.root and users and all(u in aligned and keeps_flat_index(graph.node(u), node) for u in users):
            aligned.add(n)
    return aligned


# ----------------------------------------------------------------------------- kernel names

def kernel_name(graph, group):
    """`conv2d_bias_relu_2x6x28x28`, `reduce_sum_64`, `pool_amax_2x6x14x14`,
    `elementwise_mul_add_64x120`: the kind, the ops (at most NAME_MAX_OPS, in order) and the
    shape of the anchor's output (of the root for pointwise groups). A bias add is an add
    right after a contraction whose other operand is broadcast (a residual add is `add`)."""
    shaped = group.root if group.kind in ("elementwise", "movement") else group.anchor
    shape = "x".join(str(d) for d in graph.node(shaped).shape) or "scalar"
    if group.kind in ("elementwise", "movement"):
        wanted = group.kind
        labels = [graph.node(n).op for n in group.nodes if op_kind(graph.node(n)) == wanted]
        return "_".join([group.kind] + _first_unique(labels, NAME_MAX_OPS) + [shape])
    anchor = graph.node(group.anchor)
    if group.kind in ("opaque", "window", "contraction"):
        labels = [_epilogue_label(graph, group, n) for n in group.epilogue
                  if op_kind(graph.node(n)) == "elementwise"]
        return "_".join([anchor.op] + _first_unique(labels, NAME_MAX_OPS - 1) + [shape])
    prefix = "pool" if any(graph.node(n).op == "unfold_windows" for n in group.prologue) else "reduce"
    before = [graph.node(n).op for n in group.prologue if op_kind(graph.node(n)) == "elementwise"]
    after = [graph.node(n).op for n in group.epilogue if op_kind(graph.node(n)) == "elementwise"]
    labels = _first_unique(before[::-1], 1) + [anchor.op] + _first_unique(after, 2)
    return "_".join([prefix] + labels + [shape])


def _epilogue_label(graph, group, node_id):
    node = graph.node(node_id)
    if node.op == "add" and group.kind == "contraction":
        spine_operands = [i for i in node.inputs if i == group.anchor]
        others = [graph.node(i) for i in node.inputs if i != group.anchor]
        if spine_operands and others and tuple(others[0].shape) != tuple(node.shape):
            return "bias"
    return node.op


def _first_unique(labels, limit):
    return list(dict.fromkeys(labels))[:limit]


def _unique_names(groups):
    """Repeated names get `_2`, `_3`, ... in schedule order (the first keeps its name)."""
    taken = set()
    for group in groups:
        name, count = group.name, 1
        while name in taken:
            count += 1
            name = f"{group.name}_{count}"
        taken.add(name)
        group.name = name


# ----------------------------------------------------------------------------- checking

def check_fusion(graph, fusion):
    """Raise AssertionError unless every group is a schedulable, loop-nest-shaped kernel."""
    required = required_roots(graph)
    seen = {}
    produced = set()
    for index, group in enumerate(fusion.groups):
        where = f"{graph.name}: g{group.id} {group.name}"
        assert group.id == index, f"{where}: id is not its schedule index {index}"
        members = set(group.nodes)
        for n in group.nodes:
            assert n not in seen, f"{where}: %{n} is also in g{seen[n]}"
            seen[n] = group.id
            node = graph.node(n)
            assert not is_external(node), f"{where}: %{n} ({node.op}) is a placeholder or constant"
            for source in node.inputs:
                if source in members:
                    continue
                source_node = graph.node(source)
                if is_scalar_constant(source_node):
                    assert source in group.constants, f"{where}: scalar constant %{source} not listed"
                    continue
                assert source in group.inputs, f"{where}: %{n} reads %{source}, not a listed input"
                assert is_external(source_node) or source in produced, \
                    f"{where}: reads %{source} before any earlier group wrote it"
            if n != group.root:
                outside = [u for u in graph.users(n) if u not in members]
                assert not outside or n in group.outputs, \
                    f"{where}: interior %{n} is read outside the group by %{outside[0]}"
                assert (n in required or bool(outside)) == (n in group.outputs), \
                    f"{where}: %{n} is a group output exactly when it is an output/mutation/guard or read by " \
                    f"another kernel (a costly value stored once)"
                if n in group.outputs:
                    assert n in at_root_index(graph, group), \
                        f"{where}: extra output %{n} is not at the root's flat index"
        assert group.outputs[-1] == group.root and set(group.outputs) <= members, \
            f"{where}: bad outputs {group.outputs}"
        anchors = [n for n in group.nodes if not is_pointwise(graph.node(n))]
        assert len(anchors) <= 1, f"{where}: several anchors {anchors}"
        if anchors:
            _check_anchored(graph, group, anchors[0], where)
        produced.update(group.outputs)
    missing = [n.id for n in graph.nodes() if not is_external(n) and n.id not in seen]
    assert not missing, f"{graph.name}: nodes {missing} belong to no group"
    assert fusion.group_of == seen, f"{graph.name}: group_of disagrees with the groups"


def _check_anchored(graph, group, anchor, where):
    kind = op_kind(graph.node(anchor))
    assert group.anchor == anchor and group.kind == kind, f"{where}: anchor %{anchor} kind {kind}"
    if kind == "opaque":
        assert group.nodes == (anchor,), f"{where}: opaque %{anchor} is not alone"
        return
    if kind == "contraction":
        for n in group.prologue:
            assert graph.node(n).op in INDEX_MAP_MOVEMENT, \
                f"{where}: %{n} ({graph.node(n).op}) computes inside a contraction's loads"
    # the spine: every member downstream of the anchor keeps its index space
    members = set(group.nodes)
    downstream = {anchor}
    for n in group.nodes:
        node = graph.node(n)
        spine_operands = [graph.node(i) for i in node.inputs if i in downstream and i in members]
        if n == anchor or not spine_operands:
            continue
        for operand in spine_operands:
            assert continues_spine(node, operand), \
                f"{where}: %{n} ({node.op}) leaves the index space of %{operand.id}"
        downstream.add(n)
    assert group.root in downstream, f"{where}: root %{group.root} does not follow the anchor"
