"""The tracing (first) call of a compiled function runs eagerly: a backward() inside it must give
eager mode's gradients where the function writes in place into an argument. The gradient that
reaches such an argument is its value's at the call's start, so eager autograd must go on from
the history the argument had then, not from the newer one the in-place op gave it."""
import numpy as np
import pytest

import ember
from ember import nn


def _grads_over_calls(compiled, step_of, make_input, tensors, calls=3):
    step = step_of()
    run = ember.compile(step) if compiled else step
    seen = []
    for _ in range(calls):
        run(make_input())
        seen.append([None if t.grad is None else t.grad.numpy().copy() for t in tensors])
    return seen


def _assert_same(compiled, eager):
    for got_call, want_call in zip(compiled, eager):
        for got, want in zip(got_call, want_call):
            assert (got is None) == (want is None)
            if want is not None:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_argument_with_history_written_in_place_passes_its_start_value_gradient():
    def run(compiled):
        ember.manual_seed(0)
        model = nn.Linear(3, 2)
        s = ember.ones(1, requires_grad=True)

        def step_of():
            def step(x):
                x.mul_(2.0)
                (model(x) ** 2).mean().backward()
            return step
        return _grads_over_calls(compiled, step_of, lambda: ember.randn(4, 3) * s, [s, model.weight, model.bias])

    _assert_same(run(True), run(False))


@pytest.mark.parametrize("write", ["mul_", "add_", "slice_mul_"])
def test_an_argument_without_history_that_gains_one_in_place_passes_no_gradient_through_it(write):
    def run(compiled):
        s = ember.tensor([1.5, 2.0, -1.0], requires_grad=True)
        w = ember.tensor([0.5, 1.0, 2.0], requires_grad=True)

        def step_of():
            def step(x):
                if write == "mul_":
                    x.mul_(s)
                elif write == "add_":
                    x.add_(s * w)
                else:
                    x[1:].mul_(s[1:])
                (x * w).sum().backward()
            return step
        return _grads_over_calls(compiled, step_of, lambda: ember.tensor([1.0, 2.0, 3.0]), [s, w])

    _assert_same(run(True), run(False))


def test_the_first_call_gradient_against_a_float64_reference():
    # x = r * s, the function doubles x in place, loss = sum(x * c): d loss / d s = sum(2 r c)
    r = np.array([0.3, -1.2, 2.5], dtype=np.float32)
    c = np.array([1.0, 0.5, -2.0], dtype=np.float32)
    s = ember.tensor([1.0], requires_grad=True)

    def step(x):
        x.mul_(2.0)
        (x * ember.tensor(c)).sum().backward()

    ember.compile(step)(ember.tensor(r) * s)
    np.testing.assert_allclose(s.grad.numpy(), [np.sum(2.0 * r.astype(np.float64) * c)], rtol=1e-6)


def test_an_argument_made_to_require_grad_inside_still_gets_its_grad():
    def run(compiled):
        w = ember.tensor([0.5, 1.0, 2.0], requires_grad=True)
        made = []

        def step_of():
            def step(x):
                x.requires_grad_()
                made.append(x)
                (x * w).sum().backward()
            return step
        grads = _grads_over_calls(compiled, step_of, lambda: ember.tensor([1.0, 2.0, 3.0]), [w])
        return [g + [made[i].grad.numpy().copy()] for i, g in enumerate(grads)]

    _assert_same(run(True), run(False))
