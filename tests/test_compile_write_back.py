"""How a compiled program's mutations reach their targets (params, optimizer buffers, .grad,
inputs): an unshared target takes the program's output array as its own (no copy); a target
whose memory someone else can see (a numpy array or view the caller holds) is updated in
place. Both must give the same values as eager training."""
import numpy as np
import pytest

import ember
from ember import nn
from ember.compiler.backends import RUNNABLE_BACKENDS


def _pair(seed=0):
    ember.manual_seed(seed)
    eager_net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    compiled_net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    compiled_net.load_state_dict(eager_net.state_dict())
    return eager_net, compiled_net


def _step_fn(net):
    optimizer = ember.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step, optimizer


def _batches(count):
    rng = np.random.default_rng(3)
    return [(ember.from_numpy(rng.standard_normal((4, 5)).astype(np.float32)),
             ember.from_numpy(rng.integers(0, 3, 4))) for _ in range(count)]


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_unshared_params_grads_and_buffers_take_the_programs_arrays_and_match_eager(backend):
    eager_net, compiled_net = _pair()
    eager_step, _ = _step_fn(eager_net)
    step, optimizer = _step_fn(compiled_net)
    compiled = ember.compile(step, backend=backend)
    for x, y in _batches(8):
        before = {name: id(p._data) for name, p in compiled_net.named_parameters()}  # ids: no reference
        assert float(compiled(x, y)) == pytest.approx(float(eager_step(x, y)), rel=1e-5)
        for (name, p), (_, q) in zip(compiled_net.named_parameters(), eager_net.named_parameters()):
            np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert compiled.report.compiled_calls >= 5
    if backend == "llvm":
        # the fast path was taken: the params' arrays were replaced, not written into
        assert all(id(p._data) != before[name] for name, p in compiled_net.named_parameters())
    buffers = [optimizer.state[p]["momentum_buffer"] for p in compiled_net.parameters()]
    assert all(b._version > 0 for b in buffers)


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_a_numpy_array_or_view_the_caller_holds_sees_every_update(backend):
    eager_net, compiled_net = _pair(1)
    eager_step, _ = _step_fn(eager_net)
    step, _ = _step_fn(compiled_net)
    compiled = ember.compile(step, backend=backend)
    weight = compiled_net[0].weight
    held = weight.detach().numpy()  # shares the parameter's memory, as in torch
    row = held[1]  # a view of it
    for x, y in _batches(5):
        eager_step(x, y)
        compiled(x, y)
        np.testing.assert_allclose(held, eager_net[0].weight.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row, eager_net[0].weight.detach().numpy()[1], rtol=1e-5, atol=1e-6)
        assert np.shares_memory(held, weight.detach().numpy())


def test_a_saved_tensor_modified_by_a_compiled_update_is_still_caught():
    net = nn.Linear(3, 2)
    optimizer = ember.optim.SGD(net.parameters(), lr=0.1)

    def step(x):
        optimizer.zero_grad()
        net(x).sum().backward()
        optimizer.step()

    compiled = ember.compile(step)
    x = ember.ones(4, 3)
    compiled(x), compiled(x)
    pending = (net(x.clone().requires_grad_()) ** 2).sum()  # saves the weight for x's gradient
    compiled(x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        pending.backward()
