"""simplify: Graph -> new Graph with dead code, common subexpressions, constant expressions
and algebraic identities removed, to a fixpoint. It runs after tracing/autodiff and before
fusion, so fusion and memory planning see fewer, simpler nodes.

`simplify(graph)` copies the graph (the argument is left untouched) and repeats rounds of
  1. rewrites: each node, in topological order, is offered to the rules registered for its
     op in `RULES`, then to constant folding; a rule returns an existing node that replaces
     it (`Graph.replace_uses`, so outputs, mutations and guards follow) or a `Rewrite` that
     turns the node into another op in place (same id, same shape and dtype);
  2. common subexpression elimination: nodes with equal op, attrs (canonicalised, arrays
     by content), operands, shape and dtype merge into the first one; `random` and ops with effects never merge;
  3. dead code elimination: nodes that reach no output, mutation or guard go; `input`
     placeholders stay (they are the call signature), unused params go unless mutated;
until a round changes nothing. Surviving nodes keep their ids; no node is ever added, so
ids stay in topological order. The result carries `.simplify_stats` (`SimplifyStats`).

Constant folding: a node other than `random` or an op with effects (a collective) whose operands are all `constant` nodes and
whose result has at most FOLD_LIMIT elements becomes a `constant` holding the value the
primitive's numpy impl computes (a scalar value when every element is the same).

The x*0 rule: `mul(x, 0)` becomes a zero constant only for integer dtypes (bool has no mul)
or when x is a constant whose values are all finite. For a float x computed at run time it
stays, because 0 * inf and 0 * nan are nan, not 0.
"""
import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ember.ir.symbols import has_symbols

from ember.ops import PRIMITIVES

FOLD_LIMIT = 4096  # largest result (elements) constant folding materialises
FOLD_INPUT_LIMIT = 1 << 20  # largest operand (elements) it reads
MAX_ROUNDS = 64


@dataclass
class Rewrite:
    """Turn the node being rewritten into `op(*inputs, **attrs)` in place (same id, spec)."""

    op: str
    inputs: tuple
    attrs: dict


@dataclass
class SimplifyStats:
    """What `simplify` changed: how many times each rule fired, and the node counts."""

    counts: Counter = field(default_factory=Counter)
    nodes_before: int = 0
    nodes_after: int = 0
    rounds: int = 0

    @property
    def total(self):
        return sum(self.counts.values())

    def describe(self):
        """`simplify: 57 -> 31 nodes in 3 rounds; dead_code 20, cse 4, mul_one 2`."""
        head = f"simplify: {self.nodes_before} -> {self.nodes_after} nodes in {self.rounds} rounds"
        if not self.counts:
            return head + "; nothing to simplify"
        rules = ", ".join(f"{name} {n}" for name, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{head}; {rules}"


def simplify(graph, max_rounds=MAX_ROUNDS):
    """A simplified copy of `graph` (see the module docstring); `graph` itself is unchanged."""
    result = graph.copy()
    stats = SimplifyStats(nodes_before=len(graph))
    for _ in range(max_rounds):
        stats.rounds += 1
        before = stats.total
        _rewrite_round(result, stats)
        _eliminate_common_subexpressions(result, stats)
        _eliminate_dead_code(result, stats)
        if stats.total == before:
            break
    stats.nodes_after = len(result)
    result.simplify_stats = stats
    return result


# ----------------------------------------------------------------------------- the three steps

def _rewrite_round(graph, stats):
    for node_id in [n.id for n in graph.nodes()]:
        for _ in range(8):  # a node rewritten in place may match another rule
            node = graph.node(node_id)
            if node.is_placeholder:
                break
            fired = _first_rule(graph, node)
            if fired is None:
                break
            name, replacement = fired
            stats.counts[name] += 1
            if isinstance(replacement, Rewrite):
                _rewrite_in_place(graph, node_id, replacement)
                continue
            graph.replace_uses(node_id, replacement)
            break


def _first_rule(graph, node):
    for rule in RULES.get(node.op, []) + GENERIC_RULES:
        replacement = rule(graph, node)
        if replacement is not None:
            return rule.__name__, replacement
    return None


def _rewrite_in_place(graph, node_id, rewrite):
    data = graph.nx.nodes[node_id]
    spec = PRIMITIVES[rewrite.op].infer(*[graph.spec(i) for i in rewrite.inputs], **rewrite.attrs)
    if tuple(spec.shape) != tuple(data["shape"]) or spec.dtype.name != data["dtype"]:
        raise AssertionError(f"simplify: rewriting %{node_id} {data['op']} into {rewrite.op} would change "
                             f"its type {graph.describe(node_id)} -> {spec.dtype.short}{list(spec.shape)}")
    graph.nx.remove_edges_from(list(graph.nx.in_edges(node_id, keys=True)))
    data.update(op=rewrite.op, inputs=tuple(rewrite.inputs), attrs=dict(rewrite.attrs))
    for position, source in enumerate(rewrite.inputs):
        graph.nx.add_edge(source, node_id, key=position)


def _eliminate_common_subexpressions(graph, stats):
    first_of = {}
    for node in graph.nodes():
        if node.is_placeholder or node.op == "random" or PRIMITIVES[node.op].effects:
            continue
        node = graph.node(node.id)  # operands may have been merged above
        if node.op == "constant" and not has_symbols(node.attrs["value"]):
            # by value: 1 and 1.0 in a float32 constant are the same constant
            attrs = _canonical(np.asarray(node.attrs["value"], dtype=node.dtype))
        else:
            attrs = _canonical(node.attrs)
        key = (node.op, node.inputs, tuple(node.shape), node.dtype, attrs)
        kept = first_of.setdefault(key, node.id)
        if kept != node.id:
            graph.replace_uses(node.id, kept)
            stats.counts["cse"] += 1


def _eliminate_dead_code(graph, stats):
    live = set()
    stack = list(graph.outputs) + [m.node for m in graph.mutations] + [g.node for g in graph.guards]
    while stack:
        node_id = stack.pop()
        if node_id not in live:
            live.add(node_id)
            stack.extend(graph.nx.nodes[node_id]["inputs"])
    keep = live | set(graph.inputs) | {graph.params[m.target] for m in graph.mutations if m.kind.startswith("param")}
    dead = [n for n in graph.nx.nodes if n not in keep]
    for node_id in dead:
        graph.remove_node(node_id)
    if dead:
        stats.counts["dead_code"] += len(dead)


def _canonical(value):
    """A hashable key for an attr value: arrays by content, floats by bits, types kept apart."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _canonical(v)) for k, v in value.items())))
    if isinstance(value, (tuple, list)):
        return ("seq", tuple(_canonical(v) for v in value))
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        digest = hashlib.blake2b(data.view(np.uint8).reshape(-1)).hexdigest()
        return ("array", data.dtype.str, data.shape, digest)
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, (int, np.integer)):
        return ("int", int(value))
    if isinstance(value, (float, np.floating)):
        return ("float", float(value).hex())
    if value is None or isinstance(value, str):
        return value
    return ("repr", type(value).__name__, repr(value))


# ----------------------------------------------------------------------------- reading nodes

def _constant_value(graph, node_id):
    """The constant's value array (not broadcast to its shape), or None for other nodes and
    for a value computed from the sizes (a dynamic program's element count)."""
    data = graph.nx.nodes[node_id]
    if data["op"] != "constant" or has_symbols(data["attrs"]["value"]):
        return None
    return np.asarray(data["attrs"]["value"], dtype=data["dtype"])


def _is_constant_equal_to(graph, node_id, number):
    value = _constant_value(graph, node_id)
    return value is not None and bool(np.all(value == number))


def _same_or_broadcast(graph, node, x):
    """`x` if it already has the node's shape and dtype, else x broadcast to the node's shape."""
    spec = graph.spec(x)
    if tuple(spec.shape) == tuple(node.shape) and spec.dtype.name == node.dtype:
        return x
    if spec.dtype.name != node.dtype:
        return None
    return Rewrite("broadcast_to", (x,), {"shape": tuple(node.shape)})


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _constant_rewrite(array, shape, dtype):
    """A `constant` holding `array`: a scalar value when every element is the same (by bits)."""
    array = np.ascontiguousarray(array, dtype=dtype)
    flat = array.reshape(-1)
    if flat.size and np.all(flat.view(np.uint8).reshape(flat.size, -1) == flat[:1].view(np.uint8)):
        value = flat[0].item()
    else:
        value = array.copy()
    return Rewrite("constant", (), {"value": value, "shape": tuple(shape), "dtype": dtype})


# ----------------------------------------------------------------------------- algebraic rules

def _keeps_x(graph, node_id, subtracted):
    """Is this constant a zero that x + 0 (x - 0 when `subtracted`) leaves equal to x? Any zero
    for integers; for floats only -0.0 added or +0.0 subtracted (-0.0 + 0.0 is +0.0: x * 0 + 0
    gives +0.0 where x < 0, and 1 / that is +inf, not -inf)."""
    value = _constant_value(graph, node_id)
    if value is None or not np.all(value == 0):
        return False
    return value.dtype.kind not in "fc" and value.dtype.name != "bfloat16" or bool(
        np.all(np.signbit(value) != subtracted))


def add_zero(graph, node):
    """x + (-0.0) and (-0.0) + x -> x, an integer x + 0 too (broadcast to the result's shape
    when it is larger)."""
    a, b = node.inputs
    if _keeps_x(graph, b, False):
        return _same_or_broadcast(graph, node, a)
    if _keeps_x(graph, a, False):
        return _same_or_broadcast(graph, node, b)
    return None


def sub_zero(graph, node):
    """x - 0.0 -> x."""
    a, b = node.inputs
    return _same_or_broadcast(graph, node, a) if _keeps_x(graph, b, True) else None


def mul_one(graph, node):
    """x * 1 and 1 * x -> x."""
    a, b = node.inputs
    if _is_constant_equal_to(graph, b, 1):
        return _same_or_broadcast(graph, node, a)
    if _is_constant_equal_to(graph, a, 1):
        return _same_or_broadcast(graph, node, b)
    return None


def mul_zero(graph, node):
    """x * 0 -> zeros, for integers or a finite constant x only (0 * inf is nan), with the
    product's sign (-5.0 * 0 is -0.0; where the signs differ, it stays)."""
    for zero, other in (node.inputs, node.inputs[::-1]):
        if not _is_constant_equal_to(graph, zero, 0):
            continue
        other_value = _constant_value(graph, other)
        value = None
        if np.dtype(node.dtype).kind in "biu":
            value = np.zeros((), node.dtype).item()
        elif other_value is not None and np.all(np.isfinite(other_value)):
            negative = np.signbit(np.multiply(other_value, _constant_value(graph, zero)))
            if negative.all() or not negative.any():
                value = np.asarray(-0.0 if negative.all() else 0.0, node.dtype).item()
        if value is not None:
            return Rewrite("constant", (), {"value": value, "shape": tuple(node.shape), "dtype": node.dtype})
    return None


def div_one(graph, node):
    """x / 1 -> x."""
    a, b = node.inputs
    return _same_or_broadcast(graph, node, a) if _is_constant_equal_to(graph, b, 1) else None


def neg_neg(graph, node):
    """neg(neg(x)) -> x."""
    inner = graph.node(node.inputs[0])
    return inner.inputs[0] if inner.op == "neg" else None


def convert_same_dtype(graph, node):
    """convert(x) to x's own dtype -> x (how clone() is recorded)."""
    x = node.inputs[0]
    return x if graph.node(x).dtype == node.dtype else None


def where_known_condition(graph, node):
    """where(c, a, b) with c a constant all true (all false) -> a (b)."""
    cond, on_true, on_false = node.inputs
    value = _constant_value(graph, cond)
    if value is None or value.size == 0:
        return None
    if np.all(value):
        return _same_or_broadcast(graph, node, on_true)
    if not np.any(value):
        return _same_or_broadcast(graph, node, on_false)
    return None


def forget_gradient_flow(graph, node):
    """stop_gradient(x) -> x, overwrite(old, new) and replace_value(old, new) -> new: after
    autodiff they are identities."""
    return node.inputs[-1]


def reduce_no_axes(graph, node):
    """A reduction over no axes that keeps the dtype -> x."""
    x = node.inputs[0]
    return x if not node.attrs["axes"] and graph.spec(x) == node.spec else None


# ----------------------------------------------------------------------------- movement rules

def reshape_same_shape(graph, node):
    """reshape(x) to x's own shape -> x."""
    x = node.inputs[0]
    return x if tuple(graph.node(x).shape) == tuple(node.shape) else None


def reshape_reshape(graph, node):
    """reshape(reshape(x)) -> one reshape of x."""
    inner = graph.node(node.inputs[0])
    if inner.op != "reshape":
        return None
    return Rewrite("reshape", (inner.inputs[0],), {"shape": tuple(node.shape)})


def permute_identity(graph, node):
    """permute(x, (0, 1, ..., n-1)) -> x."""
    perm = tuple(node.attrs["perm"])
    return node.inputs[0] if perm == tuple(range(len(perm))) else None


def permute_permute(graph, node):
    """permute(permute(x, p), q) -> permute(x, p∘q), or x when that is the identity."""
    inner = graph.node(node.inputs[0])
    if inner.op != "permute":
        return None
    outer_perm, inner_perm = node.attrs["perm"], inner.attrs["perm"]
    perm = tuple(inner_perm[p] for p in outer_perm)
    if perm == tuple(range(len(perm))):
        return inner.inputs[0]
    return Rewrite("permute", (inner.inputs[0],), {"perm": perm})


def broadcast_same_shape(graph, node):
    """broadcast_to(x) to x's own shape -> x."""
    x = node.inputs[0]
    return x if tuple(graph.node(x).shape) == tuple(node.shape) else None


def broadcast_broadcast(graph, node):
    """broadcast_to(broadcast_to(x, s), t) -> broadcast_to(x, t)."""
    inner = graph.node(node.inputs[0])
    if inner.op != "broadcast_to":
        return None
    return Rewrite("broadcast_to", (inner.inputs[0],), {"shape": tuple(node.shape)})


def broadcast_scalar_constant(graph, node):
    """broadcast_to(a one-element constant) -> a constant of the full shape, when small."""
    value = _constant_value(graph, node.inputs[0])
    if value is None or value.size != 1 or _count(node.shape) > FOLD_LIMIT:
        return None
    return Rewrite("constant", (), {"value": value.reshape(()).item(), "shape": tuple(node.shape),
                                    "dtype": node.dtype})


def slice_whole(graph, node):
    """A slice that keeps every element (same shape as its operand) -> x."""
    x = node.inputs[0]
    return x if tuple(graph.node(x).shape) == tuple(node.shape) else None


def pad_nothing(graph, node):
    """pad with zero lo, hi and interior padding -> x."""
    attrs = node.attrs
    if any(attrs["lo"]) or any(attrs["hi"]) or any(attrs["interior"]):
        return None
    return node.inputs[0]


def flip_nothing(graph, node):
    """flip over no axes, or only over axes of size 1 -> x."""
    shape = node.shape
    return node.inputs[0] if all(shape[a] <= 1 for a in node.attrs["axes"]) else None


def flip_flip(graph, node):
    """flip(flip(x, a), b) -> flip(x, axes in exactly one of a and b), or x."""
    inner = graph.node(node.inputs[0])
    if inner.op != "flip":
        return None
    ndim = len(node.shape)
    axes = tuple(sorted({a % ndim for a in node.attrs["axes"]} ^ {a % ndim for a in inner.attrs["axes"]}))
    if not axes:
        return inner.inputs[0]
    return Rewrite("flip", (inner.inputs[0],), {"axes": axes})


def concat_single(graph, node):
    """concat of a single operand -> that operand."""
    return node.inputs[0] if len(node.inputs) == 1 else None


# ----------------------------------------------------------------------------- constants

def constant_splat(graph, node):
    """An array constant whose elements are all equal -> a scalar-valued constant."""
    value = node.attrs["value"]
    if not isinstance(value, np.ndarray) or value.size == 0:
        return None
    rewrite = _constant_rewrite(value, node.shape, node.dtype)
    return rewrite if not isinstance(rewrite.attrs["value"], np.ndarray) else None


def fold_constants(graph, node):
    """An op (not random) of constants only, with a small result -> a constant."""
    if node.op in ("constant", "random") or not node.inputs or has_symbols(node.shape) or has_symbols(node.attrs) \
            or _count(node.shape) > FOLD_LIMIT or PRIMITIVES[node.op].effects:
        return None
    operands = []
    for i in node.inputs:
        data = graph.nx.nodes[i]
        if data["op"] != "constant" or _count(data["shape"]) > FOLD_INPUT_LIMIT:
            return None
        operands.append(PRIMITIVES["constant"].impl(**data["attrs"]))
    try:
        with np.errstate(all="ignore"):
            result = np.asarray(PRIMITIVES[node.op].impl(*operands, **node.attrs))
    except (ArithmeticError, ValueError):
        return None  # e.g. integer division by zero: left to raise at run time, as in eager mode
    if result.shape != tuple(node.shape) or result.dtype != np.dtype(node.dtype):
        return None
    return _constant_rewrite(result, node.shape, node.dtype)


RULES = {
    "add": [add_zero],
    "sub": [sub_zero],
    "mul": [mul_one, mul_zero],
    "div": [div_one],
    "neg": [neg_neg],
    "convert": [convert_same_dtype],
    "where": [where_known_condition],
    "sum": [reduce_no_axes],
    "amax": [reduce_no_axes],
    "amin": [reduce_no_axes],
    "prod": [reduce_no_axes],
    "reshape": [reshape_same_shape, reshape_reshape],
    "permute": [permute_identity, permute_permute],
    "broadcast_to": [broadcast_same_shape, broadcast_broadcast, broadcast_scalar_constant],
    "slice": [slice_whole],
    "pad": [pad_nothing],
    "flip": [flip_nothing, flip_flip],
    "concat": [concat_single],
    "constant": [constant_splat],
    "stop_gradient": [forget_gradient_flow],
    "overwrite": [forget_gradient_flow],
    "replace_value": [forget_gradient_flow],
}
GENERIC_RULES = [fold_constants]  # tried on every node after its op's own rules
