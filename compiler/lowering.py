"""Lowering: each fused group (passes/fusion.py) becomes one loop-nest `Kernel`
(compiler/loop_ir.py), shared by the LLVM CPU backend and a later PTX backend.

How a group becomes loops. The kernel iterates over its root's shape and stores
`value(root, index)`; `value` walks the group's members backwards, turning movement ops
into index maps (reshape/permute/broadcast/slice/flip/unfold_windows as affine index
arithmetic, pad and concat as clamped loads chosen by a select, take/gather as loads through
a loaded, bounds-checked index) and elementwise ops into scalar expressions. A reduction
(sum/prod/amax/amin/argmax/argmin, and a contraction run as plain loops) becomes an
accumulator whose loop over the reduced axes sits innermost, hoisted to the deepest store
loop its kept index depends on. Values outside the group (inputs, params, array constants,
other groups' roots) are loads from their buffers; scalar constants are inlined.

Contractions in float32 become calls of the packed sgemm (compiler/llvm_matmul.py) on
strided views of their operands (materialised into scratch when the prologue's index map is
not a strided view; conv2d and its gradients through im2col/col2im loops), followed by the
epilogue as a loop nest over the output. Other dtypes run the contraction as loops.

Opaque ops: cumsum (a serial scan loop), index_add/scatter_add/index_put (a copy, then a
serial loop of bounds-checked indexed stores) and random with distribution="uniform"
(splitmix64 in integer arithmetic, bit-exact with ember/ops/random_sources.py) are lowered to
loops. argsort and random(distribution="normal") run their numpy implementations through a
fallback callback (`Callback`), as does any op this module does not know.
"""
import itertools

import numpy as np

from ember.ops import PRIMITIVES
from ember.ops.random_sources import _GOLDEN, _MIX1, _MIX2
from . import loop_ir as L

FALLBACK_OPS = ("argsort",)  # always run by numpy
LOOPED_OPAQUE = ("cumsum", "index_add", "scatter_add", "index_put", "random")
CONTRACTIONS = ("matmul", "conv2d", "conv2d_grad_input", "conv2d_grad_weight")
REDUCE_INIT = {"add": 0, "mul": 1}
UNROLL_REDUCTION = 16  # reductions over at most this many elements become one expression
GEMM_MIN_WORK = 4096  # m*n*k below which a float32 matmul runs as loops
DOT_PRODUCT_ROWS = 4  # matmuls of at most this many rows with k-contiguous operands run as loops


def lower_program(graph, fusion, use_gemm=False, threads=1):
    """One Kernel per fusion group, in schedule order. `use_gemm`: float32 contractions call
    the sgemm/conv kernels (else they run as loops); `threads` sizes their workspaces."""
    return [lower_group(graph, group, use_gemm, threads) for group in fusion.groups]


def lower_group(graph, group, use_gemm=False, threads=1):
    """The loop-nest Kernel of one fusion group (see the module docstring)."""
    return _GroupLowering(graph, group, use_gemm, threads).lower()


def strides_of(shape):
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def flat_offset(idx, shape):
    return L.iadd(*[L.imul(i, s) for i, s in zip(idx, strides_of(shape))]) if shape else L.index(0)


def broadcast_index(idx, in_shape, out_shape):
    """The index of an operand of shape `in_shape` broadcast (numpy-style) to `out_shape`."""
    lead = len(out_shape) - len(in_shape)
    return tuple(L.index(0) if d == 1 and out_shape[lead + k] != 1 else idx[lead + k]
                 for k, d in enumerate(in_shape))


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class _Scope:
    """Where a value is being computed: the enclosing loops (outermost first) and the body
    that holds the outermost one. Side statements (hoisted reductions, checks) go here;
    `before` is the statement the innermost body's new statements must precede (the rest of
    an enclosing loop nest that a reduction was hoisted out of)."""

    def __init__(self, top, loops, before=None):
        self.top = top
        self.loops = list(loops)
        self.before = before

    def body_at(self, depth):
        return self.top if depth == 0 else self.loops[depth - 1].body

    def insert(self, depth, stmt):
        """Put `stmt` in the body at `depth`, ahead of what must run after it there."""
        body = self.body_at(depth)
        stop = self.loops[depth] if depth < len(self.loops) else self.before
        for position, existing in enumerate(body):
            if existing is stop:
                body.insert(position, stmt)
                return
        body.append(stmt)

    def append(self, stmt):
        self.insert(len(self.loops), stmt)

    def inner(self, depth, loops):
        """The scope of a nest of `loops` placed at `depth` of this one."""
        if loops:
            return _Scope(self.top, self.loops[:depth] + list(loops))
        stop = self.loops[depth] if depth < len(self.loops) else self.before
        return _Scope(self.top, self.loops[:depth], stop)

    @property
    def key(self):
        return tuple(id(loop) for loop in self.loops) + (id(self.before),)


class _GroupLowering:
    def __init__(self, graph, group, use_gemm, threads):
        self.graph, self.group, self.use_gemm, self.threads = graph, group, use_gemm, threads
        self.members = set(group.nodes)
        self.slots, self.slot_of = [], {}
        self.errors = []
        self.memo = {}
        self.names = itertools.count()
        self.loaded_from = {}  # member node id -> slot key it was materialised into
        self.scratch = 0

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
        return L.Kernel(group.name, kind, tuple(group.nodes), self.slots, body, self.errors,
                        scratch_bytes=self.scratch)

    # ------------------------------------------------------------------ slots
    def slot(self, key, writes=False):
        if key not in self.slot_of:
            if isinstance(key, tuple):
                dtype, size = key[3], key[4]
            else:
                node = self.graph.node(key)
                dtype, size = node.dtype, _count(node.shape)
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
        offset = (self.scratch + 63) // 64 * 64
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
        scope = _Scope(body, loops)
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
            return L.const(node.attrs["value"], node.dtype)
        if node_id not in self.members or node_id in self.loaded_from:
            key = self.loaded_from.get(node_id, node_id)
            bound = (0, 1) if node.dtype == "bool" else (None, None)
            return L.load(self.slot(key), flat_offset(idx, node.shape), node.dtype, *bound)
        memo_key = (node_id, idx, scope.key)
        if memo_key not in self.memo:
            self.memo[memo_key] = self.compute(node, idx, scope)
        return self.memo[memo_key]

    def compute(self, node, idx, scope):
        kind = PRIMITIVES[node.op].kind
        if kind == "elementwise":
            return self.elementwise(node, idx, scope)
        if kind == "movement":
            return getattr(self, "move_" + node.op)(node, idx, scope, **node.attrs)
        if kind == "reduce":
            return self.reduce(node, idx, scope)
        if node.op in CONTRACTIONS:
            return getattr(self, "loops_" + node.op)(node, idx, scope, **node.attrs)
        if node.op == "fold_windows":
            return self.fold_windows(node, idx, scope, **node.attrs)
        raise NotImplementedError(f"lowering: no loop form for {node.op} (%{node.id}, {node.name}) "
                                  f"inside {self.group.name}")

    def operand(self, node, k, idx, scope):
        """Operand k of an elementwise node, broadcast to the node's shape."""
        source = node.inputs[k]
        shape = self.graph.node(source).shape
        return self.value(source, broadcast_index(idx, shape, node.shape), scope)

    def elementwise(self, node, idx, scope):
        args = [self.operand(node, k, idx, scope) for k in range(len(node.inputs))]
        if node.op == "where":
            return L.select(*args)
        if node.op == "convert":
            return L.cast(args[0], node.dtype)
        if node.op.startswith("logical_"):  # numpy: any nonzero value is true
            args = [L.cast(a, "bool") for a in args]
        if node.op in ("floor_divide", "remainder") and node.dtype not in L.FLOATS:
            divisor_ok = L.apply("ne", args[1], L.const(0, args[1].dtype))
            self.errors.append(("ZeroDivisionError", f"{node.op} ({node.name}): integer division by zero"))
            scope.append(L.Check(divisor_ok, len(self.errors) - 1))
        return L.apply(node.op, *args, dtype=node.dtype)

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
        if _count(extents) <= UNROLL_REDUCTION:
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

    def reduce(self, node, idx, scope):
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
        result = self.reduction(scope, list(kept_idx.values()), extents, combine, dtype, body)
        return L.cast(result, node.dtype)

    # ------------------------------------------------------------------ contractions as loops
    def sum_of_products(self, node, idx, scope, extents, product):
        return self.reduction(scope, list(idx), extents, "add", node.dtype, product)

    def loops_matmul(self, node, idx, scope):
        a, b = (self.graph.node(i) for i in node.inputs)
        *batch, m, n = idx
        a_idx = broadcast_index(tuple(batch) + (None,), a.shape[:-1], node.shape[:-1])[:-1]
        b_idx = broadcast_index(tuple(batch) + (None,), b.shape[:-1], node.shape[:-1])[:-1]

        def product(inner, r):
            (k,) = r if r else (L.index(0),)
            return L.apply("mul", self.value(a.id, a_idx + (m, k), inner), self.value(b.id, b_idx + (k, n), inner))
        return self.sum_of_products(node, idx, scope, (a.shape[-1],), product)

    def loops_conv2d(self, node, idx, scope, stride, padding, dilation, groups):
        x, w = (self.graph.node(i) for i in node.inputs)
        n, o, y, xx = idx
        cg, kh, kw = w.shape[1:]
        og = w.shape[0] // groups
        base = L.imul(L.ifloordiv(o, og), cg)

        def product(inner, r):
            c, i, j = _pad_vars(r, (cg, kh, kw))
            h = L.iadd(L.imul(y, stride[0]), L.imul(i, dilation[0]), -padding[0])
            ww = L.iadd(L.imul(xx, stride[1]), L.imul(j, dilation[1]), -padding[1])
            inside, (hc, wc) = _in_range((h, ww), x.shape[2:])
            xv = L.select(inside, self.value(x.id, (n, L.iadd(base, c), hc, wc), inner), L.const(0, x.dtype))
            return L.apply("mul", xv, self.value(w.id, (o, c, i, j), inner))
        return self.sum_of_products(node, idx, scope, (cg, kh, kw), product)

    def loops_conv2d_grad_input(self, node, idx, scope, input_shape, stride, padding, dilation, groups):
        g, w = (self.graph.node(i) for i in node.inputs)
        n, c, h, ww = idx
        cg, kh, kw = w.shape[1:]
        og = w.shape[0] // groups
        group_of_c, ci = L.ifloordiv(c, cg), L.imod(c, cg)
        oh_size, ow_size = g.shape[2:]

        def product(inner, r):
            o, i, j = _pad_vars(r, (og, kh, kw))
            conds, pos = [], []
            for t, s, size in ((L.iadd(h, padding[0], L.imul(i, -dilation[0])), stride[0], oh_size),
                               (L.iadd(ww, padding[1], L.imul(j, -dilation[1])), stride[1], ow_size)):
                conds += [L.icompare("ge", t, 0), L.icompare("lt", L.ifloordiv(t, s), size)]
                if s > 1:
                    conds.append(L.icompare("eq", L.imod(t, s), 0))
                pos.append(L.clamp(L.ifloordiv(t, s), 0, size - 1))
            oo = L.iadd(L.imul(group_of_c, og), o)
            gv = L.select(L.logical_and(*conds), self.value(g.id, (n, oo, *pos), inner), L.const(0, g.dtype))
            return L.apply("mul", gv, self.value(w.id, (oo, ci, i, j), inner))
        return self.sum_of_products(node, idx, scope, (og, kh, kw), product)

    def loops_conv2d_grad_weight(self, node, idx, scope, weight_shape, stride, padding, dilation, groups):
        x, g = (self.graph.node(i) for i in node.inputs)
        o, c, i, j = idx
        og = weight_shape[0] // groups
        cg = weight_shape[1]
        channel = L.iadd(L.imul(L.ifloordiv(o, og), cg), c)

        def product(inner, r):
            n, oh, ow = _pad_vars(r, (g.shape[0],) + tuple(g.shape[2:]))
            h = L.iadd(L.imul(oh, stride[0]), L.imul(i, dilation[0]), -padding[0])
            ww = L.iadd(L.imul(ow, stride[1]), L.imul(j, dilation[1]), -padding[1])
            inside, (hc, wc) = _in_range((h, ww), x.shape[2:])
            xv = L.select(inside, self.value(x.id, (n, channel, hc, wc), inner), L.const(0, x.dtype))
            return L.apply("mul", self.value(g.id, (n, o, oh, ow), inner), xv)
        return self.sum_of_products(node, idx, scope, (g.shape[0],) + tuple(g.shape[2:]), product)

    def fold_windows(self, node, idx, scope, size, stride, dilation):
        """Each output position sums the window entries that cover it (a gather). Where the
        windows do not overlap (pooling's stride >= window span) that is at most one entry,
        found by division instead of a search over the window."""
        g = self.graph.node(node.inputs[0])
        *lead, oh_size, ow_size, kh, kw = g.shape
        *lead_idx, h, w = idx
        if all(s >= d * (k - 1) + 1 for s, d, k in zip(stride, dilation, (kh, kw))):
            conds, pos, offsets = [], [], []
            for t, s, d, n, k in ((h, stride[0], dilation[0], oh_size, kh), (w, stride[1], dilation[1], ow_size, kw)):
                window, within = L.ifloordiv(t, s), L.imod(t, s)
                conds += [L.icompare("lt", window, n), L.icompare("lt", L.ifloordiv(within, d), k)]
                if d > 1:
                    conds.append(L.icompare("eq", L.imod(within, d), 0))
                pos.append(L.clamp(window, 0, n - 1))
                offsets.append(L.clamp(L.ifloordiv(within, d), 0, k - 1))
            value = self.value(g.id, tuple(lead_idx) + tuple(pos) + tuple(offsets), scope)
            return L.select(L.logical_and(*conds), value, L.const(0, g.dtype))

        def body(inner, r):
            i, j = _pad_vars(r, (kh, kw))
            conds, pos = [], []
            for t, s, n in ((L.isub(h, L.imul(i, dilation[0])), stride[0], oh_size),
                            (L.isub(w, L.imul(j, dilation[1])), stride[1], ow_size)):
                conds += [L.icompare("ge", t, 0), L.icompare("lt", L.ifloordiv(t, s), n)]
                if s > 1:
                    conds.append(L.icompare("eq", L.imod(t, s), 0))
                pos.append(L.clamp(L.ifloordiv(t, s), 0, n - 1))
            value = self.value(g.id, tuple(lead_idx) + tuple(pos) + (i, j), inner)
            return L.select(L.logical_and(*conds), value, L.const(0, g.dtype))
        return self.reduction(scope, list(idx), (kh, kw), "add", node.dtype, body)

    # ------------------------------------------------------------------ contractions through sgemm
    def gemm_applies(self, anchor):
        """float32 contractions call the packed kernels, except matrix products too small to
        pay for packing, and products of few rows whose operands both run contiguously along
        k (a Linear layer at batch 1: dot products vectorise better than packing)."""
        if anchor.dtype != "float32" or 0 in anchor.shape:
            return False
        if anchor.op != "matmul":
            return True
        m, n = anchor.shape[-2:]
        k = self.graph.node(anchor.inputs[0]).shape[-1]
        if k == 0 or m * n * k < GEMM_MIN_WORK:
            return False
        if m <= DOT_PRODUCT_ROWS:
            a_view, b_view = self.strided_view(anchor.inputs[0]), self.strided_view(anchor.inputs[1])
            if a_view and b_view and a_view[2][-1] in (0, 1) and b_view[2][-2] in (0, 1):
                return False
        return True

    def strided_view(self, node_id):
        """(offset, strides) when node's value is slot[offset + sum(i_k * strides_k)], else None."""
        node = self.graph.node(node_id)
        symbols = tuple(L.var(f"v{k}", d) for k, d in enumerate(node.shape))
        probe = _Scope([], [])
        value = self.value(node_id, symbols, probe)
        if probe.top or value.op != "load":
            return None
        terms, constant = L.terms_of(value.args[0])
        if any(a.op != "var" or a not in symbols for a in terms):
            return None
        return value.attr, constant, tuple(terms.get(s, 0) for s in symbols)

    def operand_view(self, node_id, body):
        """(slot, offset, strides) of a contraction operand, materialised if it must be."""
        view = self.strided_view(node_id)
        if view is not None:
            return view
        node = self.graph.node(node_id)
        slot = self.scratch_slot(node.dtype, _count(node.shape))
        self.store_nest(node_id, slot, body)
        return slot, 0, strides_of(node.shape)

    def output_slot(self, anchor):
        """Where the contraction writes: the root's buffer when the epilogue keeps its shape
        and layout (then it runs in place), else scratch."""
        group = self.group
        spine_keeps_layout = all(PRIMITIVES[self.graph.node(n).op].kind == "elementwise"
                                 and tuple(self.graph.node(n).shape) == tuple(anchor.shape)
                                 for n in group.epilogue if n in _downstream(self.graph, group, anchor.id))
        if group.root == anchor.id or spine_keeps_layout:
            return self.root_slot()
        return self.scratch_slot(anchor.dtype, _count(anchor.shape))

    def lower_contraction_gemm(self, anchor, body):
        out_slot = self.output_slot(anchor)
        getattr(self, "gemm_" + anchor.op)(anchor, out_slot, body, **anchor.attrs)
        if self.group.root != anchor.id:
            self.loaded_from[anchor.id] = self.slots[out_slot].key
            self.store_root(body)

    def gemm_matmul(self, node, out_slot, body):
        a, b = (self.graph.node(i) for i in node.inputs)
        a_slot, a_off, a_strides = self.operand_view(a.id, body)
        b_slot, b_off, b_strides = self.operand_view(b.id, body)
        *batch, m, n = node.shape
        k = a.shape[-1]
        bidx, loops = self.loop_nest(tuple(batch), prefix="b")
        a_batch = broadcast_index(tuple(bidx) + (None,), a.shape[:-1], node.shape[:-1])[:-1]
        b_batch = broadcast_index(tuple(bidx) + (None,), b.shape[:-1], node.shape[:-1])[:-1]
        a_at = L.iadd(a_off, *[L.imul(i, s) for i, s in zip(a_batch, a_strides)])
        b_at = L.iadd(b_off, *[L.imul(i, s) for i, s in zip(b_batch, b_strides)])
        c_at = L.iadd(*[L.imul(i, s) for i, s in zip(bidx, strides_of(node.shape)[:-2])])
        gemm = L.Gemm(m, n, k, L.View(a_slot, a_at, a_strides[-2], a_strides[-1]),
                      L.View(b_slot, b_at, b_strides[-2], b_strides[-1]), L.View(out_slot, c_at, n, 1))
        _nest_into(body, loops, gemm)

    def contiguous_operand(self, node_id, body):
        """The slot holding node's value in row-major order (scratch if it must be copied)."""
        view = self.strided_view(node_id)
        shape = self.graph.node(node_id).shape
        if view is not None and view[1] == 0 and _same_strides(view[2], strides_of(shape), shape):
            return view[0]
        node = self.graph.node(node_id)
        slot = self.scratch_slot(node.dtype, _count(node.shape))
        self.store_nest(node_id, slot, body)
        return slot

    def conv_call(self, kind, out_slot, body, in0, in1, x_shape, w_shape, stride, padding, dilation, groups):
        """A call of llvm_conv's kernel `kind` on contiguous operands."""
        from .llvm_conv import conv2d_workspace_bytes
        first = self.contiguous_operand(in0, body)
        second = self.contiguous_operand(in1, body)
        slots = max(1, min(self.threads, x_shape[0]))
        workspace_bytes = conv2d_workspace_bytes(kind, x_shape, w_shape, stride, padding, dilation, groups, slots)
        workspace = self.scratch_slot("float32", max(workspace_bytes // 4, 1))
        geometry = tuple(x_shape) + (w_shape[0],) + tuple(w_shape[2:]) + tuple(stride) + tuple(padding) \
            + tuple(dilation) + (groups,)
        body.append(L.ConvCall(kind, first, second, out_slot, tuple(int(g) for g in geometry), workspace, slots))

    def gemm_conv2d(self, node, out_slot, body, stride, padding, dilation, groups):
        x, w = (self.graph.node(i) for i in node.inputs)
        self.conv_call("conv2d", out_slot, body, x.id, w.id, x.shape, w.shape, stride, padding, dilation, groups)

    def gemm_conv2d_grad_input(self, node, out_slot, body, input_shape, stride, padding, dilation, groups):
        g, w = (self.graph.node(i) for i in node.inputs)
        self.conv_call("conv2d_grad_input", out_slot, body, g.id, w.id, input_shape, w.shape, stride, padding,
                       dilation, groups)

    def gemm_conv2d_grad_weight(self, node, out_slot, body, weight_shape, stride, padding, dilation, groups):
        x, g = (self.graph.node(i) for i in node.inputs)
        self.conv_call("conv2d_grad_weight", out_slot, body, x.id, g.id, x.shape, weight_shape, stride, padding,
                       dilation, groups)

    # ------------------------------------------------------------------ opaque ops
    def lower_opaque(self, node, body):
        if node.op == "random" and node.attrs["distribution"] == "uniform":
            self.random_uniform(node, body, **node.attrs)
            return "opaque"
        if node.op in LOOPED_OPAQUE and node.op != "random":
            getattr(self, "opaque_" + node.op)(node, body, **node.attrs)
            return "opaque"
        for source in node.inputs:
            self.slot(source)
        self.root_slot()
        body.append(L.Callback(node.id))
        return "callback"

    def copy_into_root(self, source, body):
        self.members = set()  # an opaque group's operands are all materialised values
        self.store_nest(source, self.root_slot(), body, shape=tuple(self.graph.node(source).shape))

    def indexed_stores(self, node, shape, body, position_of, value_of, combine):
        """A serial loop over `shape` storing value_of(idx) at root[position_of(idx)]."""
        if 0 in shape:
            return
        idx, loops = self.loop_nest(shape, prefix="j")
        scope = _Scope(body, loops)
        target = position_of(idx, scope)
        store = L.Store(self.root_slot(), flat_offset(target, node.shape), L.cast(value_of(idx, scope), node.dtype),
                        combine)
        scope.append(store)
        if loops:
            body.append(loops[0])

    def opaque_index_add(self, node, body, axis):
        target, indices, source = node.inputs
        self.copy_into_root(target, body)
        q = len(self.graph.node(indices).shape)

        def position(idx, scope):
            p = self.checked_position(self.value(indices, idx[axis:axis + q], scope), node.shape[axis], node, scope)
            return idx[:axis] + (p,) + idx[axis + q:]
        self.indexed_stores(node, tuple(self.graph.node(source).shape), body, position,
                            lambda idx, scope: self.value(source, idx, scope), "add")

    def opaque_scatter_add(self, node, body, axis):
        target, indices, source = node.inputs
        self.copy_into_root(target, body)

        def position(idx, scope):
            p = self.checked_position(self.value(indices, idx, scope), node.shape[axis], node, scope)
            return idx[:axis] + (p,) + idx[axis + 1:]
        self.indexed_stores(node, tuple(self.graph.node(indices).shape), body, position,
                            lambda idx, scope: self.value(source, idx, scope), "add")

    def opaque_index_put(self, node, body, axis):
        target, indices, source = node.inputs
        self.copy_into_root(target, body)
        q = len(self.graph.node(indices).shape)

        def position(idx, scope):
            p = self.checked_position(self.value(indices, idx[axis:axis + q], scope), node.shape[axis], node, scope)
            return idx[:axis] + (p,) + idx[axis + q:]
        self.indexed_stores(node, tuple(self.graph.node(source).shape), body, position,
                            lambda idx, scope: self.value(source, idx, scope), None)

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
        scope = _Scope(body, loops)
        name = f"acc{next(self.names)}"
        scope.insert(len(loops), L.Declare(name, node.dtype, L.const(0, node.dtype)))
        scan_var = self.fresh("s", shape[axis]) if shape[axis] > 1 else L.index(0)
        idx = outer_idx[:axis] + (scan_var,) + outer_idx[axis:]
        inner = _Scope(body, loops)
        statements = [L.Update(name, "add", L.cast(self.value(node.inputs[0], idx, inner), node.dtype)),
                      L.Store(self.root_slot(), flat_offset(idx, shape), L.acc(name, node.dtype))]
        if shape[axis] > 1:
            scope.insert(len(loops), L.Loop(scan_var, statements))
        else:
            for s in statements:
                scope.insert(len(loops), s)

    def random_uniform(self, node, body, distribution, shape, dtype, a, b):
        seed = L.load(self.slot(node.inputs[0]), L.index(0), "int64")
        count = _count(shape)
        if count == 0:
            return
        i = self.fresh("i", count) if count > 1 else L.index(0)
        z = L.apply("add", seed, L.apply("mul", L.iadd(i, 1), _u64(_GOLDEN)))
        for shift, mix in ((30, _MIX1), (27, _MIX2)):
            z = L.apply("mul", L.apply("bitwise_xor", z, L.apply("shift_right_logical", z, L.index(shift))), _u64(mix))
        z = L.apply("bitwise_xor", z, L.apply("shift_right_logical", z, L.index(31)))
        bits = L.apply("shift_right_logical", z, L.index(40))
        unit = L.apply("mul", L.cast(bits, "float64"), L.const(1.0 / (1 << 24), "float64"))
        value = L.apply("add", L.const(a, "float64"), L.apply("mul", L.const(b - a, "float64"), unit))
        store = L.Store(self.root_slot(), i, L.cast(value, dtype))
        body.append(L.Loop(i, [store], parallel=True) if count > 1 else store)


def _u64(value):
    """A uint64 constant as the int64 with the same bits."""
    value = int(value)
    return L.index(value - (1 << 64) if value >= 1 << 63 else value)


def _reduce_init(combine, dtype):
    if combine in REDUCE_INIT:
        return L.const(REDUCE_INIT[combine], dtype)
    if combine in ("max", "argmax"):
        return L.const(-np.inf if dtype in L.FLOATS else np.iinfo(dtype).min, dtype)
    return L.const(np.inf if dtype in L.FLOATS else np.iinfo(dtype).max, dtype)


def _same_strides(strides, wanted, shape):
    """Equal strides, ignoring dims of size 1 (their stride never matters)."""
    return all(a == b or d == 1 for a, b, d in zip(strides, wanted, shape))


def _pad_vars(rvars, extents):
    """The reduction index with zeros for the extent-1 axes loop_nest left out."""
    return tuple(rvars)[:len(extents)]


def _in_range(positions, sizes):
    """(all positions in [0, size), positions clamped into range)."""
    conds = []
    for p, size in zip(positions, sizes):
        conds += [L.icompare("ge", p, 0), L.icompare("lt", p, size)]
    return L.logical_and(*conds), tuple(L.clamp(p, 0, size - 1) for p, size in zip(positions, sizes))


def _downstream(graph, group, anchor):
    members = set(group.nodes)
    down = {anchor}
    for n in group.nodes:
        if any(i in down for i in graph.node(n).inputs) and n in members:
            down.add(n)
    return down


def _nest_into(body, loops, stmt):
    if loops:
        loops[-1].body.append(stmt)
        body.append(loops[0])
    else:
        body.append(stmt)


# ----------------------------------------------------------------------------- loop collapsing

def collapse_loops(stmt):
    """Merge perfectly nested loops whose every index use is linear with matching strides
    (the outer's coefficient = the inner's times its extent) into one longer loop, so the
    innermost loop of a contiguous kernel runs over as many elements as possible."""
    if not isinstance(stmt, L.Loop):
        return
    while len(stmt.body) == 1 and isinstance(stmt.body[0], L.Loop):
        inner = stmt.body[0]
        merged = _try_merge(stmt, inner)
        if merged is None:
            break
        stmt.var, stmt.body = merged.var, merged.body
    for child in stmt.body:
        collapse_loops(child)


def _try_merge(outer, inner):
    k = L.var(f"{outer.name}_{inner.name}", outer.extent * inner.extent)
    mapping = {outer.var: L.ifloordiv(k, inner.extent), inner.var: L.imod(k, inner.extent)}
    body = [_substitute_statement(s, mapping) for s in inner.body]
    for stmt in L.walk_statements(body):
        for e in L.statement_exprs(stmt):
            for x in e.walk():
                if x.op in ("floordiv", "mod") and k.attr[0] in L.vars_in(x):
                    return None
    return L.Loop(k, body, outer.parallel)


def _substitute_statement(stmt, mapping):
    sub = lambda e: L.substitute(e, mapping) if e is not None else None  # noqa: E731
    if isinstance(stmt, L.Loop):
        return L.Loop(stmt.var, [_substitute_statement(s, mapping) for s in stmt.body], stmt.parallel)
    if isinstance(stmt, L.Declare):
        return L.Declare(stmt.name, stmt.dtype, sub(stmt.init))
    if isinstance(stmt, L.Update):
        return L.Update(stmt.name, stmt.combine, sub(stmt.value), sub(stmt.position), stmt.index_name)
    if isinstance(stmt, L.Store):
        return L.Store(stmt.slot, sub(stmt.offset), sub(stmt.value), stmt.combine)
    if isinstance(stmt, L.Check):
        return L.Check(sub(stmt.cond), stmt.error)
    if isinstance(stmt, L.Gemm):
        view = lambda v: L.View(v.slot, sub(v.offset), v.rows, v.cols)  # noqa: E731
        return L.Gemm(stmt.m, stmt.n, stmt.k, view(stmt.a), view(stmt.b), view(stmt.c), stmt.beta)
    return stmt
