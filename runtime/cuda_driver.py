"""The CUDA driver API through ctypes on `libcuda.so.1`: what running PTX programs needs
(runtime/cuda_program.py), with no CUDA toolkit, pycuda or cupy at run time.

`CudaDevice` holds one device's primary context and a stream: device memory, copies,
modules loaded from PTX text (the driver compiles them for the device), launches, events.
Every failed call raises CudaError naming the call and the driver's own error name and text.
runtime/emulated_cuda.py offers the same methods on this CPU (the grid emulator), so the
program runner is tested without a GPU; `open_device` picks one.
"""
import ctypes

DRIVER_LIBRARY = "libcuda.so.1"
ATTRIBUTE_MAJOR, ATTRIBUTE_MINOR = 75, 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR
ATTRIBUTE_SMS = 16  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
MEM_ATTACH_GLOBAL = 1  # CU_MEM_ATTACH_GLOBAL: managed memory any stream may use
_DEVICES = {}


class CudaError(RuntimeError):
    """A CUDA driver call failed; the message names the call and the driver's error."""


class CudaUnavailable(CudaError):
    """No usable CUDA device here (no driver library, no device, or the driver refused)."""


def load_driver():
    """The driver library, or CudaUnavailable saying why not."""
    try:
        return ctypes.CDLL(DRIVER_LIBRARY)
    except OSError as error:
        raise CudaUnavailable(f"ember: no CUDA driver here ({DRIVER_LIBRARY} does not load: {error})") from error


class CudaDevice:
    """Device `ordinal`'s primary context, current on the threads that use it, and one stream
    on which every copy and launch of ember's programs runs in order."""

    emulated = False

    def __init__(self, ordinal=0):
        self.lib = load_driver()
        self._check(self.lib.cuInit(0), "cuInit")
        count = ctypes.c_int()
        self._check(self.lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        if ordinal >= count.value:
            raise CudaUnavailable(f"ember: CUDA device {ordinal} does not exist ({count.value} device(s) here)")
        self.ordinal = ordinal
        self.handle = ctypes.c_int()
        self._check(self.lib.cuDeviceGet(ctypes.byref(self.handle), ordinal), "cuDeviceGet")
        self.context = ctypes.c_void_p()
        self._check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.context), self.handle),
                    "cuDevicePrimaryCtxRetain")
        self.make_current()
        name = ctypes.create_string_buffer(256)
        self._check(self.lib.cuDeviceGetName(name, 256, self.handle), "cuDeviceGetName")
        self.name = name.value.decode()
        major, minor = self.attribute(ATTRIBUTE_MAJOR), self.attribute(ATTRIBUTE_MINOR)
        self.compute_capability = f"sm_{major}{minor}"
        self.multiprocessors = self.attribute(ATTRIBUTE_SMS)
        self.stream = ctypes.c_void_p()
        self._check(self.lib.cuStreamCreate(ctypes.byref(self.stream), 0), "cuStreamCreate")
        self.lib.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 6 + [ctypes.c_uint, ctypes.c_void_p,
                                                                                      ctypes.c_void_p, ctypes.c_void_p]

    # ------------------------------------------------------------------ errors
    def error_text(self, code):
        name, text = ctypes.c_char_p(), ctypes.c_char_p()
        self.lib.cuGetErrorName(code, ctypes.byref(name))
        self.lib.cuGetErrorString(code, ctypes.byref(text))
        return f"{(name.value or b'CUDA_ERROR_' + str(code).encode()).decode()}: {(text.value or b'').decode()}"

    def _check(self, code, call):
        if code != 0:
            kind = CudaUnavailable if call in ("cuInit", "cuDeviceGetCount", "cuDeviceGet") else CudaError
            raise kind(f"ember: CUDA {call} failed with {self.error_text(code)}")

    def make_current(self):
        self._check(self.lib.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")

    def attribute(self, number):
        value = ctypes.c_int()
        self._check(self.lib.cuDeviceGetAttribute(ctypes.byref(value), number, self.handle), "cuDeviceGetAttribute")
        return value.value

    # ------------------------------------------------------------------ memory
    def allocate(self, nbytes):
        """A device address of `nbytes` (at least 1) bytes."""
        address = ctypes.c_uint64()
        self._check(self.lib.cuMemAlloc_v2(ctypes.byref(address), ctypes.c_size_t(max(int(nbytes), 1))),
                    f"cuMemAlloc_v2({nbytes} bytes)")
        return address.value

    def allocate_managed(self, nbytes):
        """An address of `nbytes` bytes of unified (managed) memory, which kernels and host code
        both address: where tensors on the device live (runtime/device_arrays.py). Pages move to
        whichever side touches them; ember's host code reads them only after synchronising."""
        address = ctypes.c_uint64()
        self._check(self.lib.cuMemAllocManaged(ctypes.byref(address), ctypes.c_size_t(max(int(nbytes), 1)),
                                               MEM_ATTACH_GLOBAL), f"cuMemAllocManaged({nbytes} bytes)")
        return address.value

    def free(self, address):
        self._check(self.lib.cuMemFree_v2(ctypes.c_uint64(address)), "cuMemFree_v2")

    def copy_in(self, address, array):
        """Host array (C-contiguous) -> device memory at `address`; returns when done."""
        self._check(self.lib.cuMemcpyHtoD_v2(ctypes.c_uint64(address), ctypes.c_void_p(array.ctypes.data),
                                             ctypes.c_size_t(array.nbytes)), "cuMemcpyHtoD_v2")

    def copy_out(self, array, address):
        """Device memory at `address` -> host array (C-contiguous, writable), after the stream's work."""
        self.synchronize()
        self._check(self.lib.cuMemcpyDtoH_v2(ctypes.c_void_p(array.ctypes.data), ctypes.c_uint64(address),
                                             ctypes.c_size_t(array.nbytes)), "cuMemcpyDtoH_v2")

    def copy_on_device(self, target, source, nbytes):
        self._check(self.lib.cuMemcpyDtoDAsync_v2(ctypes.c_uint64(target), ctypes.c_uint64(source),
                                                  ctypes.c_size_t(nbytes), self.stream), "cuMemcpyDtoDAsync_v2")

    def fill(self, address, nbytes, byte):
        """Set `nbytes` bytes at `address` to `byte`, on the stream."""
        self._check(self.lib.cuMemsetD8Async(ctypes.c_uint64(address), ctypes.c_ubyte(byte), ctypes.c_size_t(nbytes),
                                             self.stream), "cuMemsetD8Async")


    # ------------------------------------------------------------------ code
    def load_module(self, ptx):
        """A module handle from PTX text (the driver compiles it for this device)."""
        module = ctypes.c_void_p()
        source = ptx if isinstance(ptx, bytes) else ptx.encode()
        self._check(self.lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(source + b"\0")),
                    "cuModuleLoadData")
        return module

    def function(self, module, name):
        handle = ctypes.c_void_p()
        self._check(self.lib.cuModuleGetFunction(ctypes.byref(handle), module, name.encode()),
                    f"cuModuleGetFunction({name})")
        return handle

    def launcher(self, function, pointers, blocks, threads, name="", exact=True):
        """A callable that launches `function` over `blocks` x `threads` on the stream with
        these device addresses as its arguments (asynchronous: a later copy_out or synchronize
        waits for it). The argument array is built once: a call costs one cuLaunchKernel."""
        values = [ctypes.c_uint64(p) for p in pointers]
        parameters = (ctypes.c_void_p * max(len(values), 1))(*[ctypes.addressof(v) for v in values])
        arguments = (function, blocks, 1, 1, threads, 1, 1, 0, self.stream, ctypes.cast(parameters, ctypes.c_void_p),
                     None)
        launch, check = self.lib.cuLaunchKernel, self._check
        what = f"cuLaunchKernel({name or 'kernel'}, {blocks} blocks of {threads} threads)"

        def run():
            code = launch(*arguments)
            if code:
                check(code, what)
        run.keep = (values, parameters)
        return run

    def launch(self, function, pointers, blocks, threads, name="", exact=True):
        """Launch once (see `launcher`)."""
        self.launcher(function, pointers, blocks, threads, name, exact)()

    def synchronize(self):
        self._check(self.lib.cuStreamSynchronize(self.stream), "cuStreamSynchronize")

    def blas(self):
        """The device's cuBLAS handle (runtime/cublas.py), or None where no cuBLAS loads."""
        if not hasattr(self, "_blas"):
            from .cublas import Cublas, CublasUnavailable
            try:
                self._blas = Cublas(self)
            except CublasUnavailable:
                self._blas = None
        return self._blas

    # ------------------------------------------------------------------ timing
    def elapsed_ms(self, run):
        """Milliseconds the work `run()` queues on the stream takes, timed by CUDA events."""
        start, stop = ctypes.c_void_p(), ctypes.c_void_p()
        self._check(self.lib.cuEventCreate(ctypes.byref(start), 0), "cuEventCreate")
        self._check(self.lib.cuEventCreate(ctypes.byref(stop), 0), "cuEventCreate")
        self._check(self.lib.cuEventRecord(start, self.stream), "cuEventRecord")
        run()
        self._check(self.lib.cuEventRecord(stop, self.stream), "cuEventRecord")
        self._check(self.lib.cuEventSynchronize(stop), "cuEventSynchronize")
        elapsed = ctypes.c_float()
        self._check(self.lib.cuEventElapsedTime(ctypes.byref(elapsed), start, stop), "cuEventElapsedTime")
        self.lib.cuEventDestroy_v2(start)
        self.lib.cuEventDestroy_v2(stop)
        return elapsed.value


def open_device(ordinal=0, emulated=False):
    """The device ember's GPU programs run on, opened once: the real one, or with `emulated`
    the CPU's grid emulator (runtime/emulated_cuda.py). CudaUnavailable says why there is none."""
    key = ("emulated" if emulated else "cuda", ordinal)
    if key not in _DEVICES:
        if emulated:
            from .emulated_cuda import EmulatedCudaDevice
            _DEVICES[key] = EmulatedCudaDevice()
        else:
            _DEVICES[key] = CudaDevice(ordinal)
    return _DEVICES[key]


def cuda_available():
    """Whether a real CUDA device can be opened here (ember.cuda.is_available())."""
    try:
        open_device(0)
        return True
    except CudaError:
        return False
