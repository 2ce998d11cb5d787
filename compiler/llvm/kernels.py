"""Loop kernels (compiler/loop_ir.py) as LLVM functions: what every LLVM target shares.

`KernelWriter` writes one Kernel as a function over its slot pointers (`noalias` unless the
memory plan lets two slots share bytes) and a status cell that failed bounds checks set;
`BodyWriter` emits its statements: counted loops LLVM's vectoriser recognises, accumulators,
reductions (`reassoc nsz` on their adds and multiplies, so they vectorise; nothing else
gets fast-math flags), stores and checks. A target subclasses both to decide the rest: its
kernel signature and linkage, what happens to a top-level parallel loop (CPU: outlined onto
libgomp's threads; a GPU: mapped onto the grid), and which library calls (Gemm, ConvCall)
it offers. Scalar expressions use the target's tables (compiler/llvm/scalar.py).
"""
from dataclasses import dataclass, field

from llvmlite import ir

from .. import loop_ir as L
from .scalar import I64, UNSIGNED, VALUE_TYPES, ScalarEmitter, is_float, load_value, store_value

PTR = ir.PointerType()
REDUCE_FLAGS = ("reassoc", "nsz")


@dataclass
class Program:
    """What writing a program's kernels needs beyond the kernels: where each slot key lives
    (("arg", k) or ("arena", byte offset)), which slot keys may share bytes (no `noalias`
    between them), and the error messages its checks raise, numbered from 1."""

    name: str
    kernels: list
    locations: dict
    aliasing: set = field(default_factory=set)  # frozenset({key, key}) pairs that may overlap
    errors: list = field(default_factory=list)  # (exception name, message), numbered from 1
    error_base: list = field(default_factory=list)  # per kernel: its first error's number - 1


def statement_work(body):
    """Element-ops a statement list performs (loop trips times expression sizes)."""
    total = 0
    for stmt in body:
        if isinstance(stmt, L.Loop):
            total += L.estimate(stmt.extent) * statement_work(stmt.body)
        elif isinstance(stmt, L.Gemm):
            total += L.estimate(stmt.m) * L.estimate(stmt.n) * L.estimate(stmt.k)
        else:
            total += 1 + sum(sum(1 for _ in e.walk()) for e in L.statement_exprs(stmt))
    return total


def accumulator_dtypes(body):
    return {s.name: s.dtype for s in L.walk_statements(body) if isinstance(s, L.Declare)}


def accumulators_read(body):
    """Names of the accumulators a statement list reads or updates."""
    names = set()
    for stmt in L.walk_statements(body):
        for e in L.statement_exprs(stmt):
            names |= {x.attr for x in e.walk() if x.op == "acc"}
        if isinstance(stmt, L.Update):
            names.add(stmt.name)
    return names


def kernel_structure(program, kernel):
    """What a kernel's function depends on: its statements over slot numbers, the slots'
    dtypes and sizes, which slots may overlap and which share one location (in-place), and
    how many errors it raises (numbered from 1 per kernel: the caller adds the program's base).
    Buffer names and locations are not part of it: the caller passes the pointers. Kernels of
    one structure share one function (the CPU target) or entry (the PTX target): a model's
    transformer blocks give the same kernels once per block."""
    keys = [slot.key for slot in kernel.slots]
    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))
             if frozenset((keys[i], keys[j])) in program.aliasing]
    same_place = tuple((i, j) for i, j in pairs if program.locations.get(keys[i]) == program.locations.get(keys[j]))
    return (kernel.kind, tuple((slot.dtype, slot.size, slot.writes) for slot in kernel.slots),
            "\n".join(L.describe_statements(kernel.body, "")), tuple(pairs), same_place, len(kernel.errors))


class KernelWriter:
    """Writes kernel number `number` of `program` into `module` as `void @name(ptr slots...,
    ptr status, extra...)`. Subclasses set `body_writer` and may override `extra_arguments`,
    `new_function`, `write_body` and `write`."""

    body_writer = None  # the BodyWriter subclass of the target

    def __init__(self, target, module, program, kernel, number):
        self.target, self.module, self.program, self.kernel, self.number = target, module, program, kernel, number
        self.acc_dtypes = accumulator_dtypes(kernel.body)
        self.symbol = f"{kernel.name}"
        self.first_error = self.error_offset(program, number)
        self.math_functions = target.math_functions()
        self.same_as = self.in_place_slots()

    def extra_arguments(self):
        """LLVM types of the arguments after the slots and the status cell."""
        return []

    def error_offset(self, program, number):
        """What the kernel adds to its own 1-based error numbers when it sets the status: the
        program's numbering (`Program.error_base`). A target whose caller adds it instead
        returns 0, so kernels that differ only in it are one function."""
        return program.error_base[number] if program.error_base else 0

    def in_place_slots(self):
        """{slot number: earlier slot number} for slots the memory plan put at one location (an
        in-place update, read only at the index it writes): the body uses one pointer for both,
        so LLVM sees the same address, not two pointers that may overlap (which costs the
        vectoriser a runtime overlap check that fails for exactly this case, and so a scalar loop)."""
        locations = getattr(self.program, "locations", None) or {}
        first_at, same_as = {}, {}
        for number, slot in enumerate(self.kernel.slots):
            where = locations.get(slot.key)
            earlier = first_at.get(where) if where is not None and where[0] in ("arena", "offset") else None
            if earlier is not None and frozenset((self.kernel.slots[earlier].key, slot.key)) in self.program.aliasing:
                same_as[number] = earlier
            elif where is not None:
                first_at.setdefault(where, number)
        return same_as

    def noalias_slots(self):
        keys = [s.key for s in self.kernel.slots]
        merged = {frozenset((keys[j], keys[i])) for j, i in self.same_as.items()}
        shared = set()
        for a in keys:
            for other in keys:
                pair = frozenset((a, other))
                if a != other and pair in self.program.aliasing and pair not in merged:
                    shared.add(a)
        return [key not in shared for key in keys]

    def signature(self, extra=()):
        return ir.FunctionType(ir.VoidType(), [PTR] * len(self.kernel.slots) + [PTR] + self.extra_arguments()
                               + list(extra))

    def new_function(self, name, function_type):
        fn = ir.Function(self.module, function_type, name=name)
        for slot, pointer, noalias in zip(self.kernel.slots, fn.args, self.noalias_slots()):
            if noalias:
                pointer.add_attribute("noalias")
        return fn

    def write(self):
        """The kernel's function: `write_body` at its entry block, then `ret void`."""
        fn = self.new_function(self.symbol, self.signature())
        count = len(self.kernel.slots)
        builder = ir.IRBuilder(fn.append_basic_block("entry"))
        body = self.body_writer(self, builder, list(fn.args[:count]), fn.args[count], fn.args[count + 1:])
        self.write_body(body)
        builder.ret_void()
        return fn

    def write_body(self, body):
        """The kernel's statements, through `body` (its BodyWriter). A target that runs part
        of a kernel per function (the PTX target: one launch) writes that part instead."""
        body.statements(self.kernel.body, top=True)


class BodyWriter:
    """Emits statements into one function. `extra` holds the function's arguments after the
    slots and the status cell (the target's: the CPU's thread count)."""

    def __init__(self, writer, builder, slots, status, extra=(), names=None):
        self.writer, self.builder = writer, builder
        slots = [slots[writer.same_as.get(k, k)] for k in range(len(slots))]  # in-place pairs: one pointer
        self.slots, self.status, self.extra = slots, status, list(extra)
        self.module = writer.module
        self.accumulators = {}
        self.emitter = ScalarEmitter(builder, self.module, slots, dict(names or {}), self.accumulators,
                                     writer.acc_dtypes, writer.math_functions, writer.target.float_intrinsics)

    # ------------------------------------------------------------------ the target's part
    def distributes(self, loop):
        """Whether a top-level loop runs across the target's threads (see `parallel_loop`)."""
        return False

    def parallel_loop(self, stmt):
        raise NotImplementedError(f"{self.writer.target.name}: cannot run loop {stmt.name} in parallel")

    def gemm(self, stmt):
        raise NotImplementedError(f"{self.writer.target.name} target offers no matrix multiply call "
                                  f"({self.writer.kernel.name})")

    def conv(self, stmt):
        raise NotImplementedError(f"{self.writer.target.name} target offers no {stmt.kind} call "
                                  f"({self.writer.kernel.name})")

    # ------------------------------------------------------------------ statements
    def accumulator(self, name):
        if name not in self.accumulators:
            dtype = L.INDEX if name.endswith("_index") else self.writer.acc_dtypes[name]
            b = self.builder
            entry = b.function.entry_basic_block
            saved = b.block
            b.position_at_start(entry)
            self.accumulators[name] = b.alloca(VALUE_TYPES[dtype], name=name)
            b.position_at_end(saved)
            self.writer.acc_dtypes.setdefault(name, dtype)
        return self.accumulators[name]

    def statements(self, body, top=False):
        for stmt in body:
            if isinstance(stmt, L.Loop):
                if top and self.distributes(stmt):
                    self.parallel_loop(stmt)
                else:
                    self.loop(stmt, ir.Constant(I64, 0), self.extent_value(stmt.extent))
            elif isinstance(stmt, L.Declare):
                self.builder.store(self.emitter.emit(stmt.init), self.accumulator(stmt.name))
                self.emitter.forget_accumulator(stmt.name)
            elif isinstance(stmt, L.Update):
                self.update(stmt)
            elif isinstance(stmt, L.Store):
                self.store(stmt)
            elif isinstance(stmt, L.Check):
                self.check(stmt)
            elif isinstance(stmt, L.Gemm):
                self.gemm(stmt)
            elif isinstance(stmt, L.ConvCall):
                self.conv(stmt)
            else:
                raise TypeError(f"{self.writer.target.name}: cannot emit {type(stmt).__name__} in "
                                f"{self.writer.kernel.name}")

    def extent_value(self, extent):
        """A loop's trip count as an LLVM i64 (a constant, or computed from size symbols)."""
        return ir.Constant(I64, extent) if isinstance(extent, int) else self.emitter.emit(L.size_of(extent))

    def loop(self, stmt, start, stop):
        """for var in [start, stop): body, as a counted loop LLVM recognises."""
        b = self.builder
        before = b.block
        header = b.append_basic_block(f"{stmt.name}.loop")
        done = b.append_basic_block(f"{stmt.name}.done")
        b.cbranch(b.icmp_signed("<", start, stop), header, done)
        b.position_at_end(header)
        index = b.phi(I64, name=stmt.name)
        index.add_incoming(start, before)
        self.emitter.names[stmt.name] = index
        self.emitter.push()
        self.statements(stmt.body)
        self.emitter.pop()
        following = b.add(index, ir.Constant(I64, 1), name=f"{stmt.name}.next", flags=("nuw", "nsw"))
        index.add_incoming(following, b.block)
        b.cbranch(b.icmp_signed("<", following, stop), header, done)
        b.position_at_end(done)

    def update(self, stmt):
        b = self.builder
        value = self.emitter.emit(stmt.value)
        cell = self.accumulator(stmt.name)
        dtype = self.writer.acc_dtypes[stmt.name]
        current = b.load(cell, typ=VALUE_TYPES[dtype])
        if stmt.combine in ("argmax", "argmin"):
            self.arg_update(stmt, value, current, dtype)
            return
        b.store(self.combine(stmt.combine, dtype, current, value), cell)
        self.emitter.forget_accumulator(stmt.name)

    def combine(self, combine, dtype, current, value):
        """current (add | mul | max | min) value, as an Update of a `dtype` accumulator does
        (float max and min propagate NaN)."""
        b = self.builder
        floating = is_float(dtype)
        if combine == "add":
            return b.fadd(current, value, flags=REDUCE_FLAGS) if floating else b.add(current, value)
        if combine == "mul":
            return b.fmul(current, value, flags=REDUCE_FLAGS) if floating else b.mul(current, value)
        if floating:
            op = "maximum" if combine == "max" else "minimum"
            return b.call(self.emitter.float_intrinsic(op, VALUE_TYPES[dtype], 2), [current, value])
        compare = b.icmp_unsigned if dtype in UNSIGNED else b.icmp_signed
        wins = compare(">" if combine == "max" else "<", value, current)
        return b.select(wins, value, current)

    def arg_update(self, stmt, value, best, dtype):
        """First position of the max (min); a NaN beats any number, as numpy's argmax."""
        b = self.builder
        symbol = ">" if stmt.combine == "argmax" else "<"
        if is_float(dtype):
            wins = b.fcmp_ordered(symbol, value, best)
            nan_first = b.and_(b.fcmp_unordered("uno", value, value), b.fcmp_ordered("ord", best, best))
            wins = b.or_(wins, nan_first)
        else:
            wins = (b.icmp_unsigned if dtype in UNSIGNED else b.icmp_signed)(symbol, value, best)
        position = self.emitter.emit(stmt.position)
        index_cell = self.accumulator(stmt.index_name)
        old_index = b.load(index_cell, typ=I64)
        b.store(b.select(wins, value, best), self.accumulator(stmt.name))
        b.store(b.select(wins, position, old_index), index_cell)
        self.emitter.forget_accumulator(stmt.name)
        self.emitter.forget_accumulator(stmt.index_name)

    def store(self, stmt):
        b = self.builder
        slot = self.writer.kernel.slots[stmt.slot]
        offset = self.emitter.emit(stmt.offset)
        value = self.emitter.emit(stmt.value)
        if stmt.combine == "add":
            current = load_value(b, self.slots[stmt.slot], slot.dtype, offset)
            value = b.fadd(current, value) if is_float(slot.dtype) else b.add(current, value)
        store_value(b, self.slots[stmt.slot], slot.dtype, offset, value)
        self.emitter.forget_loads()

    def check(self, stmt):
        """A failed check keeps the least error number of the kernel in the status cell: it
        holds the number negated (0 - number, 0 while none failed) and takes the unsigned
        maximum atomically, so whichever thread or iteration fails, the kernel reports the
        check that comes first in the program (the caller negates it back)."""
        b = self.builder
        cond = self.emitter.emit(stmt.cond)
        code = self.writer.first_error + stmt.error + 1
        with b.if_then(b.not_(cond), likely=False):
            b.atomic_rmw("umax", self.status, ir.Constant(ir.IntType(32), -code), "monotonic")
