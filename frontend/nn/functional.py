"""ember.nn.functional: the stateless functions behind the layers (torch.nn.functional).

Every function is a composite of Tensor operations and primitives, so autograd and the
tracer see through it. Convolution and pooling live in functional_conv, losses in
functional_loss; both are re-exported here.
"""
import math

import numpy as np

from ..autograd import saves_like_pytorch
from ..low_precision import computes_in_float32

from ember import dtypes
from ember.ops import PRIMITIVES as P
from ember.frontend.autograd import no_grad
from ember.frontend.tensor import Tensor
from ember.frontend import math_ops as M
from ember.frontend import reductions as R
from ember.frontend import shape_ops as S
from ember.frontend.linalg import cpp_type_name, matmul, scalar_type_name
from .functional_conv import (conv1d, conv2d, avg_pool1d, avg_pool2d, adaptive_avg_pool1d,  # noqa: F401
                              adaptive_avg_pool2d, where_named, pair)
from .functional_loss import (mse_loss, l1_loss, smooth_l1_loss, huber_loss, cross_entropy, nll_loss,  # noqa: F401
                              binary_cross_entropy, binary_cross_entropy_with_logits, kl_div,
                              soft_margin_loss)
from .embedding import embedding, embedding_bag  # noqa: F401
from .eager_layer_norm import eager_layer_norm
from .eager_linear import eager_linear
from .one_pass_gelu import composed_gelu, one_pass_gelu
from .functional_attention import scaled_dot_product_attention, multi_head_attention_forward  # noqa: F401
from .functional_conv_transpose import conv_transpose1d, conv_transpose2d  # noqa: F401
from .functional_conv3d import conv3d, conv_transpose3d, max_pool3d, avg_pool3d, adaptive_avg_pool3d  # noqa: F401
from .functional_pool_more import (max_pool1d, max_pool2d, max_pool1d_with_indices,  # noqa: F401
                                   max_pool2d_with_indices, max_pool3d_with_indices, adaptive_max_pool1d,
                                   adaptive_max_pool2d, adaptive_max_pool3d, adaptive_max_pool1d_with_indices,
                                   adaptive_max_pool2d_with_indices, adaptive_max_pool3d_with_indices,
                                   max_unpool1d, max_unpool2d, max_unpool3d, lp_pool1d, lp_pool2d, lp_pool3d)
from .functional_resize import interpolate, pixel_shuffle, pixel_unshuffle  # noqa: F401
from .padding import pad  # noqa: F401
from .instance_norm import instance_norm  # noqa: F401
from .fold import unfold, fold  # noqa: F401
from .functional_dropout import dropout1d, dropout2d, dropout3d  # noqa: F401
from .functional_activation_more import (hardshrink, softshrink, tanhshrink, rrelu, rrelu_, elu_, celu_,  # noqa: F401
                                         selu_, leaky_relu_, hardtanh_, threshold_, softmin, gumbel_softmax,
                                         channel_shuffle, local_response_norm, feature_alpha_dropout, upsample,
                                         upsample_nearest, upsample_bilinear)
from .functional_loss_more import (cosine_embedding_loss, hinge_embedding_loss, margin_ranking_loss,  # noqa: F401
                                   multi_margin_loss, multilabel_margin_loss, multilabel_soft_margin_loss,
                                   poisson_nll_loss, gaussian_nll_loss, triplet_margin_loss,
                                   triplet_margin_with_distance_loss, cosine_similarity, pairwise_distance, pdist)


def _shape_text(t):
    return f"{t.dtype.short}[{','.join(str(d) for d in t.shape)}]"


# ----------------------------------------------------------------------------- linear

def _dtype_mismatch(op, torch_words, named):
    """The error for operands of two dtypes (PyTorch's layers do not promote): PyTorch's
    wording first, so its users recognise it, then every operand's dtype and shape."""
    listed = ", ".join(f"{name} {_shape_text(t)}" for name, t in named if t is not None)
    return RuntimeError(f"{where_named(op)}: {torch_words}: {listed}")


def linear(input, weight, bias=None):
    """y = x @ weight.T + bias, for input [..., in_features] and weight [out_features, in_features]."""
    if input._data.dtype != weight._data.dtype:  # an int64 input or a float64 model: no silent promotion
        raise _dtype_mismatch("linear", f"mat1 and mat2 must have the same dtype, but got "
                                        f"{scalar_type_name(input.dtype)} and {scalar_type_name(weight.dtype)}",
                              [("input", input), ("weight", weight)])
    if bias is not None and bias._data.dtype != input._data.dtype:
        raise _dtype_mismatch("linear", f"self and mat2 must have the same dtype, but got "
                                        f"{scalar_type_name(bias.dtype)} and {scalar_type_name(weight.dtype)}",
                              [("input", input), ("weight", weight), ("bias", bias)])
    if input.shape[-1:] != weight.shape[-1:] and weight.ndim == 2:
        raise RuntimeError(f"{where_named('linear')}: input {_shape_text(input)} has {input.shape[-1]} "
                           f"features, weight {_shape_text(weight)} expects {weight.shape[-1]}")
    fast = eager_linear(input, weight, bias)  # (eager: one autograd node)
    if fast is not None:
        return fast
    out = matmul(input, S.t(weight)) if weight.ndim == 2 else matmul(input, weight)
    if bias is not None:
        out = M.add(out, bias)
    return out


def bilinear(input1, input2, weight, bias=None):
    """y[..., k] = x1 @ weight[k] @ x2 + bias[k], for weight [out, in1, in2]."""
    named = [("input1", input1), ("input2", input2), ("weight", weight), ("bias", bias)]
    if any(t is not None and t.dtype is not weight.dtype for _, t in named):
        raise _dtype_mismatch("bilinear", "All tensors must have the same dtype, got " + ", ".join(
            f"{name}: {cpp_type_name(t.dtype)}" for name, t in named if t is not None), named)
    out_features, in1, in2 = weight.shape
    lead = tuple(input1.shape[:-1])
    x1 = S.reshape(input1, (-1, in1))
    x2 = S.reshape(input2, (-1, 1, in2))
    mixed = matmul(x1, S.reshape(S.permute(weight, (1, 0, 2)), (in1, out_features * in2)))
    out = R.sum(M.mul(S.reshape(mixed, (-1, out_features, in2)), x2), -1)
    out = S.reshape(out, lead + (out_features,))
    return out if bias is None else M.add(out, bias)


# ----------------------------------------------------------------------------- activations

def relu(input, inplace=False):
    return _maybe_inplace(input, lambda x: P["relu"].bind(x) if x.is_floating_point() else M.relu(x), inplace)


def _maybe_inplace(input, compute, inplace):
    """compute(input), or with inplace=True written into `input` through the in-place machinery
    (which hands `compute` the value before the write, so gradients are taken from it)."""
    if not inplace:
        return compute(input)
    return input._inplace(compute, "inplace activation")


def _in_place_form(name):
    """The torch-exact in-place variant (elu_, celu_, ...: they also check their saved result)."""
    from . import functional_activation_more
    return getattr(functional_activation_more, name)


def relu_(input):
    return relu(input, inplace=True)


def relu6(input, inplace=False):
    return hardtanh(input, 0.0, 6.0, inplace)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """input clamped to [min_val, max_val]. Unlike clamp, the gradient is 0 AT the bounds and
    passes at nan (PyTorch's hardtanh_backward: `x <= min_val || x >= max_val ? 0 : g`)."""
    if min_val > max_val:
        raise ValueError(f"{where_named('hardtanh')}: min_val cannot be greater than max_val, got "
                         f"min_val={min_val} and max_val={max_val}")
    if inplace:
        return _in_place_form("hardtanh_")(input, min_val, max_val)
    out = M.where(M.ge(input, max_val), max_val, M.where(M.le(input, min_val), min_val, input))
    return M.to_dtype(out, input.dtype)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    if inplace:
        return _in_place_form("leaky_relu_")(input, negative_slope)
    return M.where(M.gt(input, 0), input, M.mul(input, negative_slope))


@computes_in_float32
def elu(input, alpha=1.0, inplace=False):
    # expm1 of the clamped value: the unselected branch never overflows (no inf * 0 in the VJP);
    # `x <= 0` picks the exponential side, so nan takes the linear side's slope, as in PyTorch
    # (clamp gives nan no gradient, so the discarded side adds 0, not nan)
    if inplace:
        return _in_place_form("elu_")(input, alpha)
    negative = M.mul(M.expm1(M.clamp_max(input, 0.0)), alpha)
    return M.where(M.le(input, 0), negative, input)


@computes_in_float32
def selu(input, inplace=False):
    if inplace:
        return _in_place_form("selu_")(input)
    alpha, scale = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
    return M.mul(elu(input, alpha), scale)


@computes_in_float32
def celu(input, alpha=1.0, inplace=False):
    if inplace:
        return _in_place_form("celu_")(input, alpha)
    negative = M.mul(M.expm1(M.div(M.clamp_max(input, 0.0), alpha)), alpha)
    return M.where(M.le(input, 0), negative, input)


@computes_in_float32
def gelu(input, approximate="none"):
    if approximate == "tanh":
        cube = M.mul(M.mul(input, input), input)
        inner = M.mul(M.add(input, M.mul(cube, 0.044715)), math.sqrt(2.0 / math.pi))
        # (GeluBackward0 saves its input: writing it in place before backward raises, as in PyTorch)
        return saves_like_pytorch(M.mul(M.mul(input, 0.5), M.add(M.tanh(inner), 1.0)), inputs=(input,))
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    fast = one_pass_gelu(input)  # (large float32 tensors in eager mode: one compiled pass each way)
    if fast is not None:
        return fast
    return saves_like_pytorch(composed_gelu(input), inputs=(input,))


@computes_in_float32
def silu(input, inplace=False):
    return _maybe_inplace(input, lambda x: M.mul(x, M.sigmoid(x)), inplace)


@computes_in_float32
def mish(input, inplace=False):
    return _maybe_inplace(input, lambda x: M.mul(x, M.tanh(softplus(x))), inplace)


def _clamp_inside(input, low, high):
    """clamp(input, low, high) whose gradient passes only strictly inside (low, high): 0 at the
    bounds and at nan (PyTorch's hardsigmoid_backward)."""
    out = M.where(M.gt(input, low), M.where(M.lt(input, high), input, high), low)
    return M.where(M.ne(input, input), float("nan"), out)


@computes_in_float32
def hardsigmoid(input, inplace=False):
    return _maybe_inplace(input, lambda x: M.div(_clamp_inside(M.add(x, 3.0), 0.0, 6.0), 6.0), inplace)


@computes_in_float32
def hardswish(input, inplace=False):
    """x * relu6(x + 3) / 6, with PyTorch's slopes: 0 up to -3 (inclusive), (2x + 3) / 6 below 3,
    1 from 3 on and at nan."""
    def compute(x):
        # the middle branch sees 0 outside (-3, 3): its discarded slope stays finite at +-inf
        inside = M.where(M.lt(M.abs(x), 3.0), x, 0.0)
        middle = M.div(M.mul(inside, M.add(inside, 3.0)), 6.0)
        return M.where(M.le(x, -3.0), 0.0, M.where(M.lt(x, 3.0), middle, x))
    return _maybe_inplace(input, compute, inplace)


def sigmoid(input):
    return M.sigmoid(input)


def tanh(input):
    return M.tanh(input)


def softsign(input):
    return M.div(input, M.add(M.abs(input), 1.0))


@computes_in_float32
def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, linear where beta x > threshold (torch's formula)."""
    scaled = M.mul(input, beta) if beta != 1 else input
    # exp of the clamped value: the linear branch never overflows into the VJP
    soft = M.log1p(M.exp(M.clamp_guard(scaled, max=float(threshold))))
    if beta != 1:
        soft = M.div(soft, beta)
    return M.where(M.gt(scaled, threshold), input, soft)


@computes_in_float32
def logsigmoid(input):
    return M.neg(softplus(M.neg(input)))


def threshold(input, threshold, value, inplace=False):
    # `x <= threshold ? value : x`: nan stays nan and keeps its gradient, as in PyTorch
    if inplace:
        return _in_place_form("threshold_")(input, threshold, value)
    return M.where(M.le(input, threshold), value, input)


def prelu(input, weight):
    if weight.dtype is not input.dtype:
        raise _dtype_mismatch("prelu", f"Type promoting not supported. Got {scalar_type_name(input.dtype)} and "
                                       f"{scalar_type_name(weight.dtype)}", [("input", input), ("weight", weight)])
    if weight.numel() != 1 and input.ndim >= 2:
        weight = S.reshape(weight, (1, -1) + (1,) * (input.ndim - 2))
    return M.where(M.gt(input, 0), input, M.mul(input, weight))


def _softmax_dim(name, ndim, dim):
    if dim is None:
        return 0 if ndim in (0, 1, 3) else 1  # torch's legacy implicit choice
    return dim


@computes_in_float32
def softmax(input, dim=None, _stacklevel=3, dtype=None):
    if dtype is not None:
        input = M.to_dtype(input, dtype)
    dim = _softmax_dim("softmax", input.ndim, dim)
    if input.ndim == 0:
        return M.div(input, input) if input.is_floating_point() else input
    shift = R.amax(input.detach(), dim, keepdim=True)
    e = M.exp(M.sub(input, shift))
    return saves_like_pytorch(M.div(e, R.sum(e, dim, keepdim=True)), output=True)  # SoftmaxBackward saves its output


@computes_in_float32
def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    if dtype is not None:
        input = M.to_dtype(input, dtype)
    dim = _softmax_dim("log_softmax", input.ndim, dim)
    shift = R.amax(input.detach(), dim, keepdim=True)
    shifted = M.sub(input, shift)
    out = M.sub(shifted, M.log(R.sum(M.exp(shifted), dim, keepdim=True)))
    return saves_like_pytorch(out, output=True)  # LogSoftmaxBackward saves its output


@computes_in_float32
def glu(input, dim=-1):
    """a * sigmoid(b) for the halves a, b of `input` along `dim`, which must have an even size."""
    if input.ndim == 0:
        raise RuntimeError("glu does not support scalars because halving size must be even")
    from ..tensor import _dim
    axis = _dim(dim, input.ndim, "glu")
    if input.shape[axis] % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {axis} is size {input.shape[axis]}")
    half = input.shape[axis] // 2
    a, b = S.narrow(input, axis, 0, half), S.narrow(input, axis, half, half)
    return M.mul(a, M.sigmoid(b))


# ----------------------------------------------------------------------------- dropout

def _check_p(p, op):
    if p < 0.0 or p > 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")


def _mask(shape, p, like):
    """A keep-mask scaled by 1/(1-p). The uniform draw comes from ember.rand: the default
    generator in eager mode, the `random` primitive (fed a fresh seed) while tracing."""
    from ember.frontend.creation import rand
    keep = M.to_dtype(M.ge(rand(*shape, dtype=like.dtype), p), like.dtype)
    return keep if p == 0.0 else M.mul(keep, 0.0 if p >= 1.0 else 1.0 / (1.0 - p))


def dropout(input, p=0.5, training=True, inplace=False):
    _check_p(p, "dropout")
    if not training or p == 0.0:
        return input
    mask = _mask(tuple(input.shape), p, input)
    return _maybe_inplace(input, lambda x: M.mul(x, mask), inplace)


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    _check_p(p, "alpha_dropout")
    if not training or p == 0.0:
        return input
    alpha = -1.7580993408473766
    from ember.frontend.creation import rand
    keep = M.to_dtype(M.ge(rand(*tuple(input.shape), dtype=input.dtype), p), input.dtype)
    a = 1.0 / math.sqrt((alpha * alpha * p + 1) * (1 - p))
    b = -a * alpha * p
    return _maybe_inplace(input, lambda x: M.add(M.mul(M.add(M.mul(x, keep), M.mul(M.sub(1.0, keep), alpha)), a), b),
                          inplace)


# ----------------------------------------------------------------------------- normalization

def _check_norm_dtypes(op, input, **others):
    """PyTorch's normalizations do not promote: statistics, weight and bias must have the
    input's dtype."""
    if any(t is not None and t.dtype is not input.dtype for t in others.values()):
        raise _dtype_mismatch(op, "mixed dtype (CPU): all inputs must share same datatype",
                              [("input", input)] + list(others.items()))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Normalise over every dim but the channel dim 1; in training, update the running stats
    in place (under no_grad) with the unbiased batch variance, as torch does."""
    if input.ndim < 2:
        raise ValueError(f"{where_named('batch_norm')}: expected a 2-D or higher input, got {_shape_text(input)}")
    _check_norm_dtypes("batch_norm", input, running_mean=running_mean, running_var=running_var, weight=weight,
                       bias=bias)
    channels = input.shape[1]
    axes = (0,) + tuple(range(2, input.ndim))
    bshape = (1, channels) + (1,) * (input.ndim - 2)
    if training:
        count = input.numel() // channels
        if count <= 1:
            raise ValueError(f"{where_named('batch_norm')}: Expected more than 1 value per channel when "
                             f"training, got input size {input.shape}")
        mean = R.mean(input, axes, keepdim=True)
        centered = M.sub(input, mean)
        var = R.mean(M.mul(centered, centered), axes, keepdim=True)
        if running_mean is not None or running_var is not None:
            with no_grad():
                if running_mean is not None:
                    new_mean = M.add(M.mul(running_mean, 1.0 - momentum), M.mul(S.reshape(mean, (channels,)), momentum))
                    running_mean.copy_(new_mean)
                if running_var is not None:
                    unbiased = M.mul(S.reshape(var, (channels,)), count / (count - 1))
                    running_var.copy_(M.add(M.mul(running_var, 1.0 - momentum), M.mul(unbiased, momentum)))
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError(f"{where_named('batch_norm')}: running_mean and running_var must be given "
                               f"when training=False")
        mean = S.reshape(running_mean, bshape)
        var = S.reshape(running_var, bshape)
        centered = M.sub(input, mean)
    out = M.mul(centered, M.rsqrt(M.add(var, eps)))
    if weight is not None:
        out = M.mul(out, S.reshape(weight, bshape))
    if bias is not None:
        out = M.add(out, S.reshape(bias, bshape))
    return out


@computes_in_float32
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    normalized_shape = tuple(normalized_shape) if isinstance(normalized_shape, (list, tuple)) \
        else (int(normalized_shape),)
    n = len(normalized_shape)
    if n == 0:
        raise RuntimeError(f"{where_named('layer_norm')}: Expected normalized_shape to be at least 1-dimensional, "
                           f"i.e., containing at least one element, but got normalized_shape = []")
    if tuple(input.shape[-n:]) != normalized_shape or input.ndim < n:
        raise RuntimeError(f"{where_named('layer_norm')}: input {_shape_text(input)} does not end with "
                           f"normalized_shape {list(normalized_shape)}")
    _check_norm_dtypes("layer_norm", input, weight=weight, bias=bias)
    fast = eager_layer_norm(input, normalized_shape, weight, bias, eps)  # (eager: one autograd node)
    if fast is not None:
        return fast
    axes = tuple(range(input.ndim - n, input.ndim))
    mean = R.mean(input, axes, keepdim=True)
    centered = M.sub(input, mean)
    var = R.mean(M.mul(centered, centered), axes, keepdim=True)
    out = M.mul(centered, M.rsqrt(M.add(var, eps)))
    if weight is not None:
        out = M.mul(out, weight)
    if bias is not None:
        out = M.add(out, bias)
    return out


@computes_in_float32
def rms_norm(input, normalized_shape, weight=None, eps=None):
    """input / sqrt(mean(input^2 over the trailing normalized_shape dims) + eps) * weight; eps
    None is the dtype's machine epsilon, as PyTorch."""
    normalized_shape = tuple(normalized_shape) if isinstance(normalized_shape, (list, tuple)) \
        else (int(normalized_shape),)
    n = len(normalized_shape)
    if tuple(input.shape[-n:]) != normalized_shape or input.ndim < n:
        raise RuntimeError(f"{where_named('rms_norm')}: input {_shape_text(input)} does not end with "
                           f"normalized_shape {list(normalized_shape)}")
    _check_norm_dtypes("rms_norm", input, weight=weight)
    eps = float(np.finfo(input._data.dtype).eps) if eps is None else eps
    axes = tuple(range(input.ndim - n, input.ndim))
    out = M.mul(input, M.rsqrt(M.add(R.mean(M.mul(input, input), axes, keepdim=True), eps)))
    return out if weight is None else M.mul(out, weight)


@computes_in_float32
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    n, c = input.shape[0], input.shape[1]
    if c % num_groups:
        raise RuntimeError(f"{where_named('group_norm')}: {c} channels do not divide into {num_groups} groups")
    _check_norm_dtypes("group_norm", input, weight=weight, bias=bias)
    grouped = S.reshape(input, (n, num_groups, -1))
    mean = R.mean(grouped, -1, keepdim=True)
    centered = M.sub(grouped, mean)
    var = R.mean(M.mul(centered, centered), -1, keepdim=True)
    out = S.reshape(M.mul(centered, M.rsqrt(M.add(var, eps))), tuple(input.shape))
    bshape = (1, c) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = M.mul(out, S.reshape(weight, bshape))
    if bias is not None:
        out = M.add(out, S.reshape(bias, bshape))
    return out


@computes_in_float32
def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    norm = R.norm(input, p, dim, keepdim=True)
    return M.div(input, M.clamp_min(norm, eps))


def one_hot(tensor, num_classes=-1):
    """int64 [..., num_classes] with a 1 at each index (compares against an arange)."""
    if tensor.is_floating_point() or tensor.dtype is dtypes.bool_:
        raise RuntimeError(f"one_hot is only applicable to index tensor, got {_shape_text(tensor)}")
    if num_classes == -1:
        num_classes = int(R.amax(tensor).item()) + 1 if tensor.numel() else 0
    classes = Tensor._wrap(np.arange(num_classes, dtype=tensor._data.dtype))
    return M.to_dtype(M.eq(S.unsqueeze(tensor, -1), classes), dtypes.int64)


def flatten(input, start_dim=0, end_dim=-1):
    return S.flatten(input, start_dim, end_dim)
