"""Random but valid ember IR graphs for property tests of the passes and backends.

    from hypothesis import given, settings
    from graph_gen import random_graphs

    @given(random_graphs())
    def test_something(case):
        graph, inputs = case            # a verified ember.ir.Graph and its float32 input arrays
        expected = interpret(graph, *inputs)

API:
- `random_graphs(min_ops=3, max_ops=25)`: hypothesis strategy of `(graph, inputs)` pairs.
  The graph has 1-3 float32 `input` placeholders (0-3 dims, each dim 1-5), then `min_ops` to
  `max_ops` op applications drawn from: unary (exp of a clamped value, tanh, sigmoid, relu,
  neg, abs, sqrt(abs(x)+1), log(abs(x)+1)), broadcasting binary (add, sub, mul,
  div by abs(y)+1, maximum, minimum), where(comparison, a, b), reductions (sum, amax over
  random axes, keepdims either way), movement (reshape, permute, broadcast_to, slice with
  steps, pad, concat, flip), matmul, and scalar or small array `constant` nodes. Outputs
  are 1-3 distinct nodes: the last one built (rarely a `constant`) and up to two earlier
  computed nodes; everything else may be dead code.
  Every node is added with the shape/dtype its primitive's `infer` gives, so the graph
  verifies. No params, mutations or guards.
- `inputs_for(graph, draw)`: draw float32 arrays in [-2, 2] for `graph.inputs` (inside
  another `@st.composite`); `random_inputs(graph, seed)` does the same from a seed.
Values stay well conditioned: each node carries a bound on |value|; an operand whose bound
exceeds 100 is squashed by tanh first, exp only sees values clamped to [-3, 3], log and sqrt
only see abs(x)+1, divisors are abs(y)+1. Every tensor has at most 512 elements.
Comparisons (feeding `where`) are the one place where a backend's last-bit rounding could
change a result by more than rounding: they compare unrelated values, so a tie that
rounding could flip is unlikely but not impossible.
"""
import numpy as np
from hypothesis import strategies as st

from ember.ir import Graph
from ember.ops import PRIMITIVES

MAX_ELEMENTS = 512
SQUASH_ABOVE = 100.0
INPUT_BOUND = 2.0

OP_FAMILIES = ("unary", "unary", "binary", "binary", "where", "reduce", "movement", "movement",
               "matmul", "constant")
UNARY = ("exp", "tanh", "sigmoid", "relu", "neg", "abs", "sqrt", "log")
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum")
COMPARISONS = ("gt", "lt", "ge", "le")
MOVEMENTS = ("reshape", "permute", "broadcast_to", "slice", "pad", "concat", "flip")


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _broadcast(*shapes):
    """The broadcast shape of `shapes`, or None when they do not broadcast."""
    ndim = max(len(s) for s in shapes)
    out = []
    for axis in range(ndim):
        size = 1
        for s in shapes:
            offset = axis - (ndim - len(s))
            if offset < 0 or s[offset] == 1:
                continue
            if size != 1 and s[offset] != size:
                return None
            size = s[offset]
        out.append(size)
    return tuple(out)


def _prime_factors(n):
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors


class _Builder:
    """Adds nodes to a graph through each primitive's shape rule and tracks value bounds."""

    def __init__(self, draw):
        self.draw = draw
        self.graph = Graph("random")
        self.bound = {}  # node id -> upper bound on |value|
        self.pool = []  # float32 node ids operands are drawn from

    def add(self, op, inputs, bound, keep=True, **attrs):
        specs = [self.graph.spec(i) for i in inputs]
        spec = PRIMITIVES[op].infer(*specs, **attrs)
        node = self.graph.add_node(op, inputs, spec.shape, spec.dtype, attrs)
        self.bound[node] = float(bound)
        if keep:
            self.pool.append(node)
        return node

    def shape(self, node):
        return tuple(self.graph.spec(node).shape)

    def scalar(self, keep=False):
        value = self.draw(st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.0, -0.25, 3.0, 1.5]))
        return self.add("constant", (), abs(value), keep=keep, value=value, shape=(), dtype="float32")

    def array_constant(self, shape):
        seed = self.draw(st.integers(0, 2 ** 16))
        value = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
        return self.add("constant", (), 1.0, value=value, shape=tuple(shape), dtype="float32")

    def operand(self):
        """A node from the pool, squashed by tanh if its values could be large."""
        node = self.draw(st.sampled_from(self.pool))
        if self.bound[node] > SQUASH_ABOVE:
            node = self.add("tanh", (node,), 1.0)
        return node

    def partner(self, shape):
        """A second operand that broadcasts with `shape` within the size limit (maybe a scalar)."""
        candidates = [n for n in self.pool if self.shape(n) != shape and (b := _broadcast(shape, self.shape(n)))
                      is not None and _count(b) <= MAX_ELEMENTS]
        same = [n for n in self.pool if self.shape(n) == shape]
        kinds = ("scalar",) + (("same",) if same else ()) + (("other",) if candidates else ())
        choice = self.draw(st.sampled_from(kinds))
        if choice == "scalar":
            return self.scalar()
        node = self.draw(st.sampled_from(candidates if choice == "other" else same))
        if self.bound[node] > SQUASH_ABOVE:
            node = self.add("tanh", (node,), 1.0)
        return node

    # ------------------------------------------------------------------ op families
    def unary(self):
        x = self.operand()
        op = self.draw(st.sampled_from(UNARY))
        b = self.bound[x]
        if op == "exp":
            low = self.add("constant", (), 3.0, keep=False, value=-3.0, shape=(), dtype="float32")
            high = self.add("constant", (), 3.0, keep=False, value=3.0, shape=(), dtype="float32")
            clamped = self.add("minimum", (self.add("maximum", (x, low), min(b, 3.0), keep=False), high),
                               min(b, 3.0), keep=False)
            return self.add("exp", (clamped,), np.exp(min(b, 3.0)))
        if op in ("sqrt", "log"):
            one = self.add("constant", (), 1.0, keep=False, value=1.0, shape=(), dtype="float32")
            shifted = self.add("add", (self.add("abs", (x,), b, keep=False), one), b + 1, keep=False)
            return self.add(op, (shifted,), np.sqrt(b + 1) if op == "sqrt" else np.log(b + 1))
        bound = {"tanh": 1.0, "sigmoid": 1.0}.get(op, b)
        return self.add(op, (x,), bound)

    def binary(self):
        x = self.operand()
        y = self.partner(self.shape(x))
        if self.draw(st.booleans()):
            x, y = y, x
        op = self.draw(st.sampled_from(BINARY))
        bx, by = self.bound[x], self.bound[y]
        if op == "div":
            one = self.add("constant", (), 1.0, keep=False, value=1.0, shape=(), dtype="float32")
            y = self.add("add", (self.add("abs", (y,), by, keep=False), one), by + 1, keep=False)
            return self.add("div", (x, y), bx)
        bound = {"add": bx + by, "sub": bx + by, "mul": bx * by}.get(op, max(bx, by))
        return self.add(op, (x, y), bound)

    def where(self):
        a = self.operand()
        b = self.partner(self.shape(a))
        cond = self.add(self.draw(st.sampled_from(COMPARISONS)), (a, b), 0, keep=False)
        cond_shape = self.shape(cond)
        on_false = self.partner(cond_shape)
        if _broadcast(cond_shape, self.shape(on_false)) is None:
            on_false = self.scalar()
        on_true = self.draw(st.sampled_from((a, b)))
        return self.add("where", (cond, on_true, on_false), max(self.bound[on_true], self.bound[on_false]))

    def reduce(self):
        x = self.operand()
        shape = self.shape(x)
        if not shape:
            return self.unary()
        axes = tuple(sorted(self.draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
        op = self.draw(st.sampled_from(("sum", "amax")))
        keepdims = self.draw(st.booleans())
        reduced = _count([shape[a] for a in axes])
        bound = self.bound[x] * reduced if op == "sum" else self.bound[x]
        return self.add(op, (x,), bound, axes=axes, keepdims=keepdims)

    def matmul(self):
        a = self.operand()
        shape = self.shape(a)
        if len(shape) < 2:
            a = self.add("reshape", (a,), self.bound[a], shape=(1,) + shape if shape else (1, 1))
            shape = self.shape(a)
        candidates = [n for n in self.pool if len(self.shape(n)) >= 2 and self.shape(n)[-2] == shape[-1]
                      and (batch := _broadcast(shape[:-2], self.shape(n)[:-2])) is not None
                      and _count(batch) * shape[-2] * self.shape(n)[-1] <= MAX_ELEMENTS]
        if candidates and self.draw(st.booleans()):
            b = self.draw(st.sampled_from(candidates))
            if self.bound[b] > SQUASH_ABOVE:
                b = self.add("tanh", (b,), 1.0)
        else:  # a @ a^T, or a^T @ a when that result is the smaller one
            batch, rows, cols = _count(shape[:-2]), shape[-2], shape[-1]
            if batch * min(rows, cols) ** 2 > MAX_ELEMENTS:
                return self.unary()
            perm = tuple(range(len(shape) - 2)) + (len(shape) - 1, len(shape) - 2)
            b = self.add("permute", (a,), self.bound[a], perm=perm)
            if cols < rows:
                a, b = b, a
        inner = self.shape(a)[-1]
        return self.add("matmul", (a, b), self.bound[a] * self.bound[b] * inner)

    def constant(self):
        if self.draw(st.booleans()):
            return self.scalar(keep=True)
        shape = self.shape(self.draw(st.sampled_from(self.pool)))
        return self.array_constant(shape)

    def movement(self):
        x = self.operand()
        shape, b = self.shape(x), self.bound[x]
        op = self.draw(st.sampled_from(MOVEMENTS))
        if op == "reshape":
            factors = _prime_factors(_count(shape))
            ndim = self.draw(st.integers(0 if not factors else 1, 4))
            dims = [1] * ndim
            for f in factors:
                dims[self.draw(st.integers(0, ndim - 1))] *= f
            return self.add("reshape", (x,), b, shape=tuple(dims))
        if op == "permute":
            perm = tuple(self.draw(st.permutations(range(len(shape)))))
            return self.add("permute", (x,), b, perm=perm)
        if op == "broadcast_to":
            lead = tuple(self.draw(st.lists(st.integers(1, 3), max_size=2)))
            target = lead + tuple(self.draw(st.integers(1, 4)) if d == 1 else d for d in shape)
            if _count(target) > MAX_ELEMENTS:
                target = shape
            return self.add("broadcast_to", (x,), b, shape=target)
        if op == "slice":
            starts, stops, steps = [], [], []
            for d in shape:
                lo = self.draw(st.integers(0, d - 1))
                starts.append(lo)
                stops.append(self.draw(st.integers(lo + 1, d)))
                steps.append(self.draw(st.integers(1, 3)))
            return self.add("slice", (x,), b, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
        if op == "pad":
            lo = tuple(self.draw(st.integers(0, 2)) for _ in shape)
            hi = tuple(self.draw(st.integers(0, 2)) for _ in shape)
            interior = tuple(self.draw(st.integers(0, 1)) for _ in shape)
            value = self.draw(st.sampled_from([0.0, 1.0, -0.5]))
            padded = [l + h + d + max(d - 1, 0) * i for l, h, i, d in zip(lo, hi, interior, shape)]
            if _count(padded) > MAX_ELEMENTS:
                lo = hi = interior = (0,) * len(shape)
            return self.add("pad", (x,), max(b, abs(value)), lo=lo, hi=hi, interior=interior, value=value)
        if op == "concat":
            if not shape or 2 * _count(shape) > MAX_ELEMENTS:
                return self.add("flip", (x,), b, axes=tuple(range(len(shape))))
            axis = self.draw(st.integers(0, len(shape) - 1))
            partners = [n for n in self.pool if len(self.shape(n)) == len(shape) and all(
                p == q for i, (p, q) in enumerate(zip(self.shape(n), shape)) if i != axis)
                and _count(self.shape(n)) <= _count(shape)]
            others = []
            for n in self.draw(st.lists(st.sampled_from(partners), min_size=1, max_size=2)):
                if _count(shape) + sum(_count(self.shape(o)) for o in others) + _count(self.shape(n)) <= MAX_ELEMENTS:
                    others.append(self.add("tanh", (n,), 1.0) if self.bound[n] > SQUASH_ABOVE else n)
            parts = [x] + others
            if self.draw(st.booleans()):
                parts.reverse()
            return self.add("concat", tuple(parts), max(self.bound[n] for n in parts), axis=axis)
        axes = tuple(sorted(self.draw(st.sets(st.integers(0, max(len(shape) - 1, 0)), max_size=len(shape)))))
        return self.add("flip", (x,), b, axes=axes)


@st.composite
def random_graphs(draw, min_ops=3, max_ops=25):
    """Strategy of `(graph, inputs)`: a verified random float32 graph and its input arrays."""
    builder = _Builder(draw)
    for i in range(draw(st.integers(1, 3))):
        shape = tuple(draw(st.lists(st.integers(1, 5), max_size=3)))
        node = builder.graph.add_input(shape, "float32", f"x{i}")
        builder.bound[node] = INPUT_BOUND
        builder.pool.append(node)
    for _ in range(draw(st.integers(min_ops, max_ops))):
        family = draw(st.sampled_from(OP_FAMILIES))
        getattr(builder, family)()
    graph = builder.graph
    last = max(graph.nx.nodes)
    computed = [n for n in builder.pool if graph.node(n).op not in ("input", "constant") and n != last]
    extra = draw(st.lists(st.sampled_from(computed), max_size=2, unique=True)) if computed else []
    graph.outputs = [last] + extra
    graph.verify()
    return graph, inputs_for(graph, draw)


def random_inputs(graph, seed):
    """float32 arrays uniform in [-2, 2] for every input of `graph`, from `seed`."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(-INPUT_BOUND, INPUT_BOUND, graph.node(i).shape).astype(graph.node(i).dtype)
            for i in graph.inputs]


def inputs_for(graph, draw):
    """Draw input arrays for `graph` inside a `@st.composite` strategy (see random_inputs)."""
    return random_inputs(graph, draw(st.integers(0, 2 ** 32 - 1)))
