"""The backend registry: `ember.compile(..., backend=NAME)` looks NAME up here.

A backend is an object with `name` and `compile(graph) -> runner`, where
runner({input node id: array}, {param name: array}) returns {node id: array} for every node
in graph.outputs (see compiler/interpret_backend.py for the reference one). A compiling
backend is the driver (compiler/driver.py) with a target: "llvm" is the CPU target, "ptx"
an NVIDIA GPU's (compile only, see `ptx_backend`). Tests that run programs on every backend
take RUNNABLE_BACKENDS.
"""
from .driver import Driver
from .interpret_backend import InterpretBackend


def llvm_backend(cache_dir=None, threads=None, debug=None):
    """ember.compile(..., backend="llvm"): native code for this CPU. `cache_dir` defaults to
    EMBER_CACHE_DIR, `threads` to EMBER_NUM_THREADS, `debug` to EMBER_DEBUG (2 and above
    build programs that time their kernels)."""
    from ember import config
    from .cpu.target import CpuTarget
    debug = config.DEBUG if debug is None else debug
    return Driver(CpuTarget(threads, instrument=debug >= 2), "llvm", cache_dir, debug)


def ptx_backend(cache_dir=None, compute_capability=None):
    """ember.compile(..., backend="ptx"): PTX for an NVIDIA GPU (`compute_capability` "sm_80"
    or "sm_90"; by default the device's, sm_90 without one), run through the CUDA driver. It
    compiles on any machine; without a CUDA device, running fails at `load` with an error
    saying what is missing (`ember dump --stage ptx` and `package` work)."""
    from .ptx.target import PtxTarget
    return Driver(PtxTarget(compute_capability), "ptx", cache_dir)


def ptx_emulated_backend(cache_dir=None):
    """ember.compile(..., backend="ptx-emulated"): the PTX target's kernels run on this CPU by
    the grid emulator (runtime/grid_emulator.py): slow, for checking GPU code without a GPU."""
    from .ptx.target import PtxTarget
    return Driver(PtxTarget("sm_90", emulated=True), "ptx-emulated", cache_dir)


BACKENDS = {"interpret": InterpretBackend, "llvm": llvm_backend, "ptx": ptx_backend,
            "ptx-emulated": ptx_emulated_backend}
# backends that compile but may not run a program in this process: PTX needs a CUDA device
COMPILE_ONLY_BACKENDS = frozenset({"ptx"})
# the backends a test (or a user) can run programs on here, in name order
RUNNABLE_BACKENDS = tuple(name for name in sorted(BACKENDS) if name not in COMPILE_ONLY_BACKENDS)


def get_backend(name):
    if name not in BACKENDS:
        raise ValueError(f"unknown ember.compile backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]()


def render_code(graph, stage, backend="llvm"):
    """The text `ember dump --stage STAGE` prints for one of a backend's code stages
    ("llvm": the optimised LLVM IR, "asm": the assembly)."""
    return get_backend(backend).render(graph, stage)
