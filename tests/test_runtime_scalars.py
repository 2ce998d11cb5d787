"""Runtime scalars (frontend/runtime_scalars.py): a float that changes between calls of a
compiled function (an optimizer's lr or momentum from a scheduler, a float argument) is an
input of the program after its first change; Python control flow on it stays exact."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ember
import ember.nn.functional as F
from ember import nn


def _programs(compiled):
    return len(compiled.report.programs)


def _check_same(fn, values, x):
    compiled = ember.compile(fn)
    for value in values:
        expected, got = fn(x.clone(), value), compiled(x.clone(), value)
        if isinstance(expected, tuple):
            for e, g in zip(expected, got):
                np.testing.assert_allclose(np.asarray(g.numpy() if isinstance(g, ember.Tensor) else g),
                                           np.asarray(e.numpy() if isinstance(e, ember.Tensor) else e),
                                           rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)
    return compiled


VALUES = [0.3, 0.7, 0.45, 0.9, 0.2, 0.55]


def test_a_float_argument_is_an_input_after_its_first_change():
    x = ember.randn(3, 5)
    compiled = _check_same(lambda x, s: x * (1 - s) ** 2 + s / 3 - x.clamp(max=s), VALUES, x)
    assert _programs(compiled) == 2  # the first call's static program, then one for every value
    assert "runtime scalars): s" in compiled.report.recompiles[0], compiled.report.recompiles


def test_a_branch_on_a_runtime_scalar_traces_each_outcome_once():
    compiled = _check_same(lambda x, s: x * 2 if s > 0.5 else x - s, VALUES, ember.randn(4))
    assert _programs(compiled) == 3  # static, then one dynamic program per outcome of `s > 0.5`


def test_uses_that_need_a_plain_number_pin_the_value():
    # float(), math functions and creation from a number give the value to Python: each value is
    # its own program, never a stale one
    for fn in (lambda x, s: x * float(s), lambda x, s: x * math.sqrt(s), lambda x, s: ember.full_like(x, s) + x,
               lambda x, s: x + ember.tensor(s), lambda x, s: x.clone().fill_(s)):
        compiled = _check_same(fn, VALUES, ember.randn(3))
        assert _programs(compiled) == len(VALUES)


def test_a_returned_runtime_scalar_is_its_value():
    compiled = _check_same(lambda x, s: (x * s, s), VALUES, ember.randn(3))
    assert _programs(compiled) == len(VALUES)


@pytest.mark.parametrize("name", ["leaky_relu", "elu", "hardtanh", "softplus", "lerp", "addcmul", "where",
                                  "masked_fill", "pow", "rpow", "smooth_l1"])
def test_float_arguments_of_tensor_ops(name):
    fn = {"leaky_relu": lambda x, s: F.leaky_relu(x, s), "elu": lambda x, s: F.elu(x, alpha=s),
          "hardtanh": lambda x, s: F.hardtanh(x, -s, s), "softplus": lambda x, s: F.softplus(x, beta=2 * s),
          "lerp": lambda x, s: ember.lerp(x, x * 3, s), "addcmul": lambda x, s: ember.addcmul(x, x, x, value=s),
          "where": lambda x, s: ember.where(x > 0, x, s), "masked_fill": lambda x, s: x.masked_fill(x > s, -s),
          "pow": lambda x, s: x.abs() ** s, "rpow": lambda x, s: s ** x,
          "smooth_l1": lambda x, s: F.smooth_l1_loss(x, x * 0.5, beta=s)}[name]
    compiled = _check_same(fn, VALUES, ember.randn(4, 3))
    assert _programs(compiled) <= 3


# ----------------------------------------------------------------------------- schedulers
def _schedule(name, opt, steps):
    S = ember.optim.lr_scheduler
    return {
        "StepLR": lambda: S.StepLR(opt, 3, 0.5),
        "MultiStepLR": lambda: S.MultiStepLR(opt, [2, 5, 9], 0.3),
        "ExponentialLR": lambda: S.ExponentialLR(opt, 0.9),
        "CosineAnnealingLR": lambda: S.CosineAnnealingLR(opt, steps),
        "CosineAnnealingWarmRestarts": lambda: S.CosineAnnealingWarmRestarts(opt, 4),
        "LinearLR": lambda: S.LinearLR(opt, 0.2, 1.0, total_iters=6),
        "ConstantLR": lambda: S.ConstantLR(opt, 0.5, total_iters=4),
        "PolynomialLR": lambda: S.PolynomialLR(opt, steps, 2.0),
        "LambdaLR": lambda: S.LambdaLR(opt, lambda epoch: 1 / (1 + epoch)),
        "MultiplicativeLR": lambda: S.MultiplicativeLR(opt, lambda epoch: 0.95),
        "OneCycleLR": lambda: S.OneCycleLR(opt, max_lr=0.05, total_steps=steps),
        "CyclicLR": lambda: S.CyclicLR(opt, 0.001, 0.05, step_size_up=3),
        "SequentialLR": lambda: S.SequentialLR(opt, [S.LinearLR(opt, 0.1, total_iters=4), S.ExponentialLR(opt, 0.9)],
                                               milestones=[4]),
        "ChainedScheduler": lambda: S.ChainedScheduler([S.ExponentialLR(opt, 0.95), S.StepLR(opt, 3, 0.5)]),
        "ReduceLROnPlateau": lambda: S.ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=10.0),
    }[name]()


def _train(compiled, optimizer, schedule, steps=16, lr=None):
    ember.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    lr = 0.01 if lr is None else lr()
    opt = (ember.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3) if optimizer == "SGD"
           else getattr(ember.optim, optimizer)(net.parameters(), lr=lr))
    sched = _schedule(schedule, opt, steps) if schedule else None
    criterion = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad()
        loss = criterion(net(x), y)
        loss.backward()
        opt.step()
        return loss

    fn = ember.compile(step) if compiled else step
    rng = np.random.default_rng(1)
    for i in range(steps):
        batch = 5 if i % 8 == 7 else 16  # a partial batch now and then
        x = ember.tensor(rng.standard_normal((batch, 6)).astype(np.float32))
        loss = fn(x, ember.tensor(rng.integers(0, 3, batch)))
        if sched is not None:
            sched.step(loss.item()) if schedule == "ReduceLROnPlateau" else sched.step()
    return [p.detach().numpy().copy() for p in net.parameters()], fn


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
@pytest.mark.parametrize("schedule", ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
                                      "CosineAnnealingWarmRestarts", "LinearLR", "ConstantLR", "PolynomialLR",
                                      "LambdaLR", "MultiplicativeLR", "OneCycleLR", "CyclicLR", "SequentialLR",
                                      "ChainedScheduler", "ReduceLROnPlateau"])
def test_a_training_loop_with_any_scheduler_compiles_its_step_a_bounded_number_of_times(optimizer, schedule):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (schedulers' own deprecation notes)
        expected, _ = _train(False, optimizer, schedule)
        got, compiled = _train(True, optimizer, schedule)
    report = compiled.report
    # at most: a static program, the dynamic one, and the partial batch's
    assert _programs(compiled) <= 3, report
    assert report.fallback is None and report.eager_calls == 0, report
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("optimizer", ["SGD", "Adam", "AdamW"])
def test_a_tensor_learning_rate_is_read_by_the_program_without_tracing_again(optimizer):
    expected, _ = _train(False, optimizer, "ExponentialLR", lr=lambda: ember.tensor(0.01))
    got, compiled = _train(True, optimizer, "ExponentialLR", lr=lambda: ember.tensor(0.01))
    assert _programs(compiled) <= 2  # the full batch and the partial one
    assert not any("hyperparameters" in r for r in compiled.report.recompiles), compiled.report
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-6)


def test_replacing_a_tensor_hyperparameter_traces_again():
    lin = nn.Linear(2, 1)
    opt = ember.optim.SGD(lin.parameters(), lr=ember.tensor(0.1))
    x = ember.ones(4, 2)

    def step():
        opt.zero_grad()
        lin(x).sum().backward()
        opt.step()

    compiled = ember.compile(step)
    compiled()
    compiled()
    before = lin.weight.detach().numpy().copy()
    opt.param_groups[0]["lr"] = ember.tensor(0.0)  # a new tensor object: the old one must not be read
    compiled()
    np.testing.assert_array_equal(lin.weight.detach().numpy(), before)


def test_a_gradient_made_before_two_guards_reaches_the_last_segment():
    """backward() inside the trace, then two branches on tensor values, then a read of .grad:
    the gradient is carried across both segments (it was once dropped: a KeyError)."""
    lin = nn.Linear(3, 2)

    def fn(x):
        lin.zero_grad()
        loss = lin(x).sum()
        loss.backward()
        scale = 2.0 if loss > -1e9 else 3.0
        if x.sum() > -1e9:
            scale += 1
        return lin.weight.grad * scale

    compiled = ember.compile(fn)
    for _ in range(3):
        x = ember.randn(4, 3)
        np.testing.assert_allclose(compiled(x).numpy(), fn(x).numpy(), rtol=1e-6)


# ----------------------------------------------------------------------------- random programs
_STEPS = [
    lambda v, s, c: v * (s + c),
    lambda v, s, c: v - s * c,
    lambda v, s, c: v / (abs(s) + 1),
    lambda v, s, c: ember.where(v > s, v, s - c),
    lambda v, s, c: v * 2 if s > c else v + 1,
    lambda v, s, c: v.clamp(max=s + c),
    lambda v, s, c: v.lerp(v * 2, s),
    lambda v, s, c: v + (1 - s) ** 2,
    lambda v, s, c: v * max(s, c),
    lambda v, s, c: v.add(v, alpha=-s),
]


@settings(max_examples=40, deadline=None)
@given(program=st.lists(st.tuples(st.integers(0, len(_STEPS) - 1), st.floats(-1, 1)), min_size=1, max_size=5),
       values=st.lists(st.floats(-2, 2).filter(lambda v: abs(v) > 1e-3), min_size=2, max_size=5))
def test_random_programs_of_a_runtime_scalar_equal_eager(program, values):
    def fn(x, s):
        v = x
        for index, c in program:
            v = _STEPS[index](v, s, c)
        return v

    x = ember.tensor(np.linspace(-1.5, 1.5, 6, dtype=np.float32))
    compiled = ember.compile(fn, recompile_limit=32)
    for value in values:
        np.testing.assert_allclose(compiled(x, value).numpy(), fn(x, value).numpy(), rtol=1e-5, atol=1e-6)
    assert compiled.report.fallback is None


def test_a_module_setting_such_as_a_dropout_probability_is_an_input_after_its_first_change():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.drop, self.act = nn.Linear(6, 6), nn.Dropout(0.1), nn.LeakyReLU(0.1)

        def forward(self, x):
            return self.act(self.drop(self.lin(x)))

    model = Net()
    compiled = ember.compile(model)
    x = ember.randn(400, 6)
    for p in (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.4):
        model.drop.p, model.act.negative_slope = p, p / 2
        out = compiled(x)
        assert abs(float((out == 0).float().mean()) - p) < 0.05, p  # the program drops with this p
    assert _programs(compiled) == 2
    assert {"self.drop.p", "self.act.negative_slope"} <= set(compiled.report.runtime_scalars)
    model.eval()  # no dropout: the slope still reaches the program
    np.testing.assert_allclose(compiled(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-6)
    model.train()
    model.drop.p = 0.0  # dropout's `p == 0` branch: traced again, and the report names the test
    np.testing.assert_allclose(compiled(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-6)
    assert compiled.report.recompiles[-1].endswith("; self.drop.p == 0.0: False -> True"), compiled.report.recompiles


# ----------------------------------------------------------------------------- adversarial findings
def _same_over(fn, args_of, values, check=None):
    compiled = ember.compile(fn, recompile_limit=32)
    for value in values:
        expected, got = fn(*args_of(value)), compiled(*args_of(value))
        np.testing.assert_allclose(np.asarray(got.numpy()), np.asarray(expected.numpy()), rtol=1e-6)
    return compiled


def test_a_float_in_a_container_the_function_writes_stays_a_python_value():
    def fn(x, state):
        state["calls"] += 1
        return x * state["s"] + state["calls"]
    eager_state, compiled_state = {"s": 0.0, "calls": 0}, {"s": 0.0, "calls": 0}
    compiled = ember.compile(fn)
    for value in (0.1, 0.2, 0.3, 0.4):
        eager_state["s"] = compiled_state["s"] = value
        np.testing.assert_allclose(compiled(ember.ones(2), compiled_state).numpy(),
                                   fn(ember.ones(2), eager_state).numpy(), rtol=1e-6)
    assert compiled_state == eager_state


def test_a_float_in_a_namedtuple_or_a_list_is_read_at_each_value():
    from collections import namedtuple
    Pair = namedtuple("Pair", "a b")
    _same_over(lambda x, p: x * p.a + p.b, lambda v: (ember.ones(2), Pair(v, 1.0)), (0.1, 0.2, 0.3, 0.7))
    _same_over(lambda x, p: x * p[0], lambda v: (ember.ones(2), [v]), (0.1, 0.2, 0.3))


def test_text_isinstance_and_signed_zero_of_a_runtime_scalar():
    table = {}

    def keyed(x, s):  # a key made from the float's text
        return x * table.setdefault(f"{s}", len(table) + 1)
    _same_over(keyed, lambda v: (ember.ones(1), v), (0.1, 0.2, 0.3, 0.1))
    _same_over(lambda x, s: x * 2 if isinstance(s, float) else x, lambda v: (ember.ones(1), v), (0.5, 0.25, 2.0))
    compiled = ember.compile(lambda x, s: 1.0 / (x * s))
    assert compiled(ember.ones(1), 0.0).item() == np.inf and compiled(ember.ones(1), -0.0).item() == -np.inf
    _same_over(lambda x, s: x * math.copysign(1.0, s), lambda v: (ember.ones(1), v), (1.0, 2.0, 0.0, -0.0))
    _same_over(lambda x, s: x + ember.arange(0, s), lambda v: (ember.ones(1), v), (1.5, 2.5, 3.0))


def test_python_arithmetic_that_raises_raises_compiled_too():
    compiled = ember.compile(lambda x, m: x * (1.0 / (1.0 - m)))
    for value in (0.5, 0.9):
        compiled(ember.ones(1), value)
    with pytest.raises(ZeroDivisionError):
        compiled(ember.ones(1), 1.0)


def test_a_runtime_scalar_stored_on_the_module_is_its_value_after_each_call():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.temperature = nn.Linear(2, 2), 1.0

        def forward(self, x, t):
            self.temperature = t
            return self.lin(x) / t

    model = Scaled()
    compiled = ember.compile(model)
    for value in (0.1, 0.2, 0.3, 0.4):
        compiled(ember.ones(1, 2), value)
        assert model.temperature == value


def test_pow_keeps_its_special_exponents_and_an_integer_tensor_squared_by_a_float_is_float():
    x = ember.tensor([-0.0, 4.0, 9.0])
    _same_over(lambda x, s: x ** s, lambda v: (x, v), (-1.0, -0.5, 3.0, 2.0, 0.5))
    squared = ember.tensor([1, 2, 3]) ** 2.0
    assert squared.dtype == ember.float32 and squared.tolist() == [1.0, 4.0, 9.0]


@pytest.mark.parametrize("name", ["normal", "normal_", "uniform_", "bernoulli", "gaussian_nll", "divmod",
                                  "is_integer", "deepcopy"])
def test_python_and_library_uses_of_a_runtime_scalar_work(name):
    import copy
    fn = {"normal": lambda x, s: x + ember.normal(s, 1.0, size=(1,)) * 0,
          "normal_": lambda x, s: x.clone().normal_(s, 1.0) * 0 + x,
          "uniform_": lambda x, s: x.clone().uniform_(-s, s).abs().le(s).float(),
          "bernoulli": lambda x, s: ember.bernoulli(x * 0, s) * 0 + x,
          "gaussian_nll": lambda x, s: F.gaussian_nll_loss(x, x * 0, ember.full_like(x, s)),
          "divmod": lambda x, s: x * divmod(s, 0.15)[1],
          "is_integer": lambda x, s: x * (s * 10).is_integer(),
          "deepcopy": lambda x, s: x * copy.deepcopy(s)}[name]
    _same_over(fn, lambda v: (ember.ones(3) * 0.5, v), (0.1, 0.2, 0.3))


def test_list_valued_hyperparameters_are_guarded():
    lin = nn.Linear(3, 1)
    opt = ember.optim.Adam(lin.parameters(), lr=0.1, betas=[0.9, 0.999])
    ref = nn.Linear(3, 1)
    ref.load_state_dict(lin.state_dict())
    ref_opt = ember.optim.Adam(ref.parameters(), lr=0.1, betas=[0.9, 0.999])
    x = ember.ones(4, 3)

    def step(model, optimizer):
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()

    compiled = ember.compile(lambda: step(lin, opt))
    for i in range(6):
        if i == 3:
            opt.param_groups[0]["betas"] = [0.5, 0.9]
            ref_opt.param_groups[0]["betas"] = [0.5, 0.9]
        compiled()
        step(ref, ref_opt)
    np.testing.assert_allclose(lin.weight.detach().numpy(), ref.weight.detach().numpy(), rtol=1e-5)


def test_a_test_made_by_a_later_trace_keeps_earlier_programs_reachable():
    def fn(x, s):
        if s > 0.5:
            if s > 0.8:  # (a test the first dynamic trace never met)
                return x * 3
            return x * 2
        return x
    compiled = _same_over(fn, lambda v: (ember.ones(2), v), (0.1, 0.2, 0.9, 0.3, 0.6, 0.2, 0.95, 0.7, 0.1))
    assert len(compiled.report.traces) == 4  # the static first call, then one per path


def test_a_tree_extended_past_a_tensor_guard_by_a_trace_that_makes_a_test_serves_that_outcome_only():
    def fn(x, a):
        if x.sum() > 0:  # a guard on a tensor value
            return x * 2
        if a > 0.5:  # a runtime-scalar test met only on the other path
            return x + 1
        return x - 1
    compiled = ember.compile(fn)
    pos, neg = ember.ones(3), -ember.ones(3)
    for x, a in [(pos, 0.1), (pos, 0.2), (neg, 0.9), (neg, 0.1), (pos, 0.7), (neg, 0.95), (neg, 0.05)]:
        np.testing.assert_array_equal(compiled(x, a).numpy(), fn(x, a).numpy())
