"""The scatter / index / put family (frontend/scatter_ops.py): values against numpy references
written here in float64 loops, PyTorch's dtype and error rules, in-place forms writing through
views, gradients against finite differences, and compiled programs against eager mode.
"""
import numpy as np
import pytest

import ember
from finite_differences import check_vjp, random


def t(a):
    return ember.tensor(np.asarray(a))


def idx(*values):
    return ember.tensor(np.array(values, dtype=np.int64))


# ----------------------------------------------------------------------------- references (numpy, float64)

def reference_scatter_reduce(x, dim, index, src, reduce, include_self):
    """torch.scatter_reduce by its definition: every src element folded into its target."""
    out = x.astype(np.float64).copy()
    groups = {}
    for position in np.ndindex(*index.shape):
        target = list(position)
        target[dim] = index[position]
        groups.setdefault(tuple(target), []).append(src[position])
    for target, values in groups.items():
        values = ([out[target]] if include_self else []) + values
        out[target] = {"sum": np.sum, "prod": np.prod, "mean": np.mean, "amax": np.max, "amin": np.min}[reduce](values)
    return out


# ----------------------------------------------------------------------------- index_put

def test_index_put_writes_and_accumulates_duplicates():
    x = random(3, 4)
    rows, cols, values = np.array([0, 2, 0]), np.array([1, 1, 1]), np.array([1., 2., 3.])
    expected = x.copy()
    expected[rows, cols] = values
    got = ember.index_put(t(x), (t(rows), t(cols)), t(values))
    np.testing.assert_allclose(got.numpy(), expected)
    expected = x.copy()
    np.add.at(expected, (rows, cols), values)
    np.testing.assert_allclose(t(x).index_put((t(rows), t(cols)), t(values), accumulate=True).numpy(), expected)
    expected = x.copy()
    np.add.at(expected, (np.array([2, -1, 0]),), np.arange(4.))  # rows, a broadcast value, a negative index
    np.testing.assert_allclose(ember.index_put(t(x), (idx(2, -1, 0),), t(np.arange(4.)), True).numpy(), expected)


def test_index_put_takes_bool_masks_and_leaves_the_input_alone():
    x = random(3, 4)
    mask = np.array([True, False, True])
    expected = x.copy()
    expected[mask] += 5
    before = x.copy()
    source = t(x)
    np.testing.assert_allclose(ember.index_put(source, (t(mask),), t(np.array(5.)), accumulate=True).numpy(), expected)
    np.testing.assert_array_equal(source.numpy(), before)
    full = x > 0
    np.testing.assert_allclose(ember.index_put(t(x), (t(full),), t(np.array(-1.))).numpy(), np.where(full, -1, x))


def test_index_put_in_place_is_seen_through_views():
    base = ember.zeros(2, 3, 4)
    view = base[1]
    assert view.index_put_((idx(0, 0, 2),), ember.ones(4), accumulate=True) is view
    expected = np.zeros((2, 3, 4))
    expected[1, 0] = 2
    expected[1, 2] = 1
    np.testing.assert_array_equal(base.numpy(), expected)
    assert base._version == 1
    ember.index_put_(base, (idx(0),), ember.full((3, 4), 7.))
    assert (base.numpy()[0] == 7).all()


@pytest.mark.parametrize("call, error, message", [
    (lambda x: ember.index_put(x, (idx(0),), ember.tensor(1., dtype=ember.float64)), RuntimeError,
     "Index put requires the source and destination dtypes match, got Float for the destination and Double"),
    (lambda x: ember.index_put(x, (idx(0),), 1.0), TypeError, "argument 'values' (position 3) must be Tensor"),
    (lambda x: x.index_put((idx(0),), 1.0), TypeError, "argument 'values' (position 2) must be Tensor"),
    (lambda x: ember.index_put(x, (None, idx(1)), ember.tensor(1.)), TypeError, "expected Tensor as element 0"),
    (lambda x: ember.index_put(x, (ember.tensor([0., 1.]),), ember.tensor(1.)), IndexError,
     "tensors used as indices must be long, int, byte or bool tensors"),
    (lambda x: ember.index_put(x, (idx(0, 5),), ember.tensor(1.)), IndexError,
     "index 5 is out of bounds for dimension 0 with size 3"),
    (lambda x: ember.index_put(x, (idx(0), idx(0), idx(0)), ember.tensor(1.)), IndexError,
     "too many indices for tensor of dimension 2 (got 3)"),
    (lambda x: ember.index_put(x, (idx(0, 1, 2),), ember.ones(2, 4)), RuntimeError,
     "shape mismatch: value tensor of shape [2, 4] cannot be broadcast to indexing result of shape [3, 4]"),
    (lambda x: ember.index_put(x, (ember.tensor([True, False]),), ember.tensor(1.)), IndexError,
     "The shape of the mask [2] at index 0 does not match the shape of the indexed tensor [3, 4] at index 0"),
])
def test_index_put_refuses_what_torch_refuses(call, error, message):
    with pytest.raises(error) as caught:
        call(ember.zeros(3, 4))
    assert message in str(caught.value)


@pytest.mark.parametrize("accumulate", [False, True])
def test_index_put_gradients(accumulate):
    rows, cols = idx(0, 2, 0), idx(1, 1, 3)
    check_vjp(lambda x, v: ember.index_put(x, (rows, cols), v, accumulate=accumulate), [random(3, 4), random(3, seed=1)])
    rows = idx(2, 0, 2) if accumulate else idx(2, 0)  # (duplicates without accumulate: torch leaves the order open)
    check_vjp(lambda x, v: ember.index_put(x, (rows,), v, accumulate=accumulate), [random(3, 4), random(4, seed=1)])


# ----------------------------------------------------------------------------- index_copy / index_fill

def test_index_copy_places_source_slices_and_checks_like_torch():
    x, source = random(3, 4), random(3, 2, seed=1)
    expected = x.copy()
    expected[:, [2, 0]] = source
    np.testing.assert_allclose(t(x).index_copy(1, idx(2, 0), t(source)).numpy(), expected)
    np.testing.assert_allclose(ember.index_copy(t(x), -1, idx(2, 0), t(source)).numpy(), expected)
    inplace = t(x)
    inplace.index_copy_(0, t(np.array(1)), ember.ones(1, 4, dtype=ember.float64))
    assert (inplace.numpy()[1] == 1).all()
    with pytest.raises(RuntimeError, match="index_copy_\\(\\): Expected a long tensor for index, but got Int"):
        t(x).index_copy(0, ember.tensor([0], dtype=ember.int32), t(np.ones((1, 4))))
    with pytest.raises(IndexError, match="index_copy_\\(\\): index -1 is out of bounds for dimension 0 with size 3"):
        t(x).index_copy(0, idx(-1), t(np.ones((1, 4))))
    with pytest.raises(IndexError, match="Number of indices \\(3\\) should be equal to source.size\\(dim\\) \\(2\\)"):
        t(x).index_copy(1, idx(0, 1, 2), t(source))
    with pytest.raises(RuntimeError, match="Destination slice shape: 4 at dimension 0 and source slice shape: 3"):
        t(x).index_copy(0, idx(0, 1), t(np.ones((2, 3))))
    check_vjp(lambda a, s: a.index_copy(1, idx(2, 0), s), [x, source])


def test_index_fill_is_out_of_place_and_differentiates_the_value():
    x = random(3, 4)
    expected = x.copy()
    expected[:, [0, 3]] = -1
    source = t(x)
    np.testing.assert_allclose(ember.index_fill(source, 1, idx(0, -1), -1.).numpy(), expected)
    np.testing.assert_array_equal(source.numpy(), x)
    np.testing.assert_array_equal(ember.zeros(3, dtype=ember.int64).index_fill(0, idx(1), 2.7).numpy(), [0, 2, 0])
    with pytest.raises(RuntimeError, match="only supports a 0-dimensional value tensor"):
        source.index_fill(1, idx(0), ember.tensor([1.]))
    with pytest.raises(IndexError, match="index_fill_\\(\\): Expected dtype int64 for index."):
        source.index_fill(1, ember.tensor([0], dtype=ember.int32), 1.)
    # duplicates fill a position once: the value's gradient is the sum over distinct positions
    check_vjp(lambda a, v: a.index_fill(1, idx(0, 2, 0), v), [x, np.array(2.)])


# ----------------------------------------------------------------------------- scatter_reduce / index_reduce

REDUCTIONS = ["sum", "prod", "mean", "amax", "amin"]


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_scatter_reduce_matches_its_definition(reduce, include_self):
    x, src = random(3, 4), random(3, 5, seed=1)
    index = np.array([[2, 0, 0], [1, 1, 3]])  # smaller than src and x outside dim 1: their leading block is used
    got = t(x).scatter_reduce(1, t(index), t(src), reduce, include_self=include_self)
    np.testing.assert_allclose(got.numpy(), reference_scatter_reduce(x, 1, index, src[:2, :3], reduce, include_self))
    flat_index = np.array([0, 1, 0, 1, 2, 1])
    got = ember.scatter_reduce(t(x[0]), 0, t(flat_index), t(src[0].repeat(2)[:6]), reduce=reduce,
                               include_self=include_self)
    expected = reference_scatter_reduce(x[0], 0, flat_index, src[0].repeat(2)[:6], reduce, include_self)
    np.testing.assert_allclose(got.numpy(), expected)


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_scatter_reduce_gradients_with_ties_and_zeros(reduce, include_self):
    # ties (7, 7 and input's own 7) share the gradient, zeros in products are handled
    x, src = np.array([7., 2., 0., 4.]), np.array([5., 7., 7., 0., 9., 0.])
    index = idx(0, 0, 0, 1, 2, 2)
    check_vjp(lambda a, s: a.scatter_reduce(0, index, s, reduce, include_self=include_self),
              [x + 1e-3 * np.arange(4), src + 1e-3 * np.arange(6)] if reduce in ("amax", "amin") else [x, src])
    check_vjp(lambda a, s: a.scatter_reduce(1, t(np.array([[2, 0], [1, 1]])), s, reduce, include_self=include_self),
              [random(3, 4), random(2, 2, seed=1)])


def test_scatter_reduce_tied_maxima_share_the_gradient_evenly():
    x = ember.tensor([7., 2.], requires_grad=True)
    src = ember.tensor([7., 7., 1.], requires_grad=True)
    x.scatter_reduce(0, idx(0, 0, 1), src, "amax").backward(ember.tensor([3., 1.]))
    np.testing.assert_allclose(x.grad.numpy(), [1., 1.])
    np.testing.assert_allclose(src.grad.numpy(), [1., 1., 0.])


def test_scatter_reduce_integer_mean_floors_and_in_place_form():
    x = np.array([1, 2, 3, 4], np.int32)
    got = t(x).scatter_reduce(0, idx(0, 1, 0, 1, 2, 1), t(-np.array([5, 6, 7, 8, 9, 10], np.int32)), "mean")
    assert got.dtype is ember.int32
    np.testing.assert_array_equal(got.numpy(), [-4, -6, -3, 4])  # floor(-11/3) = -4, floor(-22/4) = -6
    y = ember.zeros(3)
    assert y.scatter_reduce_(0, idx(0, 0, 2), ember.tensor([1., 2., 3.]), "sum", include_self=False) is y
    np.testing.assert_array_equal(y.numpy(), [3, 0, 3])
    with pytest.warns(UserWarning, match="beta"):
        assert y.index_reduce_(0, idx(1, 1), ember.tensor([4., 5.]), "amax", include_self=False) is y
    np.testing.assert_array_equal(y.numpy(), [3, 5, 3])


@pytest.mark.parametrize("call, error, message", [
    (lambda x: x.scatter_reduce(0, idx(0), ember.ones(1), "foo"), RuntimeError,
     "reduce argument must be either sum, prod, mean, amax or amin, got foo"),
    (lambda x: x.scatter_reduce(0, ember.tensor([0.]), ember.ones(1), "sum"), RuntimeError,
     "scatter(): Expected dtype int32/int64 for index"),
    (lambda x: x.scatter_reduce(0, idx(0), ember.ones(1, dtype=ember.float64), "sum"), RuntimeError,
     "scatter(): Expected self.dtype to be equal to src.dtype"),
    (lambda x: x.scatter_reduce(0, idx(0, 7), ember.ones(2), "sum"), RuntimeError,
     "index 7 is out of bounds for dimension 0 with size 4"),
    (lambda x: x.scatter_reduce(0, idx(0, 1, 2, 3, 0), ember.ones(4), "sum"), RuntimeError,
     "Expected index [5] to be no larger than self [4] apart from dimension 0 and to be no larger size than src [4]"),
    (lambda x: x.scatter_reduce(0, t(np.zeros((1, 1), np.int64)), ember.ones(1), "sum"), RuntimeError,
     "Index tensor must have the same number of dimensions as self tensor"),
    (lambda x: x.scatter_reduce(0, idx(0), 5., "sum"), TypeError, "argument 'src' (position 3) must be Tensor"),
])
def test_scatter_reduce_refuses_what_torch_refuses(call, error, message):
    with pytest.raises(error) as caught:
        call(ember.zeros(4))
    assert message in str(caught.value)


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", ["prod", "mean", "amax", "amin"])
def test_index_reduce_matches_its_definition(reduce, include_self):
    x, source = random(3, 2), random(4, 2, seed=1)
    index = np.array([0, 2, 0, 0])
    with pytest.warns(UserWarning, match="index_reduce\\(\\) is in beta"):
        got = t(x).index_reduce(0, t(index), t(source), reduce, include_self=include_self)
    expected = reference_scatter_reduce(x, 0, np.repeat(index[:, None], 2, 1), source, reduce, include_self)
    np.testing.assert_allclose(got.numpy(), expected)
    with pytest.warns(UserWarning):
        check_vjp(lambda a, s: ember.index_reduce(a, 0, t(index), s, reduce, include_self=include_self), [x, source])


@pytest.mark.filterwarnings("ignore:index_reduce\\(\\) is in beta")
def test_index_reduce_refuses_what_torch_refuses():
    x = ember.zeros(3, 2)
    with pytest.raises(RuntimeError, match="Expected reduce to be one of prod, mean, amax or amin but got sum."):
        x.index_reduce(0, idx(0), ember.ones(1, 2), "sum")
    with pytest.raises(IndexError, match="index out of range in self"):
        x.index_reduce(0, idx(3), ember.ones(1, 2), "prod")
    with pytest.raises(RuntimeError, match="Number of indices \\(2\\) should be equal to source.size\\(dim\\): \\(1\\)"):
        x.index_reduce(0, idx(0, 1), ember.ones(1, 2), "prod")
    with pytest.raises(RuntimeError, match="source tensor shape must match self tensor shape"):
        x.index_reduce(0, idx(0), ember.ones(1, 3), "prod")


# ----------------------------------------------------------------------------- select / slice / diagonal scatter, diag_embed

def test_select_and_slice_scatter_replace_their_region():
    x = random(4, 6)
    expected = x.copy()
    expected[:, -1] = np.arange(4.)
    np.testing.assert_allclose(ember.select_scatter(t(x), t(np.arange(4.)), 1, -1).numpy(), expected)
    expected = x.copy()
    expected[:, 1::2] = 0
    np.testing.assert_allclose(t(x).slice_scatter(ember.zeros(4, 3, dtype=ember.float64), 1, 1, None, 2).numpy(), expected)
    expected = x.copy()
    expected[-3:-1] = 1  # a source of another dtype is cast, as torch does
    np.testing.assert_allclose(ember.slice_scatter(t(x), ember.ones(2, 6, dtype=ember.int64), start=-3, end=-1).numpy(),
                               expected)
    with pytest.raises(RuntimeError, match="expected src to have a size equal to the slice of self. src size = \\[3\\], "
                                           "slice size = \\[4\\]"):
        ember.select_scatter(t(x), ember.ones(3), 1, 0)
    with pytest.raises(IndexError, match="select\\(\\): index 6 out of range for tensor of size \\[4, 6\\] at dimension 1"):
        ember.select_scatter(t(x), ember.ones(4), 1, 6)
    with pytest.raises(RuntimeError, match="slice step must be positive"):
        ember.slice_scatter(t(x), t(x), step=0)
    check_vjp(lambda a, s: ember.select_scatter(a, s, 0, 2), [x, random(6, seed=1)])
    check_vjp(lambda a, s: ember.slice_scatter(a, s, 1, 1, 5, 3), [x, random(4, 2, seed=1)])


@pytest.mark.parametrize("offset, dim1, dim2", [(0, 0, 1), (1, 0, 2), (-1, 2, 0), (2, 1, 2), (0, -1, 1)])
def test_diagonal_scatter_and_diag_embed_against_numpy(offset, dim1, dim2):
    x = random(3, 4, 5)
    moved = np.moveaxis(x, (dim1, dim2), (-2, -1))
    diagonal = np.diagonal(moved, offset, -2, -1)
    src = random(*diagonal.shape, seed=1)
    expected = moved.copy()
    rows = np.arange(diagonal.shape[-1]) + max(-offset, 0)
    expected[..., rows, rows + offset] = src
    expected = np.moveaxis(expected, (-2, -1), (dim1 % 3, dim2 % 3))
    np.testing.assert_allclose(ember.diagonal_scatter(t(x), t(src), offset, dim1, dim2).numpy(), expected)
    check_vjp(lambda a, s: a.diagonal_scatter(s, offset, dim1, dim2), [x, src])
    vectors = random(2, 3)
    embedded = ember.diag_embed(t(vectors), offset, dim1, dim2).numpy()
    assert embedded.ndim == 3
    np.testing.assert_allclose(np.diagonal(embedded, offset, dim1, dim2), vectors)
    assert np.count_nonzero(embedded) == np.count_nonzero(vectors)


def test_diag_embed_defaults_and_errors():
    np.testing.assert_array_equal(ember.tensor([1., 2.]).diag_embed().numpy(), [[1, 0], [0, 2]])
    np.testing.assert_array_equal(ember.diag_embed(ember.tensor([1., 2.]), 1).numpy(), [[0, 1, 0], [0, 0, 2], [0, 0, 0]])
    with pytest.raises(RuntimeError, match="diagonal dimensions cannot be identical 0, 0"):
        ember.diag_embed(ember.ones(2, 3), 0, 0, 0)
    with pytest.raises(RuntimeError, match="diagonal dimensions cannot be identical 0, 0"):
        ember.diagonal_scatter(ember.zeros(3, 3), ember.ones(3), 0, 0, 0)
    check_vjp(lambda v: ember.diag_embed(v, -1, 0, 2), [random(2, 3)])


# ----------------------------------------------------------------------------- masked_scatter / put

def test_masked_scatter_takes_source_in_row_major_order():
    x, source = random(2, 3), random(6, seed=1)
    mask = np.array([[True, False, True], [False, True, True]])
    expected = x.copy()
    expected[mask] = source[:4]
    np.testing.assert_allclose(ember.masked_scatter(t(x), t(mask), t(source)).numpy(), expected)
    row_mask = np.array([True, False, True])  # broadcast over the rows
    expected = x.copy()
    expected[np.broadcast_to(row_mask, x.shape)] = source[:4]
    inplace = t(x)
    assert inplace.masked_scatter_(t(row_mask), t(source)) is inplace
    np.testing.assert_allclose(inplace.numpy(), expected)
    grown = ember.masked_scatter(t(x[0]), t(np.array([[True], [False]])), t(source))  # out of place: broadcasts both
    np.testing.assert_allclose(grown.numpy(), [source[:3], x[0]])
    check_vjp(lambda a, s: a.masked_scatter(t(mask), s), [x, source])


def test_masked_scatter_refuses_what_torch_refuses():
    x, mask = ember.zeros(2, 3), ember.ones(2, 3, dtype=ember.bool)
    with pytest.raises(RuntimeError, match="Number of elements of source < number of ones in mask"):
        x.masked_scatter(mask, ember.ones(5))
    with pytest.raises(RuntimeError, match="masked_scatter_ only supports boolean masks, but got mask with dtype Int"):
        x.masked_scatter(ember.ones(2, 3, dtype=ember.int32), ember.ones(6))
    with pytest.raises(RuntimeError, match="expected self and source to have same dtypes but gotFloat and Double"):
        x.masked_scatter(mask, ember.ones(6, dtype=ember.float64))
    with pytest.raises(RuntimeError, match="The expanded size of the tensor \\(3\\) must match the existing size \\(2\\) "
                                           "at non-singleton dimension 1"):
        x.masked_scatter_(ember.ones(2, dtype=ember.bool), ember.ones(6))


@pytest.mark.parametrize("accumulate", [False, True])
def test_put_treats_the_input_as_one_dimensional(accumulate):
    x, source = random(2, 3), random(4, seed=1)
    index = np.array([0, 0, 5, -2])
    expected = x.copy().reshape(-1)
    if accumulate:
        np.add.at(expected, index, source)
    else:
        expected[index[1:]] = source[1:]  # (a duplicate's last write wins, as torch's CPU put)
    np.testing.assert_allclose(ember.put(t(x), t(index), t(source), accumulate=accumulate).numpy(), expected.reshape(2, 3))
    inplace = t(x)
    assert inplace.put_(t(index[2:]), t(source[2:]), accumulate) is inplace
    distinct = index if accumulate else index[1:]
    check_vjp(lambda a, s: a.put(t(distinct), s, accumulate), [x, source[:len(distinct)]])


def test_put_refuses_what_torch_refuses():
    x = ember.zeros(2, 3)
    with pytest.raises(IndexError, match="out of range: tried to access index 6 on a tensor of 6 elements."):
        x.put(idx(6), ember.ones(1))
    with pytest.raises(IndexError, match="put_\\(\\): Expected source and index to have the same number of elements"):
        x.put(idx(0, 1), ember.ones(3))
    with pytest.raises(RuntimeError, match="put_\\(\\): Expected a long tensor for index, but got Int"):
        x.put(ember.tensor([0], dtype=ember.int32), ember.ones(1))


# ----------------------------------------------------------------------------- fill_diagonal_, fill and the small forms

@pytest.mark.parametrize("shape, wrap", [((3, 3), False), ((7, 3), True), ((7, 3), False), ((3, 7), True),
                                         ((2, 2, 2), False), ((7, 2), True)])
def test_fill_diagonal_matches_numpy(shape, wrap):
    expected = np.zeros(shape)
    np.fill_diagonal(expected, 5, wrap=wrap)
    x = ember.zeros(*shape)
    assert x.fill_diagonal_(5, wrap=wrap) is x
    np.testing.assert_array_equal(x.numpy(), expected)


def test_fill_diagonal_casts_refuses_and_differentiates():
    np.testing.assert_array_equal(ember.zeros(2, 2, dtype=ember.int64).fill_diagonal_(2.5).numpy(), [[2, 0], [0, 2]])
    with pytest.raises(RuntimeError, match="all dimensions of input must be of equal length"):
        ember.zeros(2, 2, 3).fill_diagonal_(1)
    with pytest.raises(RuntimeError, match="dimensions must larger than 1"):
        ember.zeros(3).fill_diagonal_(1)
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        ember.zeros(3, 3, requires_grad=True).fill_diagonal_(1)
    check_vjp(lambda a: (a * 1).fill_diagonal_(2.), [random(3, 3)])


def test_fill_and_the_function_forms():
    x = random(2, 3)
    out = ember.fill(t(x), 2.5)
    assert out._base is None and out.dtype is ember.float64
    np.testing.assert_array_equal(out.numpy(), np.full((2, 3), 2.5))
    np.testing.assert_array_equal(ember.fill(ember.arange(3), 2.7).numpy(), [2, 2, 2])
    with pytest.raises(RuntimeError, match="fill_ only supports 0-dimension value tensor but got tensor with 1 dimensions."):
        ember.fill(t(x), ember.tensor([1.]))
    check_vjp(lambda a, v: ember.fill(a, v) * a, [x, np.array(2.)])
    y = t(x)
    assert ember.fill_(y, 3) is y and (y.numpy() == 3).all()
    assert ember.zero_(y) is y and (y.numpy() == 0).all()
    leaf = ember.ones(2, requires_grad=True)
    assert not ember.detach(leaf).requires_grad
    computed = leaf * 2
    assert ember.detach_(computed) is computed and not computed.requires_grad
    assert ember.is_same_size(t(x), ember.zeros(2, 3)) and not t(x).is_same_size(ember.zeros(3, 2))
    with pytest.raises(TypeError, match="is_same_size\\(\\): argument 'other' \\(position 1\\) must be Tensor, not int"):
        t(x).is_same_size(5)


# ----------------------------------------------------------------------------- compiled programs equal eager mode

COMPILED = {
    "index_put_accumulate": (lambda x, v: ember.index_put(x, (idx(0, 2, 0), idx(1, 1, 1)), v, accumulate=True),
                             [(3, 4), (3,)]),
    "index_put_full_mask": (lambda x, v: x.index_put((x > 0,), v), [(3, 4), ()]),
    "scatter_reduce_amax": (lambda x, s: x.scatter_reduce(1, t(np.array([[2, 0], [1, 1]])), s, "amax"), [(3, 4), (2, 2)]),
    "scatter_reduce_mean": (lambda x, s: x.scatter_reduce(0, idx(0, 1, 0, 2), s, "mean", include_self=False),
                            [(4,), (4,)]),
    "masked_scatter": (lambda x, s: x.masked_scatter(x > 0, s), [(2, 3), (6,)]),
    "diagonal_scatter": (lambda x, s: ember.diagonal_scatter(x, s, 1, 0, 2), [(2, 3, 4), (3, 2)]),
    "fill_diagonal_": (lambda x: (x * 1).fill_diagonal_(3., wrap=True), [(5, 2)]),
}


@pytest.mark.parametrize("name", list(COMPILED))
def test_compiled_equals_eager(name):
    fn, shapes = COMPILED[name]
    compiled = ember.compile(fn)
    for seed in range(3):
        args = [random(*shape, seed=seed + i) for i, shape in enumerate(shapes)]
        np.testing.assert_allclose(compiled(*map(t, args)).numpy(), fn(*map(t, args)).numpy(), rtol=1e-12)
    assert compiled.report.compiled_calls == 2  # traced once, then one program: no guard on index or mask values
