"""libgomp's entry points as the CPU target's generated code and kernels declare them.

Parallel loops (compiler/cpu/program.py), sgemm and the convolutions split work across
threads with GOMP_parallel; runtime/thread_runtime.py loads libgomp into the process.
"""
from llvmlite import ir

from ..llvm.loops import I8_PTR, I32, VOID, declare


class GOMP:
    """libgomp's entry points as declared in one module."""

    def __init__(self, module):
        task_type = ir.FunctionType(VOID, [I8_PTR]).as_pointer()
        self.parallel = declare(module, "GOMP_parallel", VOID, [task_type, I8_PTR, I32, I32])
        self.thread_num = declare(module, "omp_get_thread_num", I32, [])
        self.num_threads = declare(module, "omp_get_num_threads", I32, [])
        self.max_threads = declare(module, "omp_get_max_threads", I32, [])
