"""frontend/nn/one_pass_gelu.py: eager GELU of large float32 tensors through one compiled pass
each way, equal to the composed primitives (forward, backward, double backward), and never
inside a trace."""
import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.frontend.eager_compiled_ops import SMALL
from ember.frontend.nn.one_pass_gelu import GELU_FORWARD, composed_gelu, composed_gelu_grad


def _pair(shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * 3).astype(dtype)
    a.reshape(-1)[:4] = [0.0, -0.0, 40.0, -40.0]
    return ember.tensor(a, requires_grad=True), ember.tensor(a.copy(), requires_grad=True)


@pytest.mark.parametrize("shape", [(8, 64, 512), (3, SMALL + 1), (SMALL,), (1 << 16, 2)])
def test_one_pass_gelu_equals_the_composed_primitives(shape):
    fast, slow = _pair(shape)
    y, reference = F.gelu(fast), composed_gelu(slow)
    assert y.grad_fn.name() == "GeluBackward0"  # (as PyTorch names it)
    np.testing.assert_allclose(y.detach().numpy(), reference.detach().numpy(), rtol=2e-6, atol=2e-7)
    g = ember.tensor(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    y.backward(g)
    reference.backward(g)
    np.testing.assert_allclose(fast.grad.numpy(), slow.grad.numpy(), rtol=2e-6, atol=2e-7)


def test_the_gradient_of_the_gradient_composes_primitives():
    fast, slow = _pair((4, SMALL))
    (gx,) = ember.autograd.grad(F.gelu(fast).sum(), fast, create_graph=True)
    (gx_ref,) = ember.autograd.grad(composed_gelu(slow).sum(), slow, create_graph=True)
    np.testing.assert_allclose(gx.detach().numpy(), gx_ref.detach().numpy(), rtol=2e-6, atol=2e-7)
    (second,) = ember.autograd.grad(gx.sum(), fast)
    (second_ref,) = ember.autograd.grad(gx_ref.sum(), slow)
    np.testing.assert_allclose(second.numpy(), second_ref.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,dtype", [((SMALL - 1,), np.float32), ((2, SMALL), np.float64)])
def test_small_or_other_dtype_tensors_compose_primitives(shape, dtype):
    fast, _ = _pair(shape, dtype=dtype)
    assert F.gelu(fast).grad_fn.name() != "GeluBackward0"


def test_a_trace_records_the_primitives_not_the_one_pass_function():
    x = ember.randn(8, SMALL, requires_grad=True)
    graph = ember.trace(lambda x: F.gelu(x).sum(), x)
    assert "erf" in {n.op for n in graph.nodes()}
    compiled = ember.compile(lambda x: F.gelu(x) * 2)
    for _ in range(2):
        got = compiled(x.detach())
    np.testing.assert_allclose(got.numpy(), (F.gelu(x) * 2).detach().numpy(), rtol=2e-6, atol=2e-7)


def test_the_backward_formula_is_pytorchs():
    x = np.linspace(-6, 6, 1001)
    g = np.full_like(x, 0.5)
    from math import erf, exp, pi, sqrt
    want = np.array([0.5 * (0.5 * (1 + erf(v / sqrt(2))) + v * exp(-v * v / 2) / sqrt(2 * pi)) for v in x])
    got = composed_gelu_grad(ember.tensor(x), ember.tensor(g)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert GELU_FORWARD.applies(np.zeros(SMALL, np.float32)) and not GELU_FORWARD.applies(np.zeros(SMALL))


def test_eager_chunk_programs_run_on_the_calling_thread():
    # (libgomp's spinning threads and numpy's BLAS threads would fight over the cores between
    # eager matmuls): one thread whatever set_num_threads chose
    from ember.runtime.cpu_program import THREADS
    before = ember.get_num_threads()
    try:
        ember.set_num_threads(2)
        F.gelu(ember.randn(16, SMALL))  # (one chunk of the big program)
        runners = [run for run, _, _ in GELU_FORWARD.programs]
        assert runners and all(run.fixed_threads == 1 for run in runners) and runners[0]._table[THREADS] == 1
    finally:
        ember.set_num_threads(before)


def test_a_transposed_input_gives_a_transposed_result_as_in_pytorch():
    x = ember.randn(64, 130)
    for y in (F.gelu(x.t()), ember.erf(x.t())):  # (both run the chunk programs)
        assert y.stride() == (1, 130)
        y.t().view(-1)  # (PyTorch's result is a transposed view of contiguous memory too)
    np.testing.assert_allclose(F.gelu(x.t()).numpy(), composed_gelu(x.t()).numpy(), rtol=2e-6, atol=2e-7)


def test_an_input_changed_in_place_after_the_forward_raises_pytorchs_error():
    x = ember.randn(64, 130, requires_grad=True)
    v = x * 1
    y = F.gelu(v)
    v.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
