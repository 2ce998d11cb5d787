"""Gradient accumulation compiles: a compiled step that only runs backward() while the loop
steps the optimizer and sets the gradients to None every few calls meets two states, params
without a .grad and params with one. The call signature holds which params have a .grad
(module and optimizer parts), so each state keeps its own program; before, the two traces
replaced each other until the recompile limit and the loop ran eagerly. Checked against eager
mode, by counting compiled calls and traces."""
import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F


def _accumulating_run(compiled, reach, calls=20, every=4):
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = ember.optim.AdamW(model.parameters(), lr=0.01)
    x, y = ember.randn(5, 6), ember.randint(0, 3, (5,))

    def backward_only(x, y):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    def clipping_too(x, y):  # (reaches the optimizer's params as well)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], 10.0)
        return loss

    step = backward_only if reach == "module" else clipping_too
    run = ember.compile(step) if compiled else step
    losses = []
    for i in range(calls):
        losses.append(run(x, y).item())
        if i % every == every - 1:
            opt.step()
            opt.zero_grad(set_to_none=True)
    grads = [None if p.grad is None else p.grad.numpy().copy() for p in model.parameters()]
    return losses, [p.detach().numpy().copy() for p in model.parameters()], grads, getattr(run, "report", None)


@pytest.mark.parametrize("reach", ["module", "optimizer"])
def test_accumulating_gradients_with_zero_grad_outside_compiles_and_matches_eager(reach):
    eager = _accumulating_run(False, reach)
    losses, weights, grads, report = _accumulating_run(True, reach)
    np.testing.assert_allclose(losses, eager[0], rtol=1e-5, atol=1e-6)
    for got, want in zip(weights + grads, eager[1] + eager[2]):
        assert (got is None) == (want is None)
        if want is not None:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # calls 1 and 5 meet the two states first; later ones run the two programs
    assert report.fallback is None and report.compiled_calls >= 14 and len(report.programs) == 2, str(report)


def test_a_grad_deleted_between_calls_is_a_new_state_not_a_stale_program():
    w = ember.tensor([0.5, -1.0, 2.0], requires_grad=True)
    b = ember.tensor([0.1, 0.2, 0.3], requires_grad=True)
    opt = ember.optim.SGD([w, b], lr=0.1)

    def step(x):
        ((w * x + b) ** 2).sum().backward()
        opt.step()
        return x.sum()

    def run(fn):
        w.data, b.data = ember.tensor([0.5, -1.0, 2.0]), ember.tensor([0.1, 0.2, 0.3])
        w.grad = b.grad = None
        out = []
        for i in range(8):
            if i in (3, 6):
                b.grad = None  # one param's gradient dropped, the other's kept (accumulating)
            fn(ember.full((3,), float(i + 1)))
            out.append((w.detach().numpy().copy(), b.detach().numpy().copy(), w.grad.numpy().copy(),
                        b.grad.numpy().copy()))
        return out

    eager, compiled = run(step), run(ember.compile(step))
    for got, want in zip(compiled, eager):
        for g, e in zip(got, want):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
