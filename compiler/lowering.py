"""Lowering: each fused group (passes/fusion.py) becomes one loop-nest `Kernel`
(compiler/loop_ir.py), shared by every target (compiler/driver.py runs it).

How a group becomes loops. The kernel iterates over its root's shape (an anchored group:
over its anchor's output, carried to the root through the spine) and stores
`value(root, index)`, plus the group's extra outputs at the same flat index. `value` walks
the group's members backwards, turning movement ops into index maps (reshape, permute,
broadcast, slice, flip, unfold_windows as affine index arithmetic; pad and concat as clamped
loads chosen by a select; slice_update as a select; take/gather as loads through a loaded,
bounds-checked index) and elementwise ops into the scalar expressions their lowering rules
build (registered beside each primitive in ember/ops, per target). A reduction
(sum/prod/amax/amin/argmax/argmin) becomes an accumulator whose loop over the reduced axes
sits innermost, hoisted to the deepest store loop its kept index depends on; one over at
most UNROLL_REDUCTION elements (a pooling window) becomes a single expression instead.
Values outside the group (inputs, params, array constants, other groups' roots) are loads
from their buffers; scalar constants are inlined. Perfectly nested loops whose accesses stay
linear merge into one (compiler/loop_nests.py), so contiguous kernels run one long loop.

Contractions and fold_windows: compiler/lowering_contractions.py. Opaque ops (which become
loops, which run numpy through a fallback callback): compiler/lowering_opaque.py.
"""
import itertools

import numpy as np

from ember.ops import PRIMITIVES
from ember.ir.symbols import SymDim, aligned_up, provably_at_most
from . import loop_ir as L
from .index_splitting import split_loops_at_conditions
from .loop_nests import Scope, broadcast_index, collapse_loops, count, flat_offset, strides_of
from .lowering_contractions import ContractionLowering
from .lowering_opaque import OpaqueLowering

REDUCE_INIT = {"add": 0, "mul": 1}
UNROLL_REDUCTION = 16  # reductions over at most this many elements become one expression
UNROLL_ARG_REDUCTION = 4  # argmax/argmin: their expressions grow as 2^elements


def lower_program(graph, fusion, use_gemm=False, threads=1, library=None, target=None):
    """One Kernel per fusion group, in schedule order. `use_gemm`: float32 contractions call
    the target's `library` (Gemm and ConvCall statements; else they run as loops), whose
    workspaces `threads` sizes. Without a `library`, the CPU target's (compiler/cpu/library.py).
    `target`: the target's name, which picks its own elementwise lowering rules where it has any."""
    if use_gemm and library is None:
        from .cpu.library import CpuLibrary
        library = CpuLibrary()
    return [lower_group(graph, group, use_gemm, threads, library, target) for group in fusion.groups]


def lower_group(graph, group, use_gemm=False, threads=1, library=None, target=None):
    """The loop-nest Kernel of one fusion group (see the module docstring)."""
    L.forget_index_arithmetic()  # (its memo holds within one kernel: slots are numbered per kernel)
    return _GroupLowering(graph, group, use_gemm, threads, library, target).lower()


class _GroupLowering(ContractionLowering, OpaqueLowering):
    def __init__(self, graph, group, use_gemm, threads, library, target=None):
        self.graph, self.group, self.use_gemm, self.threads = graph, group, use_gemm, threads
        self.library, self.target = library, target
        self.members = set(group.nodes)
        self.slots, self.slot_of = [], {}
        self.errors = []
        self.error_nodes = []  # the node each error's check belongs to (errors are renumbered in node order)
        self.memo = {}
        self.names = itertools.count()
        self.loaded_from = {}  # member node id -> (slot key it was written to, its strides or None)
        self.scratch = 0
        self.reduced_buffers = {}  # reduce node id -> scratch slot (see reduced_rows)

    # ------------------------------------------------------------------ entry
    def lower(self):
        group = self.group
        anchor = self.graph.node(group.anchor)
        body = []
        if group.kind == "opaque":
            kind = self.lower_opaque(anchor, body)
        elif group.kind == "contraction" and self.use_gemm and self.gemm_applies(anchor):
            self.lower_contraction_gemm(anchor, body)
            kind = "contraction"
        else:
            self.store_root(body)
            kind = group.kind
        for stmt in body:
            collapse_loops(stmt)
        body = split_loops_at_conditions(body)
        return L.Kernel(group.name, kind, tuple(group.nodes), self.slots, body, self.errors_in_node_order(body),
                        scratch_bytes=self.scratch)

    def errors_in_node_order(self, body):
        """The kernel's errors numbered in the order of their nodes (the program's order), not
        the order lowering met them (from the root back): where two checks fail, every target
        reports the smaller number, so the op that comes first, as eager mode does."""
        order = sorted(range(len(self.errors)), key=lambda e: (self.error_nodes[e], e))
        if order == list(range(len(order))):
            return self.errors
        renumbered = {old: new for new, old in enumerate(order)}
        for stmt in L.walk_statements(body):
            if isinstance(stmt, L.Check):
                stmt.error = renumbered[stmt.error]
        return [self.errors[old] for old in order]

    # ------------------------------------------------------------------ slots
    def slot(self, key, writes=False):
        if key not in self.slot_of:
            if isinstance(key, tuple):
                dtype, size = key[3], key[4]
            else:
                node = self.graph.node(key)
                dtype, size = node.dtype, count(node.shape)
            self.slot_of[key] = len(self.slots)
            self.slots.append(L.Slot(key, dtype, size, writes))
        index = self.slot_of[key]
        self.slots[index].writes |= writes
        return index

    def root_slot(self):
        return self.slot(self.group.root, writes=True)

    def scratch_slot(self, dtype, size):
        """A group-private buffer; the backend places it after the planned arena."""
        number = sum(1 for k in self.slot_of if isinstance(k, tuple))
        offset = aligned_up(self.scratch, 64)  # (a symbolic size: a bound that keeps the alignment)
        self.scratch = offset + size * np.dtype(dtype).itemsize
        return self.slot(("scratch", self.group.id, number, dtype, size, offset), writes=True)

    def fresh(self, prefix, extent):
        return L.var(f"{prefix}{next(self.names)}", extent)

    # ------------------------------------------------------------------ loop nests
    def loop_nest(self, shape, prefix="i"):
        """(index, loops): a var per dim of extent > 1 (index 0 elsewhere), loops nested."""
        idx, loops = [], []
        for d in shape:
            if d == 1:
                idx.append(L.index(0))
                continue
            v = self.fresh(prefix, d)
            idx.append(v)
            loops.append(L.Loop(v))
        for outer, inner in zip(loops, loops[1:]):
            outer.body.append(inner)
        return tuple(idx), loops

    def store_nest(self, node_id, slot, body, shape=None, index_map=None, extra=()):
        """Append loops over `shape` (default: the node's) storing value(node) into `slot`
        at index_map(loop index) (default: the loop index itself). `extra` nodes (a group's
        extra outputs) are stored beside it, at the same flat index of their own buffers."""
        node_shape = tuple(self.graph.node(node_id).shape)
        shape = node_shape if shape is None else shape
        if 0 in shape:
            return
        idx, loops = self.loop_nest(shape)
        if loops:
            loops[0].parallel = True
            body.append(loops[0])
        scope = Scope(body, loops)
        target = index_map(idx) if index_map else idx
        flat = flat_offset(target, node_shape)
        stores = []
        for other in extra:
            other_shape = tuple(self.graph.node(other).shape)
            other_idx = tuple(L.imod(L.ifloordiv(flat, st), d) for st, d in zip(strides_of(other_shape), other_shape))
            other_slot = self.slot(other, writes=True)
            value = L.cast(self.value(other, other_idx, scope), self.slots[other_slot].dtype)
            stores.append(L.Store(other_slot, flat, value))
        value = L.cast(self.value(node_id, target, scope), self.slots[slot].dtype)
        if loops and not stores and value.op == "load" and value.attr == slot and value.args[0] == flat \
                and not any(not isinstance(s, L.Loop) for s in L.walk_statements(loops)):
            body.remove(loops[0])  # (the value is already in place: a product computed transposed)
            return
        for store in stores + [L.Store(slot, flat, value)]:
            scope.append(store)

    def store_root(self, body):
        """Store the group's root (and extra outputs). An anchored group iterates over its
        anchor's output and stores the root at the index the spine (same-shape elementwise
        ops, reshape, permute) carries it to, so reductions keep simple loops; others
        iterate over the root."""
        group = self.group
        anchor = self.graph.node(group.anchor)
        extra = tuple(o for o in group.outputs if o != group.root)
        if group.kind in ("reduce", "window", "contraction") and group.root != anchor.id:
            if self.spine_index(tuple(L.index(0) for _ in anchor.shape)) is not None:
                self.store_nest(group.root, self.root_slot(), body, shape=tuple(anchor.shape),
                                index_map=self.spine_index, extra=extra)
                return
        self.store_nest(group.root, self.root_slot(), body, extra=extra)

    def spine_index(self, idx):
        """The root's index when the anchor is at `idx`, or None off a simple spine."""
        graph, group = self.graph, self.group
        index_of = {group.anchor: tuple(idx)}
        for n in group.nodes:
            node = graph.node(n)
            spine = [i for i in node.inputs if i in index_of]
            if n in index_of or not spine:
                continue
            source = graph.node(spine[0])
            at = index_of[spine[0]]
            if node.op == "reshape":
                if 0 in tuple(node.shape):  # an empty tensor: no iteration reaches this index
                    index_of[n] = tuple(L.index(0) for _ in node.shape)
                    continue
                flat = flat_offset(at, source.shape)
                index_of[n] = tuple(L.imod(L.ifloordiv(flat, st), d) for st, d in zip(strides_of(node.shape), node.shape))
            elif node.op == "permute":
                index_of[n] = tuple(at[p] for p in node.attrs["perm"])
            elif PRIMITIVES[node.op].kind == "elementwise" and tuple(node.shape) == tuple(source.shape):
                index_of[n] = at
            else:
                return None
        return index_of.get(group.root)

    # ------------------------------------------------------------------ values
    def value(self, node_id, idx, scope):
        """The scalar Expr of node `node_id` at index `idx` (a tuple of int64 Exprs)."""
        node = self.graph.node(node_id)
        if node.op == "constant" and np.ndim(node.attrs["value"]) == 0:
            value = node.attrs["value"]
            if isinstance(value, SymDim):  # (a count of elements in a dynamic program: mean's divisor)
                return L.cast(L.size_of(value), node.dtype)
            return L.const(value, node.dtype)
        if node_id not in self.members or node_id in self.loaded_from:
            key, strides = self.loaded_from.get(node_id, (node_id, None))
            offset = flat_offset(idx, node.shape) if strides is None else \
                L.iadd(*[L.imul(i, st) for i, st in zip(idx, strides)])
            bound = (0, 1) if node.dtype == "bool" else (None, None)
            return L.load(self.slot(key), offset, node.dtype, *bound)
        memo_key = (node_id, idx, scope.key)
        if memo_key not in self.memo:
            self.memo[memo_key] = (self.compute(node, idx, scope), scope)  # the scope pins its ids
        return self.memo[memo_key][0]

    def compute(self, node, idx, scope):
        """A member's value; a float16 or bfloat16 result rounded to its dtype (values of those
        dtypes are computed in float32: as on PyTorch's CPU, each op's result is rounded, also
        where a fused consumer reads it without a store in between)."""
        if PRIMITIVES[node.op].kind == "elementwise":
            value = self.elementwise(node, idx, scope)
        else:
            rule = LOOP_RULES.get(node.op)
            if rule is None:
                raise NotImplementedError(f"lowering: no loop form for {node.op} (%{node.id}, {node.name}) "
                                          f"inside {self.group.name}")
            value = rule(self, node, idx, scope, **node.attrs)
        if node.dtype in ROUNDED_FLOATS and PRIMITIVES[node.op].kind != "movement" and value.dtype == node.dtype:
            value = L.cast(L.cast(value, "float32"), node.dtype)
        return value

    def operand(self, node, k, idx, scope):
        """Operand k of an elementwise node, broadcast to the node's shape."""
        source = node.inputs[k]
        shape = self.graph.node(source).shape
        return self.value(source, broadcast_index(idx, shape, node.shape), scope)

    def elementwise(self, node, idx, scope):
        """The expression the primitive's lowering rule (ember/ops) builds from its operands'."""
        rule = PRIMITIVES[node.op].lowering_for(self.target)
        if rule is None:
            raise NotImplementedError(f"lowering: {node.op} (%{node.id}, {node.name}) has no scalar lowering rule "
                                      f"for the {self.target or 'default'} target")

        def check(cond, exception, message):
            self.errors.append((exception, f"{node.op} ({node.name}): {message}"))
            self.error_nodes.append(node.id)
            scope.append(L.Check(cond, len(self.errors) - 1))
        args = _common_float_dtype([self.operand(node, k, idx, scope) for k in range(len(node.inputs))])
        value = rule(L.ScalarBuilder(check), *args, **node.attrs)
        assert value.dtype == node.dtype, f"{node.op}'s lowering rule gives {value.dtype}, not {node.dtype}"
        return value

    # ------------------------------------------------------------------ movement: index maps
    def move_reshape(self, node, idx, scope, shape):
        source = self.graph.node(node.inputs[0])
        flat = flat_offset(idx, node.shape)
        inner = tuple(L.imod(L.ifloordiv(flat, s), d) for s, d in zip(strides_of(source.shape), source.shape))
        return self.value(source.id, inner, scope)

    def move_permute(self, node, idx, scope, perm):
        inner = [None] * len(perm)
        for k, p in enumerate(perm):
            inner[p] = idx[k]
        return self.value(node.inputs[0], tuple(inner), scope)

    def move_broadcast_to(self, node, idx, scope, shape):
        return self.operand(node, 0, idx, scope)

    def move_slice(self, node, idx, scope, starts, stops, steps):
        inner = tuple(L.iadd(L.imul(i, st), lo) for i, lo, st in zip(idx, starts, steps))
        return self.value(node.inputs[0], inner, scope)

    def move_flip(self, node, idx, scope, axes):
        axes = {a % max(len(node.shape), 1) for a in axes}
        inner = tuple(L.isub(L.index(d - 1), i) if k in axes else i
                      for k, (i, d) in enumerate(zip(idx, node.shape)))
        return self.value(node.inputs[0], inner, scope)

    def move_pad(self, node, idx, scope, lo, hi, interior, value):
        source = self.graph.node(node.inputs[0])
        fill = L.const(value, node.dtype)
        if 0 in source.shape:
            return fill
        conds, inner = [], []
        for i, low, gap, d in zip(idx, lo, interior, source.shape):
            t, step = L.isub(i, low), gap + 1
            conds += [L.icompare("ge", t, 0), L.icompare("le", t, (d - 1) * step)]
            if step > 1:
                conds.append(L.icompare("eq", L.imod(t, step), 0))
            inner.append(L.clamp(L.ifloordiv(t, step), 0, d - 1))
        return L.select(L.logical_and(*conds), self.value(source.id, tuple(inner), scope), fill)

    def move_concat(self, node, idx, scope, axis):
        axis %= len(node.shape)
        pieces, offset = [], 0
        for source in node.inputs:
            size = self.graph.node(source).shape[axis]
            if size:
                inner = list(idx)
                inner[axis] = L.clamp(L.isub(idx[axis], offset), 0, size - 1)
                pieces.append((offset + size, self.value(source, tuple(inner), scope)))
            offset += size
        result = pieces[-1][1]
        for end, piece in reversed(pieces[:-1]):
            result = L.select(L.icompare("lt", idx[axis], end), piece, result)
        return result

    def move_unfold_windows(self, node, idx, scope, kernel, stride, dilation):
        *lead, oh, ow, kh, kw = idx
        h = L.iadd(L.imul(oh, stride[0]), L.imul(kh, dilation[0]))
        w = L.iadd(L.imul(ow, stride[1]), L.imul(kw, dilation[1]))
        return self.value(node.inputs[0], tuple(lead) + (h, w), scope)

    def checked_position(self, raw, size, node, scope):
        """A loaded index (negative counts from the end), bounds-checked, clamped in range."""
        raw = L.cast(raw, L.INDEX)
        wrapped = L.select(L.icompare("lt", raw, 0), L.iadd(raw, size), raw)
        ok = L.logical_and(L.icompare("ge", wrapped, 0), L.icompare("lt", wrapped, size))
        if not (ok.is_const and ok.attr):
            self.errors.append(("IndexError", f"{node.op} ({node.name}): index out of bounds for a dim of size {size}"))
            self.error_nodes.append(node.id)
            scope.append(L.Check(ok, len(self.errors) - 1))
        return L.clamp(wrapped, 0, size - 1)

    def move_take(self, node, idx, scope, axis):
        source = self.graph.node(node.inputs[0])
        indices = self.graph.node(node.inputs[1])
        axis %= len(source.shape)
        q = len(indices.shape)
        raw = self.value(indices.id, idx[axis:axis + q], scope)
        position = self.checked_position(raw, source.shape[axis], node, scope)
        return self.value(source.id, idx[:axis] + (position,) + idx[axis + q:], scope)

    def move_gather(self, node, idx, scope, axis):
        source = self.graph.node(node.inputs[0])
        axis %= len(source.shape)
        raw = self.value(node.inputs[1], idx, scope)
        position = self.checked_position(raw, source.shape[axis], node, scope)
        return self.value(source.id, idx[:axis] + (position,) + idx[axis + 1:], scope)

    def move_slice_update(self, node, idx, scope, starts, stops, steps):
        target, update = node.inputs
        region = self.graph.node(update).shape
        if 0 in region:
            return self.value(target, idx, scope)
        conds, inner = [], []
        for i, lo, st, n in zip(idx, starts, steps, region):
            t = L.isub(i, lo)
            conds += [L.icompare("ge", t, 0), L.icompare("le", t, (n - 1) * st)]
            if st > 1:
                conds.append(L.icompare("eq", L.imod(t, st), 0))
            inner.append(L.clamp(L.ifloordiv(t, st), 0, n - 1))
        return L.select(L.logical_and(*conds), self.value(update, tuple(inner), scope),
                        self.value(target, idx, scope))

    # ------------------------------------------------------------------ reductions
    def reduction(self, scope, depends, extents, combine, dtype, body_fn, position_fn=None):
        """An accumulator over loops of `extents`; `body_fn(inner_scope, rvars)` gives the value
        folded in. Hoisted to the deepest enclosing loop that `depends` (Exprs) reads. A
        reduction of at most UNROLL_REDUCTION elements becomes one expression instead
        (pooling windows), so the loop around it stays innermost and vectorises."""
        # (an argmax's select chain reads the running best twice per element: unrolled, its
        # expression tree doubles with every element, so only short ones are unrolled)
        if provably_at_most(count(extents), UNROLL_ARG_REDUCTION if combine in ("argmax", "argmin") else UNROLL_REDUCTION):
            return self.unrolled_reduction(scope, extents, combine, dtype, body_fn, position_fn)
        used = set().union(*[L.vars_in(e) for e in depends]) if depends else set()
        depth = max((k + 1 for k, loop in enumerate(scope.loops) if loop.name in used), default=0)
        rvars, loops = self.loop_nest(extents, prefix="r")
        name = f"acc{next(self.names)}"
        init = _reduce_init(combine, dtype)
        scope.insert(depth, L.Declare(name, dtype, init))
        index_name = None
        if combine in ("argmax", "argmin"):
            index_name = f"{name}_index"
            scope.insert(depth, L.Declare(index_name, L.INDEX, L.index(0)))
        if loops:
            scope.insert(depth, loops[0])
        inner = scope.inner(depth, loops)
        value = L.cast(body_fn(inner, rvars), dtype)
        position = position_fn(rvars) if position_fn else None
        inner.append(L.Update(name, combine, value, position, index_name))
        return L.acc(index_name or name, L.INDEX if index_name else dtype)

    def unrolled_reduction(self, scope, extents, combine, dtype, body_fn, position_fn):
        best = position = None
        for point in itertools.product(*[range(e) for e in extents]):
            rvars = tuple(L.index(v) for v in point)
            value = L.cast(body_fn(scope, rvars), dtype)
            if best is None:
                best, position = value, (position_fn(rvars) if position_fn else None)
            elif combine in ("argmax", "argmin"):
                wins = L.apply("gt" if combine == "argmax" else "lt", value, best)
                if dtype in L.FLOATS:  # a NaN wins over any number, as numpy's argmax
                    wins = L.apply("logical_or", wins, L.apply("logical_and", L.apply("ne", value, value),
                                                               L.apply("eq", best, best)))
                best, position = L.select(wins, value, best), L.select(wins, position_fn(rvars), position)
            else:
                op = {"add": "add", "mul": "mul", "max": "maximum", "min": "minimum"}[combine]
                best = L.apply(op, best, value)
        if best is None:
            return L.index(0) if combine in ("argmax", "argmin") else _reduce_init(combine, dtype)
        return position if combine in ("argmax", "argmin") else best

    def reduce(self, node, idx, scope, **attrs):
        source = self.graph.node(node.inputs[0])
        shape = tuple(source.shape)
        attrs = node.attrs
        if node.op in ("argmax", "argmin"):
            axis, keepdims = attrs["axis"], attrs["keepdims"]
            axes = tuple(range(len(shape))) if axis is None else ((axis % len(shape),) if shape else ())
        else:
            axes, keepdims = tuple(a % len(shape) for a in attrs["axes"]), attrs["keepdims"]
        kept = [k for k in range(len(shape)) if k not in axes]
        kept_idx = {k: idx[k] if keepdims else idx[position] for position, k in enumerate(kept)}
        extents = tuple(shape[a] for a in axes)

        def body(inner, rvars):
            full = tuple(kept_idx[k] if k in kept_idx else rvars[axes.index(k)] for k in range(len(shape)))
            return self.value(source.id, full, inner)

        if node.op in ("argmax", "argmin"):
            sub_strides = strides_of(extents)
            return self.reduction(scope, list(kept_idx.values()), extents, node.op, source.dtype, body,
                                  lambda rvars: L.iadd(*[L.imul(v, s) for v, s in zip(rvars, sub_strides)]))
        combine = {"sum": "add", "prod": "mul", "amax": "max", "amin": "min"}[node.op]
        dtype = node.dtype if node.dtype != "bool" else "int32"
        if dtype in ROUNDED_FLOATS and combine in ("add", "mul"):
            dtype = "float32"  # (summed in float32 and rounded once, as eagerly)
        if kept and kept[-1] == len(shape) - 1 and shape[-1] > 1 and not provably_at_most(count(extents), UNROLL_REDUCTION):
            slot = self.reduced_rows(node, source, kept, combine, dtype, scope)
            kept_shape = tuple(shape[k] for k in kept)
            offset = flat_offset(tuple(kept_idx[k] for k in kept), kept_shape)
            return L.cast(L.load(slot, offset, dtype), node.dtype)
        result = self.reduction(scope, list(kept_idx.values()), extents, combine, dtype, body)
        return L.cast(result, node.dtype)

    def reduced_rows(self, node, source, kept, combine, dtype, scope):
        """A reduction that keeps the source's innermost axis (a column sum such as a bias
        gradient) as a scratch buffer filled ahead of the kernel's store loops: walk the
        source row by row and combine each contiguous row into the buffer, so the inner loop
        vectorises (an accumulator per output would read the source with a stride, and sit
        inside the store loop that varies the kept axis). Same combine order as the
        accumulator: along the reduced axes in increasing order."""
        if node.id in self.reduced_buffers:
            return self.reduced_buffers[node.id]
        shape = tuple(source.shape)
        kept_shape = tuple(shape[k] for k in kept)
        slot = self.scratch_slot(dtype, count(kept_shape))
        self.reduced_buffers[node.id] = slot
        init_idx, init_loops = self.loop_nest(kept_shape, prefix="z")
        init = L.Store(slot, flat_offset(init_idx, kept_shape), _reduce_init(combine, dtype))
        _nest_statement(init_loops, init, scope)
        idx, loops = self.loop_nest(shape, prefix="c")
        inner = Scope(scope.top, loops, None) if loops else Scope(scope.top, [], scope.loops[0] if scope.loops else None)
        if loops:
            scope.insert(0, loops[0])
        value = L.cast(self.value(source.id, idx, inner), dtype)
        offset = flat_offset(tuple(idx[k] for k in kept), kept_shape)
        op = {"add": "add", "mul": "mul", "max": "maximum", "min": "minimum"}[combine]
        inner.append(L.Store(slot, offset, L.apply(op, L.load(slot, offset, dtype), value)))
        return slot

def _nest_statement(loops, stmt, scope):
    """Put `stmt` inside `loops` (or alone) at the top of the kernel, ahead of the store loops."""
    if loops:
        loops[-1].body.append(stmt)
        scope.insert(0, loops[0])
    else:
        scope.insert(0, stmt)


def _reduce_init(combine, dtype):
    if combine in REDUCE_INIT:
        return L.const(REDUCE_INIT[combine], dtype)
    if dtype == "bool":  # (False is the least value, True the greatest)
        return L.const(combine not in ("max", "argmax"), dtype)
    if combine in ("max", "argmax"):
        return L.const(-np.inf if dtype in L.FLOATS else np.iinfo(dtype).min, dtype)
    return L.const(np.inf if dtype in L.FLOATS else np.iinfo(dtype).max, dtype)


# How each non-elementwise primitive inside a fused group becomes loops (elementwise ones: their
# lowering rules in ember/ops; opaque ones: compiler/lowering_opaque.py OPAQUE_RULES). Called
# as rule(lowering, node, idx, scope, **attrs); tests/test_lowering_coverage.py reads it.
LOOP_RULES = {
    "reshape": _GroupLowering.move_reshape, "permute": _GroupLowering.move_permute,
    "broadcast_to": _GroupLowering.move_broadcast_to, "slice": _GroupLowering.move_slice,
    "flip": _GroupLowering.move_flip, "pad": _GroupLowering.move_pad, "concat": _GroupLowering.move_concat,
    "unfold_windows": _GroupLowering.move_unfold_windows, "take": _GroupLowering.move_take,
    "gather": _GroupLowering.move_gather, "slice_update": _GroupLowering.move_slice_update,
    "sum": _GroupLowering.reduce, "prod": _GroupLowering.reduce, "amax": _GroupLowering.reduce,
    "amin": _GroupLowering.reduce, "argmax": _GroupLowering.reduce, "argmin": _GroupLowering.reduce,
    "matmul": ContractionLowering.loops_matmul, "conv2d": ContractionLowering.loops_conv2d,
    "conv2d_grad_input": ContractionLowering.loops_conv2d_grad_input,
    "conv2d_grad_weight": ContractionLowering.loops_conv2d_grad_weight,
    "fold_windows": ContractionLowering.fold_windows,
}


_FLOAT_WIDTH = {"bfloat16": 0, "float16": 0, "float32": 1, "float64": 2}
ROUNDED_FLOATS = ("float16", "bfloat16")  # computed in float32, each result rounded (see compute)


def _common_float_dtype(args):
    """Float operands of differing dtypes (a bfloat16 tensor times a float32 scalar, as an
    optimizer writes it) cast to the widest, as the primitive's numpy implementation promotes."""
    floats = {a.dtype for a in args if a.dtype in _FLOAT_WIDTH}
    if len(floats) < 2:
        return args
    widest = max(floats, key=_FLOAT_WIDTH.get)
    widest = "float32" if _FLOAT_WIDTH[widest] == 0 else widest  # float16 with bfloat16
    return [L.cast(a, widest) if a.dtype in _FLOAT_WIDTH and a.dtype != widest else a for a in args]
