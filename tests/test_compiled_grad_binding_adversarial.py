"""A second adversarial round on compiled `.grad` handling (session 2026-12-07, eighth): `.grad`s
bound by their param's path (external_names.GradOf, frontend/bound_grads.py), `.grad`s the
function assigns (Tracer.wrote_grad), grad-state trees. Compiled ember against eager ember, whose
values agree with PyTorch 2.13; each failed before that session's fixes. The comments say what
was wrong ("NEW": a regression of the session's earlier commits, fixed before it ended)."""
import numpy as np
import pytest

import ember
from ember import nn
from grad_scenarios import assert_same_observations as _assert_same, eager_and_compiled as _both, \
    observed as _np, two_grads_of_one_made_tensor


# ---------------------------------------------------------------------------------------------
# NEW (regression of cdd5beb): a param's .grad read before the param is bound by the param's
# path (GradOf: whatever p.grad is at each call). An argument that IS the current p.grad is
# not seen as sharing memory with the program's state (tree.state_roots holds the ids of the
# trace-time tensors only), so an in-place change through p.grad is not seen through the
# argument. Passing `model.weight.grad` to a compiled function that clips gradients:
# eager/PyTorch return the clipped values ([-0.1, 0.1, ...]); compiled returns the unclipped
# gradient ([-1.53, -6.82, ...]). At 0d1d96a this traced every call (new .grad tensors) and was
# right.
def test_argument_that_is_the_current_grad_with_clip_inside():
    def scenario(wrap):
        ember.manual_seed(0)
        m = nn.Linear(3, 2)
        opt = ember.optim.SGD(m.parameters(), lr=0.1)
        x = ember.randn(4, 3)

        def f(g):
            nn.utils.clip_grad_value_(m.parameters(), 0.1)
            return g * 1

        run = wrap(f)
        seen = []
        for i in range(8):
            opt.zero_grad()
            (m(x) ** 2).sum().backward()
            r = run(m.weight.grad if i >= 3 else ember.ones(2, 3))
            seen.append([_np(r), _np(m.weight.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# NEW (same cause, smallest form): `p.grad.mul_(2); return x * 1`, called with x = p.grad
# from call 3 on. Eager/PyTorch [8, 8, 8] at call 3; compiled [4, 4, 4]. At 0d1d96a: right.
def test_argument_that_is_the_current_grad_written_through_the_param():
    def scenario(wrap):
        p = ember.ones(3, requires_grad=True)

        def f(x):
            p.grad.mul_(2)
            return x * 1

        run = wrap(f)
        seen = []
        for i in range(8):
            p.grad = ember.full((3,), float(i + 1))
            r = run(p.grad if i >= 3 else ember.full((3,), 5.0))
            seen.append([_np(r), _np(p.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# NEW (regression of cdd5beb): a closed-over tensor T that becomes p.grad after the trace
# (`p.grad = T`). The program binds p.grad by path and T by its weak reference, the same
# tensor as two unrelated params: `p.grad.mul_(2); return T + 0` returns T's old value.
# Eager/PyTorch [2, 2, 2] at call 3; compiled [1, 1, 1]. At 0d1d96a: right (traced again).
def test_closed_over_tensor_that_becomes_a_params_grad():
    def scenario(wrap):
        T = ember.ones(3)
        p = ember.ones(3, requires_grad=True)

        def f():
            p.grad.mul_(2)
            return T + 0

        run = wrap(f)
        seen = []
        for i in range(8):
            p.grad = T if i >= 3 else ember.full((3,), float(i + 1))
            r = run()
            seen.append([_np(r), _np(p.grad), _np(T)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# NEW (regression of cdd5beb): two params whose .grads were separate tensors when traced,
# and share one .grad tensor later (p.grad = q.grad = g). Both are bound by path (GradOf), and
# the program's two in-place halvings of "two" grads land once on the one tensor: eager/PyTorch
# halve it twice. Compiled step after call 3: p = 0.5 instead of eager/PyTorch 0.6.
# At 0d1d96a: right (traced every call).
def test_params_sharing_one_grad_after_the_trace():
    def scenario(wrap):
        p = ember.ones(3, requires_grad=True)
        q = ember.ones(3, requires_grad=True)
        opt = ember.optim.SGD([p, q], lr=0.1)

        def f():
            for t in (p, q):
                t.grad.mul_(0.5)
            opt.step()

        run = wrap(f)
        seen = []
        for i in range(8):
            if i >= 3:
                g = ember.full((3,), float(i + 1))
                p.grad = g
                q.grad = g
            else:
                p.grad = ember.full((3,), float(i + 1))
                q.grad = ember.full((3,), float(i + 2))
            run()
            seen.append([_np(p), _np(q), _np(p.grad), _np(q.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# PRE-EXISTING (fails at 0d1d96a too): `w.grad = x * 2` inside the compiled function, for a
# closed-over w the function does not otherwise read: the compiled calls never set w.grad (w
# is no param of the program, so the .grad mutation is not recorded). Eager/PyTorch: w.grad =
# 2*x of each call ([2, 2, 2] at call 1); compiled: [0, 0, 0] from the tracing call, forever.
def test_grad_assigned_to_a_tensor_the_function_does_not_read():
    def scenario(wrap):
        w = ember.ones(3, requires_grad=True)

        def f(x):
            w.grad = x * 2
            return x + 1

        run = wrap(f)
        seen = []
        for i in range(5):
            run(ember.full((3,), float(i)))
            seen.append([_np(w.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# PRE-EXISTING (fails at 0d1d96a too): a .grad set to a tensor the trace did not make (another
# param's .grad, moved over: `g = p.grad; p.grad = None; q.grad = g`) is not replayed: the
# compiled calls leave q.grad at the tracing call's tensor. Eager/PyTorch q.grad = [1, 1, 1] at
# call 1 (p.grad of that call); compiled [0, 0, 0].
@pytest.mark.parametrize("move", [False, True])
def test_grad_set_to_another_params_grad(move):
    def scenario(wrap):
        p = ember.ones(3, requires_grad=True)
        q = ember.ones(3, requires_grad=True)

        def f(x):
            g = p.grad
            if move:
                p.grad = None
            q.grad = g
            return q * x + p

        run = wrap(f)
        seen = []
        for i in range(8):
            p.grad = ember.full((3,), float(i))
            r = run(ember.ones(3))
            seen.append([_np(r), _np(q.grad), _np(p.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# PRE-EXISTING (fails at 0d1d96a too): a param whose .grad is another param (q.grad = p),
# an odd but legal assignment: SGD's step p -= lr * p.grad and q -= lr * q.grad eagerly reads
# p after p's update (q -= 0.5 * p_new); compiled with p's value before the step.
# Eager/PyTorch q = [1, 1, 1] at call 3; compiled [0.75, 0.75, 0.75].
def test_a_grad_that_is_another_param():
    def scenario(wrap):
        p = ember.ones(3, requires_grad=True)
        q = ember.full((3,), 2.0, requires_grad=True)
        opt = ember.optim.SGD([p, q], lr=0.5)
        run = wrap(lambda: opt.step())
        seen = []
        for i in range(8):
            p.grad = ember.full((3,), 1.0)
            q.grad = ember.full((3,), 1.0) if i < 3 else p
            run()
            seen.append([_np(p), _np(q)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# NEW (performance regression of cdd5beb): a function that reads a closed-over param's .grad
# but not the param itself (`x * w.grad`, `m.weight.grad.sum()`, a gradient-norm for logging)
# traces again on EVERY call, with the same .grad tensor each time, and after 8 recompiles runs
# eagerly. The .grad is bound by the param's path (GradOf(w)), but w itself is no param of the
# program (unused, dropped), so GradOf finds no owner and _bind_params says "freed". At
# 0d1d96a: 1 trace, then compiled calls.
@pytest.mark.parametrize("kind", ["closed_over_tensor", "module_weight", "grad_norm"])
def test_read_only_grad_function_compiles_once(kind):
    ember.manual_seed(0)
    w = ember.ones(3, requires_grad=True)
    w.grad = ember.full((3,), 2.0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    (m(ember.ones(2, 3)) ** 2).sum().backward()
    fns = {"closed_over_tensor": lambda x: x * w.grad,
           "module_weight": lambda x: m[0].weight.grad.sum() * x,
           "grad_norm": lambda x: sum((p.grad ** 2).sum() for p in m.parameters()).sqrt() * x}
    run = ember.compile(fns[kind])
    for _ in range(6):
        np.testing.assert_allclose(run(ember.ones(3)).numpy(), fns[kind](ember.ones(3)).numpy(), rtol=1e-6)
    assert len(run.report.traces) <= 2 and run.report.compiled_calls >= 4, \
        (len(run.report.traces), run.report.compiled_calls)


# NEW (regression of cdd5beb): a .grad bound by its param's path (GradOf) is taken whatever its
# shape and dtype: a .grad of another dtype or shape assigned later (ember's setter allows it;
# PyTorch refuses it at the assignment) makes eager ember's SGD.step raise ("gradient of dtype
# float64 does not match its parameter's dtype float32"), while the compiled step runs on:
# p silently becomes float64 ([-0.856, ...]) or the (1,) gradient is broadcast. At 0d1d96a the
# step traced again and raised as eagerly.
@pytest.mark.parametrize("kind", ["float64", "shape"])
def test_a_grad_of_another_dtype_or_shape_bound_by_path(kind):
    def scenario(wrap):
        p = ember.ones(3, requires_grad=True)
        opt = ember.optim.SGD([p], lr=0.1, momentum=0.9)
        run = wrap(lambda: opt.step())
        seen = []
        for i in range(6):
            if i < 3:
                p.grad = ember.full((3,), float(i + 1))
            elif kind == "float64":
                p.grad = ember.full((3,), float(i + 1), dtype=ember.float64)
            else:
                p.grad = ember.full((1,), float(i + 1))
            try:
                run()
                seen.append([False, _np(p), str(p.dtype)])
            except RuntimeError:
                seen.append([True, None, None])
        return seen
    eager, compiled, _ = _both(scenario)
    for i, (e, c) in enumerate(zip(eager, compiled)):
        assert e[0] == c[0], f"call {i}: eager raised {e[0]}, compiled raised {c[0]} (p = {c[1]}, {c[2]})"
        if not e[0]:
            assert e[2] == c[2]
            np.testing.assert_allclose(c[1], e[1], rtol=1e-5)


# PRE-EXISTING (fails at 0d1d96a too): p and q (both reached: closed over, or through an
# optimizer) share one .grad tensor g; the function replaces p's: `p.grad = p.grad.clone() * 2`.
# g is "the .grad of several" so it is held as a tensor (HeldGrad), but its conditions are
# taken after the trace, when p.grad is no longer g, so only "q.grad is g" is kept: every
# compiled call reads g again instead of p's current .grad. Eager/PyTorch p.grad = 2, 4, 8, ...;
# compiled 2, 2, 2, ...
@pytest.mark.parametrize("via_optimizer", [False, True])
def test_replacing_one_of_two_shared_grads(via_optimizer):
    def scenario(wrap):
        p = ember.zeros(4, requires_grad=True)
        q = ember.zeros(4, requires_grad=True)
        opt = ember.optim.SGD([p, q], lr=0.1)

        def body():
            if via_optimizer:
                opt.param_groups
            else:
                q
            p.grad = p.grad.clone() * 2

        run = wrap(body)
        g = ember.full((4,), 1.0)
        p.grad = g
        q.grad = g
        seen = []
        for _ in range(6):
            run()
            seen.append([_np(p.grad), _np(q.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# PRE-EXISTING (fails at 0d1d96a too; same class as test_grad_set_to_another_params_grad):
# swapping two .grads inside the function (`p.grad, q.grad = q.grad, p.grad`) is not
# replayed. Eager/PyTorch p.grad after calls 0, 1 = 10, 0 (swapped back and forth); compiled
# 10, 10. With q.grad None at the start, the compiled calls drop p's gradient altogether
# (eager call 1: q.grad = [0, 0, 0, 0]; compiled: None).
@pytest.mark.parametrize("other", ["tensor", "none"])
def test_swapping_two_grads(other):
    def scenario(wrap):
        p = ember.zeros(4, requires_grad=True)
        q = ember.zeros(4, requires_grad=True)

        def body():
            p.grad, q.grad = q.grad, p.grad

        run = wrap(body)
        seen = []
        for i in range(6):
            if i in (0, 3):
                p.grad = ember.full((4,), float(i))
                q.grad = ember.full((4,), float(i + 10)) if other == "tensor" else None
            run()
            seen.append([_np(p.grad), _np(q.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# NEW (regression of cdd5beb's grads_assigned): one tensor the trace makes, assigned as the .grad
# of two params (`t = x * 2; w.grad = t; v.grad = t`), or views of one made tensor assigned to
# each: eagerly (and in PyTorch) the two .grads are one tensor (`w.grad is v.grad`) or views of
# one base, and a write through one shows through the other. Each compiled call now gives each
# param a fresh tensor of its own: `w.grad is v.grad` False, and after `w.grad.add_(1)` v.grad
# keeps the old value (eager/PyTorch: 2*x + 1). At 0d1d96a: right (written into the shared tensor).
@pytest.mark.parametrize("how", ["same_tensor", "views_of_one"])
def test_one_made_tensor_assigned_as_two_grads(how):
    def scenario(wrap):
        w, v, f, x_of = two_grads_of_one_made_tensor(how)
        run = wrap(f)
        seen = []
        for i in range(5):
            run(x_of(i))
            shared = w.grad is v.grad if how == "same_tensor" else \
                (w.grad._base is not None and w.grad._base is v.grad._base)
            (w.grad if how == "same_tensor" else w.grad._base).add_(1)
            seen.append([shared, _np(w.grad), _np(v.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# PRE-EXISTING (fixed at the session's end): `w.grad = x` for an argument x: eagerly w.grad IS x
# (and shows later writes into x); compiled calls gave w.grad a copy. Eager/PyTorch: `w.grad is x`
# True, and after x.add_(1) w.grad = x + 1; compiled: False, and the old value.
def test_grad_set_to_an_argument_is_that_argument():
    def scenario(wrap):
        w = ember.ones(3, requires_grad=True)

        def f(x):
            w.grad = x
            return x * 1

        run = wrap(f)
        seen = []
        for i in range(6):
            x = ember.full((3,), float(i))
            run(x)
            identical = w.grad is x
            x.add_(1)
            seen.append([identical, _np(w.grad)])
        return seen
    eager, compiled, run = _both(scenario)
    _assert_same(eager, compiled)
    assert run.report.compiled_calls >= 4  # (the program sets the argument itself as the .grad)
