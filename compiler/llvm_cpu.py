"""Loop kernels (compiler/loop_ir.py) as one LLVM module per program, and its machine code.

`build_module` writes every kernel as an internal function over `noalias` buffer pointers
and one entry function `ember_program(void **table)` that runs them in schedule order over
the arena, so a compiled call is one foreign call. The table (filled by
runtime/cpu_program.py, see `ArgsLayout`) holds the arena, the numpy-fallback callback
`int (*)(int kernel)`, an int64 array of per-kernel cycle counts (instrumented builds), the
thread count, the offset of the data pointer inside a numpy array object, and then the
address of the numpy array object of each external buffer (inputs, params, constants,
outputs). The entry returns 0, the 1-based number of the error that stopped it
(`Program.errors`), or -1 when a numpy fallback raised.

Loops marked parallel whose work passes PARALLEL_MIN_WORK are outlined and split across
threads by libgomp's GOMP_parallel (static chunks of the outermost loop); the rest run on
the calling thread. Innermost loops are plain counted loops over unit-stride loads and
stores, so LLVM's loop vectoriser turns them into vector code for the host CPU. Reductions
carry `reassoc nsz` on their adds and multiplies (so they vectorise); nothing else uses
fast-math flags. Matrix multiplies call `ember_sgemm_threads` (compiler/llvm_matmul.py),
compiled once per process into a support library (see compiler/llvm_backend.py).
"""
from dataclasses import dataclass, field

from llvmlite import ir

from ember.runtime.cpu_program import HEAD
from . import loop_ir as L
from .llvm_scalar import (F32, I8, I32, I64, VALUE_TYPES, ScalarEmitter, intrinsic, is_float, load_value,
                          store_value)

PTR = ir.PointerType()
ENTRY_NAME = "ember_program"
SGEMM_SYMBOL = "ember_sgemm_threads"
# element-ops below which a loop stays on the calling thread: a parallel region costs ~5 us
# on idle cores, and whole scheduler time slices when another process holds a core
PARALLEL_MIN_WORK = 1 << 20
REDUCE_FLAGS = ("reassoc", "nsz")


@dataclass
class ArgsLayout:
    """Positions in the entry function's `void **table` (runtime/cpu_program.py fills it):
    the fixed head (arena, callback, timings, threads, data offset), then one numpy array
    object address per external buffer."""

    externals: int

    def head(self, name):
        return HEAD.index(name)

    def external(self, k):
        return len(HEAD) + k

    @property
    def size(self):
        return len(HEAD) + self.externals


@dataclass
class Program:
    """What the code generator needs beyond the kernels: where each slot key lives (("arg", k)
    or ("arena", byte offset)), which slot keys may share bytes (no `noalias` between them)."""

    name: str
    kernels: list
    locations: dict
    layout: ArgsLayout
    aliasing: set = field(default_factory=set)  # frozenset({key, key}) pairs that may overlap
    errors: list = field(default_factory=list)  # (exception name, message), numbered from 1
    error_base: list = field(default_factory=list)  # per kernel: its first error's number - 1
    instrument: bool = False
    parallel: bool = True  # libgomp is loaded: big parallel loops may use threads


def build_module(program, module):
    """Add the kernels and the entry function of `program` to the llvmlite `module`."""
    functions = []
    for number, kernel in enumerate(program.kernels):
        if kernel.kind == "callback" or not kernel.body:
            functions.append(None)
            continue
        functions.append(_KernelWriter(module, program, kernel, number).write())
    _write_entry(module, program, functions)
    return module


# ----------------------------------------------------------------------------- entry

def _write_entry(module, program, functions):
    layout = program.layout
    entry = ir.Function(module, ir.FunctionType(I32, [PTR]), name=ENTRY_NAME)
    table = entry.args[0]
    table.add_attribute("noalias")
    b = ir.IRBuilder(entry.append_basic_block("entry"))

    def word(position):
        return b.load(b.gep(table, [ir.Constant(I64, position)], source_etype=PTR), typ=PTR)

    arena = word(layout.head("arena"))
    callback = word(layout.head("callback"))
    timings = word(layout.head("timings")) if program.instrument else None
    threads = b.trunc(b.ptrtoint(word(layout.head("threads")), I64), I32)
    data_offset = b.ptrtoint(word(layout.head("data_offset")), I64)
    externals = {}

    def data_pointer(k):
        """The data pointer of the numpy array whose object address is entry k."""
        if k not in externals:
            obj = word(layout.external(k))
            externals[k] = b.load(b.gep(obj, [data_offset], source_etype=I8), typ=PTR)
        return externals[k]

    # every data pointer is read once, up front: kernels see plain pointers
    for k in sorted({where for kind, where in program.locations.values() if kind == "arg"}):
        data_pointer(k)
    status = b.alloca(I32, name="status")
    b.store(ir.Constant(I32, 0), status)
    clock = intrinsic_cycle_counter(module) if program.instrument else None
    callback = _FunctionPointer(callback, ir.FunctionType(I32, [I32]))
    for number, (kernel, function) in enumerate(zip(program.kernels, functions)):
        if kernel.kind != "callback" and function is None:
            continue
        start = b.call(clock, []) if clock else None
        if kernel.kind == "callback":
            b.store(b.call(callback, [ir.Constant(I32, number)]), status)
        else:
            pointers = [_slot_pointer(b, program, slot.key, data_pointer, arena) for slot in kernel.slots]
            b.call(function, pointers + [status, threads])
        if clock:
            spent = b.sub(b.call(clock, []), start)
            cell = b.gep(timings, [ir.Constant(I64, number)], source_etype=I64)
            b.store(b.add(b.load(cell, typ=I64), spent), cell)
        code = b.load(status, typ=I32)
        with b.if_then(b.icmp_signed("!=", code, ir.Constant(I32, 0)), likely=False):
            b.ret(code)
    b.ret(ir.Constant(I32, 0))


class _FunctionPointer:
    """A loaded function pointer as llvmlite's IRBuilder.call wants a callee: with a type."""

    def __init__(self, pointer, function_type):
        self.pointer, self.function_type, self.type = pointer, function_type, PTR

    def get_reference(self):
        return self.pointer.get_reference()


def intrinsic_cycle_counter(module):
    existing = module.globals.get("llvm.readcyclecounter")
    return existing or ir.Function(module, ir.FunctionType(I64, []), name="llvm.readcyclecounter")


def _slot_pointer(b, program, key, data_pointer, arena):
    kind, where = program.locations[key]
    if kind == "arg":
        return data_pointer(where)
    return b.gep(arena, [ir.Constant(I64, where)], source_etype=I8)


# ----------------------------------------------------------------------------- kernels

def statement_work(body):
    """Element-ops a statement list performs (loop trips times expression sizes)."""
    total = 0
    for stmt in body:
        if isinstance(stmt, L.Loop):
            total += stmt.extent * statement_work(stmt.body)
        elif isinstance(stmt, L.Gemm):
            total += stmt.m * stmt.n * stmt.k
        else:
            total += 1 + sum(sum(1 for _ in e.walk()) for e in L.statement_exprs(stmt))
    return total


def _accumulator_dtypes(body):
    return {s.name: s.dtype for s in L.walk_statements(body) if isinstance(s, L.Declare)}


def _accumulators_read(body):
    names = set()
    for stmt in L.walk_statements(body):
        for e in L.statement_exprs(stmt):
            names |= {x.attr for x in e.walk() if x.op == "acc"}
        if isinstance(stmt, L.Update):
            names.add(stmt.name)
    return names


class _KernelWriter:
    """Writes one Kernel as `void @name(ptr noalias slots..., ptr status, i32 threads)`."""

    def __init__(self, module, program, kernel, number):
        self.module, self.program, self.kernel, self.number = module, program, kernel, number
        self.acc_dtypes = _accumulator_dtypes(kernel.body)
        self.symbol = f"{kernel.name}"
        self.first_error = program.error_base[number] if program.error_base else 0

    def noalias_slots(self):
        keys = [s.key for s in self.kernel.slots]
        shared = set()
        for a in keys:
            for other in keys:
                if a != other and frozenset((a, other)) in self.program.aliasing:
                    shared.add(a)
        return [key not in shared for key in keys]

    def signature(self, extra=()):
        return ir.FunctionType(ir.VoidType(), [PTR] * len(self.kernel.slots) + [PTR, I32] + list(extra))

    def new_function(self, name, function_type):
        fn = ir.Function(self.module, function_type, name=name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        for slot, pointer, noalias in zip(self.kernel.slots, fn.args, self.noalias_slots()):
            if noalias:
                pointer.add_attribute("noalias")
        return fn

    def write(self):
        fn = self.new_function(self.symbol, self.signature())
        slots = list(fn.args[:len(self.kernel.slots)])
        status, threads = fn.args[len(self.kernel.slots):]
        builder = ir.IRBuilder(fn.append_basic_block("entry"))
        body = _BodyWriter(self, builder, slots, status, threads)
        body.statements(self.kernel.body, top=True)
        builder.ret_void()
        return fn


class _BodyWriter:
    """Emits statements into one function (the kernel or an outlined parallel loop)."""

    def __init__(self, writer, builder, slots, status, threads, names=None):
        self.writer, self.builder = writer, builder
        self.slots, self.status, self.threads = slots, status, threads
        self.module = writer.module
        self.accumulators = {}
        self.emitter = ScalarEmitter(builder, self.module, slots, dict(names or {}), self.accumulators,
                                     writer.acc_dtypes)

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
                if top and stmt.parallel and self.writer.program.parallel \
                        and statement_work([stmt]) >= PARALLEL_MIN_WORK:
                    self.parallel_loop(stmt)
                else:
                    self.loop(stmt, ir.Constant(I64, 0), ir.Constant(I64, stmt.extent))
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
                raise TypeError(f"llvm_cpu: cannot emit {type(stmt).__name__} in {self.writer.kernel.name}")

    # ------------------------------------------------------------------ loops
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

    def parallel_loop(self, stmt):
        """Outline the loop into `kernel.var.loop(slots, status, threads, outer accumulators,
        lo, hi)` and run it on libgomp's threads through a trampoline `kernel.var.par(ctx)`."""
        writer = self.writer
        b = self.builder
        outer = sorted(n for n in _accumulators_read(stmt.body) if n in self.accumulators)
        outer_types = [VALUE_TYPES[writer.acc_dtypes[n]] for n in outer]
        # named after the kernel and the loop's variable (content, not object identity), so
        # the same program always gives the same symbols; get_unique_name guards repeats
        base = f"{writer.symbol}.{stmt.name}"
        loop_fn = writer.new_function(self.module.get_unique_name(base + ".loop"),
                                      writer.signature(outer_types + [I64, I64]))
        n_slots = len(writer.kernel.slots)
        inner_builder = ir.IRBuilder(loop_fn.append_basic_block("entry"))
        inner = _BodyWriter(writer, inner_builder, list(loop_fn.args[:n_slots]), loop_fn.args[n_slots],
                            loop_fn.args[n_slots + 1])
        for name, value in zip(outer, loop_fn.args[n_slots + 2:n_slots + 2 + len(outer)]):
            inner_builder.store(value, inner.accumulator(name))
        inner.loop(stmt, loop_fn.args[-2], loop_fn.args[-1])
        inner_builder.ret_void()

        values = [b.load(self.accumulators[n], typ=t) for n, t in zip(outer, outer_types)]
        fixed = list(self.slots) + [self.status, self.threads] + values
        trampoline = _write_trampoline(self.module, self.module.get_unique_name(base + ".par"), loop_fn,
                                       [a.type for a in fixed], stmt.extent)
        with b.if_else(b.icmp_signed(">", self.threads, ir.Constant(I32, 1))) as (many, one):
            with many:
                context = b.alloca(I64, size=ir.Constant(I64, len(fixed)))
                for k, value in enumerate(fixed):
                    b.store(_to_word(b, value), b.gep(context, [ir.Constant(I64, k)], source_etype=I64))
                gomp_parallel = _declare(self.module, "GOMP_parallel", ir.VoidType(), [PTR, PTR, I32, I32])
                b.call(gomp_parallel, [trampoline, context, self.threads, ir.Constant(I32, 0)])
            with one:
                b.call(loop_fn, fixed + [ir.Constant(I64, 0), ir.Constant(I64, stmt.extent)])

    # ------------------------------------------------------------------ statements
    def update(self, stmt):
        b = self.builder
        value = self.emitter.emit(stmt.value)
        cell = self.accumulator(stmt.name)
        dtype = self.writer.acc_dtypes[stmt.name]
        current = b.load(cell, typ=VALUE_TYPES[dtype])
        if stmt.combine in ("argmax", "argmin"):
            self.arg_update(stmt, value, current, dtype)
            return
        floating = is_float(dtype)
        if stmt.combine == "add":
            result = b.fadd(current, value, flags=REDUCE_FLAGS) if floating else b.add(current, value)
        elif stmt.combine == "mul":
            result = b.fmul(current, value, flags=REDUCE_FLAGS) if floating else b.mul(current, value)
        elif floating:
            name = "llvm.maximum" if stmt.combine == "max" else "llvm.minimum"
            result = b.call(intrinsic(self.module, name, VALUE_TYPES[dtype], 2), [current, value])
        else:
            wins = b.icmp_signed(">" if stmt.combine == "max" else "<", value, current)
            result = b.select(wins, value, current)
        b.store(result, cell)
        self.emitter.forget_accumulator(stmt.name)

    def arg_update(self, stmt, value, best, dtype):
        """First position of the max (min); a NaN beats any number, as numpy's argmax."""
        b = self.builder
        symbol = ">" if stmt.combine == "argmax" else "<"
        if is_float(dtype):
            wins = b.fcmp_ordered(symbol, value, best)
            nan_first = b.and_(b.fcmp_unordered("uno", value, value), b.fcmp_ordered("ord", best, best))
            wins = b.or_(wins, nan_first)
        else:
            wins = b.icmp_signed(symbol, value, best)
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
        b = self.builder
        cond = self.emitter.emit(stmt.cond)
        code = self.writer.first_error + stmt.error + 1
        with b.if_then(b.not_(cond), likely=False):
            b.store(ir.Constant(I32, code), self.status)

    def gemm(self, stmt):
        b = self.builder
        sgemm = _declare(self.module, SGEMM_SYMBOL, ir.VoidType(),
                         [I64, I64, I64, PTR, I64, I64, PTR, I64, I64, PTR, I64, F32, I32])

        def pointer(view):
            return b.gep(self.slots[view.slot], [self.emitter.emit(view.offset)], source_etype=F32)

        a, bb, c = stmt.a, stmt.b, stmt.c
        const = lambda v: ir.Constant(I64, v)  # noqa: E731
        b.call(sgemm, [const(stmt.m), const(stmt.n), const(stmt.k), pointer(a), const(a.rows), const(a.cols),
                       pointer(bb), const(bb.rows), const(bb.cols), pointer(c), const(c.rows),
                       ir.Constant(F32, stmt.beta), self.threads])
        self.emitter.forget_loads()

    def conv(self, stmt):
        """void ember_<kind>(in0, in1, out, 14 x i64 geometry, workspace, i64 slots, i32 threads)."""
        b = self.builder
        function = _declare(self.module, CONV_SYMBOLS[stmt.kind], ir.VoidType(),
                            [PTR, PTR, PTR] + [I64] * len(stmt.geometry) + [PTR, I64, I32])
        geometry = [ir.Constant(I64, g) for g in stmt.geometry]
        b.call(function, [self.slots[stmt.in0], self.slots[stmt.in1], self.slots[stmt.out]] + geometry
               + [self.slots[stmt.workspace], ir.Constant(I64, stmt.workspace_slots), self.threads])
        self.emitter.forget_loads()


CONV_SYMBOLS = {kind + suffix: f"ember_{kind}{suffix}" for kind in L.CONV_KINDS
                for suffix in ("", L.DIRECT_SUFFIX)}  # llvm_conv's entry points


def _to_word(b, value):
    """Any kernel argument as an i64 word of the parallel-loop context."""
    t = value.type
    if isinstance(t, ir.PointerType):
        return b.ptrtoint(value, I64)
    if isinstance(t, (ir.FloatType, ir.DoubleType)):
        value = b.bitcast(value, ir.IntType(32 if isinstance(t, ir.FloatType) else 64))
        t = value.type
    return b.zext(value, I64) if t.width < 64 else value


def _from_word(b, word, t):
    if isinstance(t, ir.PointerType):
        return b.inttoptr(word, PTR)
    if isinstance(t, (ir.FloatType, ir.DoubleType)):
        bits = ir.IntType(32 if isinstance(t, ir.FloatType) else 64)
        return b.bitcast(b.trunc(word, bits) if bits.width < 64 else word, t)
    return b.trunc(word, t) if t.width < 64 else word


def _write_trampoline(module, name, loop_fn, field_types, extent):
    """void name(i64 *ctx): this thread's static chunk of [0, extent) through loop_fn."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), name=name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    context = fn.args[0]
    fields = [_from_word(b, b.load(b.gep(context, [ir.Constant(I64, k)], source_etype=I64), typ=I64), t)
              for k, t in enumerate(field_types)]
    thread = b.sext(b.call(_declare(module, "omp_get_thread_num", I32, []), []), I64)
    count = b.sext(b.call(_declare(module, "omp_get_num_threads", I32, []), []), I64)
    chunk = b.sdiv(b.add(ir.Constant(I64, extent), b.sub(count, ir.Constant(I64, 1))), count)
    lo = b.mul(thread, chunk)
    hi = b.add(lo, chunk)
    hi = b.select(b.icmp_signed("<", hi, ir.Constant(I64, extent)), hi, ir.Constant(I64, extent))
    with b.if_then(b.icmp_signed("<", lo, hi)):
        b.call(loop_fn, fields + [lo, hi])
    b.ret_void()
    return fn


def _declare(module, name, return_type, argument_types):
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(return_type, argument_types), name=name)


__all__ = ["ArgsLayout", "Program", "build_module", "ENTRY_NAME", "SGEMM_SYMBOL", "CONV_SYMBOLS"]
