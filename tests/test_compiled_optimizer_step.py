"""`ember.compile(opt.step)`-style use: the optimizer's update compiled alone, with backward()
eager outside, as PyTorch's "compiling the optimizer" recipe does. Each step's `.grad` is a new
tensor (zero_grad sets it to None); the update reads `p.grad` before `p`, and the program must
bind the .grad by its param's path, not hold the first step's tensor (Tracer.grad_readers).
Before, Adam, AdamW and SGD with momentum traced again on every call, then ran eagerly."""
import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F

OPTIMIZERS = {
    "sgd": lambda params: ember.optim.SGD(params, lr=0.1),
    "sgd_momentum": lambda params: ember.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda params: ember.optim.Adam(params, lr=0.01),
    "adamw": lambda params: ember.optim.AdamW(params, lr=0.01, weight_decay=0.1),
    "rmsprop": lambda params: ember.optim.RMSprop(params, lr=0.01, momentum=0.5),
}


def _train(kind, compiled, steps=10, set_to_none=True):
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    opt = OPTIMIZERS[kind](model.parameters())
    x, y = ember.randn(5, 3), ember.randn(5, 2)

    def update():
        opt.step()

    run = ember.compile(update) if compiled else update
    for _ in range(steps):
        opt.zero_grad(set_to_none=set_to_none)
        F.mse_loss(model(x), y).backward()
        run()
    return [p.detach().numpy().copy() for p in model.parameters()], run


@pytest.mark.parametrize("set_to_none", [True, False])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_a_compiled_optimizer_step_alone_equals_eager_and_runs_compiled(kind, set_to_none):
    got, run = _train(kind, True, set_to_none=set_to_none)
    want, _ = _train(kind, False, set_to_none=set_to_none)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # (a second trace where the first step makes the optimizer's state, then one program)
    assert len(run.report.traces) <= 2 and run.report.compiled_calls >= 7 and run.report.eager_calls == 0


def test_a_compiled_forward_backward_then_a_compiled_update_and_zero_grad_both_compile():
    # the update reads each new .grad before its param: bound by the param's path, it compiles
    # (before: it traced again on every call)
    def run(compiled):
        ember.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        opt = ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = ember.randn(5, 3), ember.randn(5, 2)

        def forward_backward(x, y):
            F.mse_loss(model(x), y).backward()

        def update():
            opt.step()
            opt.zero_grad()

        fb, up = (ember.compile(forward_backward), ember.compile(update)) if compiled else (forward_backward, update)
        for _ in range(12):
            fb(x, y)
            up()
        return [p.detach().numpy().copy() for p in model.parameters()], up

    got, update = run(True)
    for g, w in zip(got, run(False)[0]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert update.report.compiled_calls >= 9 and update.report.eager_calls == 0


def test_a_step_whose_head_alternates_every_two_calls_compiles_each_branch():
    def run(compiled):
        ember.manual_seed(0)
        body, head_a, head_b = nn.Linear(3, 4), nn.Linear(4, 2), nn.Linear(4, 2)
        params = [p for m in (body, head_a, head_b) for p in m.parameters()]
        opt = ember.optim.SGD(params, lr=0.1)
        x, y = ember.randn(5, 3), ember.randn(5, 2)

        def step(x, y, use_a):
            opt.zero_grad()
            out = (head_a if use_a else head_b)(body(x))
            F.mse_loss(out, y).backward()
            opt.step()

        run_step = ember.compile(step) if compiled else step
        for i in range(16):
            run_step(x, y, (i // 2) % 2 == 0)
        return [p.detach().numpy().copy() for p in params], run_step

    got, step = run(True)
    for g, w in zip(got, run(False)[0]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert step.report.compiled_calls >= 12 and step.report.eager_calls == 0
