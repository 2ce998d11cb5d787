/* A stand-in for libcuda.so.1 with the driver calls ember's runtime makes (runtime/cuda_driver.py),
   over host memory: device addresses are malloc'd host addresses, copies are memcpy, a launch is
   recorded (function name, grid, block, argument values) instead of run. It lets
   tests/test_ptx_runtime.py check the ctypes bindings (argument types, launch parameters,
   error names and texts) without a GPU. Built by the test with the C compiler. */
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

typedef int CUresult;
enum { SUCCESS = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, NOT_FOUND = 500 };
#define LIMIT (1u << 30)

static char last_name[256];
static unsigned grid_x, block_x, argument_count = 4;
static uint64_t arguments[64];
static unsigned launches;

CUresult cuInit(unsigned flags) { return flags ? INVALID_VALUE : SUCCESS; }
CUresult cuDeviceGetCount(int *count) { *count = 1; return SUCCESS; }
CUresult cuDeviceGet(int *device, int ordinal) { *device = ordinal; return SUCCESS; }
CUresult cuDevicePrimaryCtxRetain(void **context, int device) { *context = (void *)0x1234; return SUCCESS; }
CUresult cuCtxSetCurrent(void *context) { return context == (void *)0x1234 ? SUCCESS : INVALID_VALUE; }
CUresult cuDeviceGetName(char *name, int length, int device) { strncpy(name, "Fake GPU", length); return SUCCESS; }
CUresult cuDeviceGetAttribute(int *value, int attribute, int device) {
    *value = attribute == 75 ? 9 : attribute == 76 ? 0 : attribute == 16 ? 132 : 0;
    return SUCCESS;
}
CUresult cuStreamCreate(void **stream, unsigned flags) { *stream = (void *)0x5678; return SUCCESS; }
CUresult cuStreamSynchronize(void *stream) { return stream == (void *)0x5678 ? SUCCESS : INVALID_VALUE; }
CUresult cuGetErrorName(CUresult code, const char **name) {
    *name = code == OUT_OF_MEMORY ? "CUDA_ERROR_OUT_OF_MEMORY" : code == NOT_FOUND ? "CUDA_ERROR_NOT_FOUND"
                                                                                   : "CUDA_ERROR_INVALID_VALUE";
    return SUCCESS;
}
CUresult cuGetErrorString(CUresult code, const char **text) {
    *text = code == OUT_OF_MEMORY ? "out of memory" : code == NOT_FOUND ? "named symbol not found" : "invalid argument";
    return SUCCESS;
}
CUresult cuMemAlloc_v2(uint64_t *address, size_t bytes) {
    if (bytes > LIMIT) return OUT_OF_MEMORY;
    *address = (uint64_t)(uintptr_t)calloc(1, bytes);
    return SUCCESS;
}
CUresult cuMemAllocManaged(uint64_t *address, size_t bytes, unsigned flags) {
    if (flags != 1) return INVALID_VALUE;
    return cuMemAlloc_v2(address, bytes);
}
CUresult cuMemFree_v2(uint64_t address) { free((void *)(uintptr_t)address); return SUCCESS; }
CUresult cuMemcpyHtoD_v2(uint64_t target, const void *source, size_t bytes) {
    memcpy((void *)(uintptr_t)target, source, bytes); return SUCCESS;
}
CUresult cuMemcpyDtoH_v2(void *target, uint64_t source, size_t bytes) {
    memcpy(target, (void *)(uintptr_t)source, bytes); return SUCCESS;
}
CUresult cuMemcpyDtoDAsync_v2(uint64_t target, uint64_t source, size_t bytes, void *stream) {
    memcpy((void *)(uintptr_t)target, (void *)(uintptr_t)source, bytes); return SUCCESS;
}
CUresult cuMemsetD8Async(uint64_t target, unsigned char value, size_t bytes, void *stream) {
    memset((void *)(uintptr_t)target, value, bytes); return SUCCESS;
}
CUresult cuModuleLoadData(void **module, const void *image) {
    if (strncmp((const char *)image, "//", 2) != 0 && strstr((const char *)image, ".version") == NULL)
        return INVALID_VALUE;
    *module = (void *)strdup((const char *)image);
    return SUCCESS;
}
CUresult cuModuleGetFunction(void **function, void *module, const char *name) {
    char pattern[300];
    snprintf(pattern, sizeof pattern, ".entry %s(", name);
    if (strstr((const char *)module, pattern) == NULL) return NOT_FOUND;
    *function = (void *)strdup(name);
    return SUCCESS;
}
CUresult cuLaunchKernel(void *function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shared, void *stream, void **parameters, void **extra) {
    if (gy != 1 || gz != 1 || by != 1 || bz != 1 || stream != (void *)0x5678 || bx > 1024) return INVALID_VALUE;
    strncpy(last_name, (const char *)function, sizeof last_name - 1);
    grid_x = gx, block_x = bx, launches++;
    for (unsigned k = 0; k < argument_count && k < 64; k++) arguments[k] = *(uint64_t *)parameters[k];
    return SUCCESS;
}
CUresult cuEventCreate(void **event, unsigned flags) { *event = malloc(1); return SUCCESS; }
CUresult cuEventRecord(void *event, void *stream) { return SUCCESS; }
CUresult cuEventSynchronize(void *event) { return SUCCESS; }
CUresult cuEventElapsedTime(float *milliseconds, void *start, void *stop) { *milliseconds = 0.5f; return SUCCESS; }
CUresult cuEventDestroy_v2(void *event) { free(event); return SUCCESS; }

/* what the test reads back */
void fake_set_argument_count(unsigned count) { argument_count = count; }
const char *fake_last_name(void) { return last_name; }
unsigned fake_grid(void) { return grid_x; }
unsigned fake_block(void) { return block_x; }
unsigned fake_launches(void) { return launches; }
uint64_t fake_argument(unsigned k) { return arguments[k]; }
