"""The fast numpy implementations behind eager mode and the interpreter: batch-last conv2d and
its gradients (by blocks of output rows), the bit-select `where`, layout-keeping casts and
fold_windows. Each must give what a plain float64 formula gives, whatever its operands' layout."""
import numpy as np
import pytest

from ember.ops import PRIMITIVES, conv_batch_last

CONFIGS = [  # stride, padding, dilation, groups
    ((1, 1), (0, 0), (1, 1), 1),
    ((2, 1), (1, 2), (1, 1), 1),
    ((1, 2), (2, 1), (2, 1), 2),
    ((3, 3), (0, 1), (1, 2), 3),
]


def direct_conv(x, w, stride, padding, dilation, groups):
    """conv2d as the defining sum, in float64."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    n, c, h, width = x.shape
    o, cg, kh, kw = w.shape
    oh = (h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (width - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        group = oc // og
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dilation[0], i * dilation[0] + stride[0] * (oh - 1) + 1, stride[0])
                cols = slice(j * dilation[1], j * dilation[1] + stride[1] * (ow - 1) + 1, stride[1])
                patch = x[:, group * cg:(group + 1) * cg, rows, cols]  # N, Cg, OH, OW
                out[:, oc] += np.einsum("nchw,c->nhw", patch, w[oc, :, i, j].astype(np.float64))
    return out


def attrs_of(config):
    stride, padding, dilation, groups = config
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def operands(config, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    groups = config[3]
    x = rng.standard_normal((batch, 3 * groups, 9, 11)).astype(np.float32)
    w = rng.standard_normal((2 * groups, 3, 3, 2)).astype(np.float32)
    return x, w


@pytest.fixture(params=[False, True], ids=["one_block", "a_block_per_row"])
def blocks(request, monkeypatch):
    if request.param:
        monkeypatch.setattr(conv_batch_last, "_BLOCK_BYTES", 1)  # forces one output row per block
        monkeypatch.setattr(conv_batch_last, "_COL2IM_BLOCK_BYTES", 1)


@pytest.mark.parametrize("config", CONFIGS)
def test_conv2d_and_its_gradients_equal_the_defining_sums(config, blocks):
    x, w = operands(config)
    check_against_defining_sums(x, w, config)


@pytest.mark.parametrize("out_channels,oh,expected_phases", [(2, 12, 4), (3, 9, 3), (5, 14, 2), (4, 13, 1), (16, 14, 1)])
@pytest.mark.parametrize("config", [((1, 1), (0, 0), (1, 1), 1), ((1, 2), (1, 1), (1, 2), 1)])
def test_convs_with_few_output_channels_compute_adjacent_rows_together_and_stay_exact(
        out_channels, oh, expected_phases, config, blocks):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, oh + 2 - 2 * config[1][0], 9)).astype(np.float32)
    w = rng.standard_normal((out_channels, 2, 3, 3)).astype(np.float32)
    assert conv_batch_last._row_phases(out_channels, oh, 3, config[0], config[2], 1) == expected_phases
    check_against_defining_sums(x, w, config)


def check_against_defining_sums(x, w, config):
    attrs = attrs_of(config)
    out = PRIMITIVES["conv2d"].impl(x, w, **attrs)
    expected = direct_conv(x, w, *config)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    # the gradients against the float64 VJP of the defining sum, through a random cotangent
    g = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    eps = 1e-3
    gw = PRIMITIVES["conv2d_grad_weight"].impl(x, g, weight_shape=w.shape, **attrs)
    gx = PRIMITIVES["conv2d_grad_input"].impl(g, w, input_shape=x.shape, **attrs)
    direction_w = np.random.default_rng(2).standard_normal(w.shape)
    direction_x = np.random.default_rng(3).standard_normal(x.shape)
    slope_w = (np.sum(g * direct_conv(x, w + eps * direction_w, *config))
               - np.sum(g * direct_conv(x, w - eps * direction_w, *config))) / (2 * eps)
    slope_x = (np.sum(g * direct_conv(x + eps * direction_x, w, *config))
               - np.sum(g * direct_conv(x - eps * direction_x, w, *config))) / (2 * eps)
    assert np.sum(gw * direction_w) == pytest.approx(slope_w, rel=1e-4, abs=1e-3)
    assert np.sum(gx * direction_x) == pytest.approx(slope_x, rel=1e-4, abs=1e-3)
    assert gw.shape == w.shape and gx.shape == x.shape


@pytest.mark.parametrize("layout", ["row_major", "batch_last", "strided"])
def test_conv2d_gives_the_same_bits_whatever_the_input_layout(layout):
    x, w = operands(CONFIGS[1], batch=4)
    attrs = attrs_of(CONFIGS[1])
    if layout == "batch_last":
        held = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    elif layout == "strided":
        held = np.zeros((4, 3, 18, 11), np.float32)[:, :, ::2]
        held[...] = x
    else:
        held = x
    reference = PRIMITIVES["conv2d"].impl(x, w, **attrs)
    np.testing.assert_array_equal(PRIMITIVES["conv2d"].impl(held, w, **attrs), reference)


def test_conv2d_results_are_batch_last_views_that_later_ops_keep():
    x, w = operands(CONFIGS[0], batch=5)
    out = PRIMITIVES["conv2d"].impl(x, w, **attrs_of(CONFIGS[0]))
    assert out.transpose(1, 2, 3, 0).flags.c_contiguous
    assert np.maximum(out, 0).transpose(1, 2, 3, 0).flags.c_contiguous


def test_conv2d_workspace_results_are_not_overwritten_by_the_next_call():
    x, w = operands(CONFIGS[0])
    first = PRIMITIVES["conv2d"].impl(x, w, **attrs_of(CONFIGS[0]))
    kept = first.copy()
    PRIMITIVES["conv2d"].impl(x * 2, w, **attrs_of(CONFIGS[0]))
    PRIMITIVES["conv2d_grad_weight"].impl(x * 3, first, weight_shape=w.shape, **attrs_of(CONFIGS[0]))
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32, np.int64])
@pytest.mark.parametrize("shapes", [
    ((64, 100), (64, 100), ()), ((64, 100), (), (64, 100)), ((64, 1), (1, 100), (64, 100)),
    ((1, 100), (64, 1), ()), ((64, 100), (64, 100), (64, 100)), ((1,), (64, 100), (3, 64, 100)),
])
def test_where_picks_exactly_what_np_where_picks(dtype, shapes):
    rng = np.random.default_rng(0)
    cond = rng.random(shapes[0]) > 0.5
    a = (rng.standard_normal(shapes[1]) * 10).astype(dtype)
    b = (rng.standard_normal(shapes[2]) * 10).astype(dtype)
    if np.dtype(dtype).kind == "f" and a.size > 2:
        a.flat[:3] = [np.nan, -np.inf, -0.0]
    got = PRIMITIVES["where"].impl(cond, a, b)
    expected = np.where(cond, a, b)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))


def test_where_with_a_zero_keeps_negative_zero_and_gives_positive_zero():
    cond = np.arange(8192) % 2 == 0
    a = np.full(8192, -0.0, np.float32)
    got = PRIMITIVES["where"].impl(cond, a, np.zeros((), np.float32))
    assert np.signbit(got[0]) and not np.signbit(got[1])


def test_casts_keep_the_memory_order_and_clones_are_row_major():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(2, 0, 1)
    cast = PRIMITIVES["convert"].impl(x, dtype="float64")
    np.testing.assert_array_equal(cast, x)
    assert cast.transpose(1, 2, 0).flags.c_contiguous
    clone = PRIMITIVES["convert"].impl(x, dtype="float32")
    assert clone.flags.c_contiguous and np.shares_memory(clone, x) is False


@pytest.mark.parametrize("kernel,stride,height", [((2, 2), (2, 2), 7), ((2, 2), (2, 2), 8), ((3, 2), (1, 2), 7),
                                                  ((2, 2), (3, 3), 7)])
def test_fold_windows_adds_windows_back_in_the_layout_of_its_operand(kernel, stride, height):
    rng = np.random.default_rng(0)
    x = np.ascontiguousarray(rng.standard_normal((3, height, 8, 4)).astype(np.float32)).transpose(3, 0, 1, 2)
    windows = PRIMITIVES["unfold_windows"].impl(x, kernel=kernel, stride=stride, dilation=(1, 1))
    g = windows * 1.0  # a windows-shaped cotangent in x's (batch-last) memory order
    folded = PRIMITIVES["fold_windows"].impl(g, size=(height, 8), stride=stride, dilation=(1, 1))
    expected = np.zeros(x.shape)
    oh, ow = windows.shape[2:4]
    for i in range(oh):
        for j in range(ow):
            rows = slice(i * stride[0], i * stride[0] + kernel[0])
            cols = slice(j * stride[1], j * stride[1] + kernel[1])
            expected[:, :, rows, cols] += g[:, :, i, j]
    np.testing.assert_allclose(folded, expected, rtol=1e-6)
    assert folded.transpose(1, 2, 3, 0).flags.c_contiguous


@pytest.mark.parametrize("batch", [64, 37, 2])
def test_sums_give_the_same_bits_whatever_the_operand_layout(batch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 6, 27, 29)).astype(np.float32)
    batch_last = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    for axes in [(0, 2, 3), (0,), (1, 2), (0, 1, 2, 3)]:
        for keepdims in (True, False):
            got = PRIMITIVES["sum"].impl(batch_last, axes=axes, keepdims=keepdims)
            np.testing.assert_array_equal(got, PRIMITIVES["sum"].impl(x, axes=axes, keepdims=keepdims))
            expected = x.astype(np.float64).sum(axis=axes, keepdims=keepdims)
            assert got.shape == expected.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("op,ufunc", [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                                      ("div", np.true_divide), ("maximum", np.maximum)])
@pytest.mark.parametrize("broadcast_first", [True, False])
def test_binary_ops_on_a_broadcast_operand_held_in_another_layout_equal_the_ufunc(op, ufunc, broadcast_first):
    rng = np.random.default_rng(0)
    full = np.ascontiguousarray(rng.standard_normal((16, 5, 5, 2, 2, 64)).astype(np.float32))
    full = full.transpose(5, 0, 1, 2, 3, 4)  # N innermost, as a pooling VJP's windows
    share = rng.standard_normal((64, 16, 5, 1, 5, 1)).astype(np.float32).transpose(0, 1, 2, 4, 3, 5)
    spread = np.broadcast_to(share, full.shape)  # row-major data, spread over the window axes
    a, b = (spread, full) if broadcast_first else (full, spread)
    got = PRIMITIVES[op].impl(a, b)
    np.testing.assert_array_equal(got, ufunc(a, b))
    assert got.transpose(1, 2, 3, 4, 5, 0).flags.c_contiguous  # computed in the full operand's order
    assert share.shape == (64, 16, 5, 5, 1, 1) and np.shares_memory(spread, share)  # operands untouched


def test_fold_of_tiling_windows_laid_out_like_their_input_is_a_view_and_c_order_ones_are_copied():
    x = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6, 2).transpose(3, 0, 1, 2)
    attrs = dict(stride=(2, 2), dilation=(1, 1))
    windows = PRIMITIVES["unfold_windows"].impl(x, kernel=(2, 2), **attrs)
    in_place_order = windows * 1.0
    folded = PRIMITIVES["fold_windows"].impl(in_place_order, size=(4, 6), **attrs)
    assert np.shares_memory(folded, in_place_order)
    np.testing.assert_array_equal(folded, x)
    row_major = np.ascontiguousarray(windows)
    folded = PRIMITIVES["fold_windows"].impl(row_major, size=(4, 6), **attrs)
    assert not np.shares_memory(folded, row_major)
    np.testing.assert_array_equal(folded, x)


def test_the_seed_net_at_batch_64_with_every_fast_path_gives_numpy_lenets_loss_and_gradients():
    """Batch 64 turns on what small test batches do not: conv row phases with several blocks,
    the batch-sum tree, relaid broadcast operands, folds as views and bit-selecting wheres."""
    import sys
    from pathlib import Path

    import ember
    import zoo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from numpy_lenet import NumpyLeNet

    net = zoo.SeedNet()
    reference = NumpyLeNet(net.state_dict())
    rng = np.random.default_rng(0)
    images = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    targets = rng.integers(0, 10, 64)
    loss = ember.nn.CrossEntropyLoss()(net(ember.tensor(images)), ember.tensor(targets))
    loss.backward()
    numpy_loss, grads = reference.loss_and_grads(images, targets)
    assert numpy_loss == pytest.approx(loss.item(), rel=1e-5)
    for name, param in net.named_parameters():
        scale = float(np.abs(grads[name]).max())
        np.testing.assert_allclose(param.grad.numpy(), grads[name], rtol=2e-4, atol=2e-5 * scale, err_msg=name)
