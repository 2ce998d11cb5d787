"""Resizing functions of ember.nn.functional: interpolate, pixel_shuffle and pixel_unshuffle.

interpolate resamples one spatial axis at a time with source indices and weights computed in
numpy from PyTorch's formulas (its float32 arithmetic included): 'nearest' and 'nearest-exact'
gather rows (`take`; an integer upscale broadcasts instead), 'linear'/'bilinear' blend two
gathered rows, 'area' is adaptive average pooling. The pixel shuffles are reshape/permute.
"""
import numpy as np

from ember.frontend.tensor import Tensor
from ..low_precision import computes_in_float32
from ember.frontend import math_ops as M
from ember.frontend import shape_ops as S
from ember.frontend.linalg import scalar_type_name
from .functional_conv import adaptive_avg_pool1d, adaptive_avg_pool2d, where_named, _shape_text

_MODES = "nearest | linear | bilinear | bicubic | trilinear | lanczos | area | nearest-exact"
_LINEAR_MODE = {3: "linear", 4: "bilinear", 5: "trilinear"}  # the interpolating mode of each input rank


# ----------------------------------------------------------------------------- source indices (numpy)

def _scale_of(scale, in_size, out_size, dtype):
    """PyTorch's compute_scales_value: 1/scale_factor when one was given, else in/out, in `dtype`."""
    if scale is not None and scale > 0:
        return dtype(1.0 / scale)
    return dtype(in_size) / dtype(out_size)


def nearest_source_index(in_size, out_size, scale, exact):
    """Source index of every output position (PyTorch's nearest_idx / nearest_exact_idx):
    floor(dst * s) or floor((dst + 0.5) * s) with s a float32, clipped to the input."""
    dst = np.arange(out_size, dtype=np.int64)
    if not exact and out_size == in_size:  # PyTorch's shortcuts, free of float rounding
        return dst
    if not exact and out_size == 2 * in_size:
        return dst >> 1
    ratio = _scale_of(scale, in_size, out_size, np.float32)
    if exact:  # (dst + 0.5) is a double in PyTorch; floorf takes it back to float
        source = np.floor(((dst + 0.5) * np.float64(ratio)).astype(np.float32))
    else:
        source = np.floor(dst.astype(np.float32) * ratio)
    return np.minimum(source.astype(np.int64), in_size - 1)


def linear_taps(in_size, out_size, align_corners, scale, opmath):
    """(low, high, low weight, high weight) of every output position: PyTorch's
    area_pixel_compute_source_index and guard_index_and_lambda, in `opmath` (float32 unless double)."""
    dst = np.arange(out_size).astype(opmath)
    if align_corners:
        ratio = opmath(in_size - 1) / opmath(out_size - 1) if out_size > 1 else opmath(0)
        source = ratio * dst
    else:
        ratio = _scale_of(scale, in_size, out_size, opmath)
        # PyTorch's x86 build fuses ratio * (dst + 0.5) - 0.5 into one FMA: an exact product, one rounding
        source = (np.float64(ratio) * (dst.astype(np.float64) + 0.5) - 0.5).astype(opmath)
        source = np.maximum(source, opmath(0))
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high_weight = np.clip(source - low.astype(opmath), opmath(0), opmath(1)).astype(opmath)
    high = low + (low < in_size - 1)
    return low, high, (opmath(1) - high_weight).astype(opmath), high_weight


# ----------------------------------------------------------------------------- resampling one axis

def _index(values):
    return Tensor._wrap(np.ascontiguousarray(values, dtype=np.int64))


def _nearest_axis(x, axis, index):
    """x resampled along `axis` at `index`; an index that repeats every row k times is a broadcast
    (its gradient a sum, not a scatter)."""
    size, out = x.shape[axis], len(index)
    if out == size and np.array_equal(index, np.arange(out)):
        return x
    factor = out // size
    if out == factor * size and np.array_equal(index, np.arange(out) // factor):
        shape = tuple(x.shape)
        repeated = S.expand(S.unsqueeze(x, axis + 1), shape[:axis + 1] + (factor,) + shape[axis + 1:])
        return S.reshape(repeated, shape[:axis] + (out,) + shape[axis + 1:])
    return S.index_select(x, axis, _index(index))


def _linear_axis(x, axis, taps):
    """low_weight * x[low] + high_weight * x[high] along `axis` (PyTorch's order of operations)."""
    low, high, low_weight, high_weight = taps
    trailing = (1,) * (x.ndim - 1 - axis)
    dtype = x._data.dtype
    w0 = Tensor._wrap(low_weight.astype(dtype).reshape((-1,) + trailing))
    w1 = Tensor._wrap(high_weight.astype(dtype).reshape((-1,) + trailing))
    return M.add(M.mul(S.index_select(x, axis, _index(low)), w0), M.mul(S.index_select(x, axis, _index(high)), w1))


# ----------------------------------------------------------------------------- interpolate

def _is_integer(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, Tensor) and not value.is_floating_point() and value.numel() == 1


def _refusal(error, input, words):
    """PyTorch's words, after the op (and module) and before the input's dtype and shape."""
    return error(f"{where_named('interpolate')}: {words}: input {_shape_text(input)}")


def _requested_sizes(input, size, scale_factor, dim):
    """PyTorch's reading of size / scale_factor: -> (output sizes or None, scale factors or None)."""
    spatial = list(input.shape[2:])
    if size is not None and scale_factor is not None:
        raise _refusal(ValueError, input, "only one of size or scale_factor should be defined")
    if size is not None:
        if isinstance(size, (list, tuple)):
            if len(size) != dim:
                raise _refusal(
                    ValueError, input,
                    "Input and output must have the same number of spatial dimensions, but got input with spatial "
                    f"dimensions of {spatial} and output size of {size}. Please provide input tensor in "
                    "(N, C, d1, d2, ...,dK) format and output size in (o1, o2, ...,oK) format.")
            if not all(_is_integer(v) for v in size):
                raise _refusal(TypeError, input, "expected size to be one of int or Tuple[int] or Tuple[int, int] "
                               f"or Tuple[int, int, int], but got size with types {[type(v) for v in size]}")
            return [int(v) for v in size], None
        if not _is_integer(size):
            raise _refusal(TypeError, input, "expected size to be one of int or Tuple[int] or Tuple[int, int] or "
                           f"Tuple[int, int, int], but got size with types {[type(size)]}")
        return [int(size)] * dim, None
    if scale_factor is not None:
        if isinstance(scale_factor, (list, tuple)):
            if len(scale_factor) != dim:
                raise _refusal(
                    ValueError, input,
                    "Input and scale_factor must have the same number of spatial dimensions, but got input with "
                    f"spatial dimensions of {spatial} and scale_factor of shape {scale_factor}. Please provide "
                    "input tensor in (N, C, d1, d2, ...,dK) format and scale_factor in (s1, s2, ...,sK) format.")
            return None, [float(s) for s in scale_factor]
        return None, [float(scale_factor)] * dim
    raise _refusal(ValueError, input, "either size or scale_factor should be defined")


def _check_sizes(input, out_sizes):
    sizes = list(input.shape[2:])
    if all(s > 0 for s in sizes) and all(o > 0 for o in out_sizes):
        return
    names = "DHW"[-len(sizes):]
    given = ", ".join(f"{n}: {s}" for n, s in zip(names, sizes))
    wanted = ", ".join(f"{n}: {s}" for n, s in zip(names, out_sizes))
    joint = " and " if len(sizes) == 1 else " "
    raise _refusal(RuntimeError, input, f"Input and output sizes should be greater than 0, but got input "
                                        f"({given}){joint}output ({wanted})")


def _check_dtype(input, kernel, allowed_integers=()):
    if input.is_floating_point() or input._data.dtype in allowed_integers:
        return
    raise _refusal(NotImplementedError, input, f"\"{kernel}\" not implemented for '{scalar_type_name(input.dtype)}'")


def _unsupported_mode(input, mode):
    dims = input.ndim
    for rank, name in _LINEAR_MODE.items():
        if mode == name and dims != rank and dims in (3, 4, 5):
            raise _refusal(NotImplementedError, input, f"Got {dims}D input, but {name} mode needs {rank}D input")
    if dims in (3, 4, 5) and mode in ("nearest", "nearest-exact", "area", "linear", "bilinear", "trilinear",
                                      "bicubic", "lanczos"):
        raise _refusal(NotImplementedError, input, f"mode {mode!r} on a {dims}-D input is not supported by "
                                                   f"ember (it resizes 3-D and 4-D inputs, without bicubic or "
                                                   f"lanczos)")
    raise _refusal(NotImplementedError, input, f"Input Error: Only 3D, 4D and 5D input Tensors supported (got "
                                               f"{dims}D) for the modes: {_MODES} (got {mode})")


@computes_in_float32
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of [N, C, L] or [N, C, H, W] to `size`, or by `scale_factor`
    (output = floor(input * scale_factor)), as torch.nn.functional.interpolate does."""
    if mode in ("nearest", "area", "nearest-exact"):
        if align_corners is not None:
            raise _refusal(ValueError, input, "align_corners option can only be set with the interpolating "
                                              "modes: linear | bilinear | bicubic | trilinear")
    elif align_corners is None:
        align_corners = False
    dim = input.ndim - 2
    out_sizes, scales = _requested_sizes(input, size, scale_factor, dim)
    if recompute_scale_factor and size is not None:
        raise _refusal(ValueError, input, "recompute_scale_factor is not meaningful with an explicit size.")
    if mode == "area" and out_sizes is None:
        recompute_scale_factor = True
    if recompute_scale_factor:  # the sizes from the factors; the kernel then scales by in/out
        out_sizes = [int(n * s) for n, s in zip(input.shape[2:], scales)]
        scales = None
    if antialias and not (mode in ("bilinear", "bicubic", "lanczos") and input.ndim == 4):
        raise _refusal(ValueError, input, "Anti-alias option is restricted to bilinear, bicubic, and lanczos "
                                          "modes and requires a 4-D tensor as input")
    if antialias:
        raise _refusal(NotImplementedError, input, "antialias=True is not supported by ember")
    if out_sizes is None:  # PyTorch's compute_output_size
        out_sizes = [int(n * s) for n, s in zip(input.shape[2:], scales)]
    scales = scales or [None] * dim
    if input.ndim not in (3, 4) or mode not in ("nearest", "nearest-exact", "area", _LINEAR_MODE.get(input.ndim)):
        _unsupported_mode(input, mode)
    _check_sizes(input, out_sizes)
    if mode == "area":
        return (adaptive_avg_pool1d if dim == 1 else adaptive_avg_pool2d)(input, out_sizes)
    out = input
    if mode in ("nearest", "nearest-exact"):
        _check_dtype(input, "compute_indices_weights_nearest", (np.uint8,))
        for axis in reversed(range(2, input.ndim)):
            index = nearest_source_index(input.shape[axis], out_sizes[axis - 2], scales[axis - 2],
                                         exact=mode == "nearest-exact")
            out = _nearest_axis(out, axis, index)
    else:
        if input._data.dtype == np.uint8 and mode == "bilinear":
            raise _refusal(NotImplementedError, input, "bilinear interpolation of uint8 images (PyTorch's "
                                                       "fixed-point kernel) is not supported by ember")
        _check_dtype(input, "compute_indices_weights_linear")
        opmath = np.float64 if input._data.dtype == np.float64 else np.float32
        for axis in reversed(range(2, input.ndim)):  # the last axis first, as PyTorch's kernel sums
            if input.shape[axis] == out_sizes[axis - 2]:
                continue  # PyTorch copies an axis of unchanged size, whatever its scale_factor
            taps = linear_taps(input.shape[axis], out_sizes[axis - 2], bool(align_corners), scales[axis - 2],
                               opmath)
            out = _linear_axis(out, axis, taps)
    return _fresh(out, input)


def _fresh(out, input):
    """PyTorch's resizing kernels return new memory: never the input or a view of it."""
    if out is input or out._base is not None:
        return M.clone(out)
    return out


# ----------------------------------------------------------------------------- pixel shuffle

def _check_factor(op, argument, factor, input):
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)):
        raise TypeError(f"{op}(): argument '{argument}' (position 2) must be int, not {type(factor).__name__}")
    if factor <= 0:
        raise RuntimeError(f"{where_named(op)}: {op} expects a positive {argument}, but got {factor}: "
                           f"input {_shape_text(input)}")
    return int(factor)


def _check_rank(op, input):
    if input.ndim < 3:
        raise RuntimeError(f"{where_named(op)}: {op} expects input to have at least 3 dimensions, but got input "
                           f"with {input.ndim} dimension(s): input {_shape_text(input)}")


def pixel_shuffle(input, upscale_factor):
    """[*, C*r*r, H, W] -> [*, C, H*r, W*r] (torch.nn.functional.pixel_shuffle)."""
    op = "pixel_shuffle"
    _check_rank(op, input)
    r = _check_factor(op, "upscale_factor", upscale_factor, input)
    *lead, channels, h, w = input.shape
    if channels % (r * r):
        raise RuntimeError(f"{where_named(op)}: pixel_shuffle expects its input's 'channel' dimension to be "
                           f"divisible by the square of upscale_factor, but input.size(-3)={channels} is not "
                           f"divisible by {r * r}: input {_shape_text(input)}")
    lead, k = tuple(lead), len(lead)
    blocks = S.reshape(input, lead + (channels // (r * r), r, r, h, w))
    moved = S.permute(blocks, tuple(range(k)) + (k, k + 3, k + 1, k + 4, k + 2))
    return _fresh(S.reshape(moved, lead + (channels // (r * r), h * r, w * r)), input)


def pixel_unshuffle(input, downscale_factor):
    """[*, C, H*r, W*r] -> [*, C*r*r, H, W] (torch.nn.functional.pixel_unshuffle)."""
    op = "pixel_unshuffle"
    _check_rank(op, input)
    r = _check_factor(op, "downscale_factor", downscale_factor, input)
    *lead, channels, h, w = input.shape
    for name, axis, size in (("height", -2, h), ("width", -1, w)):
        if size % r:
            raise RuntimeError(f"{where_named(op)}: pixel_unshuffle expects {name} to be divisible by "
                               f"downscale_factor, but input.size({axis})={size} is not divisible by {r}: "
                               f"input {_shape_text(input)}")
    lead, k = tuple(lead), len(lead)
    blocks = S.reshape(input, lead + (channels, h // r, r, w // r, r))
    moved = S.permute(blocks, tuple(range(k)) + (k, k + 2, k + 4, k + 1, k + 3))
    return _fresh(S.reshape(moved, lead + (channels * r * r, h // r, w // r)), input)
