"""The code behind an exported library's C API (c_api.py's header), written as LLVM IR with
llvmlite, so that exporting needs no C compiler: LLVM makes the object code and the system's
C compiler or its linker links it (compiler/export/library.py).

The wrapper owns what the compiled programs (compiler/cpu/program.py) leave to their caller:
it checks the CPU's features (cpuid and xgetbv, no compiler builtins), finds the weights
(linked in, or a safetensors file checked by size and CRC-32), allocates each instance's
arena, fills each program's entry table (head, then one cell per external buffer holding its
data pointer: the table's data offset is 0), splits a dynamic batch into chunks of the
compiled batch sizes (largest first, row-offset pointers, no copies), copies results that are
inputs, weights or constants, and turns every failure into an error code with a message.
Everything the tables describe is known here, so each program's call is straight-line code.
"""
from llvmlite import ir

from ember.runtime.cpu_program import HEAD as PROGRAM_HEAD
from ..llvm.loops import I8, I32, I64, counted_loop, declare
from .c_api import STATUS

PTR = ir.PointerType()
VOID = ir.VoidType()
ERROR_BYTES = 1024
ARENA_ALIGN = 64
HEAD = len(PROGRAM_HEAD)  # arena, callback, timings, threads, data offset, sizes, offsets (the entry's table)
# the instance: weights, owned weights, arena (pointers), threads (i32), then the error message
WEIGHTS, OWNED, ARENA, THREADS, ERROR = 0, 8, 16, 24, 32
INSTANCE_BYTES = ERROR + ERROR_BYTES

# x86 CPUID bits of the features LLVM may use: (leaf, subleaf, register (0 eax .. 3 edx), bit).
# AVX and its successors also need the OS to save their registers (XCR0, read with xgetbv).
CPUID_BITS = {
    "sse3": (1, 0, 2, 0), "pclmul": (1, 0, 2, 1), "ssse3": (1, 0, 2, 9), "fma": (1, 0, 2, 12),
    "sse4.1": (1, 0, 2, 19), "sse4.2": (1, 0, 2, 20), "movbe": (1, 0, 2, 22), "popcnt": (1, 0, 2, 23),
    "aes": (1, 0, 2, 25), "avx": (1, 0, 2, 28), "f16c": (1, 0, 2, 29),
    "bmi": (7, 0, 1, 3), "avx2": (7, 0, 1, 5), "bmi2": (7, 0, 1, 8), "avx512f": (7, 0, 1, 16),
    "avx512dq": (7, 0, 1, 17), "adx": (7, 0, 1, 19), "avx512ifma": (7, 0, 1, 21), "avx512cd": (7, 0, 1, 28),
    "sha": (7, 0, 1, 29), "avx512bw": (7, 0, 1, 30), "avx512vl": (7, 0, 1, 31),
    "avx512vbmi": (7, 0, 2, 1), "avx512vbmi2": (7, 0, 2, 6), "gfni": (7, 0, 2, 8), "vaes": (7, 0, 2, 9),
    "vpclmulqdq": (7, 0, 2, 10), "avx512vnni": (7, 0, 2, 11), "avx512bitalg": (7, 0, 2, 12),
    "avx512vpopcntdq": (7, 0, 2, 14),
    "lzcnt": (0x80000001, 0, 2, 5), "sse4a": (0x80000001, 0, 2, 6), "xop": (0x80000001, 0, 2, 11),
    "fma4": (0x80000001, 0, 2, 16),
}
# features whose instructions use the AVX registers (VEX/EVEX encoded): the OS must save them
AVX_STATE = {"avx", "avx2", "fma", "f16c", "vaes", "vpclmulqdq", "xop", "fma4"} | {f for f in CPUID_BITS
                                                                                if f.startswith("avx512")}
YMM_STATE, ZMM_STATE = 0x6, 0xE6  # XCR0 bits the OS sets when it saves AVX / AVX-512 registers


def i64(value):
    return ir.Constant(I64, int(value))


def i32(value):
    return ir.Constant(I32, int(value))


class WrapperWriter:
    """Writes the wrapper of `spec` (library.ExportSpec) into a new module for `triple`."""

    def __init__(self, spec, triple, data_layout):
        self.spec, self.n = spec, spec.name
        self.module = ir.Module(name=f"{spec.name}_api")
        self.module.triple, self.module.data_layout = triple, data_layout
        self.strings = {}
        self.libc = {name: declare(self.module, name, ret, args) for name, ret, args in (
            ("calloc", PTR, [I64, I64]), ("free", VOID, [PTR]), ("posix_memalign", I32, [PTR, I64, I64]),
            ("fopen", PTR, [PTR, PTR]), ("fclose", I32, [PTR]), ("fseek", I32, [PTR, I64, I32]),
            ("ftell", I64, [PTR]), ("fread", I64, [PTR, I64, I64, PTR]))}
        memcpy = ir.FunctionType(PTR, [PTR, PTR, I64])
        self.libc["memcpy"] = ir.Function(self.module, memcpy, "memcpy")
        snprintf = ir.FunctionType(I32, [PTR, I64, PTR], var_arg=True)
        self.libc["snprintf"] = ir.Function(self.module, snprintf, "snprintf")
        self.create_error = self.global_bytes("create_error", ERROR_BYTES)

    # ------------------------------------------------------------------ module pieces
    def text(self):
        """The module as LLVM IR text; the create error buffer is thread-local (llvmlite's IR
        builder has no spelling for that, so it is set in the text)."""
        text = str(self.module)
        return text.replace('@"create_error" = internal global', '@"create_error" = internal thread_local global')

    def global_bytes(self, name, size):
        variable = ir.GlobalVariable(self.module, ir.ArrayType(I8, size), name)
        variable.linkage = "internal"
        variable.initializer = ir.Constant(ir.ArrayType(I8, size), None)
        return variable

    def string(self, text):
        """A pointer to a constant NUL-terminated string."""
        if text not in self.strings:
            data = bytearray(text.encode()) + b"\0"
            variable = ir.GlobalVariable(self.module, ir.ArrayType(I8, len(data)), f"str.{len(self.strings)}")
            variable.linkage, variable.global_constant = "private", True
            variable.initializer = ir.Constant(ir.ArrayType(I8, len(data)), data)
            variable.unnamed_addr = True
            self.strings[text] = variable
        return self.strings[text]

    def constant_table(self, name, element, values):
        """A private constant array global."""
        array = ir.ArrayType(element, max(len(values), 1))
        variable = ir.GlobalVariable(self.module, array, name)
        variable.linkage, variable.global_constant = "private", True
        values = values or [ir.Constant(element, None)]
        variable.initializer = ir.Constant(array, [v if isinstance(v, (ir.Constant, ir.GlobalValue))
                                                   else ir.Constant(element, v) for v in values])
        return variable

    def function(self, name, ret, args, internal=False):
        function = ir.Function(self.module, ir.FunctionType(ret, args), name)
        if internal:
            function.linkage = "internal"
        builder = ir.IRBuilder(function.append_basic_block("entry"))
        return function, builder

    @staticmethod
    def field(b, instance, offset):
        return b.gep(instance, [i64(offset)], source_etype=I8)

    def fail(self, b, instance, code, text, *args):
        """snprintf the message into the instance's buffer (or, for None, the create error
        buffer) and return `code`."""
        buffer = self.create_error if instance is None else self.field(b, instance, ERROR)
        b.call(self.libc["snprintf"], [buffer, i64(ERROR_BYTES), self.string(text), *args])
        b.ret(i32(code))

    def check(self, b, condition, instance, code, text, *args):
        """If `condition`, fail (see `fail`); the builder continues where it does not hold."""
        with b.if_then(condition, likely=False):
            self.fail(b, instance, code, text, *args)

    # ------------------------------------------------------------------ the whole wrapper
    def write(self):
        self.write_cpu_check()
        self.write_crc32()
        self.write_lifecycle()
        self.write_queries()
        runners = [self.write_program(k, program) for k, program in enumerate(self.spec.programs)]
        self.write_run(runners)
        return self.module

    def write_cpu_check(self):
        """ptr missing_cpu_feature(): the name of the first feature the code needs that this CPU
        lacks, or null."""
        function, b = self.function("missing_cpu_feature", PTR, [], internal=True)
        self.missing_feature = function
        registers = ir.LiteralStructType([I32, I32, I32, I32])
        cpuid = ir.InlineAsm(ir.FunctionType(registers, [I32, I32]), "cpuid", "={ax},={bx},={cx},={dx},{ax},{cx}",
                             side_effect=True)
        top = {}

        def word(leaf, subleaf, register):
            base = leaf & 0x80000000
            if base not in top:  # the highest leaf this CPU answers, for this range
                top[base] = b.extract_value(b.call(cpuid, [i32(base), i32(0)]), 0)
            supported = b.icmp_unsigned("<=", i32(leaf), top[base])
            value = b.extract_value(b.call(cpuid, [i32(leaf), i32(subleaf)]), register)
            return b.select(supported, value, i32(0))

        needed = [f for f in self.spec.features if f in CPUID_BITS]
        wants_avx = any(f in AVX_STATE for f in needed)
        wants_avx512 = any(f.startswith("avx512") for f in needed)
        state = None
        if wants_avx:
            osxsave = b.and_(word(1, 0, 2), i32(1 << 27))
            xgetbv = ir.InlineAsm(ir.FunctionType(ir.LiteralStructType([I32, I32]), [I32]), "xgetbv",
                                  "={ax},={dx},{cx}", side_effect=True)
            with b.if_then(b.icmp_unsigned("==", osxsave, i32(0)), likely=False):
                b.ret(self.string("avx (the operating system does not enable it)"))
            state = b.extract_value(b.call(xgetbv, [i32(0)]), 0)
        for feature in needed:
            leaf, subleaf, register, bit = CPUID_BITS[feature]
            has = b.icmp_unsigned("!=", b.and_(word(leaf, subleaf, register), i32(1 << bit)), i32(0))
            if state is not None and feature in AVX_STATE:
                mask = ZMM_STATE if feature.startswith("avx512") and wants_avx512 else YMM_STATE
                saved = b.icmp_unsigned("==", b.and_(state, i32(mask)), i32(mask))
                has = b.and_(has, saved)
            with b.if_then(b.not_(has), likely=False):
                b.ret(self.string(feature))
        b.ret(ir.Constant(PTR, None))

    def write_crc32(self):
        """i32 crc32_of(ptr data, i64 size): CRC-32 as zlib computes it, bit by bit per byte."""
        function, b = self.function("crc32_of", I32, [PTR, I64], internal=True)
        self.crc32 = function
        data, size = function.args
        crc = b.alloca(I32, name="crc")
        b.store(i32(0xFFFFFFFF), crc)
        with counted_loop(b, 0, size, name="byte") as k:
            value = b.zext(b.load(b.gep(data, [k], source_etype=I8), typ=I8), I32)
            b.store(b.xor(b.load(crc, typ=I32), value), crc)
            with counted_loop(b, 0, 8, name="bit"):
                c = b.load(crc, typ=I32)
                low = b.and_(c, i32(1))
                mask = b.sub(i32(0), low)
                b.store(b.xor(b.lshr(c, i32(1)), b.and_(mask, i32(0xEDB88320))), crc)
        b.ret(b.xor(b.load(crc, typ=I32), i32(0xFFFFFFFF)))

    def write_lifecycle(self):
        n, spec, libc = self.n, self.spec, self.libc
        create, b = self.function(f"{n}_create", I32, [PTR, PTR])
        path, out = create.args
        self.check(b, b.icmp_unsigned("==", out, ir.Constant(PTR, None)), None, STATUS["ERROR_ARGUMENT"],
                   f"{n}_create: `out` is NULL")
        b.store(ir.Constant(PTR, None), out)
        missing = b.call(self.missing_feature, [])
        self.check(b, b.icmp_unsigned("!=", missing, ir.Constant(PTR, None)), None, STATUS["ERROR_CPU"],
                   f"{n}_create: this CPU lacks %s, which {n}'s code (compiled for {spec.cpu}) uses; export it "
                   f"again with a lower --cpu (x86-64-v2, x86-64-v3)", missing)
        owned = b.alloca(PTR, name="owned")
        b.store(ir.Constant(PTR, None), owned)
        weights_bytes = spec.weights.nbytes
        if spec.weights_file:
            self.check(b, b.icmp_unsigned("==", path, ir.Constant(PTR, None)), None, STATUS["ERROR_WEIGHTS"],
                       f"{n}_create: {n} was exported with its weights in a file ({spec.weights_file}); pass its path")
            stream = b.call(libc["fopen"], [path, self.string("rb")])
            self.check(b, b.icmp_unsigned("==", stream, ir.Constant(PTR, None)), None, STATUS["ERROR_WEIGHTS"],
                       f"{n}_create: cannot open the weights file %s", path)
            b.call(libc["fseek"], [stream, i64(0), i32(2)])  # SEEK_END
            size = b.call(libc["ftell"], [stream])
            expected = spec.weights.data_start + weights_bytes
            with b.if_then(b.icmp_unsigned(">=", size, i64(1 << 62)), likely=False):  # (ftell's answer for a directory)
                b.call(libc["fclose"], [stream])
                self.fail(b, None, STATUS["ERROR_WEIGHTS"], f"{n}_create: cannot read the weights file %s (is it a "
                          f"directory?)", path)
            with b.if_then(b.icmp_signed("!=", size, i64(expected)), likely=False):
                b.call(libc["fclose"], [stream])
                self.fail(b, None, STATUS["ERROR_WEIGHTS"], f"{n}_create: %s has %lld bytes; {n}'s weights file has "
                          f"{expected}", path, size)
            status = b.call(libc["posix_memalign"], [owned, i64(ARENA_ALIGN), i64(max(weights_bytes, 1))])
            with b.if_then(b.icmp_signed("!=", status, i32(0)), likely=False):
                b.call(libc["fclose"], [stream])
                self.fail(b, None, STATUS["ERROR_MEMORY"], f"{n}_create: no memory for {weights_bytes} bytes of weights")
            data = b.load(owned, typ=PTR)
            b.call(libc["fseek"], [stream, i64(spec.weights.data_start), i32(0)])  # SEEK_SET
            got = b.call(libc["fread"], [data, i64(1), i64(weights_bytes), stream])
            b.call(libc["fclose"], [stream])
            wrong = b.or_(b.icmp_unsigned("!=", got, i64(weights_bytes)),
                          b.icmp_unsigned("!=", b.call(self.crc32, [data, i64(weights_bytes)]),
                                          i32(spec.weights.crc32)))
            with b.if_then(wrong, likely=False):
                b.call(libc["free"], [data])
                self.fail(b, None, STATUS["ERROR_WEIGHTS"], f"{n}_create: %s is not {n}'s weights file (its contents "
                          f"do not match the checksum the library holds)", path)
            weights = data
        else:
            self.check(b, b.icmp_unsigned("!=", path, ir.Constant(PTR, None)), None, STATUS["ERROR_WEIGHTS"],
                       f"{n}_create: {n} holds its weights inside the library; pass NULL, not %s", path)
            weights = ir.GlobalVariable(self.module, I8, "_binary_weights_bin_start")  # (ld -b binary's symbol)
        arena_bytes = max([p.arena_bytes for p in spec.programs] + [ARENA_ALIGN])
        instance = b.call(libc["calloc"], [i64(1), i64(INSTANCE_BYTES)])
        arena = b.alloca(PTR, name="arena")
        failed = b.or_(b.icmp_unsigned("==", instance, ir.Constant(PTR, None)),
                       b.icmp_signed("!=", b.call(libc["posix_memalign"], [arena, i64(ARENA_ALIGN), i64(arena_bytes)]),
                                     i32(0)))
        with b.if_then(failed, likely=False):
            b.call(libc["free"], [instance])
            b.call(libc["free"], [b.load(owned, typ=PTR)])
            self.fail(b, None, STATUS["ERROR_MEMORY"], f"{n}_create: no memory for the {arena_bytes}-byte arena")
        b.store(weights, self.field(b, instance, WEIGHTS))
        b.store(b.load(owned, typ=PTR), self.field(b, instance, OWNED))
        b.store(b.load(arena, typ=PTR), self.field(b, instance, ARENA))
        b.store(i32(spec.threads), self.field(b, instance, THREADS))
        b.store(instance, out)
        b.ret(i32(STATUS["OK"]))

        destroy, b = self.function(f"{n}_destroy", VOID, [PTR])
        (instance,) = destroy.args
        with b.if_then(b.icmp_unsigned("!=", instance, ir.Constant(PTR, None))):
            b.call(libc["free"], [b.load(self.field(b, instance, ARENA), typ=PTR)])
            b.call(libc["free"], [b.load(self.field(b, instance, OWNED), typ=PTR)])
            b.call(libc["free"], [instance])
        b.ret_void()

        last_error, b = self.function(f"{n}_last_error", PTR, [PTR])
        (instance,) = last_error.args
        null = b.icmp_unsigned("==", instance, ir.Constant(PTR, None))
        b.ret(b.select(null, b.gep(self.create_error, [i64(0), i64(0)]), self.field(b, instance, ERROR)))

        threads, b = self.function(f"{n}_set_num_threads", I32, [PTR, I32])
        instance, count = threads.args
        self.check(b, b.icmp_unsigned("==", instance, ir.Constant(PTR, None)), None, STATUS["ERROR_ARGUMENT"],
                   f"{n}_set_num_threads: `model` is NULL")
        self.check(b, b.icmp_signed("<", count, i32(1)), instance, STATUS["ERROR_ARGUMENT"],
                   f"{n}_set_num_threads: %d threads; give at least 1", count)
        b.store(count, self.field(b, instance, THREADS))
        b.ret(i32(STATUS["OK"]))

    def write_queries(self):
        """Counts, names, dtypes, ranks and dims of the inputs and outputs (-1: the batch)."""
        n = self.n
        for kind, tensors in (("input", self.spec.inputs), ("output", self.spec.outputs)):
            count, b = self.function(f"{n}_num_{kind}s", I32, [])
            b.ret(i32(len(tensors)))
            for what, values in (("name", [self.string(t.name) for t in tensors]),
                                 ("dtype", [self.string(t.dtype) for t in tensors])):
                table = self.constant_table(f"{kind}_{what}s", PTR, values)
                function, b = self.function(f"{n}_{kind}_{what}", PTR, [I32])
                (index,) = function.args
                inside = b.and_(b.icmp_signed(">=", index, i32(0)), b.icmp_signed("<", index, i32(len(tensors))))
                with b.if_then(b.not_(inside)):
                    b.ret(ir.Constant(PTR, None))
                b.ret(b.load(b.gep(table, [i64(0), b.sext(index, I64)]), typ=PTR))
            ranks = self.constant_table(f"{kind}_ranks", I32, [len(t.shape) for t in tensors])
            rank, b = self.function(f"{n}_{kind}_rank", I32, [I32])
            (index,) = rank.args
            inside = b.and_(b.icmp_signed(">=", index, i32(0)), b.icmp_signed("<", index, i32(len(tensors))))
            with b.if_then(b.not_(inside)):
                b.ret(i32(-1))
            b.ret(b.load(b.gep(ranks, [i64(0), b.sext(index, I64)]), typ=I32))
            stride = max([len(t.shape) for t in tensors] + [1])
            flat = [(-1 if d is None else d) for t in tensors for d in list(t.shape) + [0] * (stride - len(t.shape))]
            dims = self.constant_table(f"{kind}_dims", I64, flat)
            dim, b = self.function(f"{n}_{kind}_dim", I64, [I32, I32])
            index, axis = dim.args
            known = b.call(rank, [index])
            inside = b.and_(b.icmp_signed(">=", axis, i32(0)), b.icmp_signed("<", axis, known))
            with b.if_then(b.not_(inside)):
                b.ret(i64(0))
            position = b.add(b.mul(b.sext(index, I64), i64(stride)), b.sext(axis, I64))
            b.ret(b.load(b.gep(dims, [i64(0), position]), typ=I64))

    def write_program(self, number, program):
        """i32 run_program_K(instance, inputs, outputs, i64 row): one call of the program's entry
        on rows [row, row + batch) (row 0 for a static export), then the copied results."""
        spec, libc = self.spec, self.libc
        entry = declare(self.module, program.entry, I32, [PTR])
        function, b = self.function(f"run_program_{number}", I32, [PTR, PTR, PTR, I64], internal=True)
        instance, inputs, outputs, row = function.args
        count = len(program.externals)
        table = b.alloca(ir.ArrayType(PTR, HEAD + count), name="table")
        cells = b.alloca(ir.ArrayType(PTR, max(count, 1)), name="cells")
        weights = b.load(self.field(b, instance, WEIGHTS), typ=PTR)

        def slot(array, k):
            return b.gep(array, [i64(0), i64(k)])

        def rows_of(pointers, index, row_bytes):
            base = b.load(b.gep(pointers, [i64(index)], source_etype=PTR), typ=PTR)
            return b.gep(base, [b.mul(row, i64(row_bytes))], source_etype=I8)

        threads = b.load(self.field(b, instance, THREADS), typ=I32)
        head = [b.load(self.field(b, instance, ARENA), typ=PTR), ir.Constant(PTR, None), ir.Constant(PTR, None),
                b.inttoptr(b.sext(threads, I64), PTR), ir.Constant(PTR, None)]  # data offset 0: cells hold pointers
        head += [ir.Constant(PTR, None)] * (HEAD - len(head))  # (sizes, offsets: read by dynamic programs only)
        for k, value in enumerate(head):
            b.store(value, slot(table, k))
        for k, (kind, index, offset, _) in enumerate(program.externals):
            if kind == "input":
                pointer = rows_of(inputs, index, spec.inputs[index].row_bytes)
            elif kind == "output":
                pointer = rows_of(outputs, index, spec.outputs[index].row_bytes)
            elif kind == "weight":
                pointer = b.gep(weights, [i64(offset)], source_etype=I8)
            else:
                pointer = self.constant_data(index)
            b.store(pointer, slot(cells, k))
            b.store(slot(cells, k), slot(table, HEAD + k))
        status = b.call(entry, [b.gep(table, [i64(0), i64(0)])])
        with b.if_then(b.icmp_signed("!=", status, i32(0)), likely=False):
            for code, (kind, message) in enumerate(program.failures, start=1):
                with b.if_then(b.icmp_signed("==", status, i32(code))):
                    self.fail(b, instance, STATUS["ERROR_RUNTIME"], f"{self.n}_run: {kind}: {message}")
            self.fail(b, instance, STATUS["ERROR_RUNTIME"], f"{self.n}_run: the program failed with status %d", status)
        rows = program.batch if spec.dynamic else 1
        for k, (kind, index, offset) in enumerate(program.results):
            size = i64(spec.outputs[k].row_bytes * rows)
            target = rows_of(outputs, k, spec.outputs[k].row_bytes)
            if kind == "input":
                source = rows_of(inputs, index, spec.inputs[index].row_bytes)
            elif kind == "weight":
                source = b.gep(weights, [i64(offset)], source_etype=I8)
            elif kind == "constant":
                source = self.constant_data(index)
            elif index != k:
                source = rows_of(outputs, index, spec.outputs[index].row_bytes)
            else:
                continue  # the program wrote it
            b.call(libc["memcpy"], [target, source, size])
        b.ret(i32(STATUS["OK"]))
        return function

    def constant_data(self, index):
        name = f"constant.{index}"
        if name not in self.module.globals:
            data = bytearray(self.spec.constants[index])
            variable = ir.GlobalVariable(self.module, ir.ArrayType(I8, len(data)), name)
            variable.linkage, variable.global_constant = "private", True
            variable.initializer = ir.Constant(ir.ArrayType(I8, len(data)), data)
            variable.align = 64
        return self.module.globals[name]

    def write_run(self, runners):
        n, spec = self.n, self.spec
        run, b = self.function(f"{n}_run_buffers", I32, [PTR, PTR, PTR, I64])
        instance, inputs, outputs, batch = run.args
        null = ir.Constant(PTR, None)
        self.check(b, b.icmp_unsigned("==", instance, null), None, STATUS["ERROR_ARGUMENT"], f"{n}_run: `model` is NULL")
        for pointers, tensors, kind in ((inputs, spec.inputs, "input"), (outputs, spec.outputs, "output")):
            if not tensors:
                continue
            self.check(b, b.icmp_unsigned("==", pointers, null), instance, STATUS["ERROR_ARGUMENT"],
                       f"{n}_run: the {kind} array is NULL")
            for k, tensor in enumerate(tensors):
                pointer = b.load(b.gep(pointers, [i64(k)], source_etype=PTR), typ=PTR)
                self.check(b, b.icmp_unsigned("==", pointer, null), instance, STATUS["ERROR_ARGUMENT"],
                           f"{n}_run: {kind} {k} ({tensor.name}) is NULL")
        if spec.dynamic:
            self.check(b, b.icmp_signed("<", batch, i64(1)), instance, STATUS["ERROR_ARGUMENT"],
                       f"{n}_run: batch %lld; give at least 1 row", batch)
        else:
            self.check(b, b.icmp_signed("!=", batch, i64(spec.batch)), instance, STATUS["ERROR_ARGUMENT"],
                       f"{n}_run: batch %lld; {n} was exported for batch {spec.batch} (export it with "
                       f"dynamic_batch=True for any size)", batch)
        row = b.alloca(I64, name="row")
        b.store(i64(0), row)
        for runner, program in zip(runners, spec.programs):  # largest chunks first
            head = b.append_basic_block(f"chunks{program.batch}.head")
            body = b.append_basic_block(f"chunks{program.batch}.body")
            done = b.append_basic_block(f"chunks{program.batch}.done")
            b.branch(head)
            b.position_at_end(head)
            left = b.sub(batch, b.load(row, typ=I64))
            b.cbranch(b.icmp_signed(">=", left, i64(program.batch)), body, done)
            b.position_at_end(body)
            start = b.load(row, typ=I64) if spec.dynamic else i64(0)
            status = b.call(runner, [instance, inputs, outputs, start])
            with b.if_then(b.icmp_signed("!=", status, i32(0)), likely=False):
                b.ret(status)
            b.store(b.add(b.load(row, typ=I64), i64(program.batch)), row)
            b.branch(head)
            b.position_at_end(done)
        b.ret(i32(STATUS["OK"]))

        arguments = [PTR] * (len(spec.inputs) + len(spec.outputs))
        plain, b = self.function(f"{n}_run", I32, [PTR, *arguments, I64])
        instance, *buffers, batch = plain.args
        arrays = []
        for group in (buffers[:len(spec.inputs)], buffers[len(spec.inputs):]):
            array = b.alloca(ir.ArrayType(PTR, max(len(group), 1)))
            for k, pointer in enumerate(group):
                b.store(pointer, b.gep(array, [i64(0), i64(k)]))
            arrays.append(b.gep(array, [i64(0), i64(0)]))
        b.ret(b.call(run, [instance, *arrays, batch]))


def wrapper_module(spec, triple, data_layout):
    """LLVM IR text of the wrapper of `spec`."""
    writer = WrapperWriter(spec, triple, data_layout)
    writer.write()
    return writer.text()
