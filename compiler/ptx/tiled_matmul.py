"""Matrix products on the GPU as tiles in shared memory: the "tiles" launches of launches.py,
written by kernels.py's PtxBodyWriter through `write_tiles`.

Lowering writes a contraction (linear, matmul, batched matmul, a convolution, with a fused
epilogue such as bias and relu) as a loop nest `for outputs...: acc = 0; for reductions...:
acc += left * right; out[...] = epilogue(acc)`; `matmul_nest` recognises it and sorts the
output loops: those only the left operand reads are the rows (M = their extents' product),
those only the right reads the columns (N), the rest the batch; the reduction loops are the
depth (K). A convolution is so an implicit product: rows are output channels, columns the
(image, y, x) positions, depth the (input channel, ky, kx) taps. The tiled kernel gives each
block a TILE x TILE piece of one batch's M x N output (blocks stride over the pieces of
every batch) and each of its 16 x 16 threads a 4 x 4 set of outputs, rows ty + 16a and
columns tx + 16b; flat indices are split into the loops' indices, the last loop fastest. Along r it walks DEPTH at a time: the block's threads load the
left operand's TILE x DEPTH piece and the right's DEPTH x TILE piece into shared memory
(neighbouring threads read neighbouring r of the left and j of the right, so the loads
coalesce for row-major operands; the operands are the nest's own expressions, evaluated at
clamped indices and zeroed outside the matrix), wait, multiply-add from shared memory, wait.
Each thread then stores its outputs through the nest's own store, epilogue included.

A product with few output tiles and a long depth (a convolution's weight gradient: a 6 x 75
output over 50k taps) splits its depth (`depth_splits`): "tiles_split" gives every (tile,
part) pair a block that writes its partial tile to a buffer the runner allocates, then
"tiles_sum" adds the parts of each output in order and runs the epilogue.
"""
from dataclasses import dataclass

from llvmlite import ir

from .. import loop_ir as L
from ..llvm.loops import I64, counted_loop, entry_alloca
from ..llvm.scalar import VALUE_TYPES, const_value
from . import tensor_cores
from .block_statements import barrier, shared_array

TILE = 64  # output rows and columns per block
DEPTH = 16  # r per shared-memory step
SIDE = 16  # threads per side of the block: SIDE x SIDE threads
PER_THREAD = TILE // SIDE  # outputs per thread along each side
TILE_THREADS = SIDE * SIDE
LEFT_STRIDE = TILE + 1  # shared left tile stored r-major, padded against bank conflicts
MIN_DEPTH = 8  # shorter contractions stay loops (lowering unrolls them anyway)
MIN_OUTPUTS = 64  # fewer outputs per batch stay loops
MIN_SIDE = 4  # a matrix-vector product (N = 1) is a row reduction ("rows" launches), not tiles
SPLIT_BLOCKS = 128  # a product of fewer output tiles than half this splits its depth (a GPU has ~100 SMs)
SPLIT_DEPTH = 512  # the least depth of one part
MAX_SPLITS = 64


def _product(loops):
    total = 1
    for loop in loops:
        total *= loop.extent
    return total


@dataclass
class MatmulNest:
    """A contraction loop nest (see the module docstring) with its loops sorted by role:
    `rows` (the left operand's own output loops), `cols` (the right operand's), `batch` (the
    other output loops), `depth` (the reduction loops); each list in nest order."""

    batch: list
    rows: list
    cols: list
    depth: list
    declare: object
    left: object
    right: object
    stores: list  # the epilogue: one or more stores of the output element (a fused update)

    @property
    def extents(self):
        """(batches, M, N, K): the products of each role's loop extents."""
        return tuple(_product(loops) for loops in (self.batch, self.rows, self.cols, self.depth))

    @property
    def tiles(self):
        """Output tiles over all batches."""
        batches, M, N, _ = self.extents
        return batches * -(-M // TILE) * -(-N // TILE)


def _chain(loop):
    """The loops of a chain of single-loop bodies from `loop` down, and the innermost body."""
    loops = [loop]
    while len(loops[-1].body) == 1 and isinstance(loops[-1].body[0], L.Loop):
        loops.append(loops[-1].body[0])
    return loops, loops[-1].body


def _epilogue_is_pointwise(stores, declare, outputs, left, right):
    """Each store writes one element per output position from the sum and that position's
    values: plain stores over the output loops, reading a slot the epilogue writes only at the
    element written, and the operands reading none of them (tiles run in any order)."""
    names = {o.name for o in outputs}
    written = {}
    for store in stores:
        accumulators = {e.attr for e in store.value.walk() if e.op == "acc"}
        if store.combine is not None or not accumulators <= {declare.name} or store.slot in written:
            return False
        if not (L.vars_in(store.offset) <= names and L.vars_in(store.value) <= names):
            return False
        written[store.slot] = store.offset
    for expr in [left, right] + [part for store in stores for part in (store.offset, store.value)]:
        for e in expr.walk():
            if e.op == "load" and e.attr in written and (expr in (left, right) or e.args[0] != written[e.attr]):
                return False
    return True


def matmul_nest(loop):
    """The MatmulNest of a top-level parallel loop, or None when it is not one (or too small):
    output loops, then `acc = 0; reduction loops: acc += left * right; out[...] = f(acc)`
    (linear, matmul, batched matmul, a convolution as an implicit product)."""
    outputs, body = _chain(loop)
    if len(body) < 3 or not (isinstance(body[0], L.Declare) and isinstance(body[1], L.Loop)
                             and all(isinstance(s, L.Store) for s in body[2:])):
        return None
    declare, reduction, stores = body[0], body[1], body[2:]
    depth, inner = _chain(reduction)
    if declare.dtype not in ("float32", "float64") or not (declare.init.is_const and declare.init.attr == 0.0):
        return None
    if len(inner) != 1 or not isinstance(inner[0], L.Update) or any(d.parallel for d in depth):
        return None
    update = inner[0]
    if (update.name, update.combine, update.position) != (declare.name, "add", None) or update.value.op != "mul":
        return None
    left, right = update.value.args
    if left.dtype != declare.dtype or right.dtype != declare.dtype or not _epilogue_is_pointwise(stores, declare,
                                                                                              outputs, left, right):
        return None
    in_left, in_right = L.vars_in(left), L.vars_in(right)
    rows = [o for o in outputs if o.name in in_left and o.name not in in_right]
    cols = [o for o in outputs if o.name in in_right and o.name not in in_left]
    sorted_out = {id(o) for o in rows + cols}
    batch = [o for o in outputs if id(o) not in sorted_out]
    nest = MatmulNest(batch, rows, cols, depth, declare, left, right, stores)
    _, M, N, K = nest.extents
    return nest if K >= MIN_DEPTH and min(M, N) >= MIN_SIDE and M * N >= MIN_OUTPUTS else None


class TileWriter:
    """Writes one MatmulNest as the tiled kernel, in the PtxBodyWriter `body`."""

    def __init__(self, body, nest, tid, ctaid, nctaid, ntid=None, tf32=False):
        self.body, self.b, self.nest = body, body.builder, nest
        self.tf32 = tf32 and nest.declare.dtype == "float32"  # multiply on tensor cores (tensor_cores.py)
        self.tid, self.ctaid, self.nctaid, self.ntid = tid, ctaid, nctaid, ntid
        self.kind = VALUE_TYPES[nest.declare.dtype]
        self.left_tile = shared_array(body.module, f"ember.tile_left.{self.kind}", self.kind, DEPTH * LEFT_STRIDE)
        self.right_tile = shared_array(body.module, f"ember.tile_right.{self.kind}", self.kind, DEPTH * TILE)

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

    def split(self, flat, loops):
        """{loop name: index} of a flat index over `loops` (the last loop fastest)."""
        b, names = self.b, {}
        for loop in reversed(loops):
            names[loop.name] = b.urem(flat, self.i64(loop.extent)) if loop is not loops[0] else flat
            flat = b.udiv(flat, self.i64(loop.extent))
        return names

    def write(self, partials=None, splits=1):
        """Every output tile (blocks stride over them); with `splits` > 1, every (tile, depth
        part) pair instead, each block writing its TILE x TILE partial sums to `partials`."""
        b, nest = self.b, self.nest
        _, M, N, K = nest.extents
        tiles_n = -(-N // TILE)
        per_batch = -(-M // TILE) * tiles_n
        part = depth_part(K, splits)
        if self.tf32:  # a thread's sums: its fragments of the warp's products
            fragments = tensor_cores.Fragments(b, self.tid)
            positions = fragments.positions()
        else:  # a thread's sums: rows ty + 16a, columns tx + 16c
            ty, tx = b.udiv(self.tid, self.i64(SIDE)), b.urem(self.tid, self.i64(SIDE))
            positions = [[(b.add(ty, self.i64(SIDE * a)), b.add(tx, self.i64(SIDE * c))) for c in range(PER_THREAD)]
                         for a in range(PER_THREAD)]
        sums = [[entry_alloca(b, self.kind, 1, align=8, name=f"sum{a}_{c}") for c in range(len(row))]
                for a, row in enumerate(positions)]
        with counted_loop(b, self.ctaid, self.i64(nest.tiles * splits), self.nctaid, name="work") as work:
            tile, split = b.urem(work, self.i64(nest.tiles)), b.udiv(work, self.i64(nest.tiles))
            outer = self.split(b.udiv(tile, self.i64(per_batch)), nest.batch) if nest.batch else {}
            rest = b.urem(tile, self.i64(per_batch))
            row0 = b.mul(b.udiv(rest, self.i64(tiles_n)), self.i64(TILE))
            col0 = b.mul(b.urem(rest, self.i64(tiles_n)), self.i64(TILE))
            for row in sums:
                for cell in row:
                    b.store(const_value(nest.declare.dtype, 0.0), cell)
            first = b.mul(split, self.i64(part))
            last = b.add(first, self.i64(part))
            last = b.select(b.icmp_unsigned("<", last, self.i64(K)), last, self.i64(K))
            with counted_loop(b, first, last, DEPTH, name="depth") as depth0:
                self.load_tiles(outer, row0, col0, depth0, M, N, K)
                barrier(self.body)
                if self.tf32:
                    tensor_cores.multiply(self, fragments, sums)
                else:
                    self.multiply(ty, tx, sums)
                barrier(self.body)
            if splits == 1:
                self.store_outputs(outer, row0, col0, positions, sums, M, N)
            else:
                self.store_partials(partials, b.add(b.mul(split, self.i64(nest.tiles)), tile), positions, sums)

    def store_partials(self, partials, block_tile, positions, sums):
        """This thread's sums into the partial tile `block_tile` (split-major) of `partials`."""
        b = self.b
        base = b.mul(block_tile, self.i64(TILE * TILE))
        for cells, places in zip(sums, positions):
            for cell, (row, col) in zip(cells, places):
                at = b.gep(partials, [b.add(base, b.add(b.mul(row, self.i64(TILE)), col))], source_etype=self.kind)
                b.store(b.load(cell, typ=self.kind), at)

    def write_sum(self, partials, splits):
        """The second launch of a split product: a thread per output (grid-stride) adds its
        partial sums in split order and runs the nest's stores (the epilogue)."""
        b, nest, body = self.b, self.nest, self.body
        batches, M, N, _ = nest.extents
        tiles_n = -(-N // TILE)
        per_batch = -(-M // TILE) * tiles_n
        start = b.add(b.mul(self.ctaid, self.ntid), self.tid)
        cell = body.accumulator(nest.declare.name)
        with counted_loop(b, start, self.i64(batches * M * N), b.mul(self.nctaid, self.ntid), name="output") as flat:
            batch, rest = b.udiv(flat, self.i64(M * N)), b.urem(flat, self.i64(M * N))
            row, col = b.udiv(rest, self.i64(N)), b.urem(rest, self.i64(N))
            tile = b.add(b.add(b.mul(batch, self.i64(per_batch)),
                               b.mul(b.udiv(row, self.i64(TILE)), self.i64(tiles_n))), b.udiv(col, self.i64(TILE)))
            local = b.add(b.mul(b.urem(row, self.i64(TILE)), self.i64(TILE)), b.urem(col, self.i64(TILE)))
            b.store(const_value(nest.declare.dtype, 0.0), cell)
            for split in range(splits):
                block_tile = b.add(self.i64(split * nest.tiles), tile)
                at = b.gep(partials, [b.add(b.mul(block_tile, self.i64(TILE * TILE)), local)], source_etype=self.kind)
                b.store(b.fadd(b.load(cell, typ=self.kind), b.load(at, typ=self.kind)), cell)
            body.emitter.forget_accumulator(nest.declare.name)
            outer = self.split(batch, nest.batch) if nest.batch else {}
            body.emitter.push()
            body.emitter.names.update({**outer, **self.split(row, nest.rows), **self.split(col, nest.cols)})
            body.statements(nest.stores)
            body.emitter.pop()

    def load_tiles(self, outer, row0, col0, depth0, M, N, K):
        """This thread's share of the left TILE x DEPTH and right DEPTH x TILE pieces."""
        b, nest = self.b, self.nest
        zero = const_value(nest.declare.dtype, 0.0)
        for part in range(TILE * DEPTH // TILE_THREADS):
            element = b.add(self.tid, self.i64(part * TILE_THREADS))
            # left: element -> (row m, depth k), k fastest
            m, k = b.udiv(element, self.i64(DEPTH)), b.urem(element, self.i64(DEPTH))
            self.load_one(nest.left, outer, b.add(row0, m), M, nest.rows, b.add(depth0, k), K,
                          self.cell(self.left_tile, b.add(b.mul(k, self.i64(LEFT_STRIDE)), m)), zero)
            # right: element -> (depth k, column n), n fastest
            k, n = b.udiv(element, self.i64(TILE)), b.urem(element, self.i64(TILE))
            self.load_one(nest.right, outer, b.add(col0, n), N, nest.cols, b.add(depth0, k), K,
                          self.cell(self.right_tile, b.add(b.mul(k, self.i64(TILE)), n)), zero)

    def load_one(self, expr, outer, index, extent, index_loops, depth, K, target, zero):
        """target = expr at (flat index over `index_loops`, flat depth), or zero outside the
        matrix (read at clamped indices)."""
        b = self.b
        inside = b.and_(b.icmp_unsigned("<", index, self.i64(extent)), b.icmp_unsigned("<", depth, self.i64(K)))
        clamped_index = b.select(b.icmp_unsigned("<", index, self.i64(extent)), index, self.i64(extent - 1))
        clamped_depth = b.select(b.icmp_unsigned("<", depth, self.i64(K)), depth, self.i64(K - 1))
        value = self.evaluate(expr, {**outer, **self.split(clamped_index, index_loops),
                                     **self.split(clamped_depth, self.nest.depth)})
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

    def store_outputs(self, outer, row0, col0, positions, sums, M, N):
        """Each of this thread's outputs inside the matrix, through the nest's store (epilogue)."""
        b, nest, body = self.b, self.nest, self.body
        cell = body.accumulator(nest.declare.name)
        for cells, places in zip(sums, positions):
            for sum_cell, (local_row, local_col) in zip(cells, places):
                row, col = b.add(row0, local_row), b.add(col0, local_col)
                inside = b.and_(b.icmp_unsigned("<", row, self.i64(M)), b.icmp_unsigned("<", col, self.i64(N)))
                with b.if_then(inside):
                    b.store(b.load(sum_cell, typ=self.kind), cell)
                    body.emitter.forget_accumulator(nest.declare.name)
                    emitter = body.emitter
                    emitter.push()
                    emitter.names.update({**outer, **self.split(row, nest.rows), **self.split(col, nest.cols)})
                    body.statements(nest.stores)
                    emitter.pop()


def write_tiles(body, nest, tid, ctaid, nctaid, ntid=None, partials=None, mode="tiles", tf32=False):
    """The launch of mode "tiles", or of a split product: "tiles_split" then "tiles_sum"
    (`tf32`: the multiply-adds on tensor cores, tensor_cores.py)."""
    writer = TileWriter(body, nest, tid, ctaid, nctaid, ntid, tf32)
    if mode == "tiles":
        writer.write()
    elif mode == "tiles_split":
        writer.write(partials, depth_splits(nest))
    else:
        writer.write_sum(partials, depth_splits(nest))


def depth_splits(nest):
    """How many parts the depth of a product with few output tiles is split into (1: none):
    enough blocks to fill a GPU (SPLIT_BLOCKS), each part at least SPLIT_DEPTH long."""
    _, _, _, K = nest.extents
    if nest.tiles * 2 >= SPLIT_BLOCKS or K < 2 * SPLIT_DEPTH:
        return 1
    return max(1, min(-(-SPLIT_BLOCKS // nest.tiles), K // SPLIT_DEPTH, MAX_SPLITS))


def depth_part(K, splits):
    """The depth each part covers: K / splits, rounded up to whole DEPTH steps."""
    return -(-(-(-K // splits)) // DEPTH) * DEPTH


def partial_bytes(nest):
    """Bytes of the partial tiles a split product writes."""
    return depth_splits(nest) * nest.tiles * TILE * TILE * (8 if nest.declare.dtype == "float64" else 4)
