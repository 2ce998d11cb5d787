"""A program traced while a param had no .grad, and which read it (an optimizer's step,
clipping, zero_grad, a first gradient, `if w.grad is None` in user code), runs only while it
still has none; one traced while it had a .grad and read it, only while it still has one: the
call traces again otherwise (Tracer.read_grad, TraceTree.without_grad and with_grad). Found by
adversarial rounds; each failed before. Compiled ember against eager ember."""
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


@pytest.mark.parametrize("reached", ["module", "closed_over_tensor", "argument_module"])
def test_a_python_test_of_grad_presence_in_user_code_follows_the_grad(reached):
    # Found (pre-existing): `if model.weight.grad is None` is Python control flow. The program of
    # either branch read no .grad, so it served the other state too, with the other branch's result
    def run_loop(compiled):
        ember.manual_seed(0)
        model = nn.Linear(3, 2)
        w = model.weight

        def f(x, m=None):
            out = (m or model)(x)
            watched = w if reached == "closed_over_tensor" else (m or model).weight
            if watched.grad is None:
                return out * 2
            return out

        run = ember.compile(f) if compiled else f
        x = ember.ones(2, 3)
        res = []
        for i in range(9):
            out = run(x, model) if reached == "argument_module" else run(x)
            res.append(out.detach().numpy().copy())
            out.sum().backward()
            if i % 3 == 2:
                model.zero_grad(set_to_none=True)
            res.append(_snap(model.parameters()))
        return res

    _assert_same(run_loop(True), run_loop(False))


def test_a_grad_read_only_for_its_presence_holds_the_program_to_it():
    # the .grad itself is no input of the program: only its presence decides the result
    def run_loop(compiled):
        ember.manual_seed(0)
        model = nn.Linear(3, 2)

        def f(x):
            scale = sum(1.0 for p in model.parameters() if p.grad is not None)
            return model(x) * (scale + 1.0)

        run = ember.compile(f) if compiled else f
        res = []
        for i in range(8):
            out = run(ember.ones(2, 3))
            res.append(out.detach().numpy().copy())
            if i % 2 == 0:
                out.sum().backward()
            else:
                model.zero_grad(set_to_none=True)
        return res

    _assert_same(run_loop(True), run_loop(False))


@pytest.mark.parametrize("where", ["optimizer", "module"])
def test_zero_grad_to_none_inside_a_step_holds_in_either_state(where, fresh_compile_cache):
    # zero_grad(set_to_none=True) leaves every .grad None whether it had one or not: the step's
    # program need not hold on either, so calls that alternate (gradients dropped outside, now and
    # then) run compiled after the first two, and equal eager mode
    def run_loop(compiled):
        ember.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        opt = ember.optim.SGD(model.parameters(), lr=0.1)
        x, y = ember.randn(5, 3), ember.randn(5, 2)

        def step():
            (opt if where == "optimizer" else model).zero_grad(set_to_none=True)
            F.mse_loss(model(x), y).backward()
            opt.step()

        run = ember.compile(step) if compiled else step
        out = []
        for i in range(8):
            run()
            if i % 3 == 1:
                opt.zero_grad(set_to_none=True)
            out.append(_snap(model.parameters()))
        return out, run

    got, compiled = run_loop(True)
    _assert_same(got, run_loop(False)[0])
    assert compiled.report.compiled_calls == 6 and not compiled.report.recompiles


def test_gradient_accumulation_compiles_each_grad_state_once():
    # backward() only, with opt.step(); opt.zero_grad() every 4 calls: the calls alternate between
    # "make the .grads" and "add into them". Each state's program is kept (grad_state_trees.py):
    # before, every change traced again until the recompile limit, then ran eagerly
    def run_loop(compiled):
        ember.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        opt = ember.optim.SGD(model.parameters(), lr=0.1)
        x, y = ember.randn(5, 3), ember.randn(5, 2)

        def accumulate(x, y):
            F.mse_loss(model(x), y).backward()

        run = ember.compile(accumulate) if compiled else accumulate
        out = []
        for i in range(20):
            run(x, y)
            out.append(_snap(model.parameters()))
            if i % 4 == 3:
                opt.step()
                opt.zero_grad()
        return out, run

    got, compiled = run_loop(True)
    _assert_same(got, run_loop(False)[0])
    assert compiled.report.compiled_calls >= 15 and len(compiled.report.traces) <= 3
    assert compiled.report.eager_calls == 0


def test_a_user_grad_check_alternating_with_zero_grad_compiles_each_state_once():
    ember.manual_seed(0)
    model = nn.Linear(3, 2)

    def f(x):
        out = model(x)
        return out * 2 if model.weight.grad is None else out

    run = ember.compile(f)
    for i in range(12):
        out = run(ember.ones(2, 3))
        np.testing.assert_allclose(out.detach().numpy(), model(ember.ones(2, 3)).detach().numpy() *
                                   (2 if model.weight.grad is None else 1), rtol=1e-6)
        out.sum().backward()
        if i % 3 == 2:
            model.zero_grad(set_to_none=True)
    assert len(run.report.traces) == 2 and run.report.compiled_calls == 10


def _grads_of(tensors):
    return [None if t.grad is None else t.grad.numpy().copy() for t in tensors]


@pytest.mark.parametrize("held", ["closed_over_list", "closed_over_dict", "optimizer_in_a_dict_argument",
                                  "del_grad"])
def test_grads_set_to_none_wherever_the_tensors_are_held_are_cleared_on_every_call(held):
    # Found (pre-existing): only tensors of the call's entry state (module state, arguments,
    # closed-over tensors, modules and optimizers) had their .grad cleared by compiled calls;
    # tensors held in a list or dict kept stale gradients, which the next backward added into
    def run_loop(compiled):
        ember.manual_seed(0)
        models = [nn.Linear(2, 2) for _ in range(2)]
        opts = [ember.optim.SGD(m.parameters(), lr=0.1) for m in models]
        params = [p for m in models for p in m.parameters()]
        as_dict = {f"p{i}": p for i, p in enumerate(params[:2])}

        def clear(d=None):
            if held == "closed_over_list":
                for p in params[:3]:
                    p.grad = None
            elif held == "closed_over_dict":
                for p in as_dict.values():
                    p.grad = None
            elif held == "del_grad":
                for p in params[1:]:
                    del p.grad
            else:
                d["opt"].zero_grad()

        run = ember.compile(clear) if compiled else clear
        out = []
        for i in range(6):
            for m in models:
                m(ember.ones(1, 2) * (i + 1)).sum().backward()
            run({"opt": opts[i % 2]}) if held == "optimizer_in_a_dict_argument" else run()
            out.append(_grads_of(params))
        return out

    _assert_same(run_loop(True), run_loop(False))


def test_a_grad_the_function_makes_and_assigns_is_a_new_tensor_on_every_call_and_still_accumulates():
    # `w.grad = w.grad.clone()` then backward(): eagerly the backward adds into that clone (the
    # caller's `c` sees it) and every call gives w a new .grad tensor. The .grad is read before w
    # (bound by w's path, Tracer.grad_readers): a compiled call must not write into the old one
    def run(compiled):
        w = ember.tensor([0.5, -1.0, 2.0], requires_grad=True)
        (w * 2).sum().backward()
        seen = []

        def step(x):
            c = w.grad.clone()
            w.grad = c
            (w * x).sum().backward()
            return c.sum() + 0, (w.grad is c) * 1.0

        fn = ember.compile(step) if compiled else step
        out = []
        for i in range(5):
            seen.append(w.grad)
            result = fn(ember.full((3,), float(i + 1)))
            out.append([float(v) for v in result] + [float(w.grad.sum())] + [float(s.sum()) for s in seen])
        return out

    _assert_same(run(True), run(False))
