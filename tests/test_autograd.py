"""Eager autograd semantics, PyTorch's: gradient accumulation, retain_graph, higher-order
gradients (create_graph) against finite differences, autograd.grad, grad-mode context
managers and decorators, hooks, retain_grad, the grad_fn graph, detach/.data, and in-place
updates of non-leaf tensors.
"""
import numpy as np
import pytest

import ember
from finite_differences import check_vjp, random


def gradient_of(f):
    """The gradient of scalar f as a differentiable function (create_graph=True): checking
    its VJP against finite differences checks Hessian-vector products."""
    def gradient(*xs):
        with ember.enable_grad():
            xs = [x if x.requires_grad else x.detach().requires_grad_() for x in xs]
            grads = ember.autograd.grad(f(*xs), xs, create_graph=True)
        return ember.cat([g.reshape(-1) for g in grads])
    return gradient


# ----------------------------------------------------------------------------- accumulation, retain_graph

def test_grad_accumulates_over_two_backward_calls():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    first = x.grad
    (x * 3).sum().backward()
    assert x.grad.tolist() == [5.0, 7.0]
    assert first is x.grad  # accumulated in place, as PyTorch does
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]
    x.grad.zero_()
    assert x.grad.tolist() == [0.0, 0.0]


def test_retain_graph_allows_a_second_backward():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    once = x.grad.tolist()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array(once), rtol=1e-6)
    with pytest.raises(RuntimeError, match="(?i)backward through the graph a second time"):
        y.backward()


def test_fan_out_sums_gradients():
    x = ember.tensor([1.0, -2.0], requires_grad=True)
    y = x * x + x.exp() + x  # x used four times
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy() + np.exp(x.detach().numpy()) + 1, rtol=1e-6)


def test_gradients_keep_the_leaf_dtype():
    x = ember.tensor([1.0, 2.0], dtype=ember.float64, requires_grad=True)
    (x * 2).sum().backward()
    assert x.grad.dtype is ember.float64


def test_backward_casts_the_given_gradient_to_the_output_dtype():
    x = ember.tensor([1.0, 2.0], dtype=ember.float64, requires_grad=True)
    (x * 2).backward(ember.ones(2))  # float32 gradient for a float64 output
    assert x.grad.dtype is ember.float64 and x.grad.tolist() == [2.0, 2.0]


def test_backward_with_inputs_only_fills_those():
    x, w = ember.tensor([1.0, 2.0], requires_grad=True), ember.tensor([3.0, 4.0], requires_grad=True)
    (x * w).sum().backward(inputs=[x])
    assert x.grad.tolist() == [3.0, 4.0] and w.grad is None


# ----------------------------------------------------------------------------- higher order

def test_second_derivative_of_cube():
    x = ember.tensor(2.0, requires_grad=True)
    (first,) = ember.autograd.grad(x ** 3, x, create_graph=True)
    assert first.item() == 12.0 and first.requires_grad
    (second,) = ember.autograd.grad(first, x, create_graph=True)
    assert second.item() == 12.0  # 6x
    (third,) = ember.autograd.grad(second, x)
    assert third.item() == 6.0


def test_second_derivative_of_tanh():
    values = np.array([-1.5, 0.0, 0.3, 2.0])
    x = ember.tensor(values, requires_grad=True)
    (first,) = ember.autograd.grad(x.tanh().sum(), x, create_graph=True)
    (second,) = ember.autograd.grad(first.sum(), x)
    t = np.tanh(values)
    np.testing.assert_allclose(first.detach().numpy(), 1 - t ** 2, rtol=1e-12)
    np.testing.assert_allclose(second.numpy(), -2 * t * (1 - t ** 2), rtol=1e-12)


def test_backward_with_create_graph_leaves_a_differentiable_grad():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    (x ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    grad = x.grad
    x.grad = None
    grad.sum().backward()
    assert x.grad.tolist() == [6.0, 12.0]


def _mlp(w1, b1, w2, x):
    return ((x @ w1 + b1).tanh() @ w2).sigmoid().sum()


def test_mlp_hessian_vector_product_matches_finite_differences():
    x = ember.tensor(random(4, 3, seed=9))
    arrays = [random(3, 5), random(5, seed=1), random(5, 2, seed=2)]
    check_vjp(gradient_of(lambda w1, b1, w2: _mlp(w1, b1, w2, x)), arrays, rtol=1e-5, atol=1e-7)


SECOND_ORDER = [
    ("exp_log", lambda x: (x.exp() + x.log()).sum(), [random(4, low=0.5, high=2.0)]),
    ("sqrt_rsqrt_reciprocal", lambda x: (x.sqrt() + x.rsqrt() + x.reciprocal()).sum(), [random(4, low=0.5, high=2.0)]),
    ("sin_cos_erf", lambda x: (x.sin() * x.cos() + ember.erf(x)).sum(), [random(4)]),
    ("sigmoid_log1p_expm1", lambda x: (x.sigmoid() + x.log1p() + x.expm1()).sum(), [random(4, low=0.1, high=1.0)]),
    ("div_both", lambda a, b: (a / b).sum(), [random(3), random(3, low=0.5, high=2.0, seed=1)]),
    ("pow_both", lambda a, b: (a ** b).sum(), [random(3, low=0.5, high=2.0), random(3, seed=1)]),
    ("prod", lambda x: x.prod(dim=1).sum(), [random(2, 3)]),
    ("prod_with_a_zero", lambda x: x.prod(), [np.array([0.0, 2.0, 3.0])]),
    ("prod_with_two_zeros", lambda x: x.prod(dim=1).sum(), [np.array([[0.0, 2.0, 0.0, 3.0], [1.0, 0.0, 0.0, 0.0]])]),
    ("norm", lambda x: x.norm(), [random(2, 3)]),
    ("var_std", lambda x: x.var(dim=0).sum() + x.std(), [random(3, 2)]),
    ("logsumexp", lambda x: x.logsumexp(dim=1).sum(), [random(2, 3)]),
    ("matmul", lambda a, b: ((a @ b) ** 2).sum(), [random(2, 3), random(3, 2, seed=1)]),
    ("amax_where", lambda x: ember.where(x > 0, x * x, -x).amax(dim=0).sum(), [random(3, 2)]),
    ("indexing", lambda x: (x[ember.tensor([0, 2])] ** 3).sum() + (x[1:, ::2] ** 2).sum(), [random(3, 4)]),
    ("cumsum_gather", lambda x: (x.cumsum(1).gather(1, ember.tensor([[2, 0], [1, 1]])) ** 2).sum(), [random(2, 3)]),
    ("maximum", lambda a, b: (ember.maximum(a, b) ** 2).sum(), [random(4), random(4, seed=1)]),
    ("conv2d", lambda x, w: (ember.ops.PRIMITIVES["conv2d"].bind(
        x, w, stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=1) ** 2).sum(),
     [random(1, 2, 5, 5), random(2, 2, 2, 2, seed=1)]),
]


@pytest.mark.parametrize("f, arrays", [c[1:] for c in SECOND_ORDER], ids=[c[0] for c in SECOND_ORDER])
def test_hessian_vector_products_match_finite_differences(f, arrays):
    check_vjp(gradient_of(f), arrays)


# ----------------------------------------------------------------------------- autograd.grad

def test_autograd_grad_returns_without_accumulating():
    x, unused = ember.tensor([1.0, 2.0], requires_grad=True), ember.tensor([1.0], requires_grad=True)
    gx, gu = ember.autograd.grad((x * x).sum(), [x, unused], allow_unused=True)
    assert gx.tolist() == [2.0, 4.0] and gu is None
    assert x.grad is None and not gx.requires_grad
    gx, gu = ember.autograd.grad((x * x).sum(), [x, unused], materialize_grads=True)
    assert gu.tolist() == [0.0]
    (single,) = ember.autograd.grad((x * 3).sum(), x)
    assert single.tolist() == [3.0, 3.0]
    with pytest.raises(RuntimeError, match="does not require grad"):
        ember.autograd.grad((x * 3).sum(), ember.zeros(1))


def test_autograd_grad_with_grad_outputs_and_several_outputs():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    (g,) = ember.autograd.grad([x * 2, x * x], [x], grad_outputs=[ember.tensor([1.0, 0.0]), ember.tensor([1.0, 1.0])])
    assert g.tolist() == [4.0, 4.0]


def test_autograd_backward_of_several_roots():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    ember.autograd.backward([(x * 2).sum(), (x * x).sum()])
    assert x.grad.tolist() == [4.0, 6.0]


# ----------------------------------------------------------------------------- grad mode

def test_grad_mode_context_managers_nest_and_restore():
    x = ember.ones(2, requires_grad=True)
    with ember.no_grad():
        assert not (x * 2).requires_grad and not ember.is_grad_enabled()
        with ember.enable_grad():
            assert (x * 2).requires_grad
        assert not (x * 2).requires_grad
    assert ember.is_grad_enabled()
    with ember.set_grad_enabled(False):
        assert not (x * 2).requires_grad
        with ember.set_grad_enabled(True):
            assert (x * 2).requires_grad
    assert ember.is_grad_enabled()
    with ember.inference_mode():
        assert not (x * 2).requires_grad
    with pytest.raises(ValueError):
        with ember.no_grad():
            raise ValueError("restored even on errors")
    assert ember.is_grad_enabled()


def test_set_grad_enabled_as_a_plain_call_switches_immediately():
    try:
        ember.set_grad_enabled(False)
        assert not ember.is_grad_enabled()
    finally:
        ember.set_grad_enabled(True)
    assert ember.is_grad_enabled()


def test_grad_mode_decorators_without_parentheses_as_in_current_pytorch():
    x = ember.ones(2, requires_grad=True)

    @ember.no_grad
    def double(t):
        return t * 2

    @ember.no_grad
    def steps(t):
        yield t * 2

    @ember.enable_grad
    def tracked(t):
        return t * 2

    assert not double(x).requires_grad and double.__name__ == "double"
    assert [s.requires_grad for s in steps(x)] == [False]
    with ember.no_grad():
        assert tracked(x).requires_grad
    assert ember.is_grad_enabled()
    with ember.inference_mode(False):  # (a bool is a mode, not a function)
        assert (x * 2).requires_grad


def test_grad_mode_decorators_on_functions_and_generators():
    x = ember.ones(2, requires_grad=True)

    @ember.no_grad()
    def double(t):
        return t * 2

    @ember.no_grad()
    def steps(t):
        yield t * 2
        yield t * 3

    @ember.enable_grad()
    def tracked(t):
        return t * 2

    @ember.set_grad_enabled(False)
    def untracked(t):
        return t * 2

    assert not double(x).requires_grad
    assert [s.requires_grad for s in steps(x)] == [False, False]
    assert ember.is_grad_enabled()  # the generator restored the mode between steps
    with ember.no_grad():
        assert tracked(x).requires_grad
    assert not untracked(x).requires_grad
    assert ember.is_grad_enabled()
    assert double.__name__ == "double"

    def consume_inside(gen):
        first = next(gen)
        assert ember.is_grad_enabled()  # outside the generator's body grad mode is the caller's
        return first
    assert not consume_inside(steps(x)).requires_grad


# ----------------------------------------------------------------------------- requires_grad, retain_grad, hooks

def test_requires_grad_flag_and_leaves():
    x = ember.zeros(2)
    assert x.requires_grad_() is x and x.requires_grad and x.is_leaf
    y = x * 2
    assert y.requires_grad and not y.is_leaf
    x.requires_grad_(False)
    assert not (x * 2).requires_grad
    assert (ember.zeros(2) > 0).requires_grad is False


def test_integer_and_bool_results_do_not_require_grad():
    x = ember.tensor([1.5, 2.5], requires_grad=True)
    assert not x.long().requires_grad and x.long().grad_fn is None
    assert not (x > 2).requires_grad and not x.argmax().requires_grad


def test_retain_grad_keeps_a_non_leaf_gradient():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.retain_grad()
    z = x * 3
    (y * y + z).sum().backward()
    assert y.retains_grad and y.grad.tolist() == [4.0, 8.0]
    assert z.grad is None  # not retained
    assert x.grad.tolist() == [11.0, 19.0]


def test_hook_on_a_leaf_replaces_the_accumulated_gradient():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    handle = x.register_hook(lambda g: seen.append(g.tolist()) or g * 10)
    (x * 3).sum().backward()
    assert seen == [[3.0, 3.0]] and x.grad.tolist() == [30.0, 30.0]
    handle.remove()
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_hook_on_a_non_leaf_replaces_the_gradient_flowing_on():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    seen = []
    y.register_hook(lambda g: seen.append(g.tolist()) or ember.ones(2))
    (y * 5).sum().backward()
    assert seen == [[5.0, 5.0]]
    assert x.grad.tolist() == [2.0, 2.0]  # d(y)/dx times the replaced gradient of ones


def test_hook_that_returns_none_observes_only():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: None)
    (y * 5).sum().backward()
    assert x.grad.tolist() == [10.0, 10.0]
    with pytest.raises(RuntimeError, match="doesn't require gradient"):
        ember.zeros(2).register_hook(lambda g: g)


# ----------------------------------------------------------------------------- the graph

def test_grad_fn_names_and_next_functions():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    w = ember.tensor([3.0, 4.0], requires_grad=True)
    y = x * w
    z = (y + 1).sum()
    assert z.grad_fn.name() == "SumBackward0"
    (add_edge,) = z.grad_fn.next_functions
    add_node = add_edge[0]
    assert add_node.name() == "AddBackward0" and add_edge[1] == 0
    mul_node, constant = add_node.next_functions
    assert mul_node[0] is y.grad_fn and mul_node[0].name() == "MulBackward0"
    assert constant == (None, 0)  # the constant 1 needs no gradient
    x_edge, w_edge = y.grad_fn.next_functions
    assert x_edge[0].name() == "AccumulateGrad" and x_edge[0].variable is x
    assert w_edge[0].variable is w
    assert x.grad_fn is None
    assert "MulBackward0" in repr(y.grad_fn)


def test_detach_shares_memory_without_history():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    with ember.no_grad():
        d[0] = 7.0
    assert y[0].item() == 7.0  # same storage, as in PyTorch
    e = (x * 3).detach_()
    assert not e.requires_grad and e.grad_fn is None


def test_data_is_an_untracked_view_and_can_be_replaced():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    assert not x.data.requires_grad
    x.data.mul_(10)  # no leaf error: .data is not tracked
    assert x.tolist() == [10.0, 20.0] and x.requires_grad and x.is_leaf
    x.data = ember.tensor([5.0, 6.0])
    (x * x).sum().backward()
    assert x.grad.tolist() == [10.0, 12.0]


# ----------------------------------------------------------------------------- in-place on non-leaves

def test_inplace_updates_of_a_non_leaf_keep_correct_gradients():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.add_(1)
    y.mul_(3)
    assert y.tolist() == [9.0, 15.0] and y.grad_fn.name() == "MulBackward0"
    y.sum().backward()
    assert x.grad.tolist() == [6.0, 6.0]


def test_inplace_on_a_value_saved_by_an_earlier_op_raises_at_backward_as_pytorch():
    x = ember.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    y = h * h  # saves h = 2x
    h.add_(1)  # overwrites the saved value
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation.*MulBackward0.*version 1; "
                                           r"expected version 0"):
        y.sum().backward()


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_saves_its_input_as_pytorch_so_writing_it_under_no_grad_raises_at_backward(approximate):
    # (composed of primitives for a small tensor, none of which reads the input itself)
    w = ember.tensor([0.5, -1.0, 2.0], requires_grad=True)
    h = w.reshape(3, 1).reshape(3)
    y = ember.nn.functional.gelu(h, approximate=approximate)
    with ember.no_grad():
        w[0].mul_(0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_inplace_chain_matches_finite_differences():
    def chain(x):
        y = x * 1.5
        y.mul_(x)
        y.add_(x.sin())
        y[0] = y[1] * 2
        y.clamp_(min=-1.0)
        y.exp_()
        return y
    check_vjp(chain, [random(3, 2)])


def test_inplace_with_a_grad_requiring_operand_on_a_plain_tensor():
    x = ember.zeros(3)
    w = ember.ones(3, requires_grad=True)
    x += w
    x.mul_(2)
    assert x.requires_grad and not x.is_leaf
    x.sum().backward()
    assert w.grad.tolist() == [2.0, 2.0, 2.0]


def test_inplace_ops_bump_the_version():
    x = ember.zeros(3)
    assert x._version == 0
    x.add_(1)
    x[0] = 5.0
    x.fill_(2.0)
    assert x._version == 3
