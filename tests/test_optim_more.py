"""ember.optim's Adamax, NAdam, RAdam, ASGD, Rprop and LBFGS, and lr_scheduler's CyclicLR:
trajectories on a least-squares problem (gradients through backward) against independent float64
numpy implementations of PyTorch's documented updates, state names and state_dict round trips,
compiled training steps against eager, CyclicLR against its formula, PyTorch's error messages."""
import math

import numpy as np
import pytest

import ember
from ember.optim import SGD, Adagrad, Adam
from ember.optim.adamax import Adamax
from ember.optim.asgd import ASGD
from ember.optim.cyclic_lr import CyclicLR
from ember.optim.lbfgs import LBFGS, _cubic_interpolate
from ember.optim.nadam import NAdam
from ember.optim.radam import RAdam
from ember.optim.rprop import Rprop

STEPS = 8
RNG = np.random.default_rng(7)
M = RNG.normal(size=(5, 3))
Y = RNG.normal(size=(5, 4))
P0 = RNG.normal(size=(3, 4))


def least_squares_grad(p):
    """The gradient of 0.5 * ||M p - Y||^2."""
    return M.T @ (M @ p - Y)


def _run_ember(cls, options, steps=STEPS, dtype=ember.float64, sign=1.0):
    """Minimise sign * 0.5 ||M p - Y||^2 through backward; the parameter after every step."""
    param = ember.tensor(P0, dtype=dtype, requires_grad=True)
    m, y = ember.tensor(M, dtype=dtype), ember.tensor(Y, dtype=dtype)
    optimizer = cls([param], **options)
    trajectory = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = sign * 0.5 * ((m @ param - y) ** 2).sum()
        loss.backward()
        optimizer.step()
        trajectory.append(param.detach().numpy().astype(np.float64).copy())
    return trajectory, optimizer, param


# ----------------------------------------------------------------------------- numpy references
# Each takes the loss's gradient function and follows the pseudo-code of the PyTorch docstring;
# the 0-d state tensors PyTorch keeps in float32 (NAdam's mu_product, ASGD's eta and mu) are
# rounded to float32 where PyTorch rounds them.

def adamax_reference(grad_fn, p, steps, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
                     **_):
    b1, b2 = betas
    m = u = np.zeros_like(p)
    out = []
    for t in range(1, steps + 1):
        g = grad_fn(p)
        g = -g if maximize else g
        g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)
        p = p - lr * m / ((1 - b1 ** t) * u)
        out.append(p)
    return out


def nadam_reference(grad_fn, p, steps, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                    momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False, **_):
    b1, b2 = betas
    m = v = np.zeros_like(p)
    mu_product = np.float32(1.0)
    out = []
    for t in range(1, steps + 1):
        g = grad_fn(p)
        g = -g if maximize else g
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        mu_product = np.float32(mu_product * np.float32(mu))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v / (1 - b2 ** t)) + eps
        product = float(mu_product)
        p = p - lr * (1 - mu) / (1 - product) * g / denom - lr * mu_next / (1 - product * mu_next) * m / denom
        out.append(p)
    return out


def radam_reference(grad_fn, p, steps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                    decoupled_weight_decay=False, maximize=False, **_):
    b1, b2 = betas
    m = v = np.zeros_like(p)
    rho_inf = 2 / (1 - b2) - 1
    out = []
    for t in range(1, steps + 1):
        g = grad_fn(p)
        g = -g if maximize else g
        if decoupled_weight_decay:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        if rho_t > 5:
            l_t = math.sqrt(1 - b2 ** t) / (np.sqrt(v) + eps)
            r_t = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            p = p - lr * m_hat * l_t * r_t
        else:
            p = p - lr * m_hat
        out.append(p)
    return out


def asgd_reference(grad_fn, p, steps, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, maximize=False,
                   **_):
    eta, mu = np.float32(lr), np.float32(1.0)
    ax = np.zeros_like(p)
    out = []
    for t in range(1, steps + 1):
        g = grad_fn(p)
        g = -g if maximize else g
        g = g + weight_decay * p
        p = p * (1 - lambd * float(eta)) - float(eta) * g
        ax = ax + float(mu) * (p - ax) if mu != 1 else p.copy()
        eta = np.float32(lr / (1 + lambd * lr * t) ** alpha)
        mu = np.float32(1 / max(1, t - t0))
        out.append((p, ax))
    return out


def rprop_reference(grad_fn, p, steps, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False, **_):
    eta_minus, eta_plus = etas
    prev, size = np.zeros_like(p), np.full_like(p, lr)
    out = []
    for _ in range(steps):
        g = grad_fn(p)
        g = -g if maximize else g
        agreement = g * prev
        factor = np.where(agreement > 0, eta_plus, np.where(agreement < 0, eta_minus, 1.0))
        size = np.clip(size * factor, *step_sizes)
        g = np.where(agreement < 0, 0.0, g)
        p = p - np.sign(g) * size
        prev = g
        out.append(p)
    return out


CASES = [
    (Adamax, adamax_reference, dict(lr=0.05)),
    (Adamax, adamax_reference, dict(lr=0.05, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1)),
    (Adamax, adamax_reference, dict(lr=0.05, weight_decay=0.1, maximize=True)),
    (Adamax, adamax_reference, dict(lr=0.05, weight_decay=0.1, capturable=True)),
    (NAdam, nadam_reference, dict(lr=0.05)),
    (NAdam, nadam_reference, dict(lr=0.05, momentum_decay=0.05, weight_decay=0.1)),
    (NAdam, nadam_reference, dict(lr=0.05, weight_decay=0.2, decoupled_weight_decay=True, maximize=True)),
    (RAdam, radam_reference, dict(lr=0.05)),
    (RAdam, radam_reference, dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.1)),  # rho_t > 5 from step 4
    (RAdam, radam_reference, dict(lr=0.05, betas=(0.8, 0.9), weight_decay=0.2, decoupled_weight_decay=True,
                                  maximize=True)),
    (RAdam, radam_reference, dict(lr=0.05, betas=(0.8, 0.9), capturable=True)),
    (ASGD, asgd_reference, dict(lr=0.05)),
    (ASGD, asgd_reference, dict(lr=0.05, lambd=0.1, alpha=0.5, t0=3, weight_decay=0.1)),
    (ASGD, asgd_reference, dict(lr=0.05, lambd=0.1, t0=2, maximize=True)),
    (ASGD, asgd_reference, dict(lr=0.05, lambd=0.1, alpha=0.5, t0=3, capturable=True)),
    (Rprop, rprop_reference, dict(lr=0.05)),
    (Rprop, rprop_reference, dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2))),
    (Rprop, rprop_reference, dict(lr=0.05, maximize=True)),
]


@pytest.mark.parametrize("cls, reference, options", CASES,
                         ids=[f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for c, _, o in CASES])
def test_trajectory_matches_numpy_reference(cls, reference, options):
    sign = -1.0 if options.get("maximize") else 1.0  # maximize -f descends f
    got, optimizer, param = _run_ember(cls, options, sign=sign)
    expected = reference(lambda p: sign * least_squares_grad(p), P0, STEPS, **options)
    # capturable runs the float32 step-counter formulas in tensors, as PyTorch does
    tolerance = dict(rtol=1e-6, atol=1e-7) if options.get("capturable") else dict(rtol=1e-10, atol=1e-12)
    for step, (g, e) in enumerate(zip(got, expected), start=1):
        np.testing.assert_allclose(g, e[0] if cls is ASGD else e, **tolerance, err_msg=f"{cls.__name__} step {step}")
    if cls is ASGD:
        np.testing.assert_allclose(optimizer.state[param]["ax"].numpy(), expected[-1][1], **tolerance)
    assert np.abs(got[-1] - P0).max() > 1e-2  # the parameter really moved


def test_asgd_averages_once_t0_is_passed():
    _, optimizer, param = _run_ember(ASGD, dict(lr=0.05, t0=3), steps=6)
    state = optimizer.state[param]
    ax, p = state["ax"].numpy(), param.detach().numpy()
    assert np.abs(ax - p).max() > 1e-4  # mu = 1 / (t - t0) < 1: ax lags p
    np.testing.assert_allclose(state["mu"].item(), 1 / 3)


@pytest.mark.parametrize("cls, reference, options", [
    (Adamax, adamax_reference, dict(lr=0.05, weight_decay=0.1)),
    (NAdam, nadam_reference, dict(lr=0.05, weight_decay=0.1)),
    (RAdam, radam_reference, dict(lr=0.05, betas=(0.8, 0.9))),
    (ASGD, asgd_reference, dict(lr=0.05, t0=3)),
    (Rprop, rprop_reference, dict(lr=0.05)),
], ids=["Adamax", "NAdam", "RAdam", "ASGD", "Rprop"])
def test_float32_parameters_stay_float32(cls, reference, options):
    got, optimizer, param = _run_ember(cls, options, dtype=ember.float32)
    assert param.dtype is ember.float32
    for name, value in optimizer.state[param].items():
        assert value.dtype is ember.float32, name
    expected = reference(least_squares_grad, P0, STEPS, **options)[-1]
    expected = expected[0] if cls is ASGD else expected
    np.testing.assert_allclose(got[-1], expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- state and options

STATE_KEYS = [
    (Adamax, dict(), ["step", "exp_avg", "exp_inf"]),
    (NAdam, dict(), ["step", "mu_product", "exp_avg", "exp_avg_sq"]),
    (RAdam, dict(), ["step", "exp_avg", "exp_avg_sq"]),
    (ASGD, dict(), ["step", "eta", "mu", "ax"]),
    (Rprop, dict(), ["step", "prev", "step_size"]),
]

GROUP_OPTIONS = {
    Adamax: ["lr", "betas", "eps", "weight_decay", "foreach", "maximize", "differentiable", "capturable"],
    NAdam: ["lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay", "maximize", "foreach",
            "capturable", "differentiable"],
    RAdam: ["lr", "betas", "eps", "weight_decay", "maximize", "foreach", "capturable", "decoupled_weight_decay",
            "differentiable"],
    ASGD: ["lr", "lambd", "alpha", "t0", "weight_decay", "foreach", "maximize", "differentiable", "capturable"],
    Rprop: ["lr", "etas", "step_sizes", "foreach", "maximize", "differentiable", "capturable"],
    LBFGS: ["lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history_size", "line_search_fn"],
}


@pytest.mark.parametrize("cls, options, keys", STATE_KEYS, ids=[c.__name__ for c, _, _ in STATE_KEYS])
def test_state_names_and_step_counter_follow_pytorch(cls, options, keys):
    _, optimizer, _ = _run_ember(cls, options, steps=3)
    state = optimizer.state_dict()["state"][0]
    assert list(state) == keys
    assert state["step"].ndim == 0 and state["step"].dtype is ember.float32 and state["step"].item() == 3.0
    assert list(optimizer.param_groups[0]) == ["params"] + GROUP_OPTIONS[cls]


def test_defaults_follow_pytorch():
    p = [ember.zeros(2, requires_grad=True)]
    expected = {
        Adamax: dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, foreach=None, maximize=False),
        NAdam: dict(lr=2e-3, momentum_decay=4e-3, decoupled_weight_decay=False),
        RAdam: dict(lr=1e-3, betas=(0.9, 0.999), decoupled_weight_decay=False, capturable=False),
        ASGD: dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, differentiable=False),
        Rprop: dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50)),
        LBFGS: dict(lr=1, max_iter=20, max_eval=25, tolerance_grad=1e-7, tolerance_change=1e-9, history_size=100,
                    line_search_fn=None),
    }
    for cls, options in expected.items():
        group = cls(p).param_groups[0]
        assert {key: group[key] for key in options} == options, cls.__name__
    assert LBFGS(p, max_iter=7).param_groups[0]["max_eval"] == 8


ROUND_TRIP = [
    (Adamax, dict(lr=0.05, weight_decay=0.1)),
    (NAdam, dict(lr=0.05)),
    (RAdam, dict(lr=0.05, betas=(0.8, 0.9))),
    (ASGD, dict(lr=0.05, t0=2)),
    (Rprop, dict(lr=0.05)),
]


@pytest.mark.parametrize("cls, options", ROUND_TRIP, ids=[c.__name__ for c, _ in ROUND_TRIP])
def test_state_dict_round_trip_continues_bit_exactly(cls, options):
    rng = np.random.default_rng(5)
    params = [ember.tensor(rng.normal(size=(3, 2)), dtype=ember.float32, requires_grad=True),
              ember.tensor(rng.normal(size=(4,)), dtype=ember.float32, requires_grad=True)]
    grads = [[rng.normal(size=p.shape).astype(np.float32) for p in params] for _ in range(7)]
    first = cls([{"params": params[:1]}, {"params": params[1:], "lr": options["lr"] / 2}], **options)

    def step(optimizer, tensors, gradients):
        for p, g in zip(tensors, gradients):
            p.grad = ember.tensor(g)
        optimizer.step()

    for g in grads[:3]:
        step(first, params, g)
    saved = first.state_dict()
    clones = [p.detach().clone().requires_grad_(True) for p in params]
    second = cls([{"params": clones[:1]}, {"params": clones[1:]}], **dict(options, lr=123.0))
    second.load_state_dict(saved)
    assert second.param_groups[1]["lr"] == options["lr"] / 2
    for g in grads[3:]:
        step(first, params, g)  # mutates the tensors `saved` holds: the load must have copied them
        step(second, clones, g)
    for p, q in zip(params, clones):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
        for key, value in first.state[p].items():
            np.testing.assert_array_equal(value.numpy(), second.state[q][key].numpy(), err_msg=key)


# ----------------------------------------------------------------------------- compiled steps

@pytest.mark.parametrize("cls, options", [
    (Adamax, dict(lr=0.1, weight_decay=0.1)),
    (NAdam, dict(lr=0.1, weight_decay=0.1, decoupled_weight_decay=True)),
    (RAdam, dict(lr=0.1, betas=(0.8, 0.9))),
    (ASGD, dict(lr=0.05, lambd=0.1, t0=3)),
    (Rprop, dict(lr=0.1, maximize=True)),
], ids=["Adamax", "NAdam", "RAdam", "ASGD", "Rprop-maximize"])
def test_compiled_training_step_matches_eager_without_guards(cls, options):
    """ember.compile records the whole step (the step-count formulas as tensor ops, as with
    capturable=True), so it compiles once with no guard and follows the eager run."""
    x_np = np.random.default_rng(4).normal(size=(8, 3)).astype(np.float32)
    sign = -1.0 if options.get("maximize") else 1.0

    def make():
        w = ember.tensor([[0.5], [-1.0], [2.0]], requires_grad=True)
        return w, cls([w], **options)

    w, optimizer = make()
    w_ref, optimizer_ref = make()
    x = ember.tensor(x_np)

    def train_step(w, optimizer):
        optimizer.zero_grad()
        loss = sign * ((x @ w) ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss

    compiled = ember.compile(lambda: train_step(w, optimizer))
    for _ in range(8):
        loss = compiled()
        ref_loss = train_step(w_ref, optimizer_ref)
        np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(w.detach().numpy(), w_ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert compiled.report.guards == {} and compiled.report.compiled_calls >= 5
    assert np.abs(w_ref.detach().numpy() - [[0.5], [-1.0], [2.0]]).max() > 1e-2


# ----------------------------------------------------------------------------- LBFGS

X_FIT = RNG.normal(size=(12, 3))
Y_FIT = np.sin(X_FIT @ RNG.normal(size=(3, 1)))
W1, W2 = 0.5 * RNG.normal(size=(3, 4)), 0.5 * RNG.normal(size=(4, 1))


def mlp_loss_and_grad(flat):
    """mean((tanh(X w1) w2 - y)^2) and its gradient, for w1 and w2 flattened into one vector."""
    w1, w2 = flat[:12].reshape(3, 4), flat[12:].reshape(4, 1)
    hidden = np.tanh(X_FIT @ w1)
    residual = hidden @ w2 - Y_FIT
    d_out = 2 * residual / residual.size
    grad_w1 = X_FIT.T @ ((d_out @ w2.T) * (1 - hidden ** 2))
    return float(np.mean(residual ** 2)), np.concatenate([grad_w1.ravel(), (hidden.T @ d_out).ravel()])


def cubic_minimiser(x1, f1, g1, x2, f2, g2, bounds=None):
    """The local minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), found with numpy's
    polynomial solver, clamped to the bounds; the bounds' midpoint when it has no real one."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    rows = [[x1 ** 3, x1 ** 2, x1, 1], [x2 ** 3, x2 ** 2, x2, 1],
            [3 * x1 ** 2, 2 * x1, 1, 0], [3 * x2 ** 2, 2 * x2, 1, 0]]
    cubic = np.linalg.solve(np.array(rows, dtype=float), np.array([f1, f2, g1, g2], dtype=float))
    slope, curvature = np.polyder(cubic), np.polyder(cubic, 2)
    minima = [r.real for r in np.roots(slope) if abs(r.imag) < 1e-12 and np.polyval(curvature, r.real) > 0]
    return min(max(minima[0], lo), hi) if minima else (lo + hi) / 2.0


def strong_wolfe_reference(phi, t, f, g, gtd, d, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Moré-Thuente style bracketing and zoom as PyTorch's _strong_wolfe documents it; phi(t)
    gives (loss, gradient) at x + t d."""
    d_norm = np.abs(d).max()
    f_new, g_new = phi(t)
    evals, gtd_new = 1, g_new @ d
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done, ls_iter = False, 0
    while ls_iter < max_ls:
        sufficient_decrease = f_new <= f + c1 * t * gtd and not (ls_iter > 1 and f_new >= f_prev)
        if sufficient_decrease and abs(gtd_new) <= -c2 * gtd:
            bracket, values, done = [t], [(f_new, g_new, gtd_new)], True
            break
        if not sufficient_decrease or gtd_new >= 0:
            bracket, values = [t_prev, t], [(f_prev, g_prev, gtd_prev), (f_new, g_new, gtd_new)]
            break
        t_prev, t = t, cubic_minimiser(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                                       bounds=(t + 0.01 * (t - t_prev), t * 10))
        f_prev, g_prev, gtd_prev = f_new, g_new, gtd_new
        f_new, g_new = phi(t)
        evals, gtd_new, ls_iter = evals + 1, g_new @ d, ls_iter + 1
    if ls_iter == max_ls:
        bracket, values = [0.0, t], [(f, g, None), (f_new, g_new, None)]
    low, high = (0, 1) if values[0][0] <= values[-1][0] else (1, 0)
    insufficient = False
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = cubic_minimiser(bracket[0], values[0][0], values[0][2], bracket[1], values[1][0], values[1][2])
        lo, hi = min(bracket), max(bracket)
        margin = 0.1 * (hi - lo)
        if min(hi - t, t - lo) < margin:
            if insufficient or t >= hi or t <= lo:
                t = hi - margin if abs(t - hi) < abs(t - lo) else lo + margin
                insufficient = False
            else:
                insufficient = True
        else:
            insufficient = False
        f_new, g_new = phi(t)
        evals, gtd_new, ls_iter = evals + 1, g_new @ d, ls_iter + 1
        if f_new > f + c1 * t * gtd or f_new >= values[low][0]:
            bracket[high], values[high] = t, (f_new, g_new, gtd_new)
            low, high = (0, 1) if values[0][0] <= values[1][0] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], values[high] = bracket[low], values[low]
            bracket[low], values[low] = t, (f_new, g_new, gtd_new)
    return values[low][0], values[low][1], bracket[low], evals


def lbfgs_reference(fg, x, steps, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                    history_size=100, line_search_fn=None):
    """PyTorch's L-BFGS step by step: two-loop recursion over (s, y) pairs kept while y.s > 1e-10,
    initial Hessian scale y.s / y.y, first step min(1, 1 / |g|_1) lr, then fixed lr or strong Wolfe."""
    max_eval = max_eval if max_eval is not None else max_iter * 5 // 4
    total_iters, out = 0, []
    d = t = prev_g = None
    dirs, stps, ro, h_diag = [], [], [], 1.0
    for _ in range(steps):
        loss, g = fg(x)
        evals = 1
        if np.abs(g).max() <= tolerance_grad:
            out.append(x)
            continue
        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            total_iters += 1
            if total_iters == 1:
                d, dirs, stps, ro, h_diag = -g, [], [], [], 1.0
            else:
                y, s = g - prev_g, d * t
                if y @ s > 1e-10:
                    if len(dirs) == history_size:
                        dirs, stps, ro = dirs[1:], stps[1:], ro[1:]
                    dirs, stps, ro = dirs + [y], stps + [s], ro + [1.0 / (y @ s)]
                    h_diag = (y @ s) / (y @ y)
                q, al = -g, [0.0] * len(dirs)
                for i in reversed(range(len(dirs))):
                    al[i] = (stps[i] @ q) * ro[i]
                    q = q - al[i] * dirs[i]
                d = q * h_diag
                for i in range(len(dirs)):
                    d = d + (al[i] - (dirs[i] @ d) * ro[i]) * stps[i]
            prev_g, prev_loss = g.copy(), loss
            t = min(1.0, 1.0 / np.abs(g).sum()) * lr if total_iters == 1 else lr
            gtd = g @ d
            if gtd > -tolerance_change:
                break
            ls_evals = 0
            if line_search_fn == "strong_wolfe":
                loss, g, t, ls_evals = strong_wolfe_reference(lambda step: fg(x + step * d), t, loss, g, gtd, d,
                                                              max_ls=max_eval - evals)
                x = x + t * d
            else:
                x = x + t * d
                if n_iter != max_iter:
                    loss, g = fg(x)
                    ls_evals = 1
            evals += ls_evals
            if n_iter == max_iter or evals >= max_eval or np.abs(g).max() <= tolerance_grad:
                break
            if np.abs(d * t).max() <= tolerance_change or abs(loss - prev_loss) < tolerance_change:
                break
        out.append(x)
    return out


def _run_lbfgs(options, steps, dtype=ember.float64):
    w1 = ember.tensor(W1, dtype=dtype, requires_grad=True)
    w2 = ember.tensor(W2, dtype=dtype, requires_grad=True)
    x, y = ember.tensor(X_FIT, dtype=dtype), ember.tensor(Y_FIT, dtype=dtype)
    optimizer = LBFGS([w1, w2], **options)
    calls = []

    def closure():
        optimizer.zero_grad()
        loss = ((ember.tanh(x @ w1) @ w2 - y) ** 2).mean()
        loss.backward()
        calls.append(ember.is_grad_enabled())
        return loss

    trajectory, losses = [], []
    for _ in range(steps):
        losses.append(optimizer.step(closure).item())
        trajectory.append(np.concatenate([w1.detach().numpy().ravel(), w2.detach().numpy().ravel()]))
    assert all(calls)  # the closure always runs with gradients on, the step itself under no_grad
    return trajectory, losses, optimizer, (w1, w2)


LBFGS_CASES = {
    "fixed-step": dict(),
    "fixed-step-history3": dict(lr=0.5, max_iter=5, history_size=3),
    "strong-wolfe": dict(line_search_fn="strong_wolfe", max_iter=6),
    "strong-wolfe-extrapolates": dict(line_search_fn="strong_wolfe", lr=0.1, max_iter=5),  # t too short: grows
    "strong-wolfe-zooms": dict(line_search_fn="strong_wolfe", lr=5, max_iter=5, history_size=2,  # t too long
                               tolerance_change=1e-12),
}


@pytest.mark.parametrize("options", LBFGS_CASES.values(), ids=LBFGS_CASES.keys())
def test_lbfgs_trajectory_matches_numpy_reference(options):
    steps = 2 if options.get("max_iter") is None else 3
    got, losses, optimizer, _ = _run_lbfgs(options, steps)
    expected = lbfgs_reference(mlp_loss_and_grad, np.concatenate([W1.ravel(), W2.ravel()]), steps, **options)
    for step, (g, e) in enumerate(zip(got, expected), start=1):
        np.testing.assert_allclose(g, e, rtol=1e-7, atol=1e-9, err_msg=f"LBFGS step {step}")
    assert losses[-1] < 0.5 * losses[0]
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    assert {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad",
            "prev_loss", "al"} <= set(state)
    assert state["n_iter"] <= steps * optimizer.param_groups[0]["max_iter"]


def test_cubic_interpolation_is_the_cubic_minimiser():
    cases = [(0.0, 1.0, -2.0, 1.0, 0.5, 1.0), (0.0, 0.0, -1.0, 2.0, -0.5, 0.3), (1.0, 0.2, -0.1, 0.0, 0.4, -1.0),
             (0.0, 1.0, -1.0, 1.0, 0.0, -0.5)]
    for x1, f1, g1, x2, f2, g2 in cases:
        got = _cubic_interpolate(x1, f1, ember.tensor(g1, dtype=ember.float64), x2, f2,
                                 ember.tensor(g2, dtype=ember.float64))
        np.testing.assert_allclose(float(got), cubic_minimiser(x1, f1, g1, x2, f2, g2), rtol=1e-10, atol=1e-12)
    bounded = _cubic_interpolate(0.0, 1.0, ember.tensor(-2.0), 1.0, 0.5, ember.tensor(1.0), bounds=(0.9, 5.0))
    assert float(bounded) == 0.9


def test_lbfgs_strong_wolfe_solves_a_quadratic():
    """On a well-conditioned convex quadratic in 6 dimensions, L-BFGS with the strong Wolfe line
    search reaches the minimum A^-1 b in a dozen iterations; it stops once the loss changes by less
    than tolerance_change, i.e. about sqrt(tolerance_change) from the minimum (PyTorch too)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    a = a @ a.T + 6 * np.eye(6)
    b = rng.normal(size=6)
    x = ember.zeros(6, dtype=ember.float64, requires_grad=True)
    optimizer = LBFGS([x], line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)
    a_t, b_t = ember.tensor(a), ember.tensor(b)

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * (x * (a_t @ x)).sum() - (b_t * x).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    np.testing.assert_allclose(x.detach().numpy(), np.linalg.solve(a, b), rtol=0, atol=1e-7)
    assert optimizer.state[x]["n_iter"] <= 12


def test_lbfgs_state_dict_round_trip_and_float32():
    _, _, first, (w1, w2) = _run_lbfgs(dict(history_size=4, max_iter=4), 2, dtype=ember.float32)
    assert w1.dtype is ember.float32
    clones = [w1.detach().clone().requires_grad_(True), w2.detach().clone().requires_grad_(True)]
    second = LBFGS(clones, history_size=4, max_iter=4)
    second.load_state_dict(first.state_dict())
    x, y = ember.tensor(X_FIT, dtype=ember.float32), ember.tensor(Y_FIT, dtype=ember.float32)

    def closure_for(optimizer, a, b):
        def closure():
            optimizer.zero_grad()
            loss = ((ember.tanh(x @ a) @ b - y) ** 2).mean()
            loss.backward()
            return loss
        return closure

    first.step(closure_for(first, w1, w2))
    second.step(closure_for(second, *clones))
    np.testing.assert_array_equal(w1.detach().numpy(), clones[0].detach().numpy())
    np.testing.assert_array_equal(w2.detach().numpy(), clones[1].detach().numpy())
    assert second.state[clones[0]]["n_iter"] == first.state[w1]["n_iter"] == 12


def test_lbfgs_errors():
    a, b = ember.zeros(2, requires_grad=True), ember.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"LBFGS doesn't support per-parameter options \(parameter groups\)"):
        LBFGS([{"params": [a]}, {"params": [b]}])
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        LBFGS([a], lr=-1)
    with pytest.raises(TypeError):
        LBFGS([a]).step()  # the closure is required
    optimizer = LBFGS([a], line_search_fn="backtracking")

    def closure():
        optimizer.zero_grad()
        loss = ((a - 1) ** 2).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        optimizer.step(closure)


@pytest.mark.parametrize("make, message", [
    (lambda p: Adamax(p, lr=-1), "Invalid learning rate: -1"),
    (lambda p: Adamax(p, betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    (lambda p: NAdam(p, eps=-1.0), "Invalid epsilon value: -1.0"),
    (lambda p: NAdam(p, momentum_decay=-0.1), "Invalid momentum_decay value: -0.1"),
    (lambda p: RAdam(p, betas=(-0.1, 0.9)), "Invalid beta parameter at index 0: -0.1"),
    (lambda p: RAdam(p, weight_decay=-1), "Invalid weight_decay value: -1"),
    (lambda p: ASGD(p, weight_decay=-0.5), "Invalid weight_decay value: -0.5"),
    (lambda p: Rprop(p, etas=(1.5, 1.2)), "Invalid eta values: 1.5, 1.2"),
    (lambda p: Rprop(p, etas=(0.5, 0.9)), "Invalid eta values: 0.5, 0.9"),
])
def test_bad_hyperparameters_raise_pytorchs_messages(make, message):
    with pytest.raises(ValueError) as info:
        make([ember.zeros(2, requires_grad=True)])
    assert str(info.value) == message


# ----------------------------------------------------------------------------- CyclicLR

def cyclic_formula(iteration, base, peak, up, down, scale=lambda cycle, it: 1.0):
    """The CLR policy from its definition: a triangle rising over `up` iterations and falling over
    `down`, its height scaled by scale(cycle, iteration)."""
    cycle = iteration // (up + down) + 1
    position = iteration % (up + down)
    fraction = position / up if position <= up else 1 - (position - up) / down
    return base + (peak - base) * fraction * scale(cycle, iteration)


def _cyclic_run(optimizer, scheduler, iterations, key="momentum"):
    lrs, momenta = [], []
    for _ in range(iterations):
        group = optimizer.param_groups[0]
        lrs.append(group["lr"])
        momenta.append(group["betas"][0] if key == "betas" else group[key])
        assert scheduler.get_last_lr() == [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    return np.array(lrs), np.array(momenta)


@pytest.mark.parametrize("mode, options, scale", [
    ("triangular", dict(), lambda cycle, it: 1.0),
    ("triangular2", dict(), lambda cycle, it: 0.5 ** (cycle - 1)),
    ("exp_range", dict(gamma=0.9), lambda cycle, it: 0.9 ** it),
    ("triangular", dict(step_size_down=2), lambda cycle, it: 1.0),
])
def test_cyclic_lr_follows_the_clr_formula(mode, options, scale):
    up, down = 4, options.get("step_size_down", 4)
    optimizer = SGD([ember.zeros(2, requires_grad=True)], lr=1.0, momentum=0.9)
    scheduler = CyclicLR(optimizer, base_lr=0.1, max_lr=1.0, step_size_up=up, mode=mode,
                         base_momentum=0.8, max_momentum=0.95, **options)
    lrs, momenta = _cyclic_run(optimizer, scheduler, 3 * (up + down) + 1)
    expected = [cyclic_formula(i, 0.1, 1.0, up, down, scale) for i in range(len(lrs))]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    # momentum cycles inversely: max_momentum at base_lr, base_momentum at max_lr
    fraction = [(cyclic_formula(i, 0.0, 1.0, up, down, scale)) for i in range(len(lrs))]
    np.testing.assert_allclose(momenta, [0.95 - 0.15 * f for f in fraction], rtol=1e-12)
    assert lrs[0] == 0.1 and lrs[up] == pytest.approx(0.1 + 0.9 * scale(1, up))


def test_cyclic_lr_custom_scale_fn_and_per_group_values():
    groups = [{"params": [ember.zeros(2, requires_grad=True)]}, {"params": [ember.zeros(2, requires_grad=True)]}]
    optimizer = SGD(groups, lr=1.0, momentum=0.9)
    scheduler = CyclicLR(optimizer, base_lr=[0.1, 0.01], max_lr=[1.0, 0.2], step_size_up=3,
                         scale_fn=lambda x: 1 / (1 + x), scale_mode="iterations", cycle_momentum=False)
    assert scheduler.scale_mode == "iterations" and optimizer.param_groups[1]["momentum"] == 0.9
    got = []
    for _ in range(10):
        got.append(scheduler.get_last_lr())
        optimizer.step()
        scheduler.step()
    expected = [[cyclic_formula(i, b, m, 3, 3, lambda cycle, it: 1 / (1 + it)) for b, m in ((0.1, 1.0), (0.01, 0.2))]
                for i in range(10)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert scheduler.base_lrs == [0.1, 0.01] and [g["initial_lr"] for g in optimizer.param_groups] == [0.1, 0.01]


def test_cyclic_lr_cycles_adams_beta1():
    optimizer = Adam([ember.zeros(2, requires_grad=True)], lr=1.0, betas=(0.5, 0.99))
    scheduler = CyclicLR(optimizer, base_lr=0.01, max_lr=0.1, step_size_up=2)
    lrs, beta1 = _cyclic_run(optimizer, scheduler, 6, key="betas")
    np.testing.assert_allclose(lrs, [0.01, 0.055, 0.1, 0.055, 0.01, 0.055], rtol=1e-12)
    np.testing.assert_allclose(beta1, [0.9, 0.85, 0.8, 0.85, 0.9, 0.85], rtol=1e-12)
    assert optimizer.param_groups[0]["betas"][1] == 0.99
    assert optimizer.param_groups[0]["max_momentum"] == 0.9 and optimizer.param_groups[0]["base_momentum"] == 0.8


def test_cyclic_lr_state_dict_keeps_callable_objects_and_drops_functions():
    class Halving:
        def __init__(self):
            self.factor = 0.5

        def __call__(self, x):
            return self.factor ** x

    optimizer = SGD([ember.zeros(2, requires_grad=True)], lr=1.0, momentum=0.9)
    scheduler = CyclicLR(optimizer, base_lr=0.1, max_lr=1.0, step_size_up=2, scale_fn=Halving())
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    saved = scheduler.state_dict()
    assert "_scale_fn_ref" not in saved and "optimizer" not in saved
    assert saved["_scale_fn_custom"] == {"factor": 0.5} and saved["last_epoch"] == 3
    other = CyclicLR(SGD([ember.zeros(2, requires_grad=True)], lr=1.0, momentum=0.9), base_lr=0.1, max_lr=1.0,
                     step_size_up=2, scale_fn=Halving())
    other._scale_fn_custom.factor = 0.25
    other.load_state_dict(saved)
    assert other.last_epoch == 3 and other._scale_fn_custom.factor == 0.5
    assert "_scale_fn_custom" in saved  # the caller's dict is left whole
    plain = CyclicLR(optimizer, base_lr=0.1, max_lr=1.0, mode="exp_range", gamma=0.5, last_epoch=-1)
    assert plain.state_dict()["_scale_fn_custom"] is None
    assert CyclicLR(optimizer, 0.1, 1.0, scale_fn=lambda x: 1.0).state_dict()["_scale_fn_custom"] is None
    plain.load_state_dict(plain.state_dict())
    assert plain.scale_fn(2) == 0.25 and plain.scale_mode == "iterations"


def test_cyclic_lr_errors():
    p = [ember.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="mode is invalid and scale_fn is None"):
        CyclicLR(SGD(p, lr=0.1, momentum=0.9), 0.1, 1.0, mode="sawtooth")
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1 with `cycle_momentum` option"):
        CyclicLR(Adagrad(p), 0.1, 1.0)
    CyclicLR(Adagrad(p), 0.1, 1.0, cycle_momentum=False)
    with pytest.raises(ValueError, match="max_lr must have the same length as optimizer.param_groups. max_lr has 2 "
                                         "values, param_groups has 1."):
        CyclicLR(SGD(p, lr=0.1, momentum=0.9), 0.1, [1.0, 2.0])
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        CyclicLR([], 0.1, 1.0)
