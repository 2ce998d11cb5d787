/* A stand-in for libcublas.so with the calls ember's runtime makes (runtime/cublas.py), over host
   memory (tests/fake_libcuda.c's device addresses are host addresses): the strided-batched
   float32 product computed naively in column-major order, as cuBLAS defines it. It lets
   tests/test_gpu_library_gemm.py check the ctypes bindings (argument order and types,
   transposes, leading dimensions, batch strides) without a GPU. Built by the test. */
#include <stdint.h>

static int calls;

int cublasCreate_v2(void **handle) { *handle = (void *)0x4321; return 0; }
int cublasDestroy_v2(void *handle) { return handle == (void *)0x4321 ? 0 : 7; }
int cublasSetStream_v2(void *handle, void *stream) { return stream == (void *)0x5678 ? 0 : 7; }
int cublasSetMathMode(void *handle, int mode) { return mode == 0 || mode == 3 ? 0 : 7; }
const char *cublasGetStatusString(int status) { return status == 7 ? "CUBLAS_STATUS_INVALID_VALUE" : "?"; }
int fake_cublas_calls(void) { return calls; }

int cublasSgemmStridedBatched(void *handle, int transa, int transb, int m, int n, int k, const float *alpha,
                              const float *a, int lda, long long stride_a, const float *b, int ldb,
                              long long stride_b, const float *beta, float *c, int ldc, long long stride_c,
                              int batches) {
    if (handle != (void *)0x4321 || m <= 0 || n <= 0 || k <= 0 || ldc < m) return 7;
    if (lda < (transa ? k : m) || ldb < (transb ? n : k)) return 7;
    calls++;
    for (int batch = 0; batch < batches; batch++) {
        const float *A = a + batch * stride_a, *B = b + batch * stride_b;
        float *C = c + batch * stride_c;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double sum = 0;
                for (int r = 0; r < k; r++)
                    sum += (double)(transa ? A[r + i * lda] : A[i + r * lda]) * (transb ? B[j + r * ldb] : B[r + j * ldb]);
                C[i + j * ldc] = (float)(*alpha * sum + (*beta == 0 ? 0 : *beta * C[i + j * ldc]));
            }
    }
    return 0;
}
