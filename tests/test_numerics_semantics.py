"""PyTorch's numerics at the edges, value AND gradient: targets that are all ignore_index,
pow at base 0, activation slopes exactly at their thresholds and at nan, BCE at probabilities
0 and 1, infinite distances in the robust losses, and the dtype rules of products and layers
(no silent promotion; errors name both dtypes). Expected values come from numpy in float64
and from PyTorch's documented derivative conventions (derivatives.yaml), written out here.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ember
from ember import nn
import ember.nn.functional as F

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INF, NAN = math.inf, math.nan


def value_and_grad(fn, x, dtype=ember.float64):
    """fn(x) and d sum(fn(x)) / dx for a numpy array x."""
    t = ember.tensor(np.asarray(x), dtype=dtype, requires_grad=True)
    out = fn(t)
    (out.sum() if out.ndim else out).backward()
    return out.detach().numpy(), t.grad.numpy()


def assert_same(actual, expected, rtol=1e-9, atol=0.0):
    """Equal within tolerance, nan where expected is nan, infinities of the same sign."""
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               rtol=rtol, atol=atol, equal_nan=True)


# ----------------------------------------------------------------------------- ignore_index

def log_softmax(x):
    shifted = x - x.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def cross_entropy_reference(x, target, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0):
    """PyTorch's cross entropy of class-index targets and its gradient, in float64 numpy:
    per sample (1 - s) w[t] (-log p_t) + s / C sum_c w[c] (-log p_c), ignored samples 0;
    'mean' divides by the total weight of the kept samples (nan when there is none, with a
    zero gradient: PyTorch's backward never touches an ignored row)."""
    classes = x.shape[1]
    logp = log_softmax(x)
    p = np.exp(logp)
    w = np.ones(classes) if weight is None else np.asarray(weight, np.float64)
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    onehot = np.eye(classes)[safe]
    nll = -(logp * onehot).sum(1) * w[safe]
    smooth = -(logp * w).sum(1)
    per_sample = np.where(valid, (1 - smoothing) * nll + smoothing / classes * smooth, 0.0)
    slope = (1 - smoothing) * w[safe][:, None] * (p - onehot) + smoothing / classes * (w.sum() * p - w)
    grad = np.where(valid[:, None], slope, 0.0)
    if reduction == "none":
        return per_sample, grad
    if reduction == "sum":
        return per_sample.sum(), grad
    total = (w[safe] * valid).sum()
    if total == 0:
        return np.nan, np.zeros_like(x)
    return per_sample.sum() / total, grad / total


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_of_a_fully_padded_batch_has_zero_gradient(reduction, label_smoothing, weighted):
    logits = ember.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    weight = ember.tensor([1.0, 2.0, 0.5, 3.0], dtype=ember.float64) if weighted else None
    loss = F.cross_entropy(logits, ember.tensor([-100, -100, -100]), weight=weight, reduction=reduction,
                           label_smoothing=label_smoothing)
    (loss.sum() if reduction == "none" else loss).backward()
    expected = {"mean": np.nan, "sum": 0.0, "none": np.zeros(3)}[reduction]
    assert_same(loss.detach().numpy(), expected)  # 'mean' is 0 / 0 = nan, as in PyTorch
    assert np.array_equal(logits.grad.numpy(), np.zeros((3, 4)))  # but no nan reaches the weights


def test_ignored_loss_entries_are_positive_zero():
    loss = F.cross_entropy(ember.randn(3, 4), ember.tensor([1, -100, 2]), reduction="none")
    assert loss[1].item() == 0.0 and math.copysign(1.0, loss[1].item()) == 1.0


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_loss_ignoring_a_real_class_index_has_zero_gradient(reduction):
    logp = ember.tensor(log_softmax(np.random.default_rng(1).standard_normal((3, 4))), requires_grad=True)
    loss = F.nll_loss(logp, ember.tensor([1, 1, 1]), ignore_index=1, reduction=reduction)
    loss.backward()
    assert_same(loss.item(), np.nan if reduction == "mean" else 0.0)
    assert np.array_equal(logp.grad.numpy(), np.zeros((3, 4)))


def test_spatial_cross_entropy_with_every_pixel_ignored_has_zero_gradient():
    logits = ember.randn(2, 3, 4, 5, requires_grad=True)
    padding = ember.full((2, 4, 5), 255, dtype=ember.int64)
    loss = nn.CrossEntropyLoss(ignore_index=255, label_smoothing=0.1)(logits, padding)
    loss.backward()
    assert math.isnan(loss.item())
    assert np.array_equal(logits.grad.numpy(), np.zeros((2, 3, 4, 5)))


@pytest.mark.parametrize("compiled", [False, True])
def test_a_fully_padded_batch_gives_zero_gradients_and_keeps_the_weights_finite(compiled):
    # the reported bug: one batch of padding only turned every weight into nan
    ember.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss(ignore_index=0)

    def step(x, y):
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    step = ember.compile(step) if compiled else step
    x = ember.randn(5, 4)
    step(x, ember.tensor([1, 2, 0, 1, 2]))
    before = model.weight.detach().numpy().copy()
    loss = step(x, ember.zeros(5, dtype=ember.int64))
    assert math.isnan(loss.item())
    assert np.array_equal(model.weight.grad.numpy(), np.zeros((3, 4)))
    # momentum still moves the weights, by the previous step's velocity only: all finite
    assert np.isfinite(model.weight.detach().numpy()).all()
    assert not np.array_equal(model.weight.detach().numpy(), before)


@FAST
@given(data=st.data(), n=st.integers(1, 5), classes=st.integers(2, 5),
       reduction=st.sampled_from(["mean", "sum", "none"]), smoothing=st.sampled_from([0.0, 0.1, 0.35]),
       weighted=st.booleans(), ignore_index=st.sampled_from([-100, 0, 1]))
def test_cross_entropy_with_random_ignored_targets_matches_float64_reference(data, n, classes, reduction, smoothing,
                                                                             weighted, ignore_index):
    size = n * classes
    logits = np.array(data.draw(st.lists(st.floats(-8, 8), min_size=size, max_size=size))).reshape(n, classes)
    ignored = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    if data.draw(st.booleans()):
        ignored[:] = True  # padding-only batches are the case that used to give nan gradients
    target = np.array(data.draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n)))
    target = np.where(ignored | (target == ignore_index), ignore_index, target)
    weight = None
    if weighted:
        weight = np.array(data.draw(st.lists(st.floats(0.25, 3.0), min_size=classes, max_size=classes)))
    x = ember.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, ember.tensor(target), weight=None if weight is None else ember.tensor(weight),
                           ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    (loss.sum() if reduction == "none" else loss).backward()
    expected_loss, expected_grad = cross_entropy_reference(logits, target, weight, ignore_index, reduction, smoothing)
    assert_same(loss.detach().numpy(), expected_loss, rtol=1e-9, atol=1e-12)
    assert_same(x.grad.numpy(), expected_grad, rtol=1e-7, atol=1e-12)
    assert np.isfinite(x.grad.numpy()).all()


# ----------------------------------------------------------------------------- pow

def test_gradient_of_x_pow_0_is_zero_even_at_zero_and_nan():
    x = np.array([0.0, -0.0, 2.0, -3.0, NAN, INF])
    value, grad = value_and_grad(lambda t: t ** 0, x)
    assert_same(value, np.ones(6))
    assert np.array_equal(grad, np.zeros(6))
    _, grad = value_and_grad(lambda t: ember.pow(t, ember.zeros(6, dtype=ember.float64)), x)
    assert np.array_equal(grad, np.zeros(6))


# (base, exponent, a ** b, d/da = b a^(b-1) (0 where b == 0), d/db = a^b log a (0 where a == 0 <= b))
POW_EDGES = [
    (0.0, 0.0, 1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0, 1.0, 0.0),
    (0.0, 2.0, 0.0, 0.0, 0.0),
    (0.0, 0.5, 0.0, INF, 0.0),
    (0.0, -1.0, INF, -INF, -INF),
    (-2.0, 2.0, 4.0, -4.0, NAN),  # a negative base has no real log: the exponent's slope is nan
    (-2.0, 3.0, -8.0, 12.0, NAN),
    (2.0, 3.0, 8.0, 12.0, 8.0 * math.log(2.0)),
    (1.0, 5.0, 1.0, 5.0, 0.0),
    (NAN, 0.0, 1.0, 0.0, NAN),
]


@pytest.mark.parametrize("base, exponent, value, d_base, d_exponent", POW_EDGES)
def test_pow_with_a_tensor_exponent_at_edge_points(base, exponent, value, d_base, d_exponent):
    a = ember.tensor([base], dtype=ember.float64, requires_grad=True)
    b = ember.tensor([exponent], dtype=ember.float64, requires_grad=True)
    out = a ** b
    out.sum().backward()
    assert_same(out.detach().numpy(), [value])
    assert_same(a.grad.numpy(), [d_base])
    assert_same(b.grad.numpy(), [d_exponent])


def test_pow_of_a_scalar_base_differentiates_the_exponent():
    x = np.array([-1.0, 0.0, 2.0])
    value, grad = value_and_grad(lambda t: 0 ** t, x)
    assert_same(value, [INF, 1.0, 0.0])
    assert_same(grad, [-INF, 0.0, 0.0])  # 0 ** x: the slope is 0 where x >= 0, inf * log 0 below
    value, grad = value_and_grad(lambda t: 2.0 ** t, x)
    assert_same(grad, 2.0 ** x * math.log(2.0))
    _, grad = value_and_grad(lambda t: (-2.0) ** t, x)
    assert np.isnan(grad).all()


def test_negative_half_power_is_rsqrt_as_in_pytorch():
    value, _ = value_and_grad(lambda t: t ** -0.5, np.array([-0.0, 4.0, -INF]))
    assert_same(value, [-INF, 0.5, NAN])


@FAST
@given(st.lists(st.floats(-4, 4), min_size=1, max_size=8), st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.0, -1.0]),
                                                                 min_size=1, max_size=8))
def test_pow_gradients_match_the_hand_derived_rules(bases, exponents):
    size = min(len(bases), len(exponents))
    a_np = np.array(bases[:size])
    a_np[::3] = 0.0  # base 0 is the edge that used to give nan
    b_np = np.array(exponents[:size])
    a = ember.tensor(a_np, requires_grad=True)
    b = ember.tensor(b_np, requires_grad=True)
    (a ** b).sum().backward()
    with np.errstate(all="ignore"):
        d_a = np.where(b_np == 0, 0.0, b_np * a_np ** (b_np - 1))
        d_b = np.where((a_np == 0) & (b_np >= 0), 0.0, a_np ** b_np * np.log(a_np))
    assert_same(a.grad.numpy(), d_a, rtol=1e-12)
    assert_same(b.grad.numpy(), d_b, rtol=1e-12)


# ----------------------------------------------------------------------------- activations at thresholds

def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# name: (ember function, numpy value, numpy slope with PyTorch's conventions, boundary points)
# nan follows from the comparisons: `nan <= t` is False, so nan takes the branch PyTorch's
# backward kernel takes for it.
ACTIVATIONS = {
    "relu": (F.relu, lambda x: np.where(x > 0, x, np.where(np.isnan(x), x, 0.0)),
             lambda x: np.where(x <= 0, 0.0, 1.0), [0.0, -0.0]),
    "relu6": (F.relu6, lambda x: np.where(np.isnan(x), x, np.clip(x, 0, 6)),
              lambda x: np.where((x <= 0) | (x >= 6), 0.0, 1.0), [0.0, 6.0]),
    "hardtanh": (lambda t: F.hardtanh(t, -2.0, 3.0), lambda x: np.where(np.isnan(x), x, np.clip(x, -2, 3)),
                 lambda x: np.where((x <= -2) | (x >= 3), 0.0, 1.0), [-2.0, 3.0]),
    "clamp": (lambda t: t.clamp(-2.0, 3.0), lambda x: np.clip(x, -2, 3),
              lambda x: np.where((x >= -2) & (x <= 3), 1.0, 0.0), [-2.0, 3.0]),
    "clamp_min": (lambda t: ember.clamp_min(t, 0.5), lambda x: np.where(np.isnan(x), x, np.maximum(x, 0.5)),
                  lambda x: np.where(x >= 0.5, 1.0, 0.0), [0.5]),
    "leaky_relu": (lambda t: F.leaky_relu(t, 0.1), lambda x: np.where(x > 0, x, 0.1 * x),
                   lambda x: np.where(x > 0, 1.0, 0.1), [0.0]),
    "elu": (lambda t: F.elu(t, 2.0), lambda x: np.where(x <= 0, 2.0 * np.expm1(np.minimum(x, 0)), x),
            lambda x: np.where(x <= 0, 2.0 * np.exp(np.minimum(x, 0)), 1.0), [0.0]),
    "threshold": (lambda t: F.threshold(t, 1.0, -5.0), lambda x: np.where(x <= 1, -5.0, x),
                  lambda x: np.where(x <= 1, 0.0, 1.0), [1.0]),
    "hardsigmoid": (F.hardsigmoid, lambda x: np.where(np.isnan(x), x, np.clip(x + 3, 0, 6)) / 6,
                    lambda x: np.where((x > -3) & (x < 3), 1 / 6, 0.0), [-3.0, 3.0]),
    "hardswish": (F.hardswish, lambda x: x * np.where(np.isnan(x), x, np.clip(x + 3, 0, 6)) / 6,
                  lambda x: np.where(x <= -3, 0.0, np.where(x < 3, (2 * x + 3) / 6, 1.0)), [-3.0, 3.0]),
    "softplus": (lambda t: F.softplus(t, 1.0, 5.0), lambda x: np.where(x > 5, x, np.log1p(np.exp(np.minimum(x, 5)))),
                 lambda x: np.where(x > 5, 1.0, _sigmoid(x)), [5.0]),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_value_and_slope_exactly_at_its_thresholds_and_at_nan(name):
    fn, value, slope, boundaries = ACTIVATIONS[name]
    x = np.array(boundaries + [b + 0.25 for b in boundaries] + [b - 0.25 for b in boundaries] + [NAN])
    got_value, got_slope = value_and_grad(fn, x)
    with np.errstate(all="ignore"):
        assert_same(got_value, value(x), rtol=1e-12)
        assert_same(got_slope, slope(x), rtol=1e-12)


@FAST
@given(st.sampled_from(sorted(ACTIVATIONS)), st.lists(st.floats(-8, 8), min_size=1, max_size=10), st.data())
def test_activations_at_random_points_mixed_with_their_thresholds(name, points, data):
    fn, value, slope, boundaries = ACTIVATIONS[name]
    extra = data.draw(st.lists(st.sampled_from(boundaries + [NAN]), max_size=6))
    x = np.array(points + extra)
    got_value, got_slope = value_and_grad(fn, x)
    with np.errstate(all="ignore"):
        assert_same(got_value, value(x), rtol=1e-12, atol=1e-15)
        assert_same(got_slope, slope(x), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [ember.float32, ember.float64])
def test_relu6_and_hardtanh_block_the_gradient_at_the_bounds_but_clamp_passes_it(dtype):
    x = np.array([0.0, 6.0, 3.0])
    _, relu6_grad = value_and_grad(F.relu6, x, dtype)
    _, clamp_grad = value_and_grad(lambda t: t.clamp(0.0, 6.0), x, dtype)
    assert relu6_grad.tolist() == [0.0, 0.0, 1.0]
    assert clamp_grad.tolist() == [1.0, 1.0, 1.0]
    _, grad = value_and_grad(F.hardtanh, np.array([-1.0, 1.0, 0.0]), dtype)
    assert grad.tolist() == [0.0, 0.0, 1.0]
    _, grad = value_and_grad(F.relu, np.array([0.0, 1.0]), dtype)
    assert grad.tolist() == [0.0, 1.0]
    _, grad = value_and_grad(F.leaky_relu, np.array([0.0]), dtype)
    assert_same(grad, [0.01], rtol=1e-7)


def test_hardtanh_with_min_above_max_is_refused():
    with pytest.raises(ValueError, match="min_val cannot be greater than max_val"):
        F.hardtanh(ember.ones(2), 2.0, 1.0)


def test_activations_stay_finite_in_the_discarded_branch_at_infinity():
    x = np.array([INF, -INF])
    _, grad = value_and_grad(F.hardswish, x)
    assert grad.tolist() == [1.0, 0.0]
    _, grad = value_and_grad(F.elu, x)
    assert grad.tolist() == [1.0, 0.0]
    _, grad = value_and_grad(F.softplus, x)
    assert grad.tolist() == [1.0, 0.0]


# ----------------------------------------------------------------------------- elementwise edges

def test_maximum_and_minimum_split_ties_and_give_nan_to_both_operands():
    a = ember.tensor([1.0, 2.0, 3.0, NAN], requires_grad=True)
    b = ember.tensor([2.0, 2.0, 1.0, 0.0], requires_grad=True)
    ember.maximum(a, b).sum().backward()
    assert a.grad.tolist() == [0.0, 0.5, 1.0, 1.0] and b.grad.tolist() == [1.0, 0.5, 0.0, 1.0]
    a.grad = b.grad = None
    ember.minimum(a, b).sum().backward()
    assert a.grad.tolist() == [1.0, 0.5, 0.0, 1.0] and b.grad.tolist() == [0.0, 0.5, 1.0, 1.0]


def test_max_of_a_tensor_holding_nan_sends_the_gradient_to_the_nan():
    x = ember.tensor([1.0, NAN, 3.0, 3.0], requires_grad=True)
    out = x.max()
    out.backward()
    assert math.isnan(out.item())
    assert x.grad.tolist() == [0.0, 1.0, 0.0, 0.0]
    y = ember.tensor([1.0, 3.0, 3.0], requires_grad=True)
    y.max().backward()
    assert y.grad.tolist() == [0.0, 0.5, 0.5]  # ties share


def test_clamp_of_nan_is_nan_with_zero_gradient():
    value, grad = value_and_grad(lambda t: t.clamp(-1.0, 1.0), np.array([NAN, 0.0]))
    assert math.isnan(value[0]) and grad.tolist() == [0.0, 1.0]


def test_lerp_from_an_infinite_start_is_infinite():
    value, grad = value_and_grad(lambda t: ember.lerp(t, ember.ones(3, dtype=ember.float64), 0.75),
                                 np.array([INF, -INF, 2.0]))
    assert_same(value, [INF, -INF, 1.25])
    assert_same(grad, [0.25, 0.25, 0.25])
    exact_end, _ = value_and_grad(lambda t: ember.lerp(t, ember.full((1,), 0.1, dtype=ember.float64), 1.0),
                                  np.array([0.3]))
    assert exact_end.tolist() == [0.1]  # weight 1 gives the end exactly


def test_sinh_and_cosh_slopes_stay_finite_where_exp_underflows_and_sinh_is_exact_near_zero():
    x = np.array([-800.0, -INF, 1e-10, -3.0])
    with np.errstate(over="ignore"):
        sinh, cosh = np.sinh(x), np.cosh(x)
    value, grad = value_and_grad(ember.sinh, x)
    assert_same(value, sinh)
    assert_same(grad, cosh, rtol=1e-12)
    value, grad = value_and_grad(ember.cosh, x)
    assert_same(value, cosh)
    assert_same(grad, sinh, rtol=1e-12, atol=1e-16)  # (e^x - e^-x) / 2 near 0: absolute accuracy
    small, _ = value_and_grad(ember.sinh, np.array([1e-4, -3e-6]), ember.float32)
    assert_same(small, np.sinh(np.array([1e-4, -3e-6], np.float32)), rtol=1e-6)


# ----------------------------------------------------------------------------- losses at extremes

PROBABILITIES = np.array([0.0, 1.0, 0.5, 1e-12, 1e-30, 0.25, 1 - 1e-9])


@pytest.mark.parametrize("t", [0.0, 1.0, 0.3])
def test_binary_cross_entropy_at_probabilities_0_and_1_clamps_logs_and_slopes(t):
    x = PROBABILITIES
    value, grad = value_and_grad(lambda p: F.binary_cross_entropy(p, ember.full(p.shape, t, dtype=ember.float64),
                                                                  reduction="none"), x)
    with np.errstate(all="ignore"):
        expected = -(t * np.maximum(np.log(x), -100) + (1 - t) * np.maximum(np.log1p(-x), -100))
    assert_same(value, expected, rtol=1e-12)
    assert_same(grad, (x - t) / np.maximum(x * (1 - x), 1e-12), rtol=1e-12)  # finite at 0 and 1


def test_compiled_binary_cross_entropy_has_the_same_clamped_slope():
    x = ember.tensor([0.0, 1.0, 0.5, 0.25], requires_grad=True)
    loss = ember.compile(lambda p, t: F.binary_cross_entropy(p, t, reduction="sum"))
    loss(x, ember.tensor([1.0, 0.0, 0.0, 0.3])).backward()
    np.testing.assert_allclose(x.grad.numpy(), [-1e12, 1e12, 2.0, -0.05 / 0.1875], rtol=1e-6)


def test_binary_cross_entropy_weight_and_mean_scale_the_clamped_slope():
    x = np.array([0.0, 1.0, 0.5, 0.25])
    weight = np.array([2.0, 0.5, 1.0, 3.0])
    value, grad = value_and_grad(lambda p: F.binary_cross_entropy(p, ember.zeros(4, dtype=ember.float64),
                                                                  ember.tensor(weight)), x)
    with np.errstate(divide="ignore"):
        assert_same(value, np.mean(weight * -np.maximum(np.log1p(-x), -100)), rtol=1e-12)
    assert_same(grad, weight * x / np.maximum(x * (1 - x), 1e-12) / 4, rtol=1e-12)


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_binary_cross_entropy_with_logits_is_finite_at_extreme_logits(t, pos_weight):
    x = np.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4])
    pw = 1.0 if pos_weight is None else pos_weight
    weight = None if pos_weight is None else ember.tensor(pos_weight)
    value, grad = value_and_grad(
        lambda z: F.binary_cross_entropy_with_logits(z, ember.full(z.shape, t, dtype=ember.float64), reduction="none",
                                                     pos_weight=weight), x)
    log_weight = 1 + (pw - 1) * t
    softplus_of_negative = np.logaddexp(0, -x)
    assert_same(value, (1 - t) * x + log_weight * softplus_of_negative, rtol=1e-12)
    with np.errstate(over="ignore"):
        expected = (pw * t + 1 - t) * _sigmoid(x) - pw * t
    assert_same(grad, expected, rtol=1e-12, atol=1e-15)  # the reference cancels near 1: absolute


@pytest.mark.parametrize("loss, slope", [
    (lambda d: F.smooth_l1_loss(d, ember.zeros_like(d), reduction="none"), 1.0),
    (lambda d: F.smooth_l1_loss(d, ember.zeros_like(d), reduction="none", beta=0.5), 1.0),
    (lambda d: F.huber_loss(d, ember.zeros_like(d), reduction="none", delta=2.0), 2.0),
])
def test_robust_losses_have_their_linear_slope_at_infinite_distances(loss, slope):
    value, grad = value_and_grad(loss, np.array([INF, -INF, 0.0]))
    assert_same(value, [INF, INF, 0.0])
    assert_same(grad, [slope, -slope, 0.0])


def test_kl_div_with_a_negative_target_is_nan_as_xlogy():
    value, grad = value_and_grad(lambda x: F.kl_div(x, ember.tensor([-0.5, 0.0, 0.5], dtype=ember.float64),
                                                    reduction="none"), np.array([-1.0, -1.0, -1.0]))
    assert math.isnan(value[0]) and value[1] == 0.0
    assert_same(value[2], 0.5 * (math.log(0.5) + 1.0))
    assert_same(grad, [0.5, 0.0, -0.5])


# ----------------------------------------------------------------------------- dtype rules

def test_matmul_of_float32_and_float64_raises_naming_both_dtypes():
    a, b = ember.ones(2, 3), ember.ones(3, 2, dtype=ember.float64)
    for product in (lambda: a @ b, lambda: ember.matmul(a, b), lambda: ember.mm(a, b),
                    lambda: ember.bmm(a.unsqueeze(0), b.unsqueeze(0))):
        with pytest.raises(RuntimeError, match=r"expected m1 and m2 to have the same dtype, but got: float != double"
                                               r".*f32\[.*f64\["):
            product()
    with pytest.raises(RuntimeError, match="double != float"):
        b @ a
    with pytest.raises(RuntimeError, match=r"einsum.*Float.*Double"):
        ember.einsum("ij,jk->ik", a, b)
    with pytest.raises(RuntimeError, match=r"float != double.*f32\[3\].*f64\[3\]"):
        ember.dot(ember.ones(3), ember.ones(3, dtype=ember.float64))


def test_products_of_one_dtype_still_work_and_bools_are_refused():
    ints = ember.tensor([[1, 2], [3, 4]])
    assert (ints @ ints).tolist() == [[7, 10], [15, 22]] and (ints @ ints).dtype is ember.int64
    with pytest.raises(NotImplementedError, match="Bool"):
        ember.ones(2, 2, dtype=ember.bool) @ ember.ones(2, 2, dtype=ember.bool)


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.fc1 = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc1(x) if x.ndim == 2 else self.conv1(x)


def test_linear_on_int64_input_raises_naming_long_float_and_the_layer():
    with pytest.raises(RuntimeError, match=r"linear \(fc1\): mat1 and mat2 must have the same dtype, but got Long "
                                           r"and Float.*i64\[4,2\].*f32\[3,2\]"):
        TwoLayers()(ember.ones(4, 2, dtype=ember.int64))


def test_a_float64_model_on_float32_input_raises_naming_both_dtypes():
    model = TwoLayers().double()
    with pytest.raises(RuntimeError, match=r"linear \(fc1\):.*got Float and Double"):
        model(ember.ones(4, 2))
    with pytest.raises(RuntimeError, match=r"conv2d \(conv1\): Input type \(float\) and weight type \(double\) should "
                                           r"be the same.*f32\[1,1,5,5\].*f64\[2,1,3,3\]"):
        model(ember.ones(1, 1, 5, 5))
    assert model(ember.ones(4, 2, dtype=ember.float64)).dtype is ember.float64


def test_conv1d_and_a_mismatched_bias_name_their_dtypes():
    with pytest.raises(RuntimeError, match=r"conv1d \(.*\): Input type \(long int\) and weight type \(float\)"):
        nn.Conv1d(1, 2, 3)(ember.ones(1, 1, 5, dtype=ember.int64))
    with pytest.raises(RuntimeError, match=r"conv2d: Input type \(double\) and bias type \(float\).*f32\[2\]"):
        F.conv2d(ember.ones(1, 1, 5, 5, dtype=ember.float64), ember.ones(2, 1, 3, 3, dtype=ember.float64),
                 ember.ones(2))
    with pytest.raises(RuntimeError, match=r"linear: self and mat2 must have the same dtype, but got Double and Float"):
        F.linear(ember.ones(2, 3), ember.ones(4, 3), ember.ones(4, dtype=ember.float64))


def test_losses_and_norms_refuse_parameters_of_another_dtype():
    x64, y = ember.ones(3, 4, dtype=ember.float64), ember.tensor([0, 1, 2])
    with pytest.raises(RuntimeError, match=r"cross_entropy: expected scalar type Double but found Float.*f32\[4\]"):
        F.cross_entropy(x64, y, weight=ember.ones(4))
    with pytest.raises(RuntimeError, match=r"nll_loss: expected scalar type Double but found Float"):
        F.nll_loss(x64, y, weight=ember.ones(4))
    with pytest.raises(RuntimeError, match=r"binary_cross_entropy: Found dtype Double but expected Float"):
        F.binary_cross_entropy(ember.full((3,), 0.5), ember.full((3,), 0.5, dtype=ember.float64))
    with pytest.raises(RuntimeError, match=r"layer_norm: mixed dtype.*input f64\[3,4\], weight f32\[4\]"):
        F.layer_norm(x64, (4,), ember.ones(4))
    with pytest.raises(RuntimeError, match=r"batch_norm: mixed dtype.*running_mean f32\[4\]"):
        F.batch_norm(x64, ember.zeros(4), ember.ones(4))
    with pytest.raises(RuntimeError, match=r"prelu: Type promoting not supported. Got Double and Float"):
        F.prelu(x64, ember.ones(1))
    with pytest.raises(RuntimeError, match=r"lerp: expected dtype float32 for `end` but got dtype float64"):
        ember.lerp(ember.ones(2), ember.ones(2, dtype=ember.float64), 0.5)


def test_probability_targets_of_another_float_dtype_promote_as_in_pytorch():
    logits = np.random.default_rng(2).standard_normal((3, 4))
    probs = np.full((3, 4), 0.25)
    loss = F.cross_entropy(ember.tensor(logits, dtype=ember.float32), ember.tensor(probs))
    assert loss.dtype is ember.float64
    assert_same(loss.item(), -(log_softmax(logits) * probs).sum() / 3, rtol=1e-6)


DTYPE_NAMES = {ember.float32: ("f32", "float"), ember.float64: ("f64", "double"), ember.int32: ("i32", "int"),
               ember.int64: ("i64", "long int")}


@FAST
@given(st.sampled_from(list(DTYPE_NAMES)), st.sampled_from(list(DTYPE_NAMES)),
       st.sampled_from(["matmul", "linear", "conv2d"]))
def test_products_raise_exactly_when_the_dtypes_differ(input_dtype, weight_dtype, op):
    if op == "matmul":
        run = lambda: ember.ones(2, 3, dtype=input_dtype) @ ember.ones(3, 2, dtype=weight_dtype)  # noqa: E731
    elif op == "linear":
        run = lambda: F.linear(ember.ones(2, 3, dtype=input_dtype), ember.ones(4, 3, dtype=weight_dtype))  # noqa: E731
    else:
        run = lambda: F.conv2d(ember.ones(1, 1, 4, 4, dtype=input_dtype),  # noqa: E731
                               ember.ones(2, 1, 3, 3, dtype=weight_dtype))
    if input_dtype is weight_dtype:
        assert run().dtype is input_dtype
        return
    with pytest.raises(RuntimeError) as error:
        run()
    message = str(error.value)
    assert op in message
    for dtype in (input_dtype, weight_dtype):
        assert f"{DTYPE_NAMES[dtype][0]}[" in message  # ember's short form, with the shape
    if op != "linear":
        assert f"({DTYPE_NAMES[input_dtype][1]})" in message or f": {DTYPE_NAMES[input_dtype][1]} !=" in message


@pytest.mark.parametrize("dtype", [ember.int64, ember.int32, ember.int16, ember.int8, ember.uint8])
def test_invert_of_integer_tensors_is_the_twos_complement(dtype):
    info = np.iinfo(dtype.np)
    values = np.array([0, 1, 5, info.min, info.max, info.max - 1], dtype=dtype.np)
    out = ~ember.tensor(values)
    assert out.dtype is dtype
    assert out.tolist() == np.invert(values).tolist()


def test_invert_of_bools_is_logical_not_and_floats_are_refused():
    assert (~ember.tensor([True, False])).tolist() == [False, True]
    with pytest.raises(TypeError, match=r"bitwise_not.*integer and Boolean.*f32\[2\]"):
        ~ember.ones(2)


@FAST
@given(st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), min_size=1, max_size=8))
def test_invert_of_random_int64_values_matches_numpy(values):
    array = np.array(values, dtype=np.int64)
    assert (~ember.tensor(array)).tolist() == np.invert(array).tolist()


def test_compiled_invert_of_int64_matches_eager():
    x = ember.tensor([0, 7, -8, 2 ** 62])
    assert ember.compile(lambda t: ~t)(x).tolist() == (~x).tolist() == [-1, -8, 7, -(2 ** 62) - 1]


# ----------------------------------------------------------------------------- embedding padding_idx

def _embedding_with_padding():
    ember.manual_seed(0)
    return nn.Embedding(5, 3, padding_idx=2)


INDICES = [[0, 2, 1], [2, 2, 3]]
# each row's gradient of emb(idx).sum(): how often it is looked up, the padding row none
EXPECTED_ROW_GRAD = np.array([1, 1, 0, 1, 0], np.float32)[:, None] * np.ones((1, 3), np.float32)


def test_eager_embedding_gives_the_padding_row_no_gradient():
    emb = _embedding_with_padding()
    emb(ember.tensor(INDICES)).sum().backward()
    assert np.array_equal(emb.weight.grad.numpy(), EXPECTED_ROW_GRAD)


def test_a_compiled_training_step_gives_the_padding_row_no_gradient():
    emb = _embedding_with_padding()
    optimizer = ember.optim.SGD(emb.parameters(), lr=1.0)

    @ember.compile
    def step(idx):
        optimizer.zero_grad()
        loss = emb(idx).sum()
        loss.backward()
        optimizer.step()
        return loss

    before = emb.weight.detach().numpy().copy()
    step(ember.tensor(INDICES))
    assert np.array_equal(emb.weight.grad.numpy(), EXPECTED_ROW_GRAD)
    after = emb.weight.detach().numpy()
    assert np.array_equal(after[2], before[2]) and np.array_equal(after[2], np.zeros(3))
    np.testing.assert_allclose(after, before - EXPECTED_ROW_GRAD)


def test_a_compiled_embedding_module_in_eager_training_gives_the_padding_row_no_gradient():
    emb = _embedding_with_padding()
    ember.compile(emb)(ember.tensor(INDICES)).sum().backward()
    assert np.array_equal(emb.weight.grad.numpy(), EXPECTED_ROW_GRAD)


def test_compiled_functional_embedding_with_padding_idx_matches_eager():
    weight = ember.randn(5, 3, requires_grad=True)
    lookup = ember.compile(lambda idx, w: (F.embedding(idx, w, padding_idx=-3) * 2.0).sum())
    lookup(ember.tensor(INDICES), weight).backward()
    assert np.array_equal(weight.grad.numpy(), 2.0 * EXPECTED_ROW_GRAD)


@pytest.mark.parametrize("compiled", [False, True])
def test_scale_grad_by_freq_with_padding_gives_each_used_row_its_own_slope(compiled):
    ember.manual_seed(0)
    emb = nn.Embedding(5, 3, padding_idx=1, scale_grad_by_freq=True)

    def step(idx):
        loss = (emb(idx) * 3.0).sum()
        loss.backward()
        return loss

    (ember.compile(step) if compiled else step)(ember.tensor(INDICES))
    # row r is looked up k times, each gradient divided by k: 3 per used row, 0 for padding
    assert np.array_equal(emb.weight.grad.numpy()[:, 0], np.array([3.0, 0.0, 3.0, 3.0, 0.0], np.float32))


@pytest.mark.parametrize("compiled", [False, True])
def test_integers_to_negative_powers_are_zero_but_for_one_and_minus_one(compiled):
    # as PyTorch (numpy refuses them): 1 ** -n = 1, (-1) ** -n = +-1 by parity, anything else 0
    base = ember.tensor([2, 1, -1, 0, -2, 3, -1])
    exponent = ember.tensor([-1, -3, -3, 2, -2, 0, -4])
    power = ember.compile(lambda a, b: a ** b) if compiled else (lambda a, b: a ** b)
    assert power(base, exponent).tolist() == [0, 1, -1, 0, 0, 1, 1]
    with pytest.raises(RuntimeError, match="Integers to negative integer powers are not allowed"):
        base ** -1  # a Python number exponent: torch refuses


def test_unique_keeps_each_nan_apart_as_pytorch():
    values, inverse, counts = ember.unique(ember.tensor([1.0, float("nan"), 2.0, float("nan")]),
                                           return_inverse=True, return_counts=True)
    assert values.numpy()[:2].tolist() == [1.0, 2.0] and np.isnan(values.numpy()[2:]).all() and len(values) == 4
    assert counts.tolist() == [1, 1, 1, 1] and inverse.tolist()[0] == 0 and inverse.tolist()[2] == 1


def test_a_zero_remainder_keeps_the_dividends_sign_eager_and_compiled():
    """PyTorch's x % y: fmod moved to y's sign where it is not zero, so 0 % -1.5 is +0.0 and
    -0.0 % 2.0 is -0.0 (numpy's remainder gives the divisor's sign), as the lowering computes."""
    x, y = ember.tensor([0.0, -0.0, 3.0, -3.0, 4.5]), ember.tensor([-1.5, 2.0, -1.5, 1.5, 2.0])
    expected = np.array([0.0, -0.0, 0.0, -0.0, 0.5], dtype=np.float32)  # (torch 2.13 gives these)
    for got in (ember.remainder(x, y), ember.compile(lambda a, b: a % b)(x, y), 0 % ember.tensor([-1.5])):
        values = got.numpy()
        np.testing.assert_array_equal(values, expected[:values.size] if values.size > 1 else [0.0])
        assert np.array_equal(np.signbit(values), np.signbit(expected[:values.size] if values.size > 1 else [0.0]))


def test_adding_a_float_zero_turns_minus_zero_into_plus_zero_compiled_too():
    # x * 0 is -0.0 for x < 0; + 0.0 makes it +0.0, so 1 / that is +inf (the simplify pass
    # dropped the + 0.0 once: -inf)
    def f(x):
        return 1 / (x * 0 + ember.tensor(0.0)), 1 / (x * 0 - ember.tensor(-0.0))
    x = ember.tensor([1.0, -1.0])
    compiled = ember.compile(f)
    for _ in range(3):
        for got, want in zip(compiled(x), f(x)):
            assert got.tolist() == want.tolist() == [float("inf"), float("inf")]


def test_a_constant_times_zero_keeps_its_sign_compiled_too():
    def f(x):
        return x + 1 / (ember.tensor([-5.0, 2.0, -0.0]) * 0), 1 / (ember.full((2,), -0.0) * 5)
    x = ember.zeros(3)
    compiled = ember.compile(f)
    for _ in range(3):
        for got, want in zip(compiled(x), f(x)):
            assert got.tolist() == want.tolist()
    assert f(x)[1].tolist() == [float("-inf")] * 2
