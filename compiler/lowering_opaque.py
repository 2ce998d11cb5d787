"""Lowering of opaque groups, a part of compiler/lowering.py's group lowering.

Loops (OPAQUE_RULES): cumsum (a serial scan along its axis), index_add / scatter_add /
index_put (a copy of the target, then a serial loop of bounds-checked indexed stores),
random (splitmix64 in integer arithmetic, bit-exact with ember/ops/random_sources.py for
uniform numbers; normal ones by the same Box-Muller transform in float64, with the target's
log1p and cos, so within a few float64 ulp of numpy's). A host-only primitive (ember/ops
`host_only=True`: argsort) becomes a `Callback` to its numpy implementation, run from Python
inside the program's one foreign call, on targets whose capabilities allow host callbacks.
"""
import math

from ember.ops import PRIMITIVES
from ember.ops.random_sources import _GOLDEN, _MIX1, _MIX2
from . import loop_ir as L
from .loop_nests import Scope, count, flat_offset


class OpaqueLowering:
    """Mixin of _GroupLowering: opaque ops as loops, host-only ones as numpy callbacks."""

    def lower_opaque(self, node, body):
        rule = OPAQUE_RULES.get(node.op)
        if rule is not None:
            rule(self, node, body, **node.attrs)
            return "opaque"
        if not PRIMITIVES[node.op].host_only:
            raise NotImplementedError(f"lowering: {node.op} (%{node.id}, {node.name}) has no loop form and is not "
                                      f"declared host-only")
        for source in node.inputs:
            self.slot(source)
        self.root_slot()
        body.append(L.Callback(node.id, node.op))
        return "callback"

    def copy_into_root(self, source, body):
        self.members = set()  # an opaque group's operands are all materialised values
        self.store_nest(source, self.root_slot(), body, shape=tuple(self.graph.node(source).shape))

    def indexed_stores(self, node, shape, body, position_of, value_of, combine):
        """A serial loop over `shape` storing value_of(idx) at root[position_of(idx)]."""
        if 0 in shape:
            return
        idx, loops = self.loop_nest(shape, prefix="j")
        scope = Scope(body, loops)
        target = position_of(idx, scope)
        store = L.Store(self.root_slot(), flat_offset(target, node.shape), L.cast(value_of(idx, scope), node.dtype),
                        combine)
        scope.append(store)
        if loops:
            body.append(loops[0])

    def opaque_index_add(self, node, body, axis):
        self.indexed_update(node, body, axis, "add")

    def opaque_scatter_add(self, node, body, axis):
        target, indices, source = node.inputs
        self.copy_into_root(target, body)

        def position(idx, scope):
            p = self.checked_position(self.value(indices, idx, scope), node.shape[axis], node, scope)
            return idx[:axis] + (p,) + idx[axis + 1:]
        self.indexed_stores(node, tuple(self.graph.node(indices).shape), body, position,
                            lambda idx, scope: self.value(source, idx, scope), "add")

    def opaque_index_put(self, node, body, axis):
        self.indexed_update(node, body, axis, None)

    def indexed_update(self, node, body, axis, combine):
        """index_add / index_put: the target copied into the root, then the source's elements
        stored (combine "add": added) at the positions the index tensor gives along `axis`."""
        target, indices, source = node.inputs
        self.copy_into_root(target, body)
        q = len(self.graph.node(indices).shape)

        def position(idx, scope):
            p = self.checked_position(self.value(indices, idx[axis:axis + q], scope), node.shape[axis], node, scope)
            return idx[:axis] + (p,) + idx[axis + q:]
        self.indexed_stores(node, tuple(self.graph.node(source).shape), body, position,
                            lambda idx, scope: self.value(source, idx, scope), combine)

    def opaque_cumsum(self, node, body, axis):
        self.members = set()
        shape = tuple(node.shape)
        if not shape:
            self.store_nest(node.inputs[0], self.root_slot(), body, shape=())
            return
        if 0 in shape:
            return
        axis %= len(shape)
        outer_shape = shape[:axis] + shape[axis + 1:]
        outer_idx, loops = self.loop_nest(outer_shape)
        if loops:
            loops[0].parallel = True
            body.append(loops[0])
        scope = Scope(body, loops)
        name = f"acc{next(self.names)}"
        scope.insert(len(loops), L.Declare(name, node.dtype, L.const(0, node.dtype)))
        scan_var = self.fresh("s", shape[axis]) if shape[axis] > 1 else L.index(0)
        idx = outer_idx[:axis] + (scan_var,) + outer_idx[axis:]
        inner = Scope(body, loops)
        statements = [L.Update(name, "add", L.cast(self.value(node.inputs[0], idx, inner), node.dtype)),
                      L.Store(self.root_slot(), flat_offset(idx, shape), L.acc(name, node.dtype))]
        if shape[axis] > 1:
            scope.insert(len(loops), L.Loop(scan_var, statements))
        else:
            for s in statements:
                scope.insert(len(loops), s)

    def random(self, node, body, distribution, shape, dtype, a, b):
        """ember/ops/random_sources.py's generator: element i of stream k is splitmix64 of the
        counter i + k * count; normal numbers take streams 0 and 1 through Box-Muller."""
        seed = L.load(self.slot(node.inputs[0]), L.index(0), "int64")
        elements = count(shape)
        if elements == 0:
            return
        i = self.fresh("i", elements) if elements > 1 else L.index(0)
        if distribution == "uniform":
            value = L.apply("add", L.const(a, "float64"),
                            L.apply("mul", L.const(b - a, "float64"), _uniform_bits(seed, i)))
        else:  # a + b * sqrt(-2 log(1 - u1)) * cos(2 pi u2), in numpy's order of operations
            u1, u2 = _uniform_bits(seed, i), _uniform_bits(seed, L.iadd(i, elements))
            radius = L.apply("sqrt", L.apply("mul", L.const(-2.0, "float64"), L.apply("log1p", L.apply("neg", u1))))
            angle = L.apply("cos", L.apply("mul", L.const(2.0 * math.pi, "float64"), u2))
            value = L.apply("add", L.const(a, "float64"),
                            L.apply("mul", L.apply("mul", L.const(b, "float64"), radius), angle))
        store = L.Store(self.root_slot(), i, L.cast(value, dtype))
        body.append(L.Loop(i, [store], parallel=True) if elements > 1 else store)


def _iota(self, node, body, length, start, step, dtype):
    """start + i * step (int64 or float64 arithmetic, as numpy's arange), cast to the dtype."""
    i = self.fresh("i", length)
    if dtype in L.FLOATS:
        value = L.apply("add", L.const(start, "float64"), L.apply("mul", L.cast(i, "float64"), L.const(step, "float64")))
    else:
        value = L.iadd(L.imul(i, int(step)), int(start))
    body.append(L.Loop(i, [L.Store(self.root_slot(), i, L.cast(value, dtype))], parallel=True))


# How each opaque primitive (and the random source) becomes loops: rule(lowering, node, body,
# **attrs). A primitive in none of the tables must be declared host-only (ember/ops).
OPAQUE_RULES = {"cumsum": OpaqueLowering.opaque_cumsum, "index_add": OpaqueLowering.opaque_index_add,
                "scatter_add": OpaqueLowering.opaque_scatter_add, "index_put": OpaqueLowering.opaque_index_put,
                "random": OpaqueLowering.random, "iota": _iota}
# the float math functions (loop_ir.MATH_FUNCTIONS) those loops use, which a target must supply
OPAQUE_MATH_FUNCTIONS = {"random": ("sqrt", "log1p", "cos")}  # normal numbers


def _uniform_bits(seed, counter):
    """A float64 in [0, 1) with 24 random bits: splitmix64 of seed + (counter + 1) * golden."""
    z = L.apply("add", seed, L.apply("mul", L.iadd(counter, 1), _u64(_GOLDEN)))
    for shift, mix in ((30, _MIX1), (27, _MIX2)):
        z = L.apply("mul", L.apply("bitwise_xor", z, L.apply("shift_right_logical", z, L.index(shift))), _u64(mix))
    z = L.apply("bitwise_xor", z, L.apply("shift_right_logical", z, L.index(31)))
    bits = L.apply("shift_right_logical", z, L.index(40))
    return L.apply("mul", L.cast(bits, "float64"), L.const(1.0 / (1 << 24), "float64"))


def _u64(value):
    """A uint64 constant as the int64 with the same bits."""
    value = int(value)
    return L.index(value - (1 << 64) if value >= 1 << 63 else value)
