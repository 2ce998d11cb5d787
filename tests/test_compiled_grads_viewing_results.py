"""A .grad the compiled function sets to a view of a tensor it made shares that tensor's memory
on every compiled call, as eagerly: with a returned result (`w.grad = t[:3]; return t`), with
another .grad (`w.grad = t[:3]; v.grad = t[1:3]`) or through an intermediate both view
(frontend/result_histories.py grad_of_output, compiled_results.views_as_eagerly). Before, a
compiled call gave such a .grad memory of its own: a write through it no longer reached the
result. The outcomes equal PyTorch 2.13's (checked against it); eager ember is the oracle here."""
import pytest

import ember

# (body after `t = x * 2`, what the caller then writes, in terms of w, v and the result `out`)
PROGRAMS = {
    "two grads viewing a returned result": ("w.grad = t[:3]; v.grad = t[3:]\n    return t", "w.grad.add_(100)"),
    "the grad returned beside its base": ("w.grad = t[:3]\n    return t, w.grad", "out[1].add_(100)"),
    "a view of an assigned grad returned": ("w.grad = t[:3].clone()\n    return w.grad.view(3)", "out.add_(100)"),
    "a grad of a detached view": ("w.grad = t.detach()[:3]\n    return t", "w.grad.add_(100)"),
    "a grad through reshape": ("w.grad = t.reshape(5)[:3]\n    return t", "out.add_(1000)"),
    "a grad and a result viewing one intermediate": ("w.grad = t[:3]\n    return t[1:]", "w.grad.add_(100)"),
    "two overlapping grads": ("w.grad = t[:3]; v.grad = t[1:3]\n    return x + 1", "w.grad.add_(100)"),
    "a grad overlapping two results": ("w.grad = t[2:5]\n    return t[:3] * 1, t[1:4]", "w.grad.add_(100)"),
    "a grad not shared with anything": ("w.grad = t[1:4]\n    return t * 1", "w.grad.add_(100)"),
}


def _run(body, write, compiled):
    namespace = {}
    exec(f"def f(x):\n    t = x * 2\n    {body}\n", namespace)
    w, v = ember.zeros(3, requires_grad=True), ember.zeros(2, requires_grad=True)
    namespace.update(w=w, v=v)
    fn = ember.compile(namespace["f"]) if compiled else namespace["f"]
    seen = []
    for call in range(4):  # (traced calls, then compiled ones)
        out = fn(ember.arange(5.0) + call)
        exec(write, {"w": w, "v": v, "out": out})
        outs = out if isinstance(out, tuple) else (out,)
        seen.append(([o.tolist() for o in outs], w.grad.tolist(), None if v.grad is None else v.grad.tolist(),
                     [o is w.grad for o in outs]))
    return seen, fn


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_compiled_calls_share_grad_memory_with_results_as_eagerly(name):
    body, write = PROGRAMS[name]
    expected, _ = _run(body, write, compiled=False)
    got, compiled = _run(body, write, compiled=True)
    assert compiled.report.compiled_calls >= 2
    assert got == expected


def test_a_write_through_the_grad_reaches_the_returned_result():
    def f(x):
        t = x * 2
        w.grad = t[:3]
        return t

    w = ember.zeros(3, requires_grad=True)
    compiled = ember.compile(f)
    for call in range(4):
        t = compiled(ember.ones(5))
        w.grad.add_(100)
        assert t.tolist() == [102.0] * 3 + [2.0] * 2
    assert compiled.report.compiled_calls == 3
