"""The CPU target's program: its loop kernels in one LLVM module with one entry function.

`build_module` writes every kernel as an internal function over `noalias` buffer pointers
(compiler/llvm/kernels.py writes their statements) and one entry function `ember_program(void **table)` that runs them in schedule order over
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
stores, so LLVM's loop vectoriser turns them into vector code for the host CPU. Matrix
multiplies call `ember_sgemm_threads` (compiler/cpu/sgemm.py) and convolutions
`ember_conv2d*` (compiler/cpu/conv.py), from the support library (cpu/support_library.py).
"""
from dataclasses import dataclass

from llvmlite import ir

from ember.runtime.cpu_program import HEAD
from .. import loop_ir as L
from ..llvm.debug_locations import attach_debug_locations
from ..llvm import kernels
from ..llvm.kernels import PTR, kernel_structure, statement_work
from ..llvm.loops import declare
from ..llvm.scalar import F32, I8, I32, I64, MAX_SYMBOLS, VALUE_TYPES
from .size_generic import generic_symbol, size_generic_form, worth_threads

ENTRY_NAME = "ember_program"
SGEMM_SYMBOL = "ember_sgemm_threads"
# element-ops below which a loop stays on the calling thread: a parallel region costs ~5 us
# on idle cores, and whole scheduler time slices when another process holds a core
PARALLEL_MIN_WORK = 1 << 20


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
class Program(kernels.Program):
    """A CPU program: the kernels' Program plus the entry's table layout, whether it counts
    cycles per kernel (`instrument`) and whether big parallel loops may use threads."""

    layout: ArgsLayout = None
    instrument: bool = False
    parallel: bool = True  # libgomp is loaded: big parallel loops may use threads


def build_module(target, program, module, sources=None):
    """Add the kernels and the entry function of `program` to the llvmlite `module`; `target`
    (an LLVMTarget) gives the intrinsic and math tables; `sources` ({kernel name: "model.py:15"})
    become debug locations on every instruction (compiler/llvm/debug_locations.py)."""
    # the transformer blocks of a model give the same kernels once per block: one function
    # serves every kernel of one structure (LLVM's time grows with the code it compiles), and
    # one size-generic function every flat kernel of one structure whatever its size (the
    # optimizer's update of each parameter: cpu/size_generic.py)
    forms, sizes = [], {}
    for kernel in program.kernels:
        form = None if kernel.kind == "callback" or not kernel.body else size_generic_form(program, kernel)
        forms.append(form)
        if form is not None:
            sizes.setdefault(form[0], set()).add(form[1])
    functions, written = [], {}
    for number, (kernel, form) in enumerate(zip(program.kernels, forms)):
        if kernel.kind == "callback" or not kernel.body:
            functions.append((None, None))
            continue
        if form is not None and len(sizes[form[0]]) > 1:  # (of one size: its own function, n a constant)
            key, n = form
            if key not in written:
                written[key] = SizeGenericKernelWriter(target, module, program, kernel, number, n,
                                                       max(sizes[key])).write()
            functions.append((written[key], n))
            continue
        key = kernel_structure(program, kernel)
        if key not in written:
            written[key] = CpuKernelWriter(target, module, program, kernel, number).write()
        functions.append((written[key], None))
    _write_entry(module, program, functions)
    sources = dict(sources or {})
    for kernel, (function, size) in zip(program.kernels, functions):
        if size is not None:  # (a size-generic function: its first kernel's model line)
            sources.setdefault(function.name, sources.get(kernel.name, ""))
    attach_debug_locations(module, sources, skip=(ENTRY_NAME,))
    return module


# ----------------------------------------------------------------------------- entry

def _write_entry(module, program, functions):
    layout = program.layout
    entry = ir.Function(module, ir.FunctionType(I32, [PTR]), name=ENTRY_NAME)
    # straight-line code that runs once per call (a transformer step's: 6,000 instructions,
    # 365 calls): LLVM's optimiser and its full code generator took 0.8 s over it, the
    # longest part of the compile, to save nanoseconds per call; unoptimised it takes 0.17 s
    entry.attributes.add("optnone")
    entry.attributes.add("noinline")
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
    sizes = module.globals.get("ember_sizes")
    if sizes is not None:  # a dynamic program: its kernels read the size symbols from @ember_sizes
        given = word(layout.head("sizes"))
        for k in range(MAX_SYMBOLS):
            value = b.load(b.gep(given, [ir.Constant(I64, k)], source_etype=I64), typ=I64)
            b.store(value, b.gep(sizes, [ir.Constant(I64, 0), ir.Constant(I64, k)]))
    offsets = word(layout.head("offsets")) if any(kind == "offset" for kind, _ in program.locations.values()) \
        else None
    status = b.alloca(I32, name="status")
    b.store(ir.Constant(I32, 0), status)
    clock = intrinsic_cycle_counter(module) if program.instrument else None
    callback = _FunctionPointer(callback, ir.FunctionType(I32, [I32]))
    for number, (kernel, (function, size)) in enumerate(zip(program.kernels, functions)):
        if kernel.kind != "callback" and function is None:
            continue
        start = b.call(clock, []) if clock else None
        if kernel.kind == "callback":
            b.store(b.call(callback, [ir.Constant(I32, number)]), status)
        else:
            pointers = [_slot_pointer(b, program, slot.key, data_pointer, arena, offsets) for slot in kernel.slots]
            b.call(function, pointers + [status, threads] + ([ir.Constant(I64, size)] if size else []))
        if clock:
            spent = b.sub(b.call(clock, []), start)
            cell = b.gep(timings, [ir.Constant(I64, number)], source_etype=I64)
            b.store(b.add(b.load(cell, typ=I64), spent), cell)
        if kernel.kind != "callback" and not kernel.errors:
            continue  # (no check in it: the status stays 0; one block less per kernel for LLVM)
        code = b.load(status, typ=I32)
        with b.if_then(b.icmp_signed("!=", code, ir.Constant(I32, 0)), likely=False):
            if kernel.kind == "callback":
                b.ret(code)  # (-1: the callback's exception, kept by the runtime)
            else:  # kernels keep their least error number negated (kernels.BodyWriter.check), from 1
                base = program.error_base[number] if program.error_base else 0
                b.ret(b.add(b.neg(code), ir.Constant(I32, base)))
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


def _slot_pointer(b, program, key, data_pointer, arena, offsets=None):
    kind, where = program.locations[key]
    if kind == "arg":
        return data_pointer(where)
    if kind == "offset":  # (a dynamic program's buffer: its offset was placed for this call's sizes)
        k, extra = where
        placed = b.load(b.gep(offsets, [ir.Constant(I64, k)], source_etype=I64), typ=I64)
        return b.gep(arena, [b.add(placed, ir.Constant(I64, extra))], source_etype=I8)
    return b.gep(arena, [ir.Constant(I64, where)], source_etype=I8)


# ----------------------------------------------------------------------------- kernels

class CpuKernelWriter(kernels.KernelWriter):
    """Writes one Kernel as an internal `void @name(ptr noalias slots..., ptr status, i32 threads)`."""

    def extra_arguments(self):
        return [I32]

    def error_offset(self, program, number):
        return 0  # the entry adds the kernel's error base (see build_module: kernels are shared)

    def new_function(self, name, function_type):
        fn = super().new_function(name, function_type)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        return fn


class SizeGenericKernelWriter(CpuKernelWriter):
    """One function for the flat kernels of one structure, whatever their element count n
    (cpu/size_generic.py): `void @name(ptr noalias slots..., ptr status, i32 threads, i64 n)`.
    `kernel` (of `n` elements) stands for them; `largest` is the most elements any of them has."""

    def __init__(self, target, module, program, kernel, number, n, largest):
        super().__init__(target, module, program, kernel, number)
        self.n, self.largest = n, largest
        base, k = generic_symbol(kernel.name), 1  # (no dot: debug locations find a kernel by the name before one)
        self.symbol = base
        while self.symbol in module.globals:
            k += 1
            self.symbol = f"{base}{k}"

    def extra_arguments(self):
        return [I32, I64]


class CpuBodyWriter(kernels.BodyWriter):
    """Statements on the CPU: big top-level parallel loops go to libgomp's threads, matrix
    multiplies and convolutions call the support library."""

    @property
    def threads(self):
        return self.extra[0]

    @property
    def size_argument(self):
        """A size-generic kernel's element count (an i64 argument after the thread count)."""
        return self.extra[1]

    @property
    def generic(self):
        return isinstance(self.writer, SizeGenericKernelWriter)

    def extent_value(self, extent):
        if self.generic and extent == self.writer.n:
            return self.size_argument
        return super().extent_value(extent)

    def distributes(self, loop):
        if not (loop.parallel and self.writer.program.parallel):
            return False
        if self.generic:  # (worth the threads for the largest kernel it serves: decided per call)
            return statement_work(loop.body) * self.writer.largest >= PARALLEL_MIN_WORK
        return statement_work([loop]) >= PARALLEL_MIN_WORK

    def parallel_loop(self, stmt):
        """Outline the loop into `kernel.var.loop(slots, status, threads, outer accumulators,
        lo, hi)` and run it on libgomp's threads through a trampoline `kernel.var.par(ctx)`."""
        writer = self.writer
        b = self.builder
        outer = sorted(n for n in kernels.accumulators_read(stmt.body) if n in self.accumulators)
        outer_types = [VALUE_TYPES[writer.acc_dtypes[n]] for n in outer]
        # named after the kernel and the loop's variable (content, not object identity), so
        # the same program always gives the same symbols; get_unique_name guards repeats
        base = f"{writer.symbol}.{stmt.name}"
        loop_fn = writer.new_function(self.module.get_unique_name(base + ".loop"),
                                      writer.signature(outer_types + [I64, I64]))
        n_slots, n_extra = len(writer.kernel.slots), len(self.extra)
        inner_builder = ir.IRBuilder(loop_fn.append_basic_block("entry"))
        inner = CpuBodyWriter(writer, inner_builder, list(loop_fn.args[:n_slots]), loop_fn.args[n_slots],
                              list(loop_fn.args[n_slots + 1:n_slots + 1 + n_extra]))
        first_outer = n_slots + 1 + n_extra
        for name, value in zip(outer, loop_fn.args[first_outer:first_outer + len(outer)]):
            inner_builder.store(value, inner.accumulator(name))
        inner.loop(stmt, loop_fn.args[-2], loop_fn.args[-1])
        inner_builder.ret_void()

        values = [b.load(self.accumulators[n], typ=t) for n, t in zip(outer, outer_types)]
        fixed = list(self.slots) + [self.status] + list(self.extra) + values
        extent = self.extent_value(stmt.extent)
        # (a trip count read from the size symbols, or a size-generic kernel's, travels in the
        # context after the arguments)
        carried = [] if isinstance(extent, ir.Constant) else [extent]
        trampoline = _write_trampoline(self.module, self.module.get_unique_name(base + ".par"), loop_fn,
                                       [a.type for a in fixed], stmt.extent if not carried else None)
        many_threads = b.icmp_signed(">", self.threads, ir.Constant(I32, 1))
        if self.generic:
            many_threads = b.and_(many_threads, worth_threads(self, stmt, PARALLEL_MIN_WORK))
        with b.if_else(many_threads) as (many, one):
            with many:
                context = b.alloca(I64, size=ir.Constant(I64, len(fixed) + len(carried)))
                for k, value in enumerate(fixed + carried):
                    b.store(_to_word(b, value), b.gep(context, [ir.Constant(I64, k)], source_etype=I64))
                gomp_parallel = declare(self.module, "GOMP_parallel", ir.VoidType(), [PTR, PTR, I32, I32])
                b.call(gomp_parallel, [trampoline, context, self.threads, ir.Constant(I32, 0)])
            with one:
                b.call(loop_fn, fixed + [ir.Constant(I64, 0), extent])

    def gemm(self, stmt):
        b = self.builder
        sgemm = declare(self.module, SGEMM_SYMBOL, ir.VoidType(),
                         [I64, I64, I64, PTR, I64, I64, PTR, I64, I64, PTR, I64, F32, I32])

        def pointer(view):
            return b.gep(self.slots[view.slot], [self.emitter.emit(view.offset)], source_etype=F32)

        a, bb, c = stmt.a, stmt.b, stmt.c
        const = self.extent_value  # (an int, or a size computed from the symbols)
        b.call(sgemm, [const(stmt.m), const(stmt.n), const(stmt.k), pointer(a), const(a.rows), const(a.cols),
                       pointer(bb), const(bb.rows), const(bb.cols), pointer(c), const(c.rows),
                       ir.Constant(F32, stmt.beta), self.threads])
        self.emitter.forget_loads()

    def conv(self, stmt):
        """void ember_<kind>(in0, in1, out, 14 x i64 geometry, workspace, i64 slots, i32 threads)."""
        b = self.builder
        function = declare(self.module, CONV_SYMBOLS[stmt.kind], ir.VoidType(),
                            [PTR, PTR, PTR] + [I64] * len(stmt.geometry) + [PTR, I64, I32])
        geometry = [self.extent_value(g) for g in stmt.geometry]
        b.call(function, [self.slots[stmt.in0], self.slots[stmt.in1], self.slots[stmt.out]] + geometry
               + [self.slots[stmt.workspace], ir.Constant(I64, stmt.workspace_slots), self.threads])
        self.emitter.forget_loads()


CONV_SYMBOLS = {kind + suffix: f"ember_{kind}{suffix}" for kind in L.CONV_KINDS
                for suffix in ("", L.DIRECT_SUFFIX)}  # conv.py's entry points


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
    """void name(i64 *ctx): this thread's static chunk of [0, extent) through loop_fn (extent
    None: the context's word after the fields holds it)."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR]), name=name)
    fn.linkage = "internal"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    context = fn.args[0]
    fields = [_from_word(b, b.load(b.gep(context, [ir.Constant(I64, k)], source_etype=I64), typ=I64), t)
              for k, t in enumerate(field_types)]
    if extent is None:
        extent = b.load(b.gep(context, [ir.Constant(I64, len(field_types))], source_etype=I64), typ=I64)
    else:
        extent = ir.Constant(I64, extent)
    thread = b.sext(b.call(declare(module, "omp_get_thread_num", I32, []), []), I64)
    count = b.sext(b.call(declare(module, "omp_get_num_threads", I32, []), []), I64)
    chunk = b.sdiv(b.add(extent, b.sub(count, ir.Constant(I64, 1))), count)
    lo = b.mul(thread, chunk)
    hi = b.add(lo, chunk)
    hi = b.select(b.icmp_signed("<", hi, extent), hi, extent)
    with b.if_then(b.icmp_signed("<", lo, hi)):
        b.call(loop_fn, fields + [lo, hi])
    b.ret_void()
    return fn


CpuKernelWriter.body_writer = CpuBodyWriter

__all__ = ["ArgsLayout", "Program", "build_module", "ENTRY_NAME", "SGEMM_SYMBOL", "CONV_SYMBOLS"]
