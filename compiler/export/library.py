"""Building an exported library: traced graphs -> one shared library, its C header, the weights,
a manifest and a README, in one directory (ember.export_library's back end).

Each traced graph (one per compiled batch size) goes through the driver's passes and lowering
and the CPU target's code generation like any program, with its entry renamed
`NAME_program_bN` and everything else internal; the C API's implementation (wrapper.py, LLVM
IR), the weights (linked in through `ld -r -b binary`, or a safetensors file: weights_file.py)
and the support-library pieces the kernels call are linked into NAME.so by the system's C
compiler, or without one by its linker (ld) alone; only the API's symbols are exported. The
directory is built beside its final place and renamed into it, so nobody sees a half-written
export.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import numpy as np

from ember.ir.json_format import decode_value
from ..driver import describe, host_only_ops, lower, plan
from ..cpu import host, linker, support_library
from ..cpu.program import ENTRY_NAME
from ..cpu.target import CpuTarget, thread_runtime_loaded
from ..stage_timer import StageTimer
from . import c_api, weights_file
from .wrapper import CPUID_BITS, wrapper_module

C_KEYWORDS = {"auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum", "extern",
              "float", "for", "goto", "if", "inline", "int", "long", "register", "restrict", "return", "short",
              "signed", "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile",
              "while", "model", "batch", "inputs", "outputs"}


class ExportError(RuntimeError):
    """The model cannot be exported as asked (the message says why and what to do)."""


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: tuple  # None for the batch dim of a dynamic export
    row_bytes: int  # one batch row (dynamic), else the whole tensor


@dataclass
class ProgramSpec:
    batch: int
    entry: str
    arena_bytes: int
    externals: list  # (kind, index, weights offset, bytes): kind input/output/weight/constant
    results: list  # per output: (kind, index, weights offset)
    failures: list  # (exception name, message) per error status
    kernels: list = field(default_factory=list)
    ir: str = ""
    memory_plan: str = ""


@dataclass
class ExportSpec:
    name: str
    version: str
    inputs: list
    outputs: list
    programs: list
    weights: object  # weights_file.WeightsLayout
    weights_file: str  # the file name next to the library, or "" when embedded
    dynamic: bool
    batch: int
    features: list
    cpu: str
    threads: int
    parallel: bool  # the code runs parallel loops on libgomp's threads
    constants: list  # bytes of every constant buffer (programs refer to them by number)


def c_identifier(text, taken=()):
    """`text` made a C identifier not in `taken` (and no C keyword)."""
    name = re.sub(r"\W", "_", str(text)).strip("_") or "tensor"
    if name[0].isdigit():
        name = "t_" + name
    base, k = name, 2
    while name in taken or name in C_KEYWORDS:
        name, k = f"{base}_{k}", k + 1
    return name


def build_library(name, programs, params, directory, *, dynamic, weights="embed", cpu="host", threads=None,
                  input_names=(), extra_manifest=None):
    """Export `programs` ([(batch size, traced graph)], largest first: one for a static export,
    a ladder of chunk sizes for a dynamic batch) with `params` ({name: ndarray}) into
    `directory`. Returns the paths written."""
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ExportError(f"export: the library name {name!r} must be a C identifier (letters, digits, _)")
    taken = _symbols_taken(name)
    if taken:
        raise ExportError(f"export: the library name {name!r} would define {taken[0]}, which the C library (or "
                          f"another library loaded here) already defines; choose another name (name=...)")
    if weights not in ("embed", "file"):
        raise ExportError(f"export: weights={weights!r}; choose 'embed' (inside the library) or 'file' "
                          f"(a safetensors file beside it)")
    tools = _link_tools()
    with host.compiling_for(cpu):
        target = CpuTarget(threads=threads, parallel=thread_runtime_loaded())
        compiled = [_compile_program(name, batch, graph, target) for batch, graph in programs]
        pieces = [p for p in support_library.PIECES if any(p in c["pieces"] for c in compiled)]
        cache = _cache()
        piece_objects = [support_library.piece_object(p, cache, target.parallel) for p in pieces]
        features = _checked_features(host.host_cpu_features())
        cpu_name = host.host_cpu_name()
        graph = programs[0][1]
        used = [p for p in graph.params if any(p in c["params"] for c in compiled)
                or any(graph.params[p] == node for c in compiled for node in c["lowered"].graph.outputs)]
        layout = weights_file.layout({p: np.ascontiguousarray(params[p], dtype=graph.node(graph.params[p]).dtype)
                                      for p in used}, packed=weights == "file")
        spec = _export_spec(name, programs, compiled, layout, dynamic, weights, features, cpu_name, target,
                            input_names)
    # the API (and its CPU check) for the baseline of the architecture: it must run on any x86-64
    # before the check has refused a CPU that lacks what the programs use
    baseline = "x86-64" if host.this_machine()["triple"].startswith("x86_64") else "host"
    with host.compiling_for(baseline):
        wrapper_object = _wrapper_object(spec, target)
    files = {f"{name}.h": c_api.header(spec).encode(), "example.c": _example_program(spec).encode()}
    if weights == "file":
        files[spec.weights_file] = weights_file.safetensors_bytes(layout)
    files[f"{name}.so"] = _link(name, [wrapper_object] + [c["object"] for c in compiled] + piece_objects,
                                None if weights == "file" else layout.data, target.parallel, tools)
    manifest = _manifest(spec, layout, host.this_machine()["triple"], extra_manifest)
    files["manifest.json"] = json.dumps(manifest, indent=1).encode()
    files["README"] = _readme(spec).encode()
    return write_directory(directory, files)


def _symbols_taken(name):
    """The API symbols of `name` that this process already resolves (libc's timer_create for a
    model named Timer): a C program linking both would call the wrong one."""
    import ctypes
    process = ctypes.CDLL(None)
    return [symbol for symbol in c_api.api_functions(name) if hasattr(process, symbol)]


def _link_tools():
    """("cc", command) with a C compiler, else ("ld", path) with the system linker alone."""
    compiler = linker.c_compiler()
    if compiler is not None:
        return "cc", compiler
    found = shutil.which("ld")
    if found is None:
        raise ExportError("export: no C compiler (cc, gcc or clang; or set CC) and no linker (ld) found to link "
                          "the library; install binutils (ld) or a C compiler")
    return "ld", [found]


def _wrapper_object(spec, target):
    """Object code of the C API's implementation (compiler/export/wrapper.py) for the target CPU."""
    from ..llvm.target import llvm_binding, run_pipeline
    llvm = llvm_binding()
    module_ref = llvm.parse_assembly(wrapper_module(spec, target.triple(), target.data_layout()))
    module_ref.verify()
    run_pipeline(module_ref, target.target_machine(), 2)
    return target.object_code(module_ref)


def _link(name, objects, weights_data, parallel, tools):
    """The bytes of NAME.so: `objects` and, when given, the weights (as the symbol
    _binary_weights_bin_start, through `ld -r -b binary`), exporting only the C API. -Bsymbolic:
    the library's calls bind to its own functions, never to another loaded library's of the
    same name."""
    kind, command = tools
    with tempfile.TemporaryDirectory(prefix="ember-export-") as work:
        paths = []
        for k, code in enumerate(objects):
            paths.append(f"part{k}.o")
            with open(os.path.join(work, paths[-1]), "wb") as f:
                f.write(code)
        ld = command[0] if kind == "ld" else _linker_of(command)
        if weights_data is not None:
            with open(os.path.join(work, "weights.bin"), "wb") as f:
                f.write(weights_data)
            _run([ld, "-r", "-b", "binary", "-o", "weights.o", "weights.bin"], work, "embed the weights")
            objcopy = shutil.which("objcopy") or shutil.which(os.path.join(os.path.dirname(ld), "objcopy"))
            if objcopy:  # read-only and 64-byte aligned (binutils' objcopy comes with its ld; x86 copes without)
                _run([objcopy, "--rename-section", ".data=.rodata,alloc,load,readonly,data,contents",
                      "--set-section-alignment", ".data=64", "weights.o"], work, "align the weights")
            paths.append("weights.o")
        with open(os.path.join(work, "exports.map"), "w") as f:
            f.write(f"{{ global: {'; '.join(c_api.api_functions(name))}; local: *; }};\n")
        if kind == "cc":
            link = [*command, "-shared", "-o", f"{name}.so", *paths, "-Wl,--version-script=exports.map",
                    "-Wl,-Bsymbolic", "-Wl,-z,noexecstack", "-lm"] + (["-lgomp"] if parallel else [])
        else:  # the linker alone: the C library by its file names
            link = [ld, "-shared", "-o", f"{name}.so", *paths, "--version-script=exports.map", "-Bsymbolic",
                    "-z", "noexecstack",
                    "-l:libm.so.6", "-l:libc.so.6"] + (["-l:libgomp.so.1"] if parallel else [])
        _run(link, work, f"link {name}.so")
        with open(os.path.join(work, f"{name}.so"), "rb") as f:
            return f.read()


def _linker_of(compiler):
    """The linker a C compiler drives (`cc -print-prog-name=ld`)."""
    found = subprocess.run([*compiler, "-print-prog-name=ld"], capture_output=True, text=True).stdout.strip()
    return shutil.which(found) or shutil.which("ld") or found


def _run(command, folder, what):
    try:
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as error:
        raise ExportError(f"export: cannot {what}: {' '.join(command[:2])} could not run ({error})") from None
    if result.returncode != 0:
        raise ExportError(f"export: cannot {what}: {' '.join(command)} failed ({result.returncode}):\n"
                          f"{result.stderr.strip()[-3000:]}")


def _cache():
    from ..compile_cache import CompileCache
    return CompileCache()


def _compile_program(name, batch, graph, target):
    """One traced graph compiled to object code with its entry named NAME_program_bBATCH."""
    planned = plan(graph, StageTimer())
    found = host_only_ops(planned.graph)
    if found:
        raise ExportError(f"export: {name} cannot be exported: {'; '.join(found)} "
                          f"{'is' if len(found) == 1 else 'are'} host-only (run by numpy through a callback into "
                          f"Python), and an exported library runs without Python")
    lowered = lower(planned, target)
    module_ref = target.optimize(target.emit(lowered))
    entry = f"{name}_program_b{batch}"
    module_ref.get_function(ENTRY_NAME).name = entry
    description = {**describe(lowered), **target.describe(lowered, None)}
    return {"batch": batch, "entry": entry, "object": target.object_code(module_ref), "lowered": lowered,
            "description": description, "pieces": support_library.pieces_for(lowered.kernels),
            "params": {decode_value(key) for kind, key, _, _ in description["externals"] if kind == "param"}}


def _checked_features(feature_string):
    """The enabled features of an LLVM feature string that the library checks at load (those
    wrapper.CPUID_BITS can read)."""
    return [f[1:] for f in feature_string.split(",") if f.startswith("+") and f[1:] in CPUID_BITS]


def _export_spec(name, programs, compiled, layout, dynamic, weights, features, cpu_name, target, input_names):
    import ember
    graph = programs[0][1]
    taken = set()
    inputs = []
    for k, node_id in enumerate(graph.inputs):
        node = graph.node(node_id)
        label = c_identifier(input_names[k] if k < len(input_names) else node.name or f"input{k}", taken)
        taken.add(label)
        inputs.append(_tensor(label, node, dynamic))
    outputs = []
    for k, node_id in enumerate(graph.outputs):
        label = c_identifier(f"output{k}" if len(graph.outputs) > 1 else "output", taken)
        taken.add(label)
        outputs.append(_tensor(label, graph.node(node_id), dynamic))
    constants = []
    specs = [_program_spec(c, layout, constants) for c in compiled]
    return ExportSpec(name, ember.__version__, inputs, outputs, specs, layout,
                      f"{name}.safetensors" if weights == "file" else "", dynamic, programs[0][0], features,
                      cpu_name, target.threads, target.parallel, constants)


def _tensor(label, node, dynamic):
    itemsize = np.dtype(node.dtype).itemsize
    shape = tuple(node.shape)
    if dynamic:
        return TensorSpec(label, np.dtype(node.dtype).name, (None,) + shape[1:], int(np.prod(shape[1:])) * itemsize)
    return TensorSpec(label, np.dtype(node.dtype).name, shape, int(np.prod(shape)) * itemsize)


def _program_spec(compiled, layout, constants):
    lowered, description = compiled["lowered"], compiled["description"]
    graph = lowered.graph
    inputs = {node: k for k, node in enumerate(graph.inputs)}
    outputs = {}
    for k, node in enumerate(graph.outputs):
        outputs.setdefault(node, k)
    externals = []
    for kind, key, shape, dtype in description["externals"]:
        key, shape = decode_value(key), decode_value(shape)
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if kind == "input":
            externals.append(("input", inputs[key], 0, nbytes))
        elif kind == "param":
            externals.append(("weight", 0, layout.offsets[key], nbytes))
        elif kind == "constant":
            constants.append(c_api.fill_bytes(key, shape, dtype))
            externals.append(("constant", len(constants) - 1, 0, nbytes))
        else:
            externals.append(("output", outputs[key], 0, nbytes))
    results = []
    params_by_node = {node: name for name, node in graph.params.items()}
    for k, node_id in enumerate(graph.outputs):
        node = graph.node(node_id)
        if node.op == "input":
            results.append(("input", inputs[node_id], 0))
        elif node.op == "param":
            results.append(("weight", 0, layout.offsets[params_by_node[node_id]]))
        elif node.op == "constant":
            constants.append(c_api.fill_bytes(node.attrs["value"], node.shape, node.dtype))
            results.append(("constant", len(constants) - 1, 0))
        else:
            results.append(("output", outputs[node_id], 0))
    failures = [tuple(error) for error in description["errors"]]
    return ProgramSpec(compiled["batch"], compiled["entry"], description["arena_bytes"], externals, results,
                       failures, kernels=[k[0] for k in description["kernels"]], ir=str(graph),
                       memory_plan=lowered.plan.describe())


def _manifest(spec, layout, triple, extra):
    def tensor(t):
        return {"name": t.name, "dtype": t.dtype, "shape": ["batch" if d is None else d for d in t.shape]}
    return {
        "name": spec.name, "ember_version": spec.version,
        "library": f"{spec.name}.so", "header": f"{spec.name}.h",
        "inputs": [tensor(t) for t in spec.inputs], "outputs": [tensor(t) for t in spec.outputs],
        "batch": {"dynamic": spec.dynamic, "size": None if spec.dynamic else spec.batch,
                  "chunks": [p.batch for p in spec.programs]},
        "target": {"triple": triple, "cpu": spec.cpu, "features": spec.features, "threads": spec.threads},
        "weights": {"mode": "file" if spec.weights_file else "embed", "file": spec.weights_file or None,
                    "bytes": layout.nbytes, "crc32": f"{layout.crc32:08x}",
                    "tensors": [{"name": n, "dtype": str(a.dtype), "shape": list(a.shape), "offset": layout.offsets[n]}
                                for n, a in layout.arrays.items()]},
        "programs": [{"batch": p.batch, "entry": p.entry, "arena_bytes": p.arena_bytes, "kernels": p.kernels,
                      "ir": p.ir, "memory_plan": p.memory_plan} for p in spec.programs],
        **(extra or {}),
    }


def _example_program(spec):
    """example.c: create, run once on zeros, print the first output value."""
    n = spec.name
    weights = f'"{spec.weights_file}"' if spec.weights_file else "NULL"
    declare = "\n".join(f"    static {c_api.C_TYPES[t.dtype]} {t.name}[{_count(t, 'BATCH')}];"
                        for t in spec.inputs + spec.outputs)
    call = ", ".join(t.name for t in spec.inputs + spec.outputs)
    batch = "3" if spec.dynamic else str(spec.batch)
    return f"""/* example.c: run {n} once on zeros and print its first output value. */
#include <stdio.h>
#include "{n}.h"
#define BATCH {batch}

int main(void) {{
{declare}
    {n}_t *model;
    if ({n}_create({weights}, &model) != {n.upper()}_OK) {{
        fprintf(stderr, "%s\\n", {n}_last_error(NULL));
        return 1;
    }}
    if ({n}_run(model, {call}, BATCH) != {n.upper()}_OK) {{
        fprintf(stderr, "%s\\n", {n}_last_error(model));
        {n}_destroy(model);
        return 1;
    }}
    printf("%g\\n", (double){spec.outputs[0].name}[0]);
    {n}_destroy(model);
    return 0;
}}
"""


def example_command(name, directory="."):
    """The shell command that builds example.c against the library in `directory` and runs it."""
    d = directory.rstrip("/")
    return (f"cc {d}/example.c -I{d} -L{d} -l:{name}.so -Wl,-rpath,'$ORIGIN' -o {d}/example && "
            f"(cd {d} && ./example)") if d != "." else \
        f"cc example.c -L. -l:{name}.so -Wl,-rpath,'$ORIGIN' -o example && ./example"


def _readme(spec):
    n = spec.name
    return f"""{n}: a model exported by ember {spec.version}

Files: {n}.so (the code{'' if spec.weights_file else ' and the weights'}), {n}.h (the C API, documented there),
{f'{spec.weights_file} (the weights, safetensors; the library checks its size and checksum), ' if spec.weights_file else ''}manifest.json (inputs, outputs, batch, target CPU, the IR and memory plan of each program),
example.c (a minimal C program: create, run on zeros, print the first output value).
The library needs libc{', libm and libgomp (threads)' if spec.parallel else ' and libm'}; no Python.
It was compiled for the CPU {spec.cpu}; on a CPU without one of the features listed in
manifest.json, {n}_create refuses with {n.upper()}_ERROR_CPU and a message.

Build and run the example here:

    {example_command(n)}

From Python (numpy only; no model source needed): `ember.load_exported("THIS_DIRECTORY")(inputs...)`.
"""


def _count(tensor, batch):
    dims = [batch if d is None else str(d) for d in tensor.shape] or ["1"]
    return " * ".join(dims)


def write_directory(directory, files):
    """Write {file name: bytes} as the whole of `directory`, replacing what was there at once:
    the files go to a new folder beside it, which is then renamed into place."""
    directory = os.path.abspath(directory)
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.new-", dir=parent)
    try:
        for file_name, data in files.items():
            with open(os.path.join(fresh, file_name), "wb") as f:
                f.write(data)
        os.chmod(fresh, 0o755)
        old = None
        if os.path.exists(directory):
            if not os.path.isdir(directory):
                raise ExportError(f"export: {directory} exists and is not a directory")
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(directory, old)
        os.rename(fresh, directory)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    return [os.path.join(directory, file_name) for file_name in files]
