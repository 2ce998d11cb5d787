"""Edge cases where views meet in-place ops and autograd, found by adversarial testing against
PyTorch 2.13 (issue 10); each is written as a PyTorch user would, eagerly and compiled (every
compiled function is called three times: the first call traces, the others run the program).
Expected values are computed by hand or in numpy.
"""
import numpy as np
import pytest

import ember

RUNNERS = {"eager": lambda fn: fn, "llvm": lambda fn: ember.compile(fn, backend="llvm"),
           "interpret": lambda fn: ember.compile(fn, backend="interpret")}
MODIFIED = "modified by an inplace operation"


@pytest.fixture(params=sorted(RUNNERS))
def run(request):
    return RUNNERS[request.param]


@pytest.mark.parametrize("key", [1, 0, -1, slice(1, 2), slice(None, 1)])
def test_assignment_into_a_row_of_an_expanded_view_writes_the_base(run, key):
    def write(x, v):
        e = x.expand(4, 3)
        e[key] = v
        return x * 1

    fn = run(write)
    for _ in range(3):
        x = ember.tensor([[1.0, 2.0, 3.0]])
        out = fn(x, ember.tensor([7.0, 8.0, 9.0]))
        assert out.tolist() == [[7.0, 8.0, 9.0]] and x.tolist() == [[7.0, 8.0, 9.0]]


def test_assignment_into_an_expanded_view_with_history_differentiates_the_written_value():
    p = ember.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    v = ember.tensor([7.0, 8.0, 9.0], requires_grad=True)
    x = p * 1
    x.expand(4, 3)[1] = v * 2
    (x * x).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), np.zeros((1, 3)))  # every element was overwritten
    np.testing.assert_array_equal(v.grad.numpy(), 2 * 2 * (2 * np.array([7.0, 8.0, 9.0])))


def test_a_returned_detached_alias_leaves_the_history_of_a_returned_view_of_the_same_memory(run):
    def f(x):
        h = x * 2
        return h[0].detach(), h[0], (h * h).sum()

    fn = run(f)
    for _ in range(3):
        x = ember.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], requires_grad=True)
        detached, row, loss = fn(x)
        assert row.requires_grad and not detached.requires_grad
        (row.sum() + loss).backward()
        np.testing.assert_array_equal(x.grad.numpy()[0], 2 + 8 * np.array([1.0, 2.0, 3.0]))
        with ember.no_grad():
            detached[0] = 100.0
        assert float(row[0]) == 100.0  # one memory, as eagerly


def test_a_second_backward_inside_a_function_raises_after_the_first_accumulated_once(run):
    def f(x):
        loss = (x * x).sum()
        loss.backward()
        loss.backward()
        return loss

    fn = run(f)
    for _ in range(3):
        x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            fn(x)
        assert x.grad.tolist() == [2.0, 4.0, 6.0]


def test_backward_with_retain_graph_inside_a_function_accumulates_and_the_result_fails_a_third(run):
    def f(x):
        loss = (x * x).sum()
        loss.backward(retain_graph=True)
        loss.backward()
        return loss

    fn = run(f)
    for _ in range(3):
        x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
        loss = fn(x)
        assert loss.requires_grad and x.grad.tolist() == [4.0, 8.0, 12.0]
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            loss.backward()


def test_writing_the_result_of_a_division_in_place_keeps_its_backward_valid():
    a = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = ember.tensor([2.0, 4.0, 5.0], requires_grad=True)
    y = a / b
    y.mul_(2)
    y.sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), -2 * np.array([1.0, 2.0, 3.0]) / np.array([4.0, 16.0, 25.0]))


@pytest.mark.parametrize("case", ["dividend_of_div", "result_of_prod", "result_of_logsumexp"])
def test_writing_what_the_backward_of_div_prod_or_logsumexp_reads_fails_it(case):
    x = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    if case == "dividend_of_div":
        s = ember.tensor(2.0, dtype=ember.float64)
        y = (s / x).sum()
        with ember.no_grad():
            s.add_(1)
    elif case == "result_of_prod":
        y = (x * 1).prod()
        y.mul_(2)
    else:
        y = ember.logsumexp(x * 1, 0)
        y.mul_(2)
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.backward()


def test_fill_of_an_expanded_view_with_history_fails_backward_as_pytorch(run):
    def f(p):
        x = p * 1
        x.expand(4, 3).fill_(2.0)
        return (x * x).sum()

    fn = run(f)
    for _ in range(3):
        p = ember.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
        with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
            fn(p).backward()


@pytest.mark.parametrize("case", ["leaf", "split_piece", "no_grad_view"])
def test_assigning_a_tensor_to_itself_still_runs_the_in_place_checks(case):
    x = ember.ones(3, 2, requires_grad=True)
    if case == "leaf":
        target, match = x, "leaf Variable that requires grad"
    elif case == "split_piece":
        target, match = (x * 1).split(1)[0], "output of a function that returns multiple views"
    else:
        with ember.no_grad():
            target = x[:]
        match = "created in no_grad mode"
    with pytest.raises(RuntimeError, match=match):
        target[:] = target


def test_copy_between_two_expansions_of_the_same_memory_writes_nothing(run):
    def f(x):
        x.expand(3, 3).copy_(x.expand(3, 3))
        return x * 1

    fn = run(f)
    for _ in range(3):
        x = ember.tensor([[1.0, 2.0, 3.0]])
        assert fn(x).tolist() == [[1.0, 2.0, 3.0]]


def test_a_cast_of_an_expanded_tensor_is_row_major_and_can_be_viewed():
    d = ember.tensor([[1.0, 2.0, 3.0]]).expand(3, 3).double()
    assert d.is_contiguous() and d.view(-1).tolist() == [1.0, 2.0, 3.0] * 3


def test_a_view_taken_in_grad_mode_of_a_no_grad_view_is_returned_with_a_history(run):
    def f(x):
        with ember.no_grad():
            v = x.t()
        return v[:]

    fn = run(f)
    for _ in range(3):
        x = ember.randn(2, 3, requires_grad=True)
        out = fn(x)
        assert out.requires_grad and not out.is_leaf
        out.sum().backward()
        assert x.grad is None  # a no_grad view passes no gradient


# ---------------------------------------------------------------- from the 10,000-program run against PyTorch

def test_t_of_a_vector_is_a_view_so_no_grad_cuts_it_and_writes_name_a_view_of_a_leaf(run):
    def f(p):
        with ember.no_grad():
            t = p.t()
        loss = (t * t).sum()
        loss.backward()
        return t

    fn = run(f)
    for _ in range(3):
        p = ember.randn(4, requires_grad=True)
        fn(p)
        assert p.grad is None
    with pytest.raises(RuntimeError, match="a view of a leaf Variable"):
        ember.randn(4, requires_grad=True).t().copy_(ember.ones(4))


def test_an_in_place_op_with_a_wider_dtype_operand_keeps_its_own_backward_valid(run):
    def f(x):
        t = ember.ones(2, 1, 4)
        t.mul_(x)  # float32 target, float64 operand
        loss = (t * t).sum()
        loss.backward()
        return t

    fn = run(f)
    for _ in range(3):
        value = np.random.default_rng(0).standard_normal((2, 1, 4))
        x = ember.tensor(value, requires_grad=True)
        fn(x)
        np.testing.assert_allclose(x.grad.numpy(), 2 * value.astype(np.float32), rtol=1e-6)


def test_operands_sharing_memory_with_different_strides_overlap_partially():
    x0 = ember.randn(2, 1, 4)
    x1 = x0[:, ::2]  # the same elements, another stride for the size-1 dim (as in PyTorch)
    with pytest.raises(RuntimeError, match="some elements of the input tensor and the written-to tensor"):
        x1.sub_(x0)


def test_copy_of_an_expanded_tensor_into_itself_writes_nothing(run):
    def f(s):
        e = s.sum(1).expand(2, 4)
        e.copy_(e)
        return e.transpose(0, 1)[1:2] * 1

    fn = run(f)
    for _ in range(3):
        s = ember.randn(4, 4)
        np.testing.assert_allclose(fn(s).numpy(), s.numpy().sum(1)[1:2, None].repeat(2, 1), rtol=1e-6)


def test_a_saved_chunk_piece_whose_base_was_written_fails_backward_with_the_view_error(run):
    def f(x):
        t1, _, _ = x.chunk(3, 0)
        t4 = t1.reshape(1)
        t5 = t1.clamp(-0.6, 0.6)
        with ember.no_grad():
            t4[0] = 1.5
        (t5 * t5).sum().backward()

    fn = run(f)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="output of a function that returns multiple views"):
            fn(ember.randn(3, 1, requires_grad=True))


def test_a_no_grad_view_of_an_intermediate_returned_by_a_training_step_requires_grad(run):
    weight = ember.nn.Parameter(ember.randn(4))

    def step():
        with ember.no_grad():
            weight[1] = 1.5
        t = weight * 1
        with ember.no_grad():
            view = t.expand(2, 4)
        loss = (view * view).sum()
        loss.backward()
        return view

    fn = run(step)
    for _ in range(3):
        out = fn()
        assert out.requires_grad and out.grad_fn is None


def test_assigning_a_tensor_to_a_region_with_other_strides_over_the_same_elements_overlaps_partially():
    t = ember.randn(2, 1, 4).transpose(0, 1)  # [1, 2, 4]
    with pytest.raises(RuntimeError, match="some elements of the input tensor and the written-to tensor"):
        t[::2] = t  # the same elements, another stride for the size-1 dim


def test_contiguous_of_a_strided_tensor_is_a_copy_whatever_numpy_could_view():
    x0 = ember.rand(1, 4)
    x1 = x0[:, ::2]  # numpy could drop the size-1 dim and view it
    t = x1.contiguous()
    x1.fill_(-5.0)
    assert t.is_contiguous() and (t != -5.0).all()


def test_assigning_a_tensor_into_a_region_of_its_own_expansion_overlaps_partially():
    x = ember.randn(3, 4)
    with pytest.raises(RuntimeError, match="some elements of the input tensor and the written-to tensor"):
        x.expand(2, 3, 4)[:1, :] = x  # the value's new leading dim has a dense stride, the region's 0
