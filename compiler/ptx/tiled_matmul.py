"""Matrix products on the GPU as tiles in shared memory: the "tiles" launches of launches.py,
written by kernels.py's PtxBodyWriter through `write_tiles`.

Lowering writes a contraction (linear, matmul, batched matmul, with a fused epilogue such as
bias and relu) as the loop nest `[for b parallel:] for i: for j: acc = 0; for r: acc +=
left(i, r) * right(r, j); out[i, j] = epilogue(acc)`; `matmul_nest` recognises it. The
tiled kernel gives each block a TILE x TILE piece of the output (blocks stride over the
pieces of every batch) and each of its 16 x 16 threads a 4 x 4 set of outputs, rows ty +
16a and columns tx + 16b. Along r it walks DEPTH at a time: the block's threads load the
left operand's TILE x DEPTH piece and the right's DEPTH x TILE piece into shared memory
(neighbouring threads read neighbouring r of the left and j of the right, so the loads
coalesce for row-major operands; the operands are the nest's own expressions, evaluated at
clamped indices and zeroed outside the matrix), wait, multiply-add from shared memory, wait.
Each thread then stores its outputs through the nest's own store, epilogue included.
"""
from dataclasses import dataclass

from llvmlite import ir

from .. import loop_ir as L
from ..llvm.loops import I64, counted_loop, entry_alloca
from ..llvm.scalar import VALUE_TYPES, const_value
from .block_statements import barrier

TILE = 64  # output rows and columns per block
DEPTH = 16  # r per shared-memory step
SIDE = 16  # threads per side of the block: SIDE x SIDE threads
PER_THREAD = TILE // SIDE  # outputs per thread along each side
TILE_THREADS = SIDE * SIDE
LEFT_STRIDE = TILE + 1  # shared left tile stored r-major, padded against bank conflicts
MIN_DEPTH = 8  # shorter contractions stay loops (lowering unrolls them anyway)


@dataclass
class MatmulNest:
    """A contraction loop nest (see the module docstring); `batch` is None without one."""

    batch: object
    rows: object
    cols: object
    declare: object
    depth: object
    left: object
    right: object
    store: object

    @property
    def tiles(self):
        """Output tiles over all batches."""
        batches = self.batch.extent if self.batch is not None else 1
        return batches * -(-self.rows.extent // TILE) * -(-self.cols.extent // TILE)


def _only_loop(body):
    return body[0] if len(body) == 1 and isinstance(body[0], L.Loop) else None


def matmul_nest(loop):
    """The MatmulNest of a top-level parallel loop, or None when it is not one (or too short)."""
    for batch in (None, loop):
        rows = loop if batch is None else _only_loop(loop.body)
        cols = rows and _only_loop(rows.body)
        nest = cols and _match(batch, rows, cols)
        if nest:
            return nest
    return None


def _match(batch, rows, cols):
    body = cols.body
    if len(body) != 3 or not (isinstance(body[0], L.Declare) and isinstance(body[1], L.Loop)
                              and isinstance(body[2], L.Store)):
        return None
    declare, depth, store = body
    if declare.dtype not in ("float32", "float64") or not (declare.init.is_const and declare.init.attr == 0.0):
        return None
    if depth.extent < MIN_DEPTH or len(depth.body) != 1 or not isinstance(depth.body[0], L.Update):
        return None
    update = depth.body[0]
    if (update.name, update.combine, update.position) != (declare.name, "add", None) or update.value.op != "mul":
        return None
    outer = {batch.name} if batch is not None else set()
    left, right = update.value.args
    if not (L.vars_in(left) <= outer | {rows.name, depth.name} and L.vars_in(right) <= outer | {depth.name, cols.name}):
        left, right = right, left
        if not (L.vars_in(left) <= outer | {rows.name, depth.name}
                and L.vars_in(right) <= outer | {depth.name, cols.name}):
            return None
    if left.dtype != declare.dtype or right.dtype != declare.dtype or store.combine is not None:
        return None
    output = outer | {rows.name, cols.name}
    accumulators = {e.attr for e in store.value.walk() if e.op == "acc"}
    if not (L.vars_in(store.offset) <= output and L.vars_in(store.value) <= output and accumulators <= {declare.name}):
        return None
    return MatmulNest(batch, rows, cols, declare, depth, left, right, store)


def _shared(module, name, kind, count):
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    array = ir.ArrayType(kind, count)
    cells = ir.GlobalVariable(module, array, name, addrspace=3)
    cells.linkage, cells.initializer, cells.align = "internal", ir.Constant(array, ir.Undefined), 16
    return cells


class TileWriter:
    """Writes one MatmulNest as the tiled kernel, in the PtxBodyWriter `body`."""

    def __init__(self, body, nest, tid, ctaid, nctaid):
        self.body, self.b, self.nest = body, body.builder, nest
        self.tid, self.ctaid, self.nctaid = tid, ctaid, nctaid
        self.kind = VALUE_TYPES[nest.declare.dtype]
        self.left_tile = _shared(body.module, f"ember.tile_left.{self.kind}", self.kind, DEPTH * LEFT_STRIDE)
        self.right_tile = _shared(body.module, f"ember.tile_right.{self.kind}", self.kind, DEPTH * TILE)

    def i64(self, value):
        return ir.Constant(I64, value)

    def cell(self, tile, index):
        return self.b.gep(tile, [self.i64(0), index], inbounds=True)

    def evaluate(self, expr, bindings):
        """`expr` with loop variables bound to values ({name: i64})."""
        emitter = self.body.emitter
        emitter.push()
        saved = {name: emitter.names.get(name) for name in bindings}
        emitter.names.update(bindings)
        value = emitter.emit(expr)
        emitter.pop()
        for name, old in saved.items():
            if old is not None:
                emitter.names[name] = old
        return value

    def write(self):
        b, nest = self.b, self.nest
        M, N, K = nest.rows.extent, nest.cols.extent, nest.depth.extent
        tiles_n = -(-N // TILE)
        per_batch = -(-M // TILE) * tiles_n
        ty, tx = b.udiv(self.tid, self.i64(SIDE)), b.urem(self.tid, self.i64(SIDE))
        sums = [[entry_alloca(b, self.kind, 1, align=8, name=f"sum{a}_{c}") for c in range(PER_THREAD)]
                for a in range(PER_THREAD)]
        with counted_loop(b, self.ctaid, self.i64(nest.tiles), self.nctaid, name="tile") as tile:
            batch = b.udiv(tile, self.i64(per_batch))
            rest = b.urem(tile, self.i64(per_batch))
            row0 = b.mul(b.udiv(rest, self.i64(tiles_n)), self.i64(TILE))
            col0 = b.mul(b.urem(rest, self.i64(tiles_n)), self.i64(TILE))
            outer = {nest.batch.name: batch} if nest.batch is not None else {}
            for row in sums:
                for cell in row:
                    b.store(const_value(nest.declare.dtype, 0.0), cell)
            with counted_loop(b, 0, self.i64(K), DEPTH, name="depth") as depth0:
                self.load_tiles(outer, row0, col0, depth0, M, N, K)
                barrier(self.body)
                self.multiply(ty, tx, sums)
                barrier(self.body)
            self.store_outputs(outer, row0, col0, ty, tx, sums, M, N)

    def load_tiles(self, outer, row0, col0, depth0, M, N, K):
        """This thread's share of the left TILE x DEPTH and right DEPTH x TILE pieces."""
        b, nest = self.b, self.nest
        zero = const_value(nest.declare.dtype, 0.0)
        for part in range(TILE * DEPTH // TILE_THREADS):
            element = b.add(self.tid, self.i64(part * TILE_THREADS))
            # left: element -> (row m, depth k), k fastest
            m, k = b.udiv(element, self.i64(DEPTH)), b.urem(element, self.i64(DEPTH))
            self.load_one(nest.left, outer, b.add(row0, m), M, nest.rows.name, b.add(depth0, k), K,
                          self.cell(self.left_tile, b.add(b.mul(k, self.i64(LEFT_STRIDE)), m)), zero)
            # right: element -> (depth k, column n), n fastest
            k, n = b.udiv(element, self.i64(TILE)), b.urem(element, self.i64(TILE))
            self.load_one(nest.right, outer, b.add(col0, n), N, nest.cols.name, b.add(depth0, k), K,
                          self.cell(self.right_tile, b.add(b.mul(k, self.i64(TILE)), n)), zero)

    def load_one(self, expr, outer, index, extent, index_name, depth, K, target, zero):
        """target = expr at (index, depth), or zero outside the matrix (read at clamped indices)."""
        b = self.b
        inside = b.and_(b.icmp_unsigned("<", index, self.i64(extent)), b.icmp_unsigned("<", depth, self.i64(K)))
        clamped_index = b.select(b.icmp_unsigned("<", index, self.i64(extent)), index, self.i64(extent - 1))
        clamped_depth = b.select(b.icmp_unsigned("<", depth, self.i64(K)), depth, self.i64(K - 1))
        value = self.evaluate(expr, {**outer, index_name: clamped_index, self.nest.depth.name: clamped_depth})
        b.store(b.select(inside, value, zero), target)

    def multiply(self, ty, tx, sums):
        """sums[a][c] += left[ty + 16a][step] * right[step][tx + 16c] over the DEPTH steps
        (unrolled: the sums stay in registers)."""
        b = self.b
        totals = [[b.load(cell, typ=self.kind) for cell in row] for row in sums]
        for step in range(DEPTH):
            lefts = [b.load(self.cell(self.left_tile, b.add(ty, self.i64(step * LEFT_STRIDE + SIDE * a))), typ=self.kind)
                     for a in range(PER_THREAD)]
            rights = [b.load(self.cell(self.right_tile, b.add(tx, self.i64(step * TILE + SIDE * c))), typ=self.kind)
                      for c in range(PER_THREAD)]
            totals = [[b.fadd(totals[a][c], b.fmul(lefts[a], rights[c], flags=("contract",)), flags=("contract",))
                       for c in range(PER_THREAD)] for a in range(PER_THREAD)]
        for row, cells in zip(totals, sums):
            for total, cell in zip(row, cells):
                b.store(total, cell)

    def store_outputs(self, outer, row0, col0, ty, tx, sums, M, N):
        """Each of this thread's outputs inside the matrix, through the nest's store (epilogue)."""
        b, nest, body = self.b, self.nest, self.body
        cell = body.accumulator(nest.declare.name)
        for a in range(PER_THREAD):
            row = b.add(row0, b.add(ty, self.i64(SIDE * a)))
            for c in range(PER_THREAD):
                col = b.add(col0, b.add(tx, self.i64(SIDE * c)))
                inside = b.and_(b.icmp_unsigned("<", row, self.i64(M)), b.icmp_unsigned("<", col, self.i64(N)))
                with b.if_then(inside):
                    b.store(b.load(sums[a][c], typ=self.kind), cell)
                    body.emitter.forget_accumulator(nest.declare.name)
                    emitter = body.emitter
                    emitter.push()
                    emitter.names.update({**outer, nest.rows.name: row, nest.cols.name: col})
                    body.statements([nest.store])
                    emitter.pop()


def write_tiles(body, nest, tid, ctaid, nctaid):
    TileWriter(body, nest, tid, ctaid, nctaid).write()
