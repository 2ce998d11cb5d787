"""Loop-nest building blocks shared by lowering (compiler/lowering.py and its contraction
and opaque-op parts): row-major index maps of buffers, the scope statements are placed in
while a nest is built, and the collapsing of perfectly nested loops into one.
"""
from . import loop_ir as L


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


def count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class Scope:
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
            return Scope(self.top, self.loops[:depth] + list(loops))
        stop = self.loops[depth] if depth < len(self.loops) else self.before
        return Scope(self.top, self.loops[:depth], stop)

    @property
    def key(self):
        """Where this scope's statements go, by identity (the body, the loops, the statement
        to precede): lowering memoizes values per key and keeps the scope alive beside each
        entry, so no id is reused by a later object while the memo lives."""
        return (id(self.top), *(id(loop) for loop in self.loops), id(self.before))


def same_strides(strides, wanted, shape):
    """Equal strides, ignoring dims of size 1 (their stride never matters)."""
    return all(a == b or d == 1 for a, b, d in zip(strides, wanted, shape))


def pad_vars(rvars, extents):
    """The reduction index with zeros for the extent-1 axes loop_nest left out."""
    return tuple(rvars)[:len(extents)]


def in_range(positions, sizes):
    """(all positions in [0, size), positions clamped into range)."""
    conds = []
    for p, size in zip(positions, sizes):
        conds += [L.icompare("ge", p, 0), L.icompare("lt", p, size)]
    return L.logical_and(*conds), tuple(L.clamp(p, 0, size - 1) for p, size in zip(positions, sizes))


def downstream(graph, group, anchor):
    members = set(group.nodes)
    down = {anchor}
    for n in group.nodes:
        if any(i in down for i in graph.node(n).inputs) and n in members:
            down.add(n)
    return down


def nest_into(body, loops, stmt):
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
    if not isinstance(inner.extent, int):
        return None  # (a division by a size at run time in the innermost loop costs more than it saves)
    k = L.var(f"{outer.name}_{inner.name}", L.times(outer.extent, inner.extent))
    mapping = {outer.var: L.ifloordiv(k, inner.extent), inner.var: L.imod(k, inner.extent)}
    body = [substitute_statement(s, mapping) for s in inner.body]
    for stmt in L.walk_statements(body):
        for e in L.statement_exprs(stmt):
            for x in e.walk():
                if x.op in ("floordiv", "mod", "floordiv_by", "mod_by") and k.attr[0] in L.vars_in(x):
                    return None
    return L.Loop(k, body, outer.parallel)


def substitute_statement(stmt, mapping):
    sub = lambda e: L.substitute(e, mapping) if e is not None else None  # noqa: E731
    if isinstance(stmt, L.Loop):
        return L.Loop(stmt.var, [substitute_statement(s, mapping) for s in stmt.body], stmt.parallel)
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
