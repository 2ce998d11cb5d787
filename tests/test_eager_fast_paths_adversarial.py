"""Adversarial checks of eager mode's fast paths (frontend/optim/array_updates.py,
frontend/nn/eager_layer_norm.py, frontend/nn/eager_attention.py) against PyTorch's semantics:
numpy references of PyTorch's formulas (checked against torch 2.13 CPU when written) and
version counts, error types and aliasing behaviour recorded from torch."""
import warnings

import numpy as np
import pytest

import ember
import ember.nn.functional as F

RNG = np.random.default_rng(1234)
A = RNG.standard_normal((4, 3)).astype(np.float32)
G = RNG.standard_normal((4, 3)).astype(np.float32)


# --------------------------------------------------------------------------- numpy references
def adam_reference(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                   maximize=False, decoupled=False):
    """torch.optim.Adam/AdamW (single-tensor) in float64, one update per gradient."""
    p = p.astype(np.float64)
    m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for step, g in enumerate(grads, 1):
        g = -g if maximize else g.astype(np.float64)
        if weight_decay:
            if decoupled:
                p = p * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        vmax = np.maximum(vmax, v)
        denom = np.sqrt(vmax if amsgrad else v) / np.sqrt(1 - betas[1] ** step) + eps
        p = p - lr / (1 - betas[0] ** step) * m / denom
    return p


def sgd_reference(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    p, buf = p.astype(np.float64), None
    for g in grads:
        g = -g if maximize else g.astype(np.float64)
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def layer_norm_reference(x, axes, w=None, b=None, eps=1e-5):
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


def layer_norm_vjp(x, axes, w, g, eps=1e-5):
    """PyTorch's NativeLayerNormBackward0: (dx, dweight, dbias)."""
    x, g = x.astype(np.float64), g.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    dxhat = g if w is None else g * w
    dx = rstd * (dxhat - dxhat.mean(axis=axes, keepdims=True) - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True))
    lead = tuple(range(x.ndim - len(axes)))
    return dx, (g * xhat).sum(axis=lead), g.sum(axis=lead)


def attention_reference(q, k, v, g, causal=False, scale=None):
    """softmax(q k^T * scale) v with a top-left causal mask (PyTorch's), and its VJP."""
    q, k, v, g = (a.astype(np.float64) for a in (q, k, v, g))
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) * scale
    return p @ v, ds @ k, np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ g


def _param(array):
    return ember.tensor(np.array(array), requires_grad=True)


# --------------------------------------------------------------------------- optimizers
ADAM_CASES = [("Adam", {}), ("Adam", dict(weight_decay=0.1, amsgrad=True, maximize=True)),
              ("AdamW", dict(lr=0.1, amsgrad=True)), ("Adam", dict(betas=(0.0, 0.5), lr=0.05)),
              ("AdamW", dict(weight_decay=0.3, betas=(0.6, 0.0)))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,options", ADAM_CASES)
def test_adam_matches_pytorch_formula_and_version_counts(name, options, dtype):
    grads = [RNG.standard_normal((4, 3)).astype(dtype) for _ in range(3)]
    p = _param(A.astype(dtype))
    optimizer = getattr(ember.optim, name)([p], **options)
    for g in grads:
        p.grad = ember.tensor(g)
        optimizer.step()
    kw = dict(options, decoupled=name == "AdamW")
    kw.setdefault("weight_decay", 0.01 if name == "AdamW" else 0.0)
    np.testing.assert_allclose(p.detach().numpy(), adam_reference(A, grads, **kw), rtol=2e-5, atol=2e-6)
    assert p.dtype == ember.tensor(A.astype(dtype)).dtype
    state = optimizer.state[p]
    # (recorded from torch: per step, step +1, exp_avg +1, exp_avg_sq +2 (mul_, addcmul_),
    # max_exp_avg_sq +1, param +1, or +2 with decoupled weight decay)
    assert p._version == 3 * (2 if kw["weight_decay"] and kw["decoupled"] else 1)
    assert (state["step"]._version, state["exp_avg"]._version, state["exp_avg_sq"]._version) == (3, 3, 6)
    if options.get("amsgrad"):
        assert state["max_exp_avg_sq"]._version == 3


@pytest.mark.parametrize("options", [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=0.1),
                                     dict(momentum=0.9, dampening=0.3, maximize=True)])
def test_sgd_matches_pytorch_formula_and_version_counts(options):
    grads = [RNG.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    p = _param(A)
    optimizer = ember.optim.SGD([p], lr=0.1, **options)
    for g in grads:
        p.grad = ember.tensor(g)
        optimizer.step()
    np.testing.assert_allclose(p.detach().numpy(), sgd_reference(A, grads, 0.1, **options), rtol=1e-5, atol=1e-6)
    assert p._version == 3
    if options.get("momentum"):  # (torch: the buffer is a clone, then mul_ and add_ per later step)
        assert optimizer.state[p]["momentum_buffer"]._version == 4


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_aliased_and_shared_memory_parameters(name):
    """Parameters that are (possibly overlapping) views of one buffer, gradients that alias the
    parameter or are views of one flat buffer: values as PyTorch computes them (recorded)."""
    options = dict(lr=0.1, momentum=0.9) if name == "SGD" else dict(lr=0.1)
    make = getattr(ember.optim, name)
    # disjoint views of one buffer: each updated as if alone, all writes visible in the buffer
    base = ember.tensor(A.copy())
    p1, p2 = base[:2].detach().requires_grad_(), base[2:].detach().requires_grad_()
    p1.grad, p2.grad = ember.tensor(G[:2]), ember.tensor(G[2:])
    optimizer = make([p1, p2], **options)
    optimizer.step()
    optimizer.step()
    ref = (adam_reference(A, [G, G], lr=0.1, decoupled=name == "AdamW", weight_decay=0.01 if name == "AdamW" else 0)
           if name != "SGD" else sgd_reference(A, [G, G], 0.1, momentum=0.9))
    np.testing.assert_allclose(base.numpy(), ref, rtol=1e-5, atol=1e-6)
    assert p1._version == p2._version == base._version == (8 if name == "AdamW" else 4)  # (one shared counter)
    # a gradient that is the parameter itself (p.grad = p.detach()): the composed in-place ops
    p = _param(A)
    p.grad = p.detach()
    make([p], **options).step()
    expected = {"Adam": A - 0.1 * np.sign(A), "AdamW": A * (1 - 0.1 * 0.01) - 0.1 * np.sign(A), "SGD": A - 0.1 * A}
    np.testing.assert_allclose(p.detach().numpy(), expected[name], rtol=1e-5, atol=1e-6)
    # gradients that are views of one flat buffer
    flat = ember.tensor(G.reshape(-1).copy())
    q1, q2 = _param(A[:2]), _param(A[2:])
    q1.grad, q2.grad = flat[:6].view(2, 3), flat[6:].view(2, 3)
    optimizer = make([q1, q2], **options)
    optimizer.step()
    np.testing.assert_array_equal(flat.numpy(), G.reshape(-1))  # (the gradients are read, never written)
    assert flat._version == 0


def test_duplicate_parameter_is_updated_twice_per_step():
    p = _param(A)
    p.grad = ember.tensor(G)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = ember.optim.Adam([p, p], lr=0.1)
    optimizer.step()
    np.testing.assert_allclose(p.detach().numpy(), adam_reference(A, [G, G], lr=0.1), rtol=1e-5, atol=1e-6)
    assert optimizer.state[p]["step"].item() == 2 and p._version == 2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_and_empty_gradients():
    g = G.copy()
    g[0, 0], g[1, 1] = np.nan, np.inf
    p = _param(A)
    p.grad = ember.tensor(g)
    ember.optim.AdamW([p], lr=0.1).step()
    out = p.detach().numpy()
    assert np.isnan(out[0, 0]) and np.isnan(out[1, 1])  # (inf / sqrt(inf^2): nan, as in torch)
    np.testing.assert_allclose(out[2:], A[2:] * (1 - 1e-3) - 0.1 * np.sign(G[2:]), rtol=1e-5)
    empty = _param(np.zeros((0, 3), np.float32))
    empty.grad = ember.zeros(0, 3)
    optimizer = ember.optim.Adam([empty], amsgrad=True)
    optimizer.step()
    assert empty.shape == (0, 3) and optimizer.state[empty]["step"].item() == 1


def test_adam_updates_a_zero_dim_parameter():
    p = _param(np.float32(1.5))
    p.grad = ember.tensor(0.5)
    ember.optim.Adam([p], lr=0.1).step()
    assert p.item() == pytest.approx(1.4, abs=1e-6)


def test_sgd_updates_a_zero_dim_parameter():
    p = _param(np.float32(1.5))
    p.grad = ember.tensor(0.5)
    optimizer = ember.optim.SGD([p], lr=0.1, momentum=0.9)
    optimizer.step()
    optimizer.step()
    assert p.item() == pytest.approx(1.5 - 0.05 - 0.1 * 0.95, abs=1e-6) and p._version == 2


# --------------------------------------------------------------------------- clip_grad_norm_
def _clip(grads, max_norm=1.0, **options):
    params = [_param(np.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = ember.tensor(g.copy())
    total = ember.nn.utils.clip_grad_norm_(params, max_norm, **options)
    return total, params


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_pytorch(dtype, max_norm):
    grads = [A.astype(dtype), G[0].astype(dtype), np.zeros((0, 2), dtype), np.array(3.0, dtype)]
    total, params = _clip(grads, max_norm)
    expected = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))
    assert total.dtype == params[0].dtype and total.shape == () and not total.requires_grad
    np.testing.assert_allclose(total.item(), expected, rtol=1e-6)
    coefficient = min(max_norm / (expected + 1e-6), 1.0)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.numpy(), g * coefficient, rtol=1e-6)
        assert p.grad._version == 1  # (torch bumps every gradient once, clipped or not)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_grad_norm_non_finite(bad):
    g = A.copy()
    g[0, 0] = bad
    with pytest.raises(RuntimeError, match="non-finite"):
        _clip([g, G], error_if_nonfinite=True)
    total, params = _clip([g, G])
    assert not np.isfinite(total.item())  # (coefficient nan, or 0 for inf: inf * 0 is nan, as in torch)
    with np.errstate(invalid="ignore"):
        for p, grad in zip(params, (g, G)):
            np.testing.assert_array_equal(p.grad.numpy(), grad * np.float32(bad if np.isnan(bad) else 0.0))
    # the error leaves the gradients untouched (torch raises before writing)
    p = _param(np.zeros_like(g))
    p.grad = ember.tensor(g)
    with pytest.raises(RuntimeError):
        ember.nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(p.grad.numpy(), g)
    assert p.grad._version == 0


def test_clip_grad_norm_aliased_gradients():
    # the same parameter twice: its gradient counts twice and is scaled twice (as in torch)
    p = _param(A)
    p.grad = ember.tensor(A)
    total = ember.nn.utils.clip_grad_norm_([p, p], 1.0)
    norm = np.sqrt((A.astype(np.float64) ** 2).sum())
    np.testing.assert_allclose(total.item(), np.sqrt(2) * norm, rtol=1e-6)
    np.testing.assert_allclose(p.grad.numpy(), A * (1 / (np.sqrt(2) * norm + 1e-6)) ** 2, rtol=1e-5)
    assert p.grad._version == 2
    # gradients that are disjoint views of one flat buffer
    flat = ember.tensor(np.concatenate([A.ravel(), G[0]]))
    p1, p2 = _param(A), _param(G[0])
    p1.grad, p2.grad = flat[:12].view(4, 3), flat[12:]
    total = ember.nn.utils.clip_grad_norm_([p1, p2], 1.0)
    whole = np.concatenate([A.ravel(), G[0]]).astype(np.float64)
    np.testing.assert_allclose(flat.numpy(), whole / (np.sqrt((whole ** 2).sum()) + 1e-6), rtol=1e-5)
    assert flat._version == 2


# --------------------------------------------------------------------------- layer norm
X = RNG.standard_normal((2, 3, 4)).astype(np.float32)
GY = RNG.standard_normal((2, 3, 4)).astype(np.float32)
W2, B2 = RNG.standard_normal((3, 4)).astype(np.float32), RNG.standard_normal((3, 4)).astype(np.float32)


@pytest.mark.parametrize("affine", ["both", "weight", "bias", "none"])
@pytest.mark.parametrize("needs", ["all", "weight_only", "bias_only"])
def test_layer_norm_over_two_dims_matches_pytorch_backward(affine, needs):
    w = ember.tensor(W2, requires_grad=needs != "bias_only") if affine in ("both", "weight") else None
    b = ember.tensor(B2, requires_grad=needs != "weight_only") if affine in ("both", "bias") else None
    x = ember.tensor(X.transpose(1, 0, 2).copy(), requires_grad=needs == "all")
    y = F.layer_norm(x.transpose(0, 1), (3, 4), w, b)  # (a non-contiguous input)
    wa, ba = (None if t is None else t.detach().numpy() for t in (w, b))
    np.testing.assert_allclose(y.detach().numpy(), layer_norm_reference(X, (1, 2), wa, ba), rtol=1e-5, atol=1e-5)
    if not y.requires_grad:
        assert y.grad_fn is None
        return
    y.backward(ember.tensor(GY))
    dx, dw, db = layer_norm_vjp(X, (1, 2), wa, GY)
    if x.requires_grad:
        np.testing.assert_allclose(x.grad.numpy(), dx.transpose(1, 0, 2), rtol=1e-4, atol=1e-5)
    for t, expected in ((w, dw), (b, db)):
        if t is not None:
            assert (t.grad is None) == (not t.requires_grad)
            if t.requires_grad:
                np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["input", "weight"])
def test_layer_norm_saved_tensor_changed_in_place_raises(which):
    x, w = ember.tensor(X, requires_grad=True), ember.tensor(X[0, 0], requires_grad=True)
    h = x * 1.0
    y = F.layer_norm(h, (4,), w)
    with ember.no_grad():
        (h if which == "input" else w).add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward(ember.tensor(GY))


def test_layer_norm_graph_lifetime_modes_and_direct_inplace_on_output():
    x = ember.tensor(X, requires_grad=True)
    y = F.layer_norm(x, (4,))
    y.backward(ember.tensor(GY), retain_graph=True)
    y.backward(ember.tensor(GY))
    np.testing.assert_allclose(x.grad.numpy(), 2 * layer_norm_vjp(X, (2,), None, GY)[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward(ember.tensor(GY))
    for mode in (ember.no_grad, ember.inference_mode):
        with mode():
            z = F.layer_norm(x, (4,))
        assert z.grad_fn is None and not z.requires_grad
    # an in-place op on the output itself keeps the layer norm's history (torch: MulBackward0)
    x.grad = None
    y = F.layer_norm(x, (4,))
    y.mul_(3.0)
    y.backward(ember.tensor(GY))
    np.testing.assert_allclose(x.grad.numpy(), 3 * layer_norm_vjp(X, (2,), None, GY)[0], rtol=1e-4, atol=1e-5)


_ONE_NODE_OPS = {"layer_norm": lambda x: F.layer_norm(x, (4,)),
                  "attention": lambda x: F.scaled_dot_product_attention(x, x, x),
                  "linear": lambda x: F.linear(x, x.t() @ x, x[0])}


@pytest.mark.parametrize("op", sorted(_ONE_NODE_OPS))
def test_inplace_through_a_view_of_the_output_reaches_the_gradient(op):
    x = ember.tensor(X[0], requires_grad=True)
    y = _ONE_NODE_OPS[op](x)
    assert y._base is None  # (torch: the result of the op is no view)
    y.view(-1).mul_(2.0)
    y.backward(ember.tensor(GY[0]))
    plain = ember.tensor(X[0], requires_grad=True)
    reference = _ONE_NODE_OPS[op](plain)
    (reference * 2.0).backward(ember.tensor(GY[0]))
    np.testing.assert_allclose(x.grad.numpy(), plain.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_layer_norm_over_an_empty_dim():
    x = ember.zeros(3, 0, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.layer_norm(x, (0,))
    y.backward(ember.ones(3, 0))
    assert x.grad.shape == (3, 0)


# --------------------------------------------------------------------------- attention
def _qkv(*shapes, dtype=np.float32):
    return [np.random.default_rng(sum(s)).standard_normal(s).astype(dtype) for s in shapes]


@pytest.mark.parametrize("shapes,causal,scale", [
    (((2, 3, 8, 4), (2, 3, 5, 4), (2, 3, 5, 6)), True, None),   # L > S: top-left causal mask
    (((5, 4), (6, 4), (6, 3)), True, 0.7),                     # 2-D
    (((2, 2, 2, 5, 4), (2, 2, 2, 6, 4), (2, 2, 2, 6, 3)), False, -1.5),  # 5-D
    (((2, 3, 5, 4), (1, 3, 6, 4), (2, 1, 6, 3)), True, None),  # broadcast batch dims (composed ops)
    (((2, 3, 5, 4), (3, 6, 4), (3, 6, 3)), False, 0.0),        # broadcast rank
])
@pytest.mark.parametrize("needs", [(True, True, True), (False, True, False), (True, False, True)])
def test_attention_matches_pytorch_formula(shapes, causal, scale, needs):
    q, k, v = _qkv(*shapes)
    tensors = [ember.tensor(a, requires_grad=n) for a, n in zip((q, k, v), needs)]
    y = F.scaled_dot_product_attention(*tensors, is_causal=causal, scale=scale)
    g = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    out, *grads = attention_reference(q, k, v, g, causal, scale)
    np.testing.assert_allclose(y.detach().numpy(), out, rtol=1e-5, atol=1e-5)
    y.backward(ember.tensor(g))
    for t, expected in zip(tensors, grads):
        if t.requires_grad:
            expected = expected.sum(axis=tuple(range(expected.ndim - t.ndim))) if expected.ndim > t.ndim else expected
            expected = expected.sum(axis=tuple(i for i, n in enumerate(t.shape) if n == 1), keepdims=True)
            np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-4, atol=1e-5)
        else:
            assert t.grad is None


def test_attention_one_tensor_as_query_key_and_value_float64():
    (x,) = _qkv((2, 6, 4), dtype=np.float64)
    t = ember.tensor(x, requires_grad=True)
    y = F.scaled_dot_product_attention(t, t, t, is_causal=True)
    g = np.ones(y.shape)
    out, dq, dk, dv = attention_reference(x, x, x, g, causal=True)
    y.backward(ember.tensor(g))
    assert y.dtype == ember.float64
    np.testing.assert_allclose(y.detach().numpy(), out, rtol=1e-12)
    np.testing.assert_allclose(t.grad.numpy(), dq + dk + dv, rtol=1e-10, atol=1e-12)


def test_attention_value_changed_in_place_raises_and_modes():
    q, k, v = (ember.tensor(a, requires_grad=True) for a in _qkv((2, 5, 4), (2, 6, 4), (2, 6, 3)))
    value = v * 1.0
    y = F.scaled_dot_product_attention(q, k, value)
    with ember.no_grad():
        value.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):  # (torch raises too)
        y.sum().backward()
    for mode in (ember.no_grad, ember.inference_mode):
        with mode():
            z = F.scaled_dot_product_attention(q, k, v)
        assert z.grad_fn is None and not z.requires_grad


def test_layer_norm_and_attention_in_a_compiled_training_step_match_eager():
    def make():
        ember.manual_seed(0)
        # (no projection bias: a key bias has gradient 0, noise under Adam)
        net = ember.nn.ModuleDict(dict(ln=ember.nn.LayerNorm(8), proj=ember.nn.Linear(8, 24, bias=False)))
        return net, ember.optim.AdamW(net.parameters(), lr=0.01)

    def step(net, optimizer, x):
        optimizer.zero_grad()
        q, k, v = net["proj"](net["ln"](x)).chunk(3, dim=-1)
        loss = (F.scaled_dot_product_attention(q, k, v, is_causal=True) ** 2).mean()
        loss.backward()
        ember.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
        optimizer.step()
        return loss

    eager, compiled = make(), make()
    compiled_step = ember.compile(lambda x: step(*compiled, x))
    for i in range(4):
        x = ember.tensor(np.random.default_rng(i).standard_normal((2, 5, 8)).astype(np.float32))
        np.testing.assert_allclose(compiled_step(x).item(), step(*eager, x).item(), rtol=1e-4)
    for a, b in zip(eager[0].parameters(), compiled[0].parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-4, atol=1e-5)
    assert compiled_step.report.compiled_calls >= 1
