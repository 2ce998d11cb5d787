"""runtime/cuda_driver.py's CudaDevice on this CPU: host memory stands in for device memory
and runtime/grid_emulator.py runs the launches, so compiled GPU programs, their runner
(runtime/cuda_program.py) and `ember.compile(..., backend="ptx-emulated")` run and are
tested on any machine. As on a GPU, a launch may only be given addresses of memory the device
allocated (ordinary or managed): a host array's address raises CudaError, as a real launch
would fault on it, so the emulation catches tensors whose memory is on the wrong side.
Modules are the PTX target's LLVM module text (before NVPTX code generation), not PTX: the
emulator retargets that module to the host.
"""
import bisect
import ctypes
import time

import numpy as np

from .cuda_driver import CudaError
from .grid_emulator import EmulatedModule

ALIGNMENT = 256  # cuMemAlloc's alignment
BLOCK_THREADS = 64  # at most this many threads per block: the kernels are grid- and block-stride, so
# any multiple of 32 computes the same; fewer threads wake less often at each barrier on a CPU


class EmulatedCudaDevice:
    """A pretend CUDA device (see the module docstring); launches run to completion in order,
    with at most `block_threads` threads per block."""

    emulated = True
    name = "ember grid emulator (CPU)"
    compute_capability = "sm_90"
    multiprocessors = 1

    def __init__(self, block_threads=BLOCK_THREADS):
        self.block_threads = block_threads
        self._memory = {}  # address -> (the numpy buffer that owns it, bytes usable from the address)
        self._starts = []  # the allocations' addresses, sorted (to check a launch's pointers)
        self.copied_in = self.copied_out = 0  # bytes copied host -> device and back (tests count them)

    @staticmethod
    def fresh_memory(nbytes):
        """The host memory behind a new allocation (zeroed; a real device's is not: tests fill it)."""
        return np.zeros(nbytes, np.uint8)

    def allocate(self, nbytes):
        nbytes = max(int(nbytes), 1)
        buffer = self.fresh_memory(nbytes + ALIGNMENT)
        address = -(-buffer.ctypes.data // ALIGNMENT) * ALIGNMENT
        self._memory[address] = (buffer, nbytes)
        bisect.insort(self._starts, address)
        return address

    allocate_managed = allocate  # (host memory is what both sides address here)

    def free(self, address):
        del self._memory[address]
        del self._starts[bisect.bisect_left(self._starts, address)]

    def check_address(self, address, what):
        """CudaError unless `address` lies in memory this device allocated."""
        k = bisect.bisect_right(self._starts, address) - 1
        if k < 0 or address >= self._starts[k] + self._memory[self._starts[k]][1]:
            raise CudaError(f"ember grid emulator: {what} was given address {address:#x}, which is not device "
                            "memory (a GPU would fault: CUDA_ERROR_ILLEGAL_ADDRESS)")

    def copy_in(self, address, array):
        self.check_address(address, "a host-to-device copy")
        self.copied_in += array.nbytes
        ctypes.memmove(address, array.ctypes.data, array.nbytes)

    def copy_out(self, array, address):
        self.check_address(address, "a device-to-host copy")
        self.copied_out += array.nbytes
        ctypes.memmove(array.ctypes.data, address, array.nbytes)

    def copy_on_device(self, target, source, nbytes):
        self.check_address(target, "a device-to-device copy")
        self.check_address(source, "a device-to-device copy")
        ctypes.memmove(target, source, nbytes)

    def fill(self, address, nbytes, byte):
        ctypes.memset(address, byte, nbytes)


    def load_module(self, llvm_text):
        return EmulatedModule(llvm_text if isinstance(llvm_text, str) else llvm_text.decode())

    def function(self, module, name):
        return (module, name)

    def launcher(self, function, pointers, blocks, threads, name="", exact=False):
        """A callable that runs the launch to completion; unless `exact`, with at most
        `block_threads` threads per block."""
        module, entry = function
        for pointer in pointers:
            self.check_address(pointer, f"launch of {name or entry}")
        threads = threads if exact else min(threads, self.block_threads)
        return lambda: module.launch(entry, pointers, blocks, threads)

    def launch(self, function, pointers, blocks, threads, name="", exact=False):
        self.launcher(function, pointers, blocks, threads, name, exact)()

    def synchronize(self):
        pass

    def blas(self):
        """cuBLAS's call computed with numpy on the emulated memory (runtime/cublas.py)."""
        from .cublas import EmulatedBlas
        return EmulatedBlas(self)

    def elapsed_ms(self, run):
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) * 1e3
