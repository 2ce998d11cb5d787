"""ember.optim.lr_scheduler: learning-rate sequences against closed-form formulas and PyTorch's
published values, ReduceLROnPlateau on crafted metric sequences, momentum cycling, composition,
state_dict round trips and error messages."""
import math
import warnings

import numpy as np
import pytest

import ember
from ember.optim import SGD, Adam
from ember.optim import lr_scheduler as sched


def _optimizer(lrs=(0.05,), cls=SGD, **options):
    groups = [{"params": [ember.zeros(2, requires_grad=True)], "lr": lr} for lr in lrs]
    return cls(groups, lr=lrs[0], **options)


def _lrs(optimizer, scheduler, epochs):
    """The lr of every group at epochs 0..epochs-1, stepping the optimizer first as PyTorch asks."""
    out = []
    for _ in range(epochs):
        out.append(list(scheduler.get_last_lr()))
        assert out[-1] == [group["lr"] for group in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    return np.array(out)


def _closed(fn, base_lrs, epochs):
    return np.array([[fn(base, e) for base in base_lrs] for e in range(epochs)])


# ----------------------------------------------------------------------------- formula schedulers

def test_step_lr():
    opt = _optimizer((0.05, 0.5))
    got = _lrs(opt, sched.StepLR(opt, step_size=3, gamma=0.1), 10)
    np.testing.assert_allclose(got, _closed(lambda b, e: b * 0.1 ** (e // 3), (0.05, 0.5), 10), rtol=1e-12)


def test_multistep_lr_counts_repeated_milestones():
    opt = _optimizer()
    got = _lrs(opt, sched.MultiStepLR(opt, milestones=[2, 5, 5, 8], gamma=0.5), 10)
    expected = _closed(lambda b, e: b * 0.5 ** sum(m <= e for m in [2, 5, 5, 8]), (0.05,), 10)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_exponential_lr():
    opt = _optimizer((1.0, 0.1))
    got = _lrs(opt, sched.ExponentialLR(opt, gamma=0.9), 8)
    np.testing.assert_allclose(got, _closed(lambda b, e: b * 0.9 ** e, (1.0, 0.1), 8), rtol=1e-12)


def test_cosine_annealing_recursive_form_matches_closed_form_over_several_periods():
    opt = _optimizer((0.05, 0.2))
    t_max, eta_min = 5, 0.001
    got = _lrs(opt, sched.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min), 3 * t_max + 2)
    expected = _closed(lambda b, e: eta_min + (b - eta_min) * (1 + math.cos(math.pi * e / t_max)) / 2,
                       (0.05, 0.2), 3 * t_max + 2)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)
    assert got[t_max, 0] == pytest.approx(eta_min) and got[2 * t_max, 0] == pytest.approx(0.05)


def test_lambda_lr_with_one_function_per_group():
    opt = _optimizer((0.05, 0.5))
    scheduler = sched.LambdaLR(opt, lr_lambda=[lambda e: 0.95 ** e, lambda e: 1 / (1 + e)])
    got = _lrs(opt, scheduler, 6)
    expected = np.array([[0.05 * 0.95 ** e, 0.5 / (1 + e)] for e in range(6)])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas, but got 3"):
        sched.LambdaLR(opt, lr_lambda=[lambda e: 1.0] * 3)


def test_multiplicative_lr_multiplies_from_the_current_lr():
    opt = _optimizer()
    got = _lrs(opt, sched.MultiplicativeLR(opt, lr_lambda=lambda e: 1 - 0.1 * (e % 3)), 7)
    expected, lr = [], 0.05
    for e in range(7):
        if e > 0:
            lr *= 1 - 0.1 * (e % 3)
        expected.append([lr])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_linear_lr_warmup():
    opt = _optimizer()
    got = _lrs(opt, sched.LinearLR(opt, start_factor=0.25, end_factor=1.0, total_iters=4), 8)
    expected = _closed(lambda b, e: b * (0.25 + 0.75 * min(e, 4) / 4), (0.05,), 8)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_constant_lr():
    opt = _optimizer()
    got = _lrs(opt, sched.ConstantLR(opt, factor=0.5, total_iters=3), 6)
    np.testing.assert_allclose(got[:, 0], [0.025, 0.025, 0.025, 0.05, 0.05, 0.05], rtol=1e-12)


def test_polynomial_lr():
    opt = _optimizer()
    got = _lrs(opt, sched.PolynomialLR(opt, total_iters=4, power=2.0), 7)
    expected = _closed(lambda b, e: b * (1 - min(e, 4) / 4) ** 2, (0.05,), 7)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)


def test_cosine_annealing_warm_restarts_with_growing_periods():
    opt = _optimizer()
    got = _lrs(opt, sched.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2, eta_min=0.01), 14)
    expected, t_cur, t_i = [], 0, 2
    for _ in range(14):  # periods 2, 4, 8: restarts at epochs 2 and 6
        expected.append([0.01 + (0.05 - 0.01) * (1 + math.cos(math.pi * t_cur / t_i)) / 2])
        t_cur += 1
        if t_cur >= t_i:
            t_cur, t_i = 0, t_i * 2
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[2, 0] == pytest.approx(0.05) and got[6, 0] == pytest.approx(0.05)


def test_stepping_to_an_epoch_uses_the_closed_form_and_warns():
    opt = _optimizer()
    scheduler = sched.StepLR(opt, step_size=2, gamma=0.1)
    opt.step()
    with pytest.warns(UserWarning, match="The epoch parameter in `scheduler.step\\(\\)` was not necessary"):
        scheduler.step(5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.1 ** 2)


def test_scheduler_records_initial_lr_and_base_lrs():
    opt = _optimizer((0.05, 0.5))
    scheduler = sched.ExponentialLR(opt, gamma=0.5)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.05, 0.5]
    assert scheduler.base_lrs == [0.05, 0.5] and scheduler.last_epoch == 0
    with pytest.raises(KeyError, match=r"param 'initial_lr' is not specified in param_groups\[0\] when resuming"):
        sched.StepLR(_optimizer(), step_size=2, last_epoch=3)


def test_stepping_the_scheduler_before_the_optimizer_warns():
    opt = _optimizer()
    scheduler = sched.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match="Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`"):
        scheduler.step()


def test_get_lr_outside_step_points_to_get_last_lr():
    opt = _optimizer()
    scheduler = sched.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match="please use `get_last_lr\\(\\)`"):
        scheduler.get_lr()


# ----------------------------------------------------------------------------- OneCycleLR

def _one_cycle_reference(step, total, max_lr, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, anneal="cos"):
    def anneal_fn(start, end, pct):
        if anneal == "cos":
            return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2
        return start + (end - start) * pct

    initial = max_lr / div_factor
    warmup_end = pct_start * total - 1
    if step <= warmup_end:
        return anneal_fn(initial, max_lr, step / warmup_end)
    return anneal_fn(max_lr, initial / final_div_factor, (step - warmup_end) / (total - 1 - warmup_end))


def test_one_cycle_known_values():
    opt = _optimizer(cls=SGD, momentum=0.9)
    scheduler = sched.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    got = _lrs(opt, scheduler, 10)[:, 0]
    np.testing.assert_allclose(got[:3], [0.04, 0.52, 1.0], rtol=1e-12)  # warm-up: 1/25, midpoint, peak
    assert got[-1] == pytest.approx(4e-6, rel=1e-12)  # 1/25/1e4 at the last step
    np.testing.assert_allclose(got, [_one_cycle_reference(s, 10, 1.0) for s in range(10)], rtol=1e-12)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
def test_one_cycle_from_epochs_and_steps_per_epoch(anneal):
    opt = _optimizer((0.1, 0.1))
    scheduler = sched.OneCycleLR(opt, max_lr=[0.5, 2.0], epochs=4, steps_per_epoch=5, pct_start=0.25,
                                 anneal_strategy=anneal, div_factor=10.0, final_div_factor=100.0)
    assert scheduler.total_steps == 20
    got = _lrs(opt, scheduler, 20)
    expected = [[_one_cycle_reference(s, 20, m, 0.25, 10.0, 100.0, anneal) for m in (0.5, 2.0)] for s in range(20)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="Tried to step 21 times. The specified number of total steps is 20"):
        scheduler.step()


def test_one_cycle_three_phase():
    opt = _optimizer()
    scheduler = sched.OneCycleLR(opt, max_lr=1.0, total_steps=20, pct_start=0.25, three_phase=True,
                                 anneal_strategy="linear", cycle_momentum=False)
    got = _lrs(opt, scheduler, 20)[:, 0]
    # up over steps 0..4, down to initial over 4..8, then to initial/1e4 over 8..19
    expected = [0.04 + 0.96 * s / 4 if s <= 4 else 1.0 - 0.96 * (s - 4) / 4 if s <= 8
                else 0.04 + (4e-6 - 0.04) * (s - 8) / 11 for s in range(20)]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_one_cycle_cycles_sgd_momentum_and_adam_beta1():
    sgd = _optimizer(cls=SGD, momentum=0.9)
    scheduler = sched.OneCycleLR(sgd, max_lr=1.0, total_steps=10)
    momenta = []
    for _ in range(10):
        momenta.append(sgd.param_groups[0]["momentum"])
        sgd.step()
        if len(momenta) < 10:
            scheduler.step()
    # momentum runs opposite to the lr: 0.95 -> 0.85 at the peak -> back to 0.95
    assert momenta[0] == pytest.approx(0.95) and momenta[2] == pytest.approx(0.85)
    assert momenta[-1] == pytest.approx(0.95)
    np.testing.assert_allclose(momenta[1], 0.85 + (0.95 - 0.85) / 2, rtol=1e-12)

    adam = _optimizer(cls=Adam, betas=(0.9, 0.99))
    sched.OneCycleLR(adam, max_lr=1.0, total_steps=10, max_momentum=0.9, base_momentum=0.8)
    assert adam.param_groups[0]["betas"] == (0.9, 0.99)
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        sched.OneCycleLR(_optimizer(cls=ember.optim.Adagrad), max_lr=1.0, total_steps=10)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_lr=1.0), r"You must define either total_steps OR \(epochs AND steps_per_epoch\)"),
    (dict(max_lr=1.0, total_steps=0), "Expected positive integer total_steps, but got 0"),
    (dict(max_lr=1.0, epochs=2, steps_per_epoch=-1), "Expected positive integer steps_per_epoch, but got -1"),
    (dict(max_lr=1.0, total_steps=10, pct_start=1.5), "Expected float between 0 and 1 pct_start, but got 1.5"),
    (dict(max_lr=1.0, total_steps=10, anneal_strategy="cosine"),
     "anneal_strategy must be one of 'cos' or 'linear', instead got cosine"),
    (dict(max_lr=[1.0, 2.0], total_steps=10),
     "max_lr must have the same length as optimizer.param_groups. max_lr has 2 values, param_groups has 1."),
])
def test_one_cycle_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sched.OneCycleLR(_optimizer(momentum=0.9), **kwargs)


# ----------------------------------------------------------------------------- ReduceLROnPlateau

def _plateau_lrs(scheduler, optimizer, metrics):
    out = []
    for metric in metrics:
        optimizer.step()
        scheduler.step(metric)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_reduce_on_plateau_with_patience_and_cooldown():
    opt = _optimizer((1.0,))
    scheduler = sched.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2, cooldown=1)
    # best 9 from epoch 2; bad epochs 3,4,5 -> cut at 5; epoch 6 is cooldown; bad 7,8,9 -> cut at 9
    got = _plateau_lrs(scheduler, opt, [10, 9, 9, 9, 9, 9, 9, 9, 9, 8])
    assert got == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert scheduler.best == 8 and scheduler.get_last_lr() == [0.25]


def test_reduce_on_plateau_relative_threshold_ignores_tiny_improvements():
    opt = _optimizer((1.0,))
    scheduler = sched.ReduceLROnPlateau(opt, factor=0.1, patience=1, threshold=0.1)
    # 95 is not below 100 * 0.9; 89 is
    got = _plateau_lrs(scheduler, opt, [100, 95, 89, 85, 85])
    assert got == pytest.approx([1, 1, 1, 1, 0.1])


def test_reduce_on_plateau_max_mode_abs_threshold_and_min_lr():
    opt = _optimizer((1.0, 0.1))
    scheduler = sched.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=0, threshold=0.5,
                                        threshold_mode="abs", min_lr=[0.05, 0.0])
    metrics = [ember.tensor(1.0), 1.4, 2.0, 2.1]  # tensors are read as numbers
    lrs = []
    for metric in metrics:
        opt.step()
        scheduler.step(metric)
        lrs.append([g["lr"] for g in opt.param_groups])
    np.testing.assert_allclose(lrs, [[1.0, 0.1], [0.1, 0.01], [0.1, 0.01], [0.05, 0.001]], rtol=1e-12)


def test_reduce_on_plateau_skips_changes_below_eps():
    opt = _optimizer((1e-9,))
    scheduler = sched.ReduceLROnPlateau(opt, factor=0.5, patience=0, eps=1e-8)
    _plateau_lrs(scheduler, opt, [1.0, 1.0, 1.0])
    assert opt.param_groups[0]["lr"] == 1e-9


def test_reduce_on_plateau_errors():
    opt = _optimizer()
    with pytest.raises(ValueError, match=r"Factor should be < 1.0."):
        sched.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode maximum is unknown!"):
        sched.ReduceLROnPlateau(opt, mode="maximum")
    with pytest.raises(ValueError, match="threshold mode relative is unknown!"):
        sched.ReduceLROnPlateau(opt, threshold_mode="relative")
    with pytest.raises(ValueError, match="expected 1 min_lrs, got 2"):
        sched.ReduceLROnPlateau(opt, min_lr=[0.1, 0.2])
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        sched.ReduceLROnPlateau([])


def test_reduce_on_plateau_state_dict_round_trip():
    metrics = [5, 4, 4, 4, 3, 3, 3, 3, 3, 2]
    opt = _optimizer((1.0,))
    scheduler = sched.ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=2)
    _plateau_lrs(scheduler, opt, metrics[:5])
    saved_opt, saved = opt.state_dict(), scheduler.state_dict()
    assert "optimizer" not in saved
    opt2 = _optimizer((7.0,))
    scheduler2 = sched.ReduceLROnPlateau(opt2, mode="max")
    opt2.load_state_dict(saved_opt)
    scheduler2.load_state_dict(saved)
    assert _plateau_lrs(scheduler2, opt2, metrics[5:]) == _plateau_lrs(scheduler, opt, metrics[5:])
    assert scheduler2.is_better(1.0, 2.0)  # the comparison follows the loaded mode ('min')


# ----------------------------------------------------------------------------- composition

def test_sequential_lr_restarts_the_next_scheduler_at_its_milestone():
    # PyTorch's own test_sequentiallr1 targets
    opt = _optimizer()
    first = sched.ExponentialLR(opt, gamma=0.8)
    second = sched.StepLR(opt, gamma=0.1, step_size=4)
    scheduler = sched.SequentialLR(opt, schedulers=[first, second], milestones=[3])
    expected = [0.05, 0.04, 0.032] + [0.05] * 4 + [0.005] * 4 + [0.0005] * 4 + [0.00005] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the internal restart must not warn about the epoch argument
        got = _lrs(opt, scheduler, 19)[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_sequential_lr_errors():
    opt = _optimizer()
    first = sched.ConstantLR(opt, factor=0.5)
    with pytest.raises(ValueError, match="expects number of schedulers provided to be one more than the number of "
                                         "milestone points, but got number of schedulers 1 and the number of "
                                         "milestones to be equal to 1"):
        sched.SequentialLR(opt, [first], milestones=[2])
    with pytest.raises(ValueError, match="SequentialLR does not support `ReduceLROnPlateau`"):
        sched.SequentialLR(opt, [first, sched.ReduceLROnPlateau(opt)], milestones=[2])
    other = sched.StepLR(_optimizer(), step_size=2)
    with pytest.raises(ValueError, match="expects all schedulers to belong to the same optimizer"):
        sched.SequentialLR(opt, [first, other], milestones=[2])


def test_chained_scheduler_multiplies_the_effects():
    opt = _optimizer((1.0,))
    scheduler = sched.ChainedScheduler([sched.ConstantLR(opt, factor=0.1, total_iters=2),
                                        sched.ExponentialLR(opt, gamma=0.9)])
    got = _lrs(opt, scheduler, 6)[:, 0]
    expected = [0.9 ** e * (0.1 if e < 2 else 1.0) for e in range(6)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_chained_scheduler_state_dict_round_trip():
    def build(lr):
        opt = _optimizer((lr,))
        return opt, sched.ChainedScheduler([sched.StepLR(opt, step_size=2, gamma=0.5),
                                            sched.ExponentialLR(opt, gamma=0.9)])

    opt, scheduler = build(1.0)
    _lrs(opt, scheduler, 3)
    opt2, scheduler2 = build(3.0)
    saved = scheduler.state_dict()
    assert len(saved["_schedulers"]) == 2 and "optimizer" not in saved
    opt2.load_state_dict(opt.state_dict())
    scheduler2.load_state_dict(saved)
    np.testing.assert_array_equal(_lrs(opt2, scheduler2, 5), _lrs(opt, scheduler, 5))


# ----------------------------------------------------------------------------- state_dict

@pytest.mark.parametrize("make", [
    lambda opt: sched.StepLR(opt, step_size=2, gamma=0.5),
    lambda opt: sched.MultiStepLR(opt, milestones=[1, 4], gamma=0.3),
    lambda opt: sched.CosineAnnealingLR(opt, T_max=4, eta_min=0.001),
    lambda opt: sched.CosineAnnealingWarmRestarts(opt, T_0=2, T_mult=2),
    lambda opt: sched.LinearLR(opt, start_factor=0.1, total_iters=5),
    lambda opt: sched.OneCycleLR(opt, max_lr=0.5, total_steps=12),
    lambda opt: sched.SequentialLR(opt, [sched.ConstantLR(opt, factor=0.5, total_iters=2),
                                         sched.ExponentialLR(opt, gamma=0.8)], milestones=[3]),
], ids=["StepLR", "MultiStepLR", "CosineAnnealingLR", "WarmRestarts", "LinearLR", "OneCycleLR", "SequentialLR"])
def test_state_dict_round_trip_continues_the_same_schedule(make):
    opt = _optimizer((0.05, 0.2), momentum=0.9)
    scheduler = make(opt)
    _lrs(opt, scheduler, 4)
    saved_opt, saved = opt.state_dict(), scheduler.state_dict()
    assert "optimizer" not in saved and saved["last_epoch"] == 4

    opt2 = _optimizer((9.0, 9.0), momentum=0.9)
    scheduler2 = make(opt2)
    opt2.load_state_dict(saved_opt)
    scheduler2.load_state_dict(saved)
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    np.testing.assert_array_equal(_lrs(opt2, scheduler2, 7), _lrs(opt, scheduler, 7))


def test_lambda_lr_state_dict_saves_callable_objects_but_not_functions():
    class Decay:
        def __init__(self, rate):
            self.rate = rate

        def __call__(self, epoch):
            return self.rate ** epoch

    opt = _optimizer((0.1, 0.1))
    scheduler = sched.LambdaLR(opt, [Decay(0.5), lambda e: 1.0])
    saved = scheduler.state_dict()
    assert saved["lr_lambdas"] == [{"rate": 0.5}, None]
    opt2 = _optimizer((0.1, 0.1))
    restored = sched.LambdaLR(opt2, [Decay(0.9), lambda e: 1.0])
    restored.load_state_dict(saved)
    assert restored.lr_lambdas[0].rate == 0.5


def test_scheduler_rejects_a_non_optimizer():
    with pytest.raises(TypeError, match="dict is not an Optimizer"):
        sched.StepLR({}, step_size=2)
