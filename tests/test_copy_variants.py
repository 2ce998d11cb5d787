"""Views and copies: Tensor.unfold (a view) and unfold_copy, the *_copy functions (fresh memory,
the view's values and gradients), split_with_sizes and the unsafe_* splits, and the in-place
metadata ops t_, transpose_, swapaxes_, swapdims_, squeeze_, unsqueeze_ with PyTorch's aliasing,
version and autograd rules. Expected values come from numpy; gradients from finite differences.
"""
import numpy as np
import pytest

import ember
from finite_differences import check_vjp, random


def t(a):
    return ember.tensor(np.asarray(a))


def windows(x, dim, size, step):
    """numpy's Tensor.unfold: sliding windows along dim, every step-th, the window last."""
    slid = np.lib.stride_tricks.sliding_window_view(x, size, axis=dim)
    return np.take(slid, np.arange(0, slid.shape[dim], step), axis=dim)


# ----------------------------------------------------------------------------- unfold

@pytest.mark.parametrize("shape, dim, size, step", [((10,), 0, 3, 2), ((2, 3, 4), 1, 2, 1), ((2, 3, 4), -1, 4, 3),
                                                     ((5, 2), 0, 5, 1), ((4, 5), 1, 1, 2)])
def test_unfold_is_a_view_with_torch_values_and_gradients(shape, dim, size, step):
    x = random(*shape)
    base = t(x)
    view = base.unfold(dim, size, step)
    np.testing.assert_array_equal(view.numpy(), windows(x, dim % len(shape), size, step))
    assert view._base is base and view._version == base._version
    copy = ember.unfold_copy(base, dim, size, step)
    np.testing.assert_array_equal(copy.numpy(), view.numpy())
    assert copy._base is None and not np.shares_memory(copy.numpy(), x)
    check_vjp(lambda a: a.unfold(dim, size, step), [x])  # overlapping windows add up


def test_unfold_writes_reach_the_base_and_overlap_is_refused():
    base = ember.arange(10.)
    pairs = base.unfold(0, 2, 2)
    pairs.mul_(2)
    np.testing.assert_array_equal(base.numpy(), np.arange(10.) * 2)
    assert base._version == pairs._version == 1
    pairs[1, 0] = -1
    assert base.numpy()[2] == -1
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        base.unfold(0, 3, 1).mul_(2)
    leaf = ember.randn(6, requires_grad=True)
    y = leaf * 1
    y.unfold(0, 3, 3).mul_(3)  # history through the view, as PyTorch's CopySlices
    y.sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), np.full(6, 3.))


def test_unfold_edge_sizes_and_errors_as_torch():
    assert tuple(ember.tensor(5.).unfold(0, 1, 1).shape) == (1,)
    assert tuple(ember.tensor(5.).unfold(0, 0, 1).shape) == (0,)
    assert tuple(ember.arange(10.).unfold(0, 0, 1).shape) == (11, 0)
    x = ember.arange(10.)
    with pytest.raises(RuntimeError, match="maximum size for tensor at dimension 0 is 10 but size is 11"):
        x.unfold(0, 11, 1)
    with pytest.raises(RuntimeError, match="size is -1 but must be >= 0"):
        x.unfold(0, -1, 1)
    with pytest.raises(RuntimeError, match="step is 0 but must be > 0"):
        x.unfold(0, 3, 0)
    with pytest.raises(IndexError, match="Dimension out of range"):
        x.unfold(1, 3, 1)


# ----------------------------------------------------------------------------- *_copy

X = random(2, 3)
X3 = random(2, 3, 4, seed=1)

COPIES = [  # (name, input, args, kwargs, numpy reference)
    ("alias_copy", X, (), {}, lambda x: x),
    ("expand_copy", X[:1], ((2, 2, 3),), {}, lambda x: np.broadcast_to(x, (2, 2, 3))),
    ("permute_copy", X3, ((2, 0, 1),), {}, lambda x: x.transpose(2, 0, 1)),
    ("select_copy", X, (1, -1), {}, lambda x: x[:, -1]),
    ("slice_copy", X, (), dict(dim=1, start=-2, end=10, step=2), lambda x: x[:, -2:10:2]),
    ("squeeze_copy", X[:, :1], (), {}, lambda x: x[:, 0]),
    ("squeeze_copy", X3[:1, :, :1], ((0, 2),), {}, lambda x: x[0, :, 0]),
    ("t_copy", X, (), {}, lambda x: x.T),
    ("transpose_copy", X3, (0, 2), {}, lambda x: x.transpose(2, 1, 0)),
    ("unsqueeze_copy", X, (-1,), {}, lambda x: x[..., None]),
    ("view_copy", X.T, ((6,),), {}, lambda x: x.reshape(6)),  # a copy need not be a view: any strides
    ("diagonal_copy", X3, (1, 0, 2), {}, lambda x: np.diagonal(x, 1, 0, 2)),
    ("diagonal_copy", X, (), dict(offset=1, dim1=1, dim2=0), lambda x: np.diagonal(x, 1, 1, 0)),
    ("detach_copy", X, (), {}, lambda x: x),
    ("narrow_copy", X, (1, -2, 2), {}, lambda x: x[:, 1:3]),
    ("unfold_copy", X, (1, 2, 1), {}, lambda x: windows(x, 1, 2, 1)),
]


@pytest.mark.parametrize("name, x, args, kwargs, reference", COPIES, ids=[c[0] for c in COPIES])
def test_copy_variants_give_fresh_tensors_with_the_views_values_and_gradients(name, x, args, kwargs, reference):
    source = t(x)
    out = getattr(ember, name)(source, *args, **kwargs)
    np.testing.assert_array_equal(out.numpy(), reference(x))
    assert out._base is None and not np.shares_memory(out.numpy(), source.numpy())
    if name != "detach_copy":  # (finite differences perturb a contiguous copy of x)
        check_vjp(lambda a: getattr(ember, name)(a, *args, **kwargs), [np.ascontiguousarray(x)])
    else:
        assert not ember.detach_copy(ember.ones(2, requires_grad=True)).requires_grad


@pytest.mark.parametrize("name, args, reference", [
    ("split_copy", (2, 1), lambda x: [x[:, :2], x[:, 2:]]),
    ("split_with_sizes_copy", ([1, 2], 1), lambda x: [x[:, :1], x[:, 1:]]),
    ("unbind_copy", (1,), lambda x: [x[:, i] for i in range(3)]),
])
def test_multi_output_copies_are_fresh_and_may_be_written(name, args, reference):
    pieces = getattr(ember, name)(t(X), *args)
    assert isinstance(pieces, tuple)
    for piece, expected in zip(pieces, reference(X)):
        np.testing.assert_array_equal(piece.numpy(), expected)
        assert piece._base is None
    leaf = ember.tensor(X, requires_grad=True)
    first = getattr(ember, name)(leaf, *args)[0]
    first.mul_(2)  # (not views of one node: in-place is allowed, unlike split's outputs)
    check_vjp(lambda a: ember.cat([p.reshape(-1) * (i + 1) for i, p in enumerate(getattr(ember, name)(a, *args))]), [X])


def test_copy_out_arguments():
    out = ember.empty(3, 2, dtype=ember.float64)
    assert ember.t_copy(t(X), out=out) is out
    np.testing.assert_array_equal(out.numpy(), X.T)
    outs = [ember.empty(2, 1, dtype=ember.float64), ember.empty(2, 2, dtype=ember.float64)]
    assert ember.split_with_sizes_copy(t(X), [1, 2], 1, out=outs) is None  # (torch returns None for a list out=)
    np.testing.assert_array_equal(outs[1].numpy(), X[:, 1:])
    narrowed = ember.empty(0, dtype=ember.float64)
    ember.narrow_copy(t(X), 0, 1, 1, out=narrowed)
    np.testing.assert_array_equal(narrowed.numpy(), X[1:])


def test_view_copy_of_a_dtype_reinterprets_the_bytes():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(ember.view_copy(t(x), ember.int32).numpy(), x.view(np.int32))
    np.testing.assert_array_equal(ember.view_copy(t(x), dtype=ember.int16).numpy(), x.view(np.int16))
    with pytest.raises(RuntimeError, match="self.size\\(-1\\) must be divisible by 2 to view Float as Long"):
        ember.view_copy(t(x), ember.int64)


def test_copy_errors_as_torch():
    with pytest.raises(RuntimeError, match="start \\(1\\) \\+ length \\(3\\) exceeds dimension size \\(3\\)."):
        t(X).narrow_copy(1, 1, 3)
    with pytest.raises(IndexError, match="start out of range \\(expected to be in range of \\[-3, 3\\], but got -4\\)"):
        ember.narrow_copy(t(X), 1, -4, 1)
    with pytest.raises(RuntimeError, match="slice step must be positive"):
        ember.slice_copy(t(X), 1, 0, 3, 0)
    with pytest.raises(TypeError, match="split_copy\\(\\): argument 'split_size' \\(position 2\\) must be int, not list"):
        ember.split_copy(t(X), [1, 1])
    with pytest.raises(RuntimeError, match="t\\(\\) expects a tensor with <= 2 dimensions, but self is 3D"):
        ember.t_copy(t(X3))


# ----------------------------------------------------------------------------- split_with_sizes, unsafe splits

def test_split_with_sizes_gives_views_that_refuse_recorded_in_place_ops():
    x = t(X)
    pieces = x.split_with_sizes([1, 2], dim=1)
    assert [p._base for p in pieces] == [x, x]
    np.testing.assert_array_equal(ember.split_with_sizes(x, [1, 1])[1].numpy(), X[1:])
    y = ember.tensor(X, requires_grad=True) * 1
    with pytest.raises(RuntimeError, match="Output 0 of SplitWithSizes is a view and is being modified inplace"):
        y.split_with_sizes([1, 2], 1)[0].mul_(2)
    with pytest.raises(TypeError, match="argument 'split_sizes' \\(position 1\\) must be tuple of ints, not int"):
        x.split_with_sizes(1, 1)


@pytest.mark.parametrize("split", [lambda x: x.unsafe_split(2, 1), lambda x: ember.unsafe_chunk(x, 2, 1),
                                   lambda x: ember.unsafe_split_with_sizes(x, [2, 1], 1)])
def test_unsafe_splits_share_memory_but_are_not_views(split):
    x = t(X)
    first = split(x)[0]
    assert first._base is None and np.shares_memory(first.numpy(), x.numpy())
    first.mul_(10)  # the input sees the values; its version counter and history do not move (PyTorch's promise)
    np.testing.assert_array_equal(x.numpy()[:, :2], X[:, :2] * 10)
    assert x._version == 0 and first._version == 1
    leaf = ember.tensor([[1., 2., 3.], [4., 5., 6.]], requires_grad=True)
    y = leaf * 1
    piece = split(y)[0]
    piece.mul_(2)
    (y.sum() + piece.sum()).backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [[3, 3, 1], [3, 3, 1]])  # as torch computes it


# ----------------------------------------------------------------------------- in-place metadata ops

@pytest.mark.parametrize("op, reference", [
    (lambda z: z.t_(), lambda a: a.T),
    (lambda z: z.transpose_(0, -1), lambda a: a.swapaxes(0, -1)),
    (lambda z: z.swapaxes_(0, 1), lambda a: a.swapaxes(0, 1)),
    (lambda z: z.swapdims_(1, 0), lambda a: a.swapaxes(1, 0)),
    (lambda z: z.squeeze_(), lambda a: a.squeeze()),
    (lambda z: z.squeeze_(0), lambda a: a.squeeze(0)),
    (lambda z: z.unsqueeze_(-1), lambda a: a[..., None]),
    (lambda z: z.unsqueeze_(1), lambda a: a[:, None]),
])
def test_metadata_ops_change_the_tensor_in_place(op, reference):
    data = random(1, 3)
    x = t(data)
    memory = x.data_ptr()
    assert op(x) is x
    expected = reference(data)
    np.testing.assert_array_equal(x.numpy(), expected)
    assert x.data_ptr() == memory
    assert [s for s, n in zip(x.stride(), x.shape) if n > 1] == [s // 8 for s, n in zip(expected.strides, expected.shape)
                                                                  if n > 1]
    assert x._version == 1  # (PyTorch moves the version counter)


def test_metadata_op_on_a_view_keeps_it_a_view_of_its_base():
    base = ember.zeros(2, 3)
    rows = base[0:2]
    rows.t_()
    assert rows._base is base and tuple(rows.shape) == (3, 2)
    rows[0, 1] = 5
    assert base.numpy()[1, 0] == 5
    flat = base.view(6)
    base.unsqueeze_(0)  # a root's views keep writing to the right elements
    assert tuple(base.shape) == (1, 2, 3) and flat._base is base
    flat[2] = 7
    assert base.numpy()[0, 0, 2] == 7
    assert base._version == flat._version == 4


def test_metadata_ops_and_autograd():
    leaf = ember.tensor([[1., 2., 3.], [4., 5., 6.]], requires_grad=True)
    y = leaf * 1
    y.t_()
    (y * ember.arange(6.).reshape(3, 2)).sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [[0, 2, 4], [1, 3, 5]])
    leaf.grad = None
    y = leaf * 1
    y.transpose_(0, 1).unsqueeze_(1).squeeze_()
    y[0, 1] = 5  # a write through the rearranged tensor: no gradient to the element it replaced
    (y * ember.arange(6.).reshape(3, 2)).sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [[0, 2, 4], [0, 3, 5]])
    leaf.grad = None
    y = leaf * 1
    row = y[0]
    row.unsqueeze_(0)  # a view changed in place stays a view: writes through it reach y's history
    row.mul_(3)
    y.sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [[3, 3, 3], [1, 1, 1]])


def test_metadata_ops_refuse_what_torch_refuses():
    with pytest.raises(RuntimeError, match="t_: a leaf Variable that requires grad is being used in an in-place"):
        ember.ones(2, 3, requires_grad=True).t_()
    with pytest.raises(RuntimeError, match="a view of a leaf Variable that requires grad"):
        ember.ones(2, 3, requires_grad=True)[0].unsqueeze_(0)
    with pytest.raises(RuntimeError, match="t_\\(\\) expects a tensor with <= 2 dimensions, but self is 3D"):
        ember.ones(2, 2, 2).t_()
    y = ember.ones(4, 3, requires_grad=True) * 1
    with pytest.raises(RuntimeError, match="Output 0 of Split is a view and is being modified inplace"):
        y.split(2)[0].t_()
    with ember.no_grad():
        made_without_grad = y[0:2]
    with pytest.raises(RuntimeError, match="A view was created in no_grad mode and is being modified inplace"):
        made_without_grad.t_()
    leaf = ember.ones(2, 3, requires_grad=True)
    with ember.no_grad():
        leaf.t_()
    assert tuple(leaf.shape) == (3, 2) and leaf.is_leaf
    assert tuple(ember.ones(3, 1).expand(3, 4).t_().shape) == (4, 3)  # (an expanded tensor may be rearranged)


def test_a_value_saved_for_backward_then_rearranged_and_written_is_refused():
    # (torch: the saved tensor's version moved; ember must not hand the overwritten values to mul's VJP)
    x = ember.randn(2, 3, requires_grad=True)
    y = x * 1
    product = y * y
    y.t_()
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        product.sum().backward()


# ----------------------------------------------------------------------------- compiled programs equal eager mode

COMPILED = {
    "unfold": (lambda x: x.unfold(1, 2, 1) * 2, [(3, 4)]),
    "diagonal_copy": (lambda x: ember.diagonal_copy(x, 0, 0, 2), [(3, 2, 3)]),
    "split_copy": (lambda x: ember.split_copy(x, 2, 1)[1] * 3, [(2, 3)]),
    "t_then_write": (lambda x: (lambda y: (y.t_()[1:].mul_(2), y)[1])(x * 1), [(2, 3)]),
    "unsqueeze_view": (lambda x: (lambda y: (y[1:].unsqueeze_(0).mul_(2), y)[1])(x * 1), [(3, 2)]),
}


@pytest.mark.parametrize("name", list(COMPILED))
def test_compiled_equals_eager(name):
    fn, shapes = COMPILED[name]
    compiled = ember.compile(fn)
    for seed in range(3):
        args = [random(*shape, seed=seed + i) for i, shape in enumerate(shapes)]
        np.testing.assert_allclose(compiled(*map(t, args)).numpy(), fn(*map(t, args)).numpy(), rtol=1e-12)
    assert compiled.report.compiled_calls == 2


def test_metadata_op_on_an_argument_runs_eagerly():
    compiled = ember.compile(lambda x: x.t_() * 1)
    for seed in range(2):
        x = t(random(2, 3, seed=seed))
        out = compiled(x)
        assert tuple(x.shape) == (3, 2) and tuple(out.shape) == (3, 2)  # the caller's tensor is rearranged
    assert compiled.report.compiled_calls == 0
