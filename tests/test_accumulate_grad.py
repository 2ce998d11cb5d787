"""When and how backward accumulates leaf gradients (PyTorch's AccumulateGrad): each leaf as
soon as its last contribution is in, its post-accumulate-grad hooks right after, final
callbacks at the end, and a `.grad` that shares memory with nothing else. (DDP builds on these:
tests/test_distributed.py.) Expected values are PyTorch 2.13's."""
import numpy as np
import pytest

import ember as torch
from ember.frontend.autograd import queue_callback


def test_two_backwards_accumulate_into_grads_of_their_own():
    a, b = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    for _ in range(2):
        ((a + b) * 2).sum().backward()  # add's VJP hands one cotangent array to both leaves
    assert a.grad.tolist() == b.grad.tolist() == [4.0, 4.0]
    go = torch.ones(2)
    c, d = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    for _ in range(2):
        (c + d).backward(go)  # the caller's grad_output reaches the leaves unchanged
    assert c.grad.tolist() == d.grad.tolist() == [2.0, 2.0] and go.tolist() == [1.0, 1.0]
    e = torch.ones(2, requires_grad=True)
    seed = torch.full((2,), 5.0)
    e.backward(seed)
    e.backward(seed)
    assert e.grad.tolist() == [10.0, 10.0] and seed.tolist() == [5.0, 5.0]


def test_post_accumulate_hooks_fire_during_backward_in_pytorch_order():
    fired = []
    first = torch.nn.Linear(3, 4)
    second = torch.nn.Linear(4, 2)
    for name, p in [("first.weight", first.weight), ("first.bias", first.bias), ("second.weight", second.weight),
                    ("second.bias", second.bias)]:
        p.register_post_accumulate_grad_hook(
            lambda p, name=name: fired.append((name, first.weight.grad is None, torch.is_grad_enabled())))
    second(torch.relu(first(torch.randn(5, 3)))).sum().backward()
    # the last layer's parameters first (bias before weight, as PyTorch); first.weight's gradient
    # was not accumulated yet when the second layer's hooks ran; grad mode is off in hooks
    assert fired == [("second.bias", True, False), ("second.weight", True, False), ("first.bias", True, False),
                     ("first.weight", False, False)]


def test_a_leaf_used_by_two_ops_fires_once_after_both_contributions():
    a, b = torch.ones(2, requires_grad=True), torch.full((2,), 3.0, requires_grad=True)
    seen = []
    a.register_post_accumulate_grad_hook(lambda t: seen.append(("a", t.grad.tolist(), b.grad is not None)))
    b.register_post_accumulate_grad_hook(lambda t: seen.append(("b", t.grad.tolist(), a.grad is not None)))
    ((a * b).sum() + b.sum()).backward()
    assert seen == [("a", [3.0, 3.0], False), ("b", [2.0, 2.0], True)]


def test_backward_with_inputs_accumulates_and_fires_post_accumulate_hooks():
    w = torch.ones(2, requires_grad=True)
    seen = []
    w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.tolist()))
    (w * 3).sum().backward(inputs=[w])
    assert seen == [[3.0, 3.0]] and w.grad.tolist() == [3.0, 3.0]
    torch.autograd.grad((w * 3).sum(), [w])  # autograd.grad accumulates nothing
    assert seen == [[3.0, 3.0]] and w.grad.tolist() == [3.0, 3.0]


def test_final_callbacks_run_once_at_the_end_and_may_queue_more():
    w = torch.ones(2, requires_grad=True)
    order = []

    def hook(t):
        order.append("hook")
        queue_callback(lambda: (order.append(("cb1", torch.is_grad_enabled())),
                                queue_callback(lambda: order.append("cb2"))))
    w.register_post_accumulate_grad_hook(hook)
    (w * 2).sum().backward()
    assert order == ["hook", ("cb1", False), "cb2"]
    with pytest.raises(RuntimeError, match="Final callbacks can only be installed during backward pass."):
        queue_callback(lambda: None)


def test_post_accumulate_hook_errors_match_pytorch():
    w = torch.ones(2, requires_grad=True)
    w.register_post_accumulate_grad_hook(lambda t: t)
    with pytest.raises(RuntimeError, match="Tensor post accumulate grad hooks should return None."):
        (w * 2).sum().backward()
    with pytest.raises(RuntimeError, match="post accumulate grad hooks cannot be registered on non-leaf tensors"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="cannot register a hook on a tensor that doesn't require gradient"):
        torch.ones(2).register_post_accumulate_grad_hook(lambda t: None)


def test_values_are_unchanged_by_early_accumulation():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((4, 3)).astype(np.float64))
    w1 = torch.from_numpy(rng.standard_normal((3, 5))).requires_grad_()
    w2 = torch.from_numpy(rng.standard_normal((5, 2))).requires_grad_()
    loss = (torch.tanh(x @ w1) @ w2).pow(2).sum() + (w1 * w1).sum()
    loss.backward()
    h = np.tanh(x.numpy() @ w1.detach().numpy())
    out = h @ w2.detach().numpy()
    np.testing.assert_allclose(w2.grad.numpy(), h.T @ (2 * out))
    dh = (2 * out) @ w2.detach().numpy().T * (1 - h ** 2)
    np.testing.assert_allclose(w1.grad.numpy(), x.numpy().T @ dh + 2 * w1.detach().numpy())


def test_hooks_of_requested_inputs_replace_the_gradient_whatever_it_holds():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: g * 2)
    (grad,) = torch.autograd.grad((x * x).sum(), [x])
    assert grad.tolist() == [4.0, 8.0]  # (a tensor of several elements: no truth test)
    s = torch.tensor([3.0], requires_grad=True)
    s.register_hook(lambda g: g * 0)
    assert torch.autograd.grad((s * s).sum(), [s])[0].tolist() == [0.0]  # (a zero gradient is a gradient)
    (s * s).sum().backward(inputs=[s])
    assert s.grad.tolist() == [0.0]


def test_backward_inputs_count_each_tensor_once():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (x * x * 3).sum().backward(inputs=[x, x])
    assert x.grad.tolist() == [6.0, 12.0]
    p = torch.tensor([1.0, 2.0], requires_grad=True)
    y = p * 1
    y.retain_grad()
    (y * y * 3).sum().backward(inputs=[y, y])
    assert y.grad.tolist() == [6.0, 12.0] and p.grad is None


def test_create_graph_gradients_are_tensors_of_their_own():
    a, b = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    (a + b).sum().backward(create_graph=True)
    assert a.grad is not b.grad and a.grad.stride() == (1,)
    with torch.no_grad():
        a.grad.mul_(5)
    assert a.grad.tolist() == [5.0, 5.0] and b.grad.tolist() == [1.0, 1.0]
    x = torch.ones(2, requires_grad=True)
    g = torch.ones(2)
    x.backward(g, create_graph=True)
    g.add_(10)
    assert x.grad.tolist() == [1.0, 1.0]


def test_final_callbacks_see_the_backward_grad_mode_and_leaf_roots_accumulate_first():
    w = torch.ones(2, requires_grad=True)
    modes = []
    w.register_post_accumulate_grad_hook(lambda t: queue_callback(lambda: modes.append(torch.is_grad_enabled())))
    (w * 2).sum().backward(create_graph=True)
    (w * 2).sum().backward()
    assert modes == [True, False]
    a, b = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    seen = []
    b.register_post_accumulate_grad_hook(lambda t: seen.append(a.grad is not None))
    torch.autograd.backward([a, (b * 2).sum()], [torch.ones(2), torch.ones(())])
    assert seen == [True]


def test_a_compiled_step_checks_post_accumulate_hooks_return_none():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    w.register_post_accumulate_grad_hook(lambda p: p.grad.mul_(0.5))

    def step(x):
        (w * x).sum().backward()
        return w.grad

    with pytest.raises(RuntimeError, match="Tensor post accumulate grad hooks should return None."):
        torch.compile(step)(torch.ones(2))


def test_grad_and_backward_inputs_run_only_what_leads_to_the_inputs():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([3.0, 4.0], requires_grad=True)
    fired = []
    bb = b * 1
    bb.register_hook(lambda g: fired.append("bb"))
    c = bb.exp()  # exp saves its output ...
    c.mul_(2)  # ... which is then overwritten: only a backward through c fails
    loss = (a * a).sum() + c.sum()
    loss.backward(inputs=[a], retain_graph=True)
    assert a.grad.tolist() == [2.0, 4.0] and b.grad is None
    assert torch.autograd.grad(loss, [a], retain_graph=True)[0].tolist() == [2.0, 4.0]
    assert fired == []
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_backward_inputs_runs_the_node_of_a_non_leaf_input():
    """backward(inputs=[y]) runs y's own node (checking its saved values, freeing it), as
    PyTorch; autograd.grad(loss, [y]) does not."""
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    a = torch.tensor([3.0, 4.0], requires_grad=True)
    y = a * w
    loss = (y * y).sum()
    loss.backward(inputs=[y])
    assert y.grad.tolist() == [6.0, 16.0] and w.grad is None
    with pytest.raises(RuntimeError, match="a second time"):
        y.sum().backward()
    b = torch.tensor([3.0, 4.0], requires_grad=True)
    z = b * w
    with torch.no_grad():
        pass
    zz = (z * z).sum()
    w2 = w.detach().clone().requires_grad_()
    y2 = b * w2
    loss2 = (y2 * y2).sum()
    with torch.no_grad():
        w2.mul_(10)  # y2's node saved w2
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss2.backward(inputs=[y2])
    assert torch.autograd.grad(zz, [z])[0].tolist() == [6.0, 16.0]
