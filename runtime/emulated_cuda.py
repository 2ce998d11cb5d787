"""runtime/cuda_driver.py's CudaDevice on this CPU: host memory stands in for device memory
and runtime/grid_emulator.py runs the launches, so compiled GPU programs, their runner
(runtime/cuda_program.py) and `ember.compile(..., backend="ptx-emulated")` run and are
tested on any machine. Modules are the PTX target's LLVM module text (before NVPTX code
generation), not PTX: the emulator retargets that module to the host.
"""
import ctypes
import time

import numpy as np

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
        self._memory = {}  # address -> the numpy buffer that owns it

    def allocate(self, nbytes):
        buffer = np.zeros(max(int(nbytes), 1) + ALIGNMENT, np.uint8)
        address = -(-buffer.ctypes.data // ALIGNMENT) * ALIGNMENT
        self._memory[address] = buffer
        return address

    def free(self, address):
        del self._memory[address]

    def copy_in(self, address, array):
        ctypes.memmove(address, array.ctypes.data, array.nbytes)

    def copy_out(self, array, address):
        ctypes.memmove(array.ctypes.data, address, array.nbytes)

    def copy_on_device(self, target, source, nbytes):
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
        threads = threads if exact else min(threads, self.block_threads)
        return lambda: module.launch(entry, pointers, blocks, threads)

    def launch(self, function, pointers, blocks, threads, name="", exact=False):
        self.launcher(function, pointers, blocks, threads, name, exact)()

    def synchronize(self):
        pass

    def elapsed_ms(self, run):
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) * 1e3
