"""Class 4 of issue 10, randomized: compiled gradients equal eager PyTorch semantics on every
call, not only the traced one. Random embedding lookups with a random padding_idx (the padding
row gets no gradient), random programs that mix values computed under no_grad into a loss (no
gradient leaks through them), and in-place ops on leaves that require grad (refused, compiled
as eagerly). Expected gradients are computed independently in numpy (float64).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ember
import ember.nn.functional as F

RANDOM = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
BACKENDS = ["llvm", "interpret"]


@st.composite
def lookups(draw):
    rows = draw(st.integers(2, 6))
    width = draw(st.integers(1, 4))
    shape = draw(st.sampled_from([(3,), (2, 3), (4, 1), (1, 5)]))
    calls = [np.array(draw(st.lists(st.integers(0, rows - 1), min_size=int(np.prod(shape)),
                                    max_size=int(np.prod(shape))))).reshape(shape) for _ in range(3)]
    padding = draw(st.one_of(st.none(), st.integers(-rows, rows - 1)))
    return rows, width, calls, padding


@pytest.mark.parametrize("backend", BACKENDS)
@RANDOM
@given(case=lookups(), scale=st.floats(-3, 3, allow_nan=False).filter(lambda s: abs(s) > 0.1))
def test_compiled_embedding_gradient_skips_the_padding_row_on_every_call(backend, case, scale):
    rows, width, calls, padding = case
    weight = ember.randn(rows, width, requires_grad=True)
    lookup = ember.compile(lambda idx, w: (F.embedding(idx, w, padding_idx=padding) * scale).sum(), backend=backend)
    for indices in calls:
        weight.grad = None
        lookup(ember.tensor(indices), weight).backward()
        expected = np.zeros((rows, width))
        np.add.at(expected, indices.reshape(-1), scale)
        if padding is not None:
            expected[padding % rows] = 0.0
        np.testing.assert_allclose(weight.grad.numpy(), expected, rtol=1e-6, atol=1e-6)


@st.composite
def no_grad_mixes(draw):
    """A loss sum(w * a + c * w) where c = f(w) is computed under no_grad: d/dw = a + c."""
    return (draw(st.sampled_from(["mul", "exp", "view", "slice_mean", "detach"])),
            draw(st.floats(-2, 2, allow_nan=False)), draw(st.integers(1, 4)))


def _cut_value(kind, w, k):
    if kind == "mul":
        return w * k
    if kind == "exp":
        return w.exp()
    if kind == "view":
        return w.view(-1).view(w.shape) * 1
    if kind == "slice_mean":
        return w[:, :1].mean() + w * 0
    return w.detach() * k


def _cut_value_numpy(kind, w, k):
    return {"mul": w * k, "exp": np.exp(w), "view": w, "slice_mean": w[:, :1].mean() + w * 0,
            "detach": w * k}[kind]


@pytest.mark.parametrize("backend", BACKENDS)
@RANDOM
@given(mix=no_grad_mixes())
def test_values_computed_under_no_grad_pass_no_gradient_on_compiled_calls(backend, mix):
    kind, k, columns = mix

    def loss_of(w, a):
        with ember.no_grad():
            c = _cut_value(kind, w, k)
        return (w * a + c * w).sum()

    compiled = ember.compile(loss_of, backend=backend)
    rng = np.random.default_rng(columns)
    for _ in range(3):  # the first call traces; the others run the compiled program
        w_value, a_value = rng.standard_normal((2, 3, columns))
        w = ember.tensor(w_value, requires_grad=True)
        compiled(w, ember.tensor(a_value)).backward()
        expected = a_value + _cut_value_numpy(kind, w_value, k)
        np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@RANDOM
@given(op=st.sampled_from(["add_", "mul_", "zero_", "fill_", "clamp_", "copy_", "setitem"]),
       through_view=st.booleans())
def test_in_place_ops_on_leaves_that_require_grad_are_refused_compiled_as_eagerly(backend, op, through_view):
    def update(w):
        target = w[0] if through_view else w
        if op == "setitem":
            target[...] = 1.0
        elif op in ("zero_",):
            getattr(target, op)()
        elif op == "copy_":
            target.copy_(ember.ones(target.shape))
        elif op == "clamp_":
            target.clamp_(-0.5, 0.5)
        else:
            getattr(target, op)(2.0)
        return w * 1

    compiled = ember.compile(update, backend=backend)
    for _ in range(3):
        w = ember.randn(2, 3, requires_grad=True)
        before = w.detach().numpy().copy()
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            compiled(w)
        np.testing.assert_array_equal(w.detach().numpy(), before)  # nothing half-written
        with ember.no_grad():  # allowed under no_grad, as in PyTorch
            out = compiled(w)
        assert not np.array_equal(w.detach().numpy(), before) or op in ("clamp_",)
        np.testing.assert_array_equal(out.numpy(), w.detach().numpy())


def test_views_made_under_no_grad_pass_no_gradient_after_a_write_through_data():
    """(torch_oracle seed 7) A write through `.data` re-derives the live views of the tensor; one
    made under no_grad, or a view of one, still passes no gradient to it, as in eager autograd."""
    def program(s0):
        data = s0.data
        with ember.no_grad():
            _, second = s0.chunk(3, 2)
        row = second[1, :]
        data.masked_fill_(s0 > 0, 1.5)
        picked = row[0, 0]
        (picked * picked).sum().backward()
        return picked

    compiled = ember.compile(program)
    for _ in range(2):
        for run in (program, compiled):
            s0 = (ember.rand(2, 1, 4) * 2 - 1).requires_grad_()
            run(s0)
            assert s0.grad is None
