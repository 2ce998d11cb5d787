"""`ember.backends.cuda`: PyTorch's switches for float32 matrix products on a GPU.

`matmul.allow_tf32` (default False) lets the GPU target compute float32 matrix products on TF32
tensor cores (compiler/ptx/tensor_cores.py), as PyTorch's does; it is the same switch as
`ember.set_float32_matmul_precision("high")`. Convolutions follow `ember.backends.cudnn.allow_tf32`
(default True, as in PyTorch). A compiled function recompiles when a switch changes.
"""
from . import cudnn

_PRECISION = ["highest"]  # ember.set_float32_matmul_precision's setting


class _MatmulSwitches:
    @property
    def allow_tf32(self):
        return _PRECISION[0] != "highest"

    @allow_tf32.setter
    def allow_tf32(self, value):
        _PRECISION[0] = "high" if value else "highest"

    def __repr__(self):
        return f"<ember.backends.cuda.matmul allow_tf32={self.allow_tf32}>"


matmul = _MatmulSwitches()


def is_built():
    """ember's GPU target is part of every build (it needs only llvmlite; running needs a GPU)."""
    return True


def tf32_switches():
    """(matrix products may use TF32, convolutions may use TF32), as set now."""
    return matmul.allow_tf32, bool(cudnn.allow_tf32)
