"""ember.distributed against raw mpi4py, and DDP training steps at 1 and 2 processes.

Run it plainly: it starts its own MPI jobs through `python -m ember.distributed.run` and
prints the tables (rank 0 measures; every rank takes part).

  allreduce   dist.all_reduce(tensor) against mpi4py's comm.Allreduce on the same numpy
              buffer, 4 KB to 64 MB, interleaved rounds, medians: algorithm bandwidth and
              ember's overhead (also the async_op=True path, which runs on the worker thread)
  steps       the seed Net (global batch 64) and the MLP 784-512-512-10 (global batch 128)
              training step (SGD momentum) in DistributedDataParallel, eager and compiled, at
              1 and 2 processes (each rank takes global batch / processes samples)
  timeline    one MLP step at 2 processes, eager and compiled: each gradient bucket's allreduce
              (submitted, started, finished, in ms from the step's start), showing bucket 0's
              allreduce running while bucket 1's gradients are computed

On 2 cores, 2 processes share the cores that 1 process used alone: expect little speed-up;
the figures show the overhead of the collectives.

    python3 benchmarks/distributed.py [--quick]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SIZES = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]


def launch(nproc, quick):
    """Run this script's worker on `nproc` ranks; rank 0's JSON results."""
    line = [sys.executable, "-m", "ember.distributed.run", "--nproc", str(nproc), os.path.abspath(__file__),
            "--worker"] + (["--quick"] if quick else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", EMBER_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // nproc)))
    done = subprocess.run(line, capture_output=True, text=True, env=env, timeout=3600)
    for text in done.stdout.splitlines():
        if text.startswith("RESULTS "):
            return json.loads(text[len("RESULTS "):])
    raise SystemExit(f"the {nproc}-process run failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
                     f"{done.stderr[-3000:]}")


# ----------------------------------------------------------------------------- in each rank

def median_seconds(run, rounds, warmup=3):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_step(model, optimizer, x, y):
    """A DDP training step with no Python side effects (so ember.compile runs it compiled)."""
    import ember
    criterion = ember.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return step


def allreduce_section(quick):
    import numpy as np
    from mpi4py import MPI
    import ember
    import ember.distributed as dist
    from ember.runtime.communicator import world
    comm = world().comm
    results = []
    for size in SIZES[:5] if quick else SIZES:
        buffer = np.ones(size // 4, np.float32)
        tensor = ember.from_numpy(buffer)  # the same memory
        rounds = max(9, min(400, (1 << 30) // size // 4)) if not quick else 6
        candidates = {"mpi4py": lambda: comm.Allreduce(MPI.IN_PLACE, buffer, MPI.SUM),
                      "ember": lambda: dist.all_reduce(tensor),
                      "ember_async": lambda: dist.all_reduce(tensor, async_op=True).wait()}
        times = {name: [] for name in candidates}
        for run in candidates.values():
            for _ in range(3):
                run()
        names = list(candidates)
        for r in range(rounds):  # interleaved, first place rotating: load and caches hit all alike
            for name in names[r % 3:] + names[:r % 3]:
                run = candidates[name]
                comm.Barrier()
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
            buffer[:] = 1.0  # (keep the values finite)
        results.append({"bytes": size, **{name: statistics.median(t) for name, t in times.items()}})
    return results


def step_section(quick):
    import numpy as np
    import ember
    import ember.distributed as dist
    from ember.nn.parallel import DistributedDataParallel as DDP
    from benchmark_models import mlp, seed_net_class
    rank, size = dist.get_rank(), dist.get_world_size()
    results = []
    for model_name, build, shape, global_batch in (("seed Net", lambda: seed_net_class(ember)(), (3, 32, 32), 64),
                                                   ("MLP", lambda: mlp(ember), (784,), 128)):
        batch = global_batch // size
        rng = np.random.default_rng(rank)
        x = ember.from_numpy(rng.standard_normal((batch,) + shape).astype(np.float32))
        y = ember.from_numpy(rng.integers(0, 10, batch).astype(np.int64))
        for mode in ("eager", "compiled"):
            ember.manual_seed(0)
            net = build()
            model = DDP(net)
            optimizer = ember.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
            step = training_step(model, optimizer, x, y)
            run = ember.compile(step) if mode == "compiled" else step
            seconds = median_seconds(run, 5 if quick else 30)
            results.append({"model": model_name, "mode": mode, "batch": batch, "seconds": seconds,
                            "buckets": [b for b, _ in model.bucket_sizes()]})
    return results


def timeline_section(compiled):
    """One MLP step's bucket allreduces (ms from the step's start), eager or compiled."""
    import numpy as np
    import ember
    import ember.distributed as dist
    from ember.nn.parallel import DistributedDataParallel as DDP
    from benchmark_models import mlp
    rng = np.random.default_rng(dist.get_rank())
    x = ember.from_numpy(rng.standard_normal((64, 784)).astype(np.float32))
    y = ember.from_numpy(rng.integers(0, 10, 64).astype(np.int64))
    ember.manual_seed(0)
    net = mlp(ember)
    model = DDP(net)
    step = training_step(model, ember.optim.SGD(net.parameters(), lr=0.01), x, y)
    run = ember.compile(step) if compiled else step
    for _ in range(5):
        run()
    if compiled:
        assert len(run.report.traces) <= 2 and not run.report.eager_reasons, run.report
    timeline = []
    model.record_timeline(timeline)
    start = time.perf_counter()
    run()
    end = time.perf_counter()
    model.record_timeline(None)
    to_ms = lambda t: round((t - start) * 1e3, 3)  # noqa: E731
    return {"end": to_ms(end),
            "buckets": [{"label": r.label, "submitted": to_ms(r.submitted), "started": to_ms(r.started),
                         "finished": to_ms(r.finished)} for r in timeline],
            "bucket_params": model.bucket_sizes()}


def worker(quick):
    import ember.distributed as dist
    dist.init_process_group("mpi")
    results = {"size": dist.get_world_size()}
    if dist.get_world_size() > 1:
        results["allreduce"] = allreduce_section(quick)
        results["timeline"] = timeline_section(compiled=False)
        results["timeline_compiled"] = timeline_section(compiled=True)
    results["steps"] = step_section(quick)
    if dist.get_rank() == 0:
        print("RESULTS " + json.dumps(results), flush=True)
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- the tables

def human(size):
    return f"{size >> 20} MB" if size >= 1 << 20 else f"{size >> 10} KB"


def report(one, two):
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    import mpi4py
    from mpi4py import MPI
    print(f"MPI: {MPI.Get_library_version().splitlines()[0].strip()}; mpi4py {mpi4py.__version__}\n")
    print("allreduce (sum, float32, 2 processes): medians of interleaved rounds (the first place rotates)")
    print(f"{'size':>7} {'mpi4py':>10} {'ember':>10} {'GB/s ember':>11} {'overhead':>9} {'async_op':>10}")
    for row in two["allreduce"]:
        gbps = row["bytes"] / row["ember"] / 1e9
        print(f"{human(row['bytes']):>7} {row['mpi4py'] * 1e6:>8.1f}us {row['ember'] * 1e6:>8.1f}us {gbps:>11.2f} "
              f"{(row['ember'] / row['mpi4py'] - 1) * 100:>8.1f}% {row['ember_async'] * 1e6:>8.1f}us")
    print("\ntraining step in DistributedDataParallel (SGD momentum), median ms; batch per rank = global / processes")
    print(f"{'model':>9} {'mode':>9} {'1 process':>10} {'2 processes':>12} {'ratio':>6}  buckets (bytes)")
    for a, b in zip(one["steps"], two["steps"]):
        print(f"{a['model']:>9} {a['mode']:>9} {a['seconds'] * 1e3:>8.2f}ms {b['seconds'] * 1e3:>10.2f}ms "
              f"{b['seconds'] / a['seconds']:>6.2f}  {b['buckets']}")
    for key, what in (("timeline", "eager"), ("timeline_compiled", "compiled")):
        t = two[key]
        print(f"\none {what} MLP step (batch 64 per rank) at 2 processes, ms from the step's start "
              f"(it ends at {t['end']:.3f}):")
        for row, (nbytes, names) in zip(t["buckets"], t["bucket_params"]):
            print(f"  {row['label']}: submitted {row['submitted']:.3f}, started {row['started']:.3f}, "
                  f"finished {row['finished']:.3f}   [{', '.join(names)}]")
        buckets = t["buckets"]
        if len(buckets) >= 2:
            overlap = buckets[0]["started"] < buckets[1]["submitted"]
            print(f"  bucket 0's allreduce started {'before' if overlap else 'after'} bucket 1's gradients were "
                  f"ready{': it ran while they were computed' if overlap else ''}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds (a smoke test)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.quick)
    one = launch(1, args.quick)
    two = launch(2, args.quick)
    report(one, two)


if __name__ == "__main__":
    main()
