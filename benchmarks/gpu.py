"""ember's GPU target on a CUDA device, against the device's copy bandwidth and PyTorch on the
same GPU when installed, side by side in one process.

Sections (--section NAME, repeatable; all by default):
  fused    relu(x*0.5+1)*sigmoid(x) over 64M floats as effective GB/s (8 bytes/element): ember's
           kernel, a device-to-device copy (cuMemcpyDtoD: bytes read + written), PyTorch eager
           and torch.compile
  sgemm    x @ w at n=4096 as GFLOP/s: ember's tiled kernel, PyTorch (float32; TF32 off, its default)
  seednet  the seed Net training step at batch 64 (SGD momentum)
  gpt      a GPT-style training step (4 layers, 4 heads, 128 wide, block 64, batch 8, AdamW)
Each ember row gives the kernels' time (CUDA events around the program's launches on data
already on the device) and, for the training steps, the whole call (inputs and parameters
copied in, outputs out: ember keeps no parameters on the device between calls yet).
"compile" is the first compile of each program in this process with an empty cache.
Every figure is a median over rounds; ratios compare figures of the same run.

    python3 benchmarks/gpu.py [--quick] [--section NAME ...] [--json OUT]
    python3 benchmarks/gpu.py --emulated --quick   # the same code on the CPU's grid emulator
                                                  # (a smoke test: its times mean nothing)
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
SECTIONS = ("fused", "sgemm", "seednet", "gpt")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds")
    parser.add_argument("--emulated", action="store_true", help="run on the CPU's grid emulator (a smoke test)")
    parser.add_argument("--section", action="append", choices=SECTIONS, help="run only this section")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args()


class Bench:
    """The device, the ember backend for it and, when usable, torch on the same GPU."""

    def __init__(self, args):
        os.environ.setdefault("EMBER_CACHE_DIR", tempfile.mkdtemp(prefix="ember-gpu-bench-"))
        if args.emulated:
            os.environ["EMBER_EMULATE_CUDA"] = "1"  # ("cuda" tensors on the emulator too)
        import ember
        from ember.compiler import backends
        from ember.runtime.cuda_driver import CudaUnavailable, open_device
        self.ember, self.args = ember, args
        try:
            self.device = open_device(emulated=args.emulated)
        except CudaUnavailable as error:
            sys.exit(f"benchmarks/gpu.py: {error} (--emulated runs the grid emulator instead)")
        self.backend_name = "ptx-emulated" if args.emulated else "ptx"
        self.backend = backends.BACKENDS[self.backend_name]()
        self.rounds = 3 if args.quick or args.emulated else 20
        self.torch = self.torch_cuda() if not args.emulated else None
        self.figures = {"device": self.device.name, "compute_capability": self.device.compute_capability,
                        "backend": self.backend_name}
        print(f"device: {self.device.name} ({self.device.compute_capability}), backend {self.backend_name}, "
              f"torch: {self.torch.__version__ if self.torch else 'not used'}")

    @staticmethod
    def torch_cuda():
        try:
            import torch
        except ImportError:
            return None
        return torch if torch.cuda.is_available() else None

    def size(self, full, quick, emulated):
        return emulated if self.args.emulated else quick if self.args.quick else full

    def kernel_ms(self, runner):
        """Median milliseconds of the program's launches alone."""
        runner.launch()
        self.device.synchronize()
        return statistics.median(self.device.elapsed_ms(runner.launch) for _ in range(self.rounds))

    def call_ms(self, call):
        """Median milliseconds of a whole call (host to host)."""
        times = []
        for _ in range(self.rounds):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    def compiled(self, graph):
        """(runner, seconds of its compile)."""
        start = time.perf_counter()
        runner = self.backend.compile(graph)
        return runner, time.perf_counter() - start

    def torch_ms(self, run):
        torch = self.torch
        run()
        torch.cuda.synchronize()
        times = []
        for _ in range(self.rounds):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        return statistics.median(times)


def report(title, rows, unit, baseline=None):
    """Rows (name, value); with `baseline`, each value's ratio to that row's."""
    print(f"\n{title}")
    base = dict(rows).get(baseline)
    for name, value in rows:
        ratio = f"  x{value / base:.2f} of {baseline}" if base and name != baseline else ""
        print(f"  {name:<34} {value:12.3f} {unit}{ratio}")


def section_fused(bench):
    ember, device = bench.ember, bench.device
    n = bench.size(64 << 20, 4 << 20, 1 << 16)

    def chain(x):
        return ember.relu(x * 0.5 + 1) * ember.sigmoid(x)
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    with ember.no_grad():
        graph = ember.trace(chain, ember.tensor(x))
    runner, seconds = bench.compiled(graph)
    got = runner({graph.inputs[0]: x}, {})[graph.outputs[0]]
    expected = np.maximum(x * 0.5 + 1, 0) * (1 / (1 + np.exp(-x)))
    error = float(np.max(np.abs(got - expected)))
    nbytes = 8 * n
    rows = [("ember fused kernel", nbytes / bench.kernel_ms(runner) / 1e6)]
    source, target = device.allocate(4 * n), device.allocate(4 * n)
    copy = statistics.median(device.elapsed_ms(lambda: device.copy_on_device(target, source, 4 * n))
                             for _ in range(bench.rounds))
    rows.append(("device copy (cuMemcpyDtoD)", nbytes / copy / 1e6))
    device.free(source)
    device.free(target)
    if bench.torch:
        torch = bench.torch
        xt = torch.from_numpy(x).cuda()
        rows.append(("torch eager", nbytes / bench.torch_ms(lambda: torch.relu(xt * 0.5 + 1) * torch.sigmoid(xt)) / 1e6))
        start = time.perf_counter()
        fused = torch.compile(lambda t: torch.relu(t * 0.5 + 1) * torch.sigmoid(t))
        fused(xt)
        torch_compile_seconds = time.perf_counter() - start
        rows.append(("torch.compile", nbytes / bench.torch_ms(lambda: fused(xt)) / 1e6))
        bench.figures["fused_torch_compile_seconds"] = torch_compile_seconds
    report(f"fused chain over {n} floats (max abs error {error:.1e}; compiled in {seconds:.2f} s)", rows, "GB/s",
           baseline="device copy (cuMemcpyDtoD)")
    bench.figures["fused"] = dict(rows, compile_seconds=seconds, max_abs_error=error)


def section_sgemm(bench):
    ember = bench.ember
    n = bench.size(4096, 1024, 128)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype(np.float32), rng.standard_normal((n, n)).astype(np.float32)
    with ember.no_grad():
        graph = ember.trace(lambda x, w: x @ w, ember.tensor(a), ember.tensor(b))
    runner, seconds = bench.compiled(graph)
    got = runner(dict(zip(graph.inputs, (a, b))), {})[graph.outputs[0]]
    error = float(np.max(np.abs(got - a.astype(np.float64) @ b)) / np.sqrt(n))
    flops = 2 * n ** 3
    rows = [("ember tiled sgemm", flops / bench.kernel_ms(runner) / 1e6)]
    for setting, title in (("cublas", "ember through cuBLAS"), ("tf32", "ember TF32 tensor cores")):
        if setting == "cublas" and (bench.args.emulated or bench.device.blas() is None):
            continue
        os.environ["EMBER_GPU_GEMM"] = "cublas" if setting == "cublas" else "tiles"
        ember.backends.cuda.matmul.allow_tf32 = setting == "tf32"
        try:
            with ember.no_grad():
                graph = ember.trace(lambda x, w: x @ w, ember.tensor(a), ember.tensor(b))
            other, _ = bench.compiled(graph)
            other(dict(zip(graph.inputs, (a, b))), {})  # (the first run makes the choice)
            rows.append((title, flops / bench.kernel_ms(other) / 1e6))
        finally:
            del os.environ["EMBER_GPU_GEMM"]
            ember.backends.cuda.matmul.allow_tf32 = False
    if bench.torch:
        torch = bench.torch
        torch.backends.cuda.matmul.allow_tf32 = False
        at, bt = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        rows.append(("torch (cuBLAS, float32)", flops / bench.torch_ms(lambda: at @ bt) / 1e6))
    report(f"sgemm n={n} (max error / sqrt(n) {error:.1e}; compiled in {seconds:.2f} s)", rows, "GFLOP/s",
           baseline="torch (cuBLAS, float32)" if bench.torch else None)
    bench.figures["sgemm"] = dict(rows, n=n, compile_seconds=seconds)


class RecordingBackend:
    """The ember backend, keeping each runner it compiles and the seconds each compile took."""

    def __init__(self, inner):
        self.inner, self.runners, self.seconds = inner, [], []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def compile(self, graph):
        start = time.perf_counter()
        runner = self.inner.compile(graph)
        self.seconds.append(time.perf_counter() - start)
        self.runners.append(runner)
        return runner


def training_step(lib, model, optimizer, loss_of):
    """step(inputs, targets): forward, loss, backward and optimizer step, as a PyTorch script writes it."""
    def step(inputs, targets):
        optimizer.zero_grad()
        loss = loss_of(lib, model, inputs, targets)
        loss.backward()
        optimizer.step()
        return loss
    return step


def training_section(bench, name, make_model, make_batch, make_optimizer, loss_of):
    """One training step (forward, loss, backward, optimizer) of a model from benchmark_models,
    compiled with ember.compile on the GPU backend."""
    ember = bench.ember
    model = make_model(ember)
    optimizer = make_optimizer(ember, model)
    x, y = make_batch(ember)
    backend = RecordingBackend(bench.backend)
    compiled = ember.compile(training_step(ember, model, optimizer, loss_of), backend=backend)
    for _ in range(6):  # traced, traced again once AdamW/momentum state exists, then compiled
        compiled(x, y)
        if compiled.report.compiled_calls:
            break
    if compiled.report.compiled_calls < 1:
        sys.exit(f"benchmarks/gpu.py: the {name} step did not run compiled: {compiled.report}")
    rows = [("ember kernels", bench.kernel_ms(backend.runners[-1])),
            ("ember whole call (copies)", bench.call_ms(lambda: compiled(x, y)))]
    rows += device_resident_rows(bench, make_model, make_batch, make_optimizer, loss_of)
    if bench.torch:
        torch = bench.torch
        twin = make_model(torch).cuda()
        twin_optimizer = make_optimizer(torch, twin)
        xt, yt = (torch.from_numpy(t.numpy()).cuda() for t in (x, y))

        def torch_step():
            twin_optimizer.zero_grad()
            loss_of(torch, twin, xt, yt).backward()
            twin_optimizer.step()
        rows.append(("torch eager", bench.torch_ms(torch_step)))
    seconds = backend.seconds[0]
    report(f"{name} training step ({len(backend.runners[-1].spec.externals)} buffers; first compile {seconds:.2f} s)",
           rows, "ms", baseline="torch eager" if bench.torch else None)
    bench.figures[name] = dict(rows, compile_seconds=seconds)


def device_resident_rows(bench, make_model, make_batch, make_optimizer, loss_of):
    """The same step with the model on the device (`model.to("cuda")`): compiled, where a call
    copies nothing (the batch is on the device too), and eagerly (one-op GPU programs)."""
    ember = bench.ember
    model = make_model(ember).to("cuda")
    optimizer = make_optimizer(ember, model)
    x, y = (t.to("cuda") for t in make_batch(ember))
    step = training_step(ember, model, optimizer, loss_of)
    compiled = ember.compile(step)
    for _ in range(6):
        compiled(x, y).item()
        if compiled.report.compiled_calls:
            break
    rows = [("ember whole call (model on cuda)", bench.call_ms(lambda: compiled(x, y).item()))]
    if not bench.args.emulated:  # (eager ops on the emulator: minutes per step)
        step(x, y).item()
        rows.append(("ember eager (model on cuda)", bench.call_ms(lambda: step(x, y).item())))
    return rows


def section_seednet(bench):
    from benchmark_models import seed_net_class
    batch = bench.size(64, 64, 4)

    def make_model(lib):
        lib.manual_seed(0)
        return seed_net_class(lib)()

    def make_batch(lib):
        rng = np.random.default_rng(0)
        return (lib.tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)),
                lib.tensor(rng.integers(0, 10, batch)))
    training_section(bench, "seednet", make_model, make_batch,
                     lambda lib, model: lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                     lambda lib, model, x, y: lib.nn.functional.cross_entropy(model(x), y))


def section_gpt(bench):
    from benchmark_models import gpt_class
    size = bench.size(dict(dim=128, heads=4, layers=4, block=64, batch=8), dict(dim=64, heads=2, layers=2, block=32,
                      batch=4), dict(dim=32, heads=2, layers=1, block=8, batch=2))

    def make_model(lib):
        lib.manual_seed(0)
        return gpt_class(lib)(65, size["block"], size["dim"], size["heads"], size["layers"])

    def make_batch(lib):
        rng = np.random.default_rng(0)
        shape = (size["batch"], size["block"])
        return lib.tensor(rng.integers(0, 65, shape)), lib.tensor(rng.integers(0, 65, shape))
    training_section(bench, "gpt", make_model, make_batch, lambda lib, model: model.optimizer(),
                     lambda lib, model, idx, targets: model(idx, targets))


def main():
    args = parse_args()
    bench = Bench(args)
    for name in args.section or SECTIONS:
        globals()[f"section_{name}"](bench)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(bench.figures, f, indent=1)


if __name__ == "__main__":
    main()
