"""The `llvm` backend: a graph in, a native CPU program out, run by one foreign call.

`LLVMBackend().compile(graph)` runs simplify -> fuse -> plan_memory (passes/), looks the
planned graph up in the compile cache (compiler/compile_cache.py), and only on a miss lowers
it (compiler/lowering.py), emits LLVM IR (compiler/llvm_cpu.py), optimises it to object code
and links that with the support-library pieces it calls (compiler/support_library.py) into a
shared library with the system C compiler (compiler/linker.py, ~10 ms). The cache entry keeps
that library and a description of the program's buffers, so a hit loads it with ctypes
(runtime/shared_library.py) without lowering again or importing llvmlite. Without a C
compiler, object code is cached instead and loaded by llvmlite's MCJIT. Either way the
result is a `CpuProgram` (runtime/): runner({input node: array}, {param name: array}) ->
{output node: array}.

Debugging (EMBER_DEBUG, ember/config.py): 1 prints each compile with its kernels and the
time of every stage, 2 also builds programs instrumented with per-kernel cycle counters and
prints kernel times after every call, 3 prints the IR after each pass and the loop kernels,
4 the optimised LLVM IR and the assembly. `render_stage(graph, "llvm" | "asm")` returns
those two texts for `ember dump --stage`.
"""
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ember import config
from ember.ir.json_format import decode_value, encode_value
from ember.ops import PRIMITIVES
from ember.runtime.cpu_program import CpuProgram, External, ProgramSpec, load_object
from ember.runtime.shared_library import load_shared_library
from ember.runtime.thread_runtime import load_libgomp
from . import compile_cache, linker, llvm_target, support_library

STAGES = ("simplify", "fuse", "plan", "lower", "llvm ir", "optimize", "emit", "support", "link", "load")
DESCRIPTION_VERSION = 1  # of the program description stored beside the code (see `describe`)


@dataclass
class CompileStats:
    """What the backend did: compiles, LLVM compiles (cache misses), cache hits, and the
    seconds per stage of the last compile."""

    compiles: int = 0
    llvm_compiles: int = 0
    cache_hits: int = 0
    stage_seconds: dict = field(default_factory=dict)


@dataclass
class Planned:
    """A graph taken through the passes: what the cache key covers."""

    graph: object  # the simplified graph the kernels compute
    fusion: object
    plan: object


@dataclass
class Prepared:
    """A planned graph lowered, ready for code generation."""

    graph: object  # the simplified, fused graph the kernels compute
    fusion: object
    plan: object
    kernels: list
    program: object  # llvm_cpu.Program
    externals: list  # runtime External per external buffer
    arena_bytes: int
    threads: int
    pieces: list = field(default_factory=list)  # support-library pieces the kernels call


class LLVMProgram(CpuProgram):
    """A loaded program that also knows its graph and, on demand, how the backend prepared it
    (on a cache hit the kernels are lowered again only when someone asks for them)."""

    def __init__(self, spec, entry_address, keepalive, graph, planned, prepared, threads, instrument):
        super().__init__(spec, entry_address, keepalive=keepalive)
        self.graph = graph
        self._planned, self._prepared = planned, prepared
        self._options = (threads, instrument)

    @property
    def prepared(self):
        if self._prepared is None:
            self._prepared = lower(self._planned, None, self._options[1], self._options[0])
        return self._prepared


class LLVMBackend:
    """ember.compile(..., backend="llvm"). `cache_dir` defaults to EMBER_CACHE_DIR,
    `threads` to EMBER_NUM_THREADS, `debug` to EMBER_DEBUG."""

    name = "llvm"

    def __init__(self, cache_dir=None, threads=None, debug=None):
        self.cache = compile_cache.CompileCache(cache_dir)
        self.threads = threads or config.NUM_THREADS
        self.debug = config.DEBUG if debug is None else debug
        self.stats = CompileStats()

    def compile(self, graph):
        timer = _StageTimer()
        instrument = self.debug >= 2
        planned = plan(graph, timer)
        parallel = thread_runtime_loaded()
        key = program_key(planned, self.threads, instrument, parallel)
        shared = _linking_works()
        kind = "so" if shared else "o"
        entry = self.cache.load_entry(key, kind)
        if entry is not None and not _is_description(entry.description):
            self.cache.discard(key, kind, "has no valid program description; rebuilding it")
            entry = None
        prepared = module_ref = None
        if entry is None:
            # the support pieces it will call start compiling in other processes now, while
            # this one lowers and compiles the program
            expected = support_library.pieces_expected(planned.graph, planned.fusion)
            with support_library.compiled_alongside(expected, self.cache, parallel,
                                                    len(planned.fusion.groups)) as helpers:
                prepared = lower(planned, timer, instrument, self.threads)
                module_ref, payload, shared = self._build(prepared, timer, shared, helpers)
            description = describe(prepared)
            kind = "so" if shared else "o"
            self.cache.store(key, payload, description, kind)
            self.stats.llvm_compiles += 1
        else:
            description, payload = entry.description, entry.payload
            self.stats.cache_hits += 1
        with timer("load"):
            if kind == "so":
                try:
                    library, address = load_shared_library(payload, description["entry"], [self.cache.directory])
                except OSError as error:
                    _LINKING["works"] = False
                    warnings.warn(f"ember: {error}; loading programs with llvmlite's MCJIT instead", stacklevel=2)
                    return self.compile(graph)
            else:
                support_library.register_with_mcjit(description["pieces"], self.cache, parallel)
                library, address = load_object(payload, llvm_target.new_host_target_machine(), description["entry"])
            spec = self.spec_of(graph, planned, description, instrument)
            runner = LLVMProgram(spec, address, library, graph, planned, prepared, self.threads, instrument)
        self.stats.compiles += 1
        self.stats.stage_seconds = dict(timer.seconds)
        if self.debug >= 1:
            _print_compile(graph, description, timer, entry is not None)
        if self.debug >= 3:
            _print_passes(graph, runner.prepared)
        if self.debug >= 4:
            print(render_code(runner.prepared, "llvm", module_ref), file=sys.stderr)
            print(render_code(runner.prepared, "asm", module_ref), file=sys.stderr)
        return runner

    def _build(self, prepared, timer, shared, helpers):
        """(optimised module, payload, shared): the program's object code linked with its
        support pieces into a shared library, or (shared False, or linking failed: warned) the
        object code alone. `helpers` (support_library.compiled_alongside) compile some of the
        missing pieces in other processes meanwhile; this process compiles the rest."""
        pieces, parallel = prepared.pieces, prepared.program.parallel
        module_ref = optimized_module(prepared, timer)
        with timer("emit"):
            object_code = llvm_target.host_target_machine().emit_object(module_ref)
        with timer("support"):
            own = {p: support_library.piece_object(p, self.cache, parallel) for p in pieces
                   if p not in helpers.pieces}
            helpers.wait()
            objects = [own[p] if p in own else support_library.piece_object(p, self.cache, parallel)
                       for p in pieces]
        if not shared:
            return module_ref, object_code, False
        with timer("link"):
            try:
                return module_ref, linker.link_shared_library([object_code, *objects]), True
            except linker.LinkError as error:
                _LINKING["works"] = False
                warnings.warn(f"ember: cannot link a shared library ({error}); loading programs with "
                              f"llvmlite's MCJIT instead", stacklevel=3)
                return module_ref, object_code, False

    def spec_of(self, graph, planned, description, instrument):
        simplified = planned.graph
        externals = externals_of(description)
        results = []
        outputs = {e.key for e in externals if e.kind == "output"}
        pairs = list(zip(graph.outputs, simplified.outputs))
        pairs += [(a.node, b.node) for a, b in zip(graph.mutations, simplified.mutations)]
        pairs += [(a.node, b.node) for a, b in zip(graph.guards, simplified.guards)]
        seen = set()
        for original, node_id in pairs:
            if original in seen:
                continue
            seen.add(original)
            results.append((original, _result_source(simplified, node_id, outputs)))
        locations = {node: (kind, where) for node, kind, where in description["locations"]}
        fallbacks = {number: _fallback(simplified, node, locations) for number, node in description["callbacks"]}
        kernel_names = [name for name, _, _ in description["kernels"]]
        return ProgramSpec(graph.name, externals, description["arena_bytes"], results,
                           [tuple(error) for error in description["errors"]], fallbacks, kernel_names,
                           self.threads, timed=instrument)


def get_llvm_backend():
    return LLVMBackend()


_LINKING = {}  # "works": False once linking failed in this process


def _linking_works():
    return _LINKING.get("works", True) and linker.c_compiler() is not None


# ----------------------------------------------------------------------------- preparing

def plan(graph, timer=None):
    """simplify -> fuse -> plan_memory of `graph` (left untouched)."""
    from ember.passes.fusion import fuse
    from ember.passes.memory import plan_memory
    from ember.passes.simplify import simplify
    timer = timer or _StageTimer()
    with timer("simplify"):
        simplified = simplify(graph)
    with timer("fuse"):
        fusion = fuse(simplified)
    with timer("plan"):
        memory = plan_memory(simplified, fusion)
    return Planned(simplified, fusion, memory)


def lower(planned, timer=None, instrument=False, threads=None):
    """The kernels and buffer layout of a planned graph."""
    from .llvm_cpu import ArgsLayout, Program
    from .lowering import lower_program
    timer = timer or _StageTimer()
    threads = threads or config.NUM_THREADS
    simplified, fusion, memory = planned.graph, planned.fusion, planned.plan
    with timer("lower"):
        kernels = lower_program(simplified, fusion, use_gemm=True, threads=threads)
        locations, externals, arena_bytes = _layout(simplified, memory, kernels)
        errors, error_base = [], []
        for kernel in kernels:
            error_base.append(len(errors))
            errors.extend(kernel.errors)
        aliasing = {frozenset(pair) for pair in memory.in_place.items()}
        program = Program(simplified.name, kernels, locations, ArgsLayout(len(externals)), aliasing, errors,
                          error_base, instrument, parallel=thread_runtime_loaded())
    return Prepared(simplified, fusion, memory, kernels, program, externals, arena_bytes, threads,
                    support_library.pieces_for(kernels))


def prepare(graph, timer=None, instrument=False, threads=None):
    """Passes, lowering and the buffer layout of `graph` (left untouched)."""
    return lower(plan(graph, timer), timer, instrument, threads)


def _layout(graph, plan, kernels):
    """Where every slot key lives: ("arena", byte offset) for planned buffers and scratch
    (placed after the plan's arena; groups run one at a time so they share it), ("arg", k)
    for external buffers. Returns (locations, externals, arena bytes)."""
    scratch_base = -(-plan.arena_bytes // 64) * 64
    scratch = max((k.scratch_bytes for k in kernels), default=0)
    locations, externals = {}, []
    for kernel in kernels:
        for slot in kernel.slots:
            key = slot.key
            if key in locations:
                continue
            if isinstance(key, tuple):
                locations[key] = ("arena", scratch_base + key[5])
            elif key in plan.buffers:
                locations[key] = ("arena", plan.buffers[key].offset)
            else:
                node = graph.node(key)
                kind = {"input": "input", "param": "param", "constant": "constant"}.get(node.op, "output")
                identity = {"input": key, "param": node.attrs.get("name"),
                            "constant": node.attrs.get("value")}.get(kind, key)
                locations[key] = ("arg", len(externals))
                externals.append(External(len(externals), kind, identity, node.shape, node.dtype))
    # computed outputs no kernel slot mentions still need their arrays (zero-size kernels)
    for node_id in list(graph.outputs) + [m.node for m in graph.mutations] + [g.node for g in graph.guards]:
        node = graph.node(node_id)
        if node_id not in locations and node.op not in ("input", "param", "constant"):
            locations[node_id] = ("arg", len(externals))
            externals.append(External(len(externals), "output", node_id, node.shape, node.dtype))
    return locations, externals, scratch_base + scratch


def _result_source(graph, node_id, outputs):
    node = graph.node(node_id)
    if node_id in outputs:
        return ("output", node_id)
    if node.op == "input":
        return ("input", node_id)
    if node.op == "param":
        return ("param", node.attrs["name"])
    if node.op == "constant":
        return ("constant", np.full(node.shape, node.attrs["value"], dtype=node.dtype))
    raise AssertionError(f"{graph.name}: output %{node_id} has no buffer")


def _fallback(graph, node_id, locations):
    """The numpy fallback of a callback kernel computing `node_id`: read the operands, run the
    primitive's impl, write the result where the program expects it."""
    node = graph.node(node_id)
    impl = PRIMITIVES[node.op].impl
    attrs = dict(node.attrs)
    operands = []
    for source in node.inputs:
        spec = graph.node(source)
        operands.append((locations[source], tuple(spec.shape), spec.dtype))
    target = (locations[node.id], tuple(node.shape), node.dtype)

    def run(program):
        arrays = [program.location_array(*operand) for operand in operands]
        result = impl(*arrays, **attrs)
        np.copyto(program.location_array(*target), result, casting="unsafe")
    return run


# ----------------------------------------------------------------------------- the cached description

def describe(prepared):
    """What loading the program needs besides its code, as JSON data: the external buffers,
    arena size, error messages, kernels (name, kind, nodes), the callback kernels' nodes and
    the locations their operands live at, the support pieces and the entry symbol."""
    from .llvm_cpu import ENTRY_NAME
    program = prepared.program
    callbacks = [(number, kernel.nodes[0]) for number, kernel in enumerate(prepared.kernels)
                 if kernel.kind == "callback"]
    wanted = set()
    for _, node_id in callbacks:
        wanted.add(node_id)
        wanted.update(prepared.graph.node(node_id).inputs)
    return {"version": DESCRIPTION_VERSION, "entry": ENTRY_NAME, "arena_bytes": prepared.arena_bytes,
            "externals": [[e.kind, encode_value(e.key), encode_value(tuple(e.shape)), e.dtype.name]
                          for e in prepared.externals],
            "errors": [list(error) for error in program.errors],
            "kernels": [[k.name, k.kind, list(k.nodes)] for k in prepared.kernels],
            "callbacks": [list(callback) for callback in callbacks],
            "locations": [[node, *program.locations[node]] for node in sorted(wanted)],
            "pieces": list(prepared.pieces)}


def _is_description(description):
    return isinstance(description, dict) and description.get("version") == DESCRIPTION_VERSION


def externals_of(description):
    """The runtime's External per external buffer of a described program."""
    return [External(position, kind, decode_value(key), decode_value(shape), dtype)
            for position, (kind, key, shape, dtype) in enumerate(description["externals"])]


# ----------------------------------------------------------------------------- code generation

def program_key(planned, threads, instrument, parallel):
    """The compile cache key: the planned graph (with its kernels' grouping and buffer
    offsets), target, ember version, code generator source and build options."""
    import ember
    memory = planned.plan
    layout = [f"{node}@{buffer.offset}+{buffer.nbytes}" for node, buffer in sorted(memory.buffers.items())]
    layout += [f"{a}<-{b}" for a, b in sorted(memory.in_place.items())]
    options = f"instrument={instrument} threads={threads} parallel={parallel}"
    return compile_cache.cache_key("program", planned.graph.to_json(), planned.fusion.describe(), " ".join(layout),
                                   str(memory.arena_bytes), llvm_target.target_key(), ember.__version__,
                                   compile_cache.code_generator_sources(), options)


def llvm_module(prepared):
    """The llvmlite ir.Module of a prepared program."""
    from .llvm_cpu import build_module
    module = llvm_target.new_module(prepared.graph.name)
    return build_module(prepared.program, module)


def optimized_module(prepared, timer=None):
    """The program's module parsed, verified and optimised at O3 (an llvmlite ModuleRef)."""
    timer = timer or _StageTimer()
    llvm = llvm_target.llvm_binding()
    with timer("llvm ir"):
        text = str(llvm_module(prepared))
        module_ref = llvm.parse_assembly(text)
        module_ref.verify()
    with timer("optimize"):
        optimize(module_ref)
    return module_ref


def optimize(module_ref):
    """LLVM's O3 pipeline with the loop and SLP vectorisers but without loop unrolling: the
    kernels' loops have static trip counts that full unrolling would blow up (4x the code
    and compile time on the seed Net for no speed); lowering already unrolls small
    reductions, and the vectoriser still interleaves."""
    llvm = llvm_target.llvm_binding()
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = True
    tuning.slp_vectorization = True
    tuning.loop_unrolling = False
    builder = llvm.create_pass_builder(llvm_target.host_target_machine(), tuning)
    builder.getModulePassManager().run(module_ref, builder)
    return module_ref


def render_code(prepared, stage, module_ref=None):
    """The optimised LLVM IR ("llvm") or assembly ("asm") of a prepared program."""
    module_ref = module_ref or optimized_module(prepared)
    if stage == "llvm":
        return str(module_ref)
    if stage == "asm":
        return llvm_target.host_target_machine().emit_assembly(module_ref)
    raise ValueError(f"unknown code stage {stage!r}; stages: llvm, asm")


def render_stage(graph, stage):
    """The text `ember dump --stage llvm|asm` prints: the program's optimised LLVM IR, or its
    assembly, each kernel a function named after its fusion group, followed by the support
    library pieces its kernels call (the sgemm microkernel, the convolutions)."""
    if stage not in ("llvm", "asm"):
        raise ValueError(f"unknown stage {stage!r} for the llvm backend; stages: llvm, asm")
    prepared = prepare(graph)
    texts = [render_code(prepared, stage)]
    texts += [support_library.piece_text(piece, prepared.program.parallel, stage) for piece in prepared.pieces]
    return "\n".join(texts)


# ----------------------------------------------------------------------------- threads

def thread_runtime_loaded():
    """Load libgomp (GOMP_parallel for parallel loops, sgemm and conv); False without it.

    libgomp's idle threads spin briefly (GOMP_SPINCOUNT=20000, set by load_libgomp unless the
    user set OMP_WAIT_POLICY or GOMP_SPINCOUNT) and then sleep: its default spin for
    milliseconds made numpy's threaded BLAS in the same process (eager ember) up to 50x
    slower, while sleeping at once (OMP_WAIT_POLICY=PASSIVE) cost compiled programs a wake-up
    per parallel region (measured: seed Net training step at batch 64, 4.4 ms with the short
    spin against 6.9 ms passive; eager steps unchanged)."""
    return load_libgomp() is not None


# ----------------------------------------------------------------------------- debug output

class _StageTimer:
    def __init__(self):
        self.seconds = {}

    def __call__(self, stage):
        timer = self

        class _Span:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[stage] = timer.seconds.get(stage, 0.0) + time.perf_counter() - self.start
                return False
        return _Span()


def _print_compile(graph, description, timer, cached):
    kernels = description["kernels"]
    lines = [f"ember llvm: compiled {graph.name}: {len(kernels)} kernels, arena {description['arena_bytes']} "
             f"bytes{' (machine code from the cache)' if cached else ''}"]
    for name, kind, nodes in kernels:
        nodes = " ".join(f"%{n}" for n in nodes)
        lines.append(f"  {name:<48} {kind:<12} {nodes}")
    stages = ", ".join(f"{s} {timer.seconds[s] * 1e3:.1f} ms" for s in STAGES if s in timer.seconds)
    lines.append(f"  time: {stages}")
    print("\n".join(lines), file=sys.stderr)


def _print_passes(original, prepared):
    from ember.passes.pipeline import fused_text, planned_text
    graph = prepared.graph
    print(f"ember llvm: {graph.name} as given:", file=sys.stderr)
    print(original, file=sys.stderr)
    print(f"ember llvm: {graph.name} after simplify, fuse and plan_memory:", file=sys.stderr)
    print(fused_text(graph, prepared.fusion), file=sys.stderr)
    print(planned_text(graph, prepared.fusion, prepared.plan), file=sys.stderr)
    for kernel in prepared.kernels:
        print(kernel.describe(), file=sys.stderr)
