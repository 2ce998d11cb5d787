"""The host target of ember's LLVM CPU backend: llvmlite set up once, lazily, for this CPU.

Every LLVM-emitting module (llvm_math, llvm_matmul, the kernel code generator) builds its
`ir.Module` with `new_module` so triple and data layout match the machine code that
`host_target_machine` produces, and optimises with `optimize_module`. Importing this file
does not import llvmlite (0.17 s); the first call does.
"""
import functools
import threading

_INIT_LOCK = threading.Lock()
_initialized = False


def llvm_binding():
    """llvmlite.binding with the native target and asm printer initialised (once)."""
    global _initialized
    import llvmlite.binding as llvm
    if not _initialized:
        with _INIT_LOCK:
            if not _initialized:
                llvm.initialize_native_target()
                llvm.initialize_native_asmprinter()
                llvm.initialize_native_asmparser()
                _initialized = True
    return llvm


@functools.lru_cache(maxsize=None)
def host_triple():
    return llvm_binding().get_process_triple()


@functools.lru_cache(maxsize=None)
def host_cpu_name():
    return llvm_binding().get_host_cpu_name()


@functools.lru_cache(maxsize=None)
def host_cpu_features():
    """The host's feature string, e.g. '+avx2,+fma,-avx512f,...' (LLVM's spelling)."""
    return llvm_binding().get_host_cpu_features().flatten()


def host_has_feature(name):
    """True when the host CPU has feature `name` ('avx512f', 'avx2', 'fma')."""
    return f"+{name}" in host_cpu_features().split(",")


@functools.lru_cache(maxsize=None)
def host_vector_bits():
    """Width in bits of the widest vector registers the host computes with (512, 256, 128)."""
    if host_has_feature("avx512f"):
        return 512
    if host_has_feature("avx"):
        return 256
    return 128


def host_vector_lanes(element_bits=32):
    """How many elements of `element_bits` one host vector register holds (16 f32 on AVX-512)."""
    return host_vector_bits() // element_bits


def new_host_target_machine(opt=3, reloc="pic", codemodel="jitdefault"):
    """A fresh llvmlite TargetMachine for this CPU (its name and all its features).

    An MCJIT execution engine takes ownership of the target machine it is given and frees
    it with itself, so give `llvm.create_mcjit_compiler` a new one from here, never the
    shared `host_target_machine()`. Position-independent code by default, so the same
    machine code serves MCJIT and shared libraries (ember.export).
    """
    llvm = llvm_binding()
    target = llvm.Target.from_triple(host_triple())
    return target.create_target_machine(cpu=host_cpu_name(), features=host_cpu_features(),
                                        opt=opt, reloc=reloc, codemodel=codemodel)


@functools.lru_cache(maxsize=None)
def host_target_machine(opt=3, reloc="pic", codemodel="jitdefault"):
    """The shared TargetMachine for optimising and emitting objects/assembly (cached per
    argument set). Not for execution engines: see `new_host_target_machine`."""
    return new_host_target_machine(opt, reloc, codemodel)


@functools.lru_cache(maxsize=None)
def host_data_layout():
    return str(host_target_machine().target_data)


def target_key():
    """A string naming everything about the target that changes generated code (cache keys)."""
    import llvmlite
    return "|".join([host_triple(), host_cpu_name(), host_cpu_features(),
                     f"llvmlite-{llvmlite.__version__}"])


def new_module(name):
    """An empty llvmlite `ir.Module` with the host's triple and data layout."""
    llvm_binding()
    from llvmlite import ir
    module = ir.Module(name=name)
    module.triple = host_triple()
    module.data_layout = host_data_layout()
    return module


def optimize_module(module_ref, opt=3):
    """Run LLVM's default O`opt` pipeline (loop and SLP vectorisers on) over a parsed module.

    `module_ref` is an llvmlite.binding ModuleRef (llvm.parse_assembly(str(ir_module))); it is
    optimised in place for the host target machine and returned.
    """
    llvm = llvm_binding()
    machine = host_target_machine(opt)
    tuning = llvm.create_pipeline_tuning_options(speed_level=opt)
    tuning.loop_vectorization = opt >= 2
    tuning.slp_vectorization = opt >= 2
    tuning.loop_unrolling = opt >= 2
    builder = llvm.create_pass_builder(machine, tuning)
    builder.getModulePassManager().run(module_ref, builder)
    return module_ref
