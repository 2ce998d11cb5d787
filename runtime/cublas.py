"""cuBLAS through ctypes: the strided-batched float32 product a GPU program may call instead of
its tiled kernel (compiler/ptx/library_gemm.py says which launches may, runtime/cuda_program.py
chooses), on the device's stream. No toolkit is needed beyond `libcublas.so` itself (the CUDA
toolkit's, or the `nvidia-cublas` wheel's); without it programs keep their tiled kernels.

`EmulatedBlas` is the same call for the grid emulator (runtime/emulated_cuda.py): numpy over the
emulated device memory, so the call's arguments (transposes, leading dimensions, batch strides)
are checked by tests on any machine.
"""
import ctypes
import glob
import os

import numpy as np

LIBRARIES = ("libcublas.so", "libcublas.so.13", "libcublas.so.12", "libcublas.so.11")
OPERATIONS = {"N": 0, "T": 1}  # CUBLAS_OP_N, CUBLAS_OP_T
MATH_MODES = {False: 0, True: 3}  # CUBLAS_DEFAULT_MATH, CUBLAS_TF32_TENSOR_OP_MATH


class CublasUnavailable(RuntimeError):
    """No cuBLAS library loads here."""


def _load():
    candidates = list(LIBRARIES)
    for folder in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        candidates += sorted(glob.glob(os.path.join(folder, "libcublas.so*")))
    errors = []
    for name in candidates:
        try:
            return ctypes.CDLL(name)
        except OSError as error:
            errors.append(str(error))
    raise CublasUnavailable(f"ember: no cuBLAS library here ({'; '.join(errors[:2])})")


class Cublas:
    """A cuBLAS handle on `device`'s stream."""

    def __init__(self, device):
        self.device = device
        self.lib = _load()
        self.handle = ctypes.c_void_p()
        self._check(self.lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate_v2")
        self._check(self.lib.cublasSetStream_v2(self.handle, device.stream), "cublasSetStream_v2")
        self.lib.cublasSgemmStridedBatched.argtypes = (
            [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
            + [ctypes.c_uint64, ctypes.c_int, ctypes.c_longlong] * 2
            + [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_longlong, ctypes.c_int])
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def _check(self, status, call):
        if status:
            text = ""
            if hasattr(self.lib, "cublasGetStatusString"):
                self.lib.cublasGetStatusString.restype = ctypes.c_char_p
                text = ": " + (self.lib.cublasGetStatusString(status) or b"").decode()
            raise RuntimeError(f"ember: cuBLAS {call} failed with status {status}{text}")

    def sgemm(self, call, a, b, c):
        """Queue `call` (compiler/ptx/library_gemm.py's dict) with operands at device
        addresses a, b and the result at c (byte addresses of element 0)."""
        (_, _, a_op, lda, a_batch), (_, _, b_op, ldb, b_batch), (_, _, ldc, c_batch) = call["a"], call["b"], call["c"]
        self._check(self.lib.cublasSetMathMode(self.handle, MATH_MODES[bool(call.get("tf32"))]), "cublasSetMathMode")
        status = self.lib.cublasSgemmStridedBatched(
            self.handle, OPERATIONS[a_op], OPERATIONS[b_op], call["m"], call["n"], call["k"], ctypes.byref(self.alpha),
            a, lda, a_batch, b, ldb, b_batch, ctypes.byref(self.beta), c, ldc, c_batch, call["batches"])
        self._check(status, f"cublasSgemmStridedBatched({call['m']}x{call['n']}x{call['k']}, {call['batches']} batches)")


def _tf32(matrix):
    """float32 values rounded to TF32 (ties away from zero; infinities and NaN kept)."""
    bits = np.ascontiguousarray(matrix, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(matrix), rounded, matrix)


class EmulatedBlas:
    """Cublas.sgemm for the grid emulator: numpy on the emulated device's memory."""

    def __init__(self, device):
        self.device = device

    def _matrix(self, address, rows, cols, ld, what):
        """The column-major rows x cols float32 matrix at `address` with leading dimension `ld`."""
        self.device.check_address(address, f"cuBLAS's {what}")
        span = (cols - 1) * ld + rows
        memory = (ctypes.c_float * span).from_address(address)
        return np.lib.stride_tricks.as_strided(np.ctypeslib.as_array(memory), (rows, cols), (4, 4 * ld))

    def sgemm(self, call, a, b, c):
        (_, _, a_op, lda, a_batch), (_, _, b_op, ldb, b_batch), (_, _, ldc, c_batch) = call["a"], call["b"], call["c"]
        m, n, k = call["m"], call["n"], call["k"]
        for batch in range(call["batches"]):
            left = self._matrix(a + 4 * batch * a_batch, *((m, k) if a_op == "N" else (k, m)), lda, "A")
            right = self._matrix(b + 4 * batch * b_batch, *((k, n) if b_op == "N" else (n, k)), ldb, "B")
            out = self._matrix(c + 4 * batch * c_batch, m, n, ldc, "C")
            left, right = (left if a_op == "N" else left.T), (right if b_op == "N" else right.T)
            if call.get("tf32"):  # (operands rounded as cvt.rna.tf32.f32 does, sums in float32)
                left, right = _tf32(left), _tf32(right)
            out[...] = left @ right
