"""The PTX target: NVIDIA GPUs (nvptx64-nvidia-cuda, sm_80 or sm_90), PTX text as the payload.

`emit` splits every lowered kernel into launches (launches.py) and writes each as a
`ptx_kernel` entry (kernels.py) into one module; `link` optimises it with LLVM's NVPTX
backend and prints PTX, which the CUDA driver compiles for the device at load time (or
`ptxas` ahead of time). Math is compiler/llvm/math.py's inline code: NVPTX has no lowering
of llvm.exp/sin/cos/pow (they would be libcalls, and there is no libm on the GPU), so the
target takes the shared polynomials (exp, log, tanh...), the call-free sin and cos, and pow
as an always-inlined function of its own ("ember.pow", `define_intrinsics`). Running
programs needs the CUDA driver and a loader (runtime/, the GPU issue); `load` says which is
missing. Importing this file does not import llvmlite.
"""
import ctypes
import json

from ..llvm.target import LLVMTarget
from ..target import Artifact, Capabilities, write_files_atomically

TRIPLE = "nvptx64-nvidia-cuda"
COMPUTE_CAPABILITIES = ("sm_80", "sm_90")
CUDA_DRIVER = "libcuda.so.1"
# NVPTX lowers these LLVM intrinsics to PTX instructions; sin and cos are inline code
# (math_functions) and pow a function of the module's own (defined_intrinsics)
NVPTX_INTRINSICS = {**{op: name for op, name in LLVMTarget.float_intrinsics.items() if op not in ("sin", "cos", "pow")},
                    "pow": "ember.pow"}


class PtxTarget(LLVMTarget):
    """An NVIDIA GPU of compute capability `compute_capability` ("sm_80": A100, "sm_90": H100)."""

    name = "ptx"
    # a grid of blocks of threads; 48 KiB of static shared memory per block on both
    # (more only by opting in per kernel); no library calls: contractions lower to loops
    capabilities = Capabilities(grid=True, shared_memory_bytes=48 * 1024)
    code_stages = ("llvm", "ptx")
    all_llvm_targets = True
    float_intrinsics = NVPTX_INTRINSICS

    def __init__(self, compute_capability="sm_90"):
        if compute_capability not in COMPUTE_CAPABILITIES:
            raise ValueError(f"ember ptx target: compute capability {compute_capability!r} is not one of "
                             f"{', '.join(COMPUTE_CAPABILITIES)}")
        self.compute_capability = compute_capability
        self._machine = None

    @property
    def defined_intrinsics(self):
        from ..llvm import math as llvm_math
        return {"ember.pow": llvm_math.emit_pow}

    def math_functions(self):
        """The shared inline polynomials and the call-free sin and cos."""
        from ..llvm import math as llvm_math
        return {**super().math_functions(), **llvm_math.TRIG_EMITTERS}

    def key(self):
        import llvmlite
        from .. import compile_cache
        return "|".join([TRIPLE, self.compute_capability, f"llvmlite-{llvmlite.__version__}",
                         compile_cache.code_generator_sources(__name__)])

    def payload_kind(self):
        return "ptx"

    # ------------------------------------------------------------------ the machine
    def triple(self):
        return TRIPLE

    def data_layout(self):
        return str(self.target_machine().target_data)

    def target_machine(self):
        if self._machine is None:
            llvm = self.binding()
            self._machine = llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=self.compute_capability,
                                                                                  opt=3)
        return self._machine

    # ------------------------------------------------------------------ code
    def launches(self, lowered):
        """Every kernel's launches (launches.Launch), in the order the program runs them."""
        from .launches import plan_launches
        return [launch for number, kernel in enumerate(lowered.kernels) for launch in plan_launches(kernel, number)]

    def emit(self, lowered):
        from ..llvm.kernels import Program
        from .kernels import write_launches
        program = Program(lowered.graph.name, lowered.kernels, lowered.locations, lowered.aliasing,
                          lowered.errors, lowered.error_base)
        module = self.new_module(lowered.graph.name)
        write_launches(self, module, program, self.launches(lowered))
        return self.define_intrinsics(module)

    def link(self, module, lowered, build, timer):
        """The module optimised at O3 and printed as PTX text."""
        module_ref = self.optimize(module, timer)
        with timer("emit"):
            ptx = self.assembly(module_ref)
        return Artifact(ptx.encode(), "ptx", module_ref)

    def describe(self, lowered, artifact):
        """The launches a runtime makes, in order: entry name, kernel number, blocks, threads
        per block, and where each entry argument (the kernel's slots) lives."""
        launches = []
        for launch in self.launches(lowered):
            kernel = lowered.kernels[launch.kernel]
            slots = [list(lowered.locations[slot.key]) for slot in kernel.slots]
            launches.append({"entry": launch.entry, "kernel": launch.kernel, "mode": launch.mode,
                             "blocks": launch.blocks, "threads": launch.threads, "slots": slots})
        from .launches import BLOCK_THREADS
        return {"compute_capability": self.compute_capability, "block_threads": BLOCK_THREADS,
                "launches": launches}

    # ------------------------------------------------------------------ running it
    def load(self, payload, kind, description, cache, graph, planned, lower_again):
        """No loader yet: say what is missing to run the PTX here."""
        try:
            ctypes.CDLL(CUDA_DRIVER)
        except OSError as error:
            raise RuntimeError(f"ember ptx target: cannot run {graph.name} here: no CUDA driver ({CUDA_DRIVER} "
                               f"does not load: {error}); the PTX compiled, `package` writes it out") from error
        raise RuntimeError(f"ember ptx target: cannot run {graph.name} yet: the CUDA driver is here, but ember "
                           f"has no CUDA program loader (runtime/cuda.py) to launch the PTX; `package` writes it out")

    def package(self, payload, kind, description, directory, name):
        """`<name>.ptx` (the entries, for cuModuleLoadData or ptxas) and `<name>.json` (the
        description: launches in order, buffers, arena size), written atomically."""
        return write_files_atomically(directory, name, {".ptx": bytes(payload),
                                                        ".json": json.dumps(description, indent=1).encode()})


__all__ = ["PtxTarget", "TRIPLE", "COMPUTE_CAPABILITIES"]
