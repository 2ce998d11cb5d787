"""Views meeting in-place ops, eagerly and compiled: issue 10's examples, written as a PyTorch
user writes them, with expected values computed independently in numpy (float64).

The model under test (ember/frontend/views.py): views share memory and one version counter
with their root; in-place writes go through views into the root and rebase autograd history
onto it; saved tensors are version-checked; the tracer records writes functionally.
"""
import numpy as np
import pytest

import ember
from ember import nn

BACKENDS = ["llvm", "interpret"]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def t(array, requires_grad=False):
    return ember.tensor(np.array(array, dtype=np.float64), requires_grad=requires_grad)


# ----------------------------------------------------------------------------- eager views under autograd

def test_mul_through_a_slice_of_a_clone_updates_the_clone_and_its_gradient():
    xv = rand(3, 4)
    x = t(xv, requires_grad=True)
    y = x.clone()
    y[:, 1:].mul_(3.0)
    factor = np.array([1.0, 3.0, 3.0, 3.0])
    np.testing.assert_allclose(y.detach().numpy(), xv * factor)
    (y * t(rand(3, 4, seed=1))).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), rand(3, 4, seed=1) * factor)


def test_a_view_sees_an_in_place_update_of_its_base_and_gets_the_right_gradient():
    av = rand(3)
    a = t(av, requires_grad=True)
    y = a * 1
    v = y[0]
    y.mul_(2)
    assert v.item() == pytest.approx(2 * av[0])
    assert v.requires_grad and v.grad_fn is not None
    (5 * v + y.sum()).backward()
    np.testing.assert_allclose(a.grad.numpy(), [12.0, 2.0, 2.0])


def test_copy_into_a_slice_of_zeros_gives_the_zeros_a_gradient_path():
    xv = rand(3, 3)
    x = t(xv, requires_grad=True)
    y = ember.zeros(3, 4, dtype=ember.float64)
    y[:, 1:].copy_(x * 2)
    assert y.requires_grad
    np.testing.assert_allclose(y.detach().numpy()[:, 1:], 2 * xv)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full((3, 3), 2.0))


def test_view_that_cannot_be_a_view_raises_and_reshape_copies():
    x = ember.arange(12.0).reshape(3, 4)
    with pytest.raises(RuntimeError, match="view size is not compatible.*Use .reshape"):
        x.t().view(12)
    flat = x.t().reshape(12)
    flat.fill_(0)  # a copy: the original is untouched
    np.testing.assert_array_equal(x.numpy(), np.arange(12.0).reshape(3, 4))


def test_in_place_on_an_expanded_tensor_raises():
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        ember.ones(3, 1).expand(3, 4).add_(1)


def test_in_place_on_a_view_of_a_leaf_that_requires_grad_raises():
    w = ember.ones(3, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        w[0].mul_(2)
    with ember.no_grad():
        w[0].mul_(2)  # allowed under no_grad, as in PyTorch
    np.testing.assert_array_equal(w.detach().numpy()[0], [2, 2, 2, 2])


def test_integer_index_gives_a_0d_view():
    x = ember.zeros(4)
    x[2].fill_(7)
    v = x[1]
    v += 3
    np.testing.assert_array_equal(x.numpy(), [0, 3, 7, 0])


def test_flip_is_a_copy_as_in_pytorch():
    x = ember.arange(4.0)
    y = x.flip(0)
    x.add_(10)
    np.testing.assert_array_equal(y.numpy(), [3, 2, 1, 0])


def test_data_and_detach_share_memory_but_only_detach_shares_the_version_counter():
    a = t(rand(3), requires_grad=True)
    b = a.sigmoid()
    b.data.mul_(2)  # unseen by autograd (PyTorch's .data)
    b.sum().backward()
    c = a.sigmoid()
    c.detach().mul_(2)  # seen: the saved output changed
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        c.sum().backward()


# ----------------------------------------------------------------------------- saved tensors modified

@pytest.mark.parametrize("program", ["sigmoid_mul_", "mul_self", "exp_clamp_"])
def test_a_saved_tensor_modified_in_place_raises_with_op_shape_and_versions(program):
    a = t(rand(4), requires_grad=True)
    if program == "sigmoid_mul_":
        b = a.sigmoid()
        b.mul_(2)
    elif program == "mul_self":
        b = a * 1
        b.mul_(b)  # PyTorch: the in-place mul saves the original self; a later write breaks it
        b.add_(1)
        b = b * b
        b.add_(1)
    else:
        b = a.exp()
        b.clamp_(max=1.0)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: \[ember.DoubleTensor \[4\]\].*"
                                           r"is at version \d+; expected version \d+ instead"):
        b.sum().backward()


def test_an_in_place_op_whose_own_backward_needs_the_old_value_is_fine():
    xv = rand(3, 2)
    x = t(xv, requires_grad=True)
    y = x * 1.5
    y.mul_(x)  # d/dx (1.5 x * x) = 3x; the op keeps the old value of y itself
    y.add_(1)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * xv)


def test_add_saves_nothing_so_a_later_write_is_fine():
    a = t(rand(3), requires_grad=True)
    y = a * 1
    z = y + 1
    y.mul_(2)
    (z.sum() + y.sum()).backward()
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 3.0, 3.0])


# ----------------------------------------------------------------------------- compiled in-place on views

def _zero_row(y):
    y = y.clone()
    y[0].zero_()
    return y


def _scale_column(y):
    y = y.clone()
    y[:, 1].mul_(10)
    return y


def _fill_through_transpose(y):
    y = y.clone()
    y.t()[2].fill_(7)
    return y


def _masked_fill_slice(y):
    y = y.clone()
    y[1:].masked_fill_(y[1:] > 0, 0.0)
    return y


def _chunks(y):
    y = y.clone()
    a, b = y.chunk(2)
    a.mul_(2)
    b.add_(1)
    return y


def _strided_flat_view(y):
    y = y.clone()
    y.view(-1)[::5].fill_(3)
    return y


def _stale_view(y):
    y = y.clone()
    v = y[0]
    y.add_(1)
    return v


def _expected(name, yv):
    y = yv.copy()
    if name == "_zero_row":
        y[0] = 0
    elif name == "_scale_column":
        y[:, 1] *= 10
    elif name == "_fill_through_transpose":
        y[:, 2] = 7
    elif name == "_masked_fill_slice":
        y[1:][y[1:] > 0] = 0
    elif name == "_chunks":
        y[:2] *= 2
        y[2:] += 1
    elif name == "_strided_flat_view":
        y.reshape(-1)[::5] = 3
    elif name == "_stale_view":
        return y[0] + 1
    return y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fn", [_zero_row, _scale_column, _fill_through_transpose, _masked_fill_slice, _chunks,
                                _strided_flat_view, _stale_view], ids=lambda f: f.__name__)
def test_compiled_in_place_through_views_is_kept_on_every_call(fn, backend):
    compiled = ember.compile(fn, backend=backend)
    for seed in range(4):
        yv = rand(4, 4, seed=seed)
        got = compiled(t(yv))
        np.testing.assert_allclose(got.numpy(), _expected(fn.__name__, yv), rtol=1e-12)
    assert compiled.report.compiled_calls >= 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_in_place_on_a_view_of_an_input_updates_the_callers_tensor(backend):
    def f(x):
        x[0].mul_(2)
        return x.sum()

    compiled = ember.compile(f, backend=backend)
    for seed in range(4):
        xv = rand(3, 4, seed=seed)
        x = t(xv)
        keep = x[1:]  # the caller's own view of the input
        total = compiled(x)
        expected = xv.copy()
        expected[0] *= 2
        np.testing.assert_allclose(x.numpy(), expected)
        np.testing.assert_allclose(keep.numpy(), expected[1:])
        assert total.item() == pytest.approx(expected.sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_returned_view_of_an_input_is_a_view_of_the_callers_tensor(backend):
    compiled = ember.compile(lambda x: x[0], backend=backend)
    for seed in range(3):
        x = t(rand(3, 4, seed=seed))
        row = compiled(x)
        row.fill_(5)
        np.testing.assert_array_equal(x.numpy()[0], [5, 5, 5, 5])


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_manual_sgd_through_data_learns_like_eager(backend):
    def make():
        ember.manual_seed(0)
        return nn.Linear(3, 2).double()

    net, ref = make(), make()

    def step(model, x):
        loss = (model(x) ** 2).sum()
        loss.backward()
        with ember.no_grad():
            for p in model.parameters():
                p.data.sub_(0.1 * p.grad)
                p.grad = None
        return loss

    compiled = ember.compile(lambda x: step(net, x), backend=backend)
    for seed in range(5):
        x = t(rand(4, 3, seed=seed))
        assert compiled(x).item() == pytest.approx(step(ref, x).item(), rel=1e-12)
    np.testing.assert_allclose(net.weight.detach().numpy(), ref.weight.detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_param_update_under_no_grad_through_a_view(backend):
    net = nn.Linear(3, 2).double()
    w0 = net.weight.detach().numpy().copy()

    def f(x):
        with ember.no_grad():
            net.weight[0].mul_(0.5)
        return net(x).sum()

    compiled = ember.compile(f, backend=backend)
    for seed in range(3):
        compiled(t(rand(2, 3, seed=seed)))
    np.testing.assert_allclose(net.weight.detach().numpy()[0], w0[0] * 0.125)
    np.testing.assert_allclose(net.weight.detach().numpy()[1], w0[1])


# ----------------------------------------------------------------------------- compiled gradients

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_value_computed_under_no_grad_carries_no_gradient_when_compiled(backend):
    wv = rand(3, seed=5)
    w = t(wv, requires_grad=True)

    def f(x):
        with ember.no_grad():
            s = x * w
        return (s * w).sum()

    compiled = ember.compile(f, backend=backend)
    for seed in range(4):
        xv = rand(3, seed=seed)
        w.grad = None
        compiled(t(xv)).backward()
        np.testing.assert_allclose(w.grad.numpy(), xv * wv)  # d/dw of sum(const * w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_detach_cuts_the_gradient_in_a_compiled_training_step(backend):
    wv = rand(3, seed=5)
    w = t(wv, requires_grad=True)

    def step(x):
        w.grad = None
        ((x * w.detach()) * w + w).sum().backward()
        return w.grad.clone()

    compiled = ember.compile(step, backend=backend)
    for seed in range(4):
        xv = rand(3, seed=seed)
        got = compiled(t(xv))
        assert got.grad_fn is None
        np.testing.assert_allclose(got.numpy(), xv * wv + 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_in_place_on_a_leaf_that_requires_grad_raises(backend):
    compiled = ember.compile(lambda x: x.add_(1), backend=backend)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        compiled(ember.ones(3, requires_grad=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_embedding_backward_leaves_the_padding_row_at_zero(backend):
    emb = nn.Embedding(5, 3, padding_idx=0).double()

    def step(idx):
        emb.weight.grad = None
        (emb(idx) * 2).sum().backward()
        return emb.weight.grad.clone()

    compiled = ember.compile(step, backend=backend)
    for _ in range(3):
        grad = compiled(ember.tensor([0, 1, 0, 2, 1])).numpy()
        np.testing.assert_array_equal(grad, [[0, 0, 0], [4, 4, 4], [2, 2, 2], [0, 0, 0], [0, 0, 0]])


# ----------------------------------------------------------------------------- found by adversarial review

def test_gradient_accumulation_over_compiled_calls_while_the_caller_keeps_old_grads():
    w = ember.tensor([1.0, 2.0], requires_grad=True)

    def f(x):
        (w * x).sum().backward()
        return x.sum()

    compiled = ember.compile(f)
    held = []
    for step in range(1, 6):
        compiled(ember.ones(2))
        held.append(w.grad)  # the caller keeps every step's .grad object alive
        assert w.grad.tolist() == [float(step)] * 2


def test_a_compiled_forward_that_renormalises_its_weight_under_no_grad_still_trains_it():
    ember.manual_seed(0)
    emb = nn.Embedding(5, 3, max_norm=1.0)
    head = nn.Linear(3, 1)
    compiled = ember.compile(emb)
    for _ in range(4):
        emb.zero_grad()
        head(compiled(ember.tensor([1, 2]))).sum().backward()
        assert emb.weight.grad is not None and float(emb.weight.grad.abs().sum()) > 0


def test_a_compiled_in_place_write_into_an_argument_with_history_keeps_the_history():
    compiled = ember.compile(lambda y: y.mul_(2).sum())
    for _ in range(3):
        a = ember.ones(3, requires_grad=True)
        y = a + 0
        compiled(y)
        y.sum().backward()
        assert a.grad.tolist() == [2.0, 2.0, 2.0]


def test_an_argument_that_is_a_view_of_a_closed_over_tensor_is_seen_through():
    G = ember.ones(4, 4)

    def f(v):
        v.mul_(2)
        return G.sum()

    compiled = ember.compile(f)
    expected = np.ones((4, 4))
    for _ in range(4):
        expected[1:3] *= 2
        assert compiled(G[1:3]).item() == expected.sum()


def test_overlapping_closed_over_views_of_one_base_stay_in_step():
    flat = ember.zeros(8)
    p, q = flat[:4], flat[2:6]

    def g(x):
        p.add_(x)
        return q.sum()

    compiled = ember.compile(g)
    assert [compiled(ember.ones(4)).item() for _ in range(4)] == [2.0, 4.0, 6.0, 8.0]


def test_a_data_write_into_a_saved_output_gives_the_eager_gradient_when_compiled():
    def f(a):
        y = a.sigmoid()
        y.data.mul_(2)  # unseen by autograd: sigmoid's backward reads the doubled y
        return y.sum()

    compiled = ember.compile(f)
    for _ in range(3):
        av = np.array([0.0, 1.0])
        a = t(av, requires_grad=True)
        compiled(a).backward()
        s = 2 / (1 + np.exp(-av))
        np.testing.assert_allclose(a.grad.numpy(), s * (1 - s))


@pytest.mark.parametrize("op, overwrite", [("clamp", "input"), ("gather", "input"), ("var", "input"),
                                           ("log_softmax", "output"), ("norm", "output")])
def test_composite_ops_refuse_a_backward_through_what_pytorchs_op_saves(op, overwrite):
    a = t([[0.1, -0.7], [0.9, 0.3]], requires_grad=True)
    x = a * 1
    y = {"clamp": lambda: x.clamp(-0.5, 0.5), "gather": lambda: x.gather(1, ember.tensor([[0], [1]])),
         "var": lambda: x.var(), "log_softmax": lambda: x.log_softmax(1), "norm": lambda: x.norm()}[op]()
    (x if overwrite == "input" else y).add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_clamp_in_place_keeps_its_own_old_value():
    a = t([0.2, -2.0, 3.0], requires_grad=True)
    y = a * 1
    y.clamp_(-1.0, 1.0)
    y.mul_(2)
    y.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [2.0, 0.0, 0.0])
