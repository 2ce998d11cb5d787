"""The backward of a compiled call checks, as every eager autograd node does, that no tensor
whose memory it reads (a saved input, a param, the returned output) was overwritten in place
after the forward read it: PyTorch's "modified by an inplace operation" error, never a
gradient computed from the new values. Tensors the backward does not read may change freely,
and a compiled module that updates its own buffers (BatchNorm in train mode) trains as eagerly.
Expected values come from numpy."""
import numpy as np
import pytest

import ember
from ember import nn
from ember.compiler.backends import RUNNABLE_BACKENDS

MODIFIED = "one of the variables needed for gradient computation has been modified by an inplace operation"


def _compiled(fn, backend, *example_args):
    """ember.compile(fn), called on copies of the examples until its calls are served by the
    compiled program (the first call traces eagerly)."""
    compiled = ember.compile(fn, backend=backend)
    for _ in range(2):
        compiled(*[a.detach().clone().requires_grad_(a.requires_grad) for a in example_args])
    return compiled


def _served_compiled(compiled, *args):
    """Call `compiled`, checking that the compiled program (not an eager trace) ran."""
    before = compiled.report.compiled_calls
    result = compiled(*args)
    assert compiled.report.compiled_calls == before + 1
    return result


def _x_and_w():
    return ember.tensor([1.0, 2.0, 3.0]), ember.tensor([1.0, 1.0, 1.0], requires_grad=True)


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_overwriting_a_saved_input_before_backward_raises(backend):
    f = _compiled(lambda x, w: (x * w).sum(), backend, *_x_and_w())
    for _ in range(2):  # every compiled call, not just the first
        x, w = _x_and_w()
        loss = _served_compiled(f, x, w)
        x.mul_(10)
        with pytest.raises(RuntimeError) as info:
            loss.backward()
        message = str(info.value)
        assert message.startswith(MODIFIED)
        assert "[ember.FloatTensor [3]], which is input 'x' of CompiledFunctionBackward0" in message
        assert "is at version 1; expected version 0 instead" in message
        assert w.grad is None


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_overwriting_a_view_of_a_saved_input_raises(backend):
    f = _compiled(lambda x, w: (x * w).sum(), backend, *_x_and_w())
    x, w = _x_and_w()
    loss = _served_compiled(f, x, w)
    x[1:].mul_(10)  # the view shares x's version counter
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()
    assert w.grad is None


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_overwriting_an_input_under_a_saved_view_of_it_raises(backend):
    # the backward reads x.reshape(3, 1); eagerly that is a view of x, so writing x fails
    f = _compiled(lambda x, w: (x.reshape(3, 1) * w).sum(), backend,
                  ember.tensor([1.0, 2.0, 3.0]), ember.tensor([[1.0, 1.0]], requires_grad=True))
    x, w = ember.tensor([1.0, 2.0, 3.0]), ember.tensor([[1.0, 1.0]], requires_grad=True)
    loss = _served_compiled(f, x, w)
    x.mul_(10)
    with pytest.raises(RuntimeError, match=r"\[ember.FloatTensor \[3\]\], which is input 'x' of "
                                           r"CompiledFunctionBackward0"):
        loss.backward()


@pytest.mark.parametrize("write", ["whole", "view"])
@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_overwriting_the_returned_output_the_backward_reads_raises(backend, write):
    a0 = np.array([1.0, 2.0], np.float32)
    g = _compiled(lambda a: a.exp(), backend, ember.tensor(a0, requires_grad=True))
    for _ in range(2):
        a = ember.tensor(a0, requires_grad=True)
        out = _served_compiled(g, a)  # exp's VJP reads its output
        if write == "whole":
            out.mul_(2)
        else:
            out[0].mul_(2)
        with pytest.raises(RuntimeError) as info:
            out.sum().backward()
        assert str(info.value).startswith(MODIFIED)
        assert "[ember.FloatTensor [2]], which is output 0 of CompiledFunctionBackward0" in str(info.value)
        assert a.grad is None


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_overwriting_a_param_the_backward_reads_raises(backend):
    ember.manual_seed(0)
    linear = nn.Linear(3, 2)
    example = ember.randn(4, 3, requires_grad=True)
    f = _compiled(linear, backend, example)
    x = ember.randn(4, 3, requires_grad=True)
    out = _served_compiled(f, x)
    with ember.no_grad():
        linear.weight.mul_(2)  # the gradient for x reads the weight
    with pytest.raises(RuntimeError, match=r"\[ember.FloatTensor \[2, 3\]\], which is param 'weight' of "
                                           r"CompiledFunctionBackward0"):
        out.sum().backward()
    assert x.grad is None


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_without_overwrites_the_compiled_backward_gives_the_gradient(backend):
    f = _compiled(lambda x, w: (x * w).sum(), backend, *_x_and_w())
    x, w = _x_and_w()
    _served_compiled(f, x, w).backward()
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 2.0, 3.0])

    a0 = np.array([0.5, -1.0, 2.0], np.float32)
    g = _compiled(lambda a: a.exp(), backend, ember.tensor(a0, requires_grad=True))
    a = ember.tensor(a0, requires_grad=True)
    _served_compiled(g, a).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), np.exp(a0.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_overwriting_what_the_backward_does_not_read_is_allowed(backend):
    # add's VJP reads nothing: x may change before backward, as in PyTorch
    f = _compiled(lambda x, w: (x + w).sum(), backend, *_x_and_w())
    x, w = _x_and_w()
    loss = _served_compiled(f, x, w)
    x.mul_(10)
    loss.backward()
    np.testing.assert_allclose(w.grad.numpy(), [1.0, 1.0, 1.0])

    # mul's VJP for w reads x, not the product: the returned output may change
    h = _compiled(lambda x, w: x * w, backend, *_x_and_w())
    x, w = _x_and_w()
    out = _served_compiled(h, x, w)
    out.mul_(2)
    out.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [2.0, 4.0, 6.0])
    np.testing.assert_allclose(out.detach().numpy(), [2.0, 4.0, 6.0])


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_a_call_that_updates_its_input_saves_the_new_value_for_backward(backend):
    def f(x, w):
        x.mul_(2)
        return (x * w).sum()

    f = _compiled(f, backend, *_x_and_w())
    x, w = _x_and_w()
    loss = _served_compiled(f, x, w)
    np.testing.assert_allclose(x.numpy(), [2.0, 4.0, 6.0])  # written back into the caller's tensor
    x.mul_(10)  # the backward keeps the program's value of 2 * x, as torch.compile does
    loss.backward()
    np.testing.assert_allclose(w.grad.numpy(), [2.0, 4.0, 6.0])


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_a_call_that_updates_an_input_it_saved_fails_backward_as_eagerly(backend):
    def f(x, w):
        y = (x * w).sum()  # saves x
        x.add_(1)  # then overwrites it
        return y

    f = _compiled(f, backend, *_x_and_w())
    for _ in range(2):
        x, w = _x_and_w()
        loss = f(x, w)
        np.testing.assert_allclose(x.numpy(), [2.0, 3.0, 4.0])
        with pytest.raises(RuntimeError, match=MODIFIED):
            loss.backward()
        assert w.grad is None


def _batch_norm_net():
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_compiled_batch_norm_training_updates_buffers_and_backward_runs_as_eagerly(backend):
    # the compiled forward writes running_mean, running_var and num_batches_tracked back
    # (bumping their versions); the backward reads none of them, so it must not fail
    ember.manual_seed(0)
    eager_net, compiled_net = _batch_norm_net(), _batch_norm_net()
    compiled_net.load_state_dict(eager_net.state_dict())
    compiled = ember.compile(compiled_net, backend=backend)
    eager_opt = ember.optim.SGD(eager_net.parameters(), lr=0.1)
    compiled_opt = ember.optim.SGD(compiled_net.parameters(), lr=0.1)
    rng = np.random.default_rng(0)
    for _ in range(4):
        x = ember.from_numpy(rng.standard_normal((8, 4)).astype(np.float32))
        for model, opt in ((eager_net, eager_opt), (compiled, compiled_opt)):
            opt.zero_grad()
            (model(x) ** 2).sum().backward()
            opt.step()
        for (name, p), (_, q) in zip(eager_net.named_parameters(), compiled_net.named_parameters()):
            np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
        for (name, p), (_, q) in zip(eager_net.named_buffers(), compiled_net.named_buffers()):
            np.testing.assert_allclose(q.numpy(), p.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert compiled.report.compiled_calls >= 2
    assert compiled_net[1].running_mean._version > 0  # the write-back did bump it


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_a_call_that_writes_a_saved_input_through_data_reads_the_new_value_as_eagerly(backend):
    # autograd does not see a write through .data: eagerly, backward runs and reads x's new
    # memory; the compiled call's own write-back of x must not make its backward fail
    def f(x, w):
        y = (x * w).sum()
        x.data.mul_(2)
        return y

    f = _compiled(f, backend, *_x_and_w())
    x, w = _x_and_w()
    _served_compiled(f, x, w).backward()
    np.testing.assert_allclose(x.numpy(), [2.0, 4.0, 6.0])
    np.testing.assert_allclose(w.grad.numpy(), [2.0, 4.0, 6.0])


class _ClampsItsWeight(nn.Module):
    """Uses its weight, then clamps it through .data (unseen by autograd)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x):
        out = self.linear(x)
        self.linear.weight.data.clamp_(-0.1, 0.1)
        return out


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_a_module_that_clamps_its_weight_through_data_gets_the_eager_gradient(backend):
    w0 = np.array([[0.5, -0.3, 0.05], [0.2, 0.9, -0.7]], np.float32)
    module = _ClampsItsWeight()
    compiled = ember.compile(module, backend=backend)
    for _ in range(3):
        with ember.no_grad():
            module.linear.weight.copy_(ember.tensor(w0))
        x = ember.ones(1, 3, requires_grad=True)
        compiled(x).sum().backward()
        # eagerly the backward reads the weight's memory (through weight.t(), a view), clamped
        np.testing.assert_allclose(x.grad.numpy(), np.clip(w0, -0.1, 0.1).sum(axis=0, keepdims=True), rtol=1e-6)
        np.testing.assert_allclose(module.linear.weight.detach().numpy(), np.clip(w0, -0.1, 0.1))
    assert compiled.report.compiled_calls >= 1


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_a_write_through_data_under_a_saved_no_grad_view_gives_the_eager_gradient(backend):
    # eagerly, backward of x * v reads v = x[0] (a view taken under no_grad) after the write
    # through .data: the gradient is the new x[0]; a compiled program would use the old one
    def f(x):
        with ember.no_grad():
            v = x[0]
        loss = (x * v).sum()
        x.data.mul_(2)
        return loss

    compiled = _compiled(f, backend, ember.tensor([1.0, 2.0, 3.0], requires_grad=True))
    for expected_first in (2.0, 4.0):
        x = ember.tensor([expected_first / 2, 2.0, 3.0], requires_grad=True)
        compiled(x).backward()
        np.testing.assert_allclose(x.grad.numpy(), [expected_first] * 3)
        np.testing.assert_allclose(x.detach().numpy(), [expected_first, 4.0, 6.0])
    assert any("no_grad view" in reason for reason in compiled.report.eager_reasons)


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_assigning_data_keeps_the_old_memory_for_what_still_reads_it(backend):
    # eagerly x.data = ... points x at new memory: a view held outside and a value saved for
    # backward keep the old values (a compiled call must not write the new value into them)
    def doubled(x):
        x.data = x.data * 2
        return x.sum()

    compiled = ember.compile(doubled, backend=backend)
    for _ in range(3):
        x = ember.tensor([1.0, 2.0, 3.0])
        held = x[0]
        assert compiled(x).item() == 12.0 and held.item() == 1.0 and x[0].item() == 2.0

    def saved(x):
        with ember.no_grad():
            v = x[0]
        loss = (x * v).sum()
        x.data = x.data * 2
        return loss

    compiled = ember.compile(saved, backend=backend)
    for _ in range(3):
        x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
        compiled(x).backward()
        np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0, 1.0])


@pytest.mark.parametrize("backend", RUNNABLE_BACKENDS)
def test_a_tensor_rearranged_in_place_after_being_saved_fails_backward_compiled(backend):
    def f(a):
        x = a * 1
        y = x.sin()
        x.t_()  # bumps x's version: sin's backward reads x
        return y

    compiled = ember.compile(f, backend=backend)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            compiled(ember.ones(2, 3, requires_grad=True)).sum().backward()


@pytest.mark.parametrize("read", ["whole", "view inside", "view of another call"])
def test_a_data_write_into_a_leaf_a_pending_backward_reads_runs_eagerly(read):
    # .data does not move the version counter: eager backward() reads w's new values, which a
    # program traced with the old ones cannot (it gave the old gradient; with a view made outside
    # the function, an internal error)
    def make():
        ember.manual_seed(0)
        w = ember.nn.Parameter(ember.randn(2, 3))
        a = ember.nn.Parameter(ember.randn(3))
        outside = w[0]

        def step():
            v = {"whole": w, "view inside": w[0] if read != "whole" else w}.get(read, outside)
            y = (v * a).sum()
            w.data.mul_(0.5)
            y.backward()
            g = a.grad.clone()
            a.grad = None
            return g
        return step
    eager, compiled = make(), ember.compile(make())
    for call in range(3 if read != "view of another call" else 1):  # (eager backs through `outside` once)
        np.testing.assert_allclose(compiled().numpy(), eager().numpy(), rtol=1e-6)
