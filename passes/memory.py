"""Memory planning: one arena for every intermediate buffer of a fused program.

Runs after fusion, before lowering: `plan_memory(graph, fusion)` returns a `MemoryPlan` giving
each kernel output that is not external an offset in one arena.

- Liveness over the group schedule: a buffer lives from the step (group index) that writes it
  to the last step that reads it, both ends included. External values (graph inputs, params,
  constants, graph outputs, mutation sources, guard nodes) get no buffer: the caller owns them.
- In-place reuse: a pointwise kernel may write its output into an input buffer that dies at
  that kernel when the input has the same element count and item size and the kernel reads it
  only at the index it writes (through same-shape elementwise ops and reshapes: no broadcast,
  permute or neighbour reads), so element i is read before it is overwritten. Such buffers
  form a chain sharing one slot (`MemoryPlan.in_place` {output node: input node}).
- Offsets by greedy-by-size (Pisarchyk & Lee 2020, "Efficient memory management for deep
  neural net inference"): slots in decreasing size; each goes into the smallest gap between
  the already placed slots whose lifetimes intersect its own, else above them. A few tie
  orders are tried (SLOT_ORDERS) and the smallest arena kept. Offsets are 64-byte aligned
  and every size here is a buffer's bytes rounded up to 64 (its allocation).
- `lower_bound_bytes`: the most bytes live at one step (a chain counted once), a bound no
  plan with these in-place choices can beat; `naive_bytes`: every buffer in its own slot.
"""
from dataclasses import dataclass, field

import numpy as np

from ember.ir.symbols import HINT, SymDim, evaluate, has_symbols, numel
from .fusion import at_root_index, fuse, is_external, keeps_flat_index

ALIGNMENT = 64
POINTWISE_KINDS = ("elementwise", "movement")


def aligned(nbytes):
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


@dataclass
class Buffer:
    """Where one group output lives: `nbytes` at `offset` from step `first_step` to `last_step`."""

    offset: int
    nbytes: int
    first_step: int
    last_step: int

    @property
    def size(self):
        """Bytes the buffer occupies in the arena (nbytes rounded up to the alignment)."""
        return aligned(self.nbytes)

    def live_at(self, step):
        return self.first_step <= step <= self.last_step


@dataclass
class MemoryPlan:
    """Offsets of every planned buffer in one arena of `arena_bytes`."""

    buffers: dict  # node id -> Buffer
    in_place: dict = field(default_factory=dict)  # output node -> the input node whose slot it takes
    arena_bytes: int = 0
    naive_bytes: int = 0
    lower_bound_bytes: int = 0
    steps: int = 0
    graph_name: str = "graph"

    def describe(self):
        return f"arena: {self.arena_bytes} bytes, naive: {self.naive_bytes} bytes, " \
               f"lower bound: {self.lower_bound_bytes} bytes"

    def annotate(self, node):
        """For `format_graph(graph, annotate=plan.annotate)`: `@128+480 steps 2..5`."""
        buffer = self.buffers.get(node.id)
        return "" if buffer is None else f"@{buffer.offset}" + _lifetime_text(buffer, self.in_place, node.id)

    def check(self):
        """Prove that no two buffers live at the same step overlap in the arena (an in-place
        output may share its input's bytes at the one step where it takes them over).
        Raises AssertionError naming both buffers."""
        for node, buffer in self.buffers.items():
            assert buffer.offset % ALIGNMENT == 0, f"{self.graph_name}: %{node} offset {buffer.offset} is not aligned"
            assert 0 <= buffer.offset and buffer.offset + buffer.nbytes <= self.arena_bytes, \
                f"{self.graph_name}: %{node} [{buffer.offset}, {buffer.offset + buffer.nbytes}) " \
                f"is outside the arena of {self.arena_bytes} bytes"
        for output, source in self.in_place.items():
            a, b = self.buffers[source], self.buffers[output]
            assert a.last_step == b.first_step and a.nbytes == b.nbytes and a.offset == b.offset, \
                f"{self.graph_name}: %{output} cannot take over %{source}'s slot in place"
        items = sorted(self.buffers.items(), key=lambda item: item[1].offset)
        for i, (node_a, a) in enumerate(items):
            for node_b, b in items[i + 1:]:
                if b.offset >= a.offset + a.nbytes:
                    break  # sorted by offset: nothing further overlaps a
                if a.nbytes == 0 or b.nbytes == 0 or a.last_step < b.first_step or b.last_step < a.first_step:
                    continue
                if self._hands_over(node_a, a, node_b, b):
                    continue
                step = max(a.first_step, b.first_step)
                raise AssertionError(
                    f"{self.graph_name}: buffers %{node_a} [{a.offset}, {a.offset + a.nbytes}) steps "
                    f"{a.first_step}..{a.last_step} and %{node_b} [{b.offset}, {b.offset + b.nbytes}) steps "
                    f"{b.first_step}..{b.last_step} overlap while both live at step {step}")
        return self

    def _hands_over(self, node_a, a, node_b, b):
        return (self.in_place.get(node_b) == node_a and a.last_step == b.first_step) or \
               (self.in_place.get(node_a) == node_b and b.last_step == a.first_step)


def external_nodes(graph):
    """Values the caller owns: placeholders, constants, outputs, mutation sources, guards."""
    wanted = set(graph.outputs) | {m.node for m in graph.mutations} | {g.node for g in graph.guards}
    wanted |= {n.id for n in graph.nodes() if is_external(n)}
    return wanted


def nbytes_of(graph, node_id):
    """A node's bytes: an int, or a SymDim in a dynamic graph's symbols."""
    node = graph.node(node_id)
    if has_symbols(node.shape):
        return numel(node.shape) * np.dtype(node.dtype).itemsize
    return int(np.prod(node.shape, dtype=np.int64)) * np.dtype(node.dtype).itemsize


def plan_memory(graph, fusion=None):
    """Plan the arena for `graph` fused by `fusion` (default: `fuse(graph)`, which may clone
    recomputed producers into the graph). Returns the `MemoryPlan`, or for a graph with
    symbolic sizes the `SymbolicMemoryPlan` whose offsets are placed per size at run time."""
    if fusion is None:
        fusion = fuse(graph)
    buffers = _live_intervals(graph, fusion)
    in_place = _in_place_choices(graph, fusion, buffers)
    slots = _chains(buffers, in_place)
    if graph.symbols is not None or any(isinstance(b.nbytes, SymDim) for b in buffers.values()):
        return SymbolicMemoryPlan(buffers, in_place, slots, len(fusion.groups), graph.name)
    return _placed(buffers, in_place, slots, len(fusion.groups), graph.name)


def _placed(buffers, in_place, slots, steps, name):
    """The MemoryPlan of buffers with concrete sizes: offsets by greedy placement."""
    arena = _assign_offsets(buffers, slots)
    live = [0] * steps
    for chain in slots:
        first, last, size = _slot_extent(buffers, chain)
        for step in range(first, last + 1):
            live[step] += size
    return MemoryPlan(buffers, in_place, arena, sum(b.size for b in buffers.values()), max(live, default=0),
                      steps, name)


class SymbolicMemoryPlan:
    """The memory plan of a dynamic program: buffers whose sizes are expressions of the size
    symbols, with their lifetimes and in-place chains fixed at compile time; `at(sizes)` places
    them for one set of sizes (the same greedy placement as a static plan, checked for
    overlaps), which the runtime does once per new size. `order` numbers the slots (a buffer,
    or an in-place chain of buffers sharing one): the program reads the offset of buffer n from
    entry `entry_of[n]` of its offsets table, so an in-place pair has one address in the code. For dumps it reads as
    the plan at every symbol = HINT (`sample`)."""

    SAMPLES = (2, 3, 7, HINT, 1000)  # sizes `check` places every buffer at

    def __init__(self, buffers, in_place, chains, steps, graph_name):
        self.symbolic_buffers, self.in_place, self.chains = buffers, in_place, chains
        self.steps, self.graph_name = steps, graph_name
        # one entry per slot (an in-place chain shares its head's): the program's offsets table
        self.order = sorted(chain[0] for chain in chains)
        entry = {head: k for k, head in enumerate(self.order)}
        self.entry_of = {node: entry[chain[0]] for chain in chains for node in chain}
        self.symbols = sorted({name for b in buffers.values() if isinstance(b.nbytes, SymDim)
                               for name in b.nbytes.symbols})
        self._placed = {}

    def at(self, sizes):
        """The MemoryPlan for `sizes` ({symbol: int}), checked (cached per sizes)."""
        key = tuple(sizes[name] for name in self.symbols)
        plan = self._placed.get(key)
        if plan is None:
            buffers = {n: Buffer(0, int(evaluate(b.nbytes, sizes)), b.first_step, b.last_step)
                       for n, b in self.symbolic_buffers.items()}
            plan = _placed(buffers, self.in_place, self.chains, self.steps, self.graph_name).check()
            if len(self._placed) > 64:
                self._placed.clear()
            self._placed[key] = plan
        return plan

    def sample(self):
        return self.at({name: HINT for name in self.symbols})

    def check(self):
        """Place and check the plan at every size in SAMPLES (every symbol at that size)."""
        for size in self.SAMPLES:
            self.at({name: size for name in self.symbols})
        return self

    def __getattr__(self, name):  # (buffers, arena_bytes, lower_bound_bytes, naive_bytes: the sampled plan's)
        if name in ("buffers", "arena_bytes", "lower_bound_bytes", "naive_bytes"):
            return getattr(self.sample(), name)
        raise AttributeError(name)

    def describe(self):
        """The plan at a few sizes (every symbol at once), each against its lower bound."""
        placed = []
        for size in (2, HINT, 1000):
            plan = self.at({name: size for name in self.symbols})
            ratio = plan.arena_bytes / plan.lower_bound_bytes if plan.lower_bound_bytes else 1.0
            placed.append(f"{size}: arena {plan.arena_bytes} bytes, lower bound {plan.lower_bound_bytes} "
                          f"(x{ratio:.2f})")
        return f"placed per size at run time; with {', '.join(self.symbols) or 'no symbol'} at " + "; ".join(placed)

    def annotate(self, node):
        buffer = self.symbolic_buffers.get(node.id)
        return "" if buffer is None else _lifetime_text(buffer, self.in_place, node.id)


def _lifetime_text(buffer, in_place, node_id):
    """`+480 steps 2..5 in place of %7`: a buffer's size and live steps, for the annotations."""
    shared = f" in place of %{in_place[node_id]}" if node_id in in_place else ""
    return f"+{buffer.nbytes} steps {buffer.first_step}..{buffer.last_step}{shared}"


def _live_intervals(graph, fusion):
    external = external_nodes(graph)
    buffers = {}
    for group in fusion.groups:
        for output in group.outputs:
            if output not in external:
                buffers[output] = Buffer(0, nbytes_of(graph, output), group.id, group.id)
    for group in fusion.groups:
        for source in group.inputs:
            if source in buffers:
                buffers[source].last_step = max(buffers[source].last_step, group.id)
    return buffers


def _in_place_choices(graph, fusion, buffers):
    in_place = {}
    for group in fusion.groups:
        root = group.root
        if group.kind not in POINTWISE_KINDS or root not in buffers:
            continue
        for source in group.inputs:
            if source in buffers and buffers[source].last_step == group.id \
                    and _same_elements(graph, source, root) and _reads_only_at_written_index(graph, group, source):
                in_place[root] = source
                break
    return in_place


def _same_elements(graph, a, b):
    na, nb = graph.node(a), graph.node(b)
    return nbytes_of(graph, a) == nbytes_of(graph, b) and np.dtype(na.dtype).itemsize == np.dtype(nb.dtype).itemsize


def _reads_only_at_written_index(graph, group, source):
    """True when every read of `source` in the group happens at the root's flat index."""
    aligned = at_root_index(graph, group)
    source_node = graph.node(source)
    return all(u in aligned and keeps_flat_index(graph.node(u), source_node)
               for u in graph.users(source) if u in group.nodes)


def _chains(buffers, in_place):
    """Buffers sharing one slot through in-place reuse, each chain in step order."""
    taken_by = {source: output for output, source in in_place.items()}
    chains = []
    for node in buffers:
        if node in in_place:
            continue  # not a chain head
        chain = [node]
        while chain[-1] in taken_by:
            chain.append(taken_by[chain[-1]])
        chains.append(chain)
    return chains


def _slot_extent(buffers, chain):
    return buffers[chain[0]].first_step, buffers[chain[-1]].last_step, max(buffers[n].size for n in chain)


# the orders greedy placement tries; all put bigger slots first (Pisarchyk & Lee's greedy by
# size), they differ in how they break ties and whether long-lived slots go first
SLOT_ORDERS = (
    lambda extent: (-extent[2], extent[0]),  # size, then the earliest first
    lambda extent: (-extent[2], extent[0] - extent[1], extent[0]),  # size, then the longest-lived
    lambda extent: (-extent[2] * (extent[1] - extent[0] + 1), extent[0]),  # bytes x steps
)


def _assign_offsets(buffers, chains):
    """Greedy placement in each of SLOT_ORDERS; keeps the smallest arena and returns its size."""
    extents = [(_slot_extent(buffers, chain), chain) for chain in chains]
    best = None
    for order in SLOT_ORDERS:
        ranked = sorted(extents, key=lambda item: (order(item[0]), item[1][0]))
        offsets, arena = _place_greedily([extent for extent, _ in ranked])
        if best is None or arena < best[0]:
            best = (arena, offsets, ranked)
    arena, offsets, ranked = best
    for offset, (_, chain) in zip(offsets, ranked):
        for node in chain:
            buffers[node].offset = offset
    return arena


def _place_greedily(extents):
    """Each slot goes into the smallest gap between the placed slots whose lifetimes meet
    its own, else above them all. Returns (offsets, arena size)."""
    placed = []  # (offset, size, first, last)
    offsets, arena = [], 0
    for first, last, size in extents:
        overlapping = sorted(p for p in placed if p[2] <= last and first <= p[3] and p[1] > 0)
        best, best_gap, end = None, None, 0
        for offset, other_size, _, _ in overlapping:
            gap = offset - end
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = end, gap
            end = max(end, offset + other_size)
        offset = end if best is None else best
        placed.append((offset, size, first, last))
        offsets.append(offset)
        arena = max(arena, offset + size)
    return offsets, arena
