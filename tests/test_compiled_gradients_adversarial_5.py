"""Fifth adversarial round on compiled gradients (session 2026-12-07, seventh): a closed-over
tensor that is, or is the base of, the .grad of another tensor the trace reads after it
(zero_grad(set_to_none=False) first) is held only while it still is that .grad
(external_names.HeldGrad, Tracer.grad_conditions). Each form here failed before: the program
went on zeroing and adding into a tensor that was no longer the .grad. Compiled ember vs eager
ember, whose numbers are PyTorch 2.13's."""
import numpy as np
import pytest

import ember


def _np(t):
    return None if t is None else np.asarray(t.detach().numpy(), dtype=np.float64).copy()


def _assert_same(got, want):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert (g is None) == (w is None), k
        if g is not None:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"record {k}")


def _both(scenario):
    return scenario(lambda f: f), scenario(ember.compile)


class _Holder:
    pass


def _set_then_deleted(comp, reach):
    """w.grad = mine at call 4, deleted at call 6; the step reaches the optimizer and w through
    `reach` ("object": h.opt, h.w; "list": stuff[0], stuff[1]), not by name."""
    w = ember.tensor([0.5, -1.0, 2.0], requires_grad=True)
    opt, mine = ember.optim.SGD([w], lr=0.1, momentum=0.9), ember.full((3,), 7.0)
    if reach == "object":
        h = _Holder()
        h.opt, h.w = opt, w

        def parts():
            return h.opt, h.w
    else:
        stuff = [opt, w]

        def parts():
            return stuff[0], stuff[1]

    def step(x):
        optimizer, weight = parts()
        optimizer.zero_grad(set_to_none=False)  # reads w.grad before w
        (weight * x).sum().backward()
        optimizer.step()
        return x.sum()

    fn, out = comp(step), []
    for i in range(8):
        if i == 4:
            w.grad = mine
        if i == 6:
            del w.grad
        fn(ember.full((3,), float(i + 1)))
        out += [_np(w.grad), _np(mine), _np(w), [float(w.grad is mine)]]
    return out


@pytest.mark.parametrize("reach", ["object", "list"])
def test_grad_held_when_the_optimizer_is_reached_through_an_object_or_a_list(reach):
    # Found: with the optimizer and w reached only as `h.opt` / `h.w` (or in a closed-over list),
    # `mine` was bound by a plain weak reference: after `del w.grad` the program kept zeroing and
    # adding into `mine` (step 6: eager leaves mine = [6,6,6], compiled made it [7,7,7])
    eager, compiled = _both(lambda comp: _set_then_deleted(comp, reach))
    _assert_same(compiled, eager)


def _shared_grad(comp):
    w1 = ember.tensor([0.5, -1.0, 2.0], requires_grad=True)
    w2 = ember.tensor([1.5, 1.0, -2.0], requires_grad=True)
    opt = ember.optim.SGD([w1, w2], lr=0.1)
    g = ember.zeros(3)

    def step(x):
        opt.zero_grad(set_to_none=False)
        (w1 * x + w2 * x).sum().backward()
        opt.step()
        return x.sum()

    fn, out = comp(step), []
    for i in range(6):
        if i == 2:
            w1.grad = g
            w2.grad = g  # one tensor, the .grad of two params
        if i == 4:
            w1.grad = None
        fn(ember.full((3,), float(i + 1)))
        out += [_np(w1.grad), _np(w2.grad), _np(g), _np(w1), _np(w2), [float(w1.grad is g)]]
    return out


def test_a_grad_shared_by_two_params_is_held_for_both():
    # Found: g was held for one of its two owners only; after `w1.grad = None` the program still
    # treated g as w1's grad (eager at step 4: w1.grad = new [5,5,5], g = [5,5,5]; compiled gave
    # [10,..] for both, and both weights the doubled gradient)
    eager, compiled = _both(_shared_grad)
    _assert_same(compiled, eager)


def _grad_is_a_view(comp):
    w = ember.tensor([0.5, -1.0, 2.0], requires_grad=True)
    buf = ember.zeros(6)
    opt = ember.optim.SGD([w], lr=0.1)

    def step(x):
        opt.zero_grad(set_to_none=False)
        (w * x).sum().backward()
        opt.step()
        return x.sum()

    fn, out = comp(step), []
    for i in range(7):
        if i == 2:
            w.grad = buf[:3]
        if i == 5:
            w.grad = buf[3:]
        fn(ember.full((3,), float(i + 1)))
        out += [_np(w.grad), _np(buf), _np(w)]
    return out


def test_a_grad_that_is_a_view_is_held_only_while_it_is_the_grad():
    # Found: a .grad that is a view (w.grad = buf[:3]) is bound through its base `buf`, which was
    # held by a plain weak reference: after `w.grad = buf[3:]` the old program ran on, zeroing and
    # adding into buf[:3] (eager buf = [5,5,5,6,6,6], compiled [6,6,6,6,6,6])
    eager, compiled = _both(_grad_is_a_view)
    _assert_same(compiled, eager)


def _grad_replaced_inside(comp):
    w = ember.tensor([0.5, -1.0, 2.0], requires_grad=True)
    opt = ember.optim.SGD([w], lr=0.1)
    history = []

    def step(x):
        opt.zero_grad(set_to_none=False)
        (w * x).sum().backward()
        opt.step()
        w.grad = w.grad.clone()  # the function itself gives w a new .grad
        return x.sum()

    fn, out = comp(step), []
    for i in range(6):
        history.append(w.grad)  # (keeps every old .grad alive)
        fn(ember.full((3,), float(i + 1)))
        out += [_np(w.grad), _np(w)] + [_np(h) for h in history]
    return out


def test_a_grad_the_function_replaces_is_not_bound_to_the_old_one():
    # Found: the function replaces w.grad, so the .grad it read first (and zeroed) was held by a
    # plain weak reference: kept alive by the caller, that old tensor was zeroed and added into
    # on later calls (eager: history[k] stays as it was)
    eager, compiled = _both(_grad_replaced_inside)
    _assert_same(compiled, eager)


def _shared_grad_read_after_its_params(comp):
    w1 = ember.tensor([0.5, -1.0, 2.0], requires_grad=True)
    w2 = ember.tensor([1.5, 1.0, -2.0], requires_grad=True)
    opt = ember.optim.SGD([w1, w2], lr=0.1)
    g = ember.zeros(3)
    w1.grad = g
    w2.grad = g

    def step(x):
        y = (w1 * x + w2 * x).sum()  # the params first
        opt.zero_grad(set_to_none=False)  # then their one .grad
        y.backward()
        opt.step()
        return x.sum()

    fn, out = comp(step), []
    for i in range(6):
        if i == 3:
            w2.grad = None
        fn(ember.full((3,), float(i + 1)))
        out += [_np(g), _np(w1), _np(w2), _np(w2.grad), [float(w2.grad is g)]]
    return out


def test_a_grad_shared_by_two_params_read_after_them_is_held_for_both():
    # Found by a review (pre-existing): read after both params, g was bound as w1's .grad alone;
    # after `w2.grad = None` the program went on adding both gradients into g ([8,8,8] for [4,4,4])
    eager, compiled = _both(_shared_grad_read_after_its_params)
    _assert_same(compiled, eager)
