"""ember's configuration: every environment flag, read in one place.

EMBER_STRICT=1   also run each primitive's shape rule in eager mode and check numpy agrees
                 (the test suite turns it on).
EMBER_DEBUG=N    compile-time logging: 1 kernels, 2 timings, 3 IR per stage, 4 generated code.
EMBER_DUMP=DIR   write the graph after every pass (text, DOT, diff) under DIR.
EMBER_CACHE_DIR  where compiled objects are cached (default: ~/.cache/ember).
EMBER_NUM_THREADS=N  threads compiled CPU programs use for parallel loops and matrix
                 multiplies (default: the CPUs this process may run on).
EMBER_EMULATE_CUDA=1  "cuda" is the CPU's grid emulator (for machines without a GPU; read on
                 every use, see `emulate_cuda`).
EMBER_GRID_THREADS=1  the grid emulator runs GPU threads as OS threads, not fibers (slower;
                 for checking the fibers, runtime/grid_fibers.c).
EMBER_GPU_GEMM=cublas|tiles  which kernel computes a GPU program's plain matrix products
                 (default: each launch times both on its first run and keeps the faster).
EMBER_PROGRESS=0 no progress line on stderr while a compile runs past a second (shown only
                 when stderr is a terminal).
EMBER_MALLOC_TUNING=0  leave glibc malloc's thresholds alone (by default freed memory up to 256 MiB
                 stays in the process for later arrays: runtime/host_allocator.py).
"""
import os


def _flag(name, default=0):
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


STRICT = bool(_flag("EMBER_STRICT"))
DEBUG = _flag("EMBER_DEBUG")
PROGRESS = bool(_flag("EMBER_PROGRESS", 1))
MALLOC_TUNING = bool(_flag("EMBER_MALLOC_TUNING", 1))
GRID_THREADS = bool(_flag("EMBER_GRID_THREADS"))
DUMP_DIR = os.environ.get("EMBER_DUMP") or None
CACHE_DIR = os.environ.get("EMBER_CACHE_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ember")


def emulate_cuda():
    """EMBER_EMULATE_CUDA, read now (tests switch it within one process)."""
    return bool(_flag("EMBER_EMULATE_CUDA"))


def gpu_gemm():
    """EMBER_GPU_GEMM: "cublas", "tiles", or "auto" (unset: time both), read now."""
    value = os.environ.get("EMBER_GPU_GEMM", "") or "auto"
    if value not in ("auto", "cublas", "tiles"):
        raise ValueError(f"EMBER_GPU_GEMM must be cublas, tiles or auto, got {value!r}")
    return value


def _num_threads():
    value = _flag("EMBER_NUM_THREADS")
    if value < 0:
        raise ValueError(f"EMBER_NUM_THREADS must be a positive integer, got {value}")
    if value:
        return value
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


NUM_THREADS = _num_threads()
