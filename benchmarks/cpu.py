"""ember's CPU backend against numpy (and PyTorch when installed), side by side in one process.

Sections (--section NAME, repeatable; all by default):
  fused    relu(x*0.5+1)*sigmoid(x) over 16M floats as effective GB/s (8 bytes/element):
           ember.compile(backend="llvm"), numpy, a hand-written LLVM kernel built from
           compiler/llvm_math (what generated code can reach), and measured copy/triad bandwidth
  sgemm    ember_sgemm vs numpy's BLAS at n=256 and 1024 (and LeNet/MLP shapes), 1 and 2 threads
  seednet  the seed Net (LeNet): inference latency at batch 1, throughput at batch 64, training
           step at batch 64 (SGD momentum); compiled vs eager ember vs PyTorch
  mlp      MLP 784-512-512-10 training step at batch 128 (and a hand-written numpy step)
  compile  cold compile of the seed Net (first call in a new process, empty EMBER_CACHE_DIR,
           import not counted) and warm (cache filled, new process)
  dynamic  the seed Net training step at batches 37 and 64 through one dynamic program (batch
           dim symbolic) against the static program of each size, the small GPT's step at
           length 64 likewise, and a whole digits training run (examples/train_digits.py:
           OneCycleLR, a partial last batch) compiled vs eager
Every figure is a median over rounds; ratios compare figures of the same run.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, when set, are removed for this process (it re-executes
itself before numpy loads) so numpy's BLAS runs its own kernels; the header says which.

    python3 benchmarks/cpu.py [--quick] [--section NAME ...]
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SCRUBBED_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
SECTIONS = ("fused", "sgemm", "seednet", "mlp", "compile", "dynamic")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchmark_models import mlp, seed_net_class  # noqa: E402


def scrub_blas_environment():
    """Drop OPENBLAS_CORETYPE/L2_SIZE before numpy loads (re-exec if it already did)."""
    found = {name: os.environ[name] for name in SCRUBBED_VARIABLES if name in os.environ}
    if not found:
        return os.environ.get("EMBER_BENCH_SCRUBBED", "")
    for name in found:
        del os.environ[name]
    os.environ["EMBER_BENCH_SCRUBBED"] = ", ".join(f"{k}={v}" for k, v in found.items())
    os.execv(sys.executable, [sys.executable] + sys.argv)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds (a smoke test)")
    parser.add_argument("--section", action="append", choices=SECTIONS, help="run only this section")
    parser.add_argument("--in-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch-table", help=argparse.SUPPRESS)
    return parser.parse_args()


# ----------------------------------------------------------------------------- measuring

def compare(candidates, rounds, number=1):
    """{name: fn} -> ({name: median seconds per call}, {name: error}). Each candidate runs its
    rounds as one block after a warm-up call (first calls compile and fault pages in; the
    warm-up also absorbs the previous candidate's thread pool still spinning: interleaving
    libgomp and OpenBLAS calls round by round makes both pools fight over the 2 cores). A
    candidate that raises is reported as unavailable with its error."""
    times, failures = {}, {}
    for name, fn in candidates.items():
        try:
            fn()
            fn()
        except Exception as error:  # noqa: BLE001 - any failure is reported, not fatal
            failures[name] = f"{type(error).__name__}: {error}"
            continue
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - start) / number)
        times[name] = statistics.median(samples)
    return times, failures


# shared/PERF.md: peers on this kind of machine (2 vCPU Zen 4), 2026-11-26; shown when torch is absent
PERF_REFERENCE = {
    "fused": "torch.compile 5.5, jax 3.8, numpy 1.9-3.9, torch eager 1.2 GB/s; bandwidth ~31",
    "infer1": "jax.jit 172 us, torch eager 205 us, torch.compile 228 us, tinygrad 369 us",
    "infer64": "torch.compile 48.2k, torch eager 26.2k, tinygrad 10.4k, jax 9.2k img/s",
    "train64": "torch eager 5.1 ms, torch.compile 7.4, jax 15.1, tinygrad 28",
    "mlp": "jax 3.4 ms, torch eager 3.5, torch.compile 3.8, tinygrad 27",
}


def print_table(title, rows, unit, baseline=None, reference=None):
    """rows: [(name, value or None, note)]; prints value and ratio to `baseline`'s value."""
    print(f"\n{title}")
    if reference:
        print(f"  (shared/PERF.md, other machine load: {PERF_REFERENCE[reference]})")
    base = dict((name, value) for name, value, _ in rows).get(baseline)
    for name, value, note in rows:
        if value is None:
            print(f"  {name:<42} unavailable: {note}")
            continue
        ratio = f"  x{value / base:5.2f} vs {baseline}" if base and name != baseline else ""
        print(f"  {name:<42} {value:10.2f} {unit}{ratio}{('  ' + note) if note else ''}")


def llvm_backend_problem(ember):
    """None when ember.compile(backend="llvm") is available, else why not."""
    try:
        from ember.compiler import get_backend
        get_backend("llvm")
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"
    return None


def torch_version():
    """The installed PyTorch's version, or None; without importing it: PyTorch's candidates run in
    processes of their own (`torch_times`), so its OpenMP pool and ember's libgomp and numpy's
    OpenBLAS never wait for each other's spinning threads in one process."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def torch_times(table, quick):
    """({name: median seconds}, {name: error}) of PyTorch's candidates for one table, measured
    in a new process that imports only numpy, ember (for the weights and inputs) and torch,
    with torch's default threads (all CPUs, as ember's compiled programs use)."""
    command = [sys.executable, os.path.abspath(__file__), "--torch-table", table] + (["--quick"] if quick else [])
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired as error:
        return {}, {"torch eager": f"torch's process failed: {error}"}
    try:
        result = json.loads(run.stdout.strip().splitlines()[-1])
        return result["times"], result["failures"]
    except (ValueError, IndexError, KeyError):
        reason = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return {}, {"torch eager": f"torch's process failed: {reason}"}


def add_torch_times(table, quick, times, failures):
    """PyTorch's candidates of a table merged into `times`/`failures`; returns their names in
    table order (just "torch", failed as not installed, without PyTorch)."""
    if not torch_version():
        failures["torch"] = "PyTorch is not installed (shared/PERF.md has its figures for this machine)"
        return ["torch"]
    torch_seconds, torch_failures = torch_times(table, quick)
    times.update(torch_seconds)
    failures.update(torch_failures)
    return [name for name in ("torch eager", "torch.compile") if name in torch_seconds or name in torch_failures]


# ----------------------------------------------------------------------------- (a) fused chain

def jit_stream_kernels(np):
    """Hand-written LLVM loops: the fused chain (llvm_math's sigmoid) and a triad, JIT-compiled."""
    import ctypes
    from llvmlite import ir
    from ember.compiler.cpu import host as llvm_target
    from ember.compiler.llvm import math as llvm_math
    llvm = llvm_target.llvm_binding()
    module = llvm_target.new_module("stream_kernels")
    f32, i64 = ir.FloatType(), ir.IntType(64)

    def loop(name, arity, body):
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [f32.as_pointer()] * arity + [i64]), name=name)
        for argument in fn.args[:arity]:
            argument.add_attribute("noalias")
        entry, block, done = (fn.append_basic_block(label) for label in ("entry", "body", "done"))
        b = ir.IRBuilder(entry)
        b.cbranch(b.icmp_signed(">", fn.args[arity], i64(0)), block, done)
        b.position_at_end(block)
        index = b.phi(i64)
        index.add_incoming(i64(0), entry)
        values = [b.load(b.gep(pointer, [index])) for pointer in fn.args[1:arity]]
        b.store(body(b, *values), b.gep(fn.args[0], [index]))
        following = b.add(index, i64(1))
        index.add_incoming(following, block)
        b.cbranch(b.icmp_signed("<", following, fn.args[arity]), block, done)
        b.position_at_end(done)
        b.ret_void()

    def fused(b, x):
        affine = b.fadd(b.fmul(x, f32(0.5)), f32(1.0))
        relu = b.select(b.fcmp_ordered(">", affine, f32(0.0)), affine, f32(0.0))
        return b.fmul(relu, llvm_math.emit_sigmoid(b, x))

    loop("fused", 2, fused)
    loop("triad", 3, lambda b, x, y: b.fadd(x, b.fmul(y, f32(3.0))))
    parsed = llvm.parse_assembly(str(module))
    llvm_target.optimize_module(parsed)
    engine = llvm.create_mcjit_compiler(parsed, llvm_target.new_host_target_machine())
    engine.finalize_object()
    signature = {2: ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64),
                 3: ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)}
    kernels = {"fused": signature[2](engine.get_function_address("fused")),
               "triad": signature[3](engine.get_function_address("triad"))}
    kernels["engine"] = engine  # keeps the code alive
    return kernels


def fused_input(np, quick):
    return np.random.default_rng(0).standard_normal((1 << 20) if quick else (16 << 20)).astype(np.float32)


def fused_rounds(quick):
    return 3 if quick else 9


def section_fused(np, ember, quick):
    x = fused_input(np, quick)
    n, rounds = x.size, fused_rounds(quick)
    out, other = np.empty_like(x), np.empty_like(x)
    kernels = jit_stream_kernels(np)
    candidates = {
        "copy (np.copyto, reused output)": lambda: np.copyto(out, x),
        "triad a=b+3c (LLVM loop, reused output)": lambda: kernels["triad"](out.ctypes.data, x.ctypes.data,
                                                                             other.ctypes.data, n),
        "numpy": lambda: np.maximum(x * 0.5 + 1, 0) * (1 / (1 + np.exp(-x))),
        "LLVM kernel with llvm_math (reused output)": lambda: kernels["fused"](out.ctypes.data, x.ctypes.data, n),
    }
    bytes_moved = {"copy (np.copyto, reused output)": 8, "triad a=b+3c (LLVM loop, reused output)": 12}

    def chain(t):
        return ember.relu(t * 0.5 + 1) * ember.sigmoid(t)

    problem = llvm_backend_problem(ember)
    x_tensor = ember.from_numpy(x)
    if problem is None:
        compiled = ember.compile(chain, backend="llvm")
        candidates["ember.compile(backend='llvm')"] = lambda: compiled(x_tensor)
    candidates["ember eager"] = lambda: chain(x_tensor)
    times, failures = compare(candidates, rounds)
    names = list(candidates) + add_torch_times("fused", quick, times, failures)
    rows = [(name, bytes_moved.get(name, 8) * n / times[name] / 1e9 if name in times else None,
             failures.get(name, "")) for name in names if name != "torch"]
    if problem is not None:
        rows.append(("ember.compile(backend='llvm')", None, problem))
    print_table(f"(a) relu(x*0.5+1)*sigmoid(x), {n / 2**20:.0f}M floats, effective GB/s "
                "(copy: 8, triad: 12 bytes/element)", rows, "GB/s", baseline="numpy",
                reference=None if torch_version() else "fused")


# ----------------------------------------------------------------------------- (b) sgemm

def build_sgemm():
    import ctypes
    from ember.compiler.cpu import host as llvm_target, sgemm as llvm_matmul
    llvm = llvm_target.llvm_binding()
    module = llvm_target.new_module("benchmark_sgemm")
    llvm_matmul.define_sgemm(module)
    parsed = llvm.parse_assembly(str(module))
    llvm_target.optimize_module(parsed)
    engine = llvm.create_mcjit_compiler(parsed, llvm_target.new_host_target_machine())
    engine.finalize_object()
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    function = ctypes.CFUNCTYPE(None, i64, i64, i64, p, i64, i64, p, i64, i64, p, i64, ctypes.c_float,
                                ctypes.c_int32)(engine.get_function_address(llvm_matmul.SGEMM_THREADS_NAME))

    def bind(a, b, c, threads):
        (m, k), n = a.shape, b.shape[1]
        arguments = (m, n, k, a.ctypes.data, a.strides[0] // 4, a.strides[1] // 4, b.ctypes.data,
                     b.strides[0] // 4, b.strides[1] // 4, c.ctypes.data, c.strides[0] // 4, 0.0, threads)
        return lambda: function(*arguments)

    bind.engine = engine
    return bind, llvm_matmul.host_geometry()


def blas_description():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed: BLAS unknown"
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return "; ".join(f"{p['internal_api']} {p.get('version')} ({p.get('architecture')} kernels)" for p in pools) \
        or "no BLAS found"


def blas_threads(threads):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(threads, user_api="blas")


def section_sgemm(np, ember, quick):
    bind, geometry = build_sgemm()
    sizes = [(128, 128, 128), (256, 256, 256)] if quick else [(256, 256, 256), (1024, 1024, 1024)]
    shapes = sizes + [(64, 120, 400), (128, 512, 784)]  # LeNet fc1 at batch 64, MLP layer 1 at batch 128
    rng = np.random.default_rng(0)
    print(f"\n(b) sgemm GFLOP/s: ember {geometry.mr}x{geometry.nr} microkernel (MC={geometry.mc}, "
          f"KC={geometry.kc}, NC={geometry.nc}) vs numpy: {blas_description()}")
    for threads in (1, 2):
        limit = blas_threads(threads)
        if limit is None:
            print("  threadpoolctl missing: numpy's BLAS threads are not limited")
        for m, n, k in shapes if threads == 1 else sizes:
            a = rng.standard_normal((m, k)).astype(np.float32)
            b = rng.standard_normal((k, n)).astype(np.float32)
            c = np.empty((m, n), np.float32)
            flops = 2.0 * m * n * k
            rounds = 5 if flops > 1e9 else 30
            number = max(1, int(2e7 / flops))
            times, _ = compare({"ember": bind(a, b, c, threads), "numpy": lambda: np.matmul(a, b, out=c)},
                               rounds if not quick else 3, number)
            ember_rate, numpy_rate = flops / times["ember"] / 1e9, flops / times["numpy"] / 1e9
            print(f"  {threads} thread{'s' if threads > 1 else ' '} {m:>5}x{k}@{k}x{n:<5} ember {ember_rate:7.1f}  "
                  f"numpy {numpy_rate:7.1f}  ember/numpy x{ember_rate / numpy_rate:4.2f}")
        if limit is not None:
            limit.unregister()


# ----------------------------------------------------------------------------- (c, d) models

def training_step(lib, net):
    optimizer = lib.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        optimizer.zero_grad()
        loss = lib.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def model_candidates(np, ember, make, inputs, targets, mode):
    """{name: fn} for eager and compiled ember on the same weights and data."""
    candidates, problems = {}, {}
    problem = llvm_backend_problem(ember)
    ember.manual_seed(0)
    net = make(ember)
    x, y = ember.from_numpy(inputs), ember.from_numpy(targets)
    if mode == "infer":
        net.eval()
        eager = lambda: _no_grad_call(ember, net, x)  # noqa: E731
        candidates["ember eager"] = eager
        if problem is None:
            compiled_net = ember.compile(net, backend="llvm")  # shares net's weights
            candidates["ember.compile(backend='llvm')"] = lambda: _no_grad_call(ember, compiled_net, x)
    else:
        candidates["ember eager"] = lambda step=training_step(ember, net): step(x, y)
        if problem is None:
            twin = make(ember)
            twin.load_state_dict(net.state_dict())
            compiled_step = ember.compile(training_step(ember, twin), backend="llvm")
            candidates["ember.compile(backend='llvm')"] = lambda: compiled_step(x, y)
    if problem is not None:
        problems["ember.compile(backend='llvm')"] = problem
    return candidates, problems


def torch_model_candidates(np, ember, torch, make, inputs, targets, mode):
    """{name: fn} for PyTorch eager (and torch.compile for inference) with ember's initial weights."""
    ember.manual_seed(0)
    weights = {name: value.detach().numpy().copy() for name, value in make(ember).state_dict().items()}
    torch_net = make(torch)
    torch_net.load_state_dict({name: torch.from_numpy(value) for name, value in weights.items()})
    tx, ty = torch.from_numpy(inputs), torch.from_numpy(targets)
    if mode == "train":
        return {"torch eager": lambda step=training_step(torch, torch_net): step(tx, ty)}
    torch_net.eval()
    compiled_torch = torch.compile(torch_net)
    return {"torch eager": lambda: _no_grad_call(torch, torch_net, tx),
            "torch.compile": lambda: _no_grad_call(torch, compiled_torch, tx)}


def _no_grad_call(lib, net, x):
    with lib.no_grad():
        return net(x)


def model_table(np, table, quick):
    """(title, make, inputs, targets, mode, rounds, images per call or None, PERF.md key) of a
    model table: the data comes from fixed seeds, so every process builds the same."""
    rounds = 5 if quick else 21
    if table == "mlp":
        rng = np.random.default_rng(1)
        inputs = rng.standard_normal((128, 784)).astype(np.float32)
        return ("(d) MLP 784-512-512-10 training step, batch 128", mlp, inputs, rng.integers(0, 10, 128), "train",
                rounds, None, "mlp")
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    batch = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    targets = rng.integers(0, 10, 64)
    make = lambda lib: seed_net_class(lib)()  # noqa: E731
    return {"infer1": ("(c) seed Net inference latency, batch 1", make, one, targets[:1], "infer", rounds * 5, None,
                       "infer1"),
            "infer64": ("(c) seed Net inference throughput, batch 64", make, batch, targets, "infer", rounds, 64,
                        "infer64"),
            "train64": ("(c) seed Net training step, batch 64 (SGD momentum)", make, batch, targets, "train", rounds,
                        None, "train64")}[table]


def run_model_table(np, ember, table, quick, extra=None):
    title, make, inputs, targets, mode, rounds, per_item, reference = model_table(np, table, quick)
    candidates, problems = model_candidates(np, ember, make, inputs, targets, mode)
    candidates.update(extra or {})
    times, failures = compare(candidates, rounds)
    failures.update(problems)
    names = list(candidates) + [p for p in problems if p not in candidates]
    names += add_torch_times(table, quick, times, failures)
    if per_item:
        rows = [(name, per_item / times[name] if name in times else None, failures.get(name, "")) for name in names]
        print_table(title, rows, "img/s", baseline="ember eager", reference=None if torch_version() else reference)
    else:
        rows = [(name, times[name] * 1e3 if name in times else None, failures.get(name, "")) for name in names]
        print_table(title, rows, "ms", baseline="ember eager", reference=None if torch_version() else reference)


def section_seednet(np, ember, quick):
    run_model_table(np, ember, "infer1", quick)
    run_model_table(np, ember, "infer64", quick)
    import numpy_lenet
    ember.manual_seed(0)
    weights = {name: value.detach().numpy().copy() for name, value in seed_net_class(ember)().state_dict().items()}
    by_hand = numpy_lenet.NumpyLeNet(weights, lr=0.01, momentum=0.9)
    _, _, batch, targets, *_ = model_table(np, "train64", quick)
    run_model_table(np, ember, "train64", quick,
                    extra={"numpy by hand (numpy_lenet.py)": lambda: by_hand.train_step(batch, targets)})


def section_mlp(np, ember, quick):
    import numpy_mlp
    ember.manual_seed(0)
    by_hand = numpy_mlp.NumpyMLP(mlp(ember).state_dict(), lr=0.01, momentum=0.9)
    _, _, inputs, targets, *_ = model_table(np, "mlp", quick)
    run_model_table(np, ember, "mlp", quick,
                    extra={"numpy by hand (numpy_mlp.py)": lambda: by_hand.train_step(inputs, targets)})


def measure_torch_table(np, ember, table, quick):
    """The --torch-table child: PyTorch's candidates of one table, as JSON on the last line."""
    import torch
    if table == "fused":
        x_torch = torch.from_numpy(fused_input(np, quick))
        compiled_torch = torch.compile(lambda t: torch.relu(t * 0.5 + 1) * torch.sigmoid(t))
        candidates = {"torch eager": lambda: torch.relu(x_torch * 0.5 + 1) * torch.sigmoid(x_torch),
                      "torch.compile": lambda: compiled_torch(x_torch)}
        rounds = fused_rounds(quick)
    else:
        _, make, inputs, targets, mode, rounds, _, _ = model_table(np, table, quick)
        candidates = torch_model_candidates(np, ember, torch, make, inputs, targets, mode)
    times, failures = compare(candidates, rounds)
    print(json.dumps({"times": times, "failures": failures}))


# ----------------------------------------------------------------------------- (e) compile time

COMPILE_PROBE = r"""
import time
process_start = time.perf_counter()
import json, sys
sys.path.insert(0, {here!r})
import numpy as np
import ember
imported = time.perf_counter() - process_start
import importlib, networkx  # ember loads these lazily, at the first compile: import time, not compile time
for name in ("ember.frontend.jit", "ember.passes.pipeline", "ember.passes.simplify", "ember.passes.fusion",
             "ember.passes.memory", "ember.passes.autodiff", "ember.compiler.driver", "ember.compiler.lowering",
             "ember.compiler.cpu.target", "ember.runtime.cpu_program"):
    try:
        importlib.import_module(name)
    except ImportError:  # (an older layout)
        pass
from benchmark_models import seed_net_class
from cpu import llvm_backend_problem
problem = llvm_backend_problem(ember)
if problem:
    print(json.dumps({{"unavailable": problem}}))
    sys.exit(0)
net = seed_net_class(ember)().eval()
x = ember.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
lazy_imports = time.perf_counter() - process_start - imported
compiled = ember.compile(net, backend="llvm")
start = time.perf_counter()
with ember.no_grad():
    compiled(x)
first = time.perf_counter() - start
with_imports = imported + lazy_imports + first
start = time.perf_counter()
with ember.no_grad():
    compiled(x)
second = time.perf_counter() - start
stats = getattr(getattr(compiled._compiled, "backend", None), "stats", None)
stages = dict(getattr(stats, "stage_seconds", {{}}))
print(json.dumps({{"first": first, "second": second, "stages": stages, "llvmlite": "llvmlite" in sys.modules,
                  "with_imports": with_imports}}))
"""


def _compile_probe(cache):
    environment = dict(os.environ, EMBER_CACHE_DIR=cache)
    probe = subprocess.run([sys.executable, "-c", COMPILE_PROBE.format(here=HERE)], env=environment,
                           capture_output=True, text=True, timeout=600)
    try:
        return json.loads(probe.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"unavailable": f"probe failed: {probe.stderr.strip().splitlines()[-1:]}"}


def byte_compile_ember(ember):
    """Write .pyc files for ember's modules, as a regular (non-editable) install does when it
    installs them: the probes then time compiling the model, not Python compiling ember's own
    source (which every process would redo under PYTHONDONTWRITEBYTECODE). False if it could not."""
    import compileall
    import importlib
    roots = {os.path.dirname(importlib.import_module(name).__file__) for name in
             ("ember", "ember.frontend", "ember.passes", "ember.compiler", "ember.runtime")}
    return all(compileall.compile_dir(root, quiet=2) for root in sorted(roots))


def section_compile(np, ember, quick):
    """Cold: each run a new process with its own empty cache; warm: new processes on the cache
    the first cold run filled. Medians, the spread, and the stages of the median run."""
    runs = 1 if quick else 5
    byte_compiled = byte_compile_ember(ember)
    caches = [tempfile.mkdtemp(prefix="ember-bench-cache-") for _ in range(runs)]
    try:
        results = {"cold (empty cache)": [_compile_probe(cache) for cache in caches]}
        results["warm (cache filled)"] = [_compile_probe(caches[0]) for _ in range(runs)]
    finally:
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for label, runs_of_label in results.items():
        failed = [r["unavailable"] for r in runs_of_label if "unavailable" in r]
        if failed:
            rows.append((f"seed Net first call, {label}", None, failed[0]))
            continue
        ordered = sorted(runs_of_label, key=lambda r: r["first"])
        median = ordered[len(ordered) // 2]
        spread = f"{ordered[0]['first'] * 1e3:.0f}-{ordered[-1]['first'] * 1e3:.0f} ms over {len(ordered)} runs, " \
            if len(ordered) > 1 else ""
        rows.append((f"seed Net first call, {label}", median["first"] * 1e3,
                     f"({spread}next call {statistics.median(r['second'] for r in runs_of_label) * 1e6:.0f} us; "
                     f"with import {statistics.median(r['with_imports'] for r in runs_of_label) * 1e3:.0f} ms; "
                     f"llvmlite {'imported' if median['llvmlite'] else 'not imported'})"))
    print_table("(e) seed Net compile time, new process, import not counted (jax 170-260 ms, "
                "torch.compile 11.1 s per shared/PERF.md)", rows, "ms")
    if byte_compiled:
        print("  ember's modules were byte-compiled first, as a regular install does")
    elif os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("  PYTHONDONTWRITEBYTECODE is set and ember's modules could not be byte-compiled: modules compile "
              "from source in every process (tens of ms on a first call)")
    for label, runs_of_label in results.items():
        ordered = sorted((r for r in runs_of_label if "stages" in r), key=lambda r: r["first"])
        if ordered and ordered[len(ordered) // 2]["stages"]:
            median = ordered[len(ordered) // 2]
            stages = median["stages"]
            rest = median["first"] - sum(stages.values())
            print(f"  stages of the median {label.split()[0]} run: "
                  + ", ".join(f"{name} {seconds * 1e3:.1f}" for name, seconds in stages.items())
                  + f", tracing and the rest {rest * 1e3:.1f} ms")


def section_dynamic(np, ember, quick):
    rounds = 5 if quick else 21
    rng = np.random.default_rng(0)
    data = {batch: (ember.from_numpy(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)),
                    ember.from_numpy(rng.integers(0, 10, batch))) for batch in (37, 64)}
    candidates, problems = {}, {}
    for batch in (37, 64):
        ember.manual_seed(0)
        static = ember.compile(training_step(ember, seed_net_class(ember)()), dynamic=False)
        candidates[f"static program, batch {batch}"] = lambda step=static, xy=data[batch]: step(*xy)
    ember.manual_seed(0)
    dynamic = ember.compile(training_step(ember, seed_net_class(ember)()))
    for batch in (37, 37, 64):  # (the first step creates the momentum buffers; 64 makes the batch dynamic)
        dynamic(*data[batch])
    if dynamic.report.dynamic_dims != [f"dim 0 of {name}: changed 37 -> 64 (automatic dynamic)" for name in "xy"]:
        problems["dynamic program"] = f"the batch did not become dynamic: {dynamic.report.dynamic_dims}"
    else:
        for batch in (37, 64):
            candidates[f"dynamic program, batch {batch}"] = lambda xy=data[batch]: dynamic(*xy)
    times, failures = compare(candidates, rounds)
    failures.update(problems)
    for batch in (37, 64):
        names = [f"static program, batch {batch}", f"dynamic program, batch {batch}"]
        rows = [(name, times[name] * 1e3 if name in times else None, failures.get(name, failures.get(
            "dynamic program", ""))) for name in names]
        print_table(f"(f) seed Net training step, batch {batch} (SGD momentum): one dynamic program for every "
                    f"batch vs this size's static one (target <= x1.15)", rows, "ms", baseline=names[0])
    traces = len(dynamic.report.traces)
    print(f"  dynamic: {traces} traces, {dynamic.backend.stats.compiles} programs compiled for "
          f"{dynamic.report.calls} calls (static 37 twice: the first step creates state; then dynamic)")
    gpt_dynamic_row(np, ember, rounds)
    epochs = 1 if quick else 12
    script = os.path.join(HERE, "..", "examples", "train_digits.py")
    rows = []
    for name, flags in (("ember eager", []), ("ember.compile (dynamic batch), cold", ["--compile"])):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as cache:  # (an empty compile cache: the compiles are counted)
            result = subprocess.run([sys.executable, script, "--epochs", str(epochs), "--min-accuracy", "0"] + flags,
                                    capture_output=True, text=True, env=dict(os.environ, EMBER_CACHE_DIR=cache))
        wall = time.perf_counter() - start
        lines = [line for line in result.stdout.splitlines() if line.startswith(("test accuracy", "compiled"))]
        if result.returncode or not lines:
            rows.append((name, None, (result.stderr or result.stdout)[-300:]))
            continue
        trained = float(lines[0].split(" in ")[-1].rstrip(" s"))
        rows.append((name, trained, f"(whole process {wall:.1f} s; {'; '.join(lines)})"))
    print_table(f"(f) digits training, {epochs} epochs of 45 batches (OneCycleLR, partial last batch), "
                f"training loop time (compiles included)", rows, "s", baseline="ember eager")


def gpt_dynamic_row(np, ember, rounds):
    """The small GPT's training step (transformer.py's) at sequence length 64: one program for
    every length (traced at 48 and 64) against the static program of length 64."""
    from transformer import batch, build
    x, y = batch(ember, "small")
    shorter = (x[:, :48].contiguous(), y[:, :48].contiguous())
    static = ember.compile(build(ember, "small")[2], dynamic=False)
    dynamic = ember.compile(build(ember, "small")[2])
    for xy in (shorter, shorter, (x, y)):  # (state created at 48, then 64 makes the length dynamic)
        dynamic(*xy)
    times, failures = compare({"static program, length 64": lambda: static(x, y),
                               "dynamic program, length 64": lambda: dynamic(x, y)}, max(rounds // 3, 3))
    if not any("changed 48 -> 64" in line for line in dynamic.report.dynamic_dims):
        failures["dynamic program, length 64"] = f"the length did not become dynamic: {dynamic.report.dynamic_dims}"
        times.pop("dynamic program, length 64", None)
    rows = [(name, times[name] * 1e3 if name in times else None, failures.get(name, ""))
            for name in ("static program, length 64", "dynamic program, length 64")]
    print_table("(f) small GPT training step (AdamW, clipping), batch 8: one program for every sequence length vs "
                "the static one", rows, "ms", baseline="static program, length 64")


def main():
    scrubbed = scrub_blas_environment()
    args = parse_args()
    import numpy as np
    import ember
    if args.torch_table:
        measure_torch_table(np, ember, args.torch_table, args.quick)
        return
    if not args.in_child:
        print(f"ember CPU benchmark: {os.cpu_count()} CPUs, numpy {np.__version__}, BLAS: {blas_description()}")
        print(f"  removed for this process: {scrubbed}" if scrubbed else
              "  OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE not set")
    if args.in_child:
        print(f"\n[{args.section[0]}: 1-minute load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, "
              "earlier sections included; other busy processes spoil multi-threaded figures most]", end="")
        globals()[f"section_{args.section[0]}"](np, ember, args.quick)
        return
    print(f"  PyTorch: {'torch ' + torch_version() + ' (each table in a process of its own)' if torch_version() else 'not installed'}; "
          f"llvm backend: {llvm_backend_problem(ember) or 'available'}")
    for name in args.section or SECTIONS:
        # each section in its own process: a crash in compiled code loses one section, not the run
        command = [sys.executable, os.path.abspath(__file__), "--in-child", "--section", name]
        status = subprocess.run(command + (["--quick"] if args.quick else [])).returncode
        if status:
            reason = f"signal {-status}" if status < 0 else f"exit status {status}"
            print(f"\n({name}) unavailable: the section's process ended with {reason}")


if __name__ == "__main__":
    main()
