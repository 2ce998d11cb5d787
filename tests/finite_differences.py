"""The test oracle for derivatives: float64 central finite differences against ember's VJPs.

`check_vjp(fn, arrays, wrt)` runs `fn` on ember tensors, pulls a random cotangent back with
ember.autograd.grad, and compares each gradient with the finite-difference derivative of
<fn(x), cotangent>. Used by the primitive, tensor-op, indexing and autograd tests.
"""
import numpy as np

import ember

EPS = 1e-6


def numeric_vjp(fn, arrays, wrt, cotangent, eps=EPS):
    """d<fn(arrays), cotangent>/d arrays[i] for each i in wrt, by central differences."""
    arrays = [np.array(a, copy=True) for a in arrays]

    def objective():
        with ember.no_grad():
            out = fn(*[ember.tensor(a) for a in arrays])
        return float(np.sum(out.detach().numpy().astype(np.float64) * cotangent))

    grads = []
    for i in wrt:
        flat = arrays[i].reshape(-1)
        grad = np.zeros(flat.shape, np.float64)
        for j in range(flat.size):
            original = flat[j]
            flat[j] = original + eps
            plus = objective()
            flat[j] = original - eps
            minus = objective()
            flat[j] = original
            grad[j] = (plus - minus) / (2 * eps)
        grads.append(grad.reshape(arrays[i].shape))
    return grads


def analytic_vjp(fn, arrays, wrt, cotangent):
    """ember's gradients of <fn(arrays), cotangent> (zeros for inputs the output ignores)."""
    tensors = [ember.tensor(a, requires_grad=i in wrt) for i, a in enumerate(arrays)]
    out = fn(*tensors)
    assert out.requires_grad, "the output does not depend on the differentiated inputs"
    grads = ember.autograd.grad(out, [tensors[i] for i in wrt],
                                grad_outputs=ember.tensor(cotangent.astype(out.numpy(force=True).dtype)),
                                allow_unused=True)
    return [np.zeros(arrays[i].shape) if g is None else g.numpy() for i, g in zip(wrt, grads)]


def check_vjp(fn, arrays, wrt=None, rtol=1e-5, atol=1e-7, seed=0, eps=EPS):
    """Assert ember's VJP of `fn` at `arrays` matches finite differences. `wrt` defaults to
    every floating-point array; a random cotangent exercises every output element."""
    arrays = [np.asarray(a) for a in arrays]
    if wrt is None:
        wrt = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    with ember.no_grad():
        out_shape = fn(*[ember.tensor(a) for a in arrays]).shape
    cotangent = np.random.default_rng(seed).standard_normal(tuple(out_shape))
    expected = numeric_vjp(fn, arrays, wrt, cotangent, eps)
    got = analytic_vjp(fn, arrays, wrt, cotangent)
    for i, e, g in zip(wrt, expected, got):
        assert g.shape == e.shape, f"gradient of input {i}: shape {g.shape}, expected {e.shape}"
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}")


def random(*shape, seed=0, low=None, high=None):
    """float64 test data: standard normal, or uniform in [low, high)."""
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, high, shape)
    return rng.standard_normal(shape)
