"""The errors PyTorch raises around in-place ops on views, and the cases it allows, written as a
PyTorch user writes them; expected values are computed independently in numpy (float64).

- a view PyTorch cannot re-derive (an output of split/chunk/unbind, a view made under no_grad)
  is unusable in grad mode once its memory was written;
- an in-place op through a view whose backward reads its result (exp_, sigmoid_, tanh_) saves
  that view: a later write over its memory fails backward;
- an operand that partially overlaps the written memory is refused (exact aliasing is fine);
- index assignment into a leaf that requires grad names the view it writes through.
"""
import numpy as np
import pytest

import ember

MULTI_OUTPUT = r"is a view and its base or another view of its base has been modified inplace\. " \
               r"This view is the output of a function that returns multiple views"
PARTIAL_OVERLAP = r"unsupported operation: some elements of the input tensor and the written-to tensor " \
                  r"refer to a single memory location\. Please clone\(\) the tensor"
MODIFIED = r"modified by an inplace operation"

A = np.array([[1.0, 2.0], [3.0, 4.0]])
SPLITS = {"split": lambda y: y.split(1), "chunk": lambda y: y.chunk(2), "unbind": lambda y: y.unbind(0)}


def leaf(array):
    return ember.tensor(np.array(array, dtype=np.float64), requires_grad=True)


def arange(n):
    return ember.tensor(np.arange(n, dtype=np.float64))


# ----------------------------------------------------------------------------- split / chunk / unbind outputs

@pytest.mark.parametrize("split", SPLITS)
def test_output_of_split_used_after_its_base_is_modified_in_place_raises(split):
    a = leaf(A)
    y = a * 1
    first, second = SPLITS[split](y)
    y.add_(1)
    with pytest.raises(RuntimeError, match=MULTI_OUTPUT):
        (first * 2).sum().backward()
    with pytest.raises(RuntimeError, match=MULTI_OUTPUT):
        second.sum()
    with pytest.raises(RuntimeError, match=MULTI_OUTPUT):
        first.grad_fn
    assert first.requires_grad  # the flag stays readable, as in PyTorch


@pytest.mark.parametrize("write", ["another output", "no_grad", "detach"])
def test_output_of_unbind_is_invalidated_by_any_write_to_its_memory(write):
    a = leaf(A)
    y = a * 1
    first, second = y.unbind(0)
    if write == "another output":
        with ember.no_grad():
            first.mul_(2)
    elif write == "no_grad":
        with ember.no_grad():
            y.mul_(2)
    else:
        y.detach().mul_(2)
    with pytest.raises(RuntimeError, match=MULTI_OUTPUT):
        second * 2
    with pytest.raises(RuntimeError, match=MULTI_OUTPUT):
        second[0] * 2  # a view of it made now needs its history too


def test_view_of_a_split_output_made_before_the_write_is_invalidated_too():
    y = leaf(A) * 1
    first, _ = y.split(1)
    row = first[0]
    y.add_(1)
    with pytest.raises(RuntimeError, match=MULTI_OUTPUT):
        row.sum()


def test_output_of_chunk_stays_usable_without_grad_mode_after_its_base_is_modified():
    y = leaf(A) * 1
    first, second = y.chunk(2)
    y.add_(1)
    with ember.no_grad():
        np.testing.assert_allclose((second * 2).numpy(), 2 * (A[1:] + 1))
        first.mul_(3)  # in place too, without grad mode
    np.testing.assert_allclose(first.detach().numpy(), 3 * (A[:1] + 1))
    np.testing.assert_allclose(second.tolist(), A[1:] + 1)
    assert "grad_fn=<Invalid>" in repr(second)


def test_split_outputs_used_before_the_write_still_give_their_gradient():
    a = leaf(A)
    y = a * 1
    first, _ = y.split(1)
    doubled = first * 2
    y.add_(1)
    doubled.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [[2.0, 2.0], [0.0, 0.0]])


def test_split_outputs_without_a_write_give_their_gradient():
    a = leaf(A)
    first, second = (a * 1).split(1)
    (first * 3 + second * 5).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [[3.0, 3.0], [5.0, 5.0]])


def test_a_write_through_data_is_unseen_by_split_outputs():
    a = leaf(A)
    y = a * 1
    first, _ = y.split(1)
    y.data.mul_(2)  # .data has a version counter of its own, as in PyTorch
    (first * 2).sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [[2.0, 2.0], [0.0, 0.0]])


def test_in_place_on_a_split_output_with_grad_raises():
    first, _ = (leaf(A) * 1).split(1)
    with pytest.raises(RuntimeError, match=r"is a view and is being modified inplace\. This view is the "
                                           r"output of a function that returns multiple views"):
        first.mul_(2)


def test_split_of_a_tensor_without_grad_breaks_once_its_base_gets_history():
    y = ember.ones(2, 2, dtype=ember.float64)
    first, _ = y.split(1)
    y.add_(1)
    np.testing.assert_allclose(first.sum().item(), 4.0)  # nothing requires grad: fine
    y[1].add_(leaf([1.0, 1.0]))  # CopySlices: y requires grad now, and so does first
    assert first.requires_grad
    with pytest.raises(RuntimeError, match=r"A view was created in no_grad mode and its base or another view "
                                           r"of its base has been modified inplace with grad mode enabled\. "
                                           r"This view is the output of a function that returns multiple views"):
        first.sum()


# ----------------------------------------------------------------------------- views made under no_grad

@pytest.mark.parametrize("write_under_no_grad", [False, True])
def test_view_made_under_no_grad_used_after_its_base_is_modified_raises(write_under_no_grad):
    y = leaf(A) * 1
    with ember.no_grad():
        row = y[0]
    if write_under_no_grad:
        with ember.no_grad():
            y.mul_(2)
    else:
        y.mul_(2)
    with pytest.raises(RuntimeError, match=r"A view was created in no_grad mode and its base or another view of "
                                           r"its base has been modified inplace with grad mode enabled"):
        row * 2


def test_copy_into_a_view_made_under_no_grad_of_a_tensor_without_grad_raises():
    y = ember.zeros(4, dtype=ember.float64)
    with ember.no_grad():
        head = y[0:2]
    with pytest.raises(RuntimeError, match=r"copy_: A view was created in no_grad mode and is being modified "
                                           r"inplace with grad mode enabled"):
        head.copy_(leaf([1.0, 2.0]))


# ----------------------------------------------------------------------------- saved results written through views

def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


RESULT_SAVING = {"exp_": (np.exp, np.exp), "sigmoid_": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
                 "tanh_": (np.tanh, lambda x: 1 - np.tanh(x) ** 2)}
B = np.array([[0.5, 1.0], [2.0, 3.0]])


@pytest.mark.parametrize("op", RESULT_SAVING)
def test_in_place_through_a_view_then_overwriting_its_result_fails_backward(op):
    a = leaf(B)
    y = a * 1
    getattr(y[0], op)()
    y.mul_(2)
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.sum().backward()


@pytest.mark.parametrize("op", RESULT_SAVING)
def test_in_place_through_a_view_then_writing_another_view_fails_backward(op):
    a = leaf(B)
    y = a * 1
    getattr(y[0], op)()
    y[1].mul_(2)  # other elements, but the same version counter, as in PyTorch
    with pytest.raises(RuntimeError, match=MODIFIED + r".*output 0 of (Exp|Sigmoid|Tanh)"):
        y.sum().backward()


@pytest.mark.parametrize("op", RESULT_SAVING)
def test_in_place_through_a_view_gives_its_gradient(op):
    fn, derivative = RESULT_SAVING[op]
    a = leaf(B)
    y = a * 1
    getattr(y[0], op)()
    (y * 3).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), np.vstack([fn(B[0]), B[1]]))
    np.testing.assert_allclose(a.grad.numpy(), 3 * np.vstack([derivative(B[0]), np.ones(2)]), rtol=1e-12)


# ----------------------------------------------------------------------------- operands overlapping the output

PARTIAL = {
    "copy_": lambda x: x[1:].copy_(x[:-1]),
    "add_": lambda x: x[1:].add_(x[:-1]),
    "mul_": lambda x: x[1:].mul_(x[:-1]),
    "sub_ alpha": lambda x: x[1:4].sub_(x[0:3], alpha=2),
    "lerp_": lambda x: x[1:4].lerp_(x[0:3], 0.5),
    "clamp_ max": lambda x: x[1:4].clamp_(max=x[0:3]),
    "addcmul_": lambda x: x[1:4].addcmul_(x[0:3], x[3:6]),
    "transpose": lambda x: x.view(2, 3).add_(x.view(3, 2).t()),
    "broadcast row": lambda x: x.view(3, 2).add_(x.view(3, 2)[0]),
    "index_add_ same memory": lambda x: x.index_add_(0, ember.arange(6), x),
    "scatter_ same memory": lambda x: x.scatter_(0, ember.arange(6), x),
    "scatter_add_": lambda x: x[0:3].scatter_add_(0, ember.arange(3), x[1:4]),
}


@pytest.mark.parametrize("op", PARTIAL)
def test_in_place_op_reading_memory_it_partly_writes_raises(op):
    x = arange(6)
    with pytest.raises(RuntimeError, match=PARTIAL_OVERLAP):
        PARTIAL[op](x)
    np.testing.assert_array_equal(x.numpy(), np.arange(6.0))  # nothing written


def test_square_matrix_plus_its_transpose_in_place_raises():
    m = ember.tensor(np.arange(9.0).reshape(3, 3))
    with pytest.raises(RuntimeError, match=r"add_: " + PARTIAL_OVERLAP):
        m.add_(m.t())


def test_augmented_assignment_of_overlapping_slices_raises():
    x = arange(6)
    with pytest.raises(RuntimeError, match=PARTIAL_OVERLAP):
        x[1:] += x[:-1]


SETITEM_PARTIAL = {
    "slices": (slice(1, None), lambda x: x[:-1]),
    "index list": ([1, 2, 3], lambda x: x[0:3]),
    "index list, other elements": ([3, 4, 5], lambda x: x[0:3]),  # index_put_ refuses any overlap with x
    "all indices, all of x": ([0, 1, 2, 3, 4, 5], lambda x: x),
    "mask": (np.array([True, False, True, False, True, False]), lambda x: x[0:3]),
    "index list, 0-d value": ([0, 1], lambda x: x[0]),
}


@pytest.mark.parametrize("case", SETITEM_PARTIAL)
def test_index_assignment_of_overlapping_memory_raises(case):
    key, value = SETITEM_PARTIAL[case]
    x = arange(6)
    if isinstance(key, np.ndarray):
        key = ember.tensor(key)
    with pytest.raises(RuntimeError, match=r"index assignment: " + PARTIAL_OVERLAP):
        x[key] = value(x)


def test_in_place_ops_on_the_same_memory_are_allowed():
    x = arange(6)
    x.add_(x)
    np.testing.assert_array_equal(x.numpy(), 2 * np.arange(6.0))
    x.mul_(x)
    np.testing.assert_array_equal(x.numpy(), 4 * np.arange(6.0) ** 2)
    x = arange(6)
    x[0:3].add_(x[0:3])  # two views of one region
    x.copy_(x)
    x[3:].copy_(x[:3])  # disjoint regions
    np.testing.assert_array_equal(x.numpy(), [0.0, 2.0, 4.0, 0.0, 2.0, 4.0])


def test_in_place_ops_the_overlap_check_does_not_compare_are_computed_from_the_old_values():
    x = arange(6)
    x[::2].copy_(x[1::2])  # strided views are not compared, as in PyTorch
    np.testing.assert_array_equal(x.numpy(), [1.0, 1.0, 3.0, 3.0, 5.0, 5.0])
    m = ember.tensor(np.arange(9.0).reshape(3, 3))
    m[0].add_(m[:, 0])
    np.testing.assert_array_equal(m.numpy()[0], [0.0, 4.0, 8.0])


def test_index_assignments_PyTorch_allows_over_the_same_memory():
    x = arange(6)
    x[:] = x
    x[0:3] = x[0:3]
    x[0:2] = x[5]  # a 0-d value fills
    np.testing.assert_array_equal(x.numpy(), [5.0, 5.0, 2.0, 3.0, 4.0, 5.0])
    m = ember.tensor(np.arange(9.0).reshape(3, 3))
    m[1:] = m[0]  # broadcast: the expanded value is not compared
    np.testing.assert_array_equal(m.numpy(), np.tile([0.0, 1.0, 2.0], (3, 1)))
    x = arange(6)
    x[x > 3] = x[0]  # a mask with one value fills
    x[1:].masked_fill_(x[1:] > 2, x[1])  # masked_fill_ reads its value as a scalar
    np.testing.assert_array_equal(x.numpy(), [0.0, 1.0, 2.0, 1.0, 0.0, 0.0])


def test_overlap_is_checked_after_the_autograd_checks():
    p = ember.zeros(6, dtype=ember.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable"):
        p[1:].add_(p[:-1])


def test_same_memory_in_place_op_with_autograd_still_differentiates():
    a = leaf(np.arange(1.0, 4.0))
    y = a * 1
    y.add_(y)
    y.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [2.0, 2.0, 2.0])


# ----------------------------------------------------------------------------- writing an expanded tensor

def test_fill_and_zero_write_an_expanded_tensor_into_its_base():
    x = ember.zeros(4, dtype=ember.float64)
    expanded = x.expand(2, 4)
    expanded.fill_(1.5)
    np.testing.assert_array_equal(x.numpy(), np.full(4, 1.5))
    expanded[0] = ember.tensor(np.arange(4.0))  # a row of distinct elements
    np.testing.assert_array_equal(x.numpy(), np.arange(4.0))
    expanded.zero_()
    np.testing.assert_array_equal(x.numpy(), np.zeros(4))


def test_writing_overlapping_elements_of_an_expanded_tensor_raises():
    expanded = ember.zeros(4).expand(2, 4)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        expanded.add_(1)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        expanded[:, 0] = 5.0


# ----------------------------------------------------------------------------- index assignment into a leaf

@pytest.mark.parametrize("key", [slice(2, None), 0, (0, 1), None, (1, slice(None), None), slice(None, None, 2),
                                 (0, [1])], ids=repr)
def test_index_assignment_into_part_of_a_leaf_that_requires_grad_names_the_view(key):
    p = ember.zeros(3, 4, dtype=ember.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad is being used in an "
                                           "in-place operation"):
        p[key] = -0.25


@pytest.mark.parametrize("key", [[0], (slice(None), [1]), Ellipsis, slice(None), slice(0, 100), "mask"], ids=repr)
def test_index_assignment_into_all_of_a_leaf_or_by_index_tensors_names_the_leaf(key):
    p = ember.zeros(3, 4, dtype=ember.float64, requires_grad=True)
    if key == "mask":
        key = p > -1
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad") as raised:
        p[key] = -0.25
    assert "view of a leaf" not in str(raised.value)


def test_index_assignment_into_a_leaf_under_no_grad_is_allowed():
    p = ember.zeros(3, 4, dtype=ember.float64, requires_grad=True)
    with ember.no_grad():
        p[2:] = -0.25
        p[[0]] = 1.0
    expected = np.zeros((3, 4))
    expected[2:], expected[0] = -0.25, 1.0
    np.testing.assert_array_equal(p.detach().numpy(), expected)


# ----------------------------------------------------------------------------- requires_grad of views

def test_view_requires_grad_once_its_base_does():
    x = ember.zeros(4, dtype=ember.float64)
    middle = x[1:3]
    x.requires_grad_()
    assert middle.requires_grad
    assert middle.grad_fn is None  # made before: no history to x (PyTorch gives x no gradient from it)
    (middle * 2).sum().backward()
    assert x.grad is None


def test_in_place_on_a_view_made_before_its_base_required_grad_names_the_view():
    x = ember.zeros(4, dtype=ember.float64)
    middle = x[1:3]
    x.requires_grad_()
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        middle.mul_(2)

