"""The `llvm` backend: a graph in, a native CPU program out, run by one foreign call.

`LLVMBackend().compile(graph)` runs simplify -> fuse -> plan_memory (passes/) -> lower
(compiler/lowering.py) -> LLVM IR (compiler/llvm_cpu.py) -> optimised object code (cached on
disk, compiler/compile_cache.py) -> loaded by MCJIT -> a `CpuProgram` (runtime/) that is the
runner: runner({input node: array}, {param name: array}) -> {output node: array}.

Loading: object code goes to llvmlite's MCJIT (1.3-2.0 ms for the seed Net's program)
rather than a shared library linked by the system C compiler (`cc -shared` took 106 ms per
program, dlopen then ~0.2 ms): a cache hit loads in about 2 ms either way, and a miss saves
the link. The sgemm/conv kernels live in a support library compiled once per cache
(`ensure_support_library`) whose symbols programs link against.

Debugging (EMBER_DEBUG, ember/config.py): 1 prints each compile with its kernels and the
time of every stage, 2 also builds programs instrumented with per-kernel cycle counters and
prints kernel times after every call, 3 prints the IR after each pass and the loop kernels,
4 the optimised LLVM IR and the assembly. `render_stage(graph, "llvm" | "asm")` returns
those two texts for `ember dump --stage`.
"""
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ember import config
from ember.ops import PRIMITIVES
from ember.runtime.cpu_program import CpuProgram, External, ProgramSpec, load_object
from . import compile_cache, llvm_target
from . import loop_ir as L

STAGES = ("simplify", "fuse", "plan", "lower", "llvm ir", "optimize", "emit", "load")


@dataclass
class CompileStats:
    """What the backend did: compiles, LLVM compiles (cache misses), cache hits, and the
    seconds per stage of the last compile."""

    compiles: int = 0
    llvm_compiles: int = 0
    cache_hits: int = 0
    stage_seconds: dict = field(default_factory=dict)


@dataclass
class Prepared:
    """A graph taken through the passes and lowering, ready for code generation."""

    graph: object  # the simplified, fused graph the kernels compute
    fusion: object
    plan: object
    kernels: list
    program: object  # llvm_cpu.Program
    externals: list  # runtime External per external buffer
    arena_bytes: int
    uses_gemm: bool
    threads: int


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
        prepared = prepare(graph, timer, instrument, self.threads)
        if self.debug >= 3:
            _print_passes(graph, prepared)
        key = program_key(prepared)
        object_code = self.cache.load(key)
        module_ref = None
        if object_code is None:
            module_ref = optimized_module(prepared, timer)
            with timer("emit"):
                object_code = llvm_target.host_target_machine().emit_object(module_ref)
            self.cache.store(key, object_code)
            self.stats.llvm_compiles += 1
        else:
            self.stats.cache_hits += 1
        with timer("load"):
            if prepared.uses_gemm:
                ensure_support_library(self.cache)
            engine, address = load_object(object_code, llvm_target.new_host_target_machine(),
                                          _entry_name())
            runner = CpuProgram(self.spec_of(graph, prepared, instrument), address, keepalive=engine)
        runner.graph = graph
        runner.prepared = prepared
        self.stats.compiles += 1
        self.stats.stage_seconds = dict(timer.seconds)
        if self.debug >= 1:
            _print_compile(graph, prepared, timer, module_ref is None)
        if self.debug >= 4:
            print(render_code(prepared, "llvm", module_ref), file=sys.stderr)
            print(render_code(prepared, "asm", module_ref), file=sys.stderr)
        return runner

    def spec_of(self, graph, prepared, instrument):
        simplified = prepared.graph
        results = []
        outputs = {e.key for e in prepared.externals if e.kind == "output"}
        pairs = list(zip(graph.outputs, simplified.outputs))
        pairs += [(a.node, b.node) for a, b in zip(graph.mutations, simplified.mutations)]
        pairs += [(a.node, b.node) for a, b in zip(graph.guards, simplified.guards)]
        seen = set()
        for original, node_id in pairs:
            if original in seen:
                continue
            seen.add(original)
            results.append((original, _result_source(simplified, node_id, outputs)))
        fallbacks = {number: _fallback(simplified, kernel, prepared.program.locations)
                     for number, kernel in enumerate(prepared.kernels) if kernel.kind == "callback"}
        return ProgramSpec(graph.name, prepared.externals, prepared.arena_bytes, results,
                           prepared.program.errors, fallbacks, [k.name for k in prepared.kernels],
                           self.threads, timed=instrument)


def get_llvm_backend():
    return LLVMBackend()


# ----------------------------------------------------------------------------- preparing

def prepare(graph, timer=None, instrument=False, threads=None):
    """Passes, lowering and the buffer layout of `graph` (left untouched)."""
    from ember.passes.fusion import fuse
    from ember.passes.memory import plan_memory
    from ember.passes.simplify import simplify
    from .llvm_cpu import ArgsLayout, Program
    from .lowering import lower_program
    timer = timer or _StageTimer()
    threads = threads or config.NUM_THREADS
    with timer("simplify"):
        simplified = simplify(graph)
    with timer("fuse"):
        fusion = fuse(simplified)
    with timer("plan"):
        plan = plan_memory(simplified, fusion)
    with timer("lower"):
        kernels = lower_program(simplified, fusion, use_gemm=True, threads=threads)
        locations, externals, arena_bytes = _layout(simplified, plan, kernels)
        errors, error_base = [], []
        for kernel in kernels:
            error_base.append(len(errors))
            errors.extend(kernel.errors)
        aliasing = {frozenset(pair) for pair in plan.in_place.items()}
        program = Program(simplified.name, kernels, locations, ArgsLayout(len(externals)), aliasing, errors,
                          error_base, instrument, parallel=thread_runtime_loaded())
    uses_gemm = any(isinstance(s, (L.Gemm, L.ConvCall)) for k in kernels for s in L.walk_statements(k.body))
    return Prepared(simplified, fusion, plan, kernels, program, externals, arena_bytes, uses_gemm, threads)


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


def _fallback(graph, kernel, locations):
    """The numpy fallback of a callback kernel: read the operands, run the primitive's impl,
    write the result where the program expects it."""
    node = graph.node(kernel.nodes[0])
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


# ----------------------------------------------------------------------------- code generation

def _entry_name():
    from .llvm_cpu import ENTRY_NAME
    return ENTRY_NAME


def program_key(prepared):
    """The compile cache key: planned graph, target, ember version, code generator source."""
    import ember
    sources = compile_cache.code_generator_sources()
    options = f"instrument={prepared.program.instrument} threads={prepared.threads} " \
              f"parallel={prepared.program.parallel}"
    return compile_cache.cache_key("program", prepared.graph.to_json(), llvm_target.target_key(),
                                   ember.__version__, sources, options)


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
    assembly, each kernel a function named after its fusion group."""
    if stage not in ("llvm", "asm"):
        raise ValueError(f"unknown stage {stage!r} for the llvm backend; stages: llvm, asm")
    return render_code(prepare(graph), stage)


# ----------------------------------------------------------------------------- threads and the support library

def thread_runtime_loaded():
    """Load libgomp (GOMP_parallel for parallel loops, sgemm and conv); False without it.

    libgomp's idle threads spin briefly (GOMP_SPINCOUNT=20000, set by load_libgomp unless the
    user set OMP_WAIT_POLICY or GOMP_SPINCOUNT) and then sleep: its default spin for
    milliseconds made numpy's threaded BLAS in the same process (eager ember) up to 50x
    slower, while sleeping at once (OMP_WAIT_POLICY=PASSIVE) cost compiled programs a wake-up
    per parallel region (measured: seed Net training step at batch 64, 4.4 ms with the short
    spin against 6.9 ms passive; eager steps unchanged)."""
    from .llvm_matmul import load_libgomp
    return load_libgomp() is not None


_SUPPORT_LOCK = threading.Lock()
_SUPPORT = {}  # process-wide: the loaded sgemm engine (its symbol is registered with LLVM)


def ensure_support_library(cache):
    """Compile (or load from the cache) llvm_matmul's sgemm and llvm_conv's convolutions
    once per process and register their symbols, so programs' object code links to them."""
    with _SUPPORT_LOCK:
        if _SUPPORT:
            return
        from . import llvm_conv, llvm_matmul
        from .llvm_cpu import CONV_SYMBOLS, SGEMM_SYMBOL
        llvm = llvm_target.llvm_binding()
        thread_runtime_loaded()
        key = compile_cache.cache_key("support", llvm_target.target_key(), compile_cache.code_generator_sources())
        object_code = cache.load(key)
        if object_code is None:
            module = llvm_target.new_module("ember_support")
            llvm_matmul.define_sgemm(module)
            for kind in CONV_SYMBOLS:
                llvm_conv.define_conv2d(module, kind)
            module_ref = llvm.parse_assembly(str(module))
            module_ref.verify()
            llvm_target.optimize_module(module_ref, opt=3)
            object_code = llvm_target.host_target_machine().emit_object(module_ref)
            cache.store(key, object_code)
        engine, address = load_object(object_code, llvm_target.new_host_target_machine(), SGEMM_SYMBOL)
        llvm.add_symbol(SGEMM_SYMBOL, address)
        for symbol in CONV_SYMBOLS.values():
            llvm.add_symbol(symbol, engine.get_function_address(symbol))
        _SUPPORT["engine"] = engine


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


def _print_compile(graph, prepared, timer, cached):
    lines = [f"ember llvm: compiled {graph.name}: {len(prepared.kernels)} kernels, arena {prepared.arena_bytes} "
             f"bytes{' (object code from the cache)' if cached else ''}"]
    for kernel in prepared.kernels:
        nodes = " ".join(f"%{n}" for n in kernel.nodes)
        lines.append(f"  {kernel.name:<48} {kernel.kind:<12} {nodes}")
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
