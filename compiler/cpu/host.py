"""The machine the CPU target compiles for: this host, as LLVM sees it.

The CPU target (compiler/cpu/target.py), sgemm and the convolutions build their `ir.Module`
with `new_module` so triple and data layout match the machine code that `host_target_machine`
produces, and optimise with `optimize_module`. Importing this file does not import llvmlite
(0.17 s), and neither does asking what the host is (`target_key`, `host_cpu_features`):
LLVM's answer is kept in the compile cache (`host_description`). `compiling_for("x86-64-v3")`
makes everything here describe a class of machines instead (ember.export_library's `cpu=`).
"""
import contextlib
import contextvars
import functools
import os

from ..llvm.target import llvm_binding, run_pipeline


_DESCRIPTION_FIELDS = ("triple", "cpu", "features", "llvmlite")

# The x86-64 micro-architecture levels of the psABI (LLVM knows their names as CPUs): the
# features each adds to the one before. Code built for a level runs on every CPU that has them.
_LEVEL_FEATURES = {
    "x86-64": ["sse", "sse2", "cx8", "fxsr", "mmx", "cmov"],
    "x86-64-v2": ["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cx16", "sahf"],
    "x86-64-v3": ["avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"],
    "x86-64-v4": ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"],
}
CPU_LEVELS = tuple(_LEVEL_FEATURES)
_COMPILING_FOR = contextvars.ContextVar("ember_compiling_for", default=None)


def level_features(level):
    """LLVM's feature string for an x86-64 level ("x86-64-v3" or "generic-x86-64-v3")."""
    level = level.removeprefix("generic-")
    if level not in _LEVEL_FEATURES:
        raise ValueError(f"unknown CPU {level!r}: choose 'host' or one of {', '.join(CPU_LEVELS)} "
                         f"(also spelled generic-x86-64-v3)")
    wanted = []
    for name in CPU_LEVELS[:CPU_LEVELS.index(level) + 1]:
        wanted += _LEVEL_FEATURES[name]
    return ",".join(f"+{feature}" for feature in wanted)


@contextlib.contextmanager
def compiling_for(cpu):
    """Within the block, the "host" is `cpu`: "host" (this machine), or an x86-64 level such
    as "x86-64-v3" (code for every machine of that class). Cache keys, vector widths, the
    target machine and the support library all follow it."""
    if cpu in (None, "host"):
        yield
        return
    level = cpu.removeprefix("generic-")
    features = level_features(level)
    machine = host_description()
    if not machine["triple"].startswith("x86_64"):
        raise ValueError(f"cpu={cpu!r} names an x86-64 level, and this machine is {machine['triple']}")
    token = _COMPILING_FOR.set({**machine, "cpu": level, "features": features})
    try:
        yield
    finally:
        _COMPILING_FOR.reset(token)


def host_description():
    """{"triple", "cpu", "features", "llvmlite"}: the machine code is compiled for (this one
    unless `compiling_for` says otherwise)."""
    chosen = _COMPILING_FOR.get()
    return chosen if chosen is not None else this_machine()


@functools.lru_cache(maxsize=None)
def this_machine():
    """{"triple", "cpu", "features", "llvmlite"}: this machine as LLVM sees it.

    Asking LLVM means importing llvmlite, which a program loaded from the compile cache does
    not otherwise need, so the answer is stored in the cache (EMBER_CACHE_DIR) under a
    fingerprint of the CPU (/proc/cpuinfo's identity and flags) and of the llvmlite install;
    where there is no /proc/cpuinfo, LLVM is asked in every process."""
    from .. import compile_cache
    fingerprint = _host_fingerprint()
    if fingerprint is None:
        return _ask_llvm()
    cache = compile_cache.CompileCache()
    key = compile_cache.cache_key("host", fingerprint)
    entry = cache.load_entry(key, "json")
    if entry is not None:
        if sorted(entry.description) == sorted(_DESCRIPTION_FIELDS):
            return entry.description
        cache.discard(key, "json", "does not describe a host; asking LLVM again")
    description = _ask_llvm()
    cache.store(key, b"", description, "json")
    return description


def _ask_llvm():
    import llvmlite
    llvm = llvm_binding()
    return {"triple": llvm.get_process_triple(), "cpu": llvm.get_host_cpu_name(),
            "features": llvm.get_host_cpu_features().flatten(), "llvmlite": llvmlite.__version__}


def _host_fingerprint():
    """Bytes that change when LLVM's view of the host could: the first CPU's identity and
    feature flags (x86 and Arm spellings), the machine, and llvmlite's binary (path, size,
    mtime). None without /proc/cpuinfo or llvmlite."""
    import importlib.util
    try:
        with open("/proc/cpuinfo", "rb") as f:
            first_cpu = f.read(1 << 15).split(b"\n\n")[0]
        spec = importlib.util.find_spec("llvmlite")
    except (OSError, ImportError, ValueError):
        return None
    fields = (b"vendor_id", b"cpu family", b"model", b"model name", b"stepping", b"cpuid level", b"flags",
              b"CPU implementer", b"CPU architecture", b"CPU variant", b"CPU part", b"CPU revision", b"Features")
    lines = [line for line in first_cpu.splitlines() if line.split(b":")[0].strip() in fields]
    if spec is None or not spec.submodule_search_locations \
            or not any(line.startswith((b"flags", b"Features")) for line in lines):
        return None
    binding = os.path.join(spec.submodule_search_locations[0], "binding")
    try:
        libraries = sorted(name for name in os.listdir(binding) if "llvmlite" in name and "." in name)
        stats = [(name, os.stat(os.path.join(binding, name))) for name in libraries]
    except OSError:
        return None
    installed = [f"{binding}/{name}:{st.st_size}:{st.st_mtime_ns}".encode() for name, st in stats]
    return b"\n".join([os.uname().machine.encode(), *lines, *installed])


def host_triple():
    return host_description()["triple"]


def host_cpu_name():
    return host_description()["cpu"]


def host_cpu_features():
    """The host's feature string, e.g. '+avx2,+fma,-avx512f,...' (LLVM's spelling)."""
    return host_description()["features"]


def host_has_feature(name):
    """True when the host CPU has feature `name` ('avx512f', 'avx2', 'fma')."""
    return f"+{name}" in host_cpu_features().split(",")


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


def host_codegen_features():
    """The feature string ember generates code with: the host's, plus '-prefer-256-bit' where
    the host has AVX-512.

    LLVM tunes Intel's AVX-512 cores (skylake-avx512, icelake-server, sapphirerapids, ...) with
    prefer-256-bit, so its loop and SLP vectorisers emit 256-bit code although zmm registers
    exist (occasional 512-bit instructions cost those cores clock speed). ember's sgemm and
    convolutions compute with zmm there anyway (`host_vector_lanes`), and its vectorised
    elementwise loops (exp, log, erf, tanh, ...) run 1.2-2x faster at 512 bits on an Ice Lake
    Xeon, so the vectorisers are given the full `host_vector_bits()`."""
    features = host_cpu_features()
    if host_vector_bits() == 512:
        features += ",-prefer-256-bit"
    return features


def new_host_target_machine(opt=3, reloc="pic", codemodel="jitdefault"):
    """A fresh llvmlite TargetMachine for this CPU (its name and all its features).

    An MCJIT execution engine takes ownership of the target machine it is given and frees
    it with itself, so give `llvm.create_mcjit_compiler` a new one from here, never the
    shared `host_target_machine()`. Position-independent code by default, so the same
    machine code serves MCJIT and shared libraries (ember.export).
    """
    llvm = llvm_binding()
    target = llvm.Target.from_triple(host_triple())
    return target.create_target_machine(cpu=host_cpu_name(), features=host_codegen_features(),
                                        opt=opt, reloc=reloc, codemodel=codemodel)


def host_target_machine(opt=3, reloc="pic", codemodel="jitdefault"):
    """The shared TargetMachine for optimising and emitting objects/assembly (cached per
    machine and argument set). Not for execution engines: see `new_host_target_machine`."""
    return _shared_target_machine(host_cpu_name(), host_codegen_features(), opt, reloc, codemodel)


@functools.lru_cache(maxsize=None)
def _shared_target_machine(cpu, features, opt, reloc, codemodel):
    return new_host_target_machine(opt, reloc, codemodel)


def host_data_layout():
    return str(host_target_machine().target_data)


def target_key():
    """A string naming everything about the target that changes generated code (cache keys)."""
    description = host_description()
    return "|".join([description["triple"], description["cpu"], host_codegen_features(),
                     f"llvmlite-{description['llvmlite']}"])


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
    return run_pipeline(module_ref, host_target_machine(opt), opt, unrolling=opt >= 2, vectorize=opt >= 2)
