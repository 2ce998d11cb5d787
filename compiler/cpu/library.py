"""The CPU target's library calls as lowering sees them: the ops that call sgemm.py and
conv.py instead of running as loops, how much scratch a convolution call needs, and whether
its geometry takes the direct kernel (then it calls `ember_<kind>_direct`), and which batched
matrix products share out their batch over the threads instead of each product's rows."""
from ..loop_ir import CONV_KINDS


class CpuLibrary:
    calls = frozenset({"matmul", *CONV_KINDS})

    def conv_workspace_bytes(self, kind, x_shape, w_shape, stride, padding, dilation, groups, slots):
        from .conv import conv2d_workspace_bytes
        return conv2d_workspace_bytes(kind, x_shape, w_shape, stride, padding, dilation, groups, slots)

    def direct_conv_applies(self, kind, kernel, stride, padding, dilation):
        from .conv import direct_kernel_applies
        return direct_kernel_applies(kind, kernel, stride, padding, dilation)

    def gemm_runs_alone(self, m, n, k):
        """Does one sgemm of this size run on the calling thread (too small to share out)?
        A batch of such products then runs as a parallel loop over the batch."""
        from .sgemm import PARALLEL_MIN_FLOPS
        return 2 * m * n * k < PARALLEL_MIN_FLOPS
