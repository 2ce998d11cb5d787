"""F.scaled_dot_product_attention and RMSNorm against numpy references written from PyTorch's
documentation (the reference implementation in torch's docstring), their gradients against
float64 finite differences, and eager against compiled."""
import math

import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember import nn


def reference_attention(q, k, v, mask=None, is_causal=False, scale=None, gqa=False):
    if gqa:
        k = np.repeat(k, q.shape[-3] // k.shape[-3], axis=-3)
        v = np.repeat(v, q.shape[-3] // v.shape[-3], axis=-3)
    length, source = q.shape[-2], k.shape[-2]
    bias = np.zeros((length, source))
    if is_causal:
        bias[~np.tril(np.ones((length, source), bool))] = -np.inf
    if mask is not None:
        bias = np.where(mask, bias, -np.inf) if mask.dtype == bool else bias + mask
    weights = q @ np.swapaxes(k, -2, -1) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale) + bias
    weights = np.exp(weights - weights.max(-1, keepdims=True))
    return (weights / weights.sum(-1, keepdims=True)) @ v


RNG = np.random.default_rng(0)


def arrays(*shapes):
    return [RNG.standard_normal(s) for s in shapes]


@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask", "float_mask", "scale", "gqa", "causal_rect"])
def test_attention_matches_the_reference_eager_and_compiled(case):
    q, k, v = arrays((2, 4, 5, 8), (2, 4, 7 if case == "causal_rect" else 5, 8), (2, 4, 7 if case == "causal_rect" else 5, 6))
    kwargs, ref = {}, {}
    if case in ("causal", "causal_rect"):
        kwargs["is_causal"] = ref["is_causal"] = True
    if case == "bool_mask":
        mask = RNG.random((5, 5)) > 0.3
        mask[:, 0] = True  # (no row fully masked)
        kwargs["attn_mask"], ref["mask"] = ember.from_numpy(mask), mask
    if case == "float_mask":
        mask = RNG.standard_normal((2, 1, 5, 5))
        kwargs["attn_mask"], ref["mask"] = ember.from_numpy(mask), mask
    if case == "scale":
        kwargs["scale"] = ref["scale"] = 0.3
    if case == "gqa":
        k, v = k[:, :2], v[:, :2]
        kwargs["enable_gqa"] = ref["gqa"] = True
    expected = reference_attention(q, k, v, **ref)
    tensors = [ember.from_numpy(a) for a in (q, k, v)]
    got = F.scaled_dot_product_attention(*tensors, **kwargs)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    f32 = [t.float() for t in tensors]
    if case == "float_mask":  # (an additive mask has the query's dtype)
        kwargs["attn_mask"] = kwargs["attn_mask"].float()
    compiled = ember.compile(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **kwargs))
    for _ in range(2):
        np.testing.assert_allclose(compiled(*f32).numpy(), expected, rtol=2e-4, atol=2e-5)


def test_attention_gradients_match_finite_differences():
    q, k, v = [ember.from_numpy(a).requires_grad_() for a in arrays((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 3))]
    mask = ember.from_numpy(RNG.standard_normal((3, 5)))
    weights = ember.from_numpy(RNG.standard_normal((1, 2, 3, 3)))

    def loss(*inputs):
        return (F.scaled_dot_product_attention(*inputs, attn_mask=mask) * weights).sum()
    loss(q, k, v).backward()
    for t in (q, k, v):
        numeric = np.zeros(t.shape)
        for index in np.ndindex(*t.shape):
            for sign in (1, -1):
                data = t.detach().numpy().copy()
                data[index] += sign * 1e-6
                args = [ember.from_numpy(data) if u is t else u.detach() for u in (q, k, v)]
                numeric[index] += sign * loss(*args).item() / 2e-6
        np.testing.assert_allclose(t.grad.numpy(), numeric, rtol=1e-5, atol=1e-7)


def test_attention_errors_and_dropout():
    q = ember.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="Explicit attn_mask should not be set when is_causal=True"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=ember.ones(3, 3), is_causal=True)
    with pytest.raises(RuntimeError, match="must share the last dim"):
        F.scaled_dot_product_attention(q, ember.randn(2, 3, 5), q)
    ember.manual_seed(0)
    dropped = F.scaled_dot_product_attention(q, q, ember.ones(2, 3, 4), dropout_p=0.5)
    values = set(np.round(dropped.numpy().ravel(), 6))
    assert 0.0 in values or len(values) > 1  # (weights dropped and rescaled, unlike without dropout)


def test_rms_norm_matches_pytorchs_definition():
    x = RNG.standard_normal((3, 4, 6)).astype(np.float32)
    norm = nn.RMSNorm(6)
    with ember.no_grad():
        norm.weight.copy_(ember.from_numpy(RNG.standard_normal(6).astype(np.float32)))
    eps = np.finfo(np.float32).eps
    expected = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * norm.weight.detach().numpy()
    np.testing.assert_allclose(norm(ember.from_numpy(x)).detach().numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(ember.compile(norm)(ember.from_numpy(x)).detach().numpy(), expected, rtol=1e-5)
    two = F.rms_norm(ember.from_numpy(x), (4, 6), eps=0.1).numpy()
    np.testing.assert_allclose(two, x / np.sqrt((x ** 2).mean((-2, -1), keepdims=True) + 0.1), rtol=1e-5)
    assert nn.RMSNorm(6, elementwise_affine=False).weight is None and "eps=None" in repr(nn.RMSNorm(6))
    with pytest.raises(RuntimeError, match="does not end with normalized_shape"):
        F.rms_norm(ember.from_numpy(x), (5,))
