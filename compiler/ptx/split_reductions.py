"""Long whole-tensor reductions in two launches: many blocks, then one. One block ("block"
launches, block_statements.py) uses one of the GPU's multiprocessors; a sum over millions
of elements wants them all.

A "block" step of the form `declarations; one reduce loop of at least SPLIT_MIN iterations;
the rest` (a loss's mean, a gradient norm's sum of squares) becomes:

- "partials": a grid of `blocks` blocks. Every thread starts its copies of the loop's
  accumulators from the combine's identity (the grid's first thread from the declared
  values), takes iterations grid-stride, the block combines its threads' copies, and the
  block's first thread writes the block's values to a buffer of partial values (one
  8-byte cell per accumulator and block) that the runner allocates for the pair;
- "finish": one block combines the partial values (thread-strided, then across the block)
  and runs the rest of the step as a "block" launch does.
"""
from llvmlite import ir

from .. import loop_ir as L
from ..llvm.loops import I64, counted_loop
from ..llvm.scalar import VALUE_TYPES
from .block_statements import SharedBody, identity
from .launches import BLOCK_THREADS, block_roles

SPLIT_MIN = 1 << 16  # reduce loops this long are split
PER_THREAD = 16  # iterations per thread the partial blocks are sized for
MAX_PARTIALS = 1024  # blocks of the first launch, at most
PARTIAL_BYTES = 8  # one cell per accumulator and block


def split_plan(statements):
    """(declarations, the reduce loop, the rest, {accumulator: combine}) when `statements` (a
    "block" step) splits, else None."""
    roles = block_roles(statements)
    if roles is None or roles.count("reduce") != 1:
        return None
    at = roles.index("reduce")
    head, loop, rest = statements[:at], statements[at], statements[at + 1:]
    if not all(isinstance(s, L.Declare) for s in head) or loop.extent < SPLIT_MIN:
        return None
    combines = {}
    for s in L.walk_statements(loop.body):
        if isinstance(s, L.Update):
            combines.setdefault(s.name, s.combine)
    return head, loop, rest, combines


def partial_blocks(loop):
    return max(1, min(MAX_PARTIALS, -(-loop.extent // (BLOCK_THREADS * PER_THREAD))))


def partial_bytes(statements):
    """Bytes of the partial-values buffer a split step needs."""
    head, loop, rest, combines = split_plan(statements)
    return PARTIAL_BYTES * len(combines) * partial_blocks(loop)


class SplitWriter(SharedBody):
    """Writes one of the two launches of a split step (see the module docstring)."""

    def __init__(self, body, tid, ntid, ctaid, nctaid, partials, statements):
        super().__init__(body, tid, ntid)
        self.ctaid, self.nctaid, self.partials = ctaid, nctaid, partials
        self.head, self.loop, self.rest, self.combines = split_plan(statements)
        self.blocks = partial_blocks(self.loop)

    def cell(self, number, block):
        """The partial value of accumulator number `number` from block `block` (i64)."""
        b = self.builder
        index = b.add(b.mul(ir.Constant(I64, number), ir.Constant(I64, self.blocks)), block)
        return b.gep(self.partials, [b.mul(index, ir.Constant(I64, PARTIAL_BYTES))], source_etype=ir.IntType(8))

    def reset_copies(self, first_thread):
        """Copies of the loop's accumulators start at the identity, except on `first_thread`."""
        b, body = self.builder, self.body
        with b.if_then(b.not_(first_thread)):
            for name, combine in self.combines.items():
                dtype = body.writer.acc_dtypes[name]
                b.store(ir.Constant(VALUE_TYPES[dtype], identity(combine, dtype)), body.accumulator(name))
        for name in self.combines:
            body.emitter.forget_accumulator(name)

    def write_partials(self):
        b, body = self.builder, self.body
        body.statements(self.head)
        first = b.icmp_unsigned("==", b.or_(self.ctaid, self.tid), ir.Constant(I64, 0))
        self.reset_copies(first)
        start = b.add(b.mul(self.ctaid, self.ntid), self.tid)
        with counted_loop(b, start, ir.Constant(I64, self.loop.extent), b.mul(self.nctaid, self.ntid),
                          name=self.loop.name) as index:
            body.emitter.names[self.loop.name] = index
            body.emitter.push()
            body.statements(self.loop.body)
            body.emitter.pop()
        for name, combine in self.combines.items():
            self.combine_block(name, combine)
        with b.if_then(b.icmp_unsigned("==", self.tid, ir.Constant(I64, 0))):
            for number, name in enumerate(self.combines):
                kind = VALUE_TYPES[body.writer.acc_dtypes[name]]
                b.store(b.load(body.accumulator(name), typ=kind), self.cell(number, self.ctaid))

    def write_finish(self):
        b, body = self.builder, self.body
        body.statements(self.head)  # (the cells exist; their values are replaced below)
        self.reset_copies(ir.Constant(ir.IntType(1), 0))
        with counted_loop(b, self.tid, ir.Constant(I64, self.blocks), self.ntid, name="partial") as block:
            for number, (name, combine) in enumerate(self.combines.items()):
                dtype = body.writer.acc_dtypes[name]
                cell = body.accumulator(name)
                value = b.load(self.cell(number, block), typ=VALUE_TYPES[dtype])
                b.store(body.combine(combine, dtype, b.load(cell, typ=VALUE_TYPES[dtype]), value), cell)
        for name, combine in self.combines.items():
            body.emitter.forget_accumulator(name)
            self.combine_block(name, combine)
        self.write(self.rest)
