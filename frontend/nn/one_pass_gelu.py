"""Eager GELU (the exact, erf form) of a large float32 CPU tensor in one pass each way.

Composed of primitives, GELU takes five passes over memory forward and nine backward (13 of
an eager GPT step's 80 ms on this project's 2-core machine). Here, outside any trace, a
tensor of at least eager_compiled_ops.SMALL elements goes through one compiled program
forward and one backward (frontend/eager_compiled_ops.ChunkedProgram, the same loop code
ember.compile writes), attached to autograd as a Function. The backward is PyTorch's formula,
dy * (cdf + x * pdf); a double backward (create_graph) composes differentiable primitives.
Traces always compose primitives: compiled programs fuse them anyway.
"""
import math

from ember.runtime import device_arrays
from ..custom_function import Function
from ..dispatch import STATE
from ..eager_compiled_ops import ChunkedProgram
from .. import math_ops as M
from ..tensor import Tensor

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_PDF_SCALE = 2.0 / math.sqrt(math.pi) * _SQRT1_2 * 0.5  # 1/sqrt(2 pi)


def composed_gelu(x):
    return M.mul(M.mul(x, 0.5), M.add(M.erf(M.mul(x, _SQRT1_2)), 1.0))


def composed_gelu_grad(x, g):
    """dy * (cdf + x * pdf), PyTorch's GeluBackward (approximate='none')."""
    cdf = M.mul(M.add(M.erf(M.mul(x, _SQRT1_2)), 1.0), 0.5)
    pdf = M.mul(M.exp(M.mul(M.mul(x, x), -0.5)), _PDF_SCALE)
    return M.mul(g, M.add(cdf, M.mul(x, pdf)))


GELU_FORWARD = ChunkedProgram("gelu", composed_gelu, 1)
GELU_BACKWARD = ChunkedProgram("gelu_backward", composed_gelu_grad, 2)


class Gelu(Function):  # (its grad_fn reads GeluBackward0, as PyTorch's)
    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x)
        return Tensor._wrap(y)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if not STATE.grad_enabled and GELU_BACKWARD.applies(x._data, g._data):
            out = GELU_BACKWARD(x._data, g._data)
            if out is not None:
                return Tensor._wrap(out), None
        return composed_gelu_grad(x, g), None


def one_pass_gelu(x):
    """GELU of `x` through the compiled programs, or None where they do not apply (a trace, a
    small or non-float32 tensor, a GPU tensor, no compiler here)."""
    if STATE.recorder is not None or type(x) is not Tensor or not GELU_FORWARD.applies(x._data) \
            or (device_arrays.in_use and x.is_cuda):
        return None
    y = GELU_FORWARD(x._data)
    if y is None:
        return None
    return Gelu.apply(x, y)  # (the result is made in forward: an argument returned would be a detached alias)
