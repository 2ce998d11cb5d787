"""Which PTX entries one lowered kernel (compiler/loop_ir.py) becomes, and how each launches.

A GPU has no barrier across the whole grid inside a launch, so a kernel whose top level does
several things in order (a column sum's scratch rows are zeroed, then filled, then copied
out) becomes one launch per step: launches on one stream run in order. Each launch has a
mode, which says how its statements spread over the grid (kernels.py writes them):

- "tiles": a top-level parallel loop that is a contraction (matmul, linear, batched
  matmul, convolutions, with its epilogue): tiled through shared memory, tiled_matmul.py;
  "tiles_split" then "tiles_sum" when its depth is split over blocks.
- "grid": a top-level parallel loop without inner loops worth a block (an elementwise map
  over all elements): its iterations spread over every thread of the grid (grid-stride).
- "rows": a top-level parallel loop whose body reduces (softmax's row max and sum, a row
  mean) or runs an inner loop of at least ROW_LOOP_MIN iterations: one block per iteration
  (block-stride over rows); the block's threads share each inner loop (thread-stride, so
  neighbouring threads touch neighbouring elements), combine their partial accumulators
  with warp shuffles and shared memory (every thread gets the total), and the row's own
  stores are made by the block's first thread. `block_roles` says when a body allows this.
- "block": top-level statements of that same form without a row loop (a sum over all
  elements): one block runs them so; when the reduce loop is long, "partials" then
  "finish" instead: many blocks, then one (split_reductions.py).
- "columns": a serial loop nest whose innermost loop's iterations each own their elements
  (a column sum's fill `for i: for j: acc[j] += x[i, j]`, an embedding gradient's
  `for i: for j: grad[index[i], j] += g[i, j]`, a plain `for j: out[j] = 0`): the innermost
  loop moves outermost and spreads over the grid, each thread running the outer loops for
  its own elements in their order (`interchanged`).
- "thread": everything else runs on the grid's first thread alone: correct for serial
  accumulations whose elements are shared, not fast.
"""
from dataclasses import dataclass

from .. import loop_ir as L
from ..llvm.kernels import accumulators_read

BLOCK_THREADS = 256  # threads per block of a grid launch (the entries' .maxntid)
MAX_BLOCKS = 65535  # a grid-stride loop covers any extent with at most this many blocks
WARP = 32  # a block's threads: a multiple of this (the warp shuffles of "rows"/"block" need whole warps)
ROW_LOOP_MIN = 32  # an inner loop this long makes a parallel loop's iterations blocks ("rows")
COMBINES = ("add", "mul", "max", "min")  # accumulations a block can share (not argmax/argmin)
PAIR_FIRST, PAIR_SECOND = ("partials", "tiles_split"), ("finish", "tiles_sum")  # launches sharing a buffer
EXACT_THREADS = ("tiles", "tiles_split")  # kernels that need exactly BLOCK_THREADS threads per block


@dataclass
class Launch:
    """One PTX entry of kernel number `kernel`: `statements` of its top level, run in `mode`
    (see the module docstring); `extent` is the parallel loop's for "grid" and "rows"."""

    entry: str
    kernel: int
    mode: str
    statements: list
    extent: int = 1
    writes_entry: bool = True  # False: an earlier kernel of the same structure wrote this entry
    partial_bytes: int = 0  # "partials"/"finish": the partial-values buffer the pair shares
    merged: object = None  # the Kernel of a run of row kernels merged into this launch (row_fusion.py)
    through: int = None  # with `merged`: the number of the run's last kernel
    tf32: bool = False  # "tiles"/"tiles_split": multiply on TF32 tensor cores (tensor_cores.py)

    @property
    def last_kernel(self):
        return self.kernel if self.through is None else self.through

    @property
    def blocks(self):
        """Blocks to launch: enough for one iteration per thread, at most MAX_BLOCKS."""
        if self.mode in ("thread", "block", "finish"):
            return 1
        if self.mode == "partials":
            from .split_reductions import partial_blocks, split_plan
            return partial_blocks(split_plan(self.statements)[1])
        if self.mode in ("rows", "tiles", "tiles_split"):  # (extent: rows, or output tiles (x parts))
            return max(1, min(MAX_BLOCKS, self.extent))
        return max(1, min(MAX_BLOCKS, -(-self.extent // BLOCK_THREADS)))

    @property
    def threads(self):
        return 1 if self.mode == "thread" else BLOCK_THREADS


def accumulators_of(stmt):
    """Accumulator names a statement declares, reads or updates."""
    names = accumulators_read([stmt])
    names |= {s.name for s in L.walk_statements([stmt]) if isinstance(s, L.Declare)}
    return names


def plan_launches(kernel, number):
    """The launches of `kernel` (number `number` in its program), in the order they run; none
    for a numpy fallback or an empty kernel (see module docstring)."""
    if kernel.kind == "callback" or not kernel.body:
        return []
    steps = [[stmt] for stmt in kernel.body]
    if _accumulator_crosses(steps):
        steps = [list(kernel.body)]
    modes = [_mode(step) for step in steps]
    steps = [[interchanged(step[0])] if mode == "columns" else step for step, mode in zip(steps, modes)]
    modes = ["grid" if mode == "columns" else mode for mode in modes]
    # runs of single-thread steps share one launch
    merged = []
    for step, mode in zip(steps, modes):
        if merged and mode == "thread" and merged[-1][1] == "thread":
            merged[-1][0].extend(step)
        else:
            merged.append((list(step), mode))
    launches = []
    for k, (statements, mode) in enumerate(merged):
        entry = kernel.name if len(merged) == 1 else f"{kernel.name}__step{k}"  # (fusion names kernels name_2)
        extent = statements[0].extent if mode in ("grid", "rows") else 1
        if mode == "tiles":
            from .tiled_matmul import depth_splits, matmul_nest, partial_bytes
            nest = matmul_nest(statements[0])
            splits = depth_splits(nest)
            if splits > 1:
                _, M, N, _ = nest.extents
                outputs = (nest.extents[0] * M * N)
                size = partial_bytes(nest)
                launches += [Launch(f"{entry}__split", number, "tiles_split", statements, nest.tiles * splits,
                                    partial_bytes=size),
                             Launch(f"{entry}__sum", number, "tiles_sum", statements, outputs, partial_bytes=size)]
                continue
            extent = nest.tiles
        if mode == "block":
            from .split_reductions import partial_bytes, split_plan
            if split_plan(statements) is not None:
                size = partial_bytes(statements)
                launches += [Launch(f"{entry}__partials", number, "partials", statements, partial_bytes=size),
                             Launch(f"{entry}__finish", number, "finish", statements, partial_bytes=size)]
                continue
        launches.append(Launch(entry, number, mode, statements, extent))
    return launches


def _accumulator_crosses(steps):
    """Whether some accumulator is used by two top-level statements (one thread must run them)."""
    seen = set()
    for step in steps:
        names = set().union(*[accumulators_of(stmt) for stmt in step])
        if names & seen:
            return True
        seen |= names
    return False


def _mode(step):
    if len(step) == 1 and isinstance(step[0], L.Loop) and step[0].parallel:
        from .tiled_matmul import matmul_nest
        if matmul_nest(step[0]) is not None:
            return "tiles"
        return "rows" if _worth_a_block(step[0].body) else "grid"
    if _worth_a_block(step, top=True):
        return "block"
    return "columns" if len(step) == 1 and interchanged(step[0]) is not None else "thread"


def interchanged(stmt):
    """A serial nest `for a: ... for j: body` as `for j parallel: for a: ... body` when that
    computes the same: `body` only stores (or adds into) and checks, each slot it writes at one
    offset c*j + g*(anything without j) + constant with 0 < c and c * extent(j) <= g (so each
    j owns its elements), reading a slot it writes only there. None otherwise."""
    if not isinstance(stmt, L.Loop) or stmt.parallel:
        return None
    chain = [stmt]
    while len(chain[-1].body) == 1 and isinstance(chain[-1].body[0], L.Loop):
        chain.append(chain[-1].body[0])
    inner = chain[-1]
    body = inner.body
    if any(not isinstance(s, (L.Store, L.Check)) for s in body) or any(loop.parallel for loop in chain):
        return None
    stores = [s for s in body if isinstance(s, L.Store)]
    offsets = {}
    for store in stores:
        if store.slot in offsets or not _owned_by(store.offset, inner):
            return None
        offsets[store.slot] = store.offset
    for s in body:
        for expr in L.statement_exprs(s):
            for e in expr.walk():
                if e.op == "load" and e.attr in offsets and e.args[0] != offsets[e.attr]:
                    return None
    if not stores:
        return None
    nest = list(body)
    for loop in reversed(chain[:-1]):
        nest = [L.Loop(loop.var, nest)]
    return L.Loop(inner.var, nest, parallel=True)


def _owned_by(offset, loop):
    """Whether `offset` (an index Expr) is c*j + g*(terms without j) + constant as `interchanged` needs."""
    terms, _ = L.terms_of(offset)
    step = terms.get(loop.var, 0)
    others = [c for atom, c in terms.items() if atom != loop.var]
    if step <= 0 or any(loop.name in L.vars_in(atom) for atom in terms if atom != loop.var):
        return False
    if not others:
        return True
    from math import gcd
    spacing = 0
    for c in others:
        spacing = gcd(spacing, abs(c))
    return step * loop.extent <= spacing

def _worth_a_block(body, top=False):
    """Whether a block's threads can share `body` (block_roles) and it is worth it: it
    reduces, or (as a row) it holds an inner loop of ROW_LOOP_MIN iterations or more."""
    roles = block_roles(body)
    if roles is None:
        return False
    return "reduce" in roles or (not top and any(role == "each" and stmt.extent >= ROW_LOOP_MIN
                                                 for stmt, role in zip(body, roles)))


def block_roles(body):
    """How the threads of one block share a statement list (one row's body, or a kernel's
    top level), one role per statement, or None where they cannot:

    - "all": every thread runs it (Declare, Update, Check: after a shared reduction every
      thread holds the same accumulators, so these agree);
    - "reduce": a loop that only accumulates (Updates with add/mul/max/min into accumulators
      declared in `body`, and Checks): threads take its iterations in turn, then combine;
    - "each": a loop without inner loops whose Stores each write a different element per
      iteration (the loop variable is in every store offset) and read a slot they write
      only at the element written: threads take its iterations in turn;
    - "first": a Store outside loops, made by the block's first thread.
    """
    declared = {stmt.name for stmt in body if isinstance(stmt, L.Declare)}
    roles = []
    for stmt in body:
        if isinstance(stmt, (L.Declare, L.Update, L.Check)):
            role = "all"
        elif isinstance(stmt, L.Store):
            role = "first" if stmt.combine is None else None
        elif isinstance(stmt, L.Loop):
            role = "reduce" if _reduces(stmt, declared) else "each" if _independent(stmt) else None
        else:
            role = None
        if role is None:
            return None
        roles.append(role)
    return roles


def _reduces(loop, declared):
    inner = list(L.walk_statements(loop.body))
    updates = [s for s in inner if isinstance(s, L.Update)]
    if not updates or any(not isinstance(s, (L.Loop, L.Update, L.Check)) for s in inner):
        return False
    updated = {s.name for s in updates}
    if any(s.combine not in COMBINES for s in updates) or not updated <= declared:
        return False
    read = {e.attr for s in inner for x in L.statement_exprs(s) for e in x.walk() if e.op == "acc"}
    return not read & updated


def _independent(loop):
    if any(not isinstance(s, (L.Store, L.Check)) for s in loop.body):
        return False
    stores = [s for s in loop.body if isinstance(s, L.Store)]
    if not stores or any(s.combine is not None or L.terms_of(s.offset)[0].get(loop.var, 0) == 0 for s in stores):
        return False
    written = {}
    for s in stores:
        written.setdefault(s.slot, set()).add(s.offset)
    for s in loop.body:
        for expr in L.statement_exprs(s):
            for e in expr.walk():
                if e.op == "load" and e.attr in written and e.args[0] not in written[e.attr]:
                    return False
    return True
