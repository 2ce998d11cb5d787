"""ember.compile and the state a function reads besides its tensor arguments: gradients left
in .grad, closed-over modules and optimizers, globals, object arguments, aliasing arguments
and views. Each case compares compiled calls with eager ones over several calls."""
import warnings

import numpy as np
import pytest

import ember
from ember import nn


def test_backward_inside_a_compiled_function_leaves_fresh_gradients_in_grad():
    w = ember.tensor([1.0, 2.0], requires_grad=True)

    def f(x):
        w.grad = None
        loss = (w * x).sum()
        loss.backward()
        return loss

    compiled = ember.compile(f)
    for i in range(4):
        compiled(ember.tensor([float(i), 10.0]))
        assert w.grad.tolist() == [float(i), 10.0]
    assert compiled.report.compiled_calls >= 2


def test_switching_a_closed_over_module_to_eval_retraces():
    net = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    step = ember.compile(lambda x: net(x))
    x = ember.ones(4, 3)
    step(x), step(x)
    net.eval()
    with ember.no_grad():
        np.testing.assert_allclose(step(x).numpy(), net(x).numpy(), rtol=1e-6)
    assert any("training flags of net" in r for r in step.report.recompiles)


def _sgd_step_pair():
    def make():
        ember.manual_seed(0)
        lin = nn.Linear(2, 1)
        return lin, ember.optim.SGD(lin.parameters(), lr=0.1)
    return make(), make()


def test_learning_rate_changes_from_a_scheduler_reach_the_compiled_step():
    (lin, opt), (ref, ref_opt) = _sgd_step_pair()
    schedule = ember.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    ref_schedule = ember.optim.lr_scheduler.StepLR(ref_opt, step_size=2, gamma=0.1)
    x, y = ember.randn(8, 2), ember.randn(8, 1)

    def step():
        opt.zero_grad()
        ((lin(x) - y) ** 2).mean().backward()
        opt.step()

    compiled = ember.compile(step)
    for _ in range(6):
        compiled()
        schedule.step()
        ref_opt.zero_grad()
        ((ref(x) - y) ** 2).mean().backward()
        ref_opt.step()
        ref_schedule.step()
    np.testing.assert_allclose(lin.weight.detach().numpy(), ref.weight.detach().numpy(), rtol=1e-5)
    assert any("hyperparameters of opt" in r for r in compiled.report.recompiles)
    # the reason names only what changed: the learning rate, not every hyperparameter
    changed = [r for r in compiled.report.recompiles if "hyperparameters of opt" in r][0]
    assert "lr 0.1 -> 0.010000000000000002;" in changed and "momentum" not in changed, changed
    # and from then on lr is an input of the program: the later changes compile nothing
    assert changed.endswith("runtime scalars): opt.param_groups[0]['lr']"), changed
    assert len(compiled.report.recompiles) == 1, compiled.report.recompiles


def test_freezing_a_closed_over_parameter_retraces():
    (lin, opt), _ = _sgd_step_pair()
    x, y = ember.randn(8, 2), ember.randn(8, 1)

    def step():
        opt.zero_grad()
        ((lin(x) - y) ** 2).mean().backward()
        opt.step()

    compiled = ember.compile(step)
    compiled(), compiled()
    lin.weight.requires_grad_(False)
    before = lin.weight.detach().numpy().copy()
    compiled()
    np.testing.assert_array_equal(lin.weight.detach().numpy(), before)


def test_arguments_sharing_memory_run_eagerly_and_stay_right():
    def f(a, b):
        a.add_(1)
        return b.sum()

    compiled = ember.compile(f)
    base = ember.zeros(2, 2)
    assert compiled(base, base[0]).item() == 2.0  # b sees a's update, as in eager
    x, y = ember.tensor([1.0, 2.0]), ember.tensor([10.0, 20.0])
    assert compiled(x, y).item() == 30.0 and x.tolist() == [2.0, 3.0]
    assert compiled.report.eager_calls == 1


def test_an_argument_that_is_also_a_closed_over_tensor_is_told_apart():
    w = ember.tensor([2.0, 3.0])
    compiled = ember.compile(lambda x: x * w)
    compiled(w), compiled(w)
    assert compiled(ember.ones(2)).tolist() == [2.0, 3.0]


def test_in_place_update_of_a_view_argument_reaches_its_base():
    def h(a):
        a.add_(1)

    compiled = ember.compile(h)
    for _ in range(3):
        base = ember.zeros(2, 2)
        compiled(base[:, 0])
        assert base.tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_global_python_values_and_module_settings_are_part_of_the_signature():
    global SCALE
    SCALE = 2.0
    compiled = ember.compile(lambda x: x * SCALE)
    assert compiled(ember.ones(1)).tolist() == [2.0]
    SCALE = 3.0
    assert compiled(ember.ones(1)).tolist() == [3.0]

    drop = ember.compile(nn.Dropout(0.5))
    drop(ember.ones(4)), drop(ember.ones(4))
    drop._orig_mod.p = 0.0
    assert drop(ember.ones(4)).tolist() == [1.0, 1.0, 1.0, 1.0]


class Config:
    def __init__(self, factor):
        self.factor = factor


def test_plain_attributes_of_object_arguments_are_part_of_the_signature():
    compiled = ember.compile(lambda x, config: x * config.factor)
    config = Config(2.0)
    compiled(ember.ones(1), config)
    config.factor = 5.0
    assert compiled(ember.ones(1), config).tolist() == [5.0]


def test_a_program_that_changes_every_call_falls_back_within_the_limit():
    w = ember.zeros(1)

    def count(x):
        w.add_(1)
        return x * int(w.item())  # the count is read back: every trace differs

    compiled = ember.compile(count, recompile_limit=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [compiled(ember.ones(1)).item() for _ in range(8)]
    assert results == [float(i) for i in range(1, 9)]
    assert compiled.report.fallback and len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1


# ----------------------------------------------------------------------------- values that alias updated memory

def test_copy_into_a_tensor_keeps_the_source_value_of_that_moment():
    w, b = ember.ones(2), ember.zeros(2)

    def f(x):
        b.copy_(w)  # b takes w's value now; w changes afterwards
        w.add_(x)
        return x * 2

    compiled = ember.compile(f)
    for i in range(4):
        compiled(ember.ones(2))
        assert b.tolist() == [float(i + 1)] * 2 and w.tolist() == [float(i + 2)] * 2
        assert not np.shares_memory(b.numpy(), w.numpy())
    assert compiled.report.compiled_calls >= 2


def test_a_returned_clone_of_a_param_taken_before_the_optimizer_step_keeps_the_old_value():
    ember.manual_seed(0)
    net = nn.Linear(3, 2)
    optimizer = ember.optim.SGD(net.parameters(), lr=0.1)

    def step(x):
        optimizer.zero_grad()
        loss = net(x).pow(2).mean()
        loss.backward()
        before = net.weight.detach().clone()
        optimizer.step()
        return loss, before

    compiled = ember.compile(step)
    x = ember.ones(4, 3)
    for _ in range(4):
        expected = net.weight.detach().numpy().copy()
        _, before = compiled(x)
        np.testing.assert_array_equal(before.numpy(), expected)
        assert not np.array_equal(net.weight.detach().numpy(), expected)  # the step moved it
    assert compiled.report.compiled_calls >= 2


def test_a_returned_view_of_an_updated_argument_is_compiled_and_shows_the_update():
    def f(x):
        y = x.view(-1)
        x.add_(1)
        return y

    compiled = ember.compile(f)
    x = ember.zeros(2, 3)
    for i in range(3):
        y = compiled(x)
        assert y.tolist() == [float(i + 1)] * 6 and np.shares_memory(y.numpy(), x.numpy())
    assert compiled.report.eager_calls == 0 and compiled.report.compiled_calls >= 1


def test_a_closed_over_tensor_that_is_only_written_receives_each_value():
    written = ember.zeros(4, 3)

    def f(x):
        written.copy_(x + 1)
        return x.sum()

    compiled = ember.compile(f)
    for i in range(3):
        compiled(ember.full((4, 3), float(i)))
        assert written.tolist() == [[float(i + 1)] * 3] * 4
    assert compiled.report.compiled_calls >= 1


def test_a_model_compiled_in_eval_mode_builds_its_backward_only_when_differentiated(monkeypatch):
    from ember.compiler.driver import Driver
    compiled_graphs = []
    original = Driver.compile
    monkeypatch.setattr(Driver, "compile", lambda self, graph, *a, **k: (compiled_graphs.append(graph.name),
                                                                         original(self, graph, *a, **k))[1])
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    compiled = ember.compile(model)
    for _ in range(3):  # grad mode on, params require grad: the outputs require grad, as eagerly
        out = compiled(ember.randn(3, 4))
    assert out.requires_grad
    before = len(compiled_graphs)
    assert not any("backward" in name for name in compiled_graphs), compiled_graphs
    out.sum().backward()  # the first backward() compiles the backward program, once
    assert len(compiled_graphs) == before + 1 and model[0].weight.grad is not None
    compiled(ember.randn(3, 4)).sum().backward()
    assert len(compiled_graphs) == before + 1


def test_adagrad_with_lr_decay_compiles_once_and_matches_eager():
    def run(compiled):
        ember.manual_seed(0)
        lin = nn.Linear(4, 2)
        opt = ember.optim.Adagrad(lin.parameters(), lr=0.1, lr_decay=0.05)
        x = ember.randn(8, 4)

        def step():
            opt.zero_grad()
            (lin(x) ** 2).mean().backward()
            opt.step()
        fn = ember.compile(step) if compiled else step
        for _ in range(12):
            fn()
        return lin.weight.detach().numpy(), fn
    expected, _ = run(False)
    got, compiled = run(True)
    assert len(compiled.report.programs) == 1 and compiled.report.fallback is None  # (no guard on the step)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RAdam", "NAdam", "Adamax"])
def test_compiled_adaptive_optimizers_follow_eager_closely(name):
    """Traced (not capturable) steps compute their step-dependent rates in float64, as eager code
    does in Python floats: RAdam's rho_t cancelled in float32 (drifting 2e-3 in 30 steps)."""
    def run(compiled):
        ember.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
        opt = getattr(ember.optim, name)(net.parameters(), lr=0.01)
        x, y = ember.randn(16, 6), ember.randn(16, 3)

        def step():
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
        fn = ember.compile(step) if compiled else step
        for _ in range(30):
            fn()
        return [p.detach().numpy() for p in net.parameters()]
    for expected, got in zip(run(False), run(True)):
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-7)
