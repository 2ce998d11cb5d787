"""Helpers for the tests that run a `.grad` scenario eagerly and compiled and compare what the
caller observes after each call (test_compiled_grad_*_adversarial*.py). A scenario takes `wrap`
(identity, or ember.compile) and returns one list of observations per call."""
import numpy as np

import ember


def observed(value):
    """A tensor's values (a copy), or a plain None, bool or str as it is."""
    if value is None or isinstance(value, (bool, str)):
        return value
    return value.detach().numpy().copy()


def eager_and_compiled(scenario):
    """(eager observations, compiled observations, the compiled function)."""
    eager = scenario(lambda f: f)
    made = {}

    def wrap(f):
        made["f"] = ember.compile(f)
        return made["f"]
    return eager, scenario(wrap), made["f"]


def assert_same_observations(eager, compiled):
    assert len(eager) == len(compiled)
    for i, (e, c) in enumerate(zip(eager, compiled)):
        assert len(e) == len(c)
        for j, (a, b) in enumerate(zip(e, c)):
            if a is None or isinstance(a, (bool, str)):
                assert a is b if a is None else a == b, f"call {i}, item {j}: eager {a!r}, compiled {b!r}"
            else:
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=f"call {i}, item {j}")


def two_grads_of_one_made_tensor(how):
    """(w, v, f, x_of(i)): `f(x)` makes `t = x * 2` and sets `w.grad = v.grad = t`
    (how="same_tensor") or `w.grad = t[:3]; v.grad = t[3:]` (views of one tensor); `x_of(i)`
    is call i's argument."""
    w = ember.ones(3, requires_grad=True)
    v = ember.ones(3, requires_grad=True)

    def f(x):
        t = x * 2
        if how == "same_tensor":
            w.grad = t
            v.grad = t
        else:
            w.grad = t[:3]
            v.grad = t[3:]
        return w + v
    return w, v, f, lambda i: ember.full((3 if how == "same_tensor" else 6,), float(i))
