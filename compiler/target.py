"""The Target contract: what a machine ember compiles for declares, and what it does.

The driver (compiler/driver.py) runs the passes and the lowering, which every target shares,
then hands a target the lowered program: `emit` writes its code (an LLVM module for LLVM
targets, see compiler/llvm/target.py), `link` turns that into a payload the compile cache
keeps (a shared library, object code, PTX text), `load` makes a payload a runner, `package`
writes one to a folder for deployment. Everything else (ordering, caching, timing, debug
output) is the driver's. Modelled on tinygrad's Renderer and numba's target contexts.
"""
import contextlib
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Capabilities:
    """What a target's machine offers the code it runs.

    threads: top-level parallel loops run on the host's threads; grid: kernels launch over a
    grid of blocks and threads (a GPU), with `shared_memory_bytes` per block; library_calls:
    the ops a native library kernel computes instead of loops (lowering then emits Gemm and
    ConvCall statements for them, `Target.library()` sizes their scratch); host_callbacks:
    compiled code may call back into this Python process to run a host-only primitive's numpy
    implementation (ember/ops `host_only=True`); without it, compiling a program that holds
    one fails with an error naming the op."""

    threads: bool = False
    grid: bool = False
    shared_memory_bytes: int = 0
    library_calls: frozenset = field(default_factory=frozenset)
    host_callbacks: bool = False


@dataclass
class Artifact:
    """A linked program: `payload` bytes the cache stores under `kind` (its file suffix: "so",
    "o", "ptx"), and the optimised module it came from (for debug dumps; None from the cache)."""

    payload: bytes
    kind: str
    module: object = None


class HostOnlyError(RuntimeError):
    """A program holds a host-only primitive (ember/ops `host_only=True`) and the target it is
    compiled, loaded or packaged for cannot call back into Python. The message names each such
    op, its node and, where the tracer recorded it, its source line."""


class LoadRefused(RuntimeError):
    """A target cannot load this kind of payload in this process (e.g. a shared library on a
    noexec temporary folder); it has already switched `payload_kind()`, and the driver
    compiles the program again in that form."""


class Target:
    """A machine ember compiles for. Subclasses set `name` and `capabilities` and implement
    the methods that raise NotImplementedError; the others have working defaults."""

    name = "target"
    capabilities = Capabilities()
    code_stages = ()  # what `ember dump --stage` may ask `render` for, e.g. ("llvm", "asm")
    threads = 1  # threads its library calls size their workspaces for (lowering reads it)
    instrumented = False  # builds count time per kernel (EMBER_DEBUG=2)

    def key(self):
        """A string naming everything about the target that changes its code (the cache key
        covers it besides the planned graph and the code generators' sources)."""
        raise NotImplementedError(f"{type(self).__name__}.key")

    def math_function_names(self):
        """The float math functions (compiler/loop_ir.py MATH_FUNCTIONS) this target computes:
        an elementwise lowering rule using another has no code here. For an LLVM target (and
        by default) the keys of its `float_intrinsics` and `math_functions()` tables."""
        names = set(getattr(self, "float_intrinsics", {}))
        if hasattr(self, "math_functions"):
            names |= set(self.math_functions())
        return frozenset(names)

    def library(self):
        """The library calls' sizing rules lowering consults (`conv_workspace_bytes`,
        `direct_conv_applies`), or None when `capabilities.library_calls` is empty."""
        return None

    def payload_kind(self):
        """The cache entry kind a program compiled now is stored as."""
        raise NotImplementedError(f"{type(self).__name__}.payload_kind")

    def building(self, planned, cache):
        """A context manager around lowering, `emit` and `link` of a cache miss; what it yields
        is handed to `link` (the CPU target compiles support code in other processes
        meanwhile)."""
        return contextlib.nullcontext()

    def emit(self, lowered):
        """The target's code for a driver.Lowered program (for LLVM targets an ir.Module)."""
        raise NotImplementedError(f"{type(self).__name__}.emit")

    def link(self, module, lowered, build, timer):
        """An `Artifact` from the emitted module: optimised, compiled and linked with whatever
        it calls. `build` is what `building` yielded; `timer` times the stages."""
        raise NotImplementedError(f"{type(self).__name__}.link")

    def describe(self, lowered, artifact):
        """The target's own JSON fields of the cached program description (the driver writes
        the rest: buffers, kernels, errors); `load` gets them back."""
        return {}

    def load(self, payload, kind, description, cache, graph, planned, lower_again):
        """A runner: runner({input node: array}, {param name: array}) -> {output node: array}
        for `graph`'s outputs, mutations and guards. `planned` is the graph the kernels
        compute; `lower_again()` gives the driver.Lowered program when someone asks for it
        (a cache hit does not lower). Raise LoadRefused to be compiled again."""
        raise NotImplementedError(f"{type(self).__name__}.load")

    def package(self, payload, kind, description, directory, name):
        """Write a compiled program into `directory` for deployment; returns the paths."""
        raise NotImplementedError(f"the {self.name} target cannot package programs")

    def render(self, lowered, stage):
        """The text of one of `code_stages` for `ember dump --stage`."""
        raise ValueError(f"the {self.name} target has no code stage {stage!r}")


class LoweredOnDemand:
    """For a target's runner: the graph it was compiled from and, on demand, its lowered
    kernels (`prepared`: a cache hit does not lower; the kernels are lowered again only when
    someone asks, e.g. a report)."""

    def keep_graph(self, graph, lower_again):
        self.graph = graph
        self._lower_again, self._prepared = lower_again, None

    @property
    def prepared(self):
        if self._prepared is None:
            self._prepared = self._lower_again()
        return self._prepared


def write_files_atomically(directory, name, files):
    """Write {suffix: bytes} as `directory/<name><suffix>`, creating the folder; each file is
    written to a temporary name and renamed over the target, so a reader never sees one half
    written. Returns the paths, in `files`' order (what `Target.package` returns)."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for suffix, data in files.items():
        path = os.path.join(directory, name + suffix)
        temporary = f"{path}.tmp{os.getpid()}"
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
        paths.append(path)
    return paths
