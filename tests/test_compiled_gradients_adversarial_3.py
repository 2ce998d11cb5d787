"""Third adversarial round on compiled training steps and `.grad` (after 38a41a2: a traced
backward copies a first gradient that is another leaf's, external or broadcast; a .grad the trace
made anew is a new tensor on every compiled call; a call that replaces optimizer state entries
runs eagerly). Compiled ember is checked against eager ember, and eager ember against PyTorch
2.13 (its results written out here as numbers). Every bug a test below found (marked
"pre-existing": 38a41a2~1 had it too) is fixed since. Does not duplicate
tests/test_optimizer_state_tracing_adversarial.py or tests/test_compile_guards_adversarial_2.py."""
import warnings

import numpy as np
import pytest

import ember
import ember.nn.functional as F

torch = ember
TOL = dict(rtol=1e-5, atol=1e-6)


def _both(run, *args):
    """run(compiled, *args) eagerly and compiled: (eager result, compiled result)."""
    return run(False, *args), run(True, *args)


def _assert_close_trees(got, want, what=""):
    assert len(got) == len(want), f"{what}: {len(got)} items vs eager {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(np.asarray(g, dtype=np.float64), np.asarray(w, dtype=np.float64), **TOL,
                                   err_msg=f"{what}[{i}]")


def _compile(fn, compiled):
    return torch.compile(fn) if compiled else fn


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


# ----------------------------------------------------------------------------- aliasing of gradients
def test_a_gradient_a_tensor_hook_received_and_kept_is_not_overwritten_by_later_calls():
    # Pre-existing. A hook that keeps the gradient it is given (logging, a DDP-style bucket)
    # returns None, so the traced backward makes that very tensor w.grad (it was born in the
    # trace: no copy); every later call's zero_grad(set_to_none=False) and in-place accumulation
    # then writes into the user's tensor: kept[0] reads [4, 4, 4] after four calls.
    # PyTorch 2.13 and eager ember: AccumulateGrad copies a gradient someone else holds, and
    # kept[0] stays [1, 1, 1] (PyTorch: `kept[0] is w.grad` is False).
    def run(compiled):
        w = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
        kept = []
        w.register_hook(lambda g: kept.append(g) if not kept else None)  # (the first call: a trace)
        opt = torch.optim.SGD([w], lr=0.1)

        def step(x):
            opt.zero_grad(set_to_none=False)
            (w * x).sum().backward()
            opt.step()
            return x.sum()

        fn = _compile(step, compiled)
        for i in range(4):
            fn(torch.full((3,), float(i + 1)))
        return kept[0].numpy().copy(), w.detach().numpy().copy()

    eager, compiled = _both(run)
    np.testing.assert_array_equal(eager[0], [1.0, 1.0, 1.0])
    _assert_close_trees(compiled, eager, "kept gradient, w")


@pytest.mark.parametrize("how", ["mul_", "clip_grad_norm_"])
def test_two_params_whose_gradients_are_views_of_one_array(how):
    # Pre-existing; 38a41a2 copies a first gradient whose *array* another leaf got (same id), but
    # not one that is a view of it: d/db of ((a + b.reshape(3)) * x).sum() is reshape(d/da), a
    # numpy view of a.grad's array, so a.grad and b.grad share memory in the trace and in every
    # compiled call: `a.grad.mul_(2)` doubles b's step too, clip_grad_norm_ scales it twice.
    # (PyTorch 2.13 and eager ember: after 4 steps of mul_, b = [[-0.3, -0.4, -1.4]])
    def run(compiled):
        a = torch.tensor([0.5, -0.3, 0.2], requires_grad=True)
        b = torch.tensor([[0.1, 0.4, -0.2]], requires_grad=True)
        opt = torch.optim.SGD([a, b], lr=0.1)

        def step(x):
            opt.zero_grad()
            ((a + b.reshape(3)) * x).sum().backward()
            if how == "mul_":
                a.grad.mul_(2)
            else:
                torch.nn.utils.clip_grad_norm_([a, b], 0.5)
            opt.step()
            return x.sum()

        fn = _compile(step, compiled)
        out = []
        for _ in range(4):
            fn(torch.tensor([1.0, 2.0, 3.0]))
            out += [a.detach().numpy().copy(), b.detach().numpy().copy()]
        return out

    eager, compiled = _both(run)
    if how == "mul_":
        np.testing.assert_allclose(eager[-1], [[-0.3, -0.4, -1.4]], rtol=1e-5)
    _assert_close_trees(compiled, eager, "a, b after each step")


def test_a_returned_grad_is_the_params_grad_after_a_compiled_call():
    # Pre-existing. With zero_grad() (set_to_none=True) the step's `return w.grad` is, eagerly
    # (ember and PyTorch), w.grad itself; compiled it is a copy, so clipping w.grad after the call
    # (clip_grad_norm_ outside the step, before logging) leaves the returned gradient unclipped:
    # [2, 2, 2] instead of [0.577, 0.577, 0.577], and `returned is w.grad` is False.
    def run(compiled):
        w = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.1)

        def step(x):
            opt.zero_grad()
            (x * w).sum().backward()
            opt.step()
            return w.grad

        fn = _compile(step, compiled)
        out = []
        for i in range(4):
            g = fn(torch.full((3,), float(i + 1)))
            torch.nn.utils.clip_grad_norm_([w], 1.0)
            out += [g.numpy().copy(), [float(g is w.grad)]]
        return out

    eager, compiled = _both(run)
    np.testing.assert_allclose(eager[-2], [3 ** -0.5] * 3, rtol=1e-5)
    _assert_close_trees(compiled, eager, "returned grad after clipping, identity")


# ----------------------------------------------------------------------------- gradients that never arrive
@pytest.mark.parametrize("how", ["non_leaf_argument", "view_of_a_leaf_argument", "closed_over_non_leaf"])
def test_backward_through_a_tensor_with_history_from_outside_reaches_its_leaf(how):
    # Pre-existing, silently wrong training. A compiled function given a tensor with autograd
    # history (features from an eager backbone, `w * 2`, a view `w[:]`) treats it as a leaf: its
    # backward() fills the non-leaf's .grad and never reaches w, already on the tracing call
    # (w.grad stays None). PyTorch 2.13 and eager ember: w.grad = d/dw, the non-leaf's .grad None.
    def run(compiled):
        w = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
        box = {}

        def from_argument(y, x):
            (y * x).sum().backward()
            return x.sum()

        def from_closure(x):
            (box["y"] * x).sum().backward()
            return x.sum()

        fn = _compile(from_closure if how == "closed_over_non_leaf" else from_argument, compiled)
        out = []
        for i in range(3):
            x = torch.full((3,), float(i + 1))
            if how == "non_leaf_argument":
                fn(w * 2, x)
            elif how == "view_of_a_leaf_argument":
                fn(w[:], x)
            else:
                box["y"] = w * 2
                fn(x)
            out.append(np.full(3, np.nan) if w.grad is None else w.grad.numpy().copy())
        return out

    eager, compiled = _both(run)
    scale = 1.0 if how == "view_of_a_leaf_argument" else 2.0
    np.testing.assert_allclose(eager[-1], [6.0 * scale] * 3)
    _assert_close_trees(compiled, eager, "w.grad after each call")


# ----------------------------------------------------------------------------- running eagerly
@pytest.mark.parametrize("set_to_none", [False], ids=["zeroed"])
def test_gradient_accumulation_over_compiled_calls_with_the_step_outside_compiles(set_to_none):
    # The usual gradient-accumulation loop: a compiled forward+backward per micro-batch, opt.step()
    # and zero_grad(set_to_none=False) outside every third call: 2 traces, then compiled calls.
    # (With set_to_none=True it is correct but never compiles: whether a param has a .grad is not
    # in the signature, so the two programs, no .grad yet / adding into one, replace each other
    # until the recompile limit; left open, see the closing note of the session that found it.)
    def run(compiled):
        model = _mlp()
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        xs, ys = torch.randn(3, 5, 6), torch.randint(0, 3, (3, 5))

        def forward_backward(x, y):
            loss = F.cross_entropy(model(x), y) / 3
            loss.backward()
            return loss

        fn = _compile(forward_backward, compiled)
        losses = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for i in range(18):
                losses.append(fn(xs[i % 3], ys[i % 3]).item())
                if i % 3 == 2:
                    opt.step()
                    opt.zero_grad(set_to_none=set_to_none)
        return (losses, [p.detach().numpy().copy() for p in model.parameters()]), getattr(fn, "report", None)

    (eager, _), (compiled, report) = _both(run)
    _assert_close_trees(compiled[0], eager[0], "losses")
    _assert_close_trees(compiled[1], eager[1], "params")
    assert len(report.traces) <= 4 and report.compiled_calls >= 10 and report.fallback is None, str(report)


# ----------------------------------------------------------------------------- what works (regression guards)
def _grad_as_next_input(compiled):
    w = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)

    def step(g, x):  # g is w.grad: zero_grad(set_to_none=False) zeroes it before it is read
        opt.zero_grad(set_to_none=False)
        ((x * w).sum() + (g * w).sum()).backward()
        opt.step()
        return g.sum()

    fn = _compile(step, compiled)
    w.grad = torch.ones(3)
    out = []
    for i in range(5):
        out += [[fn(w.grad, torch.full((3,), float(i + 1))).item()], w.grad.numpy().copy(), w.detach().numpy().copy()]
    return out


def _tied_embedding(compiled):
    torch.manual_seed(0)
    emb, head = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    opt = torch.optim.AdamW(emb.parameters(), lr=0.01, amsgrad=True)
    idx, y = torch.tensor([[1, 2, 3], [4, 5, 1]]), torch.tensor([2, 3, 4, 5, 6, 7])

    def step(idx, y):
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(head(emb(idx)).reshape(-1, 10), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(emb.parameters(), 0.1)
        opt.step()
        return loss

    fn = _compile(step, compiled)
    return [[fn(idx, y).item() for _ in range(6)], emb.weight.detach().numpy().copy(), emb.weight.grad.numpy().copy()]


def _grads_in_external_buffers(compiled):
    model = _mlp()
    params = list(model.parameters())
    bufs = [torch.zeros_like(p) for p in params]
    opt = torch.optim.SGD(params, lr=0.1)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))

    def step(x, y):
        for p, b in zip(params, bufs):
            p.grad = b  # accumulated into in place (eager and PyTorch)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        for b in bufs:
            b.mul_(0.5)
        return loss

    fn = _compile(step, compiled)
    out = []
    for _ in range(5):
        out += [[fn(x, y).item()], bufs[0].numpy().copy()]
    return out + [params[0].detach().numpy().copy(), [float(p.grad is b) for p, b in zip(params, bufs)]]


def _optimizer_in_backward(compiled):
    model = _mlp()
    per_param = {p: torch.optim.Adam([p], lr=0.01) for p in model.parameters()}

    def hook(p):
        per_param[p].step()
        per_param[p].zero_grad()

    for p in model.parameters():
        p.register_post_accumulate_grad_hook(hook)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    fn = _compile(step, compiled)
    return [[fn(x, y).item() for _ in range(6)], [p.detach().numpy().copy() for p in model.parameters()][0]]


def _grad_reset_between_calls(compiled):
    w = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    mine = torch.full((3,), 7.0)

    def step(x):
        opt.zero_grad(set_to_none=False)
        (w * x).sum().backward()
        opt.step()
        return x.sum()

    fn = _compile(step, compiled)
    out = []
    for i in range(9):
        if i == 3:
            w.grad = None
        if i == 5:
            w.grad = mine  # PyTorch: zeroed and accumulated into in place
        if i == 7:
            del w.grad
        fn(torch.full((3,), float(i + 1)))
        out += [w.grad.numpy().copy(), mine.numpy().copy(), w.detach().numpy().copy(), [float(w.grad is mine)]]
    return out


@pytest.mark.parametrize("case", [_grad_as_next_input, _tied_embedding, _grads_in_external_buffers,
                                  _optimizer_in_backward, _grad_reset_between_calls],
                         ids=["grad_as_next_input", "tied_embedding", "grads_in_external_buffers",
                              "optimizer_in_backward", "grad_reset_between_calls"])
def test_gradient_patterns_that_match_eager(case):
    eager, compiled = _both(case)
    _assert_close_trees(compiled, eager, case.__name__)


def test_lbfgs_with_a_closure_runs_compiled():
    def run(compiled):
        torch.manual_seed(0)
        lin = torch.nn.Linear(6, 1)
        opt = torch.optim.LBFGS(lin.parameters(), lr=0.5, max_iter=5)
        x, y = torch.randn(10, 6), torch.randn(10, 1)

        def step(x, y):
            def closure():
                opt.zero_grad()
                loss = ((lin(x) - y) ** 2).mean()
                loss.backward()
                return loss
            return opt.step(closure)

        fn = _compile(step, compiled)
        return [float(fn(x, y)) for _ in range(3)], lin.weight.detach().numpy().copy()

    eager, compiled = _both(run)
    _assert_close_trees(compiled, eager, "losses, weight")
