"""The thread runtime compiled CPU programs run their parallel loops on: libgomp.

`load_libgomp()` finds libgomp once per process and loads it with RTLD_GLOBAL, so machine
code resolves GOMP_parallel and omp_* whether it was loaded by llvmlite's MCJIT or as a
shared library through ctypes. Plain ctypes: loading a cached program needs no llvmlite.
`set_num_threads(n)` (torch.set_num_threads) sets the threads every compiled program runs on
from its next call (CHOSEN_THREADS, read by runtime/cpu_program.py) and compiles after it use,
and those of numpy's BLAS, which eager mode's matmuls run on.
"""
import ctypes
import ctypes.util
import os
import subprocess
import threading

# libgomp's idle threads spin this many pause instructions before they sleep. Its default
# (300000, milliseconds) holds a core that other work wants: with another busy process on this
# 2-core machine the compiled seed Net training step took 160 ms instead of 5 (30 ms with
# 20000), and alternating compiled calls with numpy's multi-threaded OpenBLAS slowed both
# 10-100x. On a quiet machine 20000 and the default measured the same (back-to-back kernels
# of one program stay inside the spin).
GOMP_SPINCOUNT_DEFAULT = "20000"

_LOCK = threading.Lock()
CHOSEN_THREADS = []  # [n] once set_num_threads(n) ran: every compiled program's thread count
_loaded = {}  # "path": the loaded libgomp's path, or "" when there is none


def find_libgomp():
    """Path of libgomp.so.1 (ctypes' search, then gcc's), or None."""
    name = ctypes.util.find_library("gomp")
    if name:
        return name
    try:
        path = subprocess.run(["gcc", "-print-file-name=libgomp.so.1"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


def load_libgomp():
    """Load libgomp into the process (once) so compiled code resolves GOMP_parallel; returns
    its path, or None when it is not installed (then code generators emit single-threaded
    code). Unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set, GOMP_SPINCOUNT is set to
    GOMP_SPINCOUNT_DEFAULT first (libgomp reads it once, when it loads)."""
    if "path" not in _loaded:
        with _LOCK:
            if "path" not in _loaded:
                path = find_libgomp()
                if path is not None:
                    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
                        os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT_DEFAULT
                    try:
                        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                    except OSError:
                        path = None
                _loaded["path"] = path or ""
    return _loaded["path"] or None


def set_num_threads(n):
    """Threads for ember's compiled programs from now on (PyTorch's torch.set_num_threads)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise RuntimeError(f"set_num_threads expects an int, but got {type(n).__name__}")
    if n < 1:
        raise RuntimeError("set_num_threads expects a positive integer")
    from ember import config
    config.NUM_THREADS = n
    CHOSEN_THREADS[:] = [n]
    _limit_blas_threads(n)


def _limit_blas_threads(n):
    """numpy's BLAS (eager mode's matmuls) on n threads too, as torch.set_num_threads limits
    PyTorch's own: through threadpoolctl, which knows each BLAS numpy may load (OpenBLAS under
    its several symbol prefixes, MKL, BLIS)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # (a dependency; an environment without it keeps numpy's threads)
        return
    threadpool_limits(limits=n, user_api="blas")


def get_num_threads():
    """The threads compiled programs run on (EMBER_NUM_THREADS, or what set_num_threads chose)."""
    from ember import config
    return CHOSEN_THREADS[0] if CHOSEN_THREADS else config.NUM_THREADS
