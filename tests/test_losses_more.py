"""The margin, embedding and likelihood losses (cosine_embedding ... triplet_margin_with_distance)
and the distances (cosine_similarity, pairwise_distance, pdist), functional and modules: values
against numpy float64 references written from PyTorch's documented formulas for every reduction,
gradients against float64 finite differences (and PyTorch's rules at kinks and clamps), eager
against ember.compile, reprs and PyTorch's errors."""
import math

import numpy as np
import pytest

import ember
from ember.frontend.nn import functional_loss_more as F
from ember.frontend.nn import loss_more as L
from ember.frontend.nn.linear import Linear
from finite_differences import check_vjp

REDUCTIONS = ("none", "mean", "sum")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def t64(array):
    return ember.tensor(np.asarray(array, dtype=np.float64))


def reduced(loss, reduction):
    return {"none": loss, "mean": np.mean(loss), "sum": np.sum(loss)}[reduction]


def close(got, expected, rtol=1e-12, atol=1e-14):
    got = got.detach().numpy()
    assert got.shape == np.shape(expected)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- references (PyTorch's docs)

def cosine_embedding_reference(x1, x2, y, margin):
    cos = (x1 * x2).sum(-1) / np.sqrt(((x1 * x1).sum(-1) + 1e-12) * ((x2 * x2).sum(-1) + 1e-12))
    return np.where(y == 1, 1 - cos, 0.0) + np.where(y == -1, np.maximum(0.0, cos - margin), 0.0)


def multi_margin_reference(x, y, p, margin, w):
    """sum over i != y of w[y] max(0, margin - x[y] + x[i])^p / C, one row at a time."""
    classes = x.shape[1]
    w = np.ones(classes) if w is None else w
    return np.array([sum(w[label] * max(0.0, margin - row[label] + row[i]) ** p for i in range(classes)
                         if i != label) / classes for row, label in zip(x, y)])


def multilabel_margin_reference(x, y):
    """sum over targets j (up to the first -1) and non-targets i of max(0, 1 - (x[y_j] - x[i])) / C."""
    losses = []
    for row, labels in zip(x, y):
        targets = []
        for label in labels:
            if label < 0:
                break
            targets.append(label)
        others = [i for i in range(len(row)) if i not in targets]
        losses.append(sum(max(0.0, 1 - (row[j] - row[i])) for j in targets for i in others) / len(row))
    return np.array(losses)


def norm_reference(v, p, axis=-1, keepdims=False):
    return np.linalg.norm(v, ord=p, axis=axis, keepdims=keepdims)


# ============================================================================ embedding losses

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("margin", [0.0, 0.4, -0.3])
def test_cosine_embedding_loss_matches_reference(reduction, margin):
    x1, x2 = rand(5, 4), rand(5, 4, seed=1)
    y = np.array([1.0, -1.0, 1.0, -1.0, 0.0])  # a 0 target contributes nothing, as in PyTorch
    got = F.cosine_embedding_loss(t64(x1), t64(x2), t64(y), margin=margin, reduction=reduction)
    close(got, reduced(cosine_embedding_reference(x1, x2, y, margin), reduction))
    module = L.CosineEmbeddingLoss(margin=margin, reduction=reduction)
    close(module(t64(x1), t64(x2), t64(y)), reduced(cosine_embedding_reference(x1, x2, y, margin), reduction))


def test_cosine_embedding_loss_unbatched_broadcast_and_gradients():
    x1, x2 = rand(4), rand(4, seed=1)
    got = F.cosine_embedding_loss(t64(x1), t64(x2), ember.tensor(-1), reduction="none")
    close(got, cosine_embedding_reference(x1, x2, -1, 0.0))
    x1, x2 = rand(3, 4), rand(1, 4, seed=1)
    y = ember.tensor([1, -1, -1])
    close(F.cosine_embedding_loss(t64(x1), t64(x2), y, reduction="none"),
          cosine_embedding_reference(x1, x2, np.array([1, -1, -1]), 0.0))
    check_vjp(lambda a, b: F.cosine_embedding_loss(a, b, y, margin=-0.5, reduction="none"), [x1, x2])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_hinge_embedding_loss_matches_reference(reduction):
    x = rand(4, 5) * 2
    y = np.where(rand(4, 5, seed=1) > 0, 1.0, -1.0)
    expected = np.where(y == 1, x, np.maximum(0.0, 0.7 - x))
    close(F.hinge_embedding_loss(t64(x), t64(y), margin=0.7, reduction=reduction), reduced(expected, reduction))
    close(L.HingeEmbeddingLoss(0.7, reduction=reduction)(t64(x), t64(y)), reduced(expected, reduction))
    check_vjp(lambda a: F.hinge_embedding_loss(a, t64(y), margin=0.7, reduction=reduction), [x])


def test_hinge_embedding_loss_broadcasts_target_and_passes_gradient_at_the_margin():
    x = rand(3, 4)
    y = np.array([1.0, -1.0, 0.0, -1.0])  # 0 is neither: PyTorch adds both branches
    expected = np.where(y != 1, np.maximum(0.0, 1 - x), 0.0) + np.where(y != -1, x, 0.0)
    close(F.hinge_embedding_loss(t64(x), t64(y), reduction="none"), expected)
    x = ember.tensor([0.5, 1.0, 2.0], requires_grad=True)  # margin - x = 0 at x = 1: clamp_min passes it
    F.hinge_embedding_loss(x, ember.tensor([-1.0, -1.0, -1.0]), reduction="sum").backward()
    np.testing.assert_array_equal(x.grad.numpy(), [-1.0, -1.0, 0.0])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_ranking_loss_matches_reference_and_gradients(reduction):
    x1, x2 = rand(6), rand(6, seed=1)
    y = np.array([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
    expected = np.maximum(0.0, -y * (x1 - x2) + 0.25)
    close(F.margin_ranking_loss(t64(x1), t64(x2), t64(y), margin=0.25, reduction=reduction),
          reduced(expected, reduction))
    close(L.MarginRankingLoss(0.25, reduction=reduction)(t64(x1), t64(x2), t64(y)), reduced(expected, reduction))
    check_vjp(lambda a, b, t: F.margin_ranking_loss(a, b, t, margin=0.25, reduction=reduction), [x1, x2, y])


# ============================================================================ multi-class margins

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p,margin,weighted", [(1, 1.0, False), (2, 1.0, False), (1, 0.3, True), (2, 0.6, True)])
def test_multi_margin_loss_matches_reference(reduction, p, margin, weighted):
    x, y = rand(5, 4), np.array([0, 3, 1, 1, 2])
    w = np.array([0.5, 2.0, 1.0, 1.5]) if weighted else None
    expected = reduced(multi_margin_reference(x, y, p, margin, w), reduction)
    weight = None if w is None else t64(w)
    close(F.multi_margin_loss(t64(x), ember.tensor(y), p=p, margin=margin, weight=weight, reduction=reduction),
          expected)
    module = L.MultiMarginLoss(p=p, margin=margin, weight=weight, reduction=reduction)
    close(module(t64(x), ember.tensor(y)), expected)
    check_vjp(lambda a: F.multi_margin_loss(a, ember.tensor(y), p=p, margin=margin, weight=weight,
                                            reduction=reduction), [x])


def test_multi_margin_loss_unbatched_shapes_and_strict_kink():
    x = rand(4)
    for target, shape in ((ember.tensor(2), ()), (ember.tensor([2]), (1,))):
        got = F.multi_margin_loss(t64(x), target, reduction="none")
        close(got, multi_margin_reference(x[None], [2], 1, 1.0, None).reshape(shape))
    close(F.multi_margin_loss(t64(0.7), ember.tensor(0), reduction="none"), 0.0)  # one class: nothing to compare
    x = ember.tensor([[0.0, 1.0, 0.0]], requires_grad=True)  # margin - x[y] + x[i] = 0: no gradient (z > 0)
    F.multi_margin_loss(x, ember.tensor([1]), reduction="sum").backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 0.0, 0.0]])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_margin_loss_matches_reference(reduction):
    x = rand(4, 5)
    y = np.array([[3, 0, -1, 1, 1], [4, 4, 2, -1, -1], [-1, 0, 0, 0, 0], [0, 1, 2, 3, 4]])  # duplicates count twice
    expected = reduced(multilabel_margin_reference(x, y), reduction)
    close(F.multilabel_margin_loss(t64(x), ember.tensor(y), reduction=reduction), expected)
    close(L.MultiLabelMarginLoss(reduction=reduction)(t64(x), ember.tensor(y)), expected)
    check_vjp(lambda a: F.multilabel_margin_loss(a, ember.tensor(y), reduction=reduction), [x])


def test_multilabel_margin_loss_unbatched_and_strict_kink():
    x, y = rand(5), np.array([4, 4, 2, -1, 0])
    close(F.multilabel_margin_loss(t64(x), ember.tensor(y), reduction="none"),
          multilabel_margin_reference(x[None], y[None])[0])
    x = ember.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    F.multilabel_margin_loss(x, ember.tensor([[1, -1, 0]]), reduction="sum").backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 0.0, 0.0]])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_multilabel_soft_margin_loss_matches_reference(reduction):
    x, y, w = rand(4, 5) * 10, (rand(4, 5, seed=1) > 0).astype(np.float64), np.abs(rand(5, seed=2)) + 0.5
    log_sigmoid = -np.logaddexp(0.0, -x)
    log_sigmoid_neg = -np.logaddexp(0.0, x)
    per_class = -(y * log_sigmoid + (1 - y) * log_sigmoid_neg) * w
    expected = reduced(per_class.mean(-1), reduction)
    close(F.multilabel_soft_margin_loss(t64(x), t64(y), weight=t64(w), reduction=reduction), expected)
    close(L.MultiLabelSoftMarginLoss(weight=t64(w), reduction=reduction)(t64(x), t64(y)), expected)
    check_vjp(lambda a, t, v: F.multilabel_soft_margin_loss(a, t, weight=v, reduction=reduction), [x / 5, y, w])


# ============================================================================ likelihoods

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("log_input,full", [(True, False), (True, True), (False, False), (False, True)])
def test_poisson_nll_loss_matches_reference(reduction, log_input, full):
    x = rand(3, 4) if log_input else np.abs(rand(3, 4)) + 0.1
    y = np.random.default_rng(1).poisson(2.0, (3, 4)).astype(np.float64)
    y[0, :3] = [0.0, 1.0, 1.5]
    loss = np.exp(x) - y * x if log_input else x - y * np.log(x + 1e-8)
    if full:
        safe = np.where(y > 1, y, 2.0)
        loss = loss + np.where(y > 1, safe * np.log(safe) - safe + 0.5 * np.log(2 * np.pi * safe), 0.0)
    close(F.poisson_nll_loss(t64(x), t64(y), log_input=log_input, full=full, reduction=reduction),
          reduced(loss, reduction))
    module = L.PoissonNLLLoss(log_input=log_input, full=full, reduction=reduction)
    close(module(t64(x), t64(y)), reduced(loss, reduction))
    check_vjp(lambda a: F.poisson_nll_loss(a, t64(y), log_input=log_input, full=full, reduction=reduction), [x])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("var_shape", ["same", "one_dim_short", "last_is_1", "first_is_1", "float"])
def test_gaussian_nll_loss_matches_reference(reduction, full, var_shape):
    x, y = rand(3, 4), rand(3, 4, seed=1)
    full_var = np.random.default_rng(2).uniform(0.1, 2.0, (3, 4))
    full_var[0, 0], full_var[1, 1] = 1e-9, 0.0  # clamped to eps
    var = {"same": full_var, "one_dim_short": full_var[:, 0], "last_is_1": full_var[:, :1],
           "first_is_1": full_var[:1], "float": 0.7}[var_shape]
    broadcast = np.asarray(var)[:, None] if var_shape == "one_dim_short" else np.asarray(var)
    clamped = np.maximum(broadcast, 1e-6)
    loss = 0.5 * (np.log(clamped) + (x - y) ** 2 / clamped) + (0.5 * math.log(2 * math.pi) if full else 0.0)
    var_arg = var if var_shape == "float" else t64(var)
    close(F.gaussian_nll_loss(t64(x), t64(y), var_arg, full=full, reduction=reduction), reduced(loss, reduction),
          rtol=1e-12, atol=1e-9)
    close(L.GaussianNLLLoss(full=full, reduction=reduction)(t64(x), t64(y), var_arg), reduced(loss, reduction),
          rtol=1e-12, atol=1e-9)


def test_gaussian_nll_loss_gradients_and_the_clamp_passes_the_gradient():
    x, y, var = rand(3, 4), rand(3, 4, seed=1), np.random.default_rng(2).uniform(0.5, 2.0, (3, 1))
    check_vjp(lambda a, b, v: F.gaussian_nll_loss(a, b, v, reduction="none"), [x, y, var])
    # PyTorch clamps a clone in place under no_grad: value max(var, eps), gradient as if unclamped
    var = ember.tensor([1e-8, 0.5], dtype=ember.float64, requires_grad=True)
    F.gaussian_nll_loss(t64([0.0, 0.0]), t64([1.0, 1.0]), var, reduction="sum").backward()
    np.testing.assert_allclose(var.grad.numpy(), [0.5 * (1 / 1e-6 - 1 / 1e-12), 0.5 * (2.0 - 4.0)], rtol=1e-12)


# ============================================================================ distances

@pytest.mark.parametrize("p", [2, 1, 3, 1.5, 0.5, 0, -1, math.inf, -math.inf])
def test_pairwise_distance_matches_reference_and_gradients(p):
    x1, x2 = rand(4, 5), rand(4, 5, seed=1)
    for keepdim in (False, True):
        close(F.pairwise_distance(t64(x1), t64(x2), p=p, keepdim=keepdim),
              norm_reference(x1 - x2 + 1e-6, p, keepdims=keepdim), rtol=1e-11)
    close(L.PairwiseDistance(p, eps=0.1)(t64(x1), t64(x2)), norm_reference(x1 - x2 + 0.1, p), rtol=1e-11)
    if p != 0:
        check_vjp(lambda a, b: F.pairwise_distance(a, b, p=p), [x1, x2], rtol=1e-5, atol=1e-6)


def test_pairwise_distance_gradient_rules_at_zero_and_ties():
    # PyTorch's norm backward: 0 where the norm is 0; a zero element takes no gradient for p < 1;
    # the inf-norm splits the gradient among ties
    same = ember.tensor([[0.0, 0.5]], dtype=ember.float64, requires_grad=True)
    F.pairwise_distance(same, t64([[0.0, 0.5]]), eps=0.0).sum().backward()
    np.testing.assert_array_equal(same.grad.numpy(), [[0.0, 0.0]])
    for p, expected in ((0.5, [[0.0, -1.0]]), (-1, [[0.0, 0.0]]), (0, [[0.0, 0.0]])):
        x = ember.tensor([[0.0, 0.5]], dtype=ember.float64, requires_grad=True)
        F.pairwise_distance(x, t64([[0.0, 1.5]]), p=p, eps=0.0).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), expected)
    x = ember.tensor([[0.0, 0.0]], dtype=ember.float64, requires_grad=True)
    F.pairwise_distance(x, t64([[1.0, -1.0]]), p=math.inf, eps=0.0).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[-0.5, 0.5]])


def test_pairwise_distance_broadcasts_and_takes_the_last_dim():
    x1, x2 = rand(5), rand(3, 5, seed=1)
    close(F.pairwise_distance(t64(x1), t64(x2), keepdim=True), norm_reference(x1 - x2 + 1e-6, 2, keepdims=True))
    close(F.pairwise_distance(t64(1.5), t64(-0.5)), 2.0 + 1e-6)
    assert F.pairwise_distance(ember.tensor([1, 2]), ember.tensor([0, 0])).dtype is ember.float32


@pytest.mark.parametrize("dim,eps", [(1, 1e-8), (0, 1e-8), (-1, 0.5)])
def test_cosine_similarity_matches_reference_and_gradients(dim, eps):
    x1, x2 = rand(4, 5), rand(4, 5, seed=1) * 0.1
    n1 = np.maximum(np.linalg.norm(x1, axis=dim), eps)
    n2 = np.maximum(np.linalg.norm(x2, axis=dim), eps)
    expected = (x1 * x2).sum(dim) / (n1 * n2)
    close(F.cosine_similarity(t64(x1), t64(x2), dim=dim, eps=eps), expected, rtol=1e-11)
    close(L.CosineSimilarity(dim, eps)(t64(x1), t64(x2)), expected, rtol=1e-11)
    if eps < 0.01:
        check_vjp(lambda a, b: F.cosine_similarity(a, b, dim=dim, eps=eps), [x1, x2])
        return
    # the norms of x2 are below eps: PyTorch clamps them under no_grad, so the gradient of the
    # clamped norm is that of the norm itself (not the derivative of the function computed)
    a, b = t64(x1).requires_grad_(), t64(x2).requires_grad_()
    F.cosine_similarity(a, b, dim=dim, eps=eps).sum().backward()
    r1, r2 = np.linalg.norm(x1, axis=dim, keepdims=True), np.linalg.norm(x2, axis=dim, keepdims=True)
    c1, c2 = np.maximum(r1, eps), np.maximum(r2, eps)
    dot = (x1 * x2).sum(dim, keepdims=True)
    np.testing.assert_allclose(a.grad.numpy(), x2 / (c1 * c2) - x1 / r1 * dot / (c1 * c1 * c2), rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), x1 / (c1 * c2) - x2 / r2 * dot / (c1 * c2 * c2), rtol=1e-12)


def test_cosine_similarity_broadcasts_promotes_and_clamps_like_pytorch():
    x1, x2 = rand(1, 5), rand(3, 5, seed=1)
    expected = (x1 * x2).sum(-1) / (np.linalg.norm(x1, axis=-1) * np.linalg.norm(x2, axis=-1))
    close(F.cosine_similarity(t64(x1), t64(x2), dim=-1), expected, rtol=1e-11)
    mixed = F.cosine_similarity(ember.tensor([1, 2, 3]), ember.tensor([1.0, 0.0, 1.0]), dim=0)
    assert mixed.dtype is ember.float32 and abs(mixed.item() - 4 / (math.sqrt(14) * math.sqrt(2))) < 1e-6
    # a zero vector: its norm is clamped to eps, and the clamp passes the gradient (b / |b| / eps)
    a = ember.tensor([[0.0, 0.0]], dtype=ember.float64, requires_grad=True)
    b = ember.tensor([[1.0, 3.0]], dtype=ember.float64, requires_grad=True)
    F.cosine_similarity(a, b).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [[1 / math.sqrt(10) / 1e-8, 3 / math.sqrt(10) / 1e-8]], rtol=1e-12)
    np.testing.assert_array_equal(b.grad.numpy(), [[0.0, 0.0]])


@pytest.mark.parametrize("p", [2, 1, 3, 1.5, 0.5, 0, math.inf])
def test_pdist_matches_reference_and_gradients(p):
    x = rand(5, 3)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    expected = np.array([norm_reference(x[i] - x[j], p) for i, j in pairs])
    close(F.pdist(t64(x), p), expected, rtol=1e-11)
    if p != 0:
        check_vjp(lambda a: F.pdist(a, p), [x], rtol=1e-5, atol=1e-6)


def test_pdist_gradient_rules_and_sizes():
    x = ember.tensor([[0.0, 0.0], [1.0, -1.0], [1.0, -1.0]], dtype=ember.float64, requires_grad=True)
    F.pdist(x, math.inf).sum().backward()  # every tie takes the whole gradient (PyTorch's pdist backward)
    np.testing.assert_array_equal(x.grad.numpy(), [[-2.0, 2.0], [1.0, -1.0], [1.0, -1.0]])
    x = ember.tensor([[0.0, 0.5], [0.0, 0.5]], dtype=ember.float64, requires_grad=True)
    F.pdist(x).sum().backward()  # a zero distance has zero gradient
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 2)))
    assert F.pdist(ember.ones(1, 3)).shape == (0,) and F.pdist(ember.ones(0, 3)).shape == (0,)
    close(F.pdist(t64(np.ones((3, 0)))), np.zeros(3))


# ============================================================================ triplet losses

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("p,swap", [(2, False), (2, True), (1, True), (3, False), (math.inf, True)])
def test_triplet_margin_loss_matches_reference(reduction, p, swap):
    a, pos, neg = rand(5, 4), rand(5, 4, seed=1), rand(5, 4, seed=2)
    near = norm_reference(a - pos + 1e-6, p)
    far = norm_reference(a - neg + 1e-6, p)
    if swap:
        far = np.minimum(far, norm_reference(pos - neg + 1e-6, p))
    expected = reduced(np.maximum(0.0, 0.8 + near - far), reduction)
    close(F.triplet_margin_loss(t64(a), t64(pos), t64(neg), margin=0.8, p=p, swap=swap, reduction=reduction),
          expected, rtol=1e-11)
    module = L.TripletMarginLoss(margin=0.8, p=p, swap=swap, reduction=reduction)
    close(module(t64(a), t64(pos), t64(neg)), expected, rtol=1e-11)
    check_vjp(lambda u, v, w: F.triplet_margin_loss(u, v, w, margin=0.8, p=p, swap=swap, reduction=reduction),
              [a, pos, neg], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("swap", [False, True])
def test_triplet_margin_with_distance_loss(reduction, swap):
    a, pos, neg = rand(5, 4), rand(5, 4, seed=1), rand(5, 4, seed=2)

    def cosine_distance(u, v):
        return 1 - F.cosine_similarity(u, v)

    def cosine_reference(u, v):
        return 1 - (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    for function, reference, margin in ((None, lambda u, v: norm_reference(u - v + 1e-6, 2), 1.0),
                                        (cosine_distance, cosine_reference, 1.5)):
        far = reference(a, neg)
        if swap:
            far = np.minimum(far, reference(pos, neg))
        expected = reduced(np.maximum(0.0, margin + reference(a, pos) - far), reduction)
        got = F.triplet_margin_with_distance_loss(t64(a), t64(pos), t64(neg), distance_function=function,
                                                  margin=margin, swap=swap, reduction=reduction)
        close(got, expected, rtol=1e-11)
        module = L.TripletMarginWithDistanceLoss(distance_function=function, margin=margin, swap=swap,
                                                 reduction=reduction)
        close(module(t64(a), t64(pos), t64(neg)), expected, rtol=1e-11)
        check_vjp(lambda u, v, w: F.triplet_margin_with_distance_loss(u, v, w, distance_function=function,
                                                                      margin=margin, swap=swap,
                                                                      reduction=reduction), [a, pos, neg])


# ============================================================================ modules

def test_modules_store_pytorch_options_reprs_and_legacy_reductions():
    assert repr(L.CosineEmbeddingLoss(margin=0.5)) == "CosineEmbeddingLoss()"
    assert repr(L.TripletMarginWithDistanceLoss()) == ("TripletMarginWithDistanceLoss(\n"
                                                       "  (distance_function): PairwiseDistance()\n)")
    custom = L.TripletMarginWithDistanceLoss(distance_function=F.pairwise_distance, margin=2.0, swap=True)
    assert repr(custom) == "TripletMarginWithDistanceLoss()" and custom.distance_function is F.pairwise_distance
    distance = L.PairwiseDistance(p=3.0, eps=0.1, keepdim=True)
    assert (distance.norm, distance.eps, distance.keepdim) == (3.0, 0.1, True)
    assert repr(distance) == "PairwiseDistance()"
    similarity = L.CosineSimilarity(dim=0, eps=1e-3)
    assert (similarity.dim, similarity.eps) == (0, 1e-3)
    weighted = L.MultiMarginLoss(p=2, margin=0.5, weight=ember.ones(3))
    assert list(weighted.state_dict()) == ["weight"] and (weighted.p, weighted.margin) == (2, 0.5)
    assert list(dict(L.MultiLabelSoftMarginLoss(weight=ember.ones(3)).named_buffers())) == ["weight"]
    poisson = L.PoissonNLLLoss(log_input=False, full=True, eps=1e-4)
    assert (poisson.log_input, poisson.full, poisson.eps, poisson.reduction) == (False, True, 1e-4, "mean")
    gaussian = L.GaussianNLLLoss(full=True, eps=1e-3, reduction="sum")
    assert (gaussian.full, gaussian.eps, gaussian.reduction) == (True, 1e-3, "sum")
    triplet = L.TripletMarginLoss(margin=0.5, p=1.0, eps=0.0, swap=True)
    assert (triplet.margin, triplet.p, triplet.eps, triplet.swap) == (0.5, 1.0, 0.0, True)
    assert L.MarginRankingLoss(size_average=False).reduction == "sum"
    assert L.HingeEmbeddingLoss(reduce=False).reduction == "none"
    assert L.MultiLabelMarginLoss(size_average=True, reduce=True).reduction == "mean"
    x1, x2, y = rand(3), rand(3, seed=1), np.array([1.0, -1.0, 1.0])
    close(F.margin_ranking_loss(t64(x1), t64(x2), t64(y), size_average=False),
          np.maximum(0.0, -y * (x1 - x2)).sum())
    with pytest.raises(TypeError):
        L.GaussianNLLLoss(True)  # keyword-only, as in PyTorch


@pytest.mark.parametrize("make,message", [
    (lambda: L.MultiMarginLoss(p=3), "only p == 1 and p == 2 supported"),
    (lambda: L.MultiMarginLoss(weight=ember.ones(2, 2)), "expected weight to be None or 1D tensor, got 2D instead"),
    (lambda: L.TripletMarginLoss(margin=0), "TripletMarginLoss: expected margin to be greater than 0, got 0"),
    (lambda: L.TripletMarginWithDistanceLoss(margin=-1),
     "TripletMarginWithDistanceLoss: expected margin to be greater than 0, got -1 instead"),
])
def test_module_construction_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ============================================================================ errors

X, Y = ember.randn(3, 4), ember.randn(3, 4)
LONG = ember.tensor([0, 1, 2])


@pytest.mark.parametrize("call,error,message", [
    (lambda: F.cosine_embedding_loss(X, Y, ember.ones(3, 1)), RuntimeError,
     "0D or 1D target tensor expected, multi-target not supported"),
    (lambda: F.cosine_embedding_loss(X[0], Y[0], ember.ones(2)), RuntimeError,
     r"1D target tensor expects 2D input tensors, but found inputs with sizes \[4\] and \[4\]"),
    (lambda: F.cosine_embedding_loss(X, Y, ember.tensor(1.0)), RuntimeError,
     "0D target tensor expects 1D input tensors"),
    (lambda: F.cosine_embedding_loss(X, Y, ember.ones(3), reduction="bad"), ValueError,
     "is not a valid value for reduction"),
    (lambda: F.margin_ranking_loss(ember.randn(3), ember.randn(3, 1), ember.ones(3)), RuntimeError,
     r"All input tensors should have same dimension but got sizes: input1: \[3\], input2: \[3, 1\]"),
    (lambda: F.multi_margin_loss(X, LONG, p=3), ValueError, "only p == 1 and p == 2 supported"),
    (lambda: F.multi_margin_loss(X, LONG, weight=ember.ones(2, 2)), ValueError, "weight must be one-dimensional"),
    (lambda: F.multi_margin_loss(ember.randn(2, 3, 4), ember.tensor([0, 1])), RuntimeError,
     r"Expected non-empty vector or matrix with optional 0-dim batch size, but got: \[2, 3, 4\]"),
    (lambda: F.multi_margin_loss(ember.randn(3, 0), LONG), RuntimeError, "Expected non-empty vector or matrix"),
    (lambda: F.multi_margin_loss(X, ember.tensor([0, 1])), RuntimeError,
     r"Expected target size \[3\], but got \[2\]"),
    (lambda: F.multi_margin_loss(X, ember.tensor([[0], [1], [2]])), RuntimeError,
     "target tensor should be 1-D with size equal to the number of input samples"),
    (lambda: F.multi_margin_loss(X, ember.tensor([0.0, 1.0, 2.0])), RuntimeError,
     "expected scalar type Long but found Float"),
    (lambda: F.multi_margin_loss(X, ember.tensor([0, 1, 2], dtype=ember.int32)), RuntimeError,
     "expected scalar type Long but found Int"),
    (lambda: F.multi_margin_loss(X, ember.tensor([0, 1, 4])), RuntimeError, "target out of range"),
    (lambda: F.multi_margin_loss(X, ember.tensor([0, 1, -1])), RuntimeError, "target out of range"),
    (lambda: F.multi_margin_loss(X, LONG, weight=ember.ones(3)), RuntimeError,
     r"inconsistent weight size, expected 4 but got \[3\]"),
    (lambda: F.multi_margin_loss(X, LONG, weight=ember.ones(4, dtype=ember.float64)), RuntimeError,
     "expected scalar type Float but found Double"),
    (lambda: F.multi_margin_loss(X, LONG, weight=ember.ones(4, requires_grad=True)), RuntimeError,
     "is not differentiable with respect to argument 'weight'"),
    (lambda: F.multilabel_margin_loss(X, ember.tensor([[0, 1, -1]] * 3)), RuntimeError,
     r"inconsistent target size: \[3, 3\] for input of size: \[3, 4\]"),
    (lambda: F.multilabel_margin_loss(X, ember.tensor([0, 1, -1, 2])), RuntimeError, "inconsistent target size"),
    (lambda: F.multilabel_margin_loss(X, ember.tensor([[0, 4, -1, 2]] * 3)), RuntimeError,
     "argument #2 'target' is out of range"),
    (lambda: F.multilabel_margin_loss(X, ember.tensor([[0, -2, 1, 2]] * 3)), RuntimeError,
     "argument #2 'target' is out of range"),
    (lambda: F.multilabel_margin_loss(X, ember.tensor([[0, -1, 7, 2]] * 3)), RuntimeError,
     "argument #2 'target' is out of range"),
    (lambda: F.multilabel_margin_loss(X, ember.zeros(3, 4)), RuntimeError,
     "expected scalar type Long but found Float"),
    (lambda: F.multilabel_soft_margin_loss(X, Y, reduction="bad"), ValueError, "bad is not valid"),
    (lambda: F.poisson_nll_loss(X, Y, reduction="bad"), ValueError, "is not a valid value for reduction"),
    (lambda: F.gaussian_nll_loss(X, Y, -ember.ones(3, 4)), ValueError, "var has negative entry/entries"),
    (lambda: F.gaussian_nll_loss(X, Y, -0.5), ValueError, "var has negative entry/entries"),
    (lambda: F.gaussian_nll_loss(X, Y, ember.ones(2, 4)), ValueError, "var is of incorrect size"),
    (lambda: F.gaussian_nll_loss(X, Y, ember.ones(4)), ValueError, "var is of incorrect size"),
    (lambda: F.gaussian_nll_loss(X, Y, 1), TypeError, "var must be a Tensor or a float"),
    (lambda: F.gaussian_nll_loss(X, Y, ember.ones(3, 4), reduction="bad"), ValueError, "bad is not valid"),
    (lambda: F.triplet_margin_loss(X, Y, Y, margin=0), ValueError, "margin must be greater than 0, got 0"),
    (lambda: F.triplet_margin_loss(X, ember.randn(4), Y), RuntimeError,
     "expected to have the same number of dimensions, but got: anchor 2D, positive 1D, and negative 2D inputs"),
    (lambda: F.triplet_margin_with_distance_loss(X, Y, Y, margin=-1.0), ValueError,
     "margin must be greater than 0, got -1.0"),
    (lambda: F.triplet_margin_with_distance_loss(X, Y, ember.randn(4)), RuntimeError,
     "anchor 2D, positive 2D, and negative 1D inputs"),
    (lambda: F.cosine_similarity(ember.tensor([1, 2]), ember.tensor([3, 4]), dim=0), RuntimeError,
     "expected common dtype to be floating point, yet common dtype is Long"),
    (lambda: F.pdist(ember.randn(2, 3, 4)), RuntimeError, "pdist only supports 2D tensors, got: 3D"),
    (lambda: F.pdist(ember.randn(4)), RuntimeError, "pdist only supports 2D tensors, got: 1D"),
    (lambda: F.pdist(ember.tensor([[1, 2], [3, 4]])), RuntimeError, "pdist only supports floating-point dtypes"),
    (lambda: F.pdist(X, p=-1), RuntimeError, "pdist only supports non-negative p values"),
])
def test_errors_as_pytorch(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_multi_margin_weight_may_require_grad_under_no_grad():
    with ember.no_grad():
        F.multi_margin_loss(X, LONG, weight=ember.ones(4, requires_grad=True))


# ============================================================================ eager against ember.compile

def compiled_matches(fn, *tensors):
    expected = fn(*tensors).detach().numpy()
    compiled = ember.compile(fn)
    for _ in range(2):
        np.testing.assert_allclose(compiled(*tensors).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def f32(*shape, seed=0):
    return ember.from_numpy(rand(*shape, seed=seed).astype(np.float32))


def test_losses_and_distances_compile_to_eager_results():
    x, y, z = f32(5, 4), f32(5, 4, seed=1), f32(5, 4, seed=2)
    var = ember.from_numpy(np.abs(y.numpy()) + 0.01)
    compiled_matches(lambda a: F.multi_margin_loss(a, ember.tensor([0, 3, 1, 1, 2]), p=2,
                                                   weight=ember.tensor([1.0, 2.0, 3.0, 4.0])), x)
    compiled_matches(lambda a: F.multilabel_margin_loss(a, ember.tensor([[3, 0, -1, 1]] * 5), reduction="none"), x)
    compiled_matches(lambda a, b, v: F.gaussian_nll_loss(a, b, v, full=True), x, y, var)
    compiled_matches(lambda a, b, c: F.triplet_margin_loss(a, b, c, swap=True, p=3), x, y, z)
    compiled_matches(lambda a: F.pdist(a, math.inf), x)
    compiled_matches(lambda a, b: F.cosine_embedding_loss(a, b, ember.tensor([1.0, -1.0, 1.0, -1.0, 0.0]),
                                                          margin=0.1), x, y)


def test_training_step_with_embedding_losses_compiles_to_eager_results():
    ember.manual_seed(0)
    model = Linear(4, 3)
    anchor, positive, negative = f32(6, 4), f32(6, 4, seed=1), f32(6, 4, seed=2)
    labels = ember.tensor([1.0, -1.0, 1.0, 1.0, -1.0, -1.0])
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1)
    triplet, cosine = L.TripletMarginLoss(margin=0.5, swap=True), L.CosineEmbeddingLoss(margin=0.2)

    def step(a, p, n):
        optimizer.zero_grad()
        ea, ep, en = model(a), model(p), model(n)
        loss = triplet(ea, ep, en) + cosine(ea, en, labels) + F.cosine_similarity(ea, ep).mean() \
            + F.gaussian_nll_loss(ea, ep, en * en)
        loss.backward()
        optimizer.step()
        return loss
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eager_losses = [step(anchor, positive, negative).item() for _ in range(3)]
    model.load_state_dict(state)
    compiled_step = ember.compile(step)
    compiled_losses = [compiled_step(anchor, positive, negative).item() for _ in range(3)]
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-4)
