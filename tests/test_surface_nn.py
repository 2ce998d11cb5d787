"""nn.functional and the stateless nn modules written the way a PyTorch user writes them (`import ember
as torch`, `torch.nn.X`, `F.x`, and the `torch.x` aliases of the convolution and pooling functions):
activations, losses, padding, pixel shuffles, upsampling, pooling with indices, convolutions, bilinear
and fold. Values against numpy in float64, gradients against float64 finite differences, reprs and
errors as PyTorch's. The modules with state (norms, dropout, EmbeddingBag, recurrent layers, the
Transformer decoder, ParameterDict) and the compiled ones are in tests/test_surface_nn_modules.py."""
import numpy as np
import pytest

import ember as torch
import ember.nn as nn
import ember.nn.functional as F
from finite_differences import check_vjp
from gradcheck import check_module

RNG = np.random.default_rng(0)


def tensor(array, dtype=torch.float64):
    return torch.tensor(np.asarray(array), dtype=dtype)


def params(module):
    return {name: p.detach().numpy().astype(np.float64) for name, p in module.named_parameters()}


def seeded(fn):
    """fn with the random generator reseeded on every call, so that finite differences see one mask."""
    def call(*args):
        torch.manual_seed(0)
        return fn(*args)
    return call


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------- activations

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
ACTIVATIONS = [  # (id, module or function call, float64 reference, repr of the module or None)
    ("CELU", nn.CELU(0.5), lambda x: np.maximum(x, 0) + np.minimum(0, 0.5 * np.expm1(x / 0.5)), "CELU(alpha=0.5)"),
    ("SELU", nn.SELU(), lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)), "SELU()"),
    ("Hardsigmoid", nn.Hardsigmoid(), lambda x: np.clip(x / 6 + 0.5, 0, 1), "Hardsigmoid()"),
    ("Hardswish", nn.Hardswish(), lambda x: x * np.clip(x + 3, 0, 6) / 6, "Hardswish()"),
    ("Softmin", nn.Softmin(dim=1), lambda x: softmax(-x, 1), "Softmin(dim=1)"),
    ("Threshold", nn.Threshold(0.1, 20.0), lambda x: np.where(x > 0.1, x, 20.0),
     "Threshold(threshold=0.1, value=20.0)"),
    ("GLU", nn.GLU(1), lambda x: x[:, :2] * sigmoid(x[:, 2:]), "GLU(dim=1)"),
    ("F.glu", lambda x: F.glu(x), lambda x: x[..., :2] * sigmoid(x[..., 2:]), None),
    ("F.logsigmoid", lambda x: F.logsigmoid(x), lambda x: -np.logaddexp(0, -x), None),
    ("F.mish", lambda x: F.mish(x), lambda x: x * np.tanh(np.logaddexp(0, x)), None),
    ("F.softsign", lambda x: F.softsign(x), lambda x: x / (1 + np.abs(x)), None),
]


@pytest.mark.parametrize("name,call,reference,text", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
def test_activations_match_numpy_and_finite_differences(name, call, reference, text):
    x = RNG.uniform(-4, 4, (3, 4, 4))
    x[(np.abs(x - 0.1) < 0.05) | (np.abs(np.abs(x) - 3) < 0.05)] = 1.0  # (off the kinks of Threshold, Hardsigmoid...)
    np.testing.assert_allclose(call(tensor(x)).detach().numpy(), reference(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(call(tensor(x, torch.float32)).detach().numpy(), reference(x), rtol=2e-6, atol=2e-6)
    check_vjp(call, [x])
    if text is not None:
        assert repr(call) == text


def test_activation_options_and_large_inputs():
    x = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    np.testing.assert_allclose(F.logsigmoid(tensor(x)).detach().numpy(), -np.logaddexp(0, -x), rtol=1e-12)
    np.testing.assert_allclose(F.mish(tensor(x)).numpy(), x * np.tanh(np.logaddexp(0, x)), rtol=1e-12, atol=1e-300)
    assert repr(nn.Threshold(0.1, 20.0, inplace=True)) == "Threshold(threshold=0.1, value=20.0, inplace=True)"
    assert repr(nn.CELU()) == "CELU(alpha=1.0)" and repr(nn.GLU()) == "GLU(dim=-1)"
    assert repr(nn.Softmin()) == "Softmin(dim=None)"
    y = torch.tensor([-1.0, 0.5, 3.0])
    assert nn.Threshold(0.6, -2.0, inplace=True)(y) is y and y.tolist() == [-2.0, -2.0, 3.0]
    # PyTorch's Hardsigmoid and Hardswish leave inplace out of their repr; ReLU shows it
    assert repr(nn.Hardsigmoid(inplace=True)) == "Hardsigmoid()" and repr(nn.Hardswish(inplace=True)) == "Hardswish()"
    assert repr(nn.ReLU(inplace=True)) == "ReLU(inplace=True)"
    y = torch.tensor([-4.0, 0.0, 1.5])
    assert nn.Hardsigmoid(inplace=True)(y) is y and y.tolist() == [0.0, 0.5, 0.75]


@pytest.mark.parametrize("call", [lambda x: F.glu(x, 1), lambda x: F.glu(x), lambda x: nn.GLU(1)(x)])
def test_glu_needs_an_even_halving_dimension(call):
    with pytest.raises(RuntimeError, match="Halving dimension must be even, but dimension 1 is size 3"):
        call(torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="glu does not support scalars because halving size must be even"):
        F.glu(torch.tensor(1.0), 0)
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 5\)"):
        F.glu(torch.ones(2, 4), 5)
    assert F.glu(torch.ones(2, 0), 1).shape == (2, 0)
    halves = F.glu(tensor([[1.0, 2.0], [3.0, 4.0]]), 0)
    np.testing.assert_allclose(halves.numpy(), [[1.0, 2.0]] * sigmoid(np.array([3.0, 4.0])), rtol=1e-12)


# ----------------------------------------------------------------------------- losses

LOSS_INPUT, LOSS_TARGET = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
LOSS_SIGNS = np.sign(LOSS_TARGET)


@pytest.mark.parametrize("reduction,reduce", [("mean", np.mean), ("sum", np.sum), ("none", lambda v: v)])
def test_l1_and_soft_margin_losses(reduction, reduce):
    got = F.l1_loss(tensor(LOSS_INPUT), tensor(LOSS_TARGET), reduction=reduction)
    np.testing.assert_allclose(got.numpy(), reduce(np.abs(LOSS_INPUT - LOSS_TARGET)), rtol=1e-12)
    got = F.soft_margin_loss(tensor(LOSS_INPUT), tensor(LOSS_SIGNS), reduction=reduction)
    np.testing.assert_allclose(got.numpy(), reduce(np.log1p(np.exp(-LOSS_SIGNS * LOSS_INPUT))), rtol=1e-12)
    check_vjp(lambda x, y: F.l1_loss(x, y, reduction=reduction), [LOSS_INPUT, LOSS_TARGET])
    check_vjp(lambda x, y: F.soft_margin_loss(x, y, reduction=reduction), [LOSS_INPUT, LOSS_SIGNS], wrt=[0])


def test_soft_margin_loss_refuses_a_target_that_requires_grad():
    message = ("The function 'soft_margin_loss' is not differentiable with respect to argument 'target'. This input "
               "cannot have requires_grad True.")
    x, target = tensor(LOSS_INPUT, torch.float32), torch.tensor(LOSS_SIGNS, dtype=torch.float32, requires_grad=True)
    for call in (F.soft_margin_loss, nn.SoftMarginLoss(), lambda a, b: F.soft_margin_loss(a.requires_grad_(), b)):
        with pytest.raises(RuntimeError) as error:
            call(x.clone(), target)
        assert str(error.value) == message
    with torch.no_grad():
        loss = F.soft_margin_loss(x, target)
    np.testing.assert_allclose(loss.numpy(), np.log1p(np.exp(-LOSS_SIGNS * LOSS_INPUT)).mean(), rtol=1e-6)


# ----------------------------------------------------------------------------- padding layers

PADS = [  # (module, input shape, numpy.pad widths of the trailing dims (first dim first), numpy mode, repr)
    (nn.ConstantPad2d(2, 3.5), (2, 3, 4), [(2, 2), (2, 2)], {"constant_values": 3.5},
     "ConstantPad2d(padding=(2, 2, 2, 2), value=3.5)"),
    (nn.ConstantPad3d((1, 0, 2, 0, 0, 1), -1.0), (1, 2, 2, 3, 2), [(0, 1), (2, 0), (1, 0)],
     {"constant_values": -1.0}, "ConstantPad3d(padding=(1, 0, 2, 0, 0, 1), value=-1.0)"),
    (nn.ZeroPad1d((1, 2)), (2, 3, 4), [(1, 2)], {}, "ZeroPad1d((1, 2))"),
    (nn.ZeroPad3d(2), (2, 2, 3, 2), [(2, 2)] * 3, {}, "ZeroPad3d((2, 2, 2, 2, 2, 2))"),
    (nn.ReplicationPad1d((1, 3)), (2, 3, 4), [(1, 3)], {"mode": "edge"}, "ReplicationPad1d((1, 3))"),
    (nn.ReplicationPad3d(1), (1, 2, 2, 3, 2), [(1, 1)] * 3, {"mode": "edge"}, "ReplicationPad3d((1, 1, 1, 1, 1, 1))"),
    (nn.CircularPad3d((1, 2, 0, 1, 1, 0)), (1, 2, 2, 3, 3), [(1, 0), (0, 1), (1, 2)], {"mode": "wrap"},
     "CircularPad3d((1, 2, 0, 1, 1, 0))"),
]


@pytest.mark.parametrize("module,shape,widths,mode,text", PADS, ids=[p[4].split("(")[0] for p in PADS])
def test_padding_layers_match_numpy_pad(module, shape, widths, mode, text):
    x = RNG.standard_normal(shape)
    expected = np.pad(x, [(0, 0)] * (x.ndim - len(widths)) + widths, **mode)
    np.testing.assert_array_equal(module(tensor(x)).detach().numpy(), expected)
    check_vjp(module, [x])
    assert repr(module) == text


# ----------------------------------------------------------------------------- pixel shuffles and upsampling

def pixel_shuffle_reference(x, r):
    n, c, h, w = x.shape
    return x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (r * r), h * r, w * r)


def pixel_unshuffle_reference(x, r):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r)


def test_pixel_shuffle_and_unshuffle_are_inverse_rearrangements():
    x = RNG.standard_normal((2, 8, 2, 3))
    np.testing.assert_array_equal(nn.PixelShuffle(2)(tensor(x)).detach().numpy(), pixel_shuffle_reference(x, 2))
    y = RNG.standard_normal((2, 2, 6, 9))
    for call in (nn.PixelUnshuffle(3), lambda t: F.pixel_unshuffle(t, 3), lambda t: torch.pixel_unshuffle(t, 3)):
        np.testing.assert_array_equal(call(tensor(y)).detach().numpy(), pixel_unshuffle_reference(y, 3))
        check_vjp(call, [y])
    np.testing.assert_array_equal(nn.PixelShuffle(3)(nn.PixelUnshuffle(3)(tensor(y))).detach().numpy(), y)
    check_vjp(nn.PixelShuffle(2), [x])
    assert repr(nn.PixelShuffle(2)) == "PixelShuffle(upscale_factor=2)"
    assert repr(nn.PixelUnshuffle(3)) == "PixelUnshuffle(downscale_factor=3)"


def test_upsampling_nearest_and_bilinear_with_aligned_corners():
    x = RNG.standard_normal((2, 3, 3, 4))
    rows, cols = np.floor(np.arange(5) * 3 / 5).astype(int), np.floor(np.arange(7) * 4 / 7).astype(int)
    nearest = nn.UpsamplingNearest2d(size=(5, 7))
    np.testing.assert_array_equal(nearest(tensor(x)).detach().numpy(), x[:, :, rows][:, :, :, cols])
    np.testing.assert_array_equal(nn.UpsamplingNearest2d(scale_factor=2)(tensor(x)).detach().numpy(),
                                  x.repeat(2, axis=2).repeat(2, axis=3))

    def bilinear_axis(a, axis, size):
        position = np.arange(size) * (a.shape[axis] - 1) / (size - 1)
        low = np.minimum(np.floor(position).astype(int), a.shape[axis] - 2)
        frac = (position - low).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
        return np.take(a, low, axis) * (1 - frac) + np.take(a, low + 1, axis) * frac

    bilinear = nn.UpsamplingBilinear2d(scale_factor=2)
    expected = bilinear_axis(bilinear_axis(x, 2, 6), 3, 8)
    np.testing.assert_allclose(bilinear(tensor(x)).detach().numpy(), expected, rtol=1e-12, atol=1e-14)
    check_vjp(bilinear, [x])
    check_vjp(nearest, [x])
    assert repr(bilinear) == "UpsamplingBilinear2d(scale_factor=2.0, mode='bilinear')"
    assert repr(nearest) == "UpsamplingNearest2d(size=(5, 7), mode='nearest')"


# ----------------------------------------------------------------------------- pooling

def windows(length, out):
    return [(i * length // out, -(-(i + 1) * length // out)) for i in range(out)]


def window_max(x, ids, out, box_at):
    """Max over each output position's window x[..., box_at(position)] and the flat spatial index
    (from ids) it came from."""
    values, indices = np.empty(x.shape[:2] + out), np.empty(x.shape[:2] + out, np.int64)
    for position in np.ndindex(*out):
        box = box_at(position)
        patch = x[(slice(None), slice(None)) + box].reshape(x.shape[:2] + (-1,))
        best = patch.argmax(-1)
        values[(Ellipsis,) + position] = np.take_along_axis(patch, best[..., None], -1)[..., 0]
        indices[(Ellipsis,) + position] = ids[box].reshape(-1)[best]
    return values, indices


def adaptive_max_reference(x, out):
    """PyTorch's adaptive windows [floor(i L / out), ceil((i+1) L / out))."""
    spatial = x.shape[2:]
    return window_max(x, np.arange(np.prod(spatial)).reshape(spatial), out,
                      lambda at: tuple(slice(*windows(spatial[d], out[d])[at[d]]) for d in range(len(out))))


def max_pool_reference(x, kernel, stride, padding, dilation, ceil_mode=False):
    """Dilated windows of the -inf padded input; with ceil_mode a last partial window that starts
    inside the input (or its left padding)."""
    spatial, nd = x.shape[2:], x.ndim - 2
    out = []
    for d in range(nd):
        span = spatial[d] + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1
        size = (-(-span // stride[d]) if ceil_mode else span // stride[d]) + 1
        out.append(size - 1 if ceil_mode and (size - 1) * stride[d] >= spatial[d] + padding[d] else size)
    widths = [(p, p + s * k) for p, s, k in zip(padding, stride, kernel)]
    padded = np.pad(x, [(0, 0)] * 2 + widths, constant_values=-np.inf)
    ids = np.pad(np.arange(np.prod(spatial)).reshape(spatial), widths, constant_values=-1)
    return window_max(padded, ids, tuple(out), lambda at: tuple(
        slice(at[d] * stride[d], at[d] * stride[d] + dilation[d] * (kernel[d] - 1) + 1, dilation[d]) for d in range(nd)))


def test_adaptive_max_pools_with_indices_1d_2d_3d():
    for call, shape, out in [
        (lambda t: F.adaptive_max_pool1d_with_indices(t, 3), (2, 3, 10), (3,)),
        (lambda t: F.adaptive_max_pool2d_with_indices(t, (2, 3)), (2, 2, 5, 7), (2, 3)),
        (lambda t: F.adaptive_max_pool3d_with_indices(t, 2), (1, 2, 3, 5, 4), (2, 2, 2)),
    ]:
        x = RNG.standard_normal(shape)
        values, indices = call(tensor(x))
        expected_values, expected_indices = adaptive_max_reference(x, out)
        np.testing.assert_array_equal(values.numpy(), expected_values)
        np.testing.assert_array_equal(indices.numpy(), expected_indices)
        assert indices.dtype == torch.int64
        check_vjp(lambda t: call(t)[0], [x])


def test_max_pools_with_indices_1d_3d_and_the_torch_alias():
    x = RNG.standard_normal((2, 3, 11))
    for call, reference_args in [  # (call, (kernel, stride, padding, dilation, ceil_mode))
        (lambda t: F.max_pool1d_with_indices(t, 3, 2, 1), ((3,), (2,), (1,), (1,), False)),
        (lambda t: torch.max_pool1d_with_indices(t, 3, 2), ((3,), (2,), (0,), (1,), False)),
        (lambda t: F.max_pool1d_with_indices(t, 2, dilation=3, ceil_mode=True), ((2,), (2,), (0,), (3,), True)),
    ]:
        values, indices = call(tensor(x))
        expected_values, expected_indices = max_pool_reference(x, *reference_args)
        np.testing.assert_array_equal(values.numpy(), expected_values)
        np.testing.assert_array_equal(indices.numpy(), expected_indices)
        check_vjp(lambda t: call(t)[0], [x])
    y = RNG.standard_normal((1, 2, 4, 5, 6))
    values, indices = F.max_pool3d_with_indices(tensor(y), (2, 3, 2), stride=(2, 1, 2), padding=(1, 1, 0))
    expected_values, expected_indices = max_pool_reference(y, (2, 3, 2), (2, 1, 2), (1, 1, 0), (1, 1, 1))
    np.testing.assert_array_equal(values.numpy(), expected_values)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)
    check_vjp(lambda t: F.max_pool3d_with_indices(t, 2)[0], [y])


def test_max_unpool1d_scatters_to_the_indices():
    x = RNG.standard_normal((2, 3, 8))
    values, indices = F.max_pool1d_with_indices(tensor(x), 2)
    for kwargs, length in [({}, 8), ({"output_size": [9]}, 9)]:
        got = F.max_unpool1d(values, indices, 2, **kwargs).detach().numpy()
        expected = np.zeros((2, 3, length))
        np.put_along_axis(expected, indices.numpy(), values.numpy(), -1)
        np.testing.assert_array_equal(got, expected)
    check_vjp(lambda v: F.max_unpool1d(v, indices, 2, stride=2), [values.numpy()])


def test_adaptive_avg_pool1d_and_lp_pools():
    x = RNG.standard_normal((2, 3, 7))
    expected = np.stack([x[..., a:b].mean(-1) for a, b in windows(7, 3)], -1)
    for call in (nn.AdaptiveAvgPool1d(3), lambda t: F.adaptive_avg_pool1d(t, 3),
                 lambda t: torch.adaptive_avg_pool1d(t, 3)):
        np.testing.assert_allclose(call(tensor(x)).detach().numpy(), expected, rtol=1e-12)
        check_vjp(call, [x])
    assert repr(nn.AdaptiveAvgPool1d(3)) == "AdaptiveAvgPool1d(output_size=3)"
    positive = RNG.uniform(0.5, 2.0, (2, 3, 9))
    lp = nn.LPPool1d(2, 3, stride=2)
    expected = np.stack([np.sqrt((x[..., 2 * i:2 * i + 3] ** 2).sum(-1)) for i in range(3)], -1)
    np.testing.assert_allclose(lp(tensor(x[..., :7])).detach().numpy(), expected, rtol=1e-12)
    expected = np.stack([(positive[..., 3 * i:3 * i + 3] ** 1.5).sum(-1) ** (1 / 1.5) for i in range(3)], -1)
    np.testing.assert_allclose(nn.LPPool1d(1.5, 3)(tensor(positive)).detach().numpy(), expected, rtol=1e-12)
    check_vjp(lp, [positive])
    assert repr(lp) == "LPPool1d(norm_type=2, kernel_size=3, stride=2, ceil_mode=False)"
    image = RNG.uniform(0.5, 2.0, (2, 2, 4, 6))
    got = F.lp_pool2d(tensor(image), 3, (2, 3))
    blocks = image.reshape(2, 2, 2, 2, 2, 3)
    np.testing.assert_allclose(got.numpy(), (blocks ** 3).sum((3, 5)) ** (1 / 3), rtol=1e-12)
    got = F.lp_pool2d(tensor(image), 2, 2, stride=(1, 2))
    expected = np.stack([np.sqrt((image[:, :, i:i + 2].reshape(2, 2, 2, 3, 2) ** 2).sum((2, 4))) for i in range(3)], 2)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    check_vjp(lambda t: F.lp_pool2d(t, 3, (2, 3)), [image])


# ----------------------------------------------------------------------------- convolutions

def conv_reference(x, w, b, stride, padding, dilation, groups):
    """Grouped, strided, dilated cross-correlation over any number of spatial dims, one kernel
    offset at a time."""
    nd = x.ndim - 2
    x = np.pad(x, [(0, 0)] * 2 + [(p, p) for p in padding])
    kernel = w.shape[2:]
    out = [(x.shape[2 + d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1 for d in range(nd)]
    result = np.zeros((x.shape[0], w.shape[0], *out))
    per_in, per_out = w.shape[1], w.shape[0] // groups
    for offset in np.ndindex(*kernel):
        box = tuple(slice(offset[d] * dilation[d], offset[d] * dilation[d] + stride[d] * (out[d] - 1) + 1, stride[d])
                    for d in range(nd))
        patch = x[(slice(None), slice(None)) + box]
        for g in range(groups):
            taps = w[(slice(g * per_out, (g + 1) * per_out), slice(None)) + offset]
            group = patch[:, g * per_in:(g + 1) * per_in]
            result[:, g * per_out:(g + 1) * per_out] += np.einsum("nc...,oc->no...", group, taps)
    return result if b is None else result + b.reshape((-1,) + (1,) * nd)


def conv_transpose_reference(x, w, b, stride, padding, output_padding, groups, dilation):
    """The adjoint of conv_reference: every input element scatters its kernel into the output,
    which is then cropped by padding (output_padding adds to the far end)."""
    nd = x.ndim - 2
    kernel, spatial = w.shape[2:], x.shape[2:]
    full = [(spatial[d] - 1) * stride[d] + dilation[d] * (kernel[d] - 1) + 1 + output_padding[d] for d in range(nd)]
    per_in, per_out = w.shape[0] // groups, w.shape[1]
    result = np.zeros((x.shape[0], per_out * groups, *full))
    for offset in np.ndindex(*kernel):
        start = [offset[d] * dilation[d] for d in range(nd)]
        box = tuple(slice(start[d], start[d] + stride[d] * (spatial[d] - 1) + 1, stride[d]) for d in range(nd))
        for g in range(groups):
            taps = w[(slice(g * per_in, (g + 1) * per_in), slice(None)) + offset]
            result[(slice(None), slice(g * per_out, (g + 1) * per_out)) + box] += np.einsum(
                "nc...,co->no...", x[:, g * per_in:(g + 1) * per_in], taps)
    result = result[(slice(None), slice(None)) + tuple(slice(padding[d], full[d] - padding[d]) for d in range(nd))]
    return result if b is None else result + b.reshape((-1,) + (1,) * nd)


def test_conv3d_module_matches_the_reference_and_finite_differences():
    conv = nn.Conv3d(2, 4, (2, 3, 1), stride=(1, 2, 1), padding=1, dilation=(1, 1, 2), groups=2, bias=False).double()
    assert repr(conv) == ("Conv3d(2, 4, kernel_size=(2, 3, 1), stride=(1, 2, 1), padding=(1, 1, 1), "
                          "dilation=(1, 1, 2), groups=2, bias=False)")
    x = RNG.standard_normal((2, 2, 3, 5, 4))
    expected = conv_reference(x, params(conv)["weight"], None, (1, 2, 1), (1, 1, 1), (1, 1, 2), 2)
    np.testing.assert_allclose(conv(tensor(x)).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    biased = nn.Conv3d(3, 2, 2, padding="same")
    y = RNG.standard_normal((1, 3, 3, 4, 3))
    with pytest.warns(UserWarning, match="padding='same' with even kernel lengths"):
        got = biased(tensor(y, torch.float32)).detach().numpy()
    weights = params(biased)
    padded = np.pad(y, [(0, 0)] * 2 + [(0, 1)] * 3)
    expected = conv_reference(padded, weights["weight"], weights["bias"], (1,) * 3, (0,) * 3, (1,) * 3, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    check_module(nn.Conv3d(2, 2, 2, stride=(2, 1, 1)), [RNG.standard_normal((1, 2, 3, 3, 2))])


def test_conv_transpose_modules_functions_and_torch_aliases():
    convt = nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2).double()
    assert repr(convt) == ("ConvTranspose1d(4, 6, kernel_size=(3,), stride=(2,), padding=(1,), dilation=(2,), "
                           "output_padding=(1,), groups=2)")
    x = RNG.standard_normal((2, 4, 5))
    weights = params(convt)
    expected = conv_transpose_reference(x, weights["weight"], weights["bias"], (2,), (1,), (1,), 2, (2,))
    np.testing.assert_allclose(convt(tensor(x)).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    w1, b1 = tensor(weights["weight"]), tensor(weights["bias"])
    for call in (lambda t: F.conv_transpose1d(t, w1, b1, stride=2, padding=1, output_padding=1, groups=2, dilation=2),
                 lambda t: torch.conv_transpose1d(t, w1, b1, 2, 1, 1, 2, 2)):
        np.testing.assert_allclose(call(tensor(x)).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    check_vjp(lambda t, w: F.conv_transpose1d(t, w, stride=2, padding=1, groups=2), [x, weights["weight"]])
    image, w2 = RNG.standard_normal((1, 2, 3, 4)), RNG.standard_normal((2, 3, 2, 3))
    expected = conv_transpose_reference(image, w2, None, (2, 1), (0, 1), (1, 0), 1, (1, 2))
    for call in (lambda t, w: F.conv_transpose2d(t, w, stride=(2, 1), padding=(0, 1), output_padding=(1, 0),
                                                 dilation=(1, 2)),
                 lambda t, w: torch.conv_transpose2d(t, w, None, (2, 1), (0, 1), (1, 0), 1, (1, 2))):
        np.testing.assert_allclose(call(tensor(image), tensor(w2)).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
        check_vjp(call, [image, w2])
    convt3 = nn.ConvTranspose3d(2, 3, 2, stride=2).double()
    assert repr(convt3) == "ConvTranspose3d(2, 3, kernel_size=(2, 2, 2), stride=(2, 2, 2))"
    volume = RNG.standard_normal((1, 2, 2, 3, 2))
    weights = params(convt3)
    expected = conv_transpose_reference(volume, weights["weight"], weights["bias"], (2,) * 3, (0,) * 3, (0,) * 3, 1,
                                        (1,) * 3)
    np.testing.assert_allclose(convt3(tensor(volume)).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    assert convt3(tensor(volume), output_size=[5, 7, 5]).shape == (1, 3, 5, 7, 5)
    check_module(nn.ConvTranspose3d(2, 2, (1, 2, 2), stride=(1, 2, 1)), [RNG.standard_normal((1, 2, 2, 2, 2))])


# ----------------------------------------------------------------------------- bilinear and fold

def test_bilinear_function_alias_and_fold():
    x1, x2 = RNG.standard_normal((4, 3)), RNG.standard_normal((4, 2))
    weight, bias = RNG.standard_normal((5, 3, 2)), RNG.standard_normal(5)
    expected = np.einsum("ni,oij,nj->no", x1, weight, x2) + bias
    a, b, w, c = tensor(x1), tensor(x2), tensor(weight), tensor(bias)
    np.testing.assert_allclose(F.bilinear(a, b, w, c).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(torch.bilinear(a, b, w, c).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(F.bilinear(a, b, w).numpy(), expected - bias, rtol=1e-12)
    check_vjp(lambda a, b, w, c: F.bilinear(a, b, w, c), [x1, x2, weight, bias])
    check_vjp(lambda a, b, w: torch.bilinear(a, b, w, None), [x1, x2, weight])
    fold = nn.Fold((4, 5), (2, 2), stride=(1, 2))
    assert repr(fold) == "Fold(output_size=(4, 5), kernel_size=(2, 2), dilation=1, padding=0, stride=(1, 2))"
    blocks = RNG.standard_normal((2, 3 * 4, 3 * 2))
    expected = np.zeros((2, 3, 4, 5))
    patches = blocks.reshape(2, 3, 2, 2, 3, 2)
    for i in range(3):
        for j in range(2):
            expected[:, :, i:i + 2, 2 * j:2 * j + 2] += patches[:, :, :, :, i, j]
    np.testing.assert_allclose(fold(tensor(blocks)).detach().numpy(), expected, rtol=1e-12)
    check_vjp(fold, [blocks])
