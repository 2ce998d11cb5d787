"""Index-set splitting of innermost loops, a step of lowering (compiler/lowering.py) after the
loop nests are built and collapsed, before any target writes them.

A concatenation, or the gradient of several slices of one tensor (the sum of their pads:
attention's q, k and v cut out of one projection), lowers to one loop whose every element
evaluates a `select` per piece on a comparison of the loop variable (`i >= 256 ? a[i - 256] :
0.0`), with clamped loads so that the untaken side stays in bounds. Where those comparisons
involve the loop variable alone, the loop is cut at the points where one of them changes its
outcome: in each piece every comparison is decided (the constructors of compiler/loop_ir.py
fold them from the piece's range), the selects and clamps disappear, and each piece is a plain
copy that vectorises. A few pieces at most (MAX_PIECES), innermost sequential loops only, so
code size stays bounded and the threads (or a GPU's grid) still share one loop.
"""
import math

from . import loop_ir as L
from .loop_nests import substitute_statement

MAX_PIECES = 4


def split_loops_at_conditions(body):
    """`body` with each innermost loop that qualifies replaced by its pieces (in order)."""
    out = []
    for stmt in body:
        if isinstance(stmt, L.Loop):
            inner = split_loops_at_conditions(stmt.body)
            if inner != stmt.body:
                stmt = L.Loop(stmt.var, inner, stmt.parallel)
            pieces = _split(stmt, MAX_PIECES)
            if pieces is not None:
                out.extend(pieces)
                continue
        out.append(stmt)
    return out


def _split(loop, budget):
    """The loop's pieces, each cut again where its own conditions became decidable in the
    variable alone (a pad inside a concatenation compares a clamped index until the cut),
    at most `budget` loops in all; None if it is not cut."""
    pieces = _pieces(loop, budget)
    if pieces is None:
        return None
    out = []
    for k, piece in enumerate(pieces):
        again = _split(piece, budget - len(out) - (len(pieces) - k - 1))
        out.extend(again if again is not None else [piece])
    return out


def _pieces(loop, budget):
    extent = loop.extent
    if loop.parallel or not isinstance(extent, int) or any(isinstance(s, L.Loop) for s in loop.body):
        return None  # (a parallel loop stays whole: one region of threads, one GPU grid)
    points = set()
    for stmt in loop.body:
        for e in L.statement_exprs(stmt):
            for x in e.walk():
                if x.op in L.COMPARISONS and x.args and x.args[0].dtype == L.INDEX:
                    points |= _turning_points(x.op, L.isub(x.args[0], x.args[1]), loop.var)
    bounds = [0] + sorted(p for p in points if 0 < p < extent) + [extent]
    if len(bounds) <= 2 or len(bounds) - 1 > budget:
        return None
    name = loop.var.attr[0]
    pieces = []
    for k, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        piece = L.var(f"{name}p{k}", hi - lo)
        mapping = {loop.var: L.iadd(piece, lo)}
        pieces.append(L.Loop(piece, [substitute_statement(s, mapping) for s in loop.body], loop.parallel))
    return pieces


def _turning_points(op, difference, variable):
    """Where `op(difference, 0)` (difference = c*v + k for the loop variable v alone, else
    nothing) changes its outcome as v steps up: each first v of a new outcome."""
    terms, constant = L.terms_of(difference)
    if set(terms) != {variable}:
        return set()
    c = terms[variable]
    root = -constant / c
    test = _OUTCOMES[op]
    return {p for p in (math.floor(root), math.floor(root) + 1, math.ceil(root))
            if test(c * p + constant) != test(c * (p - 1) + constant)}


_OUTCOMES = {"lt": lambda d: d < 0, "le": lambda d: d <= 0, "gt": lambda d: d > 0, "ge": lambda d: d >= 0,
             "eq": lambda d: d == 0, "ne": lambda d: d != 0}
