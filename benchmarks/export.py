"""ember.export_library on the seed Net: export time (cold: new process, empty EMBER_CACHE_DIR),
library size and dependencies, and the latency of one call from C (a timing harness linked
against the library), from Python (ember.load_exported) and, side by side in the same run,
ember.compile in Python and PyTorch eager when installed.

Batches: 1 (a static export for batch 1) and 64 / 63 / 100 from one dynamic-batch export whose
example had 64 rows (programs for 64, 32, ..., 1 rows; 63 runs as 32+16+8+4+2+1, 100 as 64+32+4:
see passes/batch_axes.py), against ember.compile at the same batch. Medians over rounds.

    python3 benchmarks/export.py [--quick]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchmark_models import seed_net_class  # noqa: E402

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "Net.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    long batch = atol(argv[1]), calls = atol(argv[2]), rounds = atol(argv[3]);
    float *x = calloc(batch * 3 * 32 * 32, sizeof *x), *y = calloc(batch * 10, sizeof *y);
    Net_t *model;
    if (Net_create(NULL, &model)) { fprintf(stderr, "%s\n", Net_last_error(NULL)); return 1; }
    Net_set_num_threads(model, atoi(argv[4]));
    for (int k = 0; k < 3; k++) Net_run(model, x, y, batch);
    for (long r = 0; r < rounds; r++) {
        double start = now();
        for (long k = 0; k < calls; k++)
            if (Net_run(model, x, y, batch)) { fprintf(stderr, "%s\n", Net_last_error(model)); return 1; }
        printf("%.9f\n", (now() - start) / calls);
    }
    Net_destroy(model);
    return 0;
}
"""


def median_seconds(function, calls, rounds):
    for _ in range(3):
        function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def cold_export(folder, dynamic):
    """Seconds of export_library in a new process with an empty compile cache (import not counted).
    The dynamic export's example has 64 rows: its largest chunk."""
    rows = 64 if dynamic else 1
    code = (f"import sys, time; sys.path.insert(0, {HERE!r}); import ember; from benchmark_models import "
            f"seed_net_class; ember.manual_seed(0); net = seed_net_class(ember)().eval(); "
            f"x = ember.randn({rows}, 3, 32, 32); "
            f"start = time.perf_counter(); ember.export_library(net, x, {folder!r}, name='Net', "
            f"dynamic_batch={dynamic}); print(time.perf_counter() - start)")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, EMBER_CACHE_DIR=cache)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(done.stdout.split()[-1])


def harness_seconds(folder, batch, threads, calls, rounds):
    binary = os.path.join(folder, "harness")
    if not os.path.exists(binary):
        with open(os.path.join(folder, "harness.c"), "w") as f:
            f.write(HARNESS)
        subprocess.run(["cc", "-O2", "harness.c", "-o", "harness", "-L.", "-l:Net.so", "-Wl,-rpath,$ORIGIN"],
                       cwd=folder, check=True)
    done = subprocess.run([binary, str(batch), str(calls), str(rounds), str(threads)], capture_output=True,
                          text=True, check=True)
    return statistics.median(float(v) for v in done.stdout.split())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds (a smoke test)")
    args = parser.parse_args()
    rounds, scale = (3, 0.1) if args.quick else (9, 1.0)
    import ember
    import numpy as np
    try:
        import torch
    except ImportError:
        torch = None
    work = tempfile.mkdtemp(prefix="ember-export-bench-")
    try:
        static, dynamic = os.path.join(work, "static"), os.path.join(work, "dynamic")
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; ember {ember.__version__}"
              f"{'; torch ' + torch.__version__ if torch else '; PyTorch not installed'}")
        print(f"cold export (new process, empty cache): static batch 1 {cold_export(static, False):.2f} s, "
              f"dynamic batch {cold_export(dynamic, True):.2f} s")
        separate = os.path.join(work, "separate")
        import ember as _ember
        _ember.manual_seed(0)
        _ember.export_library(seed_net_class(_ember)().eval(), _ember.randn(1, 3, 32, 32), separate, name="Net",
                              weights="file")
        print(f"  weights in a file: Net.so {os.path.getsize(os.path.join(separate, 'Net.so')) / 1e3:.0f} kB + "
              f"Net.safetensors {os.path.getsize(os.path.join(separate, 'Net.safetensors')) / 1e3:.0f} kB")
        for folder in (static, dynamic):
            library = os.path.join(folder, "Net.so")
            needed = subprocess.run(["readelf", "-d", library], capture_output=True, text=True).stdout
            libraries = [line.split("[")[1].rstrip("]") for line in needed.splitlines() if "NEEDED" in line]
            chunks = json.load(open(os.path.join(folder, "manifest.json")))["batch"]["chunks"]
            print(f"  {os.path.basename(folder)}: Net.so {os.path.getsize(library) / 1e3:.0f} kB (weights inside), "
                  f"programs for batch {chunks}, needs {', '.join(libraries)}")
        ember.manual_seed(0)
        net = seed_net_class(ember)().eval()
        from ember.compiler.backends import llvm_backend
        compiled = {threads: ember.compile(net, backend=llvm_backend(threads=threads)) for threads in (1, 2)}
        loaded = {"static": ember.load_exported(static), "dynamic": ember.load_exported(dynamic)}
        if torch is not None:
            torch.manual_seed(0)
            torch_net = seed_net_class(torch)().eval()
        print("\nlatency per call (us), median of rounds; ratio = ember.compile / C library")
        print(f"  {'batch':>5} {'threads':>7} {'C library':>10} {'from Python':>12} {'ember.compile':>14} "
              f"{'torch eager':>12} {'ratio':>6}")
        for batch, export, threads in ((1, "static", 1), (64, "dynamic", 1), (63, "dynamic", 1),
                                       (100, "dynamic", 1), (64, "dynamic", 2)):
            calls = max(1, int((2000 if batch == 1 else 40) * scale))
            folder = static if export == "static" else dynamic
            x = ember.randn(batch, 3, 32, 32)
            library_s = harness_seconds(folder, batch, threads, calls, rounds)
            lib = loaded[export]
            lib.set_num_threads(threads)
            array = x.numpy()
            python_s = median_seconds(lambda: lib(array), calls, rounds)
            with ember.no_grad():
                compiled_s = median_seconds(lambda: compiled[threads](x), calls, rounds)
            torch_text = ""
            if torch is not None:
                torch.set_num_threads(threads)
                tx = torch.from_numpy(array)
                with torch.no_grad():
                    torch_text = f"{median_seconds(lambda: torch_net(tx), calls, rounds) * 1e6:12.1f}"
            print(f"  {batch:>5} {threads:>7} {library_s * 1e6:10.1f} {python_s * 1e6:12.1f} {compiled_s * 1e6:14.1f} "
                  f"{torch_text:>12} {compiled_s / library_s:6.2f}")
        harness_seconds(static, 1, 1, 1, 1)  # (builds the harness)
        firsts = []
        for _ in range(max(3, rounds)):
            start = time.perf_counter()
            subprocess.run([os.path.join(static, "harness"), "1", "1", "1", "1"], check=True, capture_output=True)
            firsts.append(time.perf_counter() - start)
        print(f"\nfresh process to first result (the C harness: exec, load Net.so, create, 4 runs at batch 1): "
              f"{statistics.median(firsts) * 1e3:.1f} ms")
        np.testing.assert_allclose(loaded["dynamic"](x.numpy()), compiled[1](x).detach().numpy(), rtol=1e-4, atol=1e-5)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
