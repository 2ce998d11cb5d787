"""The host allocator's policy for eager mode's numpy arrays: freed memory stays with the process.

Eager mode (and a trace, which evaluates as it records) makes a fresh numpy array per op, and
most of them die a few ops later. glibc's malloc serves a request of 128 KiB or more with mmap
(the threshold grows to the largest mmapped block freed, up to 32 MiB) and hands the free top of
its heap back to the kernel once that passes twice the threshold. Temporaries near those sizes
are then mapped and unmapped over and over: every page of each is faulted in and zeroed by the
kernel again (about 2 us a page on this project's VM). An eager layer-norm backward on 8x64x128
float32 took 671 us that way and 195 us without it; an eager GPT training step faulted 920
pages per step, 5 without it.

`keep_freed_memory()`, called when the frontend loads, sets malloc's mmap threshold to 32 MiB
(larger arrays are still mapped, and unmapped when freed) and its trim threshold to 256 MiB
(up to that much freed memory stays in the heap for later arrays), as a caching allocator
does. EMBER_MALLOC_TUNING=0 leaves malloc's defaults (config.py). Only glibc has these
settings (`mallopt`); elsewhere nothing changes.
"""
import ctypes
import ctypes.util

from ember import config

M_TRIM_THRESHOLD = -1  # (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its growing threshold (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 256 << 20
_DONE = []  # [True or False] once keep_freed_memory ran: whether malloc took the settings


def keep_freed_memory():
    """Set glibc malloc's thresholds once per process (module docstring); True where they took."""
    if not _DONE:
        _DONE.append(config.MALLOC_TUNING and _set_thresholds())
    return _DONE[0]


def _set_thresholds():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # (not glibc: musl and macOS have no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # (mallopt returns 1 on success; setting the mmap threshold also stops glibc from moving it)
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
