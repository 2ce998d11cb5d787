"""Eager mode's one-node layer norm and attention (frontend/nn/eager_layer_norm.py,
eager_attention.py) and its optimizer updates on numpy arrays (frontend/optim/array_updates.py):
each against the composed ops it replaces (bit for bit where it runs the same arithmetic) and
against float64 central differences, with PyTorch's errors for tensors changed in place."""
import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.frontend.nn import functional as functional_module
from ember.frontend.nn import functional_attention as attention_module
from ember.frontend.optim import adam as adam_module
from ember.frontend.optim import sgd as sgd_module
from ember.frontend.nn import utils as utils_module


def _composed(monkeypatch, module, name, refusal):
    monkeypatch.setattr(module, name, lambda *args, **kwargs: refusal)


def _numeric_grad(fn, arrays, index, g, eps=1e-6):
    """d<fn(arrays), g>/d arrays[index] by central differences in float64."""
    x = arrays[index]
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        saved = x[i]
        x[i] = saved + eps
        up = np.sum(fn(*arrays) * g)
        x[i] = saved - eps
        down = np.sum(fn(*arrays) * g)
        x[i] = saved
        grad[i] = (up - down) / (2 * eps)
    return grad


def _layer_norm_numpy(x, w, b, axes=(-1,), eps=1e-5):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


@pytest.mark.parametrize("shape,normalized", [((8, 64, 128), (128,)), ((2, 3, 4, 5), (4, 5)), ((7,), (7,))])
def test_layer_norm_forward_is_the_composed_ops_bit_for_bit(monkeypatch, shape, normalized):
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in (shape, normalized, normalized))
    fast = F.layer_norm(ember.tensor(x, requires_grad=True), normalized, ember.tensor(w), ember.tensor(b))
    assert fast.grad_fn.name() == "NativeLayerNormBackward0"  # (as PyTorch names it)
    _composed(monkeypatch, functional_module, "eager_layer_norm", None)
    slow = F.layer_norm(ember.tensor(x, requires_grad=True), normalized, ember.tensor(w), ember.tensor(b))
    assert slow.grad_fn.name() != "NativeLayerNormBackward0"
    np.testing.assert_array_equal(fast.detach().numpy(), slow.detach().numpy())


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_gradients_match_central_differences(affine):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 5))
    w, b = (rng.standard_normal(5) if affine else np.ones(5)), (rng.standard_normal(5) if affine else np.zeros(5))
    g = rng.standard_normal(x.shape)
    tx, tw, tb = (ember.tensor(a.copy(), requires_grad=True) for a in (x, w, b))
    y = F.layer_norm(tx, (5,), tw if affine else None, tb if affine else None)
    y.backward(ember.tensor(g))
    np.testing.assert_allclose(tx.grad.numpy(), _numeric_grad(_layer_norm_numpy, [x, w, b], 0, g), atol=1e-6)
    if affine:
        np.testing.assert_allclose(tw.grad.numpy(), _numeric_grad(_layer_norm_numpy, [x, w, b], 1, g), atol=1e-6)
        np.testing.assert_allclose(tb.grad.numpy(), _numeric_grad(_layer_norm_numpy, [x, w, b], 2, g), atol=1e-6)


def test_layer_norm_double_backward_matches_the_composed_ops(monkeypatch):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((4, 6)), rng.standard_normal(6)

    def second_order():
        tx, tw = ember.tensor(x, requires_grad=True), ember.tensor(w, requires_grad=True)
        gx, gw = ember.autograd.grad((F.layer_norm(tx, (6,), tw) ** 3).sum(), (tx, tw), create_graph=True)
        return [t.numpy() for t in ember.autograd.grad((gx * gx).sum() + gw.sum(), (tx, tw))]
    fast = second_order()
    _composed(monkeypatch, functional_module, "eager_layer_norm", None)
    for a, b in zip(fast, second_order()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_layer_norm_input_changed_in_place_fails_backward():
    x = ember.randn(4, 8, requires_grad=True)
    h = x * 1.0
    y = F.layer_norm(h, (8,))
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def _attention_numpy(q, k, v, causal=True, scale=None):
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        scores = np.where(np.tril(np.ones(scores.shape[-2:], dtype=bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True) @ v


@pytest.mark.parametrize("causal", [True, False])
def test_attention_forward_is_the_composed_ops_bit_for_bit(monkeypatch, causal):
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((8, 4, 64, 32)).astype(np.float32) for _ in range(3))
    args = lambda: [ember.tensor(a, requires_grad=True) for a in (q, k, v)]  # noqa: E731
    fast = F.scaled_dot_product_attention(*args(), is_causal=causal)
    assert fast.grad_fn.name() == "ScaledDotProductAttentionBackward0"
    _composed(monkeypatch, attention_module, "eager_attention", None)
    slow = F.scaled_dot_product_attention(*args(), is_causal=causal)
    np.testing.assert_array_equal(fast.detach().numpy(), slow.detach().numpy())


@pytest.mark.parametrize("causal,scale", [(True, None), (False, 0.3)])
def test_attention_gradients_match_central_differences(causal, scale):
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 4))
    g = rng.standard_normal((2, 5, 4))
    tensors = [ember.tensor(a.copy(), requires_grad=True) for a in (q, k, v)]
    F.scaled_dot_product_attention(*tensors, is_causal=causal, scale=scale).backward(ember.tensor(g))
    for i, t in enumerate(tensors):
        expected = _numeric_grad(lambda *a: _attention_numpy(*a, causal=causal, scale=scale), [q, k, v], i, g)
        np.testing.assert_allclose(t.grad.numpy(), expected, atol=1e-6)


def test_attention_double_backward_matches_the_composed_ops(monkeypatch):
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal((2, 3, 6, 4)) for _ in range(3)]

    def second_order():
        tensors = [ember.tensor(a, requires_grad=True) for a in arrays]
        y = F.scaled_dot_product_attention(*tensors, is_causal=True)
        grads = ember.autograd.grad((y * y).sum(), tensors, create_graph=True)
        return [t.numpy() for t in ember.autograd.grad(sum((gi * gi).sum() for gi in grads), tensors)]
    fast = second_order()
    _composed(monkeypatch, attention_module, "eager_attention", None)
    for a, b in zip(fast, second_order()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_attention_key_changed_in_place_fails_backward():
    q, k, v = (ember.randn(2, 4, 8, requires_grad=True) for _ in range(3))
    key = k * 1.0
    y = F.scaled_dot_product_attention(q, key, v, is_causal=True)
    key.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


_ADAM_CASES = [dict(), dict(weight_decay=0.1), dict(amsgrad=True, maximize=True), dict(betas=(0.3, 0.99))]
_SGD_CASES = [dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=0.01),
              dict(momentum=0.5, dampening=0.2, maximize=True), dict()]


def _train(optimizer_class, options, dtype, steps=4):
    """(parameters, optimizer state arrays, version counters) after `steps` updates with fixed
    gradients."""
    rng = np.random.default_rng(6)
    params = [ember.nn.Parameter(ember.tensor(rng.standard_normal(s).astype(dtype))) for s in ((5, 3), (3,))]
    optimizer = optimizer_class(params, lr=0.01, **options)
    for step in range(steps):
        for p in params:
            p.grad = ember.tensor(rng.standard_normal(p.shape).astype(dtype))
        optimizer.step()
    state = [t.numpy().copy() for p in params for t in optimizer.state[p].values() if isinstance(t, ember.Tensor)]
    return [p.detach().numpy().copy() for p in params], state, [p._version for p in params]


@pytest.mark.parametrize("options", _ADAM_CASES + [dict(weight_decay=0.05, decoupled=True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_on_arrays_is_the_composed_update_bit_for_bit(monkeypatch, options, dtype):
    options = dict(options)
    optimizer_class = ember.optim.AdamW if options.pop("decoupled", False) else ember.optim.Adam
    fast = _train(optimizer_class, options, dtype)
    _composed(monkeypatch, adam_module, "adam_step", False)
    slow = _train(optimizer_class, options, dtype)
    for a, b in zip(fast[0] + fast[1], slow[0] + slow[1]):
        np.testing.assert_array_equal(a, b)
    assert fast[2] == slow[2]  # (the version counters move as the composed in-place ops move them)


@pytest.mark.parametrize("options", _SGD_CASES)
def test_sgd_on_arrays_is_the_composed_update_bit_for_bit(monkeypatch, options):
    fast = _train(ember.optim.SGD, options, np.float32)
    _composed(monkeypatch, sgd_module, "sgd_step", False)
    slow = _train(ember.optim.SGD, options, np.float32)
    for a, b in zip(fast[0] + fast[1], slow[0] + slow[1]):
        np.testing.assert_array_equal(a, b)
    assert fast[2] == slow[2]


@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_on_arrays_is_the_composed_ops_bit_for_bit(monkeypatch, max_norm):
    rng = np.random.default_rng(7)
    grads = [rng.standard_normal(s).astype(np.float32) for s in ((300, 300), (7,), (0, 3))]

    def clip():
        params = [ember.nn.Parameter(ember.zeros(*g.shape)) for g in grads]
        for p, g in zip(params, grads):
            p.grad = ember.tensor(g.copy())
        total = ember.nn.utils.clip_grad_norm_(params, max_norm)
        return total.numpy(), [p.grad.numpy() for p in params], [p.grad._version for p in params]
    fast = clip()
    _composed(monkeypatch, utils_module, "clip_by_total_norm", None)
    slow = clip()
    np.testing.assert_array_equal(fast[0], slow[0])
    for a, b in zip(fast[1], slow[1]):
        np.testing.assert_array_equal(a, b)
    assert fast[2] == slow[2]


def test_updates_of_overlapping_or_traced_tensors_compose_ops():
    """A gradient that shares the parameter's memory makes the arrays path refuse (the composed
    in-place ops see each write through the alias); inside ember.compile the update is traced."""
    from ember.frontend.optim.array_updates import plain_arrays
    base = ember.zeros(10)
    assert plain_arrays(base[:5], base[5:]) is not None  # (disjoint halves of one buffer)
    assert plain_arrays(base[:6], base[4:]) is None
    assert plain_arrays(base, base) is None
    assert plain_arrays(ember.zeros(4), ember.zeros(4, dtype=ember.float64)) is None
    assert plain_arrays(ember.zeros(4, 4).t()) is None  # (not contiguous)

    param = ember.nn.Parameter(ember.ones(3))
    optimizer = ember.optim.Adam([param], lr=0.1)

    @ember.compile
    def step(g):
        param.grad = g
        optimizer.step()
    for _ in range(4):
        step(ember.ones(3))
    assert step.report.compiled_calls >= 1
    assert float(param.detach().numpy()[0]) == pytest.approx(1 - 0.4, abs=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_index_add_of_many_rows_adds_in_np_add_at_order(seed):
    """index_add's sorted path (an embedding's backward) gives np.add.at's bits: each row's
    additions in index order, negative indices wrapped, nan and inf carried."""
    from ember.ops import PRIMITIVES
    rng = np.random.default_rng(seed)
    rows, width = int(rng.integers(2, 80)), int(rng.integers(8, 40))
    dtype = (np.float32, np.float64)[seed % 2]
    target = rng.standard_normal((rows, width)).astype(dtype)
    idx = rng.integers(-rows, rows, (int(rng.integers(64, 600)),))
    src = (rng.standard_normal((idx.size, width)) * 10.0 ** rng.integers(-3, 4, (idx.size, 1))).astype(dtype)
    src[0, :3] = [np.nan, np.inf, -0.0]
    expected = target.copy()
    np.add.at(expected, idx, src)
    np.testing.assert_array_equal(PRIMITIVES["index_add"].impl(target, idx, src, 0), expected)
    with pytest.raises(IndexError):
        PRIMITIVES["index_add"].impl(target, np.concatenate([idx, [rows]]), np.concatenate([src, src[:1]]), 0)


@pytest.mark.parametrize("shape", [(8, 64, 128), (5, 128), (128,)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_is_the_composed_ops_bit_for_bit(monkeypatch, shape, bias):
    rng = np.random.default_rng(8)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in (shape, (96, 128), (96,)))
    args = lambda: (ember.tensor(x, requires_grad=True), ember.tensor(w, requires_grad=True),  # noqa: E731
                    ember.tensor(b, requires_grad=True) if bias else None)
    fast = F.linear(*args())
    expected_name = ("AddmmBackward0" if bias else "MmBackward0") if len(shape) == 2 else \
        ("ViewBackward0" if bias else "UnsafeViewBackward0")
    assert fast.grad_fn.name() == expected_name  # (PyTorch's names)
    _composed(monkeypatch, functional_module, "eager_linear", None)
    np.testing.assert_array_equal(fast.detach().numpy(), F.linear(*args()).detach().numpy())


def _linear_numpy(x, w, b):
    return x @ w.T + b


def test_linear_gradients_match_central_differences_and_double_backward_the_composed_ops(monkeypatch):
    rng = np.random.default_rng(9)
    x, w, b, g = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5), \
        rng.standard_normal((2, 3, 5))
    tensors = [ember.tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
    F.linear(*tensors).backward(ember.tensor(g))
    for i, t in enumerate(tensors):
        np.testing.assert_allclose(t.grad.numpy(), _numeric_grad(_linear_numpy, [x, w, b], i, g), atol=1e-6)

    def second_order():
        ts = [ember.tensor(a, requires_grad=True) for a in (x, w, b)]
        grads = ember.autograd.grad((F.linear(*ts) ** 2).sum(), ts, create_graph=True)
        return [t.numpy() for t in ember.autograd.grad(sum((gi * gi).sum() for gi in grads), ts)]
    fast = second_order()
    _composed(monkeypatch, functional_module, "eager_linear", None)
    for a, c in zip(fast, second_order()):
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-9)


def test_linear_weight_changed_in_place_fails_backward():
    layer = ember.nn.Linear(4, 3)
    y = layer(ember.randn(2, 4, requires_grad=True))
    with ember.no_grad():
        layer.weight.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_in_place_through_a_view_of_a_one_pass_gelu_result_reaches_the_gradient():
    """The result of a one-node op is its own tensor, not a detached alias of an argument (an
    in-place write through a view of it must rebase its history, as PyTorch's CopySlices)."""
    from ember.frontend.eager_compiled_ops import SMALL
    x = ember.randn(4, SMALL // 4, requires_grad=True)
    y = F.gelu(x)
    assert y.grad_fn.name() == "GeluBackward0" and y._base is None
    y.view(-1).mul_(2.0)
    y.sum().backward()
    plain = x.detach().clone().requires_grad_()
    (F.gelu(plain) * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), plain.grad.numpy(), rtol=1e-6)


def test_slice_gradients_summed_in_place_keep_the_sign_of_zero_of_pad_and_add():
    """Eager backward adds a slice's gradient into its input's pending gradient; the bits are
    those of padding each slice's gradient and summing (PyTorch's): a -0.0 that another slice's
    zero padding would turn into 0.0 does, and overlapping -0.0 + -0.0 stays -0.0."""
    w = ember.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    x = w * 1.0
    ((x[0:2] * 0.0).sum() + (x[2:4] * -0.0).sum()).backward()
    assert not np.signbit(w.grad.numpy()).any()
    w.grad = None
    x = w * 1.0
    ((x[0:3] * -0.0).sum() + (x[1:4] * -0.0).sum()).backward()
    np.testing.assert_array_equal(np.signbit(w.grad.numpy()), [False, True, True, False])


def test_linear_saves_only_what_its_backward_reads():
    """A frozen weight's layer saves no input (PyTorch's addmm saves mat1 only for mat2's
    gradient): an input changed in place afterwards still has a backward."""
    w = ember.full((4, 4), 0.5)
    leaf = ember.ones(2, 4, requires_grad=True)
    x = leaf * 1.0
    x.add_(F.linear(x, w))
    x.sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), np.full((2, 4), 3.0))
    weight = ember.ones(3, 4, requires_grad=True)
    y = F.linear(ember.ones(2, 4), weight)
    with ember.no_grad():
        weight.mul_(0.5)
    y.sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy(), np.full((3, 4), 2.0))


def test_linear_with_no_features_has_empty_gradients():
    x, w = ember.zeros(3, 0, requires_grad=True), ember.zeros(2, 0, requires_grad=True)
    b = ember.zeros(2, requires_grad=True)
    F.linear(x, w, b).sum().backward()
    assert x.grad.shape == (3, 0) and w.grad.shape == (2, 0)
    np.testing.assert_array_equal(b.grad.numpy(), [3.0, 3.0])


_CONV_CASES = [((4, 3, 12, 12), (6, 3, 5, 5), (1, 1), (0, 0), (1, 1), 1),
               ((2, 4, 9, 7), (6, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2),
               ((3, 3, 8, 8), (5, 3, 1, 1), (1, 1), (0, 0), (1, 1), 1),
               ((1, 2, 5, 5), (2, 2, 3, 3), (2, 2), (1, 1), (1, 1), 1),
               ((2, 4, 6, 6), (4, 1, 3, 3), (1, 1), (1, 1), (1, 1), 4)]


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,dilation,groups", _CONV_CASES)
def test_eager_convolutions_through_the_support_library_match_float64_numpy(x_shape, w_shape, stride, padding,
                                                                            dilation, groups):
    """Eager conv2d and its gradients (frontend/eager_convolutions.py: the compiled support
    library's kernels) against the float64 numpy implementations of the same primitives."""
    from ember.compiler.cpu.target import linking_works
    from ember.frontend.eager_convolutions import CONVOLUTIONS_FOR_EAGER, _library
    from ember.ops import PRIMITIVES
    if not linking_works():
        pytest.skip("no C compiler here to link the support library: eager convolutions use numpy")
    assert _library() is not None  # (with a C compiler the library must build and load)
    rng = np.random.default_rng(10)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = CONVOLUTIONS_FOR_EAGER["conv2d"](x, w, **attrs)
    g = rng.standard_normal(y.shape).astype(np.float32)
    calls = [("conv2d", (x, w), {}), ("conv2d_grad_input", (g, w), dict(input_shape=x_shape)),
             ("conv2d_grad_weight", (x, g), dict(weight_shape=w_shape))]
    for kind, arrays, extra in calls:
        got = CONVOLUTIONS_FOR_EAGER[kind](*arrays, **attrs, **extra)
        expected = PRIMITIVES[kind].impl(*[a.astype(np.float64) for a in arrays], **attrs, **extra)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_eager_conv2d_of_other_dtypes_and_empty_batches_keeps_numpy():
    x = ember.randn(0, 3, 8, 8, requires_grad=True)
    y = F.conv2d(x, ember.randn(4, 3, 3, 3))
    assert y.shape == (0, 4, 6, 6)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 8, 8)
    x64 = ember.randn(2, 3, 8, 8, dtype=ember.float64)
    assert F.conv2d(x64, ember.randn(4, 3, 3, 3, dtype=ember.float64)).dtype == ember.float64


@pytest.mark.parametrize("call", [
    lambda: F.conv2d(ember.randn(2, 5, 8, 8), ember.randn(4, 4, 3, 3)),
    lambda: ember.nn.Conv2d(4, 8, 3)(ember.randn(2, 5, 9, 9)),
    lambda: F.conv2d(ember.randn(2, 3, 8, 8), ember.randn(4, 4, 3, 3)),
    lambda: F.conv2d(ember.randn(2, 5, 8, 8), ember.randn(4, 2, 3, 3), groups=2),
    lambda: F.conv2d(ember.randn(2, 4, 8, 8), ember.randn(5, 2, 3, 3), groups=2),
    lambda: F.conv2d(ember.randn(2, 4, 8, 8), ember.randn(4, 4, 3, 3), groups=-1),
    lambda: F.conv2d(ember.randn(2, 4, 8, 8), ember.randn(4, 4, 3, 3), padding=-3)])
def test_eager_convolutions_refuse_inconsistent_geometry_before_the_kernel_runs(call):
    """The compiled kernel trusts its arguments: a channel count that disagrees with the
    weight's must be the shape rule's clear error, not a write out of bounds."""
    with pytest.raises(Exception, match="channels|groups|larger than|negative padding"):
        call()


def test_a_hook_that_changes_a_gradients_size_raises_pytorchs_error():
    x = ember.randn(2, 4, 8, 8, requires_grad=True)
    y = F.conv2d(x, ember.randn(4, 4, 3, 3), padding=1)
    y.register_hook(lambda g: ember.ones(1))
    with pytest.raises(RuntimeError, match="has changed the size of value"):
        y.sum().backward()


@pytest.mark.parametrize("options,message", [(dict(stride=0), "non-positive stride"),
                                             (dict(padding=-1), "negative padding"),
                                             (dict(dilation=(-2, 3)), "dilation should be greater than zero"),
                                             (dict(groups=0), "non-positive groups")])
def test_conv2d_refuses_non_positive_parameters_in_pytorchs_words(options, message):
    with pytest.raises(RuntimeError, match=message):
        F.conv2d(ember.randn(2, 4, 8, 8), ember.randn(4, 4, 3, 3), **options)
