"""The PTX target: NVIDIA GPUs (nvptx64-nvidia-cuda, sm_80 or sm_90), PTX text as the payload.

`emit` splits every lowered kernel into launches (launches.py) and writes each as a
`ptx_kernel` entry (kernels.py) into one module; `link` optimises it with LLVM's NVPTX
backend and prints PTX, which the CUDA driver compiles for the device at load time (or
`ptxas` ahead of time). Math is compiler/llvm/math.py's inline code: NVPTX has no lowering
of llvm.exp/sin/cos/pow (they would be libcalls, and there is no libm on the GPU), so the
target takes the shared polynomials (exp, log, tanh...), the call-free sin and cos, and pow
as an always-inlined function of its own ("ember.pow", `define_intrinsics`). `load` opens
the device (runtime/cuda_driver.py) and makes the payload a runner (runtime/cuda_program.py).
With `emulated`, the payload is the module's LLVM text instead, which the CPU's grid
emulator runs (runtime/emulated_cuda.py): the "ptx-emulated" backend, for machines without
a GPU. Importing this file does not import llvmlite.
"""
import json

from ember.runtime.cuda_driver import CudaUnavailable, open_device
from ember.runtime.cuda_program import CudaProgram
from ..driver import program_spec
from ..llvm.target import LLVMTarget
from ..target import Artifact, Capabilities, LoweredOnDemand, write_files_atomically

TRIPLE = "nvptx64-nvidia-cuda"
COMPUTE_CAPABILITIES = ("sm_80", "sm_90")
EMULATED_PAYLOAD = "nvptx.ll"  # the payload kind of an emulated target: the module's LLVM text
# NVPTX lowers these LLVM intrinsics to PTX instructions; sin and cos are inline code
# (math_functions) and pow a function of the module's own (defined_intrinsics)
NVPTX_INTRINSICS = {**{op: name for op, name in LLVMTarget.float_intrinsics.items() if op not in ("sin", "cos", "pow")},
                    "pow": "ember.pow"}


class PtxTarget(LLVMTarget):
    """An NVIDIA GPU of compute capability `compute_capability` ("sm_80": A100, "sm_90": H100;
    None: the device's, or sm_90 where there is none); `emulated`: the CPU's grid emulator."""

    name = "ptx"
    # a grid of blocks of threads; 48 KiB of static shared memory per block on both
    # (more only by opting in per kernel); no library calls: contractions lower to loops
    capabilities = Capabilities(grid=True, shared_memory_bytes=48 * 1024)
    code_stages = ("llvm", "ptx", "sass-check")
    all_llvm_targets = True
    float_intrinsics = NVPTX_INTRINSICS

    def __init__(self, compute_capability="sm_90", emulated=False):
        if compute_capability is None:
            compute_capability = device_compute_capability()
        if compute_capability not in COMPUTE_CAPABILITIES:
            raise ValueError(f"ember ptx target: compute capability {compute_capability!r} is not one of "
                             f"{', '.join(COMPUTE_CAPABILITIES)}")
        self.compute_capability = compute_capability
        self.emulated = emulated
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
        from ember.backends.cuda import tf32_switches
        return "|".join([TRIPLE, self.compute_capability, "emulated" if self.emulated else "device",
                         "tf32=%d%d" % tf32_switches(),
                         f"llvmlite-{llvmlite.__version__}", compile_cache.code_generator_sources(__name__)])

    def payload_kind(self):
        return EMULATED_PAYLOAD if self.emulated else "ptx"

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
        """Every kernel's launches (launches.Launch), in the order the program runs them. A
        kernel of the same structure as an earlier one (llvm/kernels.py `kernel_structure`:
        a model's transformer blocks) launches the earlier one's entries with its own buffers."""
        from dataclasses import replace
        from ..llvm.kernels import kernel_structure
        from ember.backends.cuda import tf32_switches
        program, first, found, taken = self.program(lowered), {}, [], set()
        matmul_tf32, conv_tf32 = tf32_switches()
        for number, kernel, planned in merge_row_kernels(lowered.kernels, lowered.locations):
            ops = {lowered.graph.node(n).op for n in kernel.nodes if n in lowered.graph}
            tf32 = conv_tf32 if ops & CONVOLUTIONS else matmul_tf32
            planned = [replace(launch, tf32=tf32 and launch.mode in ("tiles", "tiles_split")) for launch in planned]
            key = (kernel_structure(program, kernel), tf32)
            if key in first:
                planned = [replace(launch, entry=earlier.entry, writes_entry=False)
                           for launch, earlier in zip(planned, first[key])]
            else:
                planned = [replace(launch, entry=_unique(launch.entry, taken)) for launch in planned]
                first[key] = planned
            found.extend(planned)
        return found

    def kernel_of(self, lowered, launch):
        """The loop Kernel a launch writes: its kernel's, or a merged run's."""
        return launch.merged if launch.merged is not None else lowered.kernels[launch.kernel]

    @staticmethod
    def program(lowered):
        from ..llvm.kernels import Program
        return Program(lowered.graph.name, lowered.kernels, lowered.locations, lowered.aliasing, lowered.errors,
                       lowered.error_base)

    def emit(self, lowered):
        from .kernels import write_launches
        module = self.new_module(lowered.graph.name)
        write_launches(self, module, self.program(lowered), self.launches(lowered))
        return self.define_intrinsics(module)

    def link(self, module, lowered, build, timer):
        """The module optimised at O3 and printed as PTX text (emulated: the module's text)."""
        if self.emulated:
            return Artifact(str(module).encode(), EMULATED_PAYLOAD, module)
        module_ref = self.optimize(module, timer)
        with timer("emit"):
            ptx = self.assembly(module_ref)
        return Artifact(ptx.encode(), "ptx", module_ref)

    def describe(self, lowered, artifact):
        """The launches a runtime makes, in order: entry name, kernel number (and all the kernels
        a merged run of row kernels computes), blocks, threads
        per block, where each entry argument (the kernel's slots) lives, and what the runner
        adds to an error number the launch reports (its kernel's first error - 1)."""
        launches = []
        for launch in self.launches(lowered):
            kernel = self.kernel_of(lowered, launch)
            slots = [list(lowered.locations[slot.key]) for slot in kernel.slots]
            gemm = None
            if launch.mode == "tiles":
                from .library_gemm import gemm_call
                from .tiled_matmul import matmul_nest
                gemm = gemm_call(matmul_nest(launch.statements[0]))
                if gemm is not None:
                    gemm["tf32"] = launch.tf32  # (cuBLAS then multiplies on tensor cores too)
            launches.append({"entry": launch.entry, "kernel": launch.kernel, "mode": launch.mode, "gemm": gemm,
                             "kernels": list(range(launch.kernel, launch.last_kernel + 1)),
                             "partial_bytes": launch.partial_bytes,
                             "blocks": launch.blocks, "threads": launch.threads, "slots": slots,
                             "first_error": lowered.error_base[launch.kernel] if lowered.error_base else 0})
        from .launches import BLOCK_THREADS
        return {"compute_capability": self.compute_capability, "block_threads": BLOCK_THREADS,
                "launches": launches}

    def render(self, lowered, stage, module_ref=None):
        """The optimised LLVM IR ("llvm"), the PTX ("ptx", each entry headed by the model lines
        its kernel came from) or ptxas's resource usage per entry ("sass-check", ptxas_check.py)."""
        if stage == "llvm":
            return super().render(lowered, stage, module_ref)
        if stage not in self.code_stages:
            raise ValueError(f"unknown code stage {stage!r} for the {self.name} target; "
                             f"stages: {', '.join(self.code_stages)}")
        ptx = self.assembly(module_ref or self.optimize(self.emit(lowered)))
        if stage == "sass-check":
            from .ptxas_check import sass_check
            return sass_check(ptx, self.compute_capability)
        from ember.ir.provenance import annotate_functions, describe_sources
        notes = {launch.entry: f"{launch.mode} launch, " + describe_sources(lowered.graph,
                                                                           self.kernel_of(lowered, launch).nodes)
                 for launch in self.launches(lowered)}
        return annotate_functions(ptx, notes, "//")

    # ------------------------------------------------------------------ running it
    def load(self, payload, kind, description, cache, graph, planned, lower_again):
        """A CudaRunner on the device (the emulated one for an emulated target); CudaUnavailable
        names what is missing where there is no device."""
        try:
            device = open_device(emulated=self.emulated)
        except CudaUnavailable as error:
            raise CudaUnavailable(f"ember ptx target: cannot run {graph.name} here: {error}; the PTX compiled, "
                                  f"`package` writes it out (the \"ptx-emulated\" backend runs it on this CPU)") from error
        module = device.load_module(payload.decode())
        from .launches import EXACT_THREADS, PAIR_FIRST, PAIR_SECOND
        launches = [(launch["entry"], launch["blocks"], launch["threads"], [tuple(slot) for slot in launch["slots"]],
                     launch["mode"] in EXACT_THREADS, launch["first_error"],
                     launch["partial_bytes"] if launch["mode"] in PAIR_FIRST else -1 if launch["mode"] in PAIR_SECOND
                     else 0, launch.get("gemm")) for launch in description["launches"]]
        return CudaRunner(device, module, program_spec(graph, planned.graph, description), launches, graph,
                          lower_again)

    def package(self, payload, kind, description, directory, name):
        """`<name>.ptx` (the entries, for cuModuleLoadData or ptxas) and `<name>.json` (the
        description: launches in order, buffers, arena size), written atomically."""
        return write_files_atomically(directory, name, {".ptx": bytes(payload),
                                                        ".json": json.dumps(description, indent=1).encode()})


CONVOLUTIONS = frozenset({"conv2d", "conv2d_grad_input", "conv2d_grad_weight"})  # (cudnn.allow_tf32's ops)


class CudaRunner(CudaProgram, LoweredOnDemand):
    """A loaded GPU program that also knows its graph and, on demand, its lowered kernels."""

    def __init__(self, device, module, spec, launches, graph, lower_again):
        super().__init__(device, module, spec, launches)
        self.keep_graph(graph, lower_again)


def device_compute_capability():
    """The newest of COMPUTE_CAPABILITIES the CUDA device here runs (sm_90 without a device)."""
    try:
        found = open_device().compute_capability
    except CudaUnavailable:
        return COMPUTE_CAPABILITIES[-1]
    usable = [cc for cc in COMPUTE_CAPABILITIES if int(cc[3:]) <= int(found[3:])]
    if not usable:
        raise CudaUnavailable(f"ember ptx target: the CUDA device here is {found}; ember generates code for "
                              f"{', '.join(COMPUTE_CAPABILITIES)} and newer")
    return usable[-1]


def _unique(name, taken):
    """`name`, or `name__v2`, `name__v3`...: entry names are unique in a module (`taken` grows;
    PTX names have no dots)."""
    unique, k = name, 1
    while unique in taken:
        k += 1
        unique = f"{name}__v{k}"
    taken.add(unique)
    return unique


def merge_row_kernels(kernels, locations):
    """(kernel number, Kernel, its launches) for every kernel with launches; a run of
    consecutive kernels of one "rows" launch each that row_fusion.merge accepts comes as one
    merged Kernel (numbered as the run's first) with one launch."""
    from dataclasses import replace
    from .launches import plan_launches
    from .row_fusion import merge

    def single_rows(launches):
        return len(launches) == 1 and launches[0].mode == "rows"
    found = []  # [first number, Kernel, launches, last number]
    for number, kernel in enumerate(kernels):
        planned = plan_launches(kernel, number)
        if not planned:
            continue
        if found and single_rows(planned) and single_rows(found[-1][2]) and found[-1][3] == number - 1:
            merged = merge(found[-1][1], kernel, locations)
            if merged is not None:
                (launch,) = found[-1][2]
                found[-1] = [found[-1][0], merged, [replace(launch, entry=merged.name, statements=merged.body,
                                                            merged=merged, through=number)], number]
                continue
        found.append([number, kernel, planned, number])
    return [(number, kernel, launches) for number, kernel, launches, _ in found]


__all__ = ["PtxTarget", "CudaRunner", "TRIPLE", "COMPUTE_CAPABILITIES"]
