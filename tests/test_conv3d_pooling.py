"""conv3d / conv_transpose3d and Conv3d / ConvTranspose3d, the 3-D pools, the max pools with
indices (1-D/2-D/3-D, adaptive), max_unpool, lp_pool and BatchNorm3d: values against numpy
references written from PyTorch's documentation (float64), gradients against finite
differences, eager against ember.compile (forward and training step), PyTorch's errors and reprs."""
import itertools
import math
import re

import numpy as np
import pytest

import ember
from ember.frontend.nn import functional_conv3d as F3
from ember.frontend.nn import functional_pool_more as FP
from ember.frontend.nn import pooling
from ember.frontend.nn.normalization import BatchNorm3d
from ember.frontend.nn.conv3d import Conv3d, ConvTranspose3d
from finite_differences import check_vjp
from gradcheck import check_module

RNG = np.random.default_rng(0)


def tensor(a):
    return ember.from_numpy(np.asarray(a))


# ----------------------------------------------------------------------------- numpy references

def out_size(size, k, s, p, d, ceil_mode):
    """The documented output size; in ceil mode the last window must start inside the input or
    the left padding."""
    span = d * (k - 1) + 1
    out = (size + 2 * p - span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def reference_conv(x, w, b, stride, lo, hi, dilation, groups):
    """Cross-correlation over any number of spatial dims, tap by tap."""
    dims = x.ndim - 2
    widths = [(0, 0), (0, 0)] + list(zip(lo, hi))
    xp = np.pad(x, widths)
    kernel = w.shape[2:]
    outs = [(xp.shape[2 + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(dims)]
    n, cin = x.shape[:2]
    cout = w.shape[0]
    out = np.zeros((n, cout) + tuple(outs))
    cg, og = cin // groups, cout // groups
    for tap in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o in zip(tap, dilation, stride, outs))
        piece = xp[(slice(None), slice(None)) + index]
        for g in range(groups):
            out[:, g * og:(g + 1) * og] += np.einsum("nc...,oc->no...", piece[:, g * cg:(g + 1) * cg],
                                                     w[(slice(g * og, (g + 1) * og), slice(None)) + tap])
    return out if b is None else out + b.reshape((1, -1) + (1,) * dims)


def reference_conv_transpose(x, w, b, stride, padding, output_padding, dilation, groups):
    """Each input element adds weight * value at (position * stride + tap * dilation - padding)."""
    dims = x.ndim - 2
    kernel = w.shape[2:]
    sizes = x.shape[2:]
    full = [(n - 1) * s + d * (k - 1) + 1 + e for n, s, d, k, e in zip(sizes, stride, dilation, kernel, output_padding)]
    n, cin = x.shape[:2]
    cg, og = cin // groups, w.shape[1]
    out = np.zeros((n, og * groups) + tuple(full))
    for tap in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(t * d, t * d + s * (m - 1) + 1, s) for t, d, s, m in zip(tap, dilation, stride, sizes))
        for g in range(groups):
            out[(slice(None), slice(g * og, (g + 1) * og)) + index] += np.einsum(
                "nc...,co->no...", x[:, g * cg:(g + 1) * cg], w[(slice(g * cg, (g + 1) * cg), slice(None)) + tap])
    crop = tuple(slice(p, f - p) for p, f in zip(padding, full))
    out = out[(slice(None), slice(None)) + crop]
    return out if b is None else out + b.reshape((1, -1) + (1,) * dims)


def windows(sizes, kernel, stride, padding, dilation, ceil_mode):
    """For each output position (row-major): the in-input taps of its window, row-major."""
    outs = [out_size(*args, ceil_mode) for args in zip(sizes, kernel, stride, padding, dilation)]
    for position in itertools.product(*(range(o) for o in outs)):
        axes = [[o * s - p + t * d for t in range(k) if 0 <= o * s - p + t * d < n]
                for o, s, p, d, k, n in zip(position, stride, padding, dilation, kernel, sizes)]
        yield position, list(itertools.product(*axes)), outs


def reference_max_pool(x, dims, kernel, stride, padding, dilation, ceil_mode=False):
    """Values and PyTorch's flat indices: the first strict maximum in scan order."""
    lead, sizes = x.shape[:-dims], x.shape[-dims:]
    values = indices = None
    for position, cells, outs in windows(sizes, kernel, stride, padding, dilation, ceil_mode):
        if values is None:
            values, indices = np.zeros(lead + tuple(outs), x.dtype), np.zeros(lead + tuple(outs), np.int64)
        for plane in np.ndindex(*lead):
            best, where = -np.inf, None
            for cell in cells:
                if where is None or x[plane + cell] > best:
                    best, where = x[plane + cell], cell
            values[plane + position] = best
            indices[plane + position] = np.ravel_multi_index(where, sizes)
    return values, indices


def reference_avg_pool(x, dims, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override=None):
    lead, sizes = x.shape[:-dims], x.shape[-dims:]
    out = None
    for position, cells, outs in windows(sizes, kernel, stride, padding, (1,) * dims, ceil_mode):
        if out is None:
            out = np.zeros(lead + tuple(outs))
        total = sum(x[(Ellipsis,) + cell] for cell in cells)
        if divisor_override:
            divisor = divisor_override
        elif count_include_pad:  # the window clipped to the padded input
            divisor = math.prod(min(o * s - p + k, n + p) - (o * s - p)
                                for o, s, p, k, n in zip(position, stride, padding, kernel, sizes))
        else:
            divisor = len(cells)
        out[(Ellipsis,) + position] = total / divisor
    return out


def adaptive_cells(sizes, outs):
    for position in itertools.product(*(range(o) for o in outs)):
        axes = [range((i * n) // o, -((-(i + 1) * n) // o)) for i, n, o in zip(position, sizes, outs)]
        yield position, list(itertools.product(*axes))


def reference_adaptive(x, dims, outs, kind):
    lead, sizes = x.shape[:-dims], x.shape[-dims:]
    values, indices = np.zeros(lead + tuple(outs)), np.zeros(lead + tuple(outs), np.int64)
    for position, cells in adaptive_cells(sizes, outs):
        block = np.stack([x[(Ellipsis,) + cell] for cell in cells], -1)
        if kind == "avg":
            values[(Ellipsis,) + position] = block.mean(-1)
        else:
            first = block.argmax(-1)
            values[(Ellipsis,) + position] = block.max(-1)
            flat = np.array([np.ravel_multi_index(cell, sizes) for cell in cells])
            indices[(Ellipsis,) + position] = flat[first]
    return values, indices


# ----------------------------------------------------------------------------- conv3d / conv_transpose3d

CONV_CASES = [  # (input shape, weight shape, keyword arguments)
    ((2, 4, 5, 6, 4), (6, 4, 3, 2, 3), {}),
    ((1, 4, 6, 5, 7), (6, 2, 2, 3, 2), dict(stride=(2, 1, 3), padding=(1, 2, 0), dilation=(1, 2, 1), groups=2)),
    ((2, 3, 5, 5, 6), (4, 3, 2, 3, 4), dict(padding="same", dilation=(2, 1, 1))),
    ((3, 4, 5, 6), (2, 3, 3, 3, 3), dict(padding="valid", stride=2)),  # unbatched
]


@pytest.mark.parametrize("xshape,wshape,kw", CONV_CASES)
def test_conv3d_matches_the_reference(xshape, wshape, kw):
    x, w, b = RNG.standard_normal(xshape), RNG.standard_normal(wshape), RNG.standard_normal(wshape[0])
    x5 = x if x.ndim == 5 else x[None]
    stride, dilation = [kw.get(k, v) for k, v in (("stride", 1), ("dilation", 1))]
    stride, dilation = [v if isinstance(v, tuple) else (v,) * 3 for v in (stride, dilation)]
    padding = kw.get("padding", 0)
    if padding == "same":
        totals = [d * (k - 1) for d, k in zip(dilation, wshape[2:])]
        lo, hi = [t // 2 for t in totals], [t - t // 2 for t in totals]
    elif padding == "valid":
        lo = hi = (0, 0, 0)
    else:
        lo = hi = padding if isinstance(padding, tuple) else (padding,) * 3
    expected = reference_conv(x5, w, b, stride, lo, hi, dilation, kw.get("groups", 1))
    if x.ndim == 4:
        expected = expected[0]
    with pytest.warns(UserWarning, match="even kernel lengths") if padding == "same" else _no_warning():
        got = F3.conv3d(tensor(x), tensor(w), tensor(b), **kw)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


TRANSPOSED_CASES = [  # (input shape, weight shape, keyword arguments)
    ((2, 4, 3, 4, 2), (4, 3, 2, 3, 2), {}),
    ((1, 4, 3, 2, 3), (4, 2, 3, 2, 2), dict(stride=(2, 1, 3), padding=(1, 0, 1), output_padding=(1, 0, 2),
                                            dilation=(1, 2, 1), groups=2)),
    ((4, 3, 3, 2), (4, 2, 2, 2, 3), dict(stride=2, padding=2, output_padding=1)),  # unbatched, cropped taps
    ((1, 2, 2, 3, 2), (2, 2, 2, 2, 2), dict(stride=1, dilation=3, output_padding=2)),  # padding past the taps
]


@pytest.mark.parametrize("xshape,wshape,kw", TRANSPOSED_CASES)
def test_conv_transpose3d_matches_the_reference(xshape, wshape, kw):
    x, w = RNG.standard_normal(xshape), RNG.standard_normal(wshape)
    b = RNG.standard_normal(wshape[1] * kw.get("groups", 1))
    x5 = x if x.ndim == 5 else x[None]
    triple = {k: (v if isinstance(v, tuple) else (v,) * 3) for k, v in
              dict(dict(stride=1, padding=0, output_padding=0, dilation=1), **kw).items() if k != "groups"}
    expected = reference_conv_transpose(x5, w, b, triple["stride"], triple["padding"], triple["output_padding"],
                                        triple["dilation"], kw.get("groups", 1))
    got = F3.conv_transpose3d(tensor(x), tensor(w), tensor(b), **kw)
    np.testing.assert_allclose(got.numpy(), expected if x.ndim == 5 else expected[0], rtol=1e-10, atol=1e-10)


def test_conv3d_and_conv_transpose3d_gradients_match_finite_differences():
    x, w, b = RNG.standard_normal((1, 4, 4, 3, 4)), RNG.standard_normal((2, 2, 2, 2, 3)), RNG.standard_normal(2)
    check_vjp(lambda x, w, b: F3.conv3d(x, w, b, stride=(2, 1, 1), padding=(1, 0, 1), dilation=(1, 2, 1), groups=2),
              [x, w, b])
    wt = RNG.standard_normal((4, 1, 2, 2, 2))
    check_vjp(lambda x, w, b: F3.conv_transpose3d(x, w, b, stride=(2, 1, 2), padding=1, output_padding=(1, 0, 0),
                                                  groups=2), [x, wt, b])


def test_conv3d_layers_gradients_and_reprs():
    ember.manual_seed(0)
    conv = Conv3d(2, 3, (2, 3, 2), stride=(1, 2, 1), padding=1, padding_mode="circular")
    check_module(conv, [RNG.standard_normal((1, 2, 3, 4, 3))])
    up = ConvTranspose3d(2, 4, 2, stride=2, groups=2, bias=False)
    check_module(up, [RNG.standard_normal((1, 2, 2, 2, 3))])
    assert repr(Conv3d(3, 4, 3, padding=1, stride=(1, 2, 1), bias=False)) == \
        "Conv3d(3, 4, kernel_size=(3, 3, 3), stride=(1, 2, 1), padding=(1, 1, 1), bias=False)"
    assert repr(ConvTranspose3d(4, 2, (2, 3, 3), stride=2, output_padding=1, groups=2)) == \
        "ConvTranspose3d(4, 2, kernel_size=(2, 3, 3), stride=(2, 2, 2), output_padding=(1, 1, 1), groups=2)"
    assert conv.weight.shape == (3, 2, 2, 3, 2) and up.weight.shape == (2, 2, 2, 2, 2)
    x = ember.randn(1, 2, 3, 3, 3).double()
    assert up(x, output_size=(7, 7, 7)).shape == (1, 4, 7, 7, 7)


def test_conv3d_errors_use_pytorchs_words():
    x, w = ember.randn(2, 3, 4, 5, 6), ember.randn(4, 3, 2, 2, 2)
    cases = [
        (lambda: F3.conv3d(ember.randn(2, 3), w), "Expected 4D (unbatched) or 5D (batched) input to conv3d, but got "
                                                  "input of size: [2, 3]"),
        (lambda: F3.conv3d(ember.randn(2, 5, 4, 4, 4), w),
         "Given groups=1, weight of size [4, 3, 2, 2, 2], expected input[2, 5, 4, 4, 4] to have 3 channels, but got 5 "
         "channels"),
        (lambda: F3.conv3d(ember.randn(2, 3, 1, 4, 4), w), "Calculated padded input size per channel: (1 x 4 x 4). "
                                                           "Kernel size: (2 x 2 x 2). Kernel size can't be greater"),
        (lambda: F3.conv3d(x, w, ember.randn(3)), "expected bias to be 1-dimensional with 4 elements, but got bias "
                                                  "of size [3]"),
        (lambda: F3.conv3d(x.double(), w), "expected scalar type Double but found Float"),
        (lambda: F3.conv3d(x, w, padding="same", stride=2), "padding='same' is not supported for strided"),
        (lambda: F3.conv3d(x, w, padding="foo"), "Invalid padding string: 'foo'"),
        (lambda: F3.conv3d(x, w, padding=(1, 2)), "expected padding to be a single integer value or a list of 3 "
                                                  "values to match the convolution dimensions, but got padding=[1, 2]"),
        (lambda: F3.conv3d(x, w, stride=0), "non-positive stride is not supported"),
        (lambda: F3.conv3d(x, w, groups=0), "non-positive groups is not supported"),
        (lambda: F3.conv_transpose3d(ember.randn(3, 5, 6), ember.randn(3, 2, 2, 2, 2)),
         "Expected 4D (unbatched) or 5D (batched) input to conv_transpose3d"),
        (lambda: F3.conv_transpose3d(x, ember.randn(3, 2, 2, 2, 2), stride=2, output_padding=(1, 2, 1)),
         "output padding must be smaller than either stride or dilation, but got output_padding_depth: 1 "
         "output_padding_height: 2 output_padding_width: 1 stride_depth: 2"),
        (lambda: F3.conv_transpose3d(x[:, :2], ember.randn(3, 2, 2, 2, 2)),
         "Given transposed=1, weight of size [3, 2, 2, 2, 2], expected input[2, 2, 4, 5, 6] to have 3 channels"),
    ]
    for call, words in cases:
        with pytest.raises(RuntimeError, match=re.escape(words)):
            call()


# ----------------------------------------------------------------------------- max / avg pooling

MAX_CASES = [  # (dims, input shape, kernel, stride, padding, dilation, ceil_mode)
    (3, (2, 3, 5, 6, 4), (2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1), False),
    (3, (1, 2, 6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 1, 1), (1, 2, 1), True),
    (3, (2, 5, 4, 6), (2, 3, 2), (1, 2, 1), (0, 1, 1), (2, 1, 1), False),  # unbatched
    (2, (2, 3, 7, 6), (3, 3), (2, 2), (1, 1), (1, 1), True),
    (2, (3, 5, 8), (2, 3), (1, 2), (1, 1), (2, 1), False),
    (1, (2, 3, 11), (3,), (2,), (1,), (2,), True),
    (1, (4, 9), (2,), (2,), (0,), (1,), False),
]


def _max_pool_call(dims, x, kernel, stride, padding, dilation, ceil_mode, **extra):
    fn = {1: FP.max_pool1d, 2: FP.max_pool2d, 3: F3.max_pool3d}[dims]
    return fn(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode, **extra)


@pytest.mark.parametrize("dims,shape,kernel,stride,padding,dilation,ceil_mode", MAX_CASES)
def test_max_pool_values_and_flat_indices_match_the_reference(dims, shape, kernel, stride, padding, dilation,
                                                              ceil_mode):
    x = RNG.standard_normal(shape)
    values, indices = reference_max_pool(x, dims, kernel, stride, padding, dilation, ceil_mode)
    got, got_indices = _max_pool_call(dims, tensor(x), kernel, stride, padding, dilation, ceil_mode,
                                      return_indices=True)
    np.testing.assert_array_equal(got.numpy(), values)
    np.testing.assert_array_equal(got_indices.numpy(), indices)
    assert got_indices.dtype is ember.int64
    with_indices = getattr(FP, f"max_pool{dims}d_with_indices")(tensor(x), kernel, stride, padding, dilation,
                                                                  ceil_mode)
    np.testing.assert_array_equal(with_indices[1].numpy(), indices)
    plain = _max_pool_call(dims, tensor(x), kernel, stride, padding, dilation, ceil_mode)
    np.testing.assert_array_equal(plain.numpy(), values)


def test_max_pool_ties_and_all_minus_infinity_windows_follow_pytorch():
    # a tie gives the first maximum its index and its whole gradient (PyTorch's backward)
    x = ember.ones(1, 1, 2, 2, 2, requires_grad=True)
    values, indices = F3.max_pool3d(x, 2, return_indices=True)
    values.sum().backward()
    assert indices.tolist() == [[[[[0]]]]] and x.grad.numpy().reshape(-1).tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    # every element -inf: the index is the window's first element inside the input
    _, indices = FP.max_pool2d(ember.full((1, 1, 3, 3), -math.inf), 3, stride=1, padding=1, return_indices=True)
    assert indices.tolist() == [[[[0, 0, 1], [0, 0, 1], [3, 3, 4]]]]
    _, indices = FP.max_pool2d(ember.full((1, 1, 3, 3), -math.inf), 2, 2, 1, 2, return_indices=True)
    assert indices.tolist() == [[[[4, 4], [4, 4]]]]
    ints = tensor(np.arange(2 * 3 * 4 * 4 * 4).reshape(2, 3, 4, 4, 4) % 7)
    values, indices = F3.max_pool3d(ints, 2, return_indices=True)
    expected, expected_indices = reference_max_pool(ints.numpy(), 3, (2,) * 3, (2,) * 3, (0,) * 3, (1,) * 3)
    assert values.dtype is ember.int64 and (values.numpy() == expected).all()
    assert (indices.numpy() == expected_indices).all()


AVG_CASES = [  # (input shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
    ((2, 3, 5, 6, 4), 2, None, 0, False, True, None),
    ((1, 2, 6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 1, 1), True, True, None),
    ((1, 2, 6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 1, 1), True, False, None),
    ((2, 5, 4, 6), (2, 3, 2), 1, (0, 1, 1), False, True, 5),  # unbatched
]


@pytest.mark.parametrize("shape,kernel,stride,padding,ceil_mode,count_include_pad,divisor", AVG_CASES)
def test_avg_pool3d_matches_the_reference(shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
    x = RNG.standard_normal(shape)
    triple = [v if isinstance(v, tuple) else (v,) * 3 for v in (kernel, kernel if stride is None else stride, padding)]
    expected = reference_avg_pool(x, 3, *triple, ceil_mode, count_include_pad, divisor)
    got = F3.avg_pool3d(tensor(x), kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_avg_pool3d_of_integers_truncates_as_pytorch():
    x = np.arange(2 * 3 * 4 * 4 * 4).reshape(2, 3, 4, 4, 4) % 7 - 3
    got = F3.avg_pool3d(tensor(x), 3, 1, 1, count_include_pad=False)
    expected = np.trunc(reference_avg_pool(x, 3, (3,) * 3, (1,) * 3, (1,) * 3, False, False))
    assert got.dtype is ember.int64 and (got.numpy() == expected).all()


def test_pool_gradients_match_finite_differences():
    x = RNG.standard_normal((1, 2, 4, 5, 3))
    check_vjp(lambda t: F3.max_pool3d(t, (2, 3, 2), (1, 2, 1), 1, (2, 1, 1), ceil_mode=True), [x])
    check_vjp(lambda t: F3.avg_pool3d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False), [x])
    check_vjp(lambda t: F3.adaptive_avg_pool3d(t, (3, 2, 2)), [x])
    check_vjp(lambda t: FP.adaptive_max_pool3d(t, (3, 2, 2)), [x])
    check_vjp(lambda t: FP.adaptive_max_pool1d(t, 3), [RNG.standard_normal((2, 3, 7))])
    check_vjp(lambda t: FP.max_pool2d_with_indices(t, 3, 2, 1)[0], [RNG.standard_normal((2, 5, 6))])
    check_vjp(lambda t: FP.lp_pool3d(t, 3, 2, 1), [RNG.uniform(0.5, 2.0, (1, 2, 3, 3, 3))])


# ----------------------------------------------------------------------------- adaptive pooling

@pytest.mark.parametrize("dims,shape,outs", [
    (3, (2, 3, 5, 6, 4), (2, 4, 3)), (3, (2, 5, 4, 6), (5, 2, 6)), (3, (1, 2, 4, 4, 6), (2, 2, 3)),
    (3, (1, 2, 3, 4, 2), (4, 7, 1)), (2, (2, 3, 7, 9), (3, 4)), (1, (2, 3, 11), (4,)), (1, (3, 5), (7,)),
])
def test_adaptive_pools_match_the_reference(dims, shape, outs):
    x = RNG.standard_normal(shape)
    maximum, indices = reference_adaptive(x, dims, outs, "max")
    values, got_indices = getattr(FP, f"adaptive_max_pool{dims}d")(tensor(x), outs, True)
    np.testing.assert_array_equal(values.numpy(), maximum)
    np.testing.assert_array_equal(got_indices.numpy(), indices)
    same = getattr(FP, f"adaptive_max_pool{dims}d_with_indices")(tensor(x), outs)
    np.testing.assert_array_equal(same[1].numpy(), indices)
    np.testing.assert_array_equal(getattr(FP, f"adaptive_max_pool{dims}d")(tensor(x), outs).numpy(), maximum)
    if dims == 3:
        np.testing.assert_allclose(F3.adaptive_avg_pool3d(tensor(x), outs).numpy(),
                                   reference_adaptive(x, 3, outs, "avg")[0], rtol=1e-12, atol=1e-12)


def test_adaptive_pools_take_none_and_ints_for_output_size():
    x = ember.randn(2, 3, 4, 5, 6)
    assert F3.adaptive_avg_pool3d(x, (None, 3, None)).shape == (2, 3, 4, 3, 6)
    assert FP.adaptive_max_pool3d(x, 2).shape == (2, 3, 2, 2, 2)
    assert F3.adaptive_avg_pool3d(x, 0).shape == (2, 3, 0, 0, 0)
    assert FP.adaptive_max_pool1d(ember.randn(2, 3, 4), (2,)).shape == (2, 3, 2)


def test_an_empty_batch_pools_to_an_empty_batch_and_an_empty_plane_averages_to_nan():
    empty = ember.zeros(0, 2, 4, 4, 4)
    values, indices = F3.max_pool3d(empty, 2, return_indices=True)
    assert values.shape == indices.shape == (0, 2, 2, 2, 2)
    assert F3.avg_pool3d(empty, 2).shape == (0, 2, 2, 2, 2) and F3.conv3d(empty, ember.zeros(3, 2, 2, 2, 2)).shape == \
        (0, 3, 3, 3, 3)
    assert FP.max_unpool3d(values, indices, 2).shape == (0, 2, 4, 4, 4)
    assert np.isnan(F3.adaptive_avg_pool3d(ember.zeros(2, 3, 0, 2, 2), 1).numpy()).all()


# ----------------------------------------------------------------------------- unpooling and lp pooling

@pytest.mark.parametrize("dims,shape,kernel,stride,padding,output_size", [
    (3, (2, 3, 4, 6, 6), 2, None, 0, None), (3, (3, 5, 4, 6), 3, 2, 1, (5, 4, 6)),
    (2, (2, 3, 6, 7), (3, 2), 1, (1, 0), None), (2, (3, 5, 5), 2, None, 0, (1, 3, 5, 5)),
    (1, (2, 3, 9), 3, 2, 1, None), (1, (3, 8), 2, None, 0, [9]),
])
def test_max_unpool_puts_each_value_at_its_index(dims, shape, kernel, stride, padding, output_size):
    x = RNG.standard_normal(shape)
    values, indices = _max_pool_call(dims, tensor(x), kernel, stride, padding, 1, False, return_indices=True)
    got = getattr(FP, f"max_unpool{dims}d")(values, indices, kernel, stride, padding, output_size)
    k, s, p = [v if isinstance(v, tuple) else (v,) * dims for v in (kernel, kernel if stride is None else stride,
                                                                      padding)]
    sizes = tuple(output_size[-dims:]) if output_size else tuple(
        (n - 1) * st + kk - 2 * pp for n, st, kk, pp in zip(values.shape[-dims:], s, k, p))
    lead = values.shape[:-dims]
    expected = np.zeros(tuple(lead) + (math.prod(sizes),))
    flat_values, flat_indices = values.numpy().reshape(lead + (-1,)), indices.numpy().reshape(lead + (-1,))
    for plane in np.ndindex(*lead):
        expected[plane][flat_indices[plane]] = flat_values[plane]
    np.testing.assert_array_equal(got.numpy(), expected.reshape(tuple(lead) + sizes))
    module = getattr(pooling, f"MaxUnpool{dims}d")(kernel, stride, padding)
    np.testing.assert_array_equal(module(values, indices, output_size).numpy(), got.numpy())


def test_max_unpool_gradient_reads_each_value_back():
    x = RNG.standard_normal((1, 2, 4, 4, 4))
    _, indices = F3.max_pool3d(tensor(x), 2, return_indices=True)
    check_vjp(lambda v: FP.max_unpool3d(v, indices, 2), [RNG.standard_normal(indices.shape)])


@pytest.mark.parametrize("dims,norm_type,kernel,stride,ceil_mode", [
    (1, 2, 3, None, False), (1, 3.0, 3, 2, True), (2, 1.5, (2, 3), None, False), (2, 2, 3, 2, True),
    (3, 2, 2, None, False), (3, 4, (2, 3, 2), (1, 2, 1), True), (2, math.inf, 2, 1, False), (1, -math.inf, 2, 1, False),
])
def test_lp_pool_matches_pytorchs_formula(dims, norm_type, kernel, stride, ceil_mode):
    shape = (2, 3) + (7, 6, 5)[:dims]
    x = RNG.uniform(0.1, 2.0, shape) * RNG.choice([-1, 1], shape)
    k = kernel if isinstance(kernel, tuple) else (kernel,) * dims
    s = k if stride is None else (stride if isinstance(stride, tuple) else (stride,) * dims)
    if math.isinf(norm_type):
        values, _ = reference_max_pool(np.abs(x) * np.sign(norm_type), dims, k, s, (0,) * dims, (1,) * dims, ceil_mode)
        expected = values * np.sign(norm_type)
    else:  # avg_pool of x**p (windows clipped in ceil mode) times the kernel size, ** 1/p
        with np.errstate(invalid="ignore"):  # (a negative base to a fractional power: nan, as PyTorch)
            mean = reference_avg_pool(x ** norm_type, dims, k, s, (0,) * dims, ceil_mode, True)
            expected = (np.sign(mean) * np.abs(mean) * math.prod(k)) ** (1.0 / norm_type)
    got = getattr(FP, f"lp_pool{dims}d")(tensor(x), norm_type, kernel, stride, ceil_mode)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    module = getattr(pooling, f"LPPool{dims}d")(norm_type, kernel, stride, ceil_mode)
    np.testing.assert_allclose(module(tensor(x)).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_lp_pool_gradient_is_zero_where_a_window_sums_to_zero():
    x = ember.zeros(1, 1, 4, requires_grad=True)
    FP.lp_pool1d(x, 2, 2).sum().backward()
    assert x.grad.tolist() == [[[0.0, 0.0, 0.0, 0.0]]]


# ----------------------------------------------------------------------------- pooling errors

def test_pool_errors_use_pytorchs_words():
    x5, x3 = ember.randn(2, 3, 4, 5, 6), ember.randn(2, 3, 6)
    indices = FP.max_pool2d(ember.arange(16.0).reshape(1, 1, 4, 4), 2, return_indices=True)[1]  # 5 7 13 15
    cases = [
        (lambda: F3.max_pool3d(ember.randn(2, 3, 4), 2), "non-empty 4D or 5D (batch mode) tensor expected for input"),
        (lambda: F3.max_pool3d(x5, 2, padding=2), "pad should be at most half of effective kernel size, but got "
                                                  "pad=2, kernel_size=2 and dilation=1"),
        (lambda: F3.max_pool3d(x5, 3, 1, 2, 2), "pad should be smaller than or equal to half of kernel size, but got "
                                                "kT: 3 kW: 3 kH: 3 padT: 2 padW: 2 padH: 2"),
        (lambda: F3.max_pool3d(x5, 5), "Given input size: (3x4x5x6). Calculated output size: (3x0x1x1). Output size "
                                       "is too small"),
        (lambda: F3.max_pool3d(x5, 0), "stride should not be zero"),
        (lambda: F3.max_pool3d(x5, 2, dilation=0), "dilation should be greater than zero, but got dilationT: 0 "
                                                   "dilationH: 0 dilationW: 0"),
        (lambda: F3.max_pool3d(x5, (2, 2)), "max_pool3d: kernel_size must either be a single int, or a tuple of "
                                            "three ints"),
        (lambda: F3.max_pool3d(x5, 2, -1), "stride should be greater than zero, but got dT: -1 dH: -1 dW: -1"),
        (lambda: F3.max_pool3d(x5, 2, padding=-1), "pad must be non-negative, but got pad: -1"),
        (lambda: FP.max_pool1d(x3, 7, return_indices=True), "Given input size: (3x1x6). Calculated output size: "
                                                            "(3x1x0). Output size is too small"),
        (lambda: FP.max_pool1d(x3, (2, 2), return_indices=True), "max_pool1d() argument 'kernel_size' should "
                                                                 "contain one int (got 2)"),
        (lambda: FP.max_pool1d(x3, 3, 1, 2, 2, return_indices=True), "pad should be smaller than or equal to half "
                                                                     "of kernel size, but got padW = 2, padH = 0, "
                                                                     "kW = 3, kH = 1"),
        (lambda: FP.max_pool2d(x5, 2, return_indices=True), "non-empty 3D or 4D (batch mode) tensor expected"),
        (lambda: FP.max_pool2d(ember.randn(2, 0, 4, 4), 2, return_indices=True),
         "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got:[2, 0, 4, 4]"),
        (lambda: F3.avg_pool3d(x5, 5, padding=2), "input image (T: 4 H: 5 W: 6) smaller than kernel size "
                                                  "(kT: 5 kH: 5 kW: 5)"),
        (lambda: F3.avg_pool3d(x5, 2, divisor_override=0), "divisor must be not zero"),
        (lambda: F3.avg_pool3d(x5, 2, (1, 1)), "avg_pool3d: stride must be omitted, a single int, or a tuple of "
                                               "three ints"),
        (lambda: F3.adaptive_avg_pool3d(ember.randn(2, 3, 4), 2), "adaptive_avg_pool3d(): Expected 4D or 5D "
                                                                  "tensor, but got [2, 3, 4]"),
        (lambda: F3.adaptive_avg_pool3d(x5, (2, 2)), "adaptive_avg_pool3d: output_size must be 3"),
        (lambda: FP.adaptive_max_pool3d(x5, (2, 2)), "adaptive_max_pool3d(): internal error: output_size.size() "
                                                     "must be 3"),
        (lambda: FP.adaptive_max_pool1d(ember.randn(2, 3, 4, 5), 2), "Expected 2 to 3 dimensions, but got "
                                                                     "4-dimensional tensor for argument #1 'self' "
                                                                     "(while checking arguments for "
                                                                     "adaptive_max_pool1d)"),
        (lambda: FP.adaptive_max_pool2d(ember.randn(2, 3, 0, 0), 2, True),
         "adaptive_max_pool2d(): Expected input to have non-zero size for non-batch dimensions, but input has sizes "
         "[2, 3, 0, 0] with dimension 2 being empty"),
        (lambda: FP.max_unpool2d(tensor(np.zeros((1, 1, 2, 2))), indices + 100, 2),
         "Found an invalid max index: 105 (output volumes are of size 4x4)"),
        (lambda: FP.max_unpool2d(tensor(np.zeros((1, 1, 2, 2))), indices.int(), 2),
         "elements in indices should be type int64 but got: Int"),
        (lambda: FP.max_unpool2d(tensor(np.zeros((1, 1, 2, 2))), indices[..., :1], 2),
         "Expected shape of indices to be same as that of the input tensor ([1, 1, 2, 2]) but got indices tensor "
         "with shape: [1, 1, 2, 1]"),
        (lambda: FP.max_unpool2d(tensor(np.zeros((2, 2))), indices[0, 0], 2),
         "Input to max_unpooling2d should be a 3d or 4d Tensor, but got a tensor with 2 dimensions."),
    ]
    for call, words in cases:
        with pytest.raises(RuntimeError, match=re.escape(words)):
            call()
    with pytest.raises(ValueError, match=re.escape('invalid output_size "(7, 7)" (dim 0 must be between 2 and 6)')):
        FP.max_unpool2d(tensor(np.zeros((1, 1, 2, 2))), indices, 2, output_size=(7, 7))
    with pytest.raises(ValueError, match="output_size should be a sequence containing 2 or 4 elements, but it has "
                                         "a length of '3'"):
        FP.max_unpool2d(tensor(np.zeros((1, 1, 2, 2))), indices, 2, output_size=(7, 7, 7))
    with pytest.raises(NotImplementedError, match="\"adaptive_avg_pool3d_cpu\" not implemented for 'Long'"):
        F3.adaptive_avg_pool3d(ember.tensor(np.zeros((2, 2, 2, 2), np.int64)), 1)


# ----------------------------------------------------------------------------- modules

def test_pooling_modules_forward_and_reprs_as_pytorch():
    x = ember.randn(2, 3, 4, 6, 5)
    pool = pooling.MaxPool3d((2, 1, 2), return_indices=True)
    values, indices = pool(x)
    np.testing.assert_array_equal(indices.numpy(), F3.max_pool3d(x, (2, 1, 2), return_indices=True)[1].numpy())
    assert pooling.MaxPool2d(2, return_indices=True)(x[0])[1].dtype is ember.int64
    assert pooling.AdaptiveMaxPool2d(2, True)(x[0])[1].shape == (3, 4, 2, 2)
    assert pooling.MaxPool1d(2)(x[0, 0]).shape == (4, 6, 2)
    reprs = {
        pooling.MaxPool3d(2): "MaxPool3d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)",
        pool: "MaxPool3d(kernel_size=(2, 1, 2), stride=(2, 1, 2), padding=0, dilation=1, ceil_mode=False)",
        pooling.MaxPool1d(3, return_indices=True):
            "MaxPool1d(kernel_size=3, stride=3, padding=0, dilation=1, ceil_mode=False)",
        pooling.AvgPool3d(3, 1, 1): "AvgPool3d(kernel_size=3, stride=1, padding=1)",
        pooling.LPPool2d(2, 3): "LPPool2d(norm_type=2, kernel_size=3, stride=None, ceil_mode=False)",
        pooling.LPPool3d(1.5, (2, 2, 2), 1): "LPPool3d(norm_type=1.5, kernel_size=(2, 2, 2), stride=1, "
                                                  "ceil_mode=False)",
        pooling.MaxUnpool2d(2): "MaxUnpool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))",
        pooling.MaxUnpool3d((2, 2, 2), 1): "MaxUnpool3d(kernel_size=(2, 2, 2), stride=(1, 1, 1), "
                                                "padding=(0, 0, 0))",
        pooling.MaxUnpool1d(2): "MaxUnpool1d(kernel_size=(2,), stride=(2,), padding=(0,))",
        pooling.AdaptiveMaxPool3d((None, 2, 3), True): "AdaptiveMaxPool3d(output_size=(None, 2, 3))",
        pooling.AdaptiveMaxPool1d(3): "AdaptiveMaxPool1d(output_size=3)",
        pooling.AdaptiveAvgPool3d(2): "AdaptiveAvgPool3d(output_size=2)",
    }
    for module, text in reprs.items():
        assert repr(module) == text


def test_batchnorm3d_normalises_over_batch_and_volume_and_tracks_statistics():
    x = RNG.standard_normal((3, 2, 2, 3, 2)) * 2 + 1
    bn = BatchNorm3d(2, momentum=0.5).double()
    out = bn(tensor(x))
    mean, var = x.mean(axis=(0, 2, 3, 4), keepdims=True), x.var(axis=(0, 2, 3, 4), keepdims=True)
    np.testing.assert_allclose(out.detach().numpy(), (x - mean) / np.sqrt(var + 1e-5), rtol=1e-10, atol=1e-10)
    count = x.size // 2
    np.testing.assert_allclose(bn.running_var.numpy(), 0.5 + 0.5 * var.reshape(-1) * count / (count - 1))
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.5 * mean.reshape(-1))
    bn.eval()
    np.testing.assert_allclose(bn(tensor(x)).detach().numpy(), (x - bn.running_mean.numpy().reshape(1, 2, 1, 1, 1))
                               / np.sqrt(bn.running_var.numpy().reshape(1, 2, 1, 1, 1) + 1e-5), rtol=1e-10)
    with pytest.raises(ValueError, match="expected 5D input"):
        bn(ember.randn(2, 2, 3, 3).double())
    check_module(BatchNorm3d(2), [RNG.standard_normal((2, 2, 2, 2, 3))])
    assert repr(BatchNorm3d(4)).startswith("BatchNorm3d(4, eps=1e-05, momentum=0.1, affine=True")


# ----------------------------------------------------------------------------- eager against ember.compile

def test_compiled_forward_with_indices_matches_eager():
    x = ember.from_numpy(RNG.standard_normal((2, 3, 5, 6, 4)).astype(np.float32))

    def forward(t):
        values, indices = F3.max_pool3d(t, 2, padding=1, return_indices=True)
        restored = FP.max_unpool3d(values, indices, 2, padding=1, output_size=t.shape[-3:])
        adaptive, where = FP.adaptive_max_pool3d(t, (2, 4, 3), True)
        pooled = F3.avg_pool3d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        pooled = pooled + F3.adaptive_avg_pool3d(t, (3, 4, 3))
        return restored, indices, adaptive, where, pooled, FP.lp_pool3d(t, 2, 2)
    expected = forward(x)
    compiled = ember.compile(forward)
    for _ in range(2):
        for got, want in zip(compiled(x), expected):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_compiled_training_step_matches_eager():
    ember.manual_seed(0)
    model = ember.nn.Sequential(Conv3d(2, 4, 3, padding=1), BatchNorm3d(4), pooling.MaxPool3d(2),
                                ConvTranspose3d(4, 3, 2, stride=2), pooling.AvgPool3d(2))
    x = ember.randn(2, 2, 4, 4, 4)
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1)

    def step(x):
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eager = [step(x).item() for _ in range(2)]
    model.load_state_dict(state)
    compiled = ember.compile(step)
    np.testing.assert_allclose([compiled(x).item() for _ in range(2)], eager, rtol=1e-4)
