"""A GPT-style model (benchmark_models.gpt_class: pre-norm causal attention through
F.scaled_dot_product_attention, exact-erf GELU, tied weights, AdamW with decay groups, gradient
clipping) trained and sampled in ember and, in the same run, PyTorch when installed, on the same
weights (the first losses are checked equal).

Per size (small: 4 layers, 4 heads, 128 wide, block 64, vocabulary 65, batch 8; large: 6 layers,
6 heads, 384 wide, block 256, batch 8) and thread count (1 and all): the training step of ember
eager, ember compiled, PyTorch eager (and torch.compile with --torch-compile), medians (and
bests) over rounds; ember's compile time cold (new process, empty EMBER_CACHE_DIR) and warm
(cache filled); batch-1 generation latency per token (eager: a new length every token).
--profile prints the compiled step's kernel times (EMBER_DEBUG=2) once.

    python3 benchmarks/transformer.py [--quick] [--size small|large] [--torch-compile] [--profile]
"""
import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchmark_models import gpt_class  # noqa: E402

SIZES = {"small": dict(layers=4, heads=4, dim=128, block=64, vocab=65, batch=8),
         "large": dict(layers=6, heads=6, dim=384, block=256, vocab=65, batch=8)}


def build(lib, size, seed=0):
    """(model, optimizer, step(x, y) -> loss) of `lib` (ember or torch) at `size`."""
    lib.manual_seed(seed)
    config = SIZES[size]
    model = gpt_class(lib)(config["vocab"], config["block"], config["dim"], config["heads"], config["layers"])
    optimizer = model.optimizer()

    def step(x, y):
        loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lib.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss
    return model, optimizer, step


def batch(lib, size, seed=1):
    import numpy as np
    config = SIZES[size]
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config["vocab"], (config["batch"], config["block"] + 1))
    return lib.from_numpy(tokens[:, :-1].copy()), lib.from_numpy(tokens[:, 1:].copy())


def median_seconds(fn, rounds, warmup=2):
    return step_seconds(fn, rounds, warmup)[0]


def step_seconds(fn, rounds, warmup=2):
    """(median, best) seconds of `rounds` calls after `warmup` ones. Other work on the machine
    only ever adds time: the best is the figure it disturbs least, the median the typical one."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples)


def copy_weights(source_model, target_model, target_lib):
    """The ember model's weights into the torch twin (state_dict keys are the same)."""
    state = {k: target_lib.from_numpy(v.detach().numpy().copy()) for k, v in source_model.state_dict().items()}
    target_model.load_state_dict(state)


def cold_compile_seconds(size, threads):
    """Compile time in a new process with an empty compile cache (cold), then again in another
    new process with that cache (warm): the calls are timed until one runs compiled, and the
    eager step's time for as many calls is taken off (tracing runs the step eagerly: its
    steady time, the best of three steps, not the first, which builds eager mode's own kernels).
    Import and model building are not counted."""
    code = (f"import sys, time; sys.path.insert(0, {HERE!r}); import ember; from transformer import build, batch; "
            f"ember.set_num_threads({threads}); model, opt, step = build(ember, {size!r}); x, y = batch(ember, "
            f"{size!r}); compiled = ember.compile(step); traced = []\n"
            f"while compiled.report.compiled_calls == 0 and len(traced) < 6:\n"
            f"    start = time.perf_counter(); compiled(x, y); took = time.perf_counter() - start\n"
            f"    if compiled.report.compiled_calls == 0: traced.append(took)\n"
            f"eager = []\n"
            f"for _ in range(3):\n"
            f"    start = time.perf_counter(); step(x, y); eager.append(time.perf_counter() - start)\n"
            f"eager = min(eager)\n"
            f"print(sum(traced) - len(traced) * eager)")
    times = []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  env=dict(os.environ, EMBER_CACHE_DIR=cache))
            if done.returncode != 0:
                return None, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
            times.append(float(done.stdout.split()[-1]))
    return times, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, small size only")
    parser.add_argument("--size", choices=tuple(SIZES), action="append")
    parser.add_argument("--torch-compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--profile", action="store_true", help="print the compiled step's kernel times once")
    args = parser.parse_args()
    import ember
    try:
        import torch
    except ImportError:
        torch = None
    sizes = args.size or (["small"] if args.quick else ["small", "large"])
    rounds = 3 if args.quick else 7
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cores} cores, load {os.getloadavg()[0]:.2f}; ember {ember.__version__}; "
          f"{'torch ' + torch.__version__ if torch else 'PyTorch not installed'}")
    for size in sizes:
        print(f"\n{size}: {SIZES[size]}")
        model, _, step = build(ember, size)
        x, y = batch(ember, size)
        twin = None
        if torch is not None:
            twin_model, _, twin_step = build(torch, size)
            copy_weights(model, twin_model, torch)
            tx, ty = batch(torch, size)
            with torch.no_grad():
                first_torch = twin_model(tx, ty).item()
            with ember.no_grad():
                first_ember = model(x, y).item()
            print(f"  first loss: ember {first_ember:.6f}, torch {first_torch:.6f} "
                  f"({'equal' if abs(first_ember - first_torch) < 1e-4 * abs(first_torch) else 'DIFFERENT'})")
            twin = (twin_model, twin_step, tx, ty)
        for threads in sorted({1, cores}):
            ember.set_num_threads(threads)
            if torch is not None:
                torch.set_num_threads(threads)
            rows = {}
            model, _, step = build(ember, size)
            rows["ember eager"] = step_seconds(lambda: step(x, y), rounds, warmup=1)
            model, _, step = build(ember, size)
            compiled = ember.compile(step)
            rows["ember compiled"] = step_seconds(lambda: compiled(x, y), rounds)
            if args.profile and threads == cores:
                from ember.compiler.backends import llvm_backend
                profiled = ember.compile(build(ember, size)[2], backend=llvm_backend(debug=2))
                with contextlib.redirect_stderr(io.StringIO()):  # (traces, the compile, a first compiled call)
                    while profiled.report.compiled_calls < 1 and profiled.report.calls < 8:
                        profiled(x, y)
                print(f"  kernel times of one compiled step ({threads} threads), on stderr:", flush=True)
                profiled(x, y)
            if twin is not None:
                twin_model, twin_step, tx, ty = twin
                rows["torch eager"] = step_seconds(lambda: twin_step(tx, ty), rounds)
                if args.torch_compile:
                    torch_compiled = torch.compile(twin_step)
                    rows["torch.compile"] = step_seconds(lambda: torch_compiled(tx, ty), rounds, warmup=3)
            base = rows.get("torch eager")
            print(f"  training step, {threads} thread(s): median (best) of {rounds}")
            for name, (seconds, best) in rows.items():
                ratio = f"  x{seconds / base[0]:.2f} (x{best / base[1]:.2f}) of torch eager" \
                    if base and name != "torch eager" else ""
                print(f"    {name:<16} {seconds * 1e3:9.1f} ms ({best * 1e3:7.1f}){ratio}")
            times, problem = cold_compile_seconds(size, threads)
            print("    ember compile: " + (f"cold {times[0]:.2f} s, warm {times[1]:.2f} s" if times else
                                             f"unavailable: {problem}"))
        # generation: batch 1, top-k 10, a new sequence length every token (eager)
        new_tokens = 8 if args.quick else 32
        model, _, _ = build(ember, size)
        model.eval()
        start = ember.zeros((1, 1), dtype=ember.int64)
        ember.manual_seed(0)
        seconds = median_seconds(lambda: model.generate(start, new_tokens, top_k=10), max(2, rounds // 2), warmup=1)
        line = f"  generation (batch 1, eager): ember {seconds / new_tokens * 1e3:.2f} ms/token"
        if twin is not None:
            twin_model = twin[0].eval()
            tstart = torch.zeros((1, 1), dtype=torch.int64)
            tseconds = median_seconds(lambda: twin_model.generate(tstart, new_tokens, top_k=10), max(2, rounds // 2),
                                      warmup=1)
            line += f", torch {tseconds / new_tokens * 1e3:.2f} ms/token (x{seconds / tseconds:.2f})"
        print(line)


if __name__ == "__main__":
    main()
