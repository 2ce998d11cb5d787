"""Indexing reads and index assignment, compared with numpy under PyTorch's rules, on both
paths: the eager fast path (numpy indexing) and the recording path (requires_grad lowers
the key to slice/reshape/take and slice_update/index_put primitives), whose gradients are
checked against finite differences.
"""
import numpy as np
import pytest

import ember
from finite_differences import check_vjp, random

XN = random(4, 5, 6)
MASK_2D = XN[:, :, 0] > 0
MASK_ROW = XN[1, 0] > 0


def _torch_key(key):
    """numpy arrays in a key become ember tensors."""
    if isinstance(key, tuple):
        return tuple(_torch_key(k) for k in key)
    return ember.tensor(key) if isinstance(key, np.ndarray) else key


# (label, key, expected): expected is numpy's result for keys where numpy and PyTorch agree;
# PyTorch applies integer indices before index tensors, which differs when both appear.
READS = [
    ("int", 1, XN[1]),
    ("negative_int", -1, XN[-1]),
    ("two_ints", (1, 2), XN[1, 2]),
    ("three_ints", (0, -1, 3), XN[0, -1, 3]),
    ("slice_step", slice(1, None, 2), XN[1::2]),
    ("slice_negative_bounds", (slice(-3, -1), slice(None, None, 3)), XN[-3:-1, ::3]),
    ("slice_out_of_range_clamps", slice(-100, 100), XN[-100:100]),
    ("empty_slice", (slice(3, 1), 0), XN[3:1, 0]),
    ("none_and_int", (slice(None, None, 2), None, 1), XN[::2, None, 1]),
    ("ellipsis_int", (Ellipsis, 1), XN[..., 1]),
    ("none_ellipsis_none", (None, Ellipsis, None), XN[None, ..., None]),
    ("int_ellipsis_slice", (1, Ellipsis, slice(0, 4, 3)), XN[1, ..., 0:4:3]),
    ("index_tensor_with_repeats", np.array([0, 2, 2]), XN[[0, 2, 2]]),
    ("negative_index_tensor", (slice(None), np.array([1, -1])), XN[:, [1, -1]]),
    ("two_adjacent_index_tensors", (np.array([0, 2]), np.array([1, 3])), XN[[0, 2], [1, 3]]),
    ("adjacent_after_slice_keep_place", (slice(None), np.array([0, 2]), np.array([1, 3])), XN[:, [0, 2], [1, 3]]),
    ("separated_go_first", (np.array([0, 2]), slice(None), np.array([1, 3])), XN[[0, 2], :, [1, 3]]),
    ("separated_after_a_slice_go_first", (slice(1, 3), np.array([0, 2]), None, np.array([1, 3])),
     XN[1:3, [0, 2], None, [1, 3]]),
    ("broadcast_index_tensors", (np.array([[0], [2]]), np.array([1, 3])), XN[np.array([[0], [2]]), np.array([1, 3])]),
    ("list_index", [0, 3], XN[[0, 3]]),
    ("tuple_of_lists", ([0, 3], [1, 2]), XN[[0, 3], [1, 2]]),
    ("ellipsis_index_tensor", (Ellipsis, np.array([1, -2])), XN[..., [1, -2]]),
    ("full_mask", XN > 0, XN[XN > 0]),
    ("leading_mask", MASK_2D, XN[MASK_2D]),
    ("mask_after_int", (1, XN[1, :, 0] > 0), XN[1, XN[1, :, 0] > 0]),
    ("zero_d_index_tensor", (np.array(1), slice(None)), XN[1, :]),
    ("bool_list", [True, False, True, True], XN[[True, False, True, True]]),
    ("none_before_index_tensors", (slice(None), None, np.array([1, 2]), np.array([0, 1])),
     XN[:, None, [1, 2], [0, 1]]),
    # PyTorch's rule: the integer is applied first, then the index tensor
    ("int_then_slice_then_mask", (1, slice(None), MASK_ROW), XN[1][:, MASK_ROW]),
    ("int_none_index_tensor", (1, None, np.array([0, 1]), slice(None)), XN[1][None, [0, 1], :]),
    ("index_tensor_int_index_tensor", (np.array([0, 2]), 1, np.array([3, 4])), XN[:, 1][[0, 2], [3, 4]]),
]


@pytest.mark.parametrize("key, expected", [r[1:] for r in READS], ids=[r[0] for r in READS])
def test_read_matches_numpy_on_both_paths(key, expected):
    plain = ember.tensor(XN)[_torch_key(key)]
    assert not plain.requires_grad
    recorded = ember.tensor(XN, requires_grad=True)[_torch_key(key)]
    for out in (plain, recorded):
        assert tuple(out.shape) == expected.shape
        np.testing.assert_array_equal(out.detach().numpy(), expected)


@pytest.mark.parametrize("key", [r[1] for r in READS if r[2].size], ids=[r[0] for r in READS if r[2].size])
def test_read_gradient_matches_finite_differences(key):
    torch_key = _torch_key(key)
    check_vjp(lambda x: x[torch_key], [XN])


def test_basic_index_reads_are_views_that_see_and_make_writes():
    x = ember.zeros(3, 4)
    row = x[1]
    row += 5  # as in PyTorch, a basic index is a view of x
    assert x[1].tolist() == [5.0] * 4
    x[1, 2] = -1.0
    assert row.tolist() == [5.0, 5.0, -1.0, 5.0]
    picked = x[ember.tensor([1])]  # an index tensor copies
    picked += 1
    assert x[1, 0].item() == 5.0


# ----------------------------------------------------------------------------- assignment

WRITES = [
    # (label, key, value as numpy or scalar, how numpy writes it)
    ("int_scalar", 1, 7.0, None),
    ("two_ints_scalar", (1, 2), 7.0, None),
    ("negative_int_row", -1, random(5, 6, seed=1), None),
    ("slice_step_scalar", slice(1, None, 2), 7.0, None),
    ("slice_step_tensor", slice(1, None, 2), random(2, 5, 6, seed=1), None),
    ("slice_broadcast_value", slice(1, None, 2), random(6, seed=1), None),
    ("value_with_leading_ones", slice(0, 2), random(1, 1, 5, 6, seed=1), lambda x, v: x.__setitem__(
        slice(0, 2), v.reshape(5, 6))),
    ("slice_and_int", (slice(None), 1), random(4, 6, seed=1), None),
    ("ellipsis_int", (Ellipsis, 0), random(4, 5, seed=1), None),
    ("ellipsis_everything", Ellipsis, 2.0, None),
    ("full_mask_scalar", XN > 0, 7.0, None),
    ("full_mask_values", XN > 0, random(int((XN > 0).sum()), seed=1), None),
    ("leading_mask_rows", MASK_2D, random(6, seed=1), None),
    ("index_tensor_scalar", np.array([0, 2]), 7.0, None),
    ("index_tensor_rows", np.array([0, 2]), random(2, 5, 6, seed=1), None),
    ("index_tensor_on_dim1", (slice(None), np.array([0, 3])), random(4, 2, 6, seed=1), None),
    ("two_index_tensors_scalar", (np.array([0, 2]), np.array([1, 3])), 3.0, None),
    ("two_index_tensors_values", (np.array([0, 2]), np.array([1, 3])), random(2, 6, seed=1), None),
    ("separated_index_tensors", (np.array([0, 2]), slice(1, 3), np.array([1, 3])), random(2, 2, seed=1), None),
    ("separated_after_a_slice", (slice(1, 3), np.array([0, 2]), None, np.array([1, 3])), random(2, 2, 1, seed=1),
     None),
    ("adjacent_after_a_slice", (slice(None, None, 2), np.array([0, 2]), np.array([1, 3])), random(2, 2, seed=1),
     None),
    ("mask_and_int", (MASK_2D[:, 0], 1), 5.0, None),
    ("list_index", [0, 1], 2.0, None),
    ("int_and_strided_slice", (1, slice(None, None, 2)), random(3, 6, seed=1), None),
    ("int_then_index_tensor_torch_order", (1, slice(None), np.array([0, 4])), random(5, 2, seed=1),
     lambda x, v: x[1].__setitem__((slice(None), [0, 4]), v)),
]


def _expected_write(key, value, numpy_write):
    expected = XN.copy()
    if numpy_write is not None:
        numpy_write(expected, value)
    else:
        expected[key] = value
    return expected


def _as_ember(value):
    return ember.tensor(value) if isinstance(value, np.ndarray) else value


@pytest.mark.parametrize("key, value, numpy_write", [w[1:] for w in WRITES], ids=[w[0] for w in WRITES])
def test_assignment_matches_numpy_without_autograd(key, value, numpy_write):
    x = ember.tensor(XN)
    x[_torch_key(key)] = _as_ember(value)
    np.testing.assert_array_equal(x.numpy(), _expected_write(key, value, numpy_write))
    assert x._version == 1


@pytest.mark.parametrize("key, value, numpy_write", [w[1:] for w in WRITES], ids=[w[0] for w in WRITES])
def test_assignment_while_recording_matches_numpy_and_its_gradients(key, value, numpy_write):
    torch_key = _torch_key(key)
    leaf = ember.tensor(XN, requires_grad=True)
    y = leaf * 1.0
    y[torch_key] = _as_ember(value)
    np.testing.assert_array_equal(y.detach().numpy(), _expected_write(key, value, numpy_write))
    assert y.grad_fn is not None

    def assign(x, *v):
        out = x * 1.0
        out[torch_key] = v[0] if v else value
        return out

    # gradients flow to x's untouched part and to the value
    arrays = [XN] + ([value] if isinstance(value, np.ndarray) else [])
    check_vjp(assign, arrays)


def test_assigning_a_tensor_that_requires_grad_into_a_plain_tensor():
    x = ember.zeros(3)
    v = ember.tensor(2.0, requires_grad=True)
    x[1] = v
    assert x.requires_grad and x.grad_fn is not None and x.tolist() == [0.0, 2.0, 0.0]
    (x * ember.tensor([1.0, 3.0, 1.0])).sum().backward()
    assert v.grad.item() == 3.0


def test_assignment_into_a_leaf_under_no_grad_writes_in_place():
    w = ember.ones(2, 3, requires_grad=True)
    with ember.no_grad():
        w[0] = 5.0
        w[ember.tensor([[True, False, True], [False, False, False]])] = 0.0
    assert w.tolist() == [[0.0, 5.0, 0.0], [1.0, 1.0, 1.0]]
    assert w.is_leaf and w.requires_grad


def test_assignment_casts_the_value_to_the_destination_dtype():
    x = ember.zeros(3, dtype=ember.int64)
    x[0] = 2.7
    x[1:] = ember.tensor([1.5, -1.5])
    assert x.dtype is ember.int64 and x.tolist() == [2, 1, -1]


def test_index_fill_masked_fill_masked_select_nonzero():
    x = ember.tensor([[1.0, -2.0], [-3.0, 4.0]])
    assert x.masked_fill(x < 0, 0.0).tolist() == [[1.0, 0.0], [0.0, 4.0]]
    assert x.masked_select(x > 0).tolist() == [1.0, 4.0]
    assert x.masked_select(ember.tensor([True, False])).tolist() == [1.0, -3.0]  # the mask broadcasts
    assert x.nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert [i.tolist() for i in ember.nonzero(x > 0, as_tuple=True)] == [[0, 1], [0, 1]]
    assert [i.tolist() for i in ember.where(x > 0)] == [[0, 1], [0, 1]]
    y = ember.zeros(2, 3)
    y.index_fill_(1, ember.tensor([0, 2]), 7.0)
    assert y.tolist() == [[7.0, 0.0, 7.0]] * 2
    z = ember.zeros(2, 2)
    z.masked_fill_(ember.tensor([[True, False], [False, True]]), 1.0)
    assert z.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    check_vjp(lambda a: a.masked_fill(ember.tensor(XN[:, :, 0] > 0)[..., None], 0.5), [XN])
    check_vjp(lambda a: a.masked_select(ember.tensor(XN > 0)), [XN])


@pytest.mark.parametrize("backend", ["llvm", "ptx-emulated"])
def test_compiled_indexing_with_several_index_tensors_checks_each_against_its_own_dim(backend):
    """x[r, c] and index_put((r, c), accumulate=True) combine the indices into one over the
    flattened dims: a column past its dim would land in the next row. Compiled, each index is
    checked against its own dim (a traced take from 0..size-1), as eager checks it."""
    x = ember.randn(4, 3)

    def gather(x, r, c):
        return x[r, c] * 2

    def accumulate(x, r, c, v):
        return x.index_put((r, c), v, accumulate=True)

    def accumulate_rows(x, i, v):
        return x.index_put((i,), v, accumulate=True)
    rows, good, bad = ember.tensor([0, 1]), ember.tensor([0, -1]), ember.tensor([0, 3])
    compiled = ember.compile(gather, backend=backend)
    compiled(x, rows, good)
    assert compiled(x, rows, good).tolist() == gather(x, rows, good).tolist()
    with pytest.raises(IndexError):
        compiled(x, rows, bad)
    compiled = ember.compile(accumulate, backend=backend)
    compiled(x, rows, good, ember.ones(2))
    assert compiled(x, rows, good, ember.ones(2)).tolist() == accumulate(x, rows, good, ember.ones(2)).tolist()
    with pytest.raises(IndexError):
        compiled(x, rows, bad, ember.ones(2))
    compiled = ember.compile(accumulate_rows, backend=backend)
    compiled(x, ember.tensor([0, -1]), ember.ones(2, 3))
    assert compiled(x, ember.tensor([0, -1]), ember.ones(2, 3)).tolist() == \
        accumulate_rows(x, ember.tensor([0, -1]), ember.ones(2, 3)).tolist()
    with pytest.raises(IndexError):  # -5 on a dim of 4 (wrapping it twice gave row 3)
        compiled(x, ember.tensor([0, -5]), ember.ones(2, 3))
