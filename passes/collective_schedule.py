"""collective schedule: Graph -> Graph whose node order overlaps collectives with computation.

Runs after simplify, before fusion (which orders kernels by node id). A graph without
collectives is returned as it is. Otherwise the nodes are put in a new topological order and
renumbered (`Graph.renumbered`), by a list schedule that always runs the ready node with the
smallest key:

- the nodes a collective's start needs, and the start itself, get the start's position among
  the starts: the values of the first bucket (the last layers' gradients) are computed first,
  then its allreduce starts, then the next bucket's values are computed, ...;
- other nodes come after every start (key = number of starts);
- a collective's wait comes last of all (it blocks), so each wait runs only when nothing
  else can; the nodes that read its result (the optimizer's update) follow it;
- the starts keep their traced order (each waits for the one before): the collective worker
  runs them in submission order, and every rank must submit the same collectives in the same
  order, even where ranks' graphs differ (a constant folded on one rank only).

So a compiled training step starts bucket k's allreduce, computes bucket k+1's gradients while
the collective worker reduces bucket k, and waits only where the reduced values are needed.
"""
import heapq
STARTS = ("all_reduce_start",)
WAITS = ("all_reduce_wait",)


def schedule_collectives(graph):
    """The graph with collectives overlapped (module docstring), and the number of starts."""
    nodes = graph.nodes()
    starts = [n.id for n in nodes if n.op in STARTS]
    if not starts:
        return graph, 0
    position = {n.id: i for i, n in enumerate(nodes)}
    key = {}
    for k, start in enumerate(starts):
        stack = [start]
        while stack:
            node_id = stack.pop()
            if node_id in key:
                continue
            key[node_id] = k
            stack.extend(graph.nx.nodes[node_id]["inputs"])
    last = len(starts)
    for n in nodes:
        if n.id not in key:
            key[n.id] = last + 1 if n.op in WAITS else last
    waiting = {n.id: len(set(n.inputs)) for n in nodes}
    next_start = {before: after for before, after in zip(starts, starts[1:])}
    for after in starts[1:]:
        waiting[after] += 1  # (the start before it)
    ready = [(key[n.id], position[n.id], n.id) for n in nodes if waiting[n.id] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, _, node_id = heapq.heappop(ready)
        order.append(node_id)
        for user in graph.users(node_id) + ([next_start[node_id]] if node_id in next_start else []):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, (key[user], position[user], user))
    if order == [n.id for n in nodes]:
        return graph, len(starts)
    return graph.renumbered(order), len(starts)



def check_start_order(fusion):
    """The kernels start the collectives in traced (tag) order, as every rank must: raises
    AssertionError naming the kernel that breaks it."""
    graph = fusion.graph
    tags = [(group.name, graph.node(group.root).attrs["tag"]) for group in fusion.groups
            if graph.node(group.root).op in STARTS]
    for (_, before), (name, tag) in zip(tags, tags[1:]):
        if tag < before:
            raise AssertionError(f"{graph.name}: kernel {name} starts collective #{tag} after #{before}; every "
                                 f"rank must start collectives in traced order")
