"""A compiled backward's .grad is laid out as eager mode's: a contiguous tensor of its own, so
`.grad.view(-1)` works (a first gradient that is a transposed view, as a Linear weight's
`permute(x.T @ g)`, is copied, as eager autograd's AccumulateGrad copies every first gradient)."""
import numpy as np
import pytest

import ember
import ember.nn as nn


@pytest.mark.parametrize("backend", ["llvm", "interpret"])
def test_a_linear_weights_first_grad_is_contiguous_as_eagerly(backend):
    ember.manual_seed(0)
    model = nn.Linear(3, 2)

    def step(x):
        model(x).sum().backward()
        return x.sum()

    run = ember.compile(step, backend=backend)
    eager_model = nn.Linear(3, 2)
    eager_model.load_state_dict(model.state_dict())
    for i in range(4):
        x = ember.randn(4, 3)
        model.weight.grad = eager_model.weight.grad = None
        run(x)
        eager_model(x).sum().backward()
        got, want = model.weight.grad, eager_model.weight.grad
        assert got.is_contiguous() and got._data.strides == want._data.strides, (i, got._data.strides)
        np.testing.assert_allclose(got.view(-1).numpy(), want.view(-1).numpy(), rtol=1e-6)
    assert run.report.compiled_calls >= 1
