"""A program traced while a param had no .grad, and which skipped it for that (an optimizer's
step, clipping, zero_grad, a first gradient), runs only while it still has none: the call traces
again once it has one (Tracer.saw_no_grad, TraceTree.without_grad). Found by an adversarial round
(session 2026-12-07, seventh); each failed before. Compiled ember against eager ember."""
import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F


def _snap(params):
    return [(p.detach().numpy().copy(), None if p.grad is None else p.grad.numpy().copy()) for p in params]


def _assert_same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(g, (list, tuple)):
            _assert_same(g, w)
        elif g is None or w is None:
            assert (g is None) == (w is None), (g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opt_kind", ["sgdm", "adamw"])
def test_a_compiled_optimizer_update_first_called_before_any_backward_keeps_updating(opt_kind):
    # Found (pre-existing): a compiled "clip + opt.step()" called at the start of each
    # accumulation window is first called before any backward: its program, which skipped every
    # param, was empty and served every later call, so the weights never changed again
    def run_loop(compiled):
        ember.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        opt = ember.optim.AdamW(model.parameters(), lr=0.05) if opt_kind == "adamw" else \
            ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = ember.randn(5, 3), ember.randn(5, 2)

        def apply_update():
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        update = ember.compile(apply_update) if compiled else apply_update
        out = []
        for i in range(10):
            if i % 3 == 0:
                update()
                opt.zero_grad(set_to_none=True)
            F.mse_loss(model(x), y).backward()
            out.append(_snap(model.parameters()))
        return out

    _assert_same(run_loop(True), run_loop(False))


def test_a_guard_branch_that_adds_backward_later_accumulates_into_existing_grads():
    # Found (pre-existing): the branch with backward, first traced with no .grad yet, was compiled
    # at once as "make a new .grad"; later calls with gradients present overwrote .grad instead
    # of adding into it
    def run_loop(compiled):
        ember.manual_seed(0)
        model = nn.Linear(3, 1)

        def f(x):
            out = model(x).sum()
            if bool(out > 0):
                out.backward()
            return out

        run = ember.compile(f) if compiled else f
        res = []
        for s in [-1, -2, -3, 1, 2, 3, 4, 5]:  # (this seed: negative x gives out <= 0)
            res.append(run(ember.full((2, 3), float(-s))).item())
            res.append(_snap(model.parameters()))
        return res

    _assert_same(run_loop(True), run_loop(False))


def test_a_compiled_module_zero_grad_first_called_before_any_backward_keeps_zeroing():
    # Found (pre-existing): a compiled model.zero_grad(set_to_none=False) first called with no
    # .grad anywhere compiled an empty program, and the gradients piled up across steps
    def run_loop(compiled):
        ember.manual_seed(0)
        model = nn.Linear(3, 2)

        def zero():
            model.zero_grad(set_to_none=False)

        run = ember.compile(zero) if compiled else zero
        x, out = ember.randn(4, 3), []
        for _ in range(5):
            run()
            model(x).sum().backward()
            out.append(_snap(model.parameters()))
        return out

    _assert_same(run_loop(True), run_loop(False))


def test_a_model_and_optimizer_passed_as_arguments_are_held_without_grad_too():
    # Found (pre-existing): the same update with the model and optimizer as arguments, not
    # reached through a closure, also compiled an empty program at its first call
    def run_loop(compiled):
        ember.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        opt = ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = ember.randn(5, 3), ember.randn(5, 2)

        def update(m, o):
            nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            o.step()

        run = ember.compile(update) if compiled else update
        out = []
        for i in range(10):
            if i % 3 == 0:
                run(model, opt)
                opt.zero_grad(set_to_none=True)
            F.mse_loss(model(x), y).backward()
            out.append(_snap(model.parameters()))
        return out

    _assert_same(run_loop(True), run_loop(False))


@pytest.mark.parametrize("zero", ["optimizer", "module"])
def test_a_compiled_update_that_sets_the_grads_to_none_does_so_on_every_call(zero):
    # Found (pre-existing): `opt.step(); opt.zero_grad()` compiled, with the backward outside: only
    # the traced calls set .grad to None, so the next backward added into stale gradients
    def run_loop(compiled):
        ember.manual_seed(0)
        model = nn.Linear(3, 1)
        opt = ember.optim.SGD(model.parameters(), lr=0.1)  # (with momentum it reads each new .grad
        x, y = ember.randn(4, 3), ember.randn(4, 1)  # before its param, by identity: it traces every call)

        def update():
            opt.step()
            (opt if zero == "optimizer" else model).zero_grad()

        run = ember.compile(update) if compiled else update
        out = []
        for _ in range(6):
            F.mse_loss(model(x), y).backward()
            run()
            out.append(_snap(model.parameters()))
        return out, getattr(run, "report", None)

    (got, report), (want, _) = run_loop(True), run_loop(False)
    _assert_same(got, want)
    assert report.compiled_calls >= 3, str(report)


def test_setting_an_arguments_grad_to_none_follows_the_argument():
    # Found by an adversarial round: the program set the .grad of the tensor it was traced with
    # to None on every call, whichever tensor the call passed; such a call now runs eagerly
    def run_loop(compiled):
        ember.manual_seed(0)
        ts = [ember.randn(3, requires_grad=True) for _ in range(2)]

        def f(t):
            t.grad = None
            return t * 2

        run = ember.compile(f) if compiled else f
        out = []
        for i in range(4):
            for t in ts:
                (t * t).sum().backward()
            run(ts[i % 2])  # another tensor, the same signature
            out.append([None if t.grad is None else t.grad.numpy().copy() for t in ts])
        return out

    _assert_same(run_loop(True), run_loop(False))
