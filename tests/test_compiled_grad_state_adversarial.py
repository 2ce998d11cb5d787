"""An adversarial round's findings on compiled `.grad` handling (session 2026-12-07, eighth):
compiled ember against eager ember, whose values agree with PyTorch 2.13 for the same code.
Each failed before the fixes of that session (frontend/tracer.py read_grad and wrote_grad,
frontend/grad_state_trees.py); the comments describe what was wrong."""

import pytest

import ember
from ember import nn
from grad_scenarios import assert_same_observations as _assert_same, eager_and_compiled as _both, \
    observed as _np


# ---------------------------------------------------------------------------------------------
# Found (a regression of that session, before its fix): zero_grad(set_to_none=True) inside a
# compiled function held on nothing (it wrote `p._grad = None` without telling the tracer).
# A program first traced while the params had no .grad has nothing to clear, so it never clears:
# when the call later meets params with a .grad (backward() run outside, after the call), the
# compiled zero_grad leaves them, and the next backward accumulates onto the stale gradient.
# Eager/PyTorch: grad after call 2 = -0.637 (fresh); compiled: -3.029 (= -0.637 + previous -2.392);
# the weights then diverge. On 0d1d96a the program held on "no .grad" and traced again (correct).
@pytest.mark.parametrize("which", ["optimizer", "module"])
def test_zero_grad_set_to_none_inside_program_traced_without_grads_never_clears(which):
    def scenario(wrap):
        ember.manual_seed(0)
        model = nn.Linear(3, 1)
        opt = ember.optim.SGD(model.parameters(), lr=0.1)

        def forward(x):
            if which == "optimizer":
                opt.zero_grad()  # set_to_none=True
            else:
                model.zero_grad()
            return (model(x) ** 2).mean()
        f = wrap(forward)
        seen = []
        for i in range(5):
            loss = f(ember.ones(4, 3) * (i + 1))
            loss.backward()
            opt.step()
            seen.append([_np(loss), _np(model.weight.grad), _np(model.weight)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# Found (the same regression), smallest form: the compiled function is only `opt.zero_grad()`; a .grad that
# appears later (assigned or from an eager backward) is never cleared by the compiled calls.
# Eager/PyTorch: w.grad is None after the call; compiled: w.grad is still the assigned ones.
def test_compiled_zero_grad_alone_leaves_a_later_grad():
    def scenario(wrap):
        w = ember.zeros(3, requires_grad=True)
        opt = ember.optim.SGD([w], lr=0.1)
        f = wrap(lambda: opt.zero_grad())
        seen = []
        for i in range(4):
            if i >= 2:
                w.grad = ember.ones(3)
            f()
            seen.append([_np(w.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# Found (pre-existing; the `del` form raised even eagerly): `w.grad = None` / `del w.grad`
# inside the compiled function, first traced while w had no .grad, never clears a .grad that w
# gains later. Eager/PyTorch: None; compiled: [3, 3, 3] left in place.
@pytest.mark.parametrize("how", ["assign_none", "del"])
def test_setting_grad_to_none_inside_program_traced_without_grad(how):
    def scenario(wrap):
        w = ember.ones(3, requires_grad=True)

        def f(x):
            if how == "del":
                del w.grad
            else:
                w.grad = None
            return x * 2
        g = wrap(f)
        seen = []
        for i in range(4):
            if i == 2:
                (w * 3).sum().backward()
            seen.append([_np(g(ember.ones(3))), _np(w.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# Found (pre-existing), still wrong although 49b1816 says `if w.grad is None` in
# user code no longer serves the other state's program: Tracer.read_grad notes only tensors in
# entry_grads (module params, top-level tensor arguments, tensors closed over directly). A tensor
# reached through a closed-over dict, a closed-over object's attribute, or an object argument's
# attribute is not noted, so the program traced with no .grad serves calls where it has one.
class _Box:
    pass


@pytest.mark.parametrize("where", ["closure_dict", "closure_object", "object_argument"])
def test_grad_presence_of_tensor_reached_through_a_container_or_object(where):
    # eager/PyTorch: 2 without a .grad, 5 (the .grad) with one; compiled: 2 at every call
    def scenario(wrap):
        w = ember.ones(2, requires_grad=True)
        box = _Box()
        box.w = w
        d = {"w": w}

        def f(x, b):
            t = d["w"] if where == "closure_dict" else box.w if where == "closure_object" else b.w
            if t.grad is None:
                return x * 2
            return x * t.grad
        g = wrap(f)
        seen = []
        for i in range(6):
            w.grad = None if i % 2 == 0 else ember.full((2,), 5.0)
            seen.append([_np(g(ember.ones(2), box))])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# Found (pre-existing): an argument that does not require grad but has a .grad
# (assigned by hand, as PyTorch allows): the signature's "argument autograd" part looks only at
# arguments that require grad, and read_grad's condition is on the traced tensor object, so a
# fresh argument with a .grad runs the program traced for one without.
# Eager/PyTorch: 3 for the calls with a .grad; compiled: 2.
def test_grad_presence_of_argument_not_requiring_grad():
    def scenario(wrap):
        def f(x):
            if x.grad is None:
                return x * 2
            return x * 3
        g = wrap(f)
        seen = []
        for i in range(6):
            x = ember.ones(3)
            if i % 2:
                x.grad = ember.ones(3)
            seen.append([_np(g(x))])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# The first call's backward() from an argument's autograd history (042e31f's run_backward from
# the history at the call's start) passes retain_graph=False whatever the user asked: a
# `backward(retain_graph=True)` inside the compiled function frees the argument's outer history,
# so a later backward through it raises "Trying to backward through the graph a second time".
# Eager/PyTorch: s.grad = 2*(2*2s) + 2 = [14, -14, 6]; compiled: RuntimeError on the first call.
# Found (pre-existing): a divergence by error, not a silent value.
def test_retain_graph_inside_with_argument_history_is_ignored_on_the_tracing_call():
    def scenario(wrap):
        def f(x):
            (x * x).sum().backward(retain_graph=True)
            return x * 1.0
        g = wrap(f)
        seen = []
        for _ in range(3):
            s = ember.tensor([1.5, -2.0, 0.5], requires_grad=True)
            h = s * 2
            g(h)
            h.sum().backward()
            seen.append([_np(s.grad)])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# A module passed as an argument, whose param (in a ParameterList) has its .grad read: the
# program traced with .grad G6 binds G6 itself (a weak reference), and 49b1816's
# Tracer.had_grad keeps (param, is-argument, G6) alive with the tracer, so G6 never dies and
# the program keeps reading it after `p.grad` is set to None and then to a new tensor:
# eager/PyTorch [2, 6, 2, 8, 2, 10, 2]; compiled [2, 6, 2, 6, 2, 6, 2] (stale gradient).
# Fails on 0d1d96a too, differently (there the first trace's "no .grad" program served every
# call: [2, 2, 2, ...]); the stale .grad value is new.
class _WithList(nn.Module):
    def __init__(self):
        super().__init__()
        self.plist = nn.ParameterList([nn.Parameter(ember.ones(2)) for _ in range(2)])


def test_module_argument_grad_read_after_the_grad_is_replaced_is_stale():
    def scenario(wrap):
        m = _WithList()

        def f(mm, x):
            if mm.plist[0].grad is None:
                return x * 2
            return x * mm.plist[0].grad
        g = wrap(f)
        seen = []
        for i in range(7):
            m.plist[0].grad = None if i % 2 == 0 else ember.full((2,), 5.0 + i)
            seen.append([_np(g(m, ember.ones(2)))])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)


# Found (pre-existing): a module argument's param .grad replaced by a new tensor while
# the old .grad is still referenced (here: kept in a list for logging) is not noticed: the
# program keeps reading the old one. Eager/PyTorch [5, 6, 7, 8]; compiled [5, 5, 5, 5].
def test_module_argument_grad_replaced_while_old_grad_alive_is_stale():
    def scenario(wrap):
        m = nn.Module()
        m.w = nn.Parameter(ember.ones(2))

        def f(mm, x):
            return x * mm.w.grad
        g = wrap(f)
        kept, seen = [], []
        for v in [5.0, 6.0, 7.0, 8.0]:
            m.w.grad = ember.full((2,), v)
            kept.append(m.w.grad)
            seen.append([_np(g(m, ember.ones(2)))])
        return seen
    eager, compiled, _ = _both(scenario)
    _assert_same(eager, compiled)
