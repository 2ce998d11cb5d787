"""ember's eager-mode overheads against numpy and PyTorch, side by side in one process.

Measures (a) a tiny add of two 1-element float32 tensors, with and without requires_grad,
and (b) the seed Net's training step at batch 64 (zero_grad, forward, CrossEntropyLoss,
backward, SGD momentum step) against a hand-written numpy step (numpy_lenet.py) and
PyTorch eager when it is installed. Without PyTorch the shared/PERF.md figures for this
machine stand in, labelled as such. The issue's targets: tiny add within 2x of PyTorch,
training step within 3x of PyTorch eager.

The environment is left as is (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE and thread variables may
be set on a machine and slow numpy; CI and the tests do not change them either): the header
prints them and the BLAS numpy loaded, so a figure can be read against its setting.

    python3 benchmarks/eager.py [--quick] [--threads N] [--profile]
"""
import argparse
import os
import platform
import statistics
import sys
import time
import timeit

from benchmark_models import seed_net_class  # the script's folder is on sys.path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
REPORTED_VARIABLES = THREAD_VARIABLES + ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "EMBER_STRICT")
BATCH = 64
LR, MOMENTUM = 0.01, 0.9

# shared/PERF.md, measured on this kind of machine (2 vCPU Zen 4) on 2026-11-26
TORCH_REFERENCE = {"add": 1.27e-6, "add_requires_grad": 2.0e-6, "train_step": 5.1e-3}
NUMPY_ADD_REFERENCE = 0.33e-6  # numpy's tiny add in the same PERF.md run: tells how loaded this run is
TARGETS = {"add": 2.0, "add_requires_grad": 2.0, "train_step": 3.0}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, noisier figures)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="set OMP/OPENBLAS/MKL_NUM_THREADS=N before numpy (and torch) load")
    parser.add_argument("--profile", action="store_true",
                        help="also profile ember's training step: cProfile's top functions and the time "
                             "inside each primitive's numpy impl")
    return parser.parse_args()


def apply_thread_count(threads):
    """BLAS libraries read their thread count once, when they load: set it before numpy is
    imported, or re-run this script in a fresh interpreter when something imported it already."""
    if threads is None:
        return
    if threads < 1:
        sys.exit(f"eager.py: --threads must be at least 1, got {threads}")
    wanted = str(threads)
    if all(os.environ.get(name) == wanted for name in THREAD_VARIABLES):
        return
    for name in THREAD_VARIABLES:
        os.environ[name] = wanted
    if "numpy" in sys.modules:
        os.execv(sys.executable, [sys.executable] + sys.argv)


# ----------------------------------------------------------------------------- timing

def call_timer(fn):
    """fn -> timer(calls) giving seconds per call."""
    def timer(calls):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls
    return timer


def statement_timer(statement, **names):
    """A timeit loop over `statement` itself: no Python function call inside what is timed."""
    timer = timeit.Timer(statement, globals=names)
    return lambda calls: timer.timeit(calls) / calls


def measure_interleaved(timers, rounds, calls, warmup):
    """{name: timer} -> {name: [seconds per call, one per round]}. Each round times every
    contender once, so a change of machine load during the run hits them all alike."""
    for timer in timers.values():
        timer(warmup)
    samples = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            samples[name].append(timer(calls))
    return samples


def format_seconds(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.2f} us"
    return f"{seconds * 1e3:8.2f} ms"


# ----------------------------------------------------------------------------- contenders

def import_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def tiny_add_timers(ember, np, torch):
    """`a + b` on two 1-element float32 tensors; "requires_grad" marks operand a."""
    def add(ones, requires_grad=False):
        return statement_timer("a + b", a=ones(requires_grad), b=ones(False))

    timers = {"numpy": add(lambda _: np.ones(1, dtype=np.float32))}
    frameworks = [("ember", ember)] + ([("torch", torch)] if torch is not None else [])
    for name, lib in frameworks:
        def ones(requires_grad, lib=lib):
            return lib.ones(1, dtype=lib.float32, requires_grad=requires_grad)
        timers[name] = add(ones)
        timers[f"{name}, requires_grad"] = add(ones, requires_grad=True)
    return timers


def training_step(lib, net, images, targets):
    """zero_grad, forward, cross-entropy, backward, SGD momentum step, as a closure; the same
    code drives ember and torch. The loss goes into `losses` for the sanity line."""
    optimizer = lib.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    criterion = lib.nn.CrossEntropyLoss()
    x, y = lib.tensor(images), lib.tensor(targets)
    losses = []

    def step():
        optimizer.zero_grad()
        loss = criterion(net(x), y)
        loss.backward()
        optimizer.step()
        if not losses:
            losses.append(loss.item())

    return step, losses


def train_steps(ember, np, torch):
    """-> ({name: step fn}, {name: first-step losses list}): all start from ember's weights."""
    import numpy_lenet
    rng = np.random.default_rng(0)
    images = rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32)
    targets = rng.integers(0, 10, BATCH)
    ember.manual_seed(0)
    ember_net = seed_net_class(ember)()
    weights = {name: value.detach().numpy().copy() for name, value in ember_net.state_dict().items()}

    steps, losses = {}, {}
    steps["ember"], losses["ember"] = training_step(ember, ember_net, images, targets)
    reference = numpy_lenet.NumpyLeNet(weights, lr=LR, momentum=MOMENTUM)
    losses["numpy"] = []
    steps["numpy"] = lambda: losses["numpy"].append(reference.train_step(images, targets))
    if torch is not None:
        torch.manual_seed(0)
        torch_net = seed_net_class(torch)()
        torch_net.load_state_dict({name: torch.from_numpy(value) for name, value in weights.items()})
        steps["torch"], losses["torch"] = training_step(torch, torch_net, images, targets)
    return steps, losses


# ----------------------------------------------------------------------------- report

def blas_description(np):
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            return "; ".join(f"{p['internal_api']} {p.get('version')} (kernels for {p.get('architecture')}, "
                             f"{p['num_threads']} thread{'s' if p['num_threads'] != 1 else ''}, {os.path.basename(p['filepath'])})" for p in pools)
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')} (from numpy.show_config; thread count unknown)"
    except (KeyError, TypeError, ValueError):
        return "unknown (numpy.show_config gave no BLAS entry)"


def cpu_description():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_header(ember, np, torch, args, plan):
    print("ember eager benchmark: tiny add and the seed Net training step (batch 64), one process")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"  machine   {cpu_description()}, {os.cpu_count()} cores, load average {load:.2f} at start "
          f"(other work on the machine slows every contender)")
    from ember.frontend.dispatch import STATE
    print(f"  software  python {platform.python_version()}, numpy {np.__version__}, ember {ember.__version__} "
          f"(strict mode {'ON: shape rules re-run on every op' if STATE.strict else 'off'}), "
          f"torch {torch.__version__ if torch is not None else 'not installed'}")
    print(f"  BLAS      {blas_description(np)}")
    settings = ", ".join(f"{name}={os.environ[name]}" if name in os.environ else f"{name} unset"
                         for name in REPORTED_VARIABLES)
    print(f"  env       {settings}")
    print("            this benchmark leaves the environment as is (CI and the tests do not change it "
          "either)" + (f"; --threads {args.threads} set the *_NUM_THREADS variables" if args.threads else ""))
    (add_rounds, add_calls), (train_rounds, train_warmup) = plan
    print(f"  method    median (and best) of {add_rounds} rounds of {add_calls} tiny adds and of {train_rounds} "
          f"rounds of one training step ({train_warmup} warm-up steps); each round times every contender in turn")


def print_measurements(title, samples):
    print(f"\n{title}")
    print(f"  {'':<24}{'median':>11}{'best':>11}")
    for name, values in samples.items():
        print(f"  {name:<24}{format_seconds(statistics.median(values)):>11}{format_seconds(min(values)):>11}")


def comparison_rows(add, train, torch_measured):
    """(label, ember samples, baseline samples, baseline note, target key or None). A baseline
    taken from PERF.md is one figure, used as its own median and best."""
    rows = [("tiny add: ember / numpy", add["ember"], add["numpy"], "", None),
            ("train step: ember / numpy", train["ember"], train["numpy"], "", None)]
    if torch_measured:
        torch_add, torch_add_rg, torch_train, note = (
            add["torch"], add["torch, requires_grad"], train["torch"], "")
    else:
        torch_add, torch_add_rg, torch_train, note = (
            [TORCH_REFERENCE["add"]], [TORCH_REFERENCE["add_requires_grad"]], [TORCH_REFERENCE["train_step"]], " *")
    rows += [("tiny add: ember / torch", add["ember"], torch_add, note, "add"),
             ("tiny add, requires_grad: ember / torch", add["ember, requires_grad"], torch_add_rg, note,
              "add_requires_grad"),
             ("train step: ember / torch", train["ember"], torch_train, note, "train_step")]
    return rows


def print_comparisons(add, train, torch_measured):
    median = statistics.median
    print("\nratios (lower is better for ember); the verdict uses the ratio of medians")
    print(f"  {'':<40}{'ember':>11}{'baseline':>13}{'ratio':>8}{'of bests':>10}{'target':>9}  verdict")
    for label, ember_times, baseline_times, note, target_key in comparison_rows(add, train, torch_measured):
        ratio = median(ember_times) / median(baseline_times)
        best_ratio = min(ember_times) / min(baseline_times)
        target, verdict = "", ""
        if target_key is not None:
            limit = TARGETS[target_key]
            target = f"<= {limit:g}x"
            verdict = ("PASS" if ratio <= limit else "FAIL") + ("" if torch_measured else " (vs reference)")
        print(f"  {label:<40}{format_seconds(median(ember_times)):>11}"
              f"{format_seconds(median(baseline_times)) + note:>13}{ratio:>7.1f}x{best_ratio:>9.1f}x{target:>9}  {verdict}")
    if not torch_measured:
        slowdown = median(add["numpy"]) / NUMPY_ADD_REFERENCE
        print("  * torch is not installed: reference from shared/PERF.md, not measured in this run "
              "(torch eager on this kind of machine: tiny add 1.27 us, 2.0 us with requires_grad; seed Net "
              "training step at batch 64 5.1 ms).")
        print(f"    numpy's tiny add took {median(add['numpy']) * 1e6:.2f} us here against "
              f"{NUMPY_ADD_REFERENCE * 1e6:.2f} us in that reference run ({slowdown:.1f}x): verdicts against "
              f"the reference are {'pessimistic: this machine runs slower now' if slowdown > 1.2 else 'fair'}.")


def print_losses(losses):
    first = ", ".join(f"{name} {values[0]:.6f}" for name, values in losses.items() if values)
    print(f"\nsanity: first-step loss from the same weights and batch: {first}")


def profile_ember_step(step, steps):
    """Two views of ember's training step: cProfile by Python function (numpy ufuncs called
    directly as a primitive's impl count as time of their caller, eager_bind), then the time
    inside each primitive's numpy impl, by operand shapes; the remainder is framework overhead."""
    import cProfile
    import pstats
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    print(f"\ncProfile of {steps} ember training steps, top functions by own time")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(15)

    per_step, walls = time_primitive_impls(step, steps)
    # medians over the steps: a burst of other work on the machine lands in one op of one step
    wall = statistics.median(walls)
    typical = {key: (calls, statistics.median(times.get(key, (0, 0.0))[1] for times in per_step))
               for times in per_step[:1] for key, (calls, _) in times.items()}
    inside = sum(seconds for _, seconds in typical.values())
    print(f"time inside primitive impls (numpy), per step (medians of {steps} steps): {inside * 1e3:.2f} ms "
          f"of {wall * 1e3:.2f} ms; dispatch, autograd and Python around them: {(wall - inside) * 1e3:.2f} ms")
    print(f"  {'primitive and operand shapes':<64}{'calls':>6}{'ms/step':>10}{'share':>8}")
    for (name, shapes), (calls, seconds) in sorted(typical.items(), key=lambda item: -item[1][1])[:20]:
        operands = ", ".join("x".join(map(str, shape)) if shape else "scalar" for shape in shapes)
        print(f"  {f'{name}({operands})':<64}{calls:>6}{seconds * 1e3:>10.2f}{seconds / wall:>8.1%}")


def time_primitive_impls(step, steps):
    """Run `step` `steps` times with every primitive's impl wrapped in a timer (restored
    afterwards) -> ([{(primitive, operand shapes): (calls, seconds)} per step], [wall seconds
    per step])."""
    from ember.ops import PRIMITIVES
    per_step, walls = [], []
    originals = {name: prim.impl for name, prim in PRIMITIVES.items()}

    def timed(name, impl):
        def run(*arrays, **attrs):
            start = time.perf_counter()
            result = impl(*arrays, **attrs)
            totals = per_step[-1]
            key = (name, tuple(getattr(a, "shape", ()) for a in arrays))
            calls, seconds = totals.get(key, (0, 0.0))
            totals[key] = (calls + 1, seconds + time.perf_counter() - start)
            return result
        return run

    try:
        for name, prim in PRIMITIVES.items():
            prim.impl = timed(name, prim.impl)
        for _ in range(steps):
            per_step.append({})
            start = time.perf_counter()
            step()
            walls.append(time.perf_counter() - start)
    finally:
        for name, prim in PRIMITIVES.items():
            prim.impl = originals[name]
    return per_step, walls


def main():
    args = parse_args()
    apply_thread_count(args.threads)
    import numpy as np
    import ember
    torch = import_torch()
    if torch is not None and args.threads:
        torch.set_num_threads(args.threads)

    add_rounds, add_calls = (7, 2000) if args.quick else (25, 20000)
    train_rounds, train_warmup = (5, 2) if args.quick else (25, 5)
    print_header(ember, np, torch, args, ((add_rounds, add_calls), (train_rounds, train_warmup)))

    add = measure_interleaved(tiny_add_timers(ember, np, torch), add_rounds, add_calls, warmup=add_calls)
    print_measurements("tiny add of two 1-element float32 tensors, per call", add)
    steps, losses = train_steps(ember, np, torch)
    timers = {name: call_timer(step) for name, step in steps.items()}
    train = measure_interleaved(timers, train_rounds, 1, warmup=train_warmup)
    print_measurements(f"seed Net training step, batch {BATCH} (zero_grad, forward, cross-entropy, backward, "
                       f"SGD momentum {MOMENTUM})", train)
    print_losses(losses)
    print_comparisons(add, train, torch is not None)
    if args.profile:
        profile_ember_step(steps["ember"], 3 if args.quick else 10)


if __name__ == "__main__":
    main()
