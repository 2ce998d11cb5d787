"""Running a compiled GPU program: its module loaded on a device (runtime/cuda_driver.py, or
the CPU's emulation of one, runtime/emulated_cuda.py), every launch on the device's stream.

A program owns device memory for its whole life: the arena of intermediates, one buffer per
external (inputs, params, constants, outputs) and a status cell. A call copies the inputs
and params in (constants once), zeroes the status, queues the launches in order (each with
its slots' device addresses and a status cell of its own, compiler/ptx's description), copies
the outputs and the status cells out, and raises a failed check's error as the CPU runtime
does. Host params are copied in on every call: they are host arrays the caller may change
between calls. Inputs and params that are tensors on the device already are used in place
(a device-resident call, see __call__): a training step whose model is on the device copies
only its host batch in, and its results stay on the device.
"""
import numpy as np

from ember import config
from . import device_arrays
from .device_arrays import device_of
from .program_spec import collect_results, conform_array, program_error

STATUS_BYTES = 4
NO_ERROR = 0xFFFFFFFF  # a status cell's value until a check fails (kernels keep the least error number)


class CudaProgram:
    """program(inputs {node id: array}, params {name: array}) -> {node id: array}, on `device`.
    `launches`: [(entry, blocks, threads, slots, exact, first_error, partials)] with slots
    [(kind, where)]: ("arg", k) for external k, ("arena", byte offset); `exact`: the kernel
    needs exactly `threads` threads per block (others compute the same with any multiple of
    32, see emulated_cuda.py); `first_error`: what to add to the error number the launch
    reports (entries are shared between kernels of one structure, so they number errors from
    1); `partials`: bytes of a new buffer passed after the status cell (the first launch of a
    split reduction), -1 to pass the previous launch's (its second), 0 for none; an optional
    eighth item, the cuBLAS call that may replace the launch (compiler/ptx/library_gemm.py):
    the first call times both and keeps the faster (`gemm_choices`; EMBER_GPU_GEMM=cublas or
    tiles forces one)."""

    def __init__(self, device, module, spec, launches):
        self.device, self.module, self.spec = device, module, spec
        self.calls = 0
        self.resident = False  # True: every call is device-resident (results on the device), whatever its inputs
        self.arena = device.allocate(spec.arena_bytes)
        self.status = device.allocate(STATUS_BYTES * max(len(launches), 1))  # one cell per launch
        self.buffers = [device.allocate(int(np.prod(e.shape, dtype=np.int64)) * e.dtype.itemsize)
                        for e in spec.externals]
        for external, address in zip(spec.externals, self.buffers):
            if external.kind == "constant":
                device.copy_in(address, np.ascontiguousarray(np.broadcast_to(external.key, external.shape),
                                                             dtype=external.dtype))
        self.first_errors, self.partials, functions = [], [], {}
        self._plan = []  # per launch: (function, slots, blocks, threads, entry, exact, status cell, partials)
        self.gemms = {}  # launch number -> the cuBLAS call that may replace it
        self.gemm_choices = {}  # launch number -> (entry, "cublas" or "tiles", why)
        for number, (entry, blocks, threads, slots, exact, first_error, partials, *gemm) in enumerate(launches):
            if gemm and gemm[0]:
                self.gemms[number] = gemm[0]
            if entry not in functions:
                functions[entry] = device.function(module, entry)
            if partials > 0:
                self.partials.append(device.allocate(partials))
            self._plan.append((functions[entry], slots, blocks, threads, entry, exact,
                               self.status + STATUS_BYTES * number, self.partials[-1] if partials else None))
            self.first_errors.append(first_error)
        self._uses = {}  # external position -> the launches that take its address
        for number, (_, slots, *_) in enumerate(self._plan):
            for kind, where in slots:
                if kind == "arg":
                    self._uses.setdefault(where, set()).add(number)
        self._bound = list(self.buffers)  # the external addresses the launchers were built with
        self.launches = [self._launcher(number, self._bound) for number in range(len(self._plan))]

    def _launcher(self, number, buffers, choice=None):
        """Launch `number` with the externals at `buffers` (addresses by external position): its
        kernel, or with `choice` "cublas" (or that launch's choice so far) its cuBLAS call."""
        function, slots, blocks, threads, entry, exact, status, partials = self._plan[number]
        pointers = [buffers[where] if kind == "arg" else self.arena + where for kind, where in slots]
        choice = choice or self.gemm_choices.get(number, (None, None))[1]
        if choice == "cublas":
            call, blas = self.gemms[number], self.device.blas()
            a, b, c = (pointers[call[part][0]] + 4 * call[part][1] for part in ("a", "b", "c"))
            return lambda: blas.sgemm(call, a, b, c)
        pointers.append(status)
        if partials is not None:
            pointers.append(partials)
        return self.device.launcher(function, pointers, blocks, threads, entry, exact)

    def _choose_gemm(self, number, buffers):
        """Decide launch `number` between its tiled kernel and cuBLAS (its operands are ready:
        the launches before it ran) and leave its result computed."""
        entry = self._plan[number][4]
        forced, blas = config.gpu_gemm(), self.device.blas()
        kernel = self._launcher(number, buffers, "tiles")
        if forced == "tiles" or blas is None:
            choice, why = "tiles", "forced by EMBER_GPU_GEMM" if forced == "tiles" else "no cuBLAS here"
        elif forced == "cublas":
            choice, why = "cublas", "forced by EMBER_GPU_GEMM"
        elif self.device.emulated:
            choice, why = "tiles", "emulated device: not timed"
        else:
            library = self._launcher(number, buffers, "cublas")
            tiles_ms = min(self.device.elapsed_ms(kernel) for _ in range(3))
            cublas_ms = min(self.device.elapsed_ms(library) for _ in range(3))
            choice = "cublas" if cublas_ms < tiles_ms else "tiles"
            why = f"cuBLAS {cublas_ms:.3f} ms, tiles {tiles_ms:.3f} ms"
        if self.gemms[number].get("tf32"):
            why += "; TF32 tensor cores either way"
        self.gemm_choices[number] = (entry, choice, why)
        self.launches[number] = self._launcher(number, buffers)
        self.launches[number]()

    def _bind(self, buffers):
        """Rebuild only the launches whose externals moved since the last call (a device-resident
        training step's params stay put; its batch and outputs move)."""
        moved = [position for position, (old, new) in enumerate(zip(self._bound, buffers)) if old != new]
        if moved:
            self._bound = buffers
            for number in sorted(set().union(*(self._uses.get(p, ()) for p in moved))):
                self.launches[number] = self._launcher(number, buffers)

    def __call__(self, inputs, params):
        """Host inputs are copied in and outputs copied out to host arrays; when any input or
        param is already in this device's memory (runtime/device_arrays.py), the call is
        device-resident: such values are read where they are, with no copy, and the outputs
        are new device arrays that the kernels write directly."""
        device, spec = self.device, self.spec
        buffers, resident = list(self.buffers), self.resident
        for position, (external, address) in enumerate(zip(spec.externals, self.buffers)):
            if external.kind == "input":
                what, value = f"input %{external.key}", inputs[external.key]
            elif external.kind == "param":
                what, value = f"param {external.key!r}", params[external.key]
            else:
                continue
            value = getattr(value, "_data", value)
            if device_of(value) is device and value.flags.c_contiguous and value.dtype == external.dtype \
                    and value.shape == external.shape:
                buffers[position], resident = value.ctypes.data, True
            else:
                device.copy_in(address, conform_array(spec.name, value, external.shape, external.dtype, what))
        outputs = {}
        if resident:
            for position, external in enumerate(spec.externals):
                if external.kind == "output":
                    outputs[external.key] = array = device_arrays.empty(device, external.shape, external.dtype)
                    buffers[position] = array.ctypes.data if array.size else self.buffers[position]
        if self.launches:
            device.fill(self.status, STATUS_BYTES * len(self.launches), 0xFF)
        self._bind(buffers)
        if len(self.gemm_choices) < len(self.gemms):  # (the first call: choose as the launches run)
            for number, launch in enumerate(self.launches):
                if number in self.gemms and number not in self.gemm_choices:
                    self._choose_gemm(number, buffers)
                else:
                    self.launches[number]()
        else:
            for launch in self.launches:
                launch()
        if not resident:
            for external, address in zip(spec.externals, self.buffers):
                if external.kind == "output":
                    outputs[external.key] = array = np.empty(external.shape, external.dtype)
                    device.copy_out(array, address)
        self.calls += 1
        copy = (lambda array: device_arrays.to_device(device, array)) if resident else np.array
        if not self.launches:
            device.synchronize()
            return collect_results(spec.results, outputs, inputs, params, copy)
        status = np.empty(len(self.launches), np.uint32)
        device.copy_out(status, self.status)  # (waits for the launches)
        failed = np.flatnonzero(status != NO_ERROR)
        if failed.size:  # the first launch (in program order) whose check failed
            raise program_error(spec, self.first_errors[failed[0]] + int(status[failed[0]]))
        return collect_results(spec.results, outputs, inputs, params, copy)

    def launch(self):
        """Queue every launch of the program on the data already on the device (what a call
        does between its copies; benchmarks time it alone with device.elapsed_ms)."""
        for launch in self.launches:
            launch()

    def close(self):
        """Give the device memory back (also done when the program is collected)."""
        for address in [self.arena, self.status, *self.buffers, *self.partials]:
            self.device.free(address)
        self.buffers, self.launches, self.partials = [], [], []
        self.arena = self.status = None

    def __del__(self):
        if getattr(self, "arena", None) is not None:
            try:
                self.close()
            except Exception:  # the device may be gone at interpreter exit
                pass
