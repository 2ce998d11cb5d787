"""F.hardshrink/softshrink/tanhshrink/rrelu, the in-place activations (elu_, celu_, selu_,
leaky_relu_, hardtanh_, threshold_, rrelu_), gumbel_softmax, softmin, channel_shuffle,
local_response_norm, feature_alpha_dropout, the upsample aliases and their layers: values
against numpy float64 references written from PyTorch's formulas, gradients against finite
differences, in-place writes and their autograd, eager against ember.compile, the statistics of
the random ones, and PyTorch's errors, warnings and reprs."""
import math
import re
import warnings

import numpy as np
import pytest

import ember
from ember.frontend.nn import activation_more as layers
from ember.frontend.nn import functional_activation_more as FM
from ember.frontend.nn.functional_resize import interpolate
from finite_differences import check_vjp
from gradcheck import check_module

RNG = np.random.default_rng(0)
SPECIAL = np.array([-np.inf, -3.0, -1.0, -0.5, -0.4, -0.0, 0.0, 0.4, 0.5, 1.0, 3.0, np.inf, np.nan])
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
ALPHA_PRIME = 1.7580993408473766  # -SELU_ALPHA * SELU_SCALE: alpha dropout's saturation value


def away_from(x, points, gap=1e-3):
    """x nudged off the kinks at `points` (finite differences must not straddle one)."""
    x = np.array(x, dtype=np.float64)
    for p in points:
        near = np.abs(x - p) < gap
        x[near] = p + np.where(x[near] >= p, gap, -gap) * 2
    return x


def compiled_matches(fn, *arrays, rtol=1e-5, atol=1e-6):
    """fn on float32 tensors: eager and two compiled calls agree (fresh copies each call)."""
    expected = fn(*[ember.from_numpy(np.asarray(a, np.float32).copy()) for a in arrays]).detach().numpy()
    compiled = ember.compile(fn)
    for _ in range(2):
        got = compiled(*[ember.from_numpy(np.asarray(a, np.float32).copy()) for a in arrays])
        np.testing.assert_allclose(got.detach().numpy(), expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- shrinks

def reference_hardshrink(x, lambd):
    return np.where((x >= -lambd) & (x <= lambd), 0.0, x)


def reference_softshrink(x, lambd):
    return np.where(x > lambd, x - lambd, np.where(x < -lambd, x + lambd, np.where(np.isnan(x), x, 0.0)))


@pytest.mark.parametrize("lambd", [0.0, 0.4, 0.5, 1.7])
def test_shrinks_match_the_references_on_special_values(lambd):
    for x in (SPECIAL, RNG.standard_normal((3, 4)) * 2):
        np.testing.assert_array_equal(FM.hardshrink(ember.tensor(x), lambd).numpy(), reference_hardshrink(x, lambd))
        out = FM.softshrink(ember.tensor(x), lambd).numpy()
        np.testing.assert_array_equal(out, reference_softshrink(x, lambd))
        assert not np.any(np.signbit(out[out == 0]))  # +0 between the thresholds (torch's vectorized kernel)
        np.testing.assert_allclose(FM.tanhshrink(ember.tensor(x)).numpy(), x - np.tanh(x), rtol=1e-15, atol=1e-15)
    assert FM.hardshrink(ember.tensor(SPECIAL, dtype=ember.float32), lambd).dtype is ember.float32
    assert FM.softshrink(ember.tensor(SPECIAL, dtype=ember.float16), lambd).dtype is ember.float16


def test_hardshrink_with_a_negative_lambda_is_the_identity():
    np.testing.assert_array_equal(FM.hardshrink(ember.tensor(SPECIAL), -0.3).numpy(), SPECIAL)


def test_shrink_gradients_match_finite_differences():
    x = away_from(RNG.standard_normal((3, 5)) * 1.5, [-0.5, 0.5])
    check_vjp(lambda t: FM.hardshrink(t, 0.5), [x])
    check_vjp(lambda t: FM.softshrink(t, 0.5), [x])
    check_vjp(FM.tanhshrink, [x])


def test_shrink_gradients_at_the_thresholds_and_nan_are_zero():
    x = ember.tensor([-0.5, 0.5, -0.7, 0.7, 0.2, float("nan")], requires_grad=True)
    for fn in (FM.hardshrink, FM.softshrink):
        x.grad = None
        fn(x, 0.5).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 1, 1, 0, 0])


def test_shrink_errors_use_pytorchs_words():
    with pytest.raises(RuntimeError, match=re.escape("lambda must be in range [0, 3.40282e+38] for input dtype "
                                                     "Float, but found -0.3")):
        FM.softshrink(ember.ones(2), -0.3)
    with pytest.raises(RuntimeError, match=re.escape("lambda must be in range [0, 65504] for input dtype Half, "
                                                     "but found 70000")):
        FM.softshrink(ember.ones(2, dtype=ember.float16), 70000.0)
    with pytest.raises(NotImplementedError, match="\"hardshrink_cpu\" not implemented for 'Long'"):
        FM.hardshrink(ember.tensor([1, 2]))
    with pytest.raises(NotImplementedError, match="\"softshrink_check\" not implemented for 'Bool'"):
        FM.softshrink(ember.tensor([True]))


# ----------------------------------------------------------------------------- rrelu

def test_rrelu_in_eval_is_leaky_relu_with_the_mean_slope():
    x = RNG.standard_normal((4, 5))
    for lower, upper in [(1 / 8, 1 / 3), (0.1, 0.1), (-0.3, -0.1)]:
        slope = (lower + upper) / 2
        np.testing.assert_array_equal(FM.rrelu(ember.tensor(x), lower, upper).numpy(), np.where(x > 0, x, x * slope))
        check_vjp(lambda t: FM.rrelu(t, lower, upper), [away_from(x, [0.0])])


def test_rrelu_in_training_draws_one_slope_per_element_in_lower_upper():
    x = -RNG.uniform(0.5, 2.0, (200, 100))
    slopes = FM.rrelu(ember.tensor(x), 0.1, 0.3, training=True).numpy() / x
    assert slopes.min() >= 0.1 and slopes.max() <= 0.3
    assert abs(slopes.mean() - 0.2) < 0.003 and abs(slopes.std() - 0.2 / math.sqrt(12)) < 0.003  # U(0.1, 0.3)
    assert len(np.unique(slopes)) > 19000
    positive = RNG.uniform(0.1, 2.0, (5, 5))
    np.testing.assert_array_equal(FM.rrelu(ember.tensor(positive), training=True).numpy(), positive)
    ember.manual_seed(7)
    first = FM.rrelu(ember.tensor(x), training=True).numpy()
    ember.manual_seed(7)
    np.testing.assert_array_equal(FM.rrelu(ember.tensor(x), training=True).numpy(), first)


def test_rrelu_training_gradient_is_the_drawn_slope():
    x = away_from(RNG.standard_normal((4, 6)), [0.0])

    def drawn(t):
        ember.manual_seed(3)
        return FM.rrelu(t, 0.1, 0.4, training=True)
    check_vjp(drawn, [x])
    t = ember.tensor(x, requires_grad=True)
    out = drawn(t)
    out.sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), out.detach().numpy() / x, rtol=1e-12)


def test_rrelu_errors_use_pytorchs_words():
    for training in (False, True):
        with pytest.raises(RuntimeError, match="Lower bound should be less than or equal to the upper bound"):
            FM.rrelu(ember.ones(2), 0.5, 0.1, training)
    with pytest.raises(NotImplementedError, match="\"leaky_relu_cpu\" not implemented for 'Long'"):
        FM.rrelu(ember.tensor([1, 2]))
    with pytest.raises(NotImplementedError, match="\"rrelu_with_noise_out_cpu\" not implemented for 'Long'"):
        FM.rrelu_(ember.tensor([1, 2]), training=True)


# ----------------------------------------------------------------------------- in-place activations

def elu_reference(x, alpha, scale=1.0, input_scale=1.0):
    value = np.where(x > 0, x, alpha * np.expm1(x * input_scale)) * scale
    slope = np.where(x > 0, 1.0, alpha * input_scale * np.exp(x * input_scale)) * scale
    return value, slope


INPLACE = {  # name: (call, numpy reference -> (value, derivative))
    "elu_": (lambda t: FM.elu_(t, 1.3), lambda x: elu_reference(x, 1.3)),
    "celu_": (lambda t: FM.celu_(t, 0.6), lambda x: elu_reference(x, 0.6, 1.0, 1 / 0.6)),
    "selu_": (FM.selu_, lambda x: elu_reference(x, SELU_ALPHA, SELU_SCALE)),
    "leaky_relu_": (lambda t: FM.leaky_relu_(t, 0.2), lambda x: (np.where(x > 0, x, 0.2 * x), np.where(x > 0, 1, 0.2))),
    "hardtanh_": (lambda t: FM.hardtanh_(t, -0.7, 0.4),
                  lambda x: (np.clip(x, -0.7, 0.4), ((x > -0.7) & (x < 0.4)).astype(float))),
    "threshold_": (lambda t: FM.threshold_(t, 0.3, -2.0), lambda x: (np.where(x <= 0.3, -2.0, x), (x > 0.3) * 1.0)),
    "rrelu_": (lambda t: FM.rrelu_(t, 0.1, 0.4), lambda x: (np.where(x > 0, x, 0.25 * x), np.where(x > 0, 1, 0.25))),
}
SAVES_RESULT = {"elu_", "celu_", "selu_", "leaky_relu_", "rrelu_"}  # PyTorch's backward reads what they wrote


@pytest.mark.parametrize("name", sorted(INPLACE))
def test_inplace_activation_writes_its_input_and_views_see_it(name):
    call, reference = INPLACE[name]
    x = away_from(RNG.standard_normal((3, 4)), [0.0, -0.7, 0.4, 0.3])
    base = ember.tensor(x)
    view = base[1:]
    alias = base[1:, :2]
    version = base._version
    assert call(view) is view
    expected = x.copy()
    expected[1:] = reference(x[1:])[0]
    np.testing.assert_allclose(base.numpy(), expected, rtol=1e-14)
    np.testing.assert_array_equal(alias.numpy(), base.numpy()[1:, :2])
    assert base._version > version


@pytest.mark.parametrize("name", sorted(INPLACE))
def test_inplace_activation_gradients_match_the_derivative(name):
    call, reference = INPLACE[name]
    x = away_from(RNG.standard_normal((3, 4)), [0.0, -0.7, 0.4, 0.3])
    cotangent = RNG.standard_normal((3, 4))
    leaf = ember.tensor(x, requires_grad=True)
    y = leaf * 1
    call(y[1:])  # through a view: PyTorch's CopySlices
    (y * ember.tensor(cotangent)).sum().backward()
    slope = np.ones_like(x)
    slope[1:] = reference(x[1:])[1]
    np.testing.assert_allclose(leaf.grad.numpy(), cotangent * slope, rtol=1e-12)
    check_vjp(lambda t: call(t * 1), [x])


@pytest.mark.parametrize("name", sorted(INPLACE))
def test_inplace_activation_saves_what_pytorch_saves(name):
    call = INPLACE[name][0]
    leaf = ember.tensor(RNG.standard_normal(4), requires_grad=True)
    y = leaf * 1
    call(y)
    y.add_(1.0)
    if name in SAVES_RESULT:  # the result is saved: a later write makes backward raise
        with pytest.raises(RuntimeError, match="output 0 of .* is at version 2; expected version 1 instead"):
            y.sum().backward()
    else:  # the value before the write is saved (original_self): later writes do not matter
        y.sum().backward()
        assert leaf.grad is not None
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place"):
        call(ember.ones(3, requires_grad=True))
    with ember.no_grad():
        leaf_copy = ember.ones(3, requires_grad=True)
        assert call(leaf_copy) is leaf_copy


@pytest.mark.parametrize("call,words", [
    (lambda t: FM.leaky_relu_(t, -0.1), "In-place leakyReLu backward calculation is triggered with a negative slope"),
    (lambda t: FM.elu_(t, -1.0), "In-place elu backward calculation is triggered with a negative slope"),
    (lambda t: FM.celu_(t, -1.0), "In-place elu backward calculation is triggered with a negative slope"),
    (lambda t: FM.rrelu_(t, -0.3, -0.1), "In-place leakyReLu backward calculation is triggered with a negative slope"),
])
def test_inplace_activation_with_a_negative_slope_refuses_backward(call, words):
    leaf = ember.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    y = leaf * 1
    call(y)  # (the forward runs, as in PyTorch)
    with pytest.raises(RuntimeError, match=words):
        y.sum().backward()
    out = call(ember.tensor([-1.0, 2.0]))  # without autograd it is a plain write
    assert out.numpy()[1] == 2.0


def test_inplace_activations_with_zero_slopes_and_training_rrelu_backward_fine():
    for call in (lambda t: FM.leaky_relu_(t, 0.0), lambda t: FM.elu_(t, 0.0),
                 lambda t: FM.rrelu_(t, -0.3, -0.1, training=True)):
        leaf = ember.tensor([-1.0, 0.5, 2.0], requires_grad=True)
        y = leaf * 1
        call(y)
        y.sum().backward()
        assert leaf.grad.numpy()[1:].tolist() == [1.0, 1.0]


def test_rrelu_inplace_training_writes_the_drawn_values():
    x = -RNG.uniform(0.5, 1.0, (50, 40))
    t = ember.tensor(x)
    ember.manual_seed(11)
    assert FM.rrelu_(t, 0.2, 0.3, training=True) is t
    ember.manual_seed(11)
    np.testing.assert_array_equal(t.numpy(), FM.rrelu(ember.tensor(x), 0.2, 0.3, training=True).numpy())
    slopes = t.numpy() / x
    assert slopes.min() >= 0.2 and slopes.max() <= 0.3
    u = ember.tensor(x)
    assert FM.rrelu(u, training=True, inplace=True) is u


def test_hardtanh_and_threshold_inplace_take_pytorchs_integer_and_reversed_bounds():
    ints = ember.tensor([1, 2, -3, 0, -2, 5])
    assert FM.hardtanh_(ints, -0.5, 1.5) is ints and ints.dtype is ember.int64
    assert ints.numpy().tolist() == [1, 1, 0, 0, 0, 1]  # bounds truncated to 0 and 1
    ints = ember.tensor([1, 2, -3, 0, -2, 5])
    assert FM.threshold_(ints, -2.5, -5.5).numpy().tolist() == [1, 2, -5, 0, -5, 5]  # threshold -2, value -5
    x = ember.tensor([-2.0, 0.0, 3.0, float("nan")], requires_grad=True)
    y = x * 1
    FM.hardtanh_(y, 0.5, -0.5)  # min_val > max_val: every value becomes max_val, no gradient
    y.sum().backward()
    assert y.detach().numpy()[:3].tolist() == [-0.5, -0.5, -0.5] and np.isnan(y.detach().numpy()[3])
    assert x.grad.numpy()[:3].tolist() == [0.0, 0.0, 0.0]


def test_inplace_activation_errors_use_pytorchs_words():
    for call, kernel in [(FM.elu_, "elu_cpu"), (FM.selu_, "elu_cpu"), (FM.celu_, "elu_cpu"),
                         (FM.leaky_relu_, "leaky_relu_cpu"), (FM.rrelu_, "leaky_relu_cpu")]:
        with pytest.raises(NotImplementedError, match=f"\"{kernel}\" not implemented for 'Long'"):
            call(ember.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="ZeroDivisionError: alpha cannot be 0 for CELU"):
        FM.celu_(ember.ones(2), 0.0)
    with pytest.raises(RuntimeError, match="Bool inputs not supported for hardtanh"):
        FM.hardtanh_(ember.tensor([True]))
    with pytest.raises(NotImplementedError, match="\"threshold_cpu\" not implemented for 'Bool'"):
        FM.threshold_(ember.tensor([True]), 0, 1)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        FM.elu_(ember.ones(1).expand(3))


# ----------------------------------------------------------------------------- softmin

def reference_softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def test_softmin_is_softmax_of_the_negation_with_the_implicit_dim_warning():
    x = RNG.standard_normal((2, 3, 4))
    np.testing.assert_allclose(FM.softmin(ember.tensor(x), 2).numpy(), reference_softmax(-x, 2), rtol=1e-14)
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmin has been deprecated"):
        implicit = FM.softmin(ember.tensor(x))  # 3-D: dim 0, as torch's legacy rule
    np.testing.assert_allclose(implicit.numpy(), reference_softmax(-x, 0), rtol=1e-14)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        np.testing.assert_allclose(FM.softmin(ember.tensor(x[0])).numpy(), reference_softmax(-x[0], 1), rtol=1e-14)
    ints = FM.softmin(ember.tensor([1, 2, 3]), 0, dtype=ember.float64)
    assert ints.dtype is ember.float64
    np.testing.assert_allclose(ints.numpy(), reference_softmax(-np.array([1.0, 2, 3]), 0), rtol=1e-14)
    with pytest.raises(NotImplementedError, match="\"softmax_lastdim_kernel_impl\" not implemented for 'Long'"):
        FM.softmin(ember.tensor([1, 2]), 0)
    with pytest.raises(NotImplementedError, match="\"softmax_kernel_impl\" not implemented for 'Long'"):
        FM.softmin(ember.tensor([[1, 2]]), 0)
    check_vjp(lambda t: FM.softmin(t, 1), [x])


# ----------------------------------------------------------------------------- gumbel_softmax

def test_gumbel_softmax_samples_sum_to_one_and_repeat_with_the_seed():
    logits = RNG.standard_normal((4, 6))
    ember.manual_seed(1)
    soft = FM.gumbel_softmax(ember.tensor(logits), dim=0).numpy()
    np.testing.assert_allclose(soft.sum(0), 1.0, rtol=1e-14)
    assert np.all(soft > 0)
    ember.manual_seed(1)
    np.testing.assert_array_equal(FM.gumbel_softmax(ember.tensor(logits), dim=0).numpy(), soft)
    ember.manual_seed(1)
    cooler = FM.gumbel_softmax(ember.tensor(logits), tau=0.5, dim=0).numpy()  # same noise, (logits + g) / tau
    np.testing.assert_allclose(cooler, reference_softmax(np.log(soft) / 0.5, 0), rtol=1e-10)


def test_gumbel_softmax_hard_is_one_hot_with_the_soft_gradient():
    logits = RNG.standard_normal((3, 5))
    weights = ember.tensor(RNG.standard_normal((3, 5)))
    grads = []
    for hard in (False, True):
        t = ember.tensor(logits, requires_grad=True)
        ember.manual_seed(4)
        out = FM.gumbel_softmax(t, 0.7, hard=hard)
        (out * weights).sum().backward()
        grads.append(t.grad.numpy())
        if hard:
            sample = out.detach().numpy()
            assert set(np.unique(sample)) == {0.0, 1.0} and np.all(sample.sum(-1) == 1)
            np.testing.assert_array_equal(sample.argmax(-1), soft.argmax(-1))
        else:
            soft = out.detach().numpy()
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12)  # straight-through

    def drawn(t):
        ember.manual_seed(2)
        return FM.gumbel_softmax(t, 0.8, dim=0)
    check_vjp(drawn, [logits])


def test_gumbel_softmax_picks_each_category_with_its_softmax_probability():
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    batch = ember.tensor(np.tile(logits, (20000, 1)))
    counts = FM.gumbel_softmax(batch, hard=True).numpy().sum(0) / 20000
    np.testing.assert_allclose(counts, [0.1, 0.2, 0.3, 0.4], atol=0.015)


def test_gumbel_softmax_warnings_and_errors_as_pytorch():
    with pytest.warns(UserWarning, match="`eps` parameter is deprecated and has no effect."):
        FM.gumbel_softmax(ember.ones(3), eps=1e-5)
    with pytest.raises(RuntimeError, match="Exponential distribution is a continuous probability distribution. "
                                           "dtype must be a floating point but you specified Long"):
        FM.gumbel_softmax(ember.tensor([1, 2]))
    assert FM.gumbel_softmax(ember.tensor(2.0), hard=True).item() == 1.0
    assert FM.gumbel_softmax(ember.ones(0, 3), hard=True).shape == (0, 3)


# ----------------------------------------------------------------------------- channel_shuffle

def reference_channel_shuffle(x, groups):
    n, c = x.shape[:2]
    return x.reshape((n, groups, c // groups) + x.shape[2:]).swapaxes(1, 2).reshape(x.shape)


@pytest.mark.parametrize("shape,groups", [((2, 6, 3), 3), ((1, 6, 2, 2), 2), ((2, 4, 1, 2, 3), 4), ((3, 5, 2), 1),
                                          ((0, 6, 2), 2)])
def test_channel_shuffle_matches_the_reference_in_new_memory(shape, groups):
    x = RNG.standard_normal(shape)
    t = ember.tensor(x)
    out = FM.channel_shuffle(t, groups)
    np.testing.assert_array_equal(out.numpy(), reference_channel_shuffle(x, groups))
    assert out._base is None and not np.shares_memory(out.numpy(), t.numpy())


def test_channel_shuffle_example_gradient_and_errors():
    x = ember.arange(16.0).reshape(1, 4, 2, 2)
    assert FM.channel_shuffle(x, 2).numpy()[0, :, 0, 0].tolist() == [0.0, 8.0, 4.0, 12.0]  # torch's doc example
    check_vjp(lambda t: FM.channel_shuffle(t, 3), [RNG.standard_normal((2, 6, 2))])
    with pytest.raises(RuntimeError, match=re.escape("channel_shuffle expects input with > 2 dims, but got input "
                                                     "with sizes [2, 3]")):
        FM.channel_shuffle(ember.ones(2, 3), 3)
    with pytest.raises(RuntimeError, match="Number of groups to divide channels in must be positive. Value of "
                                           "groups:0"):
        FM.channel_shuffle(ember.ones(1, 3, 2), 0)
    with pytest.raises(RuntimeError, match="Number of channels must be divisible by groups. Got 6 channels and 4 "
                                           "groups."):
        FM.channel_shuffle(ember.ones(1, 6, 2), 4)
    with pytest.raises(TypeError, match=re.escape("channel_shuffle(): argument 'groups' (position 2) must be int, "
                                                  "not float")):
        FM.channel_shuffle(ember.ones(1, 6, 2), 2.0)


# ----------------------------------------------------------------------------- local_response_norm

def reference_lrn(x, size, alpha, beta, k):
    """b_c = a_c / (k + alpha / size * sum of a_j^2 over j in [c - size//2, c + (size-1)//2])^beta."""
    out = np.empty_like(x, dtype=np.float64)
    channels = x.shape[1]
    for c in range(channels):
        window = range(max(0, c - size // 2), min(channels, c + (size - 1) // 2 + 1))
        total = sum(x[:, j] ** 2 for j in window)
        out[:, c] = x[:, c] / (k + alpha * total / size) ** beta
    return out


@pytest.mark.parametrize("shape", [(2, 5, 4), (2, 7, 3, 2), (1, 4, 2, 2, 2)])
@pytest.mark.parametrize("size,alpha,beta,k", [(2, 1e-4, 0.75, 1.0), (3, 0.5, 0.6, 2.0), (1, 0.2, 0.5, 1.0),
                                               (9, 0.3, 1.3, 0.5)])
def test_local_response_norm_matches_the_reference(shape, size, alpha, beta, k):
    x = RNG.standard_normal(shape) * 2
    np.testing.assert_allclose(FM.local_response_norm(ember.tensor(x), size, alpha, beta, k).numpy(),
                               reference_lrn(x, size, alpha, beta, k), rtol=1e-13)


def test_local_response_norm_gradients_integers_and_errors():
    check_vjp(lambda t: FM.local_response_norm(t, 3, 0.5, 0.75, 1.0), [RNG.standard_normal((2, 5, 3))])
    ints = RNG.integers(-5, 6, (2, 4, 3))
    squares = ints ** 2  # torch's integer avg_pool truncates the window mean
    padded = np.pad(squares, ((0, 0), (1, 1), (0, 0)))
    mean = (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]) // 3
    out = FM.local_response_norm(ember.tensor(ints), 3, 0.5, 0.75, 1.0)
    assert out.dtype is ember.float32
    np.testing.assert_allclose(out.numpy(), ints / (1 + 0.5 * mean) ** 0.75, rtol=1e-6)
    empty = ember.ones(0, 3, 4)
    assert FM.local_response_norm(empty, 2) is empty
    with pytest.raises(ValueError, match=r"Expected 3D or higher dimensionality\s+input \(got 2 dimensions\)"):
        FM.local_response_norm(ember.ones(2, 3), 2)
    with pytest.raises(RuntimeError, match="kernel size should be greater than zero, but got kH: 0 kW: 1"):
        FM.local_response_norm(ember.ones(2, 3, 4), 0)
    with pytest.raises(RuntimeError, match="kernel size should be greater than zero, but got kT: 0 kH: 1 kW: 1"):
        FM.local_response_norm(ember.ones(2, 3, 4, 5), 0)


# ----------------------------------------------------------------------------- feature_alpha_dropout

def alpha_dropout_levels(p):
    a = 1 / math.sqrt((ALPHA_PRIME ** 2 * p + 1) * (1 - p))
    return a, ALPHA_PRIME * a * p, -ALPHA_PRIME * a * (1 - p)  # scale, kept shift, dropped value


def test_feature_alpha_dropout_drops_whole_channels_to_the_selu_saturation():
    x = RNG.standard_normal((60, 50, 2, 2))
    p = 0.3
    out = FM.feature_alpha_dropout(ember.tensor(x), p, training=True).numpy()
    a, shift, dropped_value = alpha_dropout_levels(p)
    kept = np.isclose(out, a * x + shift, rtol=1e-12)
    dropped = np.isclose(out, dropped_value, rtol=1e-12)
    assert np.all(kept | dropped)
    per_channel = kept.reshape(60, 50, -1)
    assert np.all(per_channel == per_channel[..., :1])  # one draw per [n, c]
    assert abs(per_channel[..., 0].mean() - (1 - p)) < 0.03
    big = RNG.standard_normal((400, 100, 2))
    for q in (0.2, 0.5):
        out = FM.feature_alpha_dropout(ember.tensor(big), q, training=True).numpy()
        assert abs(out.mean()) < 0.05 and abs(out.std() - 1) < 0.05  # self-normalising: zero mean, unit variance


def test_feature_alpha_dropout_edge_cases_inplace_and_gradient():
    x = ember.ones(2, 3, 4)
    assert FM.feature_alpha_dropout(x, 0.5) is x  # training=False by default, as torch
    assert FM.feature_alpha_dropout(x, 0.0, True) is x
    assert FM.feature_alpha_dropout(ember.ones(3), 0.5, False).shape == (3,)
    zeros = FM.feature_alpha_dropout(ember.tensor([[1.0, float("nan")]]), 1.0, True).numpy()
    assert zeros[0, 0] == 0 and np.isnan(zeros[0, 1])  # torch multiplies by zero
    assert FM.feature_alpha_dropout(ember.ones(2, 3, dtype=ember.int64), 1.0, True).dtype is ember.int64
    y = ember.ones(4, 5, 2)
    assert FM.feature_alpha_dropout(y, 0.5, True, inplace=True) is y
    scale, shift, dropped_value = alpha_dropout_levels(0.5)
    written = y.numpy()
    assert np.all(np.isclose(written, scale + shift) | np.isclose(written, dropped_value))

    def dropped(t):
        ember.manual_seed(5)
        return FM.feature_alpha_dropout(t, 0.4, True)
    check_vjp(dropped, [RNG.standard_normal((3, 4, 2))])
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        FM.feature_alpha_dropout(ember.ones(2, 3), 1.5, True)
    with pytest.raises(RuntimeError, match="Feature dropout requires at least 2 dimensions in the input"):
        FM.feature_alpha_dropout(ember.ones(3), 0.5, True)
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        FM.feature_alpha_dropout(ember.ones(2, 3, dtype=ember.int64), 0.5, True)


# ----------------------------------------------------------------------------- upsample aliases

def test_upsample_aliases_warn_and_equal_interpolate():
    x = ember.tensor(RNG.standard_normal((1, 2, 3, 4)))
    calls = [("upsample", lambda: FM.upsample(x, scale_factor=2), dict(scale_factor=2)),
             ("upsample", lambda: FM.upsample(x, (5, 7), None, "bilinear", True),
              dict(size=(5, 7), mode="bilinear", align_corners=True)),
             ("upsample_nearest", lambda: FM.upsample_nearest(x, size=(6, 5)), dict(size=(6, 5))),
             ("upsample_bilinear", lambda: FM.upsample_bilinear(x, scale_factor=2),
              dict(scale_factor=2, mode="bilinear", align_corners=True))]
    for name, call, keywords in calls:
        with pytest.warns(UserWarning, match=re.escape(f"`nn.functional.{name}` is deprecated. Use "
                                                       f"`nn.functional.interpolate` instead.")) as record:
            out = call()
        assert record[0].filename == __file__  # (stacklevel=2: the caller's line)
        np.testing.assert_array_equal(out.numpy(), interpolate(x, **keywords).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NotImplementedError, match="Got 3D input, but bilinear mode needs 4D input"):
            FM.upsample_bilinear(ember.ones(1, 2, 3), scale_factor=2)


# ----------------------------------------------------------------------------- layers

def test_layers_reprs_as_pytorch():
    assert repr(layers.Hardshrink()) == "Hardshrink(0.5)" and repr(layers.Softshrink(0.2)) == "Softshrink(0.2)"
    assert repr(layers.Tanhshrink()) == "Tanhshrink()" and repr(layers.Softmax2d()) == "Softmax2d()"
    assert repr(layers.RReLU()) == "RReLU(lower=0.125, upper=0.3333333333333333)"
    assert repr(layers.RReLU(0.1, 0.3, True)) == "RReLU(lower=0.1, upper=0.3, inplace=True)"
    assert repr(layers.ChannelShuffle(3)) == "ChannelShuffle(groups=3)"
    assert repr(layers.LocalResponseNorm(2)) == "LocalResponseNorm(2, alpha=0.0001, beta=0.75, k=1.0)"
    assert repr(layers.FeatureAlphaDropout()) == "FeatureAlphaDropout(p=0.5, inplace=False)"
    assert repr(layers.FeatureAlphaDropout(0.2, True)) == "FeatureAlphaDropout(p=0.2, inplace=True)"
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 2"):
        layers.FeatureAlphaDropout(2)


def test_layers_forward_as_the_functions():
    x = RNG.standard_normal((2, 6, 3, 2))
    t = ember.tensor(x)
    np.testing.assert_array_equal(layers.Hardshrink(0.3)(t).numpy(), reference_hardshrink(x, 0.3))
    np.testing.assert_array_equal(layers.Softshrink(0.3)(t).numpy(), reference_softshrink(x, 0.3))
    np.testing.assert_allclose(layers.Tanhshrink()(t).numpy(), x - np.tanh(x), rtol=1e-15)
    np.testing.assert_allclose(layers.Softmax2d()(t).numpy(), reference_softmax(x, 1), rtol=1e-14)
    np.testing.assert_allclose(layers.Softmax2d()(ember.tensor(x[0])).numpy(), reference_softmax(x[0], 0), rtol=1e-14)
    with pytest.raises(ValueError, match="Softmax2d: expected input to be 3D or 4D, got 2D instead"):
        layers.Softmax2d()(ember.ones(2, 3))
    np.testing.assert_array_equal(layers.ChannelShuffle(2)(t).numpy(), reference_channel_shuffle(x, 2))
    np.testing.assert_allclose(layers.LocalResponseNorm(3, 0.2)(t).numpy(), reference_lrn(x, 3, 0.2, 0.75, 1.0),
                               rtol=1e-13)
    rrelu = layers.RReLU(0.1, 0.3)
    trained = rrelu(t).numpy()
    negative = x < 0
    assert np.all((trained[negative] / x[negative] >= 0.1) & (trained[negative] / x[negative] <= 0.3))
    rrelu.eval()
    np.testing.assert_array_equal(rrelu(t).numpy(), np.where(x > 0, x, 0.2 * x))
    u = ember.tensor(x)
    assert layers.RReLU(inplace=True)(u) is u
    dropout = layers.FeatureAlphaDropout(0.5, inplace=True)
    v = ember.tensor(x)
    assert dropout(v) is not v and np.array_equal(v.numpy(), x)  # torch's forward ignores inplace
    dropout.eval()
    assert dropout(v) is v


def test_layer_gradients_match_finite_differences():
    x = away_from(RNG.standard_normal((2, 4, 3)), [0.0, -0.5, 0.5])
    for layer in (layers.Hardshrink(), layers.Softshrink(), layers.Tanhshrink(), layers.RReLU(), layers.Softmax2d(),
                  layers.ChannelShuffle(2), layers.LocalResponseNorm(3, 0.3), layers.FeatureAlphaDropout(0.3)):
        check_module(layer, [x])


# ----------------------------------------------------------------------------- ember.compile

def test_compiled_deterministic_ops_match_eager():
    x = RNG.standard_normal((2, 6, 3, 2))
    compiled_matches(lambda t: FM.hardshrink(t, 0.4) + FM.softshrink(t, 0.4) + FM.tanhshrink(t), x)
    compiled_matches(lambda t: FM.rrelu(t, 0.1, 0.3) + FM.softmin(t, 1), x)
    compiled_matches(lambda t: FM.channel_shuffle(t, 3) * FM.local_response_norm(t, 3, 0.1, 0.6, 2.0), x)
    compiled_matches(lambda t: FM.local_response_norm(t.reshape(2, 6, 6), 4), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled_matches(lambda t: FM.upsample_bilinear(t, scale_factor=2), x)


def test_compiled_inplace_activations_write_the_argument_and_match_eager():
    x = RNG.standard_normal((3, 4))

    def chain(t):
        FM.elu_(t[0], 1.3)
        FM.celu_(t[1], 0.6)
        FM.leaky_relu_(t[2], 0.2)
        FM.hardtanh_(t, -0.7, 0.9)
        FM.threshold_(t, 0.3, -2.0)
        FM.rrelu_(t, 0.1, 0.4)
        return FM.selu_(t * 2)
    eager_arg = ember.tensor(x.astype(np.float32))
    expected = chain(eager_arg).numpy()
    compiled = ember.compile(chain)
    for _ in range(2):
        arg = ember.tensor(x.astype(np.float32))
        np.testing.assert_allclose(compiled(arg).numpy(), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(arg.numpy(), eager_arg.numpy(), rtol=1e-6, atol=1e-6)  # written back


def test_compiled_inplace_gradients_match_eager():
    x = away_from(RNG.standard_normal((3, 4)), [0.0, -0.8, -1.5, 1.5]).astype(np.float32)

    def loss(t):  # (a write after elu_ or leaky_relu_ would make backward raise: they save their result)
        y = t * 1
        FM.threshold_(y, -0.8, -1.0)
        FM.hardtanh_(y[1:], -1.5, 1.5)
        z = FM.elu_(y * 1, 0.8)
        w = FM.leaky_relu_(z[1:] * 2, 0.2)
        return (z * z).sum() + (w * w).sum()
    grads, compiled = [], ember.compile(loss)
    for fn in (loss, compiled, compiled):
        t = ember.tensor(x, requires_grad=True)
        fn(t).backward()
        grads.append(t.grad.numpy())
    for got in grads[1:]:
        np.testing.assert_allclose(got, grads[0], rtol=1e-5, atol=1e-6)


def test_compiled_negative_slope_inplace_still_refuses_backward():
    def loss(t):
        y = t * 1
        FM.leaky_relu_(y, -0.1)
        return y.sum()
    compiled = ember.compile(loss)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="In-place leakyReLu backward calculation"):
            compiled(ember.tensor([-1.0, 2.0], requires_grad=True)).backward()


def test_compiled_random_ops_draw_afresh_with_the_right_structure():
    x = ember.tensor(-RNG.uniform(0.5, 2.0, (4, 6, 2)).astype(np.float32))
    rrelu = ember.compile(lambda t: FM.rrelu(t, 0.1, 0.3, training=True))
    first, second = rrelu(x).numpy(), rrelu(x).numpy()
    for out in (first, second):
        slopes = out / x.numpy()
        assert slopes.min() >= 0.1 - 1e-6 and slopes.max() <= 0.3 + 1e-6
    assert not np.array_equal(first, second)
    gumbel = ember.compile(lambda t: FM.gumbel_softmax(t, 0.5, dim=1) + FM.gumbel_softmax(t, hard=True, dim=1))
    a, b = gumbel(x).numpy(), gumbel(x).numpy()
    for out in (a, b):
        np.testing.assert_allclose(out.sum(1), 2.0, rtol=1e-5)
    assert not np.array_equal(a, b)
    dropout = ember.compile(lambda t: FM.feature_alpha_dropout(t, 0.5, True))
    scale, shift, dropped_value = alpha_dropout_levels(0.5)
    for out in (dropout(x).numpy(), dropout(x).numpy()):
        kept = np.isclose(out, scale * x.numpy() + shift, rtol=1e-5)
        assert np.all(kept | np.isclose(out, dropped_value, rtol=1e-5))
        assert np.all(kept == kept[..., :1])


@pytest.mark.parametrize("name", ["relu", "relu6", "silu", "mish", "hardsigmoid", "hardswish", "elu", "selu", "celu",
                                  "leaky_relu", "hardtanh"])
def test_functional_inplace_true_writes_the_input_and_differentiates_as_out_of_place(name):
    """torch differentiates F.silu(x, inplace=True) and friends from the value before the write."""
    import ember.nn.functional as F
    base = ember.tensor([-4.0, -1.5, -0.2, 0.0, 0.3, 2.0, 5.0], dtype=ember.float64)
    x = base.clone().requires_grad_()
    getattr(F, name)(x * 1).sum().backward()
    expected = x.grad.numpy().copy()
    x.grad = None
    y = x * 1
    out = getattr(F, name)(y, inplace=True)
    assert out is y
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)
