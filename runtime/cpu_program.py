"""Running a compiled CPU program: load its machine code and call it, one foreign call per run.

The program's entry `int ember_program(void **table)` (compiler/cpu/program.py) reads the
fixed head of `table` (arena, fallback callback, timings, thread count, the offset of an
ndarray's data pointer inside the numpy object) and then one entry per external buffer:
the address of the numpy array object itself, whose data pointer the entry loads. So a call
writes only `id(array)` per input, param and output into a table built once (about 0.1 us
each; `array.ctypes.data` costs 2.5 us), and param arrays that are the same objects as in
the previous call are not even looked at again. Outputs are numpy arrays handed to the
caller: fresh ones, except that an output array of the previous call that nobody references
any more (its reference count says only this program holds it) is written again instead of
allocating new memory (a fresh 64 MiB array costs ~20 ms of page faults). Intermediates live
in one arena allocated once per program and reused. Not thread-safe: one program runs one
call at a time.

Machine code comes from a shared library loaded with ctypes (runtime/shared_library.py), or,
where no C compiler linked one, from an object file loaded by llvmlite's MCJIT (`load_object`),
which resolves libgomp and the support library through symbols registered in the process.
"""
import ctypes
import sys
import weakref
from sys import getrefcount

import numpy as np

from ember.ir.symbols import evaluate
from .program_spec import collect_results, conform_array, program_error
from .thread_runtime import CHOSEN_THREADS

ALIGNMENT = 64
HEAD = ("arena", "callback", "timings", "threads", "data_offset", "sizes", "offsets")
MAX_SYMBOLS = 16  # (compiler/llvm/scalar.py's: the entry copies this many sizes into the program)
THREADS = HEAD.index("threads")
CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int32)
ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)


def _find_data_offset():
    """Where numpy keeps an array's data pointer inside the array object (16 on CPython)."""
    probe = np.arange(3, dtype=np.float64)
    wanted = probe.ctypes.data
    for offset in range(8, 128, 8):
        if ctypes.c_void_p.from_address(id(probe) + offset).value == wanted:
            other = np.zeros(5, np.int8)
            if ctypes.c_void_p.from_address(id(other) + offset).value == other.ctypes.data:
                return offset
    raise RuntimeError("ember runtime: cannot find the data pointer inside numpy arrays "
                       f"(numpy {np.__version__}); compiled CPU programs need it")


DATA_OFFSET = _find_data_offset()


def load_object(object_code, target_machine, entry_name):
    """(engine, entry address) of object code loaded by MCJIT; keep the engine alive."""
    import llvmlite.binding as llvm
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine)
    engine.add_object_file(llvm.ObjectFileRef.from_data(bytes(object_code)))
    engine.finalize_object()
    address = engine.get_function_address(entry_name)
    if not address:
        raise RuntimeError(f"ember runtime: compiled object has no {entry_name} function")
    return engine, address


class CpuProgram:
    """A loaded program: `program(inputs {node id: array}, params {name: array})` returns
    {node id: array} for the graph's outputs (and mutation sources)."""

    def __init__(self, spec, entry_address, keepalive=None):
        self.spec = spec
        self.keepalive = keepalive
        self.calls = 0
        self.fixed_threads = 0  # > 0: this program's thread count whatever set_num_threads chose
        self._entry = ENTRY_TYPE(entry_address)
        size = len(HEAD) + len(spec.externals)
        self._table = (ctypes.c_void_p * size)()
        self._table_address = ctypes.addressof(self._table)
        self._arena_memory = np.zeros(spec.arena_bytes + ALIGNMENT, np.uint8)
        start = (-self._arena_memory.ctypes.data) % ALIGNMENT
        self.arena = self._arena_memory[start:start + spec.arena_bytes]
        self._callback = CALLBACK_TYPE(self._run_fallback)
        self.timings = np.zeros(max(len(spec.kernel_names), 1), np.int64)
        self._dynamic = spec.dynamic
        self._sizes = np.zeros(MAX_SYMBOLS, np.int64)  # a dynamic program's sizes this call
        self._offsets = np.zeros(len(spec.dynamic.order) + len(spec.scratch[0]) if spec.dynamic else 1, np.int64)
        self._bound = None  # the sizes the shapes, offsets and arena are set up for
        self._current_sizes = None
        head = {"arena": self.arena.ctypes.data if spec.arena_bytes else self._arena_memory.ctypes.data,
                "callback": ctypes.cast(self._callback, ctypes.c_void_p).value,
                "timings": self.timings.ctypes.data, "threads": spec.threads, "data_offset": DATA_OFFSET,
                "sizes": self._sizes.ctypes.data, "offsets": self._offsets.ctypes.data}
        for k, name in enumerate(HEAD):
            self._table[k] = head[name]
        self._inputs, self._params, self._outputs = [], [], []
        self._constants = []
        self._live = {}  # table position -> array of the running call (for numpy fallbacks)
        for ext in spec.externals:
            position = len(HEAD) + ext.position
            if ext.kind == "input":
                self._inputs.append((position, ext.key, ext.shape, ext.dtype))
            elif ext.kind == "param":
                self._params.append([position, ext.key, ext.shape, ext.dtype, None])
            elif ext.kind == "constant":
                array = np.ascontiguousarray(np.broadcast_to(ext.key, ext.shape), dtype=ext.dtype)
                self._constants.append(array)
                self._table[position] = id(array)
                self._live[position] = array
            else:
                self._outputs.append((position, ext.key, ext.shape, ext.dtype))
        self._symbolic_shapes = [[entry[2] for entry in entries] for entries in (self._inputs, self._params,
                                                                                 self._outputs)]
        self._track = bool(spec.fallbacks)
        self._recycled = [None] * len(self._outputs)
        self._output_number = {}
        self._failure = None
        self._results = spec.results
        keys = [key for _, (kind, key) in spec.results if kind == "output"]
        # the usual case: every result is its own output array (no copies, inputs or constants)
        self._plain_results = [(node, key) for node, (kind, key) in spec.results] \
            if len(keys) == len(spec.results) and len(set(keys)) == len(keys) else None
        self._timed = spec.timed
        self.print_timings = True  # (instrumented builds: EMBER_DEBUG=2 prints each call's kernel times)
        self.kernel_seconds = None

    # ------------------------------------------------------------------ calling
    def __call__(self, inputs, params):
        if self._dynamic is not None:
            self._bind_sizes(inputs)
        table = self._table
        held = []  # converted copies must outlive the call
        track = self._track
        for position, node, shape, dtype in self._inputs:
            array = inputs[node]
            if not (type(array) is np.ndarray and array.dtype is dtype and array.shape == shape
                    and array.flags.c_contiguous):
                array = self._conform(array, shape, dtype, f"input %{node}")
                held.append(array)
            table[position] = id(array)
            if track:
                self._live[position] = array
        for entry in self._params:
            array = params[entry[1]]
            known = entry[4]
            if known is None or known() is not array:
                position, name, shape, dtype = entry[:4]
                checked = array
                if not (type(array) is np.ndarray and array.dtype is dtype and array.shape == shape
                        and array.flags.c_contiguous):
                    checked = self._conform(array, shape, dtype, f"param {name!r}")
                    held.append(checked)
                    entry[4] = None
                else:
                    # weakly: a param array this program does not keep alive can be handed to
                    # it as an output buffer (see exchange)
                    entry[4] = weakref.ref(array)
                table[position] = id(checked)
                if track:
                    self._live[position] = checked
        outputs = {}
        recycled = self._recycled
        output_number = self._output_number = {}  # id(array) -> k, for `exchange`
        for k, (position, node, shape, dtype) in enumerate(self._outputs):
            if getrefcount(recycled[k]) == 2:  # the caller dropped last call's array: reuse it
                array = recycled[k]
            else:
                array = recycled[k] = np.empty(shape, dtype)
            table[position] = id(array)
            outputs[node] = array
            output_number[id(array)] = k
            if track:
                self._live[position] = array
        threads = self.fixed_threads or (CHOSEN_THREADS[0] if CHOSEN_THREADS else 0)
        if threads and threads != table[THREADS]:  # (ember.set_num_threads ran, or this program has its own)
            table[THREADS] = threads
        status = self._entry(self._table_address)
        self.calls += 1
        if status:
            self._raise(status)
        if self._timed:
            self.report_timings()
        if self._plain_results is not None:
            return {node: outputs[key] for node, key in self._plain_results}
        return self._collect(outputs, inputs, params)

    def _bind_sizes(self, inputs):
        """A dynamic program: read the size symbols from the inputs and, when they changed,
        set the externals' shapes, the buffers' offsets (the plan placed for these sizes) and
        the arena for them."""
        layout = self._dynamic
        sizes = layout.symbols.sizes_or_raise(lambda node: np.shape(inputs[node]), self.spec)
        key = tuple(sorted(sizes.items()))
        if key == self._bound:
            return
        for name, size in sizes.items():
            self._sizes[int(name[1:])] = size
        inputs_shapes, params_shapes, outputs_shapes = self._symbolic_shapes
        self._inputs = [(p, n, evaluate(shape, sizes), d) for (p, n, _, d), shape in zip(self._inputs, inputs_shapes)]
        for entry, shape in zip(self._params, params_shapes):
            entry[2], entry[4] = evaluate(shape, sizes), None
        self._outputs = [(p, n, evaluate(shape, sizes), d) for (p, n, _, d), shape in zip(self._outputs, outputs_shapes)]
        self._recycled = [None] * len(self._outputs)
        self._current_sizes = sizes
        self._bound = key
        plan = layout.place(sizes)
        for k, node in enumerate(layout.order):
            self._offsets[k] = plan.buffers[node].offset
        scratch_base = -(-plan.arena_bytes // ALIGNMENT) * ALIGNMENT
        scratch_offsets, scratch_bytes = self.spec.scratch
        for k, offset in enumerate(scratch_offsets):
            self._offsets[len(layout.order) + k] = scratch_base + evaluate(offset, sizes)
        wanted = scratch_base + max([evaluate(b, sizes) for b in scratch_bytes], default=0)
        if wanted > self.arena.nbytes:
            self._arena_memory = np.zeros(wanted + ALIGNMENT, np.uint8)
            start = (-self._arena_memory.ctypes.data) % ALIGNMENT
            self.arena = self._arena_memory[start:start + wanted]
            self._table[HEAD.index("arena")] = self.arena.ctypes.data

    def exchange(self, given, replacement=None):
        """The caller keeps `given`, an output array of the last call, for good (a mutation's
        new value becomes the param's array instead of being copied into it). `replacement`
        (the param's old array, which nothing else references) becomes that output's buffer
        for the next call if it is a plain aligned C-contiguous array of the output's shape
        and dtype that owns its memory; otherwise the next call allocates one. False, and
        nothing changes, if `given` is not a buffer this program recycles."""
        k = self._output_number.get(id(given))
        if k is None or self._recycled[k] is not given:
            return False
        _, _, shape, dtype = self._outputs[k]
        suitable = (type(replacement) is np.ndarray and replacement.dtype is dtype and replacement.shape == shape
                    and replacement.flags.c_contiguous and replacement.flags.writeable
                    and replacement.flags.owndata and replacement.flags.aligned)
        self._recycled[k] = replacement if suitable else None
        return True

    def _collect(self, outputs, inputs, params):
        return collect_results(self._results, outputs, inputs, params, sizes=self._current_sizes)

    def _conform(self, value, shape, dtype, what):
        return conform_array(self.spec.name, value, shape, dtype, what)

    def _raise(self, status):
        if status < 0:
            failure, self._failure = self._failure, None
            raise failure
        raise program_error(self.spec, status)

    # ------------------------------------------------------------------ numpy fallbacks
    def location_array(self, location, shape, dtype):
        """The array at a slot location: ("arena", byte offset) or ("arg", external position)."""
        kind, where = location
        dtype = np.dtype(dtype)
        if self._dynamic is not None:  # (shapes of the size symbols; offsets placed for these sizes)
            shape = evaluate(tuple(shape), self._current_sizes)
            if kind == "offset":
                kind, where = "arena", int(self._offsets[where[0]]) + where[1]
        if kind == "arena":
            count = int(np.prod(shape, dtype=np.int64))
            return self.arena[where:where + count * dtype.itemsize].view(dtype).reshape(shape)
        if where < 0:
            return None
        return self._live.get(len(HEAD) + where)

    def _run_fallback(self, kernel_number):
        try:
            self.spec.fallbacks[kernel_number](self)
            return 0
        except BaseException as error:  # reported to the caller after the foreign call returns
            self._failure = error
            return -1

    def report_timings(self, file=None):
        """Per-kernel time of the last call (instrumented builds): kept in `kernel_seconds`,
        printed in microseconds unless `print_timings` is off."""
        rate = cycles_per_second()
        self.kernel_seconds = self.timings / rate
        if self.print_timings:
            lines = [f"{self.spec.name}: kernel times of call {self.calls} (and the model lines each came from)"]
            width = max((len(n) for n in self.spec.kernel_names), default=0)
            for name, seconds, source in zip(self.spec.kernel_names, self.kernel_seconds, self.spec.kernel_sources):
                lines.append(f"  {seconds * 1e6:10.1f} us  {name:<{width}}  {source}".rstrip())
            print("\n".join(lines), file=file or sys.stderr)
        self.timings[:] = 0


_CYCLES = []


def cycles_per_second():
    """The rate of the CPU's cycle counter (readcyclecounter), measured once."""
    if not _CYCLES:
        import time
        counter = _cycle_reader()
        start_cycles, start = counter(), time.perf_counter()
        time.sleep(0.02)
        _CYCLES.append((counter() - start_cycles) / (time.perf_counter() - start))
    return _CYCLES[0]


def _cycle_reader():
    """A tiny JIT-compiled function returning the cycle counter."""
    import llvmlite.binding as llvm
    source = ("define i64 @ember_cycles() {\n  %c = call i64 @llvm.readcyclecounter()\n  ret i64 %c\n}\n"
              "declare i64 @llvm.readcyclecounter()\n")
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine()
    module = llvm.parse_assembly(source)
    module.triple = llvm.get_process_triple()
    engine = llvm.create_mcjit_compiler(module, target)
    engine.finalize_object()
    function = ctypes.CFUNCTYPE(ctypes.c_int64)(engine.get_function_address("ember_cycles"))
    _cycle_reader.keep = engine
    return function
