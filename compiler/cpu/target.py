"""The CPU target: this host's LLVM code, one shared library per program, run by one foreign call.

`emit` writes the lowered kernels and the entry `ember_program(void **table)` into one
module (compiler/cpu/program.py). `link` optimises it at O3, emits object code and links it
with the support-library pieces its kernels call (cpu/support_library.py: sgemm, the
convolutions) into a shared library with the system C compiler (cpu/linker.py, ~10 ms);
without a C compiler the payload is the object code, loaded by llvmlite's MCJIT. `load` makes
a payload a `CpuRunner` (runtime/cpu_program.py) with ctypes alone, so a program from the
compile cache needs no llvmlite. Parallel loops, sgemm and the convolutions run on libgomp's
threads (runtime/thread_runtime.py). Importing this file does not import llvmlite.
"""
import warnings


from ember import config
from ember.runtime.cpu_program import CpuProgram, load_object
from ember.runtime.program_spec import DynamicLayout
from ember.runtime.shared_library import load_shared_library
from ember.runtime.thread_runtime import load_libgomp
from ..llvm.target import LLVMTarget
from ..driver import program_spec
from ..target import Artifact, Capabilities, HostOnlyError, LoadRefused, LoweredOnDemand, write_files_atomically
from . import host, linker, split_compile, support_library
from .library import CpuLibrary

_LINKING = {}  # "works": False once linking or loading a shared library failed in this process


def linking_works():
    return _LINKING.get("works", True) and linker.c_compiler() is not None


def thread_runtime_loaded():
    """Load libgomp (GOMP_parallel for parallel loops, sgemm and conv); False without it.

    libgomp's idle threads spin briefly (GOMP_SPINCOUNT=20000, set by load_libgomp unless the
    user set OMP_WAIT_POLICY or GOMP_SPINCOUNT) and then sleep: its default spin for
    milliseconds made numpy's threaded BLAS in the same process (eager ember) up to 50x
    slower, while sleeping at once (OMP_WAIT_POLICY=PASSIVE) cost compiled programs a wake-up
    per parallel region (measured: seed Net training step at batch 64, 4.4 ms with the short
    spin against 6.9 ms passive; eager steps unchanged)."""
    return load_libgomp() is not None


class CpuTarget(LLVMTarget):
    """The host CPU. `threads` (default EMBER_NUM_THREADS) run parallel loops and library
    calls; `parallel` (default: libgomp is loaded) lets big loops use them; `instrument`
    builds programs that count cycles per kernel and print kernel times after each call."""

    name = "cpu"
    capabilities = Capabilities(threads=True, library_calls=CpuLibrary.calls, host_callbacks=True)
    # LLVM's O3 pipeline without loop unrolling: the kernels' loops have static trip counts
    # that full unrolling would blow up (4x the code and compile time on the seed Net for no
    # speed); lowering already unrolls small reductions, and the vectoriser still interleaves
    optimize_unrolling = False

    def __init__(self, threads=None, parallel=None, instrument=False):
        self.threads = threads or config.NUM_THREADS
        self.parallel = thread_runtime_loaded() if parallel is None else parallel
        self.instrumented = instrument

    def key(self):
        return f"{host.target_key()}|threads={self.threads} parallel={self.parallel} instrument={self.instrumented}"

    def library(self):
        return CpuLibrary()

    # ------------------------------------------------------------------ the machine
    def triple(self):
        return host.host_triple()

    def data_layout(self):
        return host.host_data_layout()

    def target_machine(self):
        return host.host_target_machine()

    # ------------------------------------------------------------------ code
    def emit(self, lowered):
        from ember.ir.provenance import sources_of
        from .program import ArgsLayout, Program, build_module
        program = Program(lowered.graph.name, lowered.kernels, lowered.locations, lowered.aliasing,
                          lowered.errors, lowered.error_base, layout=ArgsLayout(len(lowered.externals)),
                          instrument=self.instrumented, parallel=self.parallel)
        sources = {}
        for kernel in lowered.kernels:
            found = sources_of(lowered.graph, kernel.nodes)
            sources[kernel.name] = found[0][0] if found else ""
        return build_module(self, program, self.new_module(lowered.graph.name), sources)

    def payload_kind(self):
        return "so" if linking_works() else "o"

    def building(self, planned, cache):
        """The support pieces the program will call start compiling in other processes now,
        while this one lowers and compiles the program."""
        expected = support_library.pieces_expected(planned.graph, planned.fusion)
        return support_library.compiled_alongside(expected, cache, self.parallel, len(planned.fusion.groups))

    def link(self, module, lowered, build, timer):
        """The program's object code linked with its support pieces into a shared library, or
        (`payload_kind()` is "o": no C compiler, or linking failed before) the object code alone. `build`
        (support_library.compiled_alongside) compiles some missing pieces in other processes
        meanwhile; this process compiles the rest."""
        from .program import ENTRY_NAME
        pieces = support_library.pieces_for(lowered.kernels)
        split = None
        if self.payload_kind() == "so" and not self.instrumented:  # (two objects need the linker)
            with timer("llvm ir"):
                text = str(module)
            split = split_compile.compile_in_two(self, text, ENTRY_NAME, timer)
        if split is not None:  # half the kernels compiled in a forked process meanwhile
            program_objects, module_ref = split
        else:
            module_ref = self.optimize(module, timer)
            with timer("emit"):
                program_objects = [self.object_code(module_ref)]
        with timer("support"):
            own = {p: support_library.piece_object(p, build.cache, self.parallel) for p in pieces
                   if p not in build.pieces}
            build.wait()
            objects = [own[p] if p in own else support_library.piece_object(p, build.cache, self.parallel)
                       for p in pieces]
        if self.payload_kind() != "so":
            return Artifact(program_objects[0], "o", module_ref)
        with timer("link"):
            try:
                return Artifact(linker.link_shared_library([*program_objects, *objects]), "so", module_ref)
            except linker.LinkError as error:
                _LINKING["works"] = False
                warnings.warn(f"ember: cannot link a shared library ({error}); loading programs with "
                              f"llvmlite's MCJIT instead", stacklevel=4)
                if split is not None:  # (MCJIT loads one object: the whole module, compiled here)
                    module_ref = self.optimize(module, timer)
                    program_objects = [self.object_code(module_ref)]
                return Artifact(program_objects[0], "o", module_ref)

    def describe(self, lowered, artifact):
        from .program import ENTRY_NAME
        return {"entry": ENTRY_NAME, "pieces": support_library.pieces_for(lowered.kernels)}

    def render(self, lowered, stage, module_ref=None):
        """The optimised LLVM IR ("llvm") or assembly ("asm") of the program, each kernel a
        function named after its fusion group, followed by the support library pieces its
        kernels call (the sgemm microkernel, the convolutions)."""
        texts = [super().render(lowered, stage, module_ref)]
        texts += [support_library.piece_text(piece, self.parallel, stage)
                  for piece in support_library.pieces_for(lowered.kernels)]
        return "\n".join(texts)

    # ------------------------------------------------------------------ running it
    def load(self, payload, kind, description, cache, graph, planned, lower_again):
        if kind == "so":
            try:
                library, address = load_shared_library(payload, description["entry"], [cache.directory])
            except OSError as error:
                _LINKING["works"] = False
                warnings.warn(f"ember: {error}; loading programs with llvmlite's MCJIT instead", stacklevel=4)
                raise LoadRefused(str(error)) from error
        else:
            support_library.register_with_mcjit(description["pieces"], cache, self.parallel)
            library, address = load_object(payload, host.new_host_target_machine(), description["entry"])
        spec = self.spec_of(graph, lambda: planned.graph, description)
        if graph.symbols is not None:  # sizes read from the inputs, buffers placed per size
            spec.dynamic = DynamicLayout(planned.graph.symbols, planned.plan.at, planned.plan.order)
        return CpuRunner(spec, address, library, graph, lower_again)

    def spec_of(self, graph, simplified, description):
        """The runtime's ProgramSpec of a described program (driver.program_spec), with this
        target's thread count and instrumentation."""
        return program_spec(graph, simplified, description, self.threads, self.instrumented)

    def package(self, payload, kind, description, directory, name):
        """`<name>.so` (the program linked with its support pieces: loadable with ctypes alone,
        entry `ember_program`) and `<name>.json` (its description), written atomically.
        Object code (no C compiler here) cannot be packaged, nor a program that calls back into
        Python for a host-only op."""
        import json
        if description.get("callbacks"):
            raise HostOnlyError(f"ember: cannot package {name}: it calls back into Python for host-only "
                                f"{'; '.join(description.get('host_only', ()))}")
        if kind != "so":
            raise RuntimeError(f"ember: cannot package {name}: no C compiler linked it into a shared library")
        return write_files_atomically(directory, name, {".so": bytes(payload),
                                                        ".json": json.dumps(description, indent=1).encode()})


class CpuRunner(CpuProgram, LoweredOnDemand):
    """A loaded CPU program that also knows its graph and, on demand, its lowered kernels."""

    def __init__(self, spec, entry_address, keepalive, graph, lower_again):
        super().__init__(spec, entry_address, keepalive=keepalive)
        self.keep_graph(graph, lower_again)


__all__ = ["CpuTarget", "CpuRunner"]
