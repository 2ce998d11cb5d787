"""The compile driver: passes -> lowering -> target code generation -> cache -> load, for every
target, and the only place that orders those stages.

`Driver(target).compile(graph)` runs the pass pipeline (passes/pipeline.py: simplify, fuse,
plan_memory), looks the planned graph up in the compile cache (compiler/compile_cache.py)
and only on a miss lowers it to loop kernels (compiler/lowering.py), lays out its buffers,
and has the target emit and link code (compiler/target.py: `emit`, `link`); the cache keeps
the payload with a JSON description of the program (`describe`), so a hit goes straight to
the target's `load` without lowering again. The result is the target's runner:
runner({input node: array}, {param name: array}) -> {output node: array}.

Host-only primitives (ember/ops `host_only=True`, e.g. argsort) run as numpy callbacks where
the target allows them (`capabilities.host_callbacks`) and are listed in the runner's
`host_only_ops`, the EMBER_DEBUG=1 output and `render`'s text; elsewhere compiling fails with
a `HostOnlyError` naming each one.

Debugging (EMBER_DEBUG, ember/config.py): 1 prints each compile with its kernels and the
time of every stage, 2 also builds programs instrumented with per-kernel timers (the target
prints kernel times after every call), 3 prints each pass's stage and the loop kernels,
4 the target's code stages (optimised LLVM IR and assembly).
"""
import contextlib
import os
import sys
import weakref
from dataclasses import dataclass, field

import numpy as np

from ember.ir.provenance import describe_sources
from ember import config
from ember.ir.json_format import decode_value, encode_value
from ember.ir.symbols import has_symbols
from ember.paused_gc import paused_gc
from ember.ops import PRIMITIVES
from ember.runtime.program_spec import External, ProgramSpec
from . import compile_cache
from .compile_progress import showing_progress
from .stage_timer import StageTimer
from .target import HostOnlyError, LoadRefused

STAGES = ("simplify", "schedule", "fuse", "plan", "lower", "llvm ir", "optimize", "emit", "support", "link", "load")
DESCRIPTION_VERSION = 2  # of the program description stored beside the code (see `describe`)


@dataclass
class CompileStats:
    """What a driver did: compiles, code generations (cache misses; `llvm_compiles`, as every
    target so far is an LLVM one), cache hits, and the seconds per stage of the last compile."""

    compiles: int = 0
    llvm_compiles: int = 0
    cache_hits: int = 0
    stage_seconds: dict = field(default_factory=dict)


@dataclass
class Planned:
    """A graph taken through the passes: what the cache key covers. `stages` holds every
    stage of the pipeline (for EMBER_DEBUG=3)."""

    graph: object  # the simplified graph the kernels compute
    fusion: object
    plan: object
    stages: object = None


@dataclass
class Lowered:
    """A planned program lowered: one loop Kernel per fusion group, and where every buffer a
    kernel slot names lives: ("arena", byte offset) or ("arg", k) for external buffer k."""

    graph: object
    fusion: object
    plan: object
    kernels: list
    locations: dict
    externals: list  # runtime External per external buffer
    arena_bytes: int
    errors: list  # (exception name, message) of every kernel's checks, numbered from 1
    error_base: list  # per kernel: the number of its first error - 1
    aliasing: set  # frozenset({key, key}): slots that may share bytes (in-place updates)


class Driver:
    """A compiler for one target: `compile(graph) -> runner` (the ember.compile backend
    interface), `prepare(graph) -> Lowered`, `render(graph, stage) -> text`. `name` is the
    backend name (ember.compile(backend=...)); `cache_dir` defaults to EMBER_CACHE_DIR,
    `debug` to EMBER_DEBUG."""

    def __init__(self, target, name=None, cache_dir=None, debug=None):
        self.target = target
        self.name = name or target.name
        self.cache = compile_cache.CompileCache(cache_dir)
        self.debug = config.DEBUG if debug is None else debug
        self.stats = CompileStats()
        self._traced_keys = {}  # id(graph) -> (weakref to it, its traced key): see _traced_key

    def compile(self, graph):
        with paused_gc(), _deep_recursion():  # (ember/paused_gc.py: collections took a fifth of a big cold compile)
            return self._compile(graph)

    def _compile(self, graph):
        target, timer = self.target, StageTimer()
        graph = with_symbol_table(graph)
        traced_key = self._traced_key(graph)
        if traced_key is not None:
            runner = self._load_traced(traced_key, graph, timer)
            if runner is not None:
                return runner
        planned = plan(graph, timer)
        host_only = refuse_host_only(planned.graph, target)
        key = program_key(planned, target)
        kind = target.payload_kind()
        entry = self.cache.load_entry(key, kind)
        if entry is not None and not _is_description(entry.description):
            self.cache.discard(key, kind, "has no valid program description; rebuilding it")
            entry = None
        lowered = artifact = None
        if entry is None:
            with showing_progress(graph.name or self.name, timer) as progress, \
                    target.building(planned, self.cache) as build:
                lowered = lower(planned, target, timer)
                if progress is not None:
                    progress.kernels = len(lowered.kernels)
                with timer("llvm ir"):
                    module = target.emit(lowered)
                artifact = target.link(module, lowered, build, timer)
            description = {**describe(lowered), **target.describe(lowered, artifact)}
            payload, kind = artifact.payload, artifact.kind
            self.cache.store(key, payload, description, kind)
            self.stats.llvm_compiles += 1
        else:
            description, payload = entry.description, entry.payload
            self.stats.cache_hits += 1
        if traced_key is not None:  # (the next process finds it from the traced graph, passes skipped)
            self.cache.store(traced_key, b"", {"program": key, "kind": kind}, "alias")

        def lower_again():
            return lowered if lowered is not None else lower(planned, target)
        with timer("load"):
            try:
                runner = target.load(payload, kind, description, self.cache, graph, planned, lower_again)
            except LoadRefused:
                if target.payload_kind() == kind:
                    raise  # the target asked for the same kind again: no way to load it
                return self.compile(graph)
        runner.host_only_ops = host_only
        if planned.stages.dump_folder:
            try:
                self.write_code_dumps(planned.stages.dump_folder, lower_again(), artifact.module if artifact else None)
            except OSError as error:
                from ember.passes.pipeline import _warn_unwritable
                _warn_unwritable(planned.stages.dump_folder, error)
        self.stats.compiles += 1
        self.stats.stage_seconds = dict(timer.seconds)
        if self.debug >= 1:
            self._print_compile(graph, description, timer, entry is not None)
        if self.debug >= 3:
            self._print_passes(graph, planned, lower_again())
        if self.debug >= 4:
            for stage in target.code_stages:
                print(target.render(lower_again(), stage, artifact.module if artifact else None), file=sys.stderr)
        return runner

    def _traced_key(self, graph):
        """The cache key of a traced graph (before the passes), or None where the passes must
        run anyway: a dynamic program (its memory plan is placed per call), dumps or EMBER_DEBUG=3.
        Kept per graph object: ember.compile asks `confirmed_before` and then compiles the same graph."""
        if graph.symbols is not None or config.DUMP_DIR or self.debug >= 3:
            return None
        known = self._traced_keys.get(id(graph))
        if known is not None and known[0]() is graph:
            return known[1]
        import ember
        from ember.ir.json_format import graph_fingerprint
        key = compile_cache.cache_key("traced", graph_fingerprint(graph), sys.version, self.target.key(), ember.__version__,
                                      compile_cache.code_generator_sources(), compile_cache.graph_rewriter_sources())
        forget = self._traced_keys.pop
        self._traced_keys[id(graph)] = (weakref.ref(graph, lambda _, number=id(graph): forget(number, None)), key)
        return key

    def confirmed_before(self, graph):
        """Did ember.compile confirm this very traced graph before, in this process or an
        earlier one (`mark_confirmed`)? A trace that updates state compiles only once the next
        call's trace repeats it (frontend/jit.py); the disk cache remembers that it did."""
        key = self._traced_key(with_symbol_table(graph))
        return key is not None and os.path.exists(self.cache.path(key, "confirmed"))

    def mark_confirmed(self, graph):
        """Record in the disk cache that two calls traced `graph` alike (see `confirmed_before`)."""
        key = self._traced_key(with_symbol_table(graph))
        if key is not None and not os.path.exists(self.cache.path(key, "confirmed")):
            self.cache.store(key, b"", {"graph": graph.name}, "confirmed")

    def _load_traced(self, traced_key, graph, timer):
        """The runner of a program compiled before from this very traced graph, without running
        the passes (a warm compile), or None. The planned graph is made only if someone asks
        (a report's kernels, a numpy fallback's operands)."""
        with timer("load"):
            alias = self.cache.load_entry(traced_key, "alias")
            if alias is None or alias.description.get("kind") != self.target.payload_kind():
                return None
            entry = self.cache.load_entry(alias.description.get("program", ""), alias.description["kind"])
            if entry is None or not _is_description(entry.description) or "result_sources" not in entry.description:
                return None
            planned = LazyPlanned(graph)
            self.stats.cache_hits += 1  # (counted before loading: a target that cannot run it raises there)
            try:
                runner = self.target.load(entry.payload, alias.description["kind"], entry.description, self.cache,
                                          graph, planned, lambda: lower(planned, self.target))
            except LoadRefused:
                self.stats.cache_hits -= 1
                return None
        runner.host_only_ops = entry.description.get("host_only", [])
        self.stats.compiles += 1
        self.stats.stage_seconds = dict(timer.seconds)
        if self.debug >= 1:
            self._print_compile(graph, entry.description, timer, True)
        return runner

    def write_code_dumps(self, folder, lowered, module=None):
        """EMBER_DUMP's files after the pass stages: the kernels (loop nests with their model
        lines), the memory plan, and each of the target's code stages (LLVM IR, assembly)."""
        from ember.passes.pipeline import stage_names, write_atomically
        index = len(stage_names())
        write_atomically(os.path.join(folder, f"{index}_kernels.txt"), kernels_text(lowered))
        write_atomically(os.path.join(folder, f"{index}_memory_plan.txt"), lowered.plan.describe())
        from ember.passes.memory_chart import plan_to_svg
        write_atomically(os.path.join(folder, f"{index}_memory_plan.svg"), plan_to_svg(lowered.plan, lowered.graph))
        for k, stage in enumerate(self.target.code_stages, start=index + 1):
            extension = {"llvm": "ll", "asm": "s", "ptx": "ptx"}.get(stage, "txt")
            write_atomically(os.path.join(folder, f"{k}_{stage}.{extension}"),
                             self.target.render(lowered, stage, module))

    def dump(self, graph):
        """EMBER_DUMP's files for `graph` without compiling it (`ember dump`, `ember explain`)."""
        planned = plan(graph)
        if planned.stages.dump_folder:
            self.write_code_dumps(planned.stages.dump_folder, lower(planned, self.target))

    def prepare(self, graph):
        """The passes and lowering of `graph` (left untouched): the target's input."""
        return lower(plan(with_symbol_table(graph)), self.target)

    def render(self, graph, stage):
        """The text `ember dump --stage STAGE` prints for one of the target's code stages, or
        for "kernels" (each kernel's loop nest, with the model lines it came from)."""
        if stage == "kernels":
            return kernels_text(self.prepare(graph))
        if stage not in self.target.code_stages:
            raise ValueError(f"unknown stage {stage!r} for the {self.name} backend; "
                             f"stages: {', '.join(self.target.code_stages)}")
        lowered = self.prepare(graph)
        text = self.target.render(lowered, stage)
        host_only = host_only_ops(lowered.graph)
        if host_only:
            mark = ";" if stage == "llvm" else "#"
            text = "\n".join(f"{mark} host-only (a numpy callback, CPU only): {op}" for op in host_only) + "\n" + text
        return text

    def _print_compile(self, graph, description, timer, cached):
        kernels = description["kernels"]
        lines = [f"ember {self.name}: compiled {graph.name}: {len(kernels)} kernels, arena "
                 f"{description['arena_bytes']} bytes{' (machine code from the cache)' if cached else ''}"]
        for name, kind, nodes in kernels:
            nodes = " ".join(f"%{n}" for n in nodes)
            lines.append(f"  {name:<48} {kind:<12} {nodes}")
        for op in description.get("host_only", ()):
            lines.append(f"  host-only (a numpy callback): {op}")
        launches = description.get("launches", ())  # (a grid target's: compiler/ptx)
        if launches:
            lines.append(f"  {len(launches)} launches ({len({launch['entry'] for launch in launches})} entries):")
        for launch in launches:
            lines.append(f"    {launch['entry']:<46} {launch['mode']:<8} {launch['blocks']} x {launch['threads']} threads")
        order = list(STAGES) + [s for s in timer.seconds if s not in STAGES]
        stages = ", ".join(f"{s} {timer.seconds[s] * 1e3:.1f} ms" for s in order if s in timer.seconds)
        lines.append(f"  time: {stages}")
        print("\n".join(lines), file=sys.stderr)

    def _print_passes(self, original, planned, lowered):
        print(f"ember {self.name}: {original.name} as given:", file=sys.stderr)
        print(original, file=sys.stderr)
        stages = planned.stages
        for each in stages.ran:
            print(f"ember {self.name}: {original.name} after {each.name}:", file=sys.stderr)
            print(each.text(stages.graphs[each.stage], stages), file=sys.stderr)
        for kernel in lowered.kernels:
            print(kernel.describe(), file=sys.stderr)


# ----------------------------------------------------------------------------- the stages

class LazyPlanned:
    """`plan(graph)`'s result, made on first use: a warm compile loads a program without it."""

    def __init__(self, graph):
        self._graph, self._planned = graph, None

    def __getattr__(self, name):
        if self._planned is None:
            self._planned = plan(self._graph)
        return getattr(self._planned, name)


def with_symbol_table(graph):
    """`graph`, or for a graph with symbolic input shapes but no symbol table (a program the
    autodiff pass split off a dynamic one) a copy with the table read off its inputs."""
    if getattr(graph, "symbols", None) is not None:
        return graph
    from ember.ir.symbols import SymbolTable
    table = SymbolTable.of_inputs(graph)
    if table is None:
        return graph
    graph = graph.copy()
    graph.symbols = table
    return graph


def plan(graph, timer=None):
    """The pass pipeline on `graph` (left untouched): every pass of passes/pipeline.py's list
    that applies (simplify, fuse, plan_memory), each timed under its name. Lowering takes the
    last stage's graph with the fusion and memory plan results."""
    from ember.passes.pipeline import run_passes
    stages = run_passes(graph, timer=timer, check=False)
    return Planned(stages.graphs[list(stages.graphs)[-1]], stages.fusion, stages.plan, stages)


def host_only_ops(graph):
    """How each host-only node of `graph` reads in reports: `argsort (%12 argsort_12)`, with
    ` at model.py:41` where the node records its source line."""
    found = []
    for node_id in sorted(graph.nx.nodes):  # (ids, not NodeViews: this runs on every compile)
        data = graph.nx.nodes[node_id]
        prim = PRIMITIVES.get(data["op"])
        if prim is not None and prim.host_only:
            source = data.get("source", "")
            found.append(f"{data['op']} (%{node_id} {data['name']}){f' at {source}' if source else ''}")
    return found


def refuse_host_only(graph, target):
    """The host-only ops of `graph` (see host_only_ops); HostOnlyError when `target` cannot
    call back into Python to run them."""
    found = host_only_ops(graph)
    if found and not target.capabilities.host_callbacks:
        raise HostOnlyError(f"ember: {graph.name} cannot compile for the {target.name} target: "
                            f"{'; '.join(found)} {'is' if len(found) == 1 else 'are'} host-only (numpy, run as a "
                            f"callback from CPU code), and the {target.name} target cannot call back into Python")
    return found


@contextlib.contextmanager
def _deep_recursion(limit=20000):
    """Lowering and code generation recurse once per member of a fused expression (a sum of
    200 parameters' squares is 200 deep): Python's recursion limit raised while compiling.
    (Python-to-Python calls do not grow the C stack since 3.11.)"""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def lower(planned, target, timer=None):
    """The loop kernels of a planned graph and the layout of their buffers, for `target`:
    contractions call its library (`capabilities.library_calls`) where it has one, elementwise
    ops take the target's own lowering rules where it registered any. Host-only ops are
    refused unless the target takes host callbacks."""
    from .lowering import lower_program
    timer = timer or StageTimer()
    graph, fusion, memory = planned.graph, planned.fusion, planned.plan
    refuse_host_only(graph, target)
    with timer("lower"):
        kernels = lower_program(graph, fusion, use_gemm=bool(target.capabilities.library_calls),
                                threads=target.threads, library=target.library(), target=target.name)
        locations, externals, arena_bytes = layout(graph, memory, kernels)
        errors, error_base = [], []
        for kernel in kernels:
            error_base.append(len(errors))
            errors.extend(kernel.errors)
        aliasing = {frozenset(pair) for pair in memory.in_place.items()}
    return Lowered(graph, fusion, memory, kernels, locations, externals, arena_bytes, errors, error_base, aliasing)


def layout(graph, plan, kernels):
    """Where every slot key lives: ("arena", byte offset) for planned buffers and scratch
    (placed after the plan's arena; groups run one at a time so they share it), ("arg", k)
    for external buffers. Returns (locations, externals, arena bytes)."""
    dynamic = _is_symbolic(plan)
    scratch_base = 0 if dynamic else -(-plan.arena_bytes // 64) * 64
    scratch = 0 if dynamic else max((k.scratch_bytes for k in kernels), default=0)
    locations, externals = {}, []
    # a dynamic program's buffers move with the sizes: ("offset", [k, bytes]) is `bytes` past
    # entry k of the offsets the runtime places per size (k = len(order): the scratch's base)
    number = plan.entry_of if dynamic else {}
    scratch_offsets = []  # a dynamic program's scratch slots: bytes past the scratch base (ints or SymDims)
    for kernel in kernels:
        for slot in kernel.slots:
            key = slot.key
            if key in locations:
                continue
            if isinstance(key, tuple) and dynamic:  # (scratch at its own entry of the offsets: it may be symbolic)
                locations[key] = ("offset", (len(plan.order) + len(scratch_offsets), 0))
                scratch_offsets.append(key[5])
            elif isinstance(key, tuple):
                locations[key] = ("arena", scratch_base + key[5])
            elif dynamic and key in number:
                locations[key] = ("offset", (number[key], 0))
            elif not dynamic and key in plan.buffers:
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
    if dynamic:  # ([offsets of scratch slots past the scratch base], [bytes of each kernel's scratch])
        return locations, externals, (scratch_offsets, [k.scratch_bytes for k in kernels])
    return locations, externals, scratch_base + scratch


def _is_symbolic(plan):
    """A dynamic program's plan (passes/memory.py SymbolicMemoryPlan): placed per size at run time."""
    return getattr(plan, "symbolic_buffers", None) is not None


def program_key(planned, target):
    """The compile cache key: the planned graph (with its kernels' grouping and buffer
    offsets), the target (`target.key()`), ember's version and the code generators' source."""
    import ember
    memory = planned.plan
    placed = memory.symbolic_buffers if _is_symbolic(memory) else memory.buffers
    layout_text = [f"{node}@{buffer.offset}+{buffer.nbytes}" for node, buffer in sorted(placed.items())]
    layout_text += [f"{a}<-{b}" for a, b in sorted(memory.in_place.items())]
    return compile_cache.cache_key("program", planned.graph.to_json(), planned.fusion.describe(),
                                   " ".join(layout_text), str(memory.arena_bytes), target.key(), ember.__version__,
                                   str(planned.graph.symbols.sources) if planned.graph.symbols else "",
                                   compile_cache.code_generator_sources())


# ----------------------------------------------------------------------------- the cached description

def describe(lowered):
    """What loading a program needs besides its code and the target's own fields, as JSON
    data: the external buffers, arena size, error messages, kernels (name, kind, nodes), the
    callback kernels' nodes and the locations their operands live at, the host-only ops."""
    callbacks = [(number, kernel.nodes[0]) for number, kernel in enumerate(lowered.kernels)
                 if kernel.kind == "callback"]
    wanted = set()
    for _, node_id in callbacks:
        wanted.add(node_id)
        wanted.update(lowered.graph.node(node_id).inputs)
    dynamic = not isinstance(lowered.arena_bytes, int)  # (a dynamic program's scratch: see `layout`)
    arena = encode_value(lowered.arena_bytes) if dynamic else lowered.arena_bytes
    outputs = {e.key for e in lowered.externals if e.kind == "output"}
    simplified = lowered.graph
    sources = [_result_source(simplified, node, outputs) for node in list(simplified.outputs)
               + [m.node for m in simplified.mutations] + [g.node for g in simplified.guards]]
    return {"version": DESCRIPTION_VERSION, "arena_bytes": arena,
            # (what each output, mutation and guard of the graph comes from, in that order: a warm
            # compile loads the program without the planned graph)
            "result_sources": [[kind, encode_value(where)] for kind, where in sources],
            "externals": [[e.kind, encode_value(e.key), encode_value(tuple(e.shape)), np.dtype(e.dtype).name]
                          for e in lowered.externals],
            "errors": [list(error) for error in lowered.errors],
            "kernels": [[k.name, k.kind, list(k.nodes)] for k in lowered.kernels],
            "kernel_sources": [describe_sources(lowered.graph, k.nodes) for k in lowered.kernels],
            "callbacks": [list(callback) for callback in callbacks],
            "host_only": host_only_ops(lowered.graph),
            "locations": [[node, *lowered.locations[node]] for node in sorted(wanted)]}


def kernels_text(lowered):
    """Each kernel's loop nest (the kernel IR), headed by the model lines its nodes came from."""
    blocks = []
    for kernel in lowered.kernels:
        head, _, body = kernel.describe().partition("\n")
        sources = describe_sources(lowered.graph, kernel.nodes, limit=6)
        blocks.append(head + (f"\n  # from: {sources}" if sources else "") + (f"\n{body}" if body else ""))
    blocks.append(f"kernels: {len(lowered.kernels)}, arena {lowered.arena_bytes} bytes")
    return "\n\n".join(blocks)


def _is_description(description):
    return isinstance(description, dict) and description.get("version") == DESCRIPTION_VERSION


def program_spec(graph, simplified, description, threads=1, timed=False):
    """The runtime's ProgramSpec (runtime/program_spec.py) of a described program compiled
    from `graph`, whose kernels compute the planned graph `simplified` (or a function making
    it, called only for a description without result sources or with callbacks): its external buffers,
    where each result comes from, error messages, numpy fallbacks of callback kernels."""
    planned_graph = simplified if callable(simplified) else (lambda: simplified)  # (made only if needed)
    externals = [External(position, kind, decode_value(key), decode_value(shape), dtype)
                 for position, (kind, key, shape, dtype) in enumerate(description["externals"])]
    outputs = {e.key for e in externals if e.kind == "output"}
    originals = list(graph.outputs) + [m.node for m in graph.mutations] + [g.node for g in graph.guards]
    if "result_sources" in description:
        sources = [(kind, decode_value(where)) for kind, where in description["result_sources"]]
    else:
        simplified = planned_graph()
        sources = [_result_source(simplified, node_id, outputs) for node_id in list(simplified.outputs)
                   + [m.node for m in simplified.mutations] + [g.node for g in simplified.guards]]
    results, seen = [], set()
    for original, source in zip(originals, sources):
        if original in seen:
            continue
        seen.add(original)
        results.append((original, source))
    locations = {node: (kind, where) for node, kind, where in description["locations"]}
    fallbacks = {number: _fallback(planned_graph(), node, locations) for number, node in description["callbacks"]}
    kernel_names = [name for name, _, _ in description["kernels"]]
    arena = description["arena_bytes"]
    scratch = None
    if not isinstance(arena, int):  # a dynamic program: its scratch slots' offsets and sizes (see `layout`)
        scratch, arena = decode_value(arena), 0
    return ProgramSpec(graph.name, externals, arena, results,
                       [tuple(error) for error in description["errors"]], fallbacks, kernel_names,
                       threads, timed=timed, kernel_sources=description.get("kernel_sources"), scratch=scratch)


def _result_source(graph, node_id, outputs):
    node = graph.node(node_id)
    if node_id in outputs:
        return ("output", node_id)
    if node.op == "input":
        return ("input", node_id)
    if node.op == "param":
        return ("param", node.attrs["name"])
    if node.op == "constant" and has_symbols((node.shape, node.attrs["value"])):  # (filled per call)
        return ("sized constant", (node.attrs["value"], tuple(node.shape), node.dtype))
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
