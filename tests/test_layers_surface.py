"""The padding layers and F.pad, F.instance_norm and InstanceNorm1d/2d/3d, F.unfold/F.fold and
Unfold/Fold, F.dropout1d/2d/3d and Dropout3d: values against numpy references written from
PyTorch's documentation, gradients against float64 finite differences, eager against
ember.compile, and PyTorch's errors and warnings."""
import re
import warnings

import numpy as np
import pytest

import ember
from ember.frontend.nn.dropout import Dropout3d
from ember.frontend.nn.fold import Fold, Unfold, fold, unfold
from ember.frontend.nn.functional_dropout import dropout1d, dropout2d, dropout3d
from ember.frontend.nn.instance_norm import instance_norm
from ember.frontend.nn.normalization import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from ember.frontend.nn import padding
from ember.frontend.nn.padding import pad
from finite_differences import check_vjp
from gradcheck import check_module

RNG = np.random.default_rng(0)


def compiled_matches(fn, *arrays, rtol=1e-5, atol=1e-6):
    """fn on float32 tensors: eager and two compiled calls agree."""
    tensors = [ember.from_numpy(np.asarray(a, np.float32)) for a in arrays]
    expected = fn(*tensors).detach().numpy()
    compiled = ember.compile(fn)
    for _ in range(2):
        np.testing.assert_allclose(compiled(*tensors).detach().numpy(), expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- F.pad and the padding layers

def reference_pad(x, amounts, mode, value=0.0):
    """F.pad from PyTorch's documentation, with numpy's own modes: negative amounts crop; reflect
    and replicate read the whole input (numpy's 'reflect' and 'edge', then crop), circular wraps
    what is left after cropping (numpy's 'wrap')."""
    for i in range(len(amounts) // 2):
        axis, lo, hi = x.ndim - 1 - i, amounts[2 * i], amounts[2 * i + 1]
        if mode in ("constant", "circular"):
            x = x[(slice(None),) * axis + (slice(max(-lo, 0), x.shape[axis] - max(-hi, 0)),)]
        widths = [(0, 0)] * x.ndim
        widths[axis] = (max(lo, 0), max(hi, 0))
        numpy_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}.get(mode, "constant")
        x = np.pad(x, widths, numpy_mode, **({"constant_values": value} if mode == "constant" else {}))
        if mode in ("reflect", "replicate"):
            x = x[(slice(None),) * axis + (slice(max(-lo, 0), x.shape[axis] - max(-hi, 0)),)]
    return x


PAD_CASES = [  # (input shape, pad)
    ((2, 5), (2, 3)), ((2, 3, 5), (-1, 3)), ((2, 3, 5), (3, -2)), ((3, 4, 5), (1, 2, -1, 3)),
    ((1, 2, 4, 5), (2, -3, 3, 1)), ((2, 3, 4, 5), (4, 0, -2, -1, 1, 2)), ((1, 2, 3, 4, 5), (-1, 4, 2, 2, 0, 2)),
]


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape,amounts", PAD_CASES)
def test_pad_matches_the_reference_for_every_mode_rank_and_negative_pad(mode, shape, amounts):
    x = RNG.standard_normal(shape)
    expected = reference_pad(x, amounts, mode, 1.5)
    got = pad(ember.from_numpy(x), amounts, mode, 1.5 if mode == "constant" else None)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_constant_pad_takes_any_rank_and_casts_the_value_to_the_dtype():
    x = RNG.standard_normal((2, 3, 2, 2, 2, 3))
    np.testing.assert_array_equal(pad(ember.from_numpy(x), (1, 1, 0, 2, -1, 1, 1, 0)).numpy(),
                                  reference_pad(x, (1, 1, 0, 2, -1, 1, 1, 0), "constant"))
    ints = pad(ember.tensor([[1, 2]]), (1, 1), value=2.7)
    assert ints.dtype is ember.int64 and ints.tolist() == [[2, 1, 2, 2]]
    assert pad(ember.tensor([True]), (1, 0), value=0.5).tolist() == [True, True]
    x = ember.ones(2, 3)
    for same_shape in (pad(x, (0, 0)), pad(x, ()), pad(x, (0, 0), "reflect")):
        same_shape.mul_(2)  # (always a new tensor, as PyTorch's)
    assert x.tolist() == [[1.0] * 3] * 2


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_gradients_match_finite_differences(mode):
    x = RNG.standard_normal((1, 2, 3, 4))
    check_vjp(lambda t: pad(t, (3, -1, 2, 1), mode), [x])


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_compiled_matches_eager(mode):
    compiled_matches(lambda t: pad(t, (2, -1, 1, 2, 1, 0), mode), RNG.standard_normal((2, 2, 3, 4, 5)))


@pytest.mark.parametrize("call,kind,words", [
    (lambda x: pad(x, (1, 1), "wrap"), NotImplementedError, "Unrecognised padding mode wrap"),
    (lambda x: pad(x, (1, 1, 1)), RuntimeError, "Padding length must be divisible by 2"),
    (lambda x: pad(x, (1,) * 8), RuntimeError, "Padding length should be less than or equal to two times the input "
                                              "dimension but got padding length 8 and input of dimension 3"),
    (lambda x: pad(x, (1.5, 1)), TypeError, "must be tuple of ints, but found element of type float at pos 0"),
    (lambda x: pad(x, (-3, -2)), RuntimeError, "narrow(): length must be non-negative."),
    (lambda x: pad(x, (1, 1), "reflect", 2.0), RuntimeError, 'Padding mode "reflect" doesn\'t take in value argument'),
    (lambda x: pad(x, (1,) * 6, "reflect"), NotImplementedError,
     "Padding size 6 is not supported for 3D input tensor."),
    (lambda x: pad(x[0, 0], (1, 1), "replicate"), NotImplementedError,
     "Padding size 2 is not supported for 1D input tensor."),
    (lambda x: pad(x, (4, 1), "reflect"), RuntimeError,
     "Argument #4: Padding size should be less than the corresponding input dimension, but got: padding (4, 1) at "
     "dimension 2 of input [2, 3, 4]"),
    (lambda x: pad(x, (0, 0, 1, 3), "reflect"), RuntimeError, "Argument #6: Padding size should be less than the "
                                                             "corresponding input dimension, but got: padding (1, 3)"),
    (lambda x: pad(x, (-2, -2), "replicate"), RuntimeError, "input (W: 4) is too small. Calculated output W: 0"),
    (lambda x: pad(x, (5, 0), "circular"), RuntimeError, "Padding value causes wrapping around more than once."),
    (lambda x: pad(x, (2, -3), "circular"), RuntimeError, "Padding value causes wrapping around more than once."),
    (lambda x: pad(x, (0, 0, -2, -2), "circular"), RuntimeError,
     "Negative padding value is resulting in an empty dimension"),
    (lambda x: pad(x.bool(), (1, 1), "reflect"), NotImplementedError,
     "\"reflection_pad1d\" not implemented for 'Bool'"),
    (lambda x: pad(ember.zeros(2, 0, 4), (1, 1), "replicate"), RuntimeError,
     "Expected 2D or 3D (batch mode) tensor with possibly 0 batch size and other non-zero dimensions for input, but "
     "got: [2, 0, 4]"),
])
def test_pad_errors_use_pytorchs_words_and_name_the_input(call, kind, words):
    with pytest.raises(kind, match=re.escape(words)) as error:
        call(ember.zeros(2, 3, 4))
    assert str(error.value).startswith(("pad:", "pad()"))


LAYERS = [(name, dims) for name in ("ZeroPad", "ConstantPad", "ReflectionPad", "ReplicationPad", "CircularPad")
          for dims in (1, 2, 3)]


def _layer(name, dims, amounts):
    cls = getattr(padding, f"{name}{dims}d")
    return cls(amounts, 0.5) if name == "ConstantPad" else cls(amounts)


@pytest.mark.parametrize("name,dims", LAYERS)
def test_padding_layers_pad_batched_and_unbatched_inputs(name, dims):
    amounts = (2, 1, -1, 1, 1, 0)[:2 * dims]
    mode = {"ZeroPad": "constant", "ConstantPad": "constant", "ReflectionPad": "reflect",
            "ReplicationPad": "replicate", "CircularPad": "circular"}[name]
    layer = _layer(name, dims, amounts)
    for shape in ((3, 4, 5, 4)[:dims + 1], (2, 3, 4, 5, 4)[:dims + 2]):
        x = RNG.standard_normal(shape)
        np.testing.assert_array_equal(layer(ember.from_numpy(x)).numpy(),
                                      reference_pad(x, amounts, mode, 0.5 if name == "ConstantPad" else 0.0))
    int_padding = _layer(name, dims, 1).padding
    assert int_padding == (1,) * (2 * dims)


def test_padding_layers_repr_and_rank_checks_as_pytorch():
    assert repr(padding.ZeroPad2d((1, 2, 3, 4))) == "ZeroPad2d((1, 2, 3, 4))"
    assert repr(padding.ConstantPad1d(2, 3.5)) == "ConstantPad1d(padding=(2, 2), value=3.5)"
    assert repr(padding.ReflectionPad3d(1)) == "ReflectionPad3d((1, 1, 1, 1, 1, 1))"
    assert repr(padding.CircularPad1d([1, 2])) == "CircularPad1d((1, 2))"
    with pytest.raises(ValueError, match=re.escape("expected 3D or 4D input (got 2D input)")):
        padding.CircularPad2d(1)(ember.zeros(3, 4))
    with pytest.raises(NotImplementedError, match="Padding size 4 is not supported for 2D input tensor"):
        padding.ReflectionPad2d(1)(ember.zeros(3, 4))
    assert padding.ZeroPad2d(1)(ember.zeros(3, 4)).shape == (5, 6)  # (constant padding: any rank, as PyTorch)


def test_padding_layer_gradients_and_compiled():
    x = RNG.standard_normal((1, 2, 3, 3))
    check_vjp(lambda t: padding.ReplicationPad2d((1, 2, 0, 1))(t), [x])
    compiled_matches(padding.ReflectionPad1d((2, 1)), RNG.standard_normal((3, 5)))


# ----------------------------------------------------------------------------- instance norm

def reference_instance_norm(x, weight=None, bias=None, eps=1e-5, running=None, momentum=0.1):
    """Per-(sample, channel) statistics over the spatial dims (biased variance); running stats
    move towards the batch mean of the instance means and unbiased variances."""
    axes = tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if running is not None and running[2] is False:  # use the running stats
        mean, var = running[0].reshape(shape), running[1].reshape(shape)
    else:
        mean, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
        if running is not None:
            count = np.prod(x.shape[2:])
            running[0][:] = (1 - momentum) * running[0] + momentum * mean.reshape(x.shape[:2]).mean(0)
            running[1][:] = (1 - momentum) * running[1] + momentum * (var.reshape(x.shape[:2]) * count
                                                                     / (count - 1)).mean(0)
    out = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 2, 4)])
def test_instance_norm_matches_the_reference_with_running_stats(shape):
    x = RNG.standard_normal(shape) * 3 + 1
    weight, bias = RNG.standard_normal(shape[1]), RNG.standard_normal(shape[1])
    mean, var = RNG.standard_normal(shape[1]), RNG.uniform(0.5, 2.0, shape[1])
    np.testing.assert_allclose(instance_norm(ember.from_numpy(x), eps=1e-3).numpy(),
                               reference_instance_norm(x, eps=1e-3), rtol=1e-10, atol=1e-12)
    running_mean, running_var = ember.from_numpy(mean.copy()), ember.from_numpy(var.copy())
    got = instance_norm(ember.from_numpy(x), running_mean, running_var, ember.from_numpy(weight),
                        ember.from_numpy(bias), momentum=0.3)
    reference_stats = [mean.copy(), var.copy(), True]
    np.testing.assert_allclose(got.numpy(), reference_instance_norm(x, weight, bias, running=reference_stats,
                                                                    momentum=0.3), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(running_mean.numpy(), reference_stats[0], rtol=1e-12)
    np.testing.assert_allclose(running_var.numpy(), reference_stats[1], rtol=1e-12)
    frozen = instance_norm(ember.from_numpy(x), running_mean, running_var, use_input_stats=False)
    np.testing.assert_allclose(frozen.numpy(), reference_instance_norm(x, running=reference_stats[:2] + [False]),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(running_mean.numpy(), reference_stats[0], rtol=1e-12)  # (unchanged)


def test_instance_norm_gradients_match_finite_differences():
    x = RNG.standard_normal((2, 2, 4))
    weight, bias = RNG.standard_normal(2), RNG.standard_normal(2)
    check_vjp(lambda t, w, b: instance_norm(t, weight=w, bias=b), [x, weight, bias], rtol=1e-5, atol=1e-6)
    stats = ember.from_numpy(RNG.standard_normal(2)), ember.from_numpy(RNG.uniform(0.5, 2, 2))
    check_vjp(lambda t, w: instance_norm(t, *stats, weight=w, use_input_stats=False), [x, weight])
    check_module(InstanceNorm2d(2, affine=True), [RNG.standard_normal((2, 3, 3))], rtol=1e-5, atol=1e-6)


def test_instance_norm_compiled_matches_eager_and_updates_running_stats():
    x = RNG.standard_normal((2, 3, 4, 5))
    compiled_matches(lambda t: instance_norm(t, weight=ember.ones(3) * 2, bias=ember.ones(3)), x)
    eager, traced = InstanceNorm2d(3, affine=True, track_running_stats=True), \
        InstanceNorm2d(3, affine=True, track_running_stats=True)
    compiled = ember.compile(traced)
    data = ember.from_numpy(x.astype(np.float32))
    for _ in range(3):
        np.testing.assert_allclose(compiled(data).detach().numpy(), eager(data).detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(traced.running_var.numpy(), eager.running_var.numpy(), rtol=1e-5)
    eager.eval(), traced.eval()
    np.testing.assert_allclose(compiled(data).detach().numpy(), eager(data).detach().numpy(), atol=1e-5)


def test_instance_norm_layers_as_pytorch():
    norm = InstanceNorm1d(3, track_running_stats=True, momentum=None)
    assert repr(norm) == ("InstanceNorm1d(3, eps=1e-05, momentum=None, affine=False, bias=False, "
                          "track_running_stats=True)")
    assert repr(InstanceNorm3d(4, affine=True, bias=False)).endswith(
        "affine=True, bias=False, track_running_stats=False)")
    assert list(norm.state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    x = RNG.standard_normal((3, 6))  # unbatched [C, L]
    np.testing.assert_allclose(norm(ember.from_numpy(x)).numpy(), reference_instance_norm(x[None])[0], rtol=1e-6,
                               atol=1e-6)
    assert norm.running_mean.tolist() == [0.0] * 3  # (momentum None means 0 for instance norm, as PyTorch)
    assert int(norm.num_batches_tracked) == 0  # (instance norm never counts batches)
    norm.momentum = 0.5
    norm(ember.from_numpy(x.astype(np.float32)))
    np.testing.assert_allclose(norm.running_mean.numpy(), 0.5 * x.mean(1), rtol=1e-5)
    norm.eval()
    np.testing.assert_allclose(norm(ember.from_numpy(x.astype(np.float32))).numpy(),
                               (x - norm.running_mean.numpy()[:, None]) / np.sqrt(norm.running_var.numpy()[:, None]
                                                                                  + 1e-5), rtol=1e-5, atol=1e-5)
    unbatched = InstanceNorm2d(2)(ember.from_numpy(RNG.standard_normal((2, 3, 4))))
    assert unbatched.shape == (2, 3, 4)
    with pytest.raises(ValueError, match=re.escape("expected 4D or 5D input (got 3D input)")):
        InstanceNorm3d(2)(ember.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=re.escape("expected input's size at dim=1 to match num_features (3), but "
                                                   "got: 4.")):
        InstanceNorm1d(3, affine=True)(ember.zeros(2, 4, 5))
    with pytest.warns(UserWarning, match="input's size at dim=0 does not match num_features"):
        InstanceNorm1d(3)(ember.zeros(4, 5))


@pytest.mark.parametrize("call,kind,words", [
    (lambda x: instance_norm(x[:, :, :1]), ValueError,
     "Expected more than 1 spatial element when training, got input size torch.Size([2, 3, 1])"),
    (lambda x: instance_norm(x, use_input_stats=False), RuntimeError,
     "Expected running_mean and running_var to be defined when use_input_stats is false"),
    (lambda x: instance_norm(x, ember.zeros(3)), ValueError,
     "running_mean and running_var must either both be None or neither be None"),
    (lambda x: instance_norm(x, ember.zeros(4), ember.ones(4)), RuntimeError,
     "running_mean should contain 6 elements not 8"),
    (lambda x: instance_norm(x, weight=ember.ones(4)), RuntimeError, "weight should contain 6 elements not 8"),
    (lambda x: instance_norm(x, weight=ember.ones(3, dtype=ember.float64)), RuntimeError,
     "mixed dtype (CPU): expect parameter to have scalar type of Float"),
    (lambda x: instance_norm(x.long()), NotImplementedError, "\"batch_norm\" not implemented for 'Long'"),
])
def test_instance_norm_errors_use_pytorchs_words(call, kind, words):
    with pytest.raises(kind, match=re.escape(words)) as error:
        call(ember.zeros(2, 3, 4))
    assert str(error.value).startswith("instance_norm")


# ----------------------------------------------------------------------------- unfold / fold

def reference_unfold(x, kernel, dilation, padding, stride):
    """Column l = (row-major block index), row = (channel, kernel row, kernel column), from the
    torch.nn.Unfold documentation."""
    n, c, h, w = x.shape
    x = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    rows = (h + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    cols = (w + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    out = np.zeros((n, c, kernel[0], kernel[1], rows, cols))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            for r in range(rows):
                for q in range(cols):
                    out[:, :, i, j, r, q] = x[:, :, r * stride[0] + i * dilation[0], q * stride[1] + j * dilation[1]]
    return out.reshape(n, c * kernel[0] * kernel[1], rows * cols)


def reference_fold(columns, size, kernel, dilation, padding, stride):
    """The adjoint of reference_unfold: each column's block summed back into place."""
    n, planes, length = columns.shape
    c = planes // (kernel[0] * kernel[1])
    rows = (size[0] + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    cols = length // rows
    blocks = columns.reshape(n, c, kernel[0], kernel[1], rows, cols)
    out = np.zeros((n, c, size[0] + 2 * padding[0], size[1] + 2 * padding[1]))
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            for r in range(rows):
                for q in range(cols):
                    row, col = r * stride[0] + i * dilation[0], q * stride[1] + j * dilation[1]
                    out[:, :, row, col] += blocks[:, :, i, j, r, q]
    return out[:, :, padding[0]:padding[0] + size[0], padding[1]:padding[1] + size[1]]


GEOMETRIES = [  # kernel, dilation, padding, stride
    ((2, 2), (1, 1), (0, 0), (1, 1)), ((3, 2), (1, 2), (1, 0), (2, 1)), ((2, 3), (2, 1), (2, 1), (1, 3)),
    ((1, 1), (1, 1), (0, 0), (2, 2)), ((3, 3), (1, 1), (1, 1), (3, 3)),
]


@pytest.mark.parametrize("kernel,dilation,padding_,stride", GEOMETRIES)
def test_unfold_and_fold_match_the_references(kernel, dilation, padding_, stride):
    x = RNG.standard_normal((2, 3, 7, 8))
    expected = reference_unfold(x, kernel, dilation, padding_, stride)
    np.testing.assert_array_equal(unfold(ember.from_numpy(x), kernel, dilation, padding_, stride).numpy(), expected)
    np.testing.assert_array_equal(unfold(ember.from_numpy(x[0]), kernel, dilation, padding_, stride).numpy(),
                                  expected[0])  # unbatched [C, H, W]
    columns = RNG.standard_normal(expected.shape)
    folded = reference_fold(columns, (7, 8), kernel, dilation, padding_, stride)
    np.testing.assert_allclose(fold(ember.from_numpy(columns), (7, 8), kernel, dilation, padding_, stride).numpy(),
                               folded, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fold(ember.from_numpy(columns[0]), [7, 8], kernel, dilation, padding_, stride).numpy(),
                               folded[0], rtol=1e-12, atol=1e-12)


def test_fold_of_unfold_counts_each_pixels_blocks():
    # the documented identity: fold(unfold(ones)) is the number of blocks covering each pixel
    ones = ember.ones(1, 1, 4, 5)
    counts = fold(unfold(ones, 2, stride=1), (4, 5), 2, stride=1).numpy()[0, 0]
    np.testing.assert_array_equal(counts[1:-1, 1:-1], 4.0)
    assert counts[0, 0] == counts[-1, -1] == 1.0
    gaps = fold(unfold(ones, 2, stride=2), (5, 5), 2, stride=2).numpy()[0, 0]  # rows the blocks never reach
    np.testing.assert_array_equal(gaps[4], 0.0)


def test_unfold_and_fold_gradients_match_finite_differences():
    check_vjp(lambda t: unfold(t, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)),
              [RNG.standard_normal((1, 2, 4, 5))])
    check_vjp(lambda t: fold(t, (4, 5), (2, 2), padding=1, stride=(2, 1)), [RNG.standard_normal((1, 8, 18))])


def test_unfold_and_fold_compiled_match_eager():
    compiled_matches(lambda t: unfold(t, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)),
                     RNG.standard_normal((2, 3, 6, 7)))
    compiled_matches(lambda t: fold(t, (6, 7), 3, padding=1, stride=2), RNG.standard_normal((2, 18, 12)))
    compiled_matches(Fold((5, 6), 2), RNG.standard_normal((12, 20)))  # unbatched


def test_unfold_and_fold_layers_as_pytorch():
    assert repr(Unfold(2)) == "Unfold(kernel_size=2, dilation=1, padding=0, stride=1)"
    assert repr(Unfold((2, 3), dilation=2, padding=(1, 1), stride=[1, 2])) == \
        "Unfold(kernel_size=(2, 3), dilation=2, padding=(1, 1), stride=[1, 2])"
    assert repr(Fold(output_size=4, kernel_size=(2, 3))) == \
        "Fold(output_size=4, kernel_size=(2, 3), dilation=1, padding=0, stride=1)"
    x = RNG.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(Fold(4, 2, stride=2)(Unfold(2, stride=2)(ember.from_numpy(x))).numpy(), x)


@pytest.mark.parametrize("call,kind,words", [
    (lambda: unfold(ember.zeros(2, 3, 5, 6), 0), RuntimeError,
     "kernel size should be greater than zero, but got kernel_height: 0 kernel_width: 0"),
    (lambda: unfold(ember.zeros(2, 3, 5, 6), 2, padding=-1), RuntimeError,
     "padding should be non-negative, but got pad_height: -1 pad_width: -1"),
    (lambda: unfold(ember.zeros(2, 3, 5, 6), 2, stride=0), RuntimeError, "stride should be greater than zero"),
    (lambda: unfold(ember.zeros(2, 3, 5, 6), (2,)), RuntimeError,
     "It is expected kernel_size equals to 2, but got size 1"),
    (lambda: unfold(ember.zeros(2, 3, 5, 6), 2.0), TypeError,
     "argument 'kernel_size' (position 2) must be tuple of ints"),
    (lambda: unfold(ember.zeros(1, 2, 3, 5, 6), 2), RuntimeError,
     "Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and other non-zero dimensions for input, "
     "but got: [1, 2, 3, 5, 6]"),
    (lambda: unfold(ember.zeros(2, 3, 5, 6), 7), RuntimeError,
     "Given input with spatial size (5, 6), kernel_size=(7, 7), dilation=(1, 1), padding=(0, 0), calculated shape of "
     "the array of sliding blocks as (-1, 0), but its components must be at least one."),
    (lambda: unfold(ember.zeros(2, 3, 5, 6, dtype=ember.int64), 2), NotImplementedError,
     "\"im2col_out_cpu\" not implemented for 'Long'"),
    (lambda: fold(ember.zeros(2, 13, 20), (5, 6), 2), RuntimeError,
     "Expected size of input's dimension 1 to be divisible by the product of kernel_size, but got input.size(1)=13 and "
     "kernel_size=(2, 2)."),
    (lambda: fold(ember.zeros(2, 12, 20), (5, 7), 2), RuntimeError,
     "Given output_size=(5, 7), kernel_size=(2, 2), dilation=(1, 1), padding=(0, 0), stride=(1, 1), expected size of "
     "input's dimension 2 to match the calculated number of sliding blocks 4 * 6 = 24, but got input.size(2)=20."),
    (lambda: fold(ember.zeros(20), (5, 6), 2), RuntimeError,
     "Expected 2D or 3D (batch mode) tensor for input with possibly 0 batch size and non-zero dimensions for "
     "input, but got: [20]"),
    (lambda: fold(ember.zeros(2, 12, 20), (5, 6), 2, dilation=0), RuntimeError, "dilation should be greater than zero"),
])
def test_unfold_and_fold_errors_use_pytorchs_words(call, kind, words):
    with pytest.raises(kind, match=re.escape(words)):
        call()


# ----------------------------------------------------------------------------- channel dropout

def dropped_groups(x, out, p):
    """Check out = x * mask, mask in {0, 1/(1-p)}; return the mask values (one per group)."""
    ratio = out / x
    dropped = np.isclose(ratio, 0.0)
    assert np.all(dropped | np.isclose(ratio, 1 / (1 - p)))
    return np.where(dropped, 0.0, 1 / (1 - p))


@pytest.mark.parametrize("fn,shape,channel_dims", [
    (dropout1d, (4, 5, 6), 2), (dropout1d, (5, 6), 1),
    (dropout2d, (4, 5, 3, 3), 2), (dropout2d, (4, 5, 6), 2),  # (3-D: taken as [N, C, L], as PyTorch 2.13)
    (dropout3d, (4, 5, 2, 3, 3), 2), (dropout3d, (5, 2, 3, 3), 1),
    (dropout3d, (5, 6), 1), (dropout3d, (6,), 1), (dropout2d, (5, 6), 2), (dropout2d, (2, 3, 2, 2, 2), 2),
])
def test_channel_dropout_zeroes_whole_channels_on_every_rank(fn, shape, channel_dims):
    x = RNG.uniform(1, 2, shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(ember.from_numpy(x), 0.4).numpy()
        assert np.array_equal(fn(ember.from_numpy(x), 0.4, training=False).numpy(), x)
    ratio = dropped_groups(x, out, 0.4)
    flat = ratio.reshape(shape[:channel_dims] + (-1,))
    assert np.all(flat == flat[..., :1])  # one draw per channel
    big = RNG.uniform(1, 2, (40, 50, 2) if fn is not dropout3d else (40, 50, 2, 1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = (fn(ember.from_numpy(big), 0.4).numpy() != 0).mean()
    assert 0.55 < kept < 0.65


def test_channel_dropout_edge_probabilities_inplace_and_identity():
    x = ember.ones(2, 3, 4)
    assert dropout1d(x, training=False) is x and dropout1d(x, 0.0) is x
    assert dropout1d(ember.ones(3, 4), training=False).shape == (3, 4)
    assert np.all(dropout1d(x, 1.0).numpy() == 0)
    assert dropout1d(ember.ones(0, 3, 4)).shape == (0, 3, 4)
    y = ember.ones(3, 4)
    assert dropout1d(y, 0.5, inplace=True) is y
    assert set(np.unique(y.numpy())) <= {0.0, 2.0} and np.all(y.numpy() == y.numpy()[:, :1])
    z = ember.ones(2, 3, 2, 2, 2)
    assert dropout3d(z, 0.5, inplace=True) is z and set(np.unique(z.numpy())) <= {0.0, 2.0}


def test_channel_dropout_warnings_and_errors_as_pytorch_2_13():
    with pytest.warns(UserWarning, match="dropout2d: Received a 3D input to dropout2d and assuming that channel-wise "
                                         "1D dropout behavior is desired"):
        dropout2d(ember.ones(2, 3, 4))
    deprecated = "dropout{0}d: Received a {1}-D input to dropout{0}d, which is deprecated"
    with pytest.warns(UserWarning, match=re.escape(deprecated.format(2, 2))):
        dropout2d(ember.ones(2, 3))
    with pytest.warns(UserWarning, match=re.escape(deprecated.format(3, 3))):
        dropout3d(ember.ones(2, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dropout2d(ember.ones(2, 3, 4, 5)), dropout3d(ember.ones(2, 3, 4, 5)), dropout1d(ember.ones(2, 3))
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="Feature dropout requires at least 2 dimensions in the input"):
            dropout2d(ember.ones(3))
        assert dropout2d(ember.ones(3), training=False).shape == (3,)
    with pytest.raises(RuntimeError, match=re.escape("dropout1d: Expected 2D or 3D input, but received a 4D input.")):
        dropout1d(ember.ones(2, 3, 4, 5))
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        dropout3d(ember.ones(2, 3, 4, 5), 1.5)


def test_channel_dropout_gradients_and_compiled():
    x = RNG.standard_normal((2, 3, 2, 2))

    def dropped(t):
        ember.manual_seed(3)
        return dropout2d(t, 0.5)
    check_vjp(dropped, [x])
    compiled = ember.compile(lambda t: dropout3d(t, 0.5))
    data = ember.from_numpy(RNG.uniform(1, 2, (2, 3, 2, 2, 2)).astype(np.float32))
    first, second = compiled(data).numpy(), compiled(data).numpy()
    for out in (first, second):
        ratio = dropped_groups(data.numpy(), out, 0.5).reshape(2, 3, -1)
        assert np.all(ratio == ratio[..., :1])
    assert not np.array_equal(first, second)  # (a fresh draw on every compiled call)


def test_dropout3d_layer():
    layer = Dropout3d(0.25)
    assert repr(layer) == "Dropout3d(p=0.25, inplace=False)" and repr(Dropout3d(inplace=True)) == \
        "Dropout3d(p=0.5, inplace=True)"
    x = ember.ones(2, 4, 2, 2, 2)
    ratio = dropped_groups(x.numpy(), layer(x).numpy(), 0.25).reshape(2, 4, -1)
    assert np.all(ratio == ratio[..., :1])
    layer.eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 2"):
        Dropout3d(2)


def test_compiled_gradients_match_eager():
    def loss(t, w):
        padded = pad(t, (2, 1, -1, 2), "reflect") + pad(t, (2, 1, -1, 2), "circular")
        normed = instance_norm(padded, weight=w)
        blocks = unfold(normed, 2, padding=1, stride=(1, 2))
        return (fold(blocks * blocks, (5, 8), 2, padding=1, stride=(1, 2)) * normed).sum()
    arrays = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32), RNG.standard_normal(3).astype(np.float32)
    grads, compiled = [], ember.compile(loss)
    for fn in (loss, compiled, compiled):  # (eager, traced, compiled)
        t, w = (ember.from_numpy(a).requires_grad_() for a in arrays)
        fn(t, w).backward()
        grads.append((t.grad.numpy(), w.grad.numpy()))
    for got in grads[1:]:
        for g, e in zip(got, grads[0]):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
