"""Statements a whole block of GPU threads shares: the "rows" and "block" launches of
launches.py, written by kernels.py's PtxBodyWriter through `write_shared_body`.

Each statement runs as its role (launches.block_roles) says. A "reduce" loop gives its
iterations to the threads in turn (thread t takes t, t + block size, ...; neighbouring
threads read neighbouring elements), each into its own copy of the accumulators (the
block's first thread starts from the declared value, the others from the combine's
identity), then the block combines the copies: warp shuffles (`shfl.sync.bfly`) leave
each warp's total in every lane, lane 0 of each warp puts it in shared memory, and after a
barrier every thread combines the warps' totals in the same order, so all threads hold the
same result. "each" loops are shared the same way; "first" stores are the first thread's;
a barrier separates statements where one may read or overwrite what another thread wrote
or read before (a row's sum stored by thread 0, then read by all).
"""
from llvmlite import ir

from .. import loop_ir as L
from ..llvm.loops import I32, I64, counted_loop, declare
from ..llvm.scalar import UNSIGNED, VALUE_TYPES, is_float
from .launches import WARP, block_roles

BARRIER = "llvm.nvvm.barrier0"  # bar.sync 0
SHUFFLE_XOR = "llvm.nvvm.shfl.sync.bfly.i32"  # (member mask, value, lane mask, clamp)
PARTIALS = "ember.block_partials"  # shared memory: one cell per warp, an array per value type
ALL_LANES, LAST_LANE = -1, WARP - 1


def barrier(body):
    body.builder.call(declare(body.module, BARRIER, ir.VoidType(), []), [])
    body.emitter.forget_loads()


def shuffle_xor(builder, value, lanes):
    """The `value` of lane (this lane xor `lanes`) of the warp, for any scalar type (64-bit
    values travel as two 32-bit halves, narrow ones widened)."""
    shuffle = declare(builder.module, SHUFFLE_XOR, I32, [I32] * 4)

    def move(bits32):
        return builder.call(shuffle, [ir.Constant(I32, ALL_LANES), bits32, ir.Constant(I32, lanes),
                                      ir.Constant(I32, LAST_LANE)])
    kind = value.type
    if isinstance(kind, ir.FloatType):
        return builder.bitcast(move(builder.bitcast(value, I32)), kind)
    if isinstance(kind, ir.DoubleType) or kind == I64:
        bits = builder.bitcast(value, I64) if isinstance(kind, ir.DoubleType) else value
        low = move(builder.trunc(bits, I32))
        high = move(builder.trunc(builder.lshr(bits, ir.Constant(I64, 32)), I32))
        joined = builder.or_(builder.shl(builder.zext(high, I64), ir.Constant(I64, 32)), builder.zext(low, I64))
        return builder.bitcast(joined, kind) if isinstance(kind, ir.DoubleType) else joined
    if kind.width < 32:
        return builder.trunc(move(builder.zext(value, I32)), kind)
    return move(value)


def identity(combine, dtype):
    """The value a thread's copy of a `combine` accumulator starts from (-0.0 for a float sum,
    so a sum of negative zeros stays one)."""
    if is_float(dtype):
        return {"add": -0.0, "mul": 1.0, "max": float("-inf"), "min": float("inf")}[combine]
    bits = VALUE_TYPES[dtype].width
    if dtype in UNSIGNED:  # (compared without sign: kernels.BodyWriter.combine)
        low, high = 0, (1 << bits) - 1
    else:
        low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return {"add": 0, "mul": 1, "max": low, "min": high}[combine]


def shared_array(module, name, kind, count):
    """The module's shared-memory array `name` of `count` values of `kind` (an LLVM type),
    declared on first use: each block has its own copy for the launch's life."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    array = ir.ArrayType(kind, count)
    cells = ir.GlobalVariable(module, array, name, addrspace=3)
    cells.linkage, cells.initializer, cells.align = "internal", ir.Constant(array, ir.Undefined), 16
    return cells


def _partials(module, kind):
    """The shared array of one `kind` value per warp."""
    return shared_array(module, f"{PARTIALS}.{kind}", kind, WARP)


def _partial(builder, partials, warp):
    """The shared cell of warp number `warp` (i64)."""
    return builder.gep(partials, [ir.Constant(I64, 0), warp], inbounds=True)


def _slots_touched(stmt):
    """(slots read, slots written) by a statement and the statements inside it."""
    reads, writes = set(), set()
    for s in L.walk_statements([stmt]):
        if isinstance(s, L.Store):
            writes.add(s.slot)
        for expr in L.statement_exprs(s):
            reads |= {e.attr for e in expr.walk() if e.op == "load"}
    return reads, writes


class SharedBody:
    """Writes one statement list (launches.block_roles holds) for all threads of a block, in
    the PtxBodyWriter `body`; `tid` and `ntid` are this thread's index and the block size (i64)."""

    def __init__(self, body, tid, ntid):
        self.body, self.builder = body, body.builder
        self.tid, self.ntid = tid, ntid

    def write(self, statements):
        roles = block_roles(statements)
        read_since, written_since = set(), set()  # by other threads since the last barrier
        for stmt, role in zip(statements, roles):
            reads, writes = _slots_touched(stmt)
            if writes & (read_since | written_since) or reads & written_since:
                barrier(self.body)
                read_since, written_since = set(), set()
            if role == "reduce":
                self.reduce(stmt)
                read_since, written_since = set(), set()  # the combine ends with a barrier
            elif role == "each":
                self.each(stmt)
            elif role == "first":
                self.first(stmt)
            else:
                self.body.statements([stmt])
            read_since |= reads
            written_since |= writes

    def each(self, loop):
        """The loop's iterations thread-strided: this thread runs tid, tid + ntid, ..."""
        with counted_loop(self.builder, self.tid, ir.Constant(I64, loop.extent), self.ntid, name=loop.name) as index:
            self.body.emitter.names[loop.name] = index
            self.body.emitter.push()
            self.body.statements(loop.body)
            self.body.emitter.pop()

    def first(self, stmt):
        b = self.builder
        self.body.emitter.push()  # loads emitted under the branch must not be reused after it
        with b.if_then(b.icmp_unsigned("==", self.tid, ir.Constant(I64, 0))):
            self.body.statements([stmt])
        self.body.emitter.pop()

    def reduce(self, loop):
        """Each thread accumulates its iterations into its own copies, then the block combines them."""
        b, body = self.builder, self.body
        updates = {}
        for s in L.walk_statements(loop.body):
            if isinstance(s, L.Update):
                updates.setdefault(s.name, s.combine)
        with b.if_then(b.icmp_unsigned("!=", self.tid, ir.Constant(I64, 0))):
            for name, combine in updates.items():
                dtype = body.writer.acc_dtypes[name]
                b.store(ir.Constant(VALUE_TYPES[dtype], identity(combine, dtype)), body.accumulator(name))
        for name in updates:
            body.emitter.forget_accumulator(name)
        self.each(loop)
        for name, combine in updates.items():
            self.combine_block(name, combine)

    def combine_block(self, name, combine):
        """Every thread's copy of accumulator `name` replaced by the block's combined value."""
        b, body = self.builder, self.body
        dtype = body.writer.acc_dtypes[name]
        kind, cell = VALUE_TYPES[dtype], body.accumulator(name)
        value = b.load(cell, typ=kind)
        lanes = WARP // 2
        while lanes:
            value = body.combine(combine, dtype, value, shuffle_xor(b, value, lanes))
            lanes //= 2
        partials = _partials(body.module, kind)
        warp_size = ir.Constant(I64, WARP)
        with b.if_then(b.icmp_unsigned("==", b.urem(self.tid, warp_size), ir.Constant(I64, 0))):
            b.store(value, _partial(b, partials, b.udiv(self.tid, warp_size)))
        barrier(body)
        b.store(b.load(_partial(b, partials, ir.Constant(I64, 0)), typ=kind), cell)
        with counted_loop(b, 1, b.udiv(self.ntid, warp_size), name=f"{name}.warps") as warp:
            total = b.load(cell, typ=kind)
            other = b.load(_partial(b, partials, warp), typ=kind)
            b.store(body.combine(combine, dtype, total, other), cell)
        barrier(body)  # everyone has read the partials before they are written again
        body.emitter.forget_accumulator(name)


def write_shared_body(body, statements, tid, ntid):
    SharedBody(body, tid, ntid).write(statements)
