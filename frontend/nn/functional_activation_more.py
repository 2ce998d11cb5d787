"""More of torch.nn.functional: the shrink and random activations (hardshrink, softshrink,
tanhshrink, rrelu), the in-place activations (elu_, celu_, selu_, leaky_relu_, hardtanh_,
threshold_, rrelu_), gumbel_softmax, softmin, channel_shuffle, local_response_norm,
feature_alpha_dropout and the deprecated upsample aliases of interpolate. Each composes Tensor
operations, so eager autograd and ember.compile see through it; draws come from ember.rand.
"""
import math
import warnings
import weakref

import numpy as np

from ember.frontend.dispatch import STATE, run_eagerly
from ember.frontend.tensor import Tensor
from ember.frontend import math_ops as M
from ember.frontend import reductions as R
from ember.frontend import shape_ops as S
from ember.frontend.autograd import fails_backward
from ember.frontend.linalg import scalar_type_name
from ember.frontend.views import version_counter
from .functional_conv import _shape_text, where_named
from .functional_resize import interpolate
from .padding import pad


def _functional():
    from . import functional  # (functional re-exports this module: import it when called)
    return functional


def _refuse_integers(input, kernel):
    """PyTorch has no integer kernel for these ops: its NotImplementedError, naming the kernel."""
    if not input.is_floating_point():
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{scalar_type_name(input.dtype)}'")


# ----------------------------------------------------------------------------- shrinks

def _zero_or_nan(input):
    """The shrinks' middle value: +0, or nan (without a gradient) where the input is nan."""
    return M.where(M.isnan(input), input.detach(), 0.0)


def hardshrink(input, lambd=0.5):
    """x where x < -lambd or x > lambd, else 0; nan stays nan. The gradient passes only where x
    is outside [-lambd, lambd] (not at nan), as torch's vectorized shrink_backward."""
    _refuse_integers(input, "hardshrink_cpu")
    outside = M.logical_or(M.lt(input, -lambd), M.gt(input, lambd))
    return M.where(outside, input, _zero_or_nan(input))


def _check_lambda(input, lambd):
    top = float(np.finfo(input._data.dtype).max)
    if not 0 <= lambd <= top:  # (nan fails too)
        raise RuntimeError(f"{where_named('softshrink')}: lambda must be in range [0, {top:g}] for input dtype "
                           f"{scalar_type_name(input.dtype)}, but found {lambd:g}")


def softshrink(input, lambd=0.5):
    """x - lambd above lambd, x + lambd below -lambd, +0 between, nan stays nan; the gradient
    is 1 outside [-lambd, lambd] and 0 elsewhere (torch's vectorized kernels: its scalar tail
    gives x * 0, a -0.0, and passes the gradient at nan)."""
    _refuse_integers(input, "softshrink_check")
    _check_lambda(input, lambd)
    below = M.where(M.lt(input, -lambd), M.add(input, lambd), _zero_or_nan(input))
    return M.where(M.gt(input, lambd), M.sub(input, lambd), below)


def tanhshrink(input):
    """x - tanh(x)."""
    return M.sub(input, M.tanh(input))


# ----------------------------------------------------------------------------- in-place activations

def _negative_slope_message(op):
    if op == "leaky_relu":
        return ("In-place leakyReLu backward calculation is triggered with a negative slope which is not supported. "
                "This is caused by calling in-place forward function with a negative slope, please call out-of-place "
                "version instead. File an issue at https://github.com/pytorch/pytorch if you do require supporting "
                "in-place leakRelu backward calculation with negative slope")
    return ("In-place elu backward calculation is triggered with a negative slope which is not supported. This is "
            "caused by calling in-place forward function with a negative slope, please call out-of-place version "
            "instead.")


def _inplace_saving_result(input, value_of, op_name, negative_slope_op=None):
    """Write `value_of(current)` into `input` as PyTorch's elu_, leaky_relu_ and rrelu_ do: their
    backward reads the result they wrote (is_result), so a later write to it makes backward
    raise, naming output 0; with a negative slope (`negative_slope_op` set) backward refuses."""
    computed = []

    def compute(current):
        value = value_of(current)
        if negative_slope_op is not None and value.requires_grad and STATE.grad_enabled:
            run_eagerly(f"{op_name} with a negative slope: its backward raises, as in PyTorch")
            value = fails_backward(value, _negative_slope_message(negative_slope_op))
        computed.append(value)
        return value

    input._inplace(compute, op_name)
    node = computed[0].grad_fn if computed else None
    if node is not None and STATE.grad_enabled:  # (the record saves_like_pytorch makes, on the written tensor)
        node.checked = (node.checked or []) + [(version_counter(input), input._version, "output 0",
                                                weakref.ref(input))]
    return input


def elu_(input, alpha=1.0):
    _refuse_integers(input, "elu_cpu")
    return _inplace_saving_result(input, lambda current: _functional().elu(current, alpha), "elu_",
                                  "elu" if alpha < 0 else None)


def celu_(input, alpha=1.0):
    _refuse_integers(input, "elu_cpu")
    if alpha == 0:
        raise RuntimeError(f"{where_named('celu_')}: ZeroDivisionError: alpha cannot be 0 for CELU")
    return _inplace_saving_result(input, lambda current: _functional().celu(current, alpha), "celu_",
                                  "elu" if alpha < 0 else None)


def selu_(input):
    _refuse_integers(input, "elu_cpu")
    return _inplace_saving_result(input, lambda current: _functional().selu(current), "selu_")


def leaky_relu_(input, negative_slope=0.01):
    _refuse_integers(input, "leaky_relu_cpu")
    return _inplace_saving_result(input, lambda current: _functional().leaky_relu(current, negative_slope),
                                  "leaky_relu_", "leaky_relu" if negative_slope < 0 else None)


def _integer_bound(input, value):
    """A Python bound as the tensor's type: integer tensors truncate it, as PyTorch's Scalar does."""
    return value if input.is_floating_point() else int(value)


def hardtanh_(input, min_val=-1.0, max_val=1.0):
    """min(max(x, min_val), max_val) in place (no min_val <= max_val check: with min_val above
    max_val every value becomes max_val, as torch's kernel); the gradient is 0 at and beyond the
    bounds and passes at nan, from the value before the write (PyTorch's original_self)."""
    if input.dtype.name == "bool":
        raise RuntimeError(f"{where_named('hardtanh_')}: Bool inputs not supported for hardtanh")
    low, high = _integer_bound(input, min_val), _integer_bound(input, max_val)

    def value(current):
        raised = M.where(M.le(current, low), low, current)
        return M.to_dtype(M.where(M.ge(raised, high), high, raised), current.dtype)
    return input._inplace(value, "hardtanh_")


def threshold_(input, threshold, value):
    """`x <= threshold ? value : x` in place; integer tensors truncate both numbers."""
    if input.dtype.name == "bool":
        raise NotImplementedError(f"\"threshold_cpu\" not implemented for '{scalar_type_name(input.dtype)}'")
    limit, replacement = _integer_bound(input, threshold), _integer_bound(input, value)
    return input._inplace(lambda current: M.to_dtype(M.where(M.le(current, limit), replacement, current),
                                                      current.dtype), "threshold_")


# ----------------------------------------------------------------------------- rrelu

def _rrelu_value(input, lower, upper, training):
    if training:  # one slope per element, uniform in [lower, upper], for x <= 0 (torch's rrelu_with_noise)
        from ember.frontend.creation import rand
        slopes = M.add(M.mul(rand(*tuple(input.shape), dtype=input.dtype), upper - lower), lower)
        return M.where(M.le(input, 0), M.mul(input, slopes), input)
    return M.where(M.gt(input, 0), input, M.mul(input, (lower + upper) / 2))


def _check_rrelu(input, lower, upper, training):
    if lower > upper:
        raise RuntimeError(f"{where_named('rrelu')}: Lower bound should be less than or equal to the upper bound")
    _refuse_integers(input, "rrelu_with_noise_out_cpu" if training else "leaky_relu_cpu")


def rrelu(input, lower=1.0 / 8, upper=1.0 / 3, training=False, inplace=False):
    """Randomized leaky ReLU: x for x > 0, else x times a slope drawn from U(lower, upper) per
    element (training; the gradient is that slope), or (lower + upper) / 2 (eval)."""
    if inplace:
        return rrelu_(input, lower, upper, training)
    _check_rrelu(input, lower, upper, training)
    return _rrelu_value(input, lower, upper, training)


def rrelu_(input, lower=1.0 / 8, upper=1.0 / 3, training=False):
    """rrelu in place. As PyTorch, backward reads the written result; with a negative mean slope
    where leaky_relu's rule applies, backward refuses."""
    _check_rrelu(input, lower, upper, training)
    refuses = not training and (lower + upper) / 2 < 0  # (leaky_relu_'s rule; torch 2.13 checks it in eval only)
    return _inplace_saving_result(input, lambda current: _rrelu_value(current, lower, upper, training), "rrelu_",
                                  "leaky_relu" if refuses else None)


# ----------------------------------------------------------------------------- softmin, gumbel_softmax

def _implicit_dim(name, ndim, stacklevel):
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X "
                  f"as an argument.", stacklevel=stacklevel)
    return 0 if ndim in (0, 1, 3) else 1


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """softmax(-input) along dim; dim=None takes torch's legacy implicit choice, with its warning."""
    if dim is None:
        dim = _implicit_dim("softmin", input.ndim, _stacklevel)
    negated = M.neg(input)
    if dtype is None and not negated.is_floating_point():
        last = input.ndim == 0 or dim in (-1, input.ndim - 1)
        _refuse_integers(negated, "softmax_lastdim_kernel_impl" if last else "softmax_kernel_impl")
    return _functional().softmax(negated, dim, dtype=dtype)


def gumbel_softmax(logits, tau=1, hard=False, eps=1e-10, dim=-1):
    """softmax((logits + g) / tau) along dim, g ~ Gumbel(0, 1) from ember's generator; hard=True
    returns the one-hot of its first maximum, differentiated as the soft sample (straight-through)."""
    if eps != 1e-10:
        warnings.warn("`eps` parameter is deprecated and has no effect.", stacklevel=2)
    if not logits.is_floating_point():
        raise RuntimeError(f"{where_named('gumbel_softmax')}: Exponential distribution is a continuous probability "
                           f"distribution. dtype must be a floating point but you specified "
                           f"{scalar_type_name(logits.dtype)}")
    from ember.frontend.creation import rand
    uniform = rand(*tuple(logits.shape), dtype=logits.dtype)
    # an Exponential(1) draw, -log(1 - u), kept above 0 so that the Gumbel draw -log(e) stays finite
    exponential = M.clamp_min(M.neg(M.log1p(M.neg(uniform))), float(np.finfo(logits._data.dtype).tiny))
    gumbels = M.div(M.add(logits, M.neg(M.log(exponential))), tau)
    y_soft = _functional().softmax(gumbels, dim)
    if not hard:
        return y_soft
    axis = dim % max(logits.ndim, 1)
    index = R.argmax(y_soft, axis, keepdim=True) if logits.ndim else None
    if index is None:
        y_hard = M.to_dtype(M.eq(y_soft, y_soft), logits.dtype)  # (a 0-d sample is 1)
    else:
        positions = np.arange(logits.shape[axis]).reshape((-1,) + (1,) * (logits.ndim - 1 - axis))
        y_hard = M.to_dtype(M.eq(Tensor._wrap(positions), index), logits.dtype)
    return M.add(M.sub(y_hard, y_soft.detach()), y_soft)


# ----------------------------------------------------------------------------- channel shuffle, LRN

def channel_shuffle(input, groups):
    """[N, C, *] viewed as [N, groups, C / groups, *], its two group dims swapped (new memory)."""
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"channel_shuffle(): argument 'groups' (position 2) must be int, not {type(groups).__name__}")
    if input.ndim <= 2:
        raise RuntimeError(f"{where_named('channel_shuffle')}: channel_shuffle expects input with > 2 dims, but got "
                           f"input with sizes {list(input.shape)}")
    if groups <= 0:
        raise RuntimeError(f"{where_named('channel_shuffle')}: Number of groups to divide channels in must be "
                           f"positive. Value of groups:{groups}")
    n, channels, rest = input.shape[0], input.shape[1], tuple(input.shape[2:])
    if channels % groups:
        raise RuntimeError(f"{where_named('channel_shuffle')}: Number of channels must be divisible by groups. Got "
                           f"{channels} channels and {groups} groups.")
    grouped = S.reshape(input, (n, groups, channels // groups) + rest)
    out = S.reshape(S.transpose(grouped, 1, 2), tuple(input.shape))
    return M.clone(out) if out is input or out._base is not None else out


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """input / (k + alpha * mean of input^2 over `size` neighbouring channels)^beta, the window
    zero-padded by size // 2 before and (size - 1) // 2 after (torch's avg_pool formulation)."""
    if input.ndim < 3:
        raise ValueError(f"{where_named('local_response_norm')}: Expected 3D or higher dimensionality              "
                         f"            input (got {input.ndim} dimensions)")
    if input.numel() == 0:
        return input
    if size <= 0:
        kernel = f"kH: {size} kW: 1" if input.ndim == 3 else f"kT: {size} kH: 1 kW: 1"
        raise RuntimeError(f"{where_named('local_response_norm')}: kernel size should be greater than zero, but got "
                           f"{kernel}")
    squares = M.mul(input, input)
    channels = input.shape[1]
    padded = pad(squares, (0, 0) * (input.ndim - 2) + (size // 2, (size - 1) // 2))
    total = S.narrow(padded, 1, 0, channels)
    for start in range(1, size):
        total = M.add(total, S.narrow(padded, 1, start, channels))
    # (integer inputs: torch's integer avg_pool truncates the mean)
    mean = M.div(total, size) if input.is_floating_point() else M.floor_divide(total, size)
    return M.div(input, M.pow(M.add(M.mul(mean, alpha), k), beta))


# ----------------------------------------------------------------------------- feature alpha dropout

def feature_alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Alpha dropout of whole channels: one keep-draw per [n, c] entry; kept channels become
    a * x + alpha' * a * p, dropped ones -alpha' * a (1 - p), so a SELU network keeps zero mean
    and unit variance (alpha' = 1.7580993408473766, a = ((alpha'^2 p + 1)(1 - p))^-1/2)."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"{where_named('feature_alpha_dropout')}: dropout probability has to be between 0 and 1, "
                         f"but got {p}")
    if p == 0.0 or not training or input.numel() == 0:
        return input
    if p == 1.0:  # (torch multiplies by zero: nan stays nan, integers stay integers)
        value = (lambda current: M.mul(current, Tensor._wrap(np.zeros((), current._data.dtype))))
        return input._inplace(value, "feature_alpha_dropout_") if inplace else value(input)
    if input.ndim < 2:
        raise RuntimeError(f"{where_named('feature_alpha_dropout')}: Feature dropout requires at least 2 dimensions "
                           f"in the input (input {_shape_text(input)})")
    if not input.is_floating_point():
        raise RuntimeError(f"{where_named('feature_alpha_dropout')}: result type Float can't be cast to the desired "
                           f"output type {scalar_type_name(input.dtype)}")
    from ember.frontend.creation import rand
    alpha = 1.7580993408473766
    a = 1.0 / math.sqrt((alpha * alpha * p + 1) * (1 - p))
    noise_shape = tuple(input.shape[:2]) + (1,) * (input.ndim - 2)
    keep = M.to_dtype(M.ge(rand(*noise_shape, dtype=input.dtype), p), input.dtype)
    shift = M.add(M.mul(M.sub(keep, 1.0), alpha * a), alpha * a * p)  # torch's b, in its order
    scale = M.mul(keep, a)
    value = (lambda current: M.add(M.mul(current, scale), shift))
    return input._inplace(value, "feature_alpha_dropout_") if inplace else value(input)


# ----------------------------------------------------------------------------- deprecated resizing

def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Deprecated: interpolate(input, size, scale_factor, mode, align_corners), with torch's warning."""
    warnings.warn("`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate` instead.", stacklevel=2)
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    """Deprecated: interpolate(..., mode='nearest'), with torch's warning."""
    warnings.warn("`nn.functional.upsample_nearest` is deprecated. Use `nn.functional.interpolate` instead.",
                  stacklevel=2)
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    """Deprecated: interpolate(..., mode='bilinear', align_corners=True), with torch's warning."""
    warnings.warn("`nn.functional.upsample_bilinear` is deprecated. Use `nn.functional.interpolate` instead.",
                  stacklevel=2)
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)
