"""ember: a PyTorch-style deep-learning framework whose models compile to machine code.

`import ember as torch` gives the eager API (Tensor, autograd, nn, optim, utils.data);
`ember.compile` records what ran into an IR graph and compiles it (see DESIGN.md).
"""
import builtins as _builtins
import sys as _sys

import numpy as _np

__version__ = "0.1.0"

from ember import dtypes as _dtypes
from ember.dtypes import (bool_ as bool, uint8, int8, int16, int32, int64, float16, float32, float64,  # noqa: A001
                          half, float, double, short, int, long, DType as dtype)
from ember.ops import OpError
from ember.frontend import dispatch as _dispatch  # installs the dispatcher
from ember.frontend.tensor import Tensor, Size, Device as device
from ember.frontend import autograd
from ember.frontend.autograd import no_grad, enable_grad, set_grad_enabled, is_grad_enabled, inference_mode
from ember.frontend.creation import (tensor, as_tensor, from_numpy, zeros, ones, empty, full, zeros_like,
                                     ones_like, empty_like, full_like, arange, linspace, logspace, eye, rand,
                                     randn, randint, randperm, rand_like, randn_like, randint_like,
                                     FloatTensor, DoubleTensor, LongTensor, IntTensor, BoolTensor, ByteTensor)
from ember.frontend.random import Generator, manual_seed, seed, initial_seed, get_rng_state, set_rng_state
from ember.frontend.math_ops import (add, sub, subtract, mul, multiply, div, divide, true_divide, floor_divide,
                                     remainder, pow, maximum, minimum, neg, negative, eq, ne, lt, le, gt, ge,
                                     greater, greater_equal, less, less_equal, not_equal, logical_and,
                                     logical_or, logical_xor, logical_not, exp, log, log1p, expm1, log2, log10,
                                     exp2, sqrt, rsqrt, reciprocal, sin, cos, tan, tanh, sinh, cosh, sigmoid, erf,
                                     abs, sign, relu, floor, ceil, round, trunc, frac, square, where, clamp, clip,
                                     clamp_min, clamp_max, lerp, isnan, isinf, isfinite, nan_to_num, addcmul,
                                     addcdiv, clone)
from ember.frontend.reductions import (sum, mean, max, min, amax, amin, argmax, argmin, prod, var, std,
                                       var_mean, std_mean, norm, logsumexp, all, any, count_nonzero, cumsum,
                                       aminmax, dist)
from ember.frontend.shape_ops import (reshape, permute, transpose, swapaxes, swapdims, t, movedim, flatten,
                                      unflatten, unsqueeze, squeeze, broadcast_to, broadcast_tensors, cat,
                                      concat, concatenate, stack, hstack, vstack, split, chunk, unbind, flip,
                                      fliplr, flipud, roll, narrow, gather, take_along_dim, index_select,
                                      scatter_add, tril, triu, tile)
from ember.frontend.indexing import nonzero, masked_fill, masked_select, argwhere
from ember.frontend.shape_ops import scatter, index_add, repeat_interleave, diag
from ember.frontend.reductions import median  # (the matrix trace is Tensor.trace(); ember.trace records IR)
from ember.frontend.math_ops import fmod
from ember.frontend.linalg import matmul, mm, bmm, mv, dot, inner, outer, ger, addmm, einsum, cross, svd
from ember.frontend.linalg import linalg
from ember.frontend.sorting import sort, argsort, topk, unique, kthvalue, msort

from ember.frontend import nn, optim  # noqa: E402
from ember.frontend.tracer import trace  # noqa: E402
from ember.frontend.jit import compile, explain  # noqa: E402
from ember import ir  # noqa: E402
from ember import cuda, backends, accelerator, functional  # noqa: E402
from ember.functional import broadcast_shapes, meshgrid, tensordot, atleast_1d, atleast_2d  # noqa: E402
from ember.frontend import utils  # noqa: E402
from ember.frontend import transforms  # noqa: E402
from ember.frontend.serialization import save, load  # noqa: E402


def _alias(name, module):
    """Make `import ember.nn` (etc.) find the frontend module: one definition, two names."""
    _sys.modules[f"ember.{name}"] = module


for _name in ("nn", "optim", "autograd", "utils", "transforms"):
    _alias(_name, globals()[_name])
for _sub in ("nn.functional", "nn.init", "nn.parameter", "nn.modules", "optim.lr_scheduler", "utils.data"):
    _module = __import__(f"ember.frontend.{_sub}", fromlist=["_"])
    _alias(_sub, _module)
linalg_module = linalg


def is_tensor(obj):
    return isinstance(obj, Tensor)


def numel(input):
    return input.numel()


def is_floating_point(input):
    return input.is_floating_point()


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    return _builtins.bool(_np.allclose(input._data, other._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    return Tensor._wrap(_np.isclose(input._data, other._data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def equal(input, other):
    return tuple(input.shape) == tuple(other.shape) and _builtins.bool((input._data == other._data).all())


def set_default_dtype(d):
    d = _dtypes.as_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"only floating-point types are supported as the default type, got {d}")
    _dtypes.defaults.floating = d


def get_default_dtype():
    return _dtypes.defaults.floating


def set_default_device(device_name):
    if device_name is not None and device(device_name).type not in ("cpu",):
        raise RuntimeError(f"ember's eager tensors live on the CPU; cannot default to {device_name}")


def get_default_device():
    return device("cpu")


def promote_types(type1, type2):
    return _dtypes.promote(type1, type2)


def result_type(tensor1, tensor2):
    from ember.frontend.math_ops import _operand_dtypes
    return _dtypes.result_type(*_operand_dtypes((tensor1, tensor2)))


def can_cast(from_, to):
    return _dtypes.promote(from_, to) is to or from_.category <= to.category
