"""ember.nn losses: values against independent numpy references (class weights, ignore_index,
label smoothing, probability targets, clamped logs, pos_weight), gradients against float64
finite differences, and the errors a wrong target produces."""
import numpy as np
import pytest

import ember
from ember import nn
import ember.nn.functional as F
from finite_differences import check_vjp
from gradcheck import check_module


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def t64(array):
    return ember.tensor(np.asarray(array, dtype=np.float64))


def logsumexp(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def cross_entropy_reference(x, target, weight=None, ignore_index=-100, reduction="mean", smoothing=0.0):
    """Gather-based torch semantics: weighted mean over non-ignored targets, smoothing mixes in
    the (weighted) mean of -log p over classes."""
    classes = x.shape[1]
    flat = np.moveaxis(x, 1, -1).reshape(-1, classes)
    labels = target.reshape(-1)
    logp = flat - logsumexp(flat, 1)
    w = np.ones(classes) if weight is None else weight
    valid = labels != ignore_index
    safe = np.where(valid, labels, 0)
    nll = -logp[np.arange(len(labels)), safe] * w[safe] * valid
    smooth = -(logp * w).sum(1) * valid
    per_sample = (1 - smoothing) * nll + smoothing / classes * smooth
    if reduction == "none":
        return per_sample.reshape(target.shape)
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / (w[safe] * valid).sum()


# ============================================================================ cross entropy / nll values

def test_cross_entropy_known_value():
    assert abs(F.cross_entropy(ember.tensor([[1.0, 2.0, 3.0]]), ember.tensor([0])).item() - 2.4076059644) < 1e-6


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_weight,ignore_index,smoothing", [
    (False, -100, 0.0), (True, -100, 0.0), (True, 2, 0.0), (False, 1, 0.2), (True, 3, 0.1), (True, -100, 0.3)])
def test_cross_entropy_class_indices_match_reference(reduction, use_weight, ignore_index, smoothing):
    x = rand(6, 4)
    target = np.array([0, 2, 3, 1, 2, 3])
    weight = np.array([0.5, 2.0, 1.0, 0.25]) if use_weight else None
    got = F.cross_entropy(t64(x), ember.tensor(target), weight=None if weight is None else t64(weight),
                          ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    np.testing.assert_allclose(got.numpy(), cross_entropy_reference(x, target, weight, ignore_index, reduction,
                                                                     smoothing), rtol=1e-12, atol=1e-14)


def test_cross_entropy_spatial_targets_and_int32():
    x = rand(2, 3, 4, 5)
    target = np.random.default_rng(1).integers(0, 3, (2, 4, 5))
    target[0, 0, 0] = -100
    weight = np.array([1.0, 3.0, 0.5])
    got = F.cross_entropy(t64(x), ember.tensor(target.astype(np.int32)), weight=t64(weight), label_smoothing=0.1)
    np.testing.assert_allclose(got.item(), cross_entropy_reference(x, target, weight, smoothing=0.1), rtol=1e-12)
    none = nn.CrossEntropyLoss(reduction="none")(t64(x), ember.tensor(target))
    assert none.shape == (2, 4, 5) and none[0, 0, 0].item() == 0.0


def test_cross_entropy_unbatched_input():
    x = rand(5)
    got = F.cross_entropy(t64(x), ember.tensor(3))
    np.testing.assert_allclose(got.item(), -(x[3] - logsumexp(x, 0)[0]), rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_probability_targets(reduction):
    x = rand(4, 3)
    p = np.abs(rand(4, 3, seed=1))
    p /= p.sum(1, keepdims=True)
    weight = np.array([1.0, 0.5, 2.0])
    smoothed = p * 0.8 + 0.2 / 3
    per_sample = -((x - logsumexp(x, 1)) * smoothed * weight).sum(1)
    expected = {"none": per_sample, "sum": per_sample.sum(), "mean": per_sample.sum() / 4}[reduction]
    got = F.cross_entropy(t64(x), t64(p), weight=t64(weight), reduction=reduction, label_smoothing=0.2)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_cross_entropy_is_stable_for_large_logits():
    loss = F.cross_entropy(ember.tensor([[1000.0, 0.0], [0.0, -1000.0]]), ember.tensor([0, 1]))
    np.testing.assert_allclose(loss.item(), 500.0, rtol=1e-6)


def test_nll_loss_matches_reference():
    logp = rand(5, 4)
    logp = logp - logsumexp(logp, 1)
    target = np.array([1, 0, 3, 3, 2])
    weight = np.array([1.0, 2.0, 0.5, 1.5])
    got = nn.NLLLoss(weight=t64(weight), ignore_index=0)(t64(logp), ember.tensor(target))
    valid = target != 0
    picked = -logp[np.arange(5), target] * weight[target]
    np.testing.assert_allclose(got.item(), picked[valid].sum() / weight[target][valid].sum(), rtol=1e-12)
    assert F.nll_loss(t64(logp), ember.tensor(target), reduction="none").shape == (5,)


# ============================================================================ binary losses

def test_bce_matches_reference_and_clamps_log_at_minus_100():
    x = np.array([0.2, 0.9, 0.5, 0.0, 1.0])
    y = np.array([0.0, 1.0, 0.3, 1.0, 0.0])
    w = np.array([1.0, 2.0, 0.5, 1.0, 1.0])
    log_x = np.maximum(np.log(np.maximum(x, 1e-300)), -100)
    log_1mx = np.maximum(np.log(np.maximum(1 - x, 1e-300)), -100)
    ref = -(y * log_x + (1 - y) * log_1mx) * w
    got = nn.BCELoss(weight=t64(w), reduction="none")(t64(x), t64(y))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    assert got.numpy()[3] == 100.0
    inputs = ember.tensor(x, requires_grad=True)
    F.binary_cross_entropy(inputs, t64(y)).backward()
    assert np.isfinite(inputs.grad.numpy()).all()


def test_bce_with_logits_matches_reference_with_pos_weight():
    x = rand(4, 3) * 4
    y = (rand(4, 3, seed=1) > 0).astype(np.float64)
    pos_weight = np.array([1.0, 3.0, 0.5])
    weight = np.array([2.0, 1.0, 1.0])
    sigmoid = 1 / (1 + np.exp(-x))
    ref = -(pos_weight * y * np.log(sigmoid) + (1 - y) * np.log(1 - sigmoid)) * weight
    loss = nn.BCEWithLogitsLoss(weight=t64(weight), pos_weight=t64(pos_weight), reduction="sum")
    np.testing.assert_allclose(loss(t64(x), t64(y)).item(), ref.sum(), rtol=1e-12)
    big = F.binary_cross_entropy_with_logits(ember.tensor([200.0, -200.0]), ember.tensor([0.0, 1.0]),
                                             reduction="none")
    np.testing.assert_allclose(big.numpy(), [200.0, 200.0], rtol=1e-6)


# ============================================================================ regression losses

def test_regression_losses_match_numpy():
    x, y = rand(3, 4), rand(3, 4, seed=1)
    d = x - y
    np.testing.assert_allclose(nn.MSELoss()(t64(x), t64(y)).item(), (d ** 2).mean(), rtol=1e-12)
    np.testing.assert_allclose(nn.MSELoss(reduction="sum")(t64(x), t64(y)).item(), (d ** 2).sum(), rtol=1e-12)
    np.testing.assert_allclose(nn.L1Loss(reduction="none")(t64(x), t64(y)).numpy(), np.abs(d), rtol=1e-12)
    beta = 0.5
    smooth = np.where(np.abs(d) < beta, 0.5 * d ** 2 / beta, np.abs(d) - 0.5 * beta)
    np.testing.assert_allclose(nn.SmoothL1Loss(beta=beta)(t64(x), t64(y)).item(), smooth.mean(), rtol=1e-12)
    huber = np.where(np.abs(d) < 0.7, 0.5 * d ** 2, 0.7 * (np.abs(d) - 0.35))
    np.testing.assert_allclose(nn.HuberLoss(delta=0.7)(t64(x), t64(y)).item(), huber.mean(), rtol=1e-12)
    p = np.abs(y) / np.abs(y).sum(1, keepdims=True)
    logq = x - logsumexp(x, 1)
    np.testing.assert_allclose(nn.KLDivLoss(reduction="batchmean")(t64(logq), t64(p)).item(),
                               (p * (np.log(p) - logq)).sum() / 3, rtol=1e-12)


def test_legacy_size_average_and_reduce_arguments():
    x, y = rand(2, 3), rand(2, 3, seed=1)
    assert nn.MSELoss(size_average=False).reduction == "sum"
    assert nn.MSELoss(reduce=False).reduction == "none"
    np.testing.assert_allclose(F.mse_loss(t64(x), t64(y), size_average=False).item(), ((x - y) ** 2).sum())


# ============================================================================ gradients

LOSSES = [
    ("cross_entropy", lambda: nn.CrossEntropyLoss(), (5, 4), np.array([0, 3, 1, 1, 2])),
    ("cross_entropy_weighted_ignore_smooth",
     lambda: nn.CrossEntropyLoss(weight=ember.tensor([0.5, 2.0, 1.0, 1.5]), ignore_index=1, label_smoothing=0.1),
     (5, 4), np.array([0, 3, 1, 1, 2])),
    ("cross_entropy_spatial_sum", lambda: nn.CrossEntropyLoss(reduction="sum"), (2, 3, 2, 2),
     np.array([[[0, 1], [2, 2]], [[1, 0], [0, 2]]])),
    ("cross_entropy_none", lambda: nn.CrossEntropyLoss(reduction="none", label_smoothing=0.2), (3, 4),
     np.array([3, 0, 2])),
    ("nll", lambda: nn.NLLLoss(weight=ember.tensor([1.0, 2.0, 0.5])), (4, 3), np.array([2, 0, 1, 1])),
]


@pytest.mark.parametrize("name,make,shape,target", LOSSES, ids=[case[0] for case in LOSSES])
def test_class_index_loss_gradients(name, make, shape, target):
    check_module(make(), [rand(*shape)], extra=(ember.tensor(target),))


def _probabilities(shape, seed):
    p = np.abs(rand(*shape, seed=seed)) + 0.1
    return p / p.sum(1, keepdims=True)


def test_probability_target_gradients_for_input_and_target():
    check_vjp(lambda x, p: F.cross_entropy(x, p, label_smoothing=0.1), [rand(3, 4), _probabilities((3, 4), 1)])


PAIR_LOSSES = [
    ("mse", lambda: nn.MSELoss(), lambda s: rand(*s, seed=1)),
    ("l1", lambda: nn.L1Loss(reduction="sum"), lambda s: rand(*s, seed=1)),
    ("smooth_l1", lambda: nn.SmoothL1Loss(beta=0.8), lambda s: rand(*s, seed=1)),
    ("huber", lambda: nn.HuberLoss(delta=0.6), lambda s: rand(*s, seed=1)),
    ("bce", lambda: nn.BCELoss(weight=ember.tensor([1.0, 0.5, 2.0])), lambda s: np.abs(rand(*s, seed=1)) % 1),
    ("bce_with_logits", lambda: nn.BCEWithLogitsLoss(pos_weight=ember.tensor([2.0, 0.5, 1.0])),
     lambda s: (rand(*s, seed=1) > 0) * 1.0),
    ("kl_div", lambda: nn.KLDivLoss(reduction="batchmean"), lambda s: _probabilities(s, 1)),
]


@pytest.mark.parametrize("name,make,target", PAIR_LOSSES, ids=[case[0] for case in PAIR_LOSSES])
def test_pair_loss_gradients_for_input_and_target(name, make, target):
    shape = (4, 3)
    inputs = 1 / (1 + np.exp(-rand(*shape))) if name == "bce" else rand(*shape)
    check_module(make(), [inputs, target(shape)])


def test_soft_margin_loss_gradient_for_the_input_only():
    """PyTorch refuses a target that requires grad ("not differentiable with respect to argument 'target'")."""
    check_module(nn.SoftMarginLoss(), [rand(4, 3)], extra=(ember.tensor(np.sign(rand(4, 3, seed=1))),))


# ============================================================================ errors

def test_float_class_index_target_names_the_loss_shapes_and_dtypes():
    with pytest.raises(RuntimeError) as error:
        nn.CrossEntropyLoss()(ember.randn(4, 10), ember.tensor([1.0, 2.0, 3.0, 4.0]))
    message = str(error.value)
    for part in ("cross_entropy", "CrossEntropyLoss", "f32[4]", "f32[4,10]", "integer dtype"):
        assert part in message


def test_wrong_target_shape_and_out_of_range_classes():
    with pytest.raises(ValueError, match=r"expected target of shape \[4\].*i64\[5\]"):
        F.cross_entropy(ember.randn(4, 3), ember.tensor([0, 1, 2, 0, 1]))
    with pytest.raises(IndexError, match="Target 3 is out of bounds"):
        F.cross_entropy(ember.randn(2, 3), ember.tensor([0, 3]))
    with pytest.raises(RuntimeError, match=r"nll_loss: target b8\[2\] must hold class indices"):
        F.nll_loss(ember.randn(2, 3), ember.tensor([True, False]))
    with pytest.raises(RuntimeError, match="one value per class"):
        F.cross_entropy(ember.randn(2, 3), ember.tensor([0, 1]), weight=ember.ones(4))


def test_bce_errors_and_reduction_validation():
    with pytest.raises(ValueError, match="different to the input size"):
        nn.BCELoss()(ember.rand(4, 1), ember.rand(4))
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(ember.tensor([1.5]), ember.tensor([1.0]))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.mse_loss(ember.randn(2), ember.randn(2), reduction="avg")
    with pytest.warns(UserWarning, match="different to the input size"):
        F.mse_loss(ember.randn(3, 1), ember.randn(3))
