"""The tracer's eager values (frontend/trace_values.py): an op's result held weakly, freed when
nothing else holds it, and computed again from its inputs if a later backward() needs it."""
import gc

import numpy as np

import ember
from ember.frontend.trace_values import TraceValues
from ember.ir import Graph


def _chain():
    graph = Graph("chain")
    a = graph.add_input((4,), "float32", "a")
    b = graph.add_node("exp", [a], (4,), "float32")
    c = graph.add_node("mul", [b, b], (4,), "float32")
    return graph, a, b, c


def test_a_freed_value_is_computed_again_from_its_inputs():
    graph, a, b, c = _chain()
    values = TraceValues(graph)
    x = np.linspace(-1, 1, 4, dtype=np.float32)
    values.remember(a, x)
    b_value = np.exp(x)
    values.remember(b, b_value, weak=True)
    c_value = b_value * b_value
    values.remember(c, c_value, weak=True)
    assert values.value(c) is c_value  # (alive: the array itself)
    del b_value, c_value
    gc.collect()
    np.testing.assert_allclose(values.value(c), np.exp(x) ** 2, rtol=1e-6)
    assert values.recomputed == 2  # (b, then c from it)


def test_a_value_about_to_be_overwritten_is_copied_first():
    graph, a, b, _ = _chain()
    values = TraceValues(graph)
    x = np.ones(4, np.float32)
    values.remember(a, x)
    out = np.exp(x)
    values.remember(b, out, weak=True)
    values.before_write(out)  # (an in-place op is about to write into out's memory)
    out[:] = 0
    np.testing.assert_allclose(values.value(b), np.exp(1.0), rtol=1e-6)
    values.before_write(x)  # (a placeholder's memory, held strongly: copied too)
    x[:] = 5
    np.testing.assert_allclose(values.value(a), 1)


def test_new_nodes_are_evaluated_and_only_the_kept_ones_stay_held():
    graph, a, b, c = _chain()
    values = TraceValues(graph)
    x = np.linspace(0, 1, 4, dtype=np.float32)
    values.remember(a, x)
    held = values.evaluate_new_nodes({c})
    assert set(held) == {c}
    np.testing.assert_allclose(held[c], np.exp(x) ** 2, rtol=1e-6)
    gc.collect()
    assert values._freed(b) and not values._freed(c)  # (b only fed c; nothing holds it)
    np.testing.assert_allclose(values.value(b), np.exp(x), rtol=1e-6)  # (computed again on demand)


def test_a_traced_training_step_frees_its_temporaries_and_matches_eager():
    # the optimizer's temporaries and the gradients' intermediates die during the trace; the
    # traced call's own results (its eager values) equal an eager step's
    def make():
        ember.manual_seed(0)
        model = ember.nn.Sequential(ember.nn.Linear(5, 7), ember.nn.Tanh(), ember.nn.Linear(7, 2))
        opt = ember.optim.Adam(model.parameters(), lr=0.05)

        def step(x):
            loss = (model(x) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss
        return model, step
    x = ember.randn(6, 5)
    model, step = make()
    twin, eager_step = make()
    compiled = ember.compile(step)
    for _ in range(3):
        np.testing.assert_allclose(compiled(x).item(), eager_step(x).item(), rtol=1e-5)
    for a, b in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_no_grad_view_of_a_value_freed_before_backward_reads_it_again():
    # v is made under no_grad from a buffer later overwritten with a value that dies; the
    # stop_gradient the backward reads stands for it (it was None: a crash at the first call)
    w = ember.nn.Parameter(ember.tensor([1.0, 2.0, 3.0, 4.0]))

    def step(x):
        buf = ember.zeros(4)
        with ember.no_grad():
            v = buf[:2]
            buf.copy_(w * x)
        loss = (w[:2] * v).sum()
        loss.backward()
        g = w.grad
        w.grad = None
        return loss, g
    x = ember.tensor([1.0, -1.0, 2.0, 0.5])
    want = [t.detach().numpy() for t in step(x)]
    compiled = ember.compile(step)
    for _ in range(3):
        for got, expected in zip(compiled(x), want):
            np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-6)


def test_soft_targets_adjusted_in_place_under_no_grad():
    def make():
        ember.manual_seed(0)
        model = ember.nn.Linear(4, 3)
        opt = ember.optim.SGD(model.parameters(), lr=0.1)

        def step(x):
            with ember.no_grad():
                target = model(x).softmax(-1)
                target.clamp_(min=0.2)
            loss = -(target * model(x).log_softmax(-1)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss
        return step
    x = ember.randn(2, 4)
    eager, compiled = make(), ember.compile(make())
    for _ in range(4):
        np.testing.assert_allclose(compiled(x).item(), eager(x).item(), rtol=1e-6)


def test_equal_numbers_made_as_tensors_stay_apart():
    # only the numbers wrapped for an op share a node; tensors the function makes and returns
    # are their own memory on every call
    def f(x):
        return x * 0.5 + 0.5, ember.tensor(0.5), ember.tensor(0.5)
    compiled = ember.compile(f)
    for _ in range(3):
        y, a, b = compiled(ember.ones(3))
        a.add_(1)
        assert b.item() == 0.5 and a.item() == 1.5
        np.testing.assert_allclose(y.numpy(), 1.0)


def _run_steps(make_step, calls=4):
    eager, compiled = make_step(), ember.compile(make_step())
    for _ in range(calls):
        for got, want in zip(compiled(ember.tensor([0.0, 2.0, 3.0])), eager(ember.tensor([0.0, 2.0, 3.0]))):
            np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-6)


def test_a_gradient_that_is_the_seed_does_not_alias_an_equal_tensor_of_the_code():
    # d loss / d bias is backward()'s seed 1.0 itself; a tensor(1.0) the code made must stay its own
    def make_step():
        bias = ember.nn.Parameter(ember.tensor(3.0))
        opt = ember.optim.SGD([bias], lr=0.1)

        def step(x):
            one = ember.tensor(1.0)
            loss = (x - one).relu().mean() + bias
            opt.zero_grad()
            loss.backward()
            bias.grad.mul_(0.5)
            opt.step()
            return one * 10, loss
        return step
    _run_steps(make_step)


def test_two_seeds_give_two_gradients():
    def make_step():
        a, b = ember.nn.Parameter(ember.tensor(1.0)), ember.nn.Parameter(ember.tensor(2.0))
        opt = ember.optim.SGD([a, b], lr=1.0)

        def step(x):
            opt.zero_grad()
            (a + x.sum()).backward()
            (b + x.mean()).backward()
            ember.nn.utils.clip_grad_norm_([a, b], 0.5)
            opt.step()
            return a.detach().clone(), b.detach().clone()
        return step
    _run_steps(make_step)


def test_unrolled_steps_and_a_retained_graph_read_after_writes_give_eager_results():
    # two steps unrolled in one call (the optimizer writes params the first backward read), then
    # a retained graph backwarded again after a write into a value it does not save
    def make():
        ember.manual_seed(0)
        w = ember.nn.Parameter(ember.randn(4, 3))
        b = ember.nn.Parameter(ember.randn(3))
        opt = ember.optim.SGD([w, b], lr=0.1, momentum=0.9)

        def step(x):
            for _ in range(2):
                loss = ((x @ w + b).tanh() ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            h = x @ w + b  # (add's backward reads no value: b may change in between)
            total = h.sum()
            total.backward(retain_graph=True)
            with ember.no_grad():
                b.add_(1.0)
            total.backward()
            return loss, w.grad.clone(), b.grad.clone()
        return step
    x = ember.randn(5, 4)
    eager, compiled = make(), ember.compile(make())
    for _ in range(3):
        for got, want in zip(compiled(x), eager(x)):
            np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-6)
