"""Transposed convolutions, interpolate / Upsample and the pixel shuffles (the convnet part of
the PyTorch surface): values against numpy references written from PyTorch's formulas (and a
few values recorded from PyTorch 2.13), gradients against float64 finite differences, eager
against compiled, PyTorch's error messages, and the layers' shapes, init and reprs."""
import math

import numpy as np
import pytest

import ember
from ember.frontend.nn.functional_conv_transpose import conv_transpose1d, conv_transpose2d
from ember.frontend.nn.functional_resize import interpolate, pixel_shuffle, pixel_unshuffle
from ember.frontend.nn.conv_transpose import ConvTranspose1d, ConvTranspose2d
from ember.frontend.nn.upsampling import (PixelShuffle, PixelUnshuffle, Upsample, UpsamplingBilinear2d,
                                          UpsamplingNearest2d)
from ember import nn
from finite_differences import check_vjp, random
from gradcheck import check_module


def t64(array):
    return ember.tensor(np.asarray(array, dtype=np.float64))


# ============================================================================ numpy references

def conv_transpose_reference(x, w, b, stride, padding, output_padding, groups, dilation):
    """PyTorch's definition, for any number of spatial dims: input element i scatters
    x[i] * w[.., k] to output position i*stride - padding + k*dilation (kept when inside
    the output of size (L-1)*stride - 2*padding + dilation*(K-1) + output_padding + 1)."""
    n, c_in = x.shape[:2]
    per_group_in, per_group_out = c_in // groups, w.shape[1]
    sizes = [(size - 1) * s - 2 * p + d * (k - 1) + e + 1 for size, k, s, p, e, d in
             zip(x.shape[2:], w.shape[2:], stride, padding, output_padding, dilation)]
    out = np.zeros((n, per_group_out * groups, *sizes))
    for position in np.ndindex(*x.shape[2:]):
        for tap in np.ndindex(*w.shape[2:]):
            target = tuple(i * s - p + k * d for i, k, s, p, d in zip(position, tap, stride, padding, dilation))
            if not all(0 <= t < size for t, size in zip(target, sizes)):
                continue
            for g in range(groups):
                ins = slice(g * per_group_in, (g + 1) * per_group_in)
                outs = slice(g * per_group_out, (g + 1) * per_group_out)
                out[(slice(None), outs) + target] += x[(slice(None), ins) + position] @ w[(ins, slice(None)) + tap]
    if b is not None:
        out += b.reshape((1, -1) + (1,) * len(sizes))
    return out


def linear_source(dst, in_size, out_size, align_corners, scale_factor):
    """PyTorch's source coordinate of output position dst (its docs' align_corners picture):
    corners aligned, (in-1)/(out-1) per step; else pixel centres, 1/scale_factor per step when
    a factor was given (in/out otherwise), never below 0."""
    if align_corners:
        return dst * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    step = 1 / scale_factor if scale_factor else in_size / out_size
    return max((dst + 0.5) * step - 0.5, 0.0)


def linear_reference_axis(x, axis, out_size, align_corners, scale_factor):
    """Linear interpolation along one axis; an axis whose size does not change is copied."""
    x = np.moveaxis(x, axis, -1)
    in_size = x.shape[-1]
    if in_size == out_size:
        return np.moveaxis(x, -1, axis)
    out = np.empty(x.shape[:-1] + (out_size,))
    for dst in range(out_size):
        src = linear_source(dst, in_size, out_size, align_corners, scale_factor)
        low = min(int(math.floor(src)), in_size - 1)
        high = min(low + 1, in_size - 1)
        weight = src - low
        out[..., dst] = (1 - weight) * x[..., low] + weight * x[..., high]
    return np.moveaxis(out, -1, axis)


def nearest_reference_index(dst, in_size, out_size, scale_factor, exact):
    """PyTorch's nearest source index, with its float32 scale: floor(dst * scale) ('nearest',
    which copies for equal sizes and halves for doubled ones) or floor((dst + 0.5) * scale)
    ('nearest-exact'), clipped to the input."""
    if not exact and out_size == in_size:
        return dst
    if not exact and out_size == 2 * in_size:
        return dst // 2
    scale = np.float32(1 / scale_factor) if scale_factor else np.float32(in_size) / np.float32(out_size)
    source = np.float32((dst + 0.5) * np.float64(scale)) if exact else np.float32(dst) * scale
    return min(int(math.floor(source)), in_size - 1)


def interpolate_reference(x, sizes, mode, align_corners=False, scale_factors=None):
    scale_factors = scale_factors or [None] * len(sizes)
    out = x
    for axis in reversed(range(2, x.ndim)):
        size, factor = sizes[axis - 2], scale_factors[axis - 2]
        if mode in ("nearest", "nearest-exact"):
            index = [nearest_reference_index(d, x.shape[axis], size, factor, mode == "nearest-exact")
                     for d in range(size)]
            out = np.take(out, index, axis=axis)
        else:
            out = linear_reference_axis(out, axis, size, align_corners, factor)
    return out


def pixel_shuffle_reference(x, r):
    *lead, channels, h, w = x.shape
    out = np.empty((*lead, channels // (r * r), h * r, w * r))
    for c, i, j in np.ndindex(channels // (r * r), h * r, w * r):
        out[..., c, i, j] = x[..., c * r * r + (i % r) * r + (j % r), i // r, j // r]
    return out


# ============================================================================ transposed convolution: values

CONV_CASES = [  # stride, padding, output_padding, groups, dilation
    (1, 0, 0, 1, 1), (2, 0, 1, 1, 1), (2, 1, 1, 2, 1), (3, 2, 2, 1, 1), ((2, 1), (1, 0), (1, 0), 1, 1),
    (1, 1, 0, 2, 2), (2, 1, 1, 1, 2), ((1, 2), (2, 1), (1, 1), 2, (2, 3)),
    (1, 0, 1, 1, 2),  # output padding reaching the stride (allowed below the dilation)
    (2, 3, 2, 1, 3),  # ... with a padding larger than the stride
]


def _tuple(value, n):
    return tuple(value) if isinstance(value, tuple) else (value,) * n


@pytest.mark.parametrize("stride,padding,output_padding,groups,dilation", CONV_CASES)
def test_conv_transpose2d_matches_the_scatter_definition(stride, padding, output_padding, groups, dilation):
    x, w, b = random(2, 4, 4, 3), random(4, 6 // groups, 3, 2, seed=1), random(6, seed=2)
    got = conv_transpose2d(t64(x), t64(w), t64(b), stride, padding, output_padding, groups, dilation)
    params = [_tuple(v, 2) for v in (stride, padding, output_padding)]
    expected = conv_transpose_reference(x, w, b, *params, groups, _tuple(dilation, 2))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride,padding,output_padding,groups,dilation",
                         [(1, 0, 0, 1, 1), (3, 1, 2, 2, 1), (2, 0, 1, 1, 3), (1, 2, 2, 1, 3)])
def test_conv_transpose1d_matches_the_scatter_definition_batched_and_unbatched(stride, padding, output_padding,
                                                                              groups, dilation):
    x, w, b = random(2, 4, 6), random(4, 3, 3, seed=1), random(3 * groups, seed=2)
    args = (stride, padding, output_padding, groups, dilation)
    expected = conv_transpose_reference(x, w, b, (stride,), (padding,), (output_padding,), groups, (dilation,))
    np.testing.assert_allclose(conv_transpose1d(t64(x), t64(w), t64(b), *args).numpy(), expected, rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(conv_transpose1d(t64(x[1]), t64(w), t64(b), *args).numpy(), expected[1],
                               rtol=1e-10, atol=1e-12)


def test_conv_transpose2d_is_the_input_gradient_of_conv2d():
    from ember.nn import functional as F
    x, w = random(1, 3, 7, 6), random(4, 3, 3, 3, seed=1)
    cotangent = random(1, 4, 4, 3, seed=2)
    xt = t64(x).requires_grad_()
    (F.conv2d(xt, t64(w), stride=2, padding=1) * t64(cotangent)).sum().backward()
    # rows (4-1)*2 - 2 + 2 + 1 = 7; columns (3-1)*2 - 2 + 2 + 1 = 5, and output_padding 1 gives back 6
    transposed = conv_transpose2d(t64(cotangent), t64(w), stride=2, padding=1, output_padding=(0, 1))
    np.testing.assert_allclose(transposed.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv_transpose_bias_of_another_dtype_is_added_in_the_input_dtype():
    x, w = ember.randn(1, 2, 3, 3), ember.randn(2, 3, 2, 2)
    out = conv_transpose2d(x, w, t64(random(3)))
    assert out.dtype == ember.float32 and out.shape == (1, 3, 4, 4)
    assert conv_transpose2d(ember.randn(0, 2, 3, 3), w).shape == (0, 3, 4, 4)


# ============================================================================ transposed convolution: gradients

@pytest.mark.parametrize("stride,padding,output_padding,groups,dilation",
                         [(2, 1, 1, 2, 1), (1, 0, 1, 1, 2), ((2, 1), (0, 1), (1, 0), 1, (1, 2))])
def test_conv_transpose2d_gradients_match_finite_differences(stride, padding, output_padding, groups, dilation):
    x, w, b = random(1, 2, 3, 3), random(2, 4 // groups, 2, 3, seed=1), random(4, seed=2)
    check_vjp(lambda x, w, b: conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation),
              [x, w, b])


def test_conv_transpose1d_gradients_match_finite_differences():
    check_vjp(lambda x, w, b: conv_transpose1d(x, w, b, stride=2, padding=1, output_padding=1, dilation=2),
              [random(2, 3, 4), random(3, 2, 3, seed=1), random(2, seed=2)])


def test_conv_transpose_modules_gradients_match_finite_differences():
    check_module(ConvTranspose2d(2, 4, (2, 3), stride=2, padding=(1, 0), groups=2), [random(1, 2, 3, 2)])
    check_module(ConvTranspose1d(2, 3, 3, stride=3, bias=False), [random(2, 2, 3)])


# ============================================================================ transposed convolution: layers

def test_conv_transpose_layer_weight_shape_init_and_repr():
    layer = ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, bias=False, dilation=2)
    assert layer.weight.shape == (4, 3, 3, 3) and layer.bias is None
    assert layer.transposed and layer.output_padding == (1, 1) and layer.padding_mode == "zeros"
    assert repr(layer) == ("ConvTranspose2d(4, 6, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
                           "dilation=(2, 2), output_padding=(1, 1), groups=2, bias=False)")
    assert repr(ConvTranspose1d(4, 6, 3)) == "ConvTranspose1d(4, 6, kernel_size=(3,), stride=(1,))"
    big = ConvTranspose2d(8, 64, 5, groups=2)
    # kaiming_uniform(a=sqrt(5)) on the weight's own fan: fan_in = out/groups * k*k = 32 * 25
    bound = 1 / math.sqrt(32 * 25)
    weight, bias = big.weight.detach().numpy(), big.bias.detach().numpy()
    assert big.weight.shape == (8, 32, 5, 5) and bias.shape == (64,)
    assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.9 * bound
    assert np.abs(bias).max() <= bound and np.abs(bias).max() > 0.5 * bound


def test_conv_transpose_layer_output_size_picks_the_output_padding():
    layer = ConvTranspose2d(4, 6, 3, stride=2, padding=1)
    x = ember.randn(1, 4, 5, 5)
    assert layer(x).shape == (1, 6, 9, 9)
    assert layer(x, output_size=[10, 10]).shape == (1, 6, 10, 10)
    assert layer(x, output_size=[1, 6, 9, 10]).shape == (1, 6, 9, 10)
    assert layer(x[0], output_size=[6, 10, 9]).shape == (6, 10, 9)
    with pytest.raises(ValueError, match=r"requested an output size of \[8, 9\], but valid sizes range from "
                                         r"\[9, 9\] to \[10, 10\] \(for an input of \[5, 5\]\)"):
        layer(x, output_size=[8, 9])
    with pytest.raises(ValueError, match=r"ConvTranspose2D: for 4D input, output_size must have 2 or 4 "
                                         r"elements \(got 1\)"):
        layer(x, output_size=[10])
    assert ConvTranspose1d(4, 6, 3, stride=3)(ember.randn(2, 4, 5), output_size=[17]).shape == (2, 6, 17)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(padding_mode="reflect"), ValueError, 'Only "zeros" padding mode is supported for ConvTranspose2d'),
    (dict(groups=4), ValueError, r"out_channels \(6\) must be divisible by groups \(4\)"),
    (dict(groups=0), ValueError, "groups must be a positive integer"),
    (dict(padding="same"), ValueError, "padding must be an int or a tuple of ints"),
])
def test_conv_transpose_layer_refuses_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        ConvTranspose2d(4, 6, 3, **kwargs)


CONV_ERRORS = [  # (input shape, weight shape, kwargs, PyTorch's words)
    ((1, 5, 5, 5), (4, 3, 3, 3), {}, r"Given transposed=1, weight of size \[4, 3, 3, 3\], expected "
                                     r"input\[1, 5, 5, 5\] to have 4 channels, but got 5 channels instead"),
    ((1, 4, 5, 5), (4, 3, 3, 3), dict(stride=2, output_padding=2),
     "output padding must be smaller than either stride or dilation, but got output_padding_height: 2 "
     "output_padding_width: 2 stride_height: 2 stride_width: 2 dilation_height: 1 dilation_width: 1"),
    ((1, 4, 5, 5), (4, 3, 3, 3), dict(groups=3), r"Given groups=3, expected weight to be divisible by 3 at "
                                                 r"dimension 0, but got weight of size \[4, 3, 3, 3\] instead"),
    ((1, 4, 5, 5), (4, 3, 3, 3), dict(padding=5), r"Given input size per channel: \(5 x 5\). Calculated output "
                                                  r"size per channel: \(-3 x -3\). Output size is too small"),
    ((1, 4, 5, 5), (4, 3, 3, 3), dict(padding=-1), "negative padding is not supported"),
    ((1, 4, 5, 5), (4, 3, 3, 3), dict(stride=0), "non-positive stride is not supported"),
    ((1, 4, 5, 5), (4, 3, 3, 3), dict(groups=0), "non-positive groups is not supported"),
    ((1, 4, 5, 5), (4, 3, 3, 3), dict(dilation=(1, 0)), "dilation should be greater than zero, but got "
                                                        "dilation_height: 1, dilation_width: 0"),
    ((1, 4, 5, 5), (4, 3, 3, 3), dict(stride=(2, 2, 2)), r"expected stride to be a single integer value or a "
                                                         r"list of 2 values .* but got stride=\[2, 2, 2\]"),
    ((5, 5), (4, 3, 3, 3), {}, r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv_transpose2d, but got "
                               r"input of size: \[5, 5\]"),
]


@pytest.mark.parametrize("input_shape,weight_shape,kwargs,words", CONV_ERRORS)
def test_conv_transpose2d_errors_use_pytorchs_words_and_name_the_shapes(input_shape, weight_shape, kwargs, words):
    with pytest.raises(RuntimeError, match=words) as error:
        conv_transpose2d(ember.randn(*input_shape), ember.randn(*weight_shape), **kwargs)
    message = str(error.value)
    assert message.startswith("conv_transpose2d") and "f32[" + ",".join(map(str, input_shape)) + "]" in message


def test_conv_transpose_errors_on_dtypes_bias_and_1d_inputs():
    with pytest.raises(RuntimeError, match=r"expected scalar type Double but found Float: input f64\[1,4,5,5\], "
                                           r"weight f32\[4,3,3,3\]"):
        conv_transpose2d(t64(random(1, 4, 5, 5)), ember.randn(4, 3, 3, 3))
    with pytest.raises(RuntimeError, match=r"expected bias to be 1-dimensional with 3 elements, but got bias of "
                                           r"size \[4\] instead"):
        conv_transpose2d(ember.randn(1, 4, 5, 5), ember.randn(4, 3, 3, 3), ember.randn(4))
    with pytest.raises(RuntimeError, match=r"conv_transpose1d: output padding must be smaller than either stride "
                                           r"or dilation, but got output_padding_height: 0 output_padding_width: 2"):
        conv_transpose1d(ember.randn(1, 4, 5), ember.randn(4, 3, 3), stride=2, output_padding=2)
    with pytest.raises(RuntimeError, match=r"Expected 2D \(unbatched\) or 3D \(batched\) input to conv_transpose1d"):
        conv_transpose1d(ember.randn(1, 4, 5, 5), ember.randn(4, 3, 3))


def test_conv_transpose_layer_errors_name_the_module():
    net = nn.Sequential(ConvTranspose2d(4, 3, 3))
    with pytest.raises(RuntimeError, match=r"conv_transpose2d \(0\): Given transposed=1"):
        net(ember.randn(1, 5, 4, 4))


# ============================================================================ interpolate: values

INTERPOLATE_CASES = [  # input shape, kwargs
    ((2, 3, 5), dict(size=9, mode="nearest")),
    ((2, 3, 5), dict(size=3, mode="nearest-exact")),
    ((1, 2, 4, 5), dict(scale_factor=2, mode="nearest")),
    ((1, 2, 4, 5), dict(scale_factor=(3, 2), mode="nearest")),
    ((1, 2, 7, 8), dict(scale_factor=1.7, mode="nearest")),
    ((1, 2, 7, 8), dict(scale_factor=0.6, mode="nearest-exact")),
    ((1, 2, 7, 8), dict(scale_factor=1.7, mode="nearest", recompute_scale_factor=True)),
    ((1, 2, 5, 6), dict(size=(13, 4), mode="nearest-exact")),
    ((2, 3, 5), dict(size=9, mode="linear")),
    ((2, 3, 5), dict(size=9, mode="linear", align_corners=True)),
    ((2, 3, 7), dict(scale_factor=0.45, mode="linear")),
    ((2, 3, 5), dict(scale_factor=1.1, mode="linear")),  # 5 -> 5: copied, not 1/1.1-scaled
    ((1, 2, 4, 5), dict(size=(7, 3), mode="bilinear")),
    ((1, 2, 4, 5), dict(size=(7, 1), mode="bilinear", align_corners=True)),
    ((1, 2, 4, 5), dict(scale_factor=2.5, mode="bilinear")),
    ((1, 2, 4, 5), dict(scale_factor=(1.5, 0.7), mode="bilinear", recompute_scale_factor=True)),
    ((1, 2, 6, 5), dict(scale_factor=(1.3, 2.0), mode="bilinear", align_corners=True)),
]


def _reference_for(x, kwargs):
    sizes, factors = kwargs.get("size"), kwargs.get("scale_factor")
    dims = x.ndim - 2
    if sizes is None:
        factors = list(factors) if isinstance(factors, tuple) else [factors] * dims
        sizes = [int(n * f) for n, f in zip(x.shape[2:], factors)]
        if kwargs.get("recompute_scale_factor"):
            factors = None
    else:
        sizes, factors = (list(sizes) if isinstance(sizes, tuple) else [sizes] * dims), None
    return interpolate_reference(x, sizes, kwargs["mode"], kwargs.get("align_corners", False), factors)


@pytest.mark.parametrize("shape,kwargs", INTERPOLATE_CASES)
def test_interpolate_matches_pytorchs_formulas(shape, kwargs):
    x = random(*shape)
    expected = _reference_for(x, kwargs)
    got = interpolate(t64(x), **kwargs)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size,kwargs,indices", [  # recorded from PyTorch 2.13 (float32 index arithmetic)
    (7, dict(scale_factor=1.7, mode="nearest"), [0, 0, 1, 1, 2, 2, 3, 4, 4, 5, 5]),
    (5, dict(size=13, mode="nearest"), [0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4]),
    (8, dict(scale_factor=0.7, mode="nearest-exact"), [0, 2, 3, 5, 6]),
    (6, dict(size=4, mode="nearest-exact"), [0, 2, 3, 5]),
    (10, dict(scale_factor=1 / 3, mode="nearest"), [0, 3, 6]),
    (3, dict(scale_factor=2.5, mode="nearest"), [0, 0, 0, 1, 1, 2, 2]),
])
def test_nearest_indices_match_pytorch(size, kwargs, indices):
    x = ember.arange(size).float().reshape(1, 1, size)
    assert interpolate(x, **kwargs).numpy()[0, 0].astype(int).tolist() == indices


def test_linear_values_match_pytorch_in_float32():
    x = ember.tensor([[[0.0, 1.0, 4.0, 9.0, 16.0]]])  # recorded from PyTorch 2.13
    np.testing.assert_allclose(interpolate(x, scale_factor=1.7, mode="linear").numpy()[0, 0],
                               [0.0, 0.382353, 0.9705883, 2.6764708, 4.7352948, 7.6764717, 11.2647066, 15.3823538],
                               rtol=0, atol=3e-7)
    np.testing.assert_allclose(interpolate(x, size=8, mode="linear").numpy()[0, 0],
                               [0.0, 0.4375, 1.1875, 3.0625, 5.5625, 8.6875, 12.9375, 16.0])
    grid = ember.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    np.testing.assert_allclose(interpolate(grid, scale_factor=1.5, mode="bilinear").numpy()[0, 0],
                               [[0.0, 0.5, 1.0], [1.0, 1.75, 2.5], [2.0, 3.0, 4.0]])


def test_interpolate_area_is_adaptive_average_pooling_and_integers_are_refused():
    x = random(1, 2, 6, 4)
    expected = x.reshape(1, 2, 3, 2, 2, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(interpolate(t64(x), scale_factor=0.5, mode="area").numpy(), expected, rtol=1e-12)
    image = ember.tensor(np.arange(12, dtype=np.uint8).reshape(1, 1, 3, 4))
    assert interpolate(image, scale_factor=2).dtype == ember.uint8
    with pytest.raises(NotImplementedError, match="\"compute_indices_weights_nearest\" not implemented for 'Long'"):
        interpolate(ember.zeros(1, 1, 4, dtype=ember.int64), size=3)


def test_interpolate_returns_new_memory_even_when_nothing_changes():
    x = ember.randn(1, 2, 4, 4)
    for out in (interpolate(x, size=4), interpolate(x, scale_factor=1.0, mode="bilinear"), pixel_shuffle(x, 1),
                pixel_unshuffle(x, 1)):
        out.add_(1.0)
    np.testing.assert_array_equal(x.numpy(), interpolate(x, size=4).numpy())


# ============================================================================ interpolate: gradients

@pytest.mark.parametrize("shape,kwargs", [
    ((1, 2, 3), dict(size=7, mode="nearest")),  # an index
    ((1, 2, 3, 2), dict(scale_factor=2, mode="nearest")),  # a broadcast
    ((1, 2, 5, 4), dict(scale_factor=0.6, mode="nearest-exact")),
    ((1, 2, 4), dict(size=6, mode="linear")),
    ((1, 1, 3, 4), dict(size=(5, 3), mode="bilinear", align_corners=True)),
    ((1, 1, 4, 3), dict(scale_factor=1.7, mode="bilinear")),
])
def test_interpolate_gradients_match_finite_differences(shape, kwargs):
    check_vjp(lambda x: interpolate(x, **kwargs), [random(*shape)])


def test_pixel_shuffle_gradients_match_finite_differences():
    check_vjp(lambda x: pixel_unshuffle(pixel_shuffle(x, 2) * 3.0, 3), [random(2, 8, 3, 3)])


# ============================================================================ interpolate: errors

INTERPOLATE_ERRORS = [
    (dict(size=3, scale_factor=2), ValueError, "only one of size or scale_factor should be defined"),
    ({}, ValueError, "either size or scale_factor should be defined"),
    (dict(size=(3, 3, 3)), ValueError, r"Input and output must have the same number of spatial dimensions, but "
                                       r"got input with spatial dimensions of \[5, 5\] and output size of \(3, 3, 3\)"),
    (dict(size=(3.0, 3)), TypeError, "expected size to be one of int or Tuple"),
    (dict(scale_factor=(2, 2, 2)), ValueError, "Input and scale_factor must have the same number of spatial"),
    (dict(size=3, recompute_scale_factor=True), ValueError,
     "recompute_scale_factor is not meaningful with an explicit size."),
    (dict(size=3, align_corners=True), ValueError, "align_corners option can only be set with the interpolating "
                                                   "modes: linear | bilinear | bicubic | trilinear"),
    (dict(size=(0, 3)), RuntimeError, r"Input and output sizes should be greater than 0, but got input "
                                      r"\(H: 5, W: 5\) output \(H: 0, W: 3\)"),
    (dict(scale_factor=0.1), RuntimeError, r"output \(H: 0, W: 0\)"),
    (dict(size=3, mode="linear"), NotImplementedError, "Got 4D input, but linear mode needs 3D input"),
    (dict(size=3, mode="foo"), NotImplementedError, r"Only 3D, 4D and 5D input Tensors supported \(got 4D\) for "
                                                    r"the modes: .* \(got foo\)"),
    (dict(size=3, mode="bicubic"), NotImplementedError, "mode 'bicubic' on a 4-D input is not supported by ember"),
    (dict(size=3, mode="bilinear", antialias=True), NotImplementedError, "antialias=True is not supported"),
    (dict(size=3, antialias=True), ValueError, "Anti-alias option is restricted to bilinear, bicubic, and lanczos"),
]


@pytest.mark.parametrize("kwargs,error,message", INTERPOLATE_ERRORS)
def test_interpolate_errors_use_pytorchs_words(kwargs, error, message):
    with pytest.raises(error, match=message):
        interpolate(ember.randn(1, 2, 5, 5), **kwargs)


def test_interpolate_errors_on_ranks():
    with pytest.raises(NotImplementedError, match="Got 3D input, but bilinear mode needs 4D input"):
        interpolate(ember.randn(1, 2, 5), size=3, mode="bilinear")
    with pytest.raises(RuntimeError, match=r"input \(W: 5\) and output \(W: 0\)"):
        interpolate(ember.randn(1, 2, 5), size=0)


@pytest.mark.parametrize("call,message", [
    (lambda: pixel_shuffle(ember.randn(2, 3), 2), r"pixel_shuffle expects input to have at least 3 dimensions, "
                                                  r"but got input with 2 dimension\(s\)"),
    (lambda: pixel_shuffle(ember.randn(2, 3, 4, 4), 2), r"pixel_shuffle expects its input's 'channel' dimension "
                                                        r"to be divisible by the square of upscale_factor, but "
                                                        r"input.size\(-3\)=3 is not divisible by 4"),
    (lambda: pixel_shuffle(ember.randn(8, 4, 4), 0), "pixel_shuffle expects a positive upscale_factor, but got 0"),
    (lambda: pixel_unshuffle(ember.randn(2, 3, 5, 4), 2), r"pixel_unshuffle expects height to be divisible by "
                                                          r"downscale_factor, but input.size\(-2\)=5 is not "
                                                          r"divisible by 2"),
    (lambda: pixel_unshuffle(ember.randn(2, 3, 4, 5), 2), r"pixel_unshuffle expects width to be divisible"),
    (lambda: pixel_unshuffle(ember.randn(2, 3, 4, 4), -1), "pixel_unshuffle expects a positive downscale_factor"),
])
def test_pixel_shuffle_errors_use_pytorchs_words(call, message):
    with pytest.raises(RuntimeError, match=message):
        call()
    with pytest.raises(TypeError, match=r"pixel_shuffle\(\): argument 'upscale_factor' \(position 2\) must be "
                                        r"int, not float"):
        pixel_shuffle(ember.randn(8, 4, 4), 2.0)


# ============================================================================ pixel shuffle and layers

@pytest.mark.parametrize("r,lead", [(1, ()), (2, ()), (3, (2,)), (2, (2, 3))])
def test_pixel_shuffle_matches_the_definition_and_unshuffle_inverts_it(r, lead):
    x = random(*lead, 2 * r * r, 3, 2)
    shuffled = pixel_shuffle(t64(x), r)
    np.testing.assert_array_equal(shuffled.numpy(), pixel_shuffle_reference(x, r))
    np.testing.assert_array_equal(pixel_unshuffle(shuffled, r).numpy(), x)


def test_resizing_layers_attributes_and_reprs():
    assert repr(Upsample(scale_factor=2)) == "Upsample(scale_factor=2.0, mode='nearest')"
    assert repr(Upsample(size=3, mode="bilinear")) == "Upsample(size=3, mode='bilinear')"
    assert repr(Upsample(scale_factor=(2, 3))) == "Upsample(scale_factor=(2.0, 3.0), mode='nearest')"
    assert repr(UpsamplingNearest2d(scale_factor=2)) == "UpsamplingNearest2d(scale_factor=2.0, mode='nearest')"
    assert repr(UpsamplingBilinear2d(size=4)) == "UpsamplingBilinear2d(size=4, mode='bilinear')"
    assert repr(PixelShuffle(3)) == "PixelShuffle(upscale_factor=3)"
    assert repr(PixelUnshuffle(2)) == "PixelUnshuffle(downscale_factor=2)"
    bilinear = UpsamplingBilinear2d(scale_factor=1.7)
    assert bilinear.align_corners is True and bilinear.mode == "bilinear" and bilinear.name == "UpsamplingBilinear2d"
    x = random(1, 2, 3, 4)
    np.testing.assert_allclose(bilinear(t64(x)).numpy(), interpolate_reference(x, [5, 6], "bilinear", True),
                               rtol=1e-12)
    np.testing.assert_array_equal(UpsamplingNearest2d(size=(5, 2))(t64(x)).numpy(),
                                  interpolate_reference(x, [5, 2], "nearest"))
    assert PixelUnshuffle(2)(PixelShuffle(2)(t64(random(1, 8, 2, 3)))).shape == (1, 8, 2, 3)


# ============================================================================ eager against compiled

def _eager_and_compiled(fn, arrays):
    """fn's value and gradients eagerly, then from its compiled program (second call: the first traces)."""
    results, compiled = [], ember.compile(fn)
    for run in (fn, compiled):
        for _ in range(2 if run is compiled else 1):
            inputs = [ember.tensor(a, requires_grad=True) for a in arrays]
            out = run(*inputs)
            (out * ember.tensor(np.linspace(-1, 1, out.numel(), dtype=np.float32).reshape(tuple(out.shape)))
             ).sum().backward()
        results.append([out.detach().numpy()] + [t.grad.numpy() for t in inputs])
    assert compiled.report.compiled_calls == 1 and not compiled.report.fallback
    return results


@pytest.mark.parametrize("name,fn,shapes", [
    ("conv_transpose2d", lambda x, w, b: conv_transpose2d(x, w, b, 2, 1, 1, 2, 1), [(2, 4, 5, 4), (4, 3, 3, 3), (6,)]),
    ("conv_transpose2d output_padding past the stride",
     lambda x, w: conv_transpose2d(x, w, None, 1, 2, 1, 1, 2), [(1, 4, 5, 4), (4, 3, 3, 3)]),
    ("conv_transpose1d", lambda x, w: conv_transpose1d(x, w, None, 3, 1, 2), [(2, 4, 7), (4, 2, 3)]),
    ("nearest x2 and 1.7", lambda x: interpolate(interpolate(x, scale_factor=2), scale_factor=1.7), [(1, 2, 4, 5)]),
    ("bilinear", lambda x: interpolate(x, scale_factor=(2.5, 0.6), mode="bilinear"), [(1, 2, 4, 5)]),
    ("linear align_corners", lambda x: interpolate(x, size=9, mode="linear", align_corners=True), [(2, 3, 4)]),
    ("pixel shuffles", lambda x: pixel_unshuffle(pixel_shuffle(x, 2) * 2, 3), [(1, 8, 3, 3)]),
])
def test_compiled_matches_eager(name, fn, shapes):
    arrays = [random(*s, seed=i).astype(np.float32) for i, s in enumerate(shapes)]
    eager, compiled = _eager_and_compiled(fn, arrays)
    for e, c in zip(eager, compiled):
        np.testing.assert_allclose(c, e, rtol=1e-5, atol=1e-5)


def test_a_decoder_trains_the_same_compiled():
    def decoder():
        ember.manual_seed(0)
        return nn.Sequential(ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
                             Upsample(scale_factor=1.5, mode="bilinear"), PixelShuffle(2), PixelUnshuffle(2),
                             ConvTranspose2d(8, 2, 2, stride=2))
    x = ember.tensor(random(2, 4, 3, 3).astype(np.float32))
    losses = {}
    for compiled in (False, True):
        model = decoder()
        step = ember.compile(lambda x: model(x).square().mean()) if compiled else (lambda x: model(x).square().mean())
        optimizer = ember.optim.SGD(model.parameters(), lr=0.1)
        losses[compiled] = []
        for _ in range(3):
            optimizer.zero_grad()
            loss = step(x)
            loss.backward()
            optimizer.step()
            losses[compiled].append(loss.item())
        if compiled:
            assert step.report.compiled_calls == 2 and not step.report.fallback
    assert model(x).shape == (2, 2, 18, 18)  # 3 -> 6 -> 9 -> 18 -> 9 -> 18
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)
