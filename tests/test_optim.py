"""ember.optim: every optimizer against an independent float64 numpy implementation of its update
formula, step by step, for each option that changes the formula; param groups, zero_grad,
state_dict round trips (bit-exact continuation), closures, hooks and PyTorch's error messages."""
import copy

import numpy as np
import pytest

import ember
from ember.optim import SGD, Adadelta, Adagrad, Adam, AdamW, Optimizer, RMSprop

STEPS = 6
SHAPE = (3, 4)


def _initial_param(seed=1):
    return np.random.default_rng(seed).normal(size=SHAPE)


def _gradients(seed=2, steps=STEPS):
    """Gradients whose scale first falls then rises, so AMSGrad's running max differs from v."""
    rng = np.random.default_rng(seed)
    scales = [3.0, 1.0, 0.2, 0.1, 2.0, 0.5, 1.5, 0.3, 1.0, 0.7][:steps]
    return [s * rng.normal(size=SHAPE) for s in scales]


def _run_ember(cls, options, p0, grads, dtype=ember.float64):
    param = ember.tensor(p0, dtype=dtype, requires_grad=True)
    optimizer = cls([param], **options)
    trajectory = []
    for g in grads:
        param.grad = ember.tensor(g, dtype=dtype)
        optimizer.step()
        trajectory.append(param.detach().numpy().astype(np.float64).copy())
    return trajectory


# ----------------------------------------------------------------------------- numpy references

def sgd_reference(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    out, buf = [], None
    for g in grads:
        g = -g if maximize else g
        g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        out.append(p)
    return out


def _float32_power(base, exponent):
    """base ** exponent in float32 as ember's pow computes it: numpy's power ufunc on arrays.

    That ufunc's last bit depends on the CPU (SVML's powf on AVX-512 gives 0.9f ** 4 = 0.6561,
    libm's, which numpy's float32 scalars always use, 0.6560999), and near 1 (0.999 ** t) one
    ulp of it is 1e-5 to 3e-5 of the bias correction, so the reference takes the same routine."""
    return np.power(np.array(base, np.float32), np.array(exponent, np.float32))[()]


def adam_reference(p, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                   maximize=False, decoupled=False, capturable=False):
    b1, b2 = betas
    m = v = v_max = np.zeros_like(p)
    out = []
    for t, g in enumerate(grads, start=1):
        g = -g if maximize else g
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        v_max = np.maximum(v_max, v)
        v_hat = v_max if amsgrad else v
        if capturable:  # PyTorch's capturable form: bias corrections in the float32 step counter's dtype
            f32 = np.float32
            step_size_neg = -(f32(lr) / (f32(1) - _float32_power(b1, t)))
            bias_correction2_sqrt = np.sqrt(f32(1) - _float32_power(b2, t))
            denom = np.sqrt(v_hat) / np.float64(bias_correction2_sqrt * step_size_neg) \
                + np.float64(f32(eps) / step_size_neg)
            p = p + m / denom
        else:
            p = p - lr / (1 - b1 ** t) * m / (np.sqrt(v_hat) / np.sqrt(1 - b2 ** t) + eps)
        out.append(p)
    return out


def adamw_reference(p, grads, weight_decay=1e-2, **options):
    return adam_reference(p, grads, weight_decay=weight_decay, decoupled=True, **options)


def rmsprop_reference(p, grads, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                      maximize=False):
    v = g_avg = buf = np.zeros_like(p)
    out = []
    for g in grads:
        g = -g if maximize else g
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            g_avg = alpha * g_avg + (1 - alpha) * g
            avg = np.sqrt(v - g_avg * g_avg) + eps
        else:
            avg = np.sqrt(v) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
        out.append(p)
    return out


def adagrad_reference(p, grads, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                      eps=1e-10, maximize=False):
    total = np.full_like(p, initial_accumulator_value)
    out = []
    for t, g in enumerate(grads, start=1):
        g = -g if maximize else g
        g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        total = total + g * g
        p = p - clr * g / (np.sqrt(total) + eps)
        out.append(p)
    return out


def adadelta_reference(p, grads, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False):
    v = u = np.zeros_like(p)
    out = []
    for g in grads:
        g = -g if maximize else g
        g = g + weight_decay * p
        v = rho * v + (1 - rho) * g * g
        delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta
        p = p - lr * delta
        out.append(p)
    return out


CASES = [
    (SGD, sgd_reference, dict(lr=0.1)),
    (SGD, sgd_reference, dict(lr=0.1, momentum=0.9)),
    (SGD, sgd_reference, dict(lr=0.1, momentum=0.9, dampening=0.5)),
    (SGD, sgd_reference, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (SGD, sgd_reference, dict(lr=0.1, weight_decay=0.1)),
    (SGD, sgd_reference, dict(lr=0.1, maximize=True)),
    (SGD, sgd_reference, dict(lr=0.05, momentum=0.8, weight_decay=0.2, nesterov=True, maximize=True)),
    (Adam, adam_reference, dict(lr=0.05)),
    (Adam, adam_reference, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3)),
    (Adam, adam_reference, dict(lr=0.05, amsgrad=True)),
    (Adam, adam_reference, dict(lr=0.05, weight_decay=0.1)),
    (Adam, adam_reference, dict(lr=0.05, maximize=True)),
    (Adam, adam_reference, dict(lr=0.05, amsgrad=True, weight_decay=0.1, maximize=True)),
    (Adam, adam_reference, dict(lr=0.05, amsgrad=True, weight_decay=0.1, capturable=True)),
    (AdamW, adamw_reference, dict(lr=0.05)),
    (AdamW, adamw_reference, dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    (AdamW, adamw_reference, dict(lr=0.05, weight_decay=0.3, maximize=True, capturable=True)),
    (RMSprop, rmsprop_reference, dict(lr=0.01)),
    (RMSprop, rmsprop_reference, dict(lr=0.01, alpha=0.9, eps=1e-4)),
    (RMSprop, rmsprop_reference, dict(lr=0.01, centered=True)),
    (RMSprop, rmsprop_reference, dict(lr=0.01, momentum=0.9)),
    (RMSprop, rmsprop_reference, dict(lr=0.01, weight_decay=0.1)),
    (RMSprop, rmsprop_reference, dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1, maximize=True)),
    (Adagrad, adagrad_reference, dict(lr=0.1)),
    (Adagrad, adagrad_reference, dict(lr=0.1, lr_decay=0.3)),
    (Adagrad, adagrad_reference, dict(lr=0.1, weight_decay=0.1)),
    (Adagrad, adagrad_reference, dict(lr=0.1, initial_accumulator_value=0.5, eps=1e-3)),
    (Adagrad, adagrad_reference, dict(lr=0.1, lr_decay=0.1, weight_decay=0.2, initial_accumulator_value=0.1,
                                      maximize=True)),
    (Adadelta, adadelta_reference, dict()),
    (Adadelta, adadelta_reference, dict(lr=0.5, rho=0.5, eps=1e-4)),
    (Adadelta, adadelta_reference, dict(weight_decay=0.1)),
    (Adadelta, adadelta_reference, dict(weight_decay=0.1, maximize=True)),
]


@pytest.mark.parametrize("cls, reference, options", CASES,
                         ids=[f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'defaults'}"
                              for c, _, o in CASES])
def test_update_matches_numpy_formula_step_by_step(cls, reference, options):
    p0, grads = _initial_param(), _gradients()
    got = _run_ember(cls, options, p0, grads)
    expected = reference(p0, grads, **options)
    for step, (g, e) in enumerate(zip(got, expected), start=1):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12, err_msg=f"{cls.__name__} step {step}")
    assert np.abs(got[-1] - p0).max() > 1e-3  # the parameter really moved


@pytest.mark.parametrize("cls, reference, options", [
    (SGD, sgd_reference, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    (Adam, adam_reference, dict(lr=0.05, amsgrad=True)),
    (Adam, adam_reference, dict(lr=0.05, capturable=True)),
    (RMSprop, rmsprop_reference, dict(lr=0.01, centered=True, momentum=0.5)),
    (Adagrad, adagrad_reference, dict(lr=0.1, lr_decay=0.1)),
    (Adadelta, adadelta_reference, dict(weight_decay=0.1)),
])
def test_float32_parameters_stay_float32_and_follow_the_formula(cls, reference, options):
    p0, grads = _initial_param(), _gradients()
    param = ember.tensor(p0, dtype=ember.float32, requires_grad=True)
    optimizer = cls([param], **options)
    for g in grads:
        param.grad = ember.tensor(g, dtype=ember.float32)
        optimizer.step()
    assert param.dtype is ember.float32
    for value in optimizer.state[param].values():
        if isinstance(value, ember.Tensor) and value.ndim:
            assert value.dtype is ember.float32
    expected = reference(p0.astype(np.float32).astype(np.float64),
                         [g.astype(np.float32).astype(np.float64) for g in grads], **options)[-1]
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=2e-5, atol=2e-5)


def test_state_keys_and_step_counters_follow_pytorch():
    p = ember.zeros(2, requires_grad=True)
    expectations = [
        (SGD, dict(lr=0.1, momentum=0.9), {"momentum_buffer"}),
        (SGD, dict(lr=0.1), set()),
        (Adam, dict(), {"step", "exp_avg", "exp_avg_sq"}),
        (Adam, dict(amsgrad=True), {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
        (AdamW, dict(amsgrad=True), {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
        (RMSprop, dict(), {"step", "square_avg"}),
        (RMSprop, dict(momentum=0.9, centered=True), {"step", "square_avg", "momentum_buffer", "grad_avg"}),
        (Adagrad, dict(), {"step", "sum"}),
        (Adadelta, dict(), {"step", "square_avg", "acc_delta"}),
    ]
    for cls, options, keys in expectations:
        optimizer = cls([p], **options)
        for _ in range(3):
            p.grad = ember.ones(2)
            optimizer.step()
        state = optimizer.state_dict()["state"]
        assert set(state.get(0, {})) == keys, cls.__name__
        if "step" in keys:
            step = state[0]["step"]
            assert isinstance(step, ember.Tensor) and step.ndim == 0 and step.dtype is ember.float32
            assert step.item() == 3.0


def test_adagrad_state_exists_before_the_first_step():
    p = ember.zeros(2, requires_grad=True)
    optimizer = Adagrad([p], initial_accumulator_value=0.25)
    assert optimizer.state[p]["step"].item() == 0.0
    np.testing.assert_array_equal(optimizer.state[p]["sum"].numpy(), [0.25, 0.25])


def test_capturable_adam_never_reads_the_step_counter_as_a_python_number(monkeypatch):
    """The capturable formula keeps the bias corrections in tensor ops, so a traced training step
    needs no guard on the step count; the default formula reads it once per step, like PyTorch."""
    p0, grads = _initial_param(), _gradients(steps=3)
    param = ember.tensor(p0, requires_grad=True)
    optimizer = Adam([param], lr=0.05, capturable=True)

    def forbidden(self):
        raise AssertionError("capturable Adam turned a tensor into a Python number")

    monkeypatch.setattr(ember.Tensor, "item", forbidden)
    for g in grads:
        param.grad = ember.tensor(g.astype(np.float32).astype(np.float64))  # a gradient of the param's dtype
        optimizer.step()
    monkeypatch.undo()
    expected = adam_reference(p0.astype(np.float32).astype(np.float64),
                              [g.astype(np.float32).astype(np.float64) for g in grads], lr=0.05)[-1]
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_update_is_written_with_in_place_tensor_ops():
    """The update goes through Tensor's in-place machinery (which a trace records), so the
    parameter's version counter moves and its identity stays."""
    for cls in (SGD, Adam, RMSprop, Adagrad, Adadelta):
        p = ember.ones(3, requires_grad=True)
        before_version, before_id = p._version, id(p)
        optimizer = cls([p], lr=0.1)
        p.grad = ember.ones(3)
        optimizer.step()
        assert p._version > before_version and id(p) == before_id, cls.__name__
        assert p.requires_grad and p.grad_fn is None


# ----------------------------------------------------------------------------- param groups

def test_param_groups_use_their_own_options():
    p0, grads = _initial_param(), _gradients()
    a = ember.tensor(p0, requires_grad=True)
    b = ember.tensor(p0 * 2, requires_grad=True)
    optimizer = SGD([{"params": [a]}, {"params": b, "lr": 0.01, "momentum": 0.5}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.01]
    assert len(optimizer.param_groups[1]["params"]) == 1 and optimizer.param_groups[1]["params"][0] is b
    for g in grads:
        a.grad = ember.tensor(g)
        b.grad = ember.tensor(-g)
        optimizer.step()
    np.testing.assert_allclose(a.detach().numpy(), sgd_reference(p0, grads, 0.1, momentum=0.9)[-1], rtol=1e-12)
    np.testing.assert_allclose(b.detach().numpy(),
                               sgd_reference(p0 * 2, [-g for g in grads], 0.01, momentum=0.5)[-1], rtol=1e-12)


def test_add_param_group_fills_defaults_and_rejects_overlap():
    a, b = ember.zeros(2, requires_grad=True), ember.zeros(3, requires_grad=True)
    optimizer = Adam([a], lr=0.1, betas=(0.8, 0.9))
    optimizer.add_param_group({"params": [b], "lr": 0.5})
    group = optimizer.param_groups[1]
    assert group["lr"] == 0.5 and group["betas"] == (0.8, 0.9) and group["amsgrad"] is False
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        optimizer.add_param_group({"params": [a]})
    with pytest.raises(TypeError, match="param_group must be a dict"):
        optimizer.add_param_group([b])
    with pytest.warns(UserWarning, match="duplicate parameters"):
        SGD([a, a], lr=0.1)


def test_parameters_without_gradient_are_left_alone():
    a, b = ember.ones(2, requires_grad=True), ember.ones(2, requires_grad=True)
    optimizer = Adam([a, b], lr=0.1)
    a.grad = ember.ones(2)
    optimizer.step()
    np.testing.assert_array_equal(b.detach().numpy(), [1.0, 1.0])
    assert b not in optimizer.state and len(optimizer.state[a]) == 3


# ----------------------------------------------------------------------------- zero_grad, closure, hooks

def test_zero_grad_sets_to_none_by_default():
    p = ember.ones(2, requires_grad=True)
    (p * p).sum().backward()
    SGD([p], lr=0.1).zero_grad()
    assert p.grad is None


def test_zero_grad_set_to_none_false_zeroes_the_same_tensor():
    p = ember.ones(2, requires_grad=True)
    (p * 3).sum().backward()
    grad = p.grad
    SGD([p], lr=0.1).zero_grad(set_to_none=False)
    assert p.grad is grad and not grad.requires_grad
    np.testing.assert_array_equal(grad.numpy(), [0.0, 0.0])
    (p * 3).sum().backward()  # accumulates into zero again
    np.testing.assert_array_equal(p.grad.numpy(), [3.0, 3.0])


def test_step_evaluates_the_closure_with_gradients_enabled():
    p = ember.tensor([1.0, -2.0], requires_grad=True)
    optimizer = SGD([p], lr=0.25)

    def closure():
        optimizer.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with ember.no_grad():
        loss = optimizer.step(closure)
    assert loss.item() == 5.0
    np.testing.assert_allclose(p.detach().numpy(), [1.0 - 0.25 * 2.0, -2.0 + 0.25 * 4.0])


def test_sgd_with_momentum_solves_least_squares_through_backward():
    rng = np.random.default_rng(3)
    x_np, w_true = rng.normal(size=(32, 3)), np.array([1.5, -2.0, 0.5])
    y_np = x_np @ w_true
    x, y = ember.tensor(x_np), ember.tensor(y_np)
    w = ember.zeros(3, dtype=ember.float64, requires_grad=True)
    optimizer = SGD([w], lr=0.05, momentum=0.9)
    for _ in range(400):
        optimizer.zero_grad()
        loss = ((x @ w - y) ** 2).mean()
        loss.backward()
        optimizer.step()
    np.testing.assert_allclose(w.detach().numpy(), w_true, atol=1e-7)


def test_step_hooks_run_around_the_step_and_can_be_removed():
    p = ember.ones(2, requires_grad=True)
    optimizer = SGD([p], lr=0.1)
    calls = []
    pre = optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append(("pre", p.detach().numpy()[0])))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append(("post", p.detach().numpy()[0])))
    p.grad = ember.ones(2)
    optimizer.step()
    assert [c[0] for c in calls] == ["pre", "post"]
    assert calls[0][1] == 1.0 and calls[1][1] == pytest.approx(0.9)
    pre.remove()
    optimizer.step()
    assert [c[0] for c in calls] == ["pre", "post", "post"]


def test_custom_optimizer_subclass_gets_hooks_and_state():
    class SignDescent(Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, dict(lr=lr))

        def step(self, closure=None):
            with ember.no_grad():
                for group in self.param_groups:
                    for p in self._params_with_grad(group):
                        p.sub_(p.grad.sign(), alpha=group["lr"])
                        self.state[p]["count"] = self.state[p].get("count", 0) + 1

    p = ember.tensor([1.0, -1.0], requires_grad=True)
    optimizer = SignDescent([p])
    seen = []
    optimizer.register_step_post_hook(lambda *a: seen.append(1))
    p.grad = ember.tensor([3.0, -0.5])
    optimizer.step()
    np.testing.assert_allclose(p.detach().numpy(), [0.9, -0.9])
    assert seen == [1] and optimizer.state_dict()["state"] == {0: {"count": 1}}
    assert "SignDescent (" in repr(optimizer) and "lr: 0.1" in repr(optimizer)


# ----------------------------------------------------------------------------- state_dict

ROUND_TRIP = [
    (SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (Adam, dict(lr=0.05, amsgrad=True, weight_decay=0.1)),
    (AdamW, dict(lr=0.05, capturable=True)),
    (RMSprop, dict(lr=0.01, centered=True, momentum=0.5)),
    (Adagrad, dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.1)),
    (Adadelta, dict(weight_decay=0.1)),
]


@pytest.mark.parametrize("cls, options", ROUND_TRIP, ids=[c.__name__ for c, _ in ROUND_TRIP])
def test_state_dict_round_trip_continues_bit_exactly(cls, options):
    rng = np.random.default_rng(5)
    params = [ember.tensor(rng.normal(size=(3, 2)), dtype=ember.float32, requires_grad=True),
              ember.tensor(rng.normal(size=(4,)), dtype=ember.float32, requires_grad=True)]
    grads = [[rng.normal(size=p.shape).astype(np.float32) for p in params] for _ in range(7)]
    first = cls([{"params": params[:1]}, {"params": params[1:], "lr": options.get("lr", 1.0) / 2}], **options)

    def step(optimizer, tensors, gradients):
        for p, g in zip(tensors, gradients):
            p.grad = ember.tensor(g)
        optimizer.step()

    for g in grads[:3]:
        step(first, params, g)
    saved = first.state_dict()
    assert sorted(saved["state"]) == [0, 1]
    assert [group["params"] for group in saved["param_groups"]] == [[0], [1]]
    assert all(isinstance(v, ember.Tensor) for s in saved["state"].values() for v in s.values())

    clones = [p.detach().clone().requires_grad_(True) for p in params]
    second = cls([{"params": clones[:1]}, {"params": clones[1:]}], **dict(options, lr=123.0))
    second.load_state_dict(saved)
    assert second.param_groups[1]["lr"] == options.get("lr", 1.0) / 2  # options come from the saved groups
    assert second.param_groups[0]["params"][0] is clones[0]
    for g in grads[3:]:
        step(first, params, g)  # also mutates the tensors `saved` refers to: the load must have copied them
        step(second, clones, g)
    for p, q in zip(params, clones):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
    for p, q in zip(params, clones):
        for key, value in first.state[p].items():
            np.testing.assert_array_equal(np.asarray(value.numpy()), np.asarray(second.state[q][key].numpy()))


def test_load_state_dict_casts_state_to_the_parameter_dtype_except_step():
    p32 = ember.zeros(2, requires_grad=True)
    source = Adam([p32])
    p32.grad = ember.ones(2)
    source.step()
    p64 = ember.zeros(2, dtype=ember.float64, requires_grad=True)
    target = Adam([p64])
    target.load_state_dict(source.state_dict())
    assert target.state[p64]["exp_avg"].dtype is ember.float64
    assert target.state[p64]["step"].dtype is ember.float32


def test_load_state_dict_rejects_mismatched_groups():
    a, b = ember.zeros(2, requires_grad=True), ember.zeros(2, requires_grad=True)
    saved = SGD([a, b], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="loaded state dict has a different number of parameter groups"):
        SGD([{"params": [a]}, {"params": [b]}], lr=0.1).load_state_dict(saved)
    with pytest.raises(ValueError, match="loaded state dict contains a parameter group that doesn't match the "
                                         "size of optimizer's group"):
        SGD([a], lr=0.1).load_state_dict(saved)


def test_optimizer_survives_deepcopy():
    p = ember.ones(2, requires_grad=True)
    optimizer = SGD([p], lr=0.1, momentum=0.9)
    p.grad = ember.ones(2)
    optimizer.step()
    clone = copy.deepcopy(optimizer)
    assert clone.param_groups[0]["params"][0] is not p
    clone.step()  # the copy's parameter has its own grad (deep-copied) and moves alone
    np.testing.assert_allclose(p.detach().numpy(), [0.9, 0.9])


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("make, message", [
    (lambda p: SGD(p, lr=-1), "Invalid learning rate: -1"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
    (lambda p: SGD(p, lr=0.1, weight_decay=-1e-4), "Invalid weight_decay value: -0.0001"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
     "Nesterov momentum requires a momentum and zero dampening"),
    (lambda p: Adam(p, lr=-0.001), "Invalid learning rate: -0.001"),
    (lambda p: Adam(p, eps=-1.0), "Invalid epsilon value: -1.0"),
    (lambda p: Adam(p, betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (lambda p: AdamW(p, betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    (lambda p: AdamW(p, weight_decay=-0.01), "Invalid weight_decay value: -0.01"),
    (lambda p: RMSprop(p, alpha=-0.5), "Invalid alpha value: -0.5"),
    (lambda p: RMSprop(p, momentum=-1), "Invalid momentum value: -1"),
    (lambda p: Adagrad(p, lr_decay=-1), "Invalid lr_decay value: -1"),
    (lambda p: Adagrad(p, initial_accumulator_value=-1), "Invalid initial_accumulator_value value: -1"),
    (lambda p: Adadelta(p, rho=1.5), "Invalid rho value: 1.5"),
    (lambda p: Adadelta(p, eps=-1e-6), "Invalid epsilon value: -1e-06"),
])
def test_bad_hyperparameters_raise_pytorchs_messages(make, message):
    with pytest.raises(ValueError) as info:
        make([ember.zeros(2, requires_grad=True)])
    assert str(info.value) == message


def test_bad_params_argument_errors():
    p = ember.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="should be an iterable of Tensors or dicts, but got ember.Tensor"):
        SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="ordering of tensors in sets will change"):
        SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(TypeError, match="optimizer can only optimize Tensors, but one of the params is builtins.int"):
        SGD([p, 3], lr=0.1)
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        SGD([p * 2], lr=0.1)


def test_gradient_shape_mismatch_names_the_shapes():
    p = ember.zeros(2, 3, requires_grad=True)
    p.grad = ember.zeros(3)
    with pytest.raises(RuntimeError, match=r"Adam.step: gradient of shape \[3\] does not match .* \[2, 3\]"):
        Adam([p]).step()


@pytest.mark.parametrize("cls, options", [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
                                          (Adam, dict(lr=0.1, amsgrad=True, capturable=True)),
                                          (RMSprop, dict(lr=0.01, centered=True, momentum=0.5)),
                                          (Adadelta, dict(weight_decay=0.1))],
                         ids=["SGD", "Adam-capturable", "RMSprop", "Adadelta"])
def test_compiled_training_step_records_the_update_without_guards(cls, options):
    """ember.compile traces the whole step: the in-place update becomes mutations of the param
    and the optimizer state, with no guard, and later calls match the eager run."""
    x_np = np.random.default_rng(4).normal(size=(8, 3)).astype(np.float32)

    def make():
        w = ember.tensor([[0.5], [-1.0], [2.0]], requires_grad=True)
        return w, cls([w], **options)

    w, optimizer = make()
    w_ref, optimizer_ref = make()
    x = ember.tensor(x_np)

    def train_step(w, optimizer):
        optimizer.zero_grad()
        loss = ((x @ w) ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss

    compiled = ember.compile(lambda: train_step(w, optimizer))
    for _ in range(8):
        loss = compiled()
        ref_loss = train_step(w_ref, optimizer_ref)
        np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(w.detach().numpy(), w_ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    # the first calls trace (state is created on the first step); after that the program runs
    assert compiled.report.guards == {} and compiled.report.compiled_calls >= 5
