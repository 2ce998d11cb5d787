"""Helpers for tests that compare a compiled function with eager mode (the adversarial GPU test
files): call a compiled function the way a user does (the first call traces eagerly, the second
runs the program), compare results or a training run's losses and parameters with eager's."""
import numpy as np

import ember


def clone(a):
    return a.clone() if hasattr(a, "clone") else a


def compiled(fn, *args, backend="ptx-emulated"):
    """fn compiled for `backend`, called twice (the first call traces eagerly): the second result."""
    c = ember.compile(fn, backend=backend)
    c(*[clone(a) for a in args])
    return c(*[clone(a) for a in args])


def arrays(result):
    if isinstance(result, (tuple, list)):
        return [np.asarray(r.detach().numpy()) for r in result]
    return [np.asarray(result.detach().numpy())]


def assert_like_eager(fn, *args, rtol=1e-5, atol=1e-6, backend="ptx-emulated"):
    """fn compiled for `backend` gives eager's results (integers exactly, floats within tolerance)."""
    expected = arrays(fn(*[clone(a) for a in args]))
    got = arrays(compiled(fn, *args, backend=backend))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, g.dtype, e.shape, e.dtype)
        if e.dtype.kind in "biu":
            np.testing.assert_array_equal(g, e)
        else:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True)


def assert_training_like_eager(make, loss_of, x, y, backend="ptx-emulated", steps=3):
    """Three steps of a training loop, eager then compiled for `backend`, from the same start
    (`make()` -> (model, optimizer), after ember.manual_seed(0)): the same losses and parameters."""
    results = []
    for each in (None, backend):
        ember.manual_seed(0)
        model, optimizer = make()

        def step(x, y):
            optimizer.zero_grad()
            loss = loss_of(model, x, y)
            loss.backward()
            optimizer.step()
            return loss
        run = step if each is None else ember.compile(step, backend=each)
        losses = [float(run(x, y)) for _ in range(steps)]
        results.append((losses, [p.detach().numpy().copy() for p in model.parameters()]))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for got, expected in zip(results[1][1], results[0][1]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
