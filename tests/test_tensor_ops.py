"""Tensor operations against numpy: elementwise math, reductions, products, movement ops,
sorting, einsum, cumsum; and the gradients of composite ops (var, std, norm, logsumexp,
clamp, where, cat/stack/split, ...) against float64 finite differences.
"""
import math

import numpy as np
import pytest

import ember
from finite_differences import check_vjp, random

rng = np.random.default_rng(0)
X = rng.standard_normal((3, 4, 5)).astype(np.float32)


def close(tensor, expected, rtol=1e-5, atol=1e-6):
    expected = np.asarray(expected)
    assert tuple(tensor.shape) == expected.shape, f"shape {tuple(tensor.shape)} != {expected.shape}"
    np.testing.assert_allclose(tensor.detach().numpy().astype(np.float64), expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- elementwise math

POSITIVE = np.abs(X) + 0.1
MATH = [
    ("exp", ember.exp, np.exp, X), ("log", ember.log, np.log, POSITIVE), ("log1p", ember.log1p, np.log1p, POSITIVE),
    ("expm1", ember.expm1, np.expm1, X), ("log2", ember.log2, np.log2, POSITIVE),
    ("log10", ember.log10, np.log10, POSITIVE), ("exp2", lambda t: ember.exp2(t) if hasattr(ember, "exp2") else
                                                 2 ** t, np.exp2, X),
    ("sqrt", ember.sqrt, np.sqrt, POSITIVE), ("rsqrt", ember.rsqrt, lambda a: 1 / np.sqrt(a), POSITIVE),
    ("reciprocal", ember.reciprocal, np.reciprocal, POSITIVE), ("sin", ember.sin, np.sin, X),
    ("cos", ember.cos, np.cos, X), ("tan", ember.tan, np.tan, X), ("tanh", ember.tanh, np.tanh, X),
    ("sinh", ember.sinh, np.sinh, X), ("cosh", ember.cosh, np.cosh, X),
    ("sigmoid", ember.sigmoid, lambda a: 1 / (1 + np.exp(-a)), X * 5),
    ("erf", ember.erf, np.vectorize(math.erf), X), ("abs", ember.abs, np.abs, X), ("sign", ember.sign, np.sign, X),
    ("relu", ember.relu, lambda a: np.maximum(a, 0), X), ("floor", ember.floor, np.floor, X * 3),
    ("ceil", ember.ceil, np.ceil, X * 3), ("round", ember.round, np.round, X * 3),
    ("trunc", ember.trunc, np.trunc, X * 3), ("frac", ember.frac, lambda a: a - np.trunc(a), X * 3),
    ("square", ember.square, np.square, X), ("neg", ember.neg, np.negative, X),
]


@pytest.mark.parametrize("ember_fn, numpy_fn, data", [m[1:] for m in MATH], ids=[m[0] for m in MATH])
def test_math_function_matches_numpy(ember_fn, numpy_fn, data):
    out = ember_fn(ember.tensor(data))
    assert out.dtype is ember.float32
    close(out, numpy_fn(data.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_round_half_to_even_and_decimals():
    assert ember.round(ember.tensor([0.5, 1.5, 2.5, -0.5])).tolist() == [0.0, 2.0, 2.0, -0.0]
    close(ember.round(ember.tensor([1.2345, -2.3456]), decimals=2), [1.23, -2.35])


def test_clamp_variants():
    x = ember.tensor([-2.0, 0.5, 3.0])
    assert x.clamp(-1, 1).tolist() == [-1.0, 0.5, 1.0]
    assert x.clamp(min=0).tolist() == [0.0, 0.5, 3.0]
    assert x.clamp(max=0).tolist() == [-2.0, 0.0, 0.0]
    assert ember.clamp(x, ember.tensor([0.0, 1.0, 0.0]), ember.tensor([1.0, 2.0, 2.0])).tolist() == [0.0, 1.0, 2.0]
    assert ember.tensor([1, 5]).clamp(2, 4).dtype is ember.int64
    with pytest.raises(RuntimeError, match="At least one of 'min' or 'max'"):
        x.clamp()


def test_nan_and_inf_helpers():
    x = ember.tensor([float("nan"), float("inf"), -float("inf"), 1.0])
    assert ember.isnan(x).tolist() == [True, False, False, False]
    assert ember.isinf(x).tolist() == [False, True, True, False]
    assert ember.isfinite(x).tolist() == [False, False, False, True]
    assert ember.nan_to_num(x, nan=0.0, posinf=9.0, neginf=-9.0).tolist() == [0.0, 9.0, -9.0, 1.0]
    assert ember.isinf(ember.tensor([1, 2])).tolist() == [False, False]


def test_lerp_addcmul_addcdiv():
    a, b, c = ember.tensor([1.0, 2.0]), ember.tensor([3.0, 6.0]), ember.tensor([2.0, 4.0])
    assert ember.lerp(a, b, 0.25).tolist() == [1.5, 3.0]
    assert ember.addcmul(a, b, c, value=0.5).tolist() == [4.0, 14.0]
    assert ember.addcdiv(a, b, c, value=2).tolist() == [4.0, 5.0]


def test_maximum_minimum():
    a, b = ember.tensor([1.0, 5.0, -1.0]), ember.tensor([2.0, 3.0, -1.0])
    assert ember.maximum(a, b).tolist() == [2.0, 5.0, -1.0]
    assert ember.minimum(a, b).tolist() == [1.0, 3.0, -1.0]
    assert ember.max(a, b).tolist() == [2.0, 5.0, -1.0]  # torch.max(a, b) is maximum


# ----------------------------------------------------------------------------- reductions

@pytest.mark.parametrize("dim", [None, 0, -1, (0, 2), (1,)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_mean_prod_amax_amin(dim, keepdim):
    x = ember.tensor(X)
    np_dim = dim
    kwargs = {} if dim is None else {"dim": dim}
    close(x.sum(**kwargs, keepdim=keepdim), X.sum(np_dim, keepdims=keepdim), rtol=1e-5, atol=1e-5)
    close(x.mean(**kwargs, keepdim=keepdim), X.mean(np_dim, keepdims=keepdim), rtol=1e-5, atol=1e-6)
    close(ember.amax(x, **kwargs, keepdim=keepdim), X.max(np_dim, keepdims=keepdim))
    close(ember.amin(x, **kwargs, keepdim=keepdim), X.min(np_dim, keepdims=keepdim))
    if dim is not None:
        close(x.prod(dim if isinstance(dim, int) else dim[0], keepdim=keepdim),
              X.prod(dim if isinstance(dim, int) else dim[0], keepdims=keepdim), rtol=1e-4)


def test_sum_and_prod_of_integers_and_bools_are_int64():
    assert ember.tensor([1, 2], dtype=ember.int32).sum().dtype is ember.int64
    assert ember.tensor([True, True, False]).sum().item() == 2
    assert ember.tensor([2, 3], dtype=ember.int8).prod().dtype is ember.int64
    assert ember.tensor([1, 2]).sum(dtype=ember.float64).dtype is ember.float64


def test_mean_of_integers_raises_like_pytorch():
    with pytest.raises(RuntimeError, match="mean\\(\\): could not infer output dtype.*Got: ember.int64"):
        ember.tensor([1, 2]).mean()
    assert ember.tensor([1, 2]).mean(dtype=ember.float32).item() == 1.5


def test_max_min_with_dim_return_values_and_indices():
    x = ember.tensor(X)
    out = x.max(1)
    assert out._fields == ("values", "indices")
    values, indices = out
    close(values, X.max(1))
    assert indices.dtype is ember.int64 and indices.tolist() == X.argmax(1).tolist()
    low = ember.min(x, dim=-1, keepdim=True)
    close(low.values, X.min(-1, keepdims=True))
    assert low.indices.tolist() == X.argmin(-1)[..., None].tolist()
    assert x.max().item() == X.max()


def test_argmax_argmin():
    x = ember.tensor(X)
    assert x.argmax().item() == X.argmax()
    assert x.argmin(dim=2).tolist() == X.argmin(2).tolist()
    assert x.argmax(dim=0, keepdim=True).tolist() == X.argmax(0)[None].tolist()
    assert ember.tensor([1.0, 3.0, 3.0]).argmax().item() == 1  # first of the ties


def test_reductions_on_zero_dim_tensors_accept_dim_0():
    x = ember.tensor(3.0)
    assert x.sum(0).item() == 3.0 and x.sum(-1, keepdim=True).shape == ()
    values, indices = x.max(0)
    assert values.item() == 3.0 and indices.item() == 0
    assert x.argmax().item() == 0


@pytest.mark.parametrize("kwargs, ddof", [({}, 1), ({"unbiased": False}, 0), ({"unbiased": True}, 1),
                                          ({"correction": 0}, 0), ({"correction": 2}, 2)])
def test_var_std_corrections(kwargs, ddof):
    x = ember.tensor(X)
    close(x.var(**kwargs), X.astype(np.float64).var(ddof=ddof), rtol=1e-5)
    close(x.std(dim=1, **kwargs), X.astype(np.float64).std(1, ddof=ddof), rtol=1e-5)
    close(ember.var(x, dim=(0, 2), keepdim=True, **kwargs), X.astype(np.float64).var((0, 2), ddof=ddof,
                                                                                     keepdims=True), rtol=1e-5)
    var, mean = ember.var_mean(x, dim=0, **kwargs)
    close(var, X.astype(np.float64).var(0, ddof=ddof), rtol=1e-5)
    close(mean, X.mean(0))


@pytest.mark.parametrize("p, numpy_ord", [(2, 2), ("fro", 2), (1, 1), (float("inf"), np.inf),
                                          (float("-inf"), -np.inf), (3, 3), (0.5, 0.5)])
def test_vector_norms(p, numpy_ord):
    v = X.reshape(-1).astype(np.float64)
    close(ember.tensor(X).norm(p=p), np.linalg.norm(v, numpy_ord), rtol=1e-5)
    rows = X.reshape(3, -1).astype(np.float64)
    close(ember.tensor(X).reshape(3, -1).norm(p=p, dim=1), np.linalg.norm(rows, numpy_ord, axis=1), rtol=1e-5)


def test_norm_p0_counts_nonzeros_and_linalg_norms():
    assert ember.tensor([0.0, 2.0, -1.0]).norm(p=0).item() == 2.0
    m = ember.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert ember.linalg.norm(m).item() == 5.0
    assert ember.linalg.vector_norm(m, ord=1).item() == 7.0
    close(ember.linalg.norm(m, dim=1), [5.0, 0.0])
    assert ember.dist(ember.tensor([1.0, 2.0]), ember.tensor([4.0, 6.0])).item() == 5.0


def test_logsumexp_handles_infinite_rows():
    x = np.array([[0.0, 1.0, 2.0], [-np.inf, -np.inf, -np.inf], [-np.inf, 0.0, -np.inf], [np.inf, 1.0, 0.0]],
                 np.float32)
    out = ember.tensor(x).logsumexp(1)
    expected = [np.log(np.exp([0.0, 1.0, 2.0]).sum()), -np.inf, 0.0, np.inf]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    close(ember.logsumexp(ember.tensor(X), dim=(0, 2), keepdim=True),
          np.log(np.exp(X.astype(np.float64)).sum((0, 2), keepdims=True)))
    big = ember.tensor([1000.0, 1000.0])  # no overflow
    assert abs(big.logsumexp(0).item() - (1000 + np.log(2))) < 1e-3


def test_all_any_with_dims_and_empties():
    b = np.array([[True, False, True], [True, True, True]])
    x = ember.tensor(b)
    assert x.all().item() is False and x.any().item() is True
    assert x.all(1).tolist() == [False, True]
    assert x.any(0, keepdim=True).tolist() == [[True, True, True]]
    assert ember.tensor([[0, 0], [1, 0]]).any(1).tolist() == [False, True]
    assert ember.zeros(0).all().item() is True and ember.zeros(0).any().item() is False
    assert ember.zeros(0, 3).all(0).tolist() == [True, True, True]
    assert ember.zeros(0, 3).any(0).tolist() == [False, False, False]
    assert ember.zeros(2, 0).all(1, keepdim=True).tolist() == [[True], [True]]


def test_cumsum_count_nonzero_aminmax():
    x = ember.tensor(X)
    close(x.cumsum(1), X.cumsum(1), rtol=1e-5, atol=1e-5)
    close(ember.cumsum(x, dim=-1), X.cumsum(-1), rtol=1e-5, atol=1e-5)
    ints = ember.tensor([[1, 2], [3, 4]], dtype=ember.int32).cumsum(0)
    assert ints.dtype is ember.int64 and ints.tolist() == [[1, 2], [4, 6]]
    assert ember.tensor([[1, 0], [3, 0]]).count_nonzero().item() == 2
    low, high = ember.aminmax(ember.tensor([3, 1, 5]))
    assert (low.item(), high.item()) == (1, 5)


# ----------------------------------------------------------------------------- products

MATMUL_SHAPES = [((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((5, 2, 3), (3,)), ((3,), (5, 3, 4)),
                 ((5, 2, 3), (5, 3, 4)), ((2, 1, 2, 3), (5, 3, 4)), ((5, 2, 3), (3, 4))]


@pytest.mark.parametrize("a_shape, b_shape", MATMUL_SHAPES, ids=[f"{a}@{b}" for a, b in MATMUL_SHAPES])
def test_matmul_shape_rules_match_numpy(a_shape, b_shape):
    a, b = random(*a_shape), random(*b_shape, seed=1)
    out = ember.tensor(a) @ ember.tensor(b)
    close(out, a @ b, rtol=1e-10)
    check_vjp(lambda x, y: ember.matmul(x, y), [a, b])


def test_named_products():
    a, b = random(2, 3), random(3, 4, seed=1)
    close(ember.mm(ember.tensor(a), ember.tensor(b)), a @ b)
    close(ember.bmm(ember.tensor(a[None]), ember.tensor(b[None])), (a @ b)[None])
    close(ember.mv(ember.tensor(a), ember.tensor(b[:, 0])), a @ b[:, 0])
    close(ember.dot(ember.tensor(b[0]), ember.tensor(b[1])), b[0] @ b[1])
    close(ember.outer(ember.tensor(a[0]), ember.tensor(b[0])), np.outer(a[0], b[0]))
    bias = random(4, seed=2)
    close(ember.addmm(ember.tensor(bias), ember.tensor(a), ember.tensor(b), beta=0.5, alpha=2),
          0.5 * bias + 2 * a @ b)
    with pytest.raises(RuntimeError, match=r"mm: self must be a 2D tensor, got shape \[1, 2, 3\]"):
        ember.mm(ember.tensor(a[None]), ember.tensor(b))
    with pytest.raises(RuntimeError, match="bmm: batch sizes differ"):
        ember.bmm(ember.zeros(2, 2, 3), ember.zeros(3, 3, 4))


def test_integer_matmul_stays_integer():
    out = ember.tensor([[1, 2]]) @ ember.tensor([[3], [4]])
    assert out.dtype is ember.int64 and out.tolist() == [[11]]


EINSUMS = [("ij,jk->ik", [(2, 3), (3, 4)]), ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]), ("i,j->ij", [(2,), (3,)]),
           ("ij,kl->ijkl", [(2, 3), (2, 2)]), ("ij->ji", [(2, 3)]), ("ij->", [(2, 3)]), ("ij->j", [(2, 3)]),
           ("ij,ij->i", [(2, 3), (2, 3)]), ("ij,jk", [(2, 3), (3, 4)]), ("bhqd,bhkd->bhqk", [(2, 2, 3, 4), (2, 2, 5, 4)]),
           ("ijk,jl,lk->il", [(2, 3, 4), (3, 5), (5, 4)]), ("abc,cd,de->abe", [(2, 3, 4), (4, 5), (5, 2)]),
           ("i,i,i->i", [(3,), (3,), (3,)]), ("ij,ik->jk", [(3, 2), (3, 4)]), ("ii->i", [(3, 3)]), ("ii", [(3, 3)]),
           ("bii->b", [(2, 3, 3)]), ("...ij,...jk->...ik", [(2, 2, 3), (2, 3, 4)]), ("...ij,jk", [(5, 2, 3), (3, 4)]),
           ("...ij,...jk", [(2, 1, 2, 3), (3, 3, 4)])]


@pytest.mark.parametrize("equation, shapes", EINSUMS, ids=[e for e, _ in EINSUMS])
def test_einsum_matches_numpy(equation, shapes):
    arrays = [random(*s, seed=i) for i, s in enumerate(shapes)]
    close(ember.einsum(equation, *[ember.tensor(a) for a in arrays]), np.einsum(equation, *arrays), rtol=1e-10)


def test_einsum_gradients_and_errors():
    check_vjp(lambda a, b, c: ember.einsum("ijk,jl,lk->il", a, b, c), [random(2, 3, 2), random(3, 2, seed=1),
                                                                      random(2, 2, seed=2)])
    check_vjp(lambda a: ember.einsum("bii->b", a), [random(2, 3, 3)])
    with pytest.raises(RuntimeError, match=r"einsum\(\): subscript 'j' has size 3 in operand 0 \[2, 3\] but "
                                           r"size 4 in operand 1 \[4, 4\]"):
        ember.einsum("ij,jk->ik", ember.zeros(2, 3), ember.zeros(4, 4))
    with pytest.raises(RuntimeError, match="2 operand subscripts for 1 operands"):
        ember.einsum("ij,jk->ik", ember.zeros(2, 3))


def test_cross_product():
    a, b = random(4, 3), random(4, 3, seed=1)
    close(ember.cross(ember.tensor(a), ember.tensor(b), dim=1), np.cross(a, b))


# ----------------------------------------------------------------------------- movement

def test_reshape_and_view_infer_minus_one():
    x = ember.tensor(X)
    assert x.view(-1, 5).shape == (12, 5)
    assert x.reshape((4, -1)).shape == (4, 15)
    assert x.view(60).shape == (60,)
    close(x.reshape(5, 12), X.reshape(5, 12))
    assert ember.tensor(5.0).reshape(1, 1).shape == (1, 1)
    assert ember.tensor([5.0]).reshape(()).shape == ()
    assert x.view_as(ember.zeros(60)).shape == (60,)


def test_permute_transpose_t():
    x = ember.tensor(X)
    close(x.permute(2, 0, 1), X.transpose(2, 0, 1))
    close(x.permute(-1, 0, 1), X.transpose(2, 0, 1))
    close(x.transpose(0, 2), X.swapaxes(0, 2))
    close(x.transpose(-1, -2), X.swapaxes(-1, -2))
    close(x[0].t(), X[0].T)
    assert ember.tensor([1, 2]).t().tolist() == [1, 2]
    close(x.T, X.transpose(2, 1, 0))
    close(x.mT, X.swapaxes(-1, -2))
    close(x.movedim(0, -1), np.moveaxis(X, 0, -1))
    close(ember.movedim(x, (0, 1), (2, 0)), np.moveaxis(X, (0, 1), (2, 0)))
    with pytest.raises(RuntimeError, match="t\\(\\) expects a tensor with <= 2 dimensions"):
        x.t()


def test_flatten_unflatten_squeeze_unsqueeze():
    x = ember.tensor(X)
    assert x.flatten().shape == (60,)
    assert x.flatten(1).shape == (3, 20)
    assert ember.zeros(2, 3, 4, 5).flatten(1, 2).shape == (2, 12, 5)
    assert ember.tensor(1.0).flatten().shape == (1,)
    assert x.unflatten(2, (5, 1)).shape == (3, 4, 5, 1)
    assert x.unflatten(1, (2, -1)).shape == (3, 2, 2, 5)
    assert x.unsqueeze(0).shape == (1, 3, 4, 5)
    assert x.unsqueeze(-1).shape == (3, 4, 5, 1)
    y = ember.zeros(1, 3, 1)
    assert y.squeeze().shape == (3,)
    assert y.squeeze(0).shape == (3, 1)
    assert y.squeeze(1).shape == (1, 3, 1)  # a non-1 dim is left alone
    assert y.squeeze((0, 2)).shape == (3,)
    assert ember.tensor(1.0).unsqueeze(0).shape == (1,)


def test_contiguous_copies_only_strided_tensors():
    x = ember.tensor(X)
    assert x.contiguous() is x
    t = x.transpose(0, 2)
    assert not t.is_contiguous()
    c = t.contiguous()
    assert c.is_contiguous() and c.stride() == (12, 3, 1)
    close(c, X.transpose(2, 1, 0))
    check_vjp(lambda a: a.transpose(0, 1).contiguous() * 2, [random(2, 3)])


def test_expand_repeat_tile():
    col = ember.tensor([[1], [2]])
    assert col.expand(2, 3).tolist() == [[1, 1, 1], [2, 2, 2]]
    assert ember.tensor([1, 2]).expand(3, -1).tolist() == [[1, 2]] * 3
    assert col.expand_as(ember.zeros(2, 4)).shape == (2, 4)
    row = ember.tensor([[1, 2]])
    np.testing.assert_array_equal(row.repeat(2, 3).numpy(), np.tile([[1, 2]], (2, 3)))
    assert ember.tensor([1, 2]).repeat(2, 1, 2).shape == (2, 1, 4)
    np.testing.assert_array_equal(ember.tensor(X).repeat(1, 2, 1).numpy(), np.tile(X, (1, 2, 1)))
    assert ember.tensor([1, 2]).tile((2,)).tolist() == [1, 2, 1, 2]


def test_cat_stack_split_chunk_unbind():
    a, b = X[:, :1], X[:, 1:]
    close(ember.cat([ember.tensor(a), ember.tensor(b)], dim=1), X)
    close(ember.cat([ember.tensor(a), ember.tensor(b)], -2), X)
    assert ember.cat([ember.tensor([1]), ember.tensor([2.5])]).dtype is ember.float32  # promoted
    assert ember.cat([ember.tensor([]), ember.tensor([[3, 4]])]).tolist() == [[3, 4]]  # legacy empty
    close(ember.stack([ember.tensor(X[0]), ember.tensor(X[1])], dim=1), np.stack([X[0], X[1]], 1))
    assert ember.stack([ember.zeros(2), ember.zeros(2)], dim=-1).shape == (2, 2)
    pieces = ember.tensor(X).split(2, dim=1)
    assert [tuple(p.shape) for p in pieces] == [(3, 2, 5), (3, 2, 5)]
    pieces = ember.tensor([1, 2, 3, 4, 5]).split([1, 4])
    assert [p.tolist() for p in pieces] == [[1], [2, 3, 4, 5]]
    assert [p.tolist() for p in ember.tensor([1, 2, 3, 4, 5]).chunk(3)] == [[1, 2], [3, 4], [5]]
    assert [p.tolist() for p in ember.tensor([1, 2, 3, 4, 5, 6]).chunk(4)] == [[1, 2], [3, 4], [5, 6]]
    assert [p.tolist() for p in ember.unbind(ember.tensor([[1, 2], [3, 4]]), 1)] == [[1, 3], [2, 4]]
    assert ember.hstack([ember.tensor([1, 2]), ember.tensor([3])]).tolist() == [1, 2, 3]
    assert ember.vstack([ember.tensor([1, 2]), ember.tensor([3, 4])]).tolist() == [[1, 2], [3, 4]]
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        ember.stack([ember.zeros(2), ember.zeros(3)])
    with pytest.raises(RuntimeError, match="split_with_sizes expects split_sizes to sum exactly to 5"):
        ember.tensor([1, 2, 3, 4, 5]).split([1, 2])


def test_flip_roll_narrow_tril_triu():
    x = ember.tensor(X)
    close(x.flip(0), np.flip(X, 0))
    close(x.flip([0, 2]), np.flip(X, (0, 2)))
    close(x.roll(2, 1), np.roll(X, 2, 1))
    close(x.roll(-1, -1), np.roll(X, -1, -1))
    close(x.roll((1, 2), (0, 2)), np.roll(X, (1, 2), (0, 2)))
    close(x.roll(3), np.roll(X, 3))
    close(x.narrow(2, 1, 3), X[:, :, 1:4])
    close(x.narrow(0, -2, 2), X[-2:])
    m = random(4, 5)
    for k in (-1, 0, 2):
        close(ember.tril(ember.tensor(m), k), np.tril(m, k))
        close(ember.triu(ember.tensor(m), k), np.triu(m, k))
    close(ember.tril(ember.tensor(X)), np.tril(X))


def test_gather_index_select_take_along_dim_scatter_add():
    x = ember.tensor(X)
    index = rng.integers(0, 4, (3, 2, 5))
    close(x.gather(1, ember.tensor(index)), np.take_along_axis(X, index, 1))
    close(ember.take_along_dim(x, ember.tensor(index), 1), np.take_along_axis(X, index, 1))
    close(x.index_select(2, ember.tensor([4, 0, 0])), X[:, :, [4, 0, 0]])
    out = ember.zeros(3).scatter_add(0, ember.tensor([0, 0, 2]), ember.tensor([1.0, 2.0, 3.0]))
    assert out.tolist() == [3.0, 0.0, 3.0]


def test_scatter_index_add_repeat_interleave():
    assert ember.zeros(2, 4).scatter_(1, ember.tensor([[0], [2]]), 1.0).tolist() == [[1, 0, 0, 0], [0, 0, 1, 0]]
    src = ember.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = ember.zeros(3, 3).scatter(0, ember.tensor([[0, 1, 2], [2, 0, 0]]), src)
    assert out.tolist() == [[1.0, 5.0, 6.0], [0.0, 2.0, 0.0], [4.0, 0.0, 3.0]]
    larger_src = ember.tensor(X)  # only the index's extent of src is used
    index = ember.tensor([[[1], [0]]])
    expected = X.copy()
    expected[0, 1, 0], expected[0, 0, 0] = X[0, 0, 0], X[0, 1, 0]
    close(ember.tensor(X).scatter(1, index, larger_src), expected)
    assert ember.zeros(3).scatter(0, ember.tensor([0, 0]), ember.tensor([1.0, 2.0]), reduce="add").tolist() == \
        [3.0, 0.0, 0.0]
    with pytest.raises(IndexError, match="scatter: index 4 is out of bounds for dimension 1 with size 4"):
        ember.zeros(2, 4).scatter(1, ember.tensor([[4]]), 1.0)
    assert ember.zeros(3).index_add_(0, ember.tensor([0, 0, 2]), ember.tensor([1.0, 2.0, 3.0])).tolist() == \
        [3.0, 0.0, 3.0]
    assert ember.ones(2, 2).index_add(1, ember.tensor([1]), ember.ones(2, 1), alpha=2).tolist() == [[1, 3], [1, 3]]
    assert ember.tensor([1, 2]).repeat_interleave(2).tolist() == [1, 1, 2, 2]
    np.testing.assert_array_equal(ember.tensor(X).repeat_interleave(2, dim=1).numpy(), np.repeat(X, 2, 1))
    assert ember.tensor([[1, 2], [3, 4]]).repeat_interleave(ember.tensor([1, 2]), dim=0).tolist() == \
        [[1, 2], [3, 4], [3, 4]]
    assert ember.tensor([[1, 2], [3, 4]]).repeat_interleave(3).shape == (12,)


@pytest.mark.parametrize("k", [-3, -1, 0, 1, 2, 4])
def test_diag_and_trace_match_numpy(k):
    m = random(3, 4)
    close(ember.tensor(m).diag(k), np.diag(m, k))
    v = random(3)
    close(ember.tensor(v).diag(k), np.diag(v, k))
    close(ember.tensor(m).trace(), np.trace(m))


def test_median_fmod_sum_to_size_argwhere():
    x = ember.tensor([[3.0, 1.0, 2.0, 7.0], [0.0, 5.0, 1.0, 1.0]])
    assert x.median().item() == 1.0  # the lower of the two middle values
    values, indices = x.median(1)
    assert values.tolist() == [2.0, 1.0] and indices.tolist() == [2, 2]
    assert x.median(0, keepdim=True).values.shape == (1, 4)
    a, b = np.array([-3.0, 3.0, -3.5, 3.5]), np.array([2.0, -2.0, 2.0, 2.0])
    close(ember.tensor(a).fmod(ember.tensor(b)), np.fmod(a, b))
    assert ember.tensor([-3, 3]).fmod(-2).tolist() == [-1, 1]
    assert ember.ones(2, 3).sum_to_size(1, 3).tolist() == [[2.0, 2.0, 2.0]]
    assert ember.ones(2, 3).sum_to_size(3).tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(RuntimeError, match="sum_to_size: size \\[2\\] is not expandable to size \\[2, 3\\]"):
        ember.ones(2, 3).sum_to_size(2)
    assert ember.tensor([0, 1, 2]).argwhere().tolist() == [[1], [2]]


# ----------------------------------------------------------------------------- sorting

def test_sort_argsort_topk_kthvalue():
    x = ember.tensor(X)
    values, indices = x.sort(dim=1)
    close(values, np.sort(X, 1))
    assert indices.tolist() == np.argsort(X, 1, kind="stable").tolist()
    values, indices = x.sort(descending=True)
    close(values, -np.sort(-X, -1))
    assert x.argsort(dim=0).tolist() == np.argsort(X, 0, kind="stable").tolist()
    ties = ember.tensor([3, 1, 3, 2, 1])
    assert ties.sort().indices.tolist() == [1, 4, 3, 0, 2]  # stable
    assert ties.sort(descending=True).indices.tolist() == [0, 2, 3, 1, 4]
    top = x.topk(2, dim=-1)
    close(top.values, -np.sort(-X, -1)[..., :2])
    assert top.indices.tolist() == np.argsort(-X, -1, kind="stable")[..., :2].tolist()
    low = x.topk(3, dim=0, largest=False)
    close(low.values, np.sort(X, 0)[:3])
    kth = ember.tensor([3.0, 1.0, 2.0]).kthvalue(2)
    assert (kth.values.item(), kth.indices.item()) == (2.0, 2)
    nan_sorted = ember.tensor([3.0, float("nan"), 2.0]).sort()
    assert nan_sorted.indices.tolist() == [2, 0, 1]  # NaN goes last
    with pytest.raises(RuntimeError, match="topk: selected index k=9 out of range"):
        x.topk(9)


def test_unique():
    x = ember.tensor([3, 1, 3, 2])
    assert x.unique().tolist() == [1, 2, 3]
    values, inverse, counts = x.unique(return_inverse=True, return_counts=True)
    assert values.tolist() == [1, 2, 3] and inverse.tolist() == [2, 0, 2, 1] and counts.tolist() == [1, 1, 2]
    rows = ember.tensor([[1, 2], [1, 2], [0, 5]]).unique(dim=0)
    assert rows.tolist() == [[0, 5], [1, 2]]


def test_sort_and_topk_gradients_flow_to_the_selected_elements():
    check_vjp(lambda x: x.sort(dim=1).values, [random(3, 4)])
    check_vjp(lambda x: x.topk(2, dim=0).values, [random(4, 3)])


# ----------------------------------------------------------------------------- composite gradients

COMPOSITE_GRADIENTS = [
    ("var", lambda x: x.var(dim=1), [random(3, 4)]),
    ("var_unbiased_false_keepdim", lambda x: x.var(dim=(0, 1), unbiased=False, keepdim=True), [random(3, 4, 2)]),
    ("std", lambda x: x.std(), [random(3, 4)]),
    ("std_correction", lambda x: ember.std(x, dim=0, correction=0), [random(3, 4)]),
    ("mean", lambda x: x.mean(dim=(0, 2)), [random(2, 3, 4)]),
    ("norm2", lambda x: x.norm(), [random(3, 4)]),
    ("norm1", lambda x: x.norm(p=1, dim=1), [random(3, 4)]),
    ("norm_inf", lambda x: x.norm(p=float("inf"), dim=0), [random(3, 4)]),
    ("norm3", lambda x: x.norm(p=3, dim=1, keepdim=True), [random(3, 4)]),
    ("norm_fro", lambda x: x.norm(p="fro"), [random(3, 4)]),
    ("logsumexp", lambda x: x.logsumexp(dim=1), [random(3, 4)]),
    ("logsumexp_tuple_keepdim", lambda x: ember.logsumexp(x, dim=(0, 2), keepdim=True), [random(2, 3, 4)]),
    ("where", lambda a, b: ember.where(a > 0, a, b), [random(3, 4), random(4, seed=1)]),
    ("where_scalar", lambda a: ember.where(a > 0, a * 2, 0.5), [random(3, 4)]),
    ("cat", lambda a, b: ember.cat([a, b * 2], dim=1), [random(2, 3), random(2, 1, seed=1)]),
    ("stack", lambda a, b: ember.stack([a, b], dim=-1), [random(2, 3), random(2, 3, seed=1)]),
    ("split", lambda x: x.split([1, 3], dim=1)[1] * x.split(2, dim=1)[0].sum(), [random(2, 4)]),
    ("chunk_unbind", lambda x: x.chunk(2)[1] * x.unbind(0)[0], [random(4, 3)]),
    ("max_dim", lambda x: x.max(dim=1).values, [random(3, 4)]),
    ("amax", lambda x: x.amax(dim=(0, 1)), [random(3, 4, 2)]),
    ("prod", lambda x: x.prod(dim=1), [random(3, 4)]),
    ("cumsum", lambda x: x.cumsum(dim=0), [random(3, 4)]),
    ("repeat", lambda x: x.repeat(2, 1, 3), [random(3, 2)]),
    ("expand", lambda x: x.expand(2, 3, 4), [random(3, 1)]),
    ("roll", lambda x: x.roll((1, -1), (0, 1)), [random(3, 4)]),
    ("flip", lambda x: x.flip(1), [random(3, 4)]),
    ("tril", lambda x: x.triu(1), [random(3, 4)]),
    ("narrow", lambda x: x.narrow(1, 1, 2), [random(3, 4)]),
    ("gather", lambda x: x.gather(1, ember.tensor([[0, 0], [2, 1], [3, 3]])), [random(3, 4)]),
    ("index_select", lambda x: x.index_select(0, ember.tensor([2, 0, 2])), [random(3, 4)]),
    ("permute_reshape", lambda x: x.permute(2, 0, 1).reshape(4, -1), [random(2, 3, 4)]),
    ("tan_sinh_cosh", lambda x: x.tan() + x.sinh() * x.cosh(), [random(3, 4) * 0.5]),
    ("log2_log10_exp2", lambda x: x.log2() + x.log10() + 2 ** x, [random(3, 4, low=0.5, high=2.0)]),
    ("pow_scalar_exponents", lambda x: x ** 3 + x ** 0.5 + x ** -1 + x ** 2, [random(3, 4, low=0.5, high=2.0)]),
    ("rpow", lambda x: 2.5 ** x, [random(3, 4)]),
    ("lerp", lambda a, b, w: ember.lerp(a, b, w), [random(3), random(3, seed=1), random(3, seed=2)]),
    ("addcdiv", lambda a, b, c: ember.addcdiv(a, b, c, value=0.5), [random(3), random(3, seed=1),
                                                                    random(3, seed=2, low=1, high=2)]),
    ("cross", lambda a, b: ember.cross(a, b, dim=0), [random(3, 2), random(3, 2, seed=1)]),
    ("outer", lambda a, b: ember.outer(a, b), [random(3), random(2, seed=1)]),
    ("abs", lambda x: x.abs(), [random(3, 4)]),
    ("scatter_src", lambda x, s: x.scatter(1, ember.tensor([[2, 0], [1, 3]]), s), [random(2, 4), random(2, 3, seed=1)]),
    ("scatter_value", lambda x: x.scatter(0, ember.tensor([[1, 0, 1]]), 0.5), [random(2, 3)]),
    ("index_add", lambda x, s: x.index_add(0, ember.tensor([2, 0, 2]), s, alpha=0.5), [random(3, 2), random(3, 2, seed=1)]),
    ("repeat_interleave", lambda x: x.repeat_interleave(ember.tensor([2, 0, 1]), dim=1), [random(2, 3)]),
    ("diag", lambda v, m: v.diag(1).sum(0) + m.diag(-1).sum(), [random(3), random(4, 3, seed=1)]),
    ("trace_median", lambda m: m.trace() + m.median(1).values.sum() + m.median(), [random(3, 3)]),
    ("fmod", lambda a, b: a.fmod(b), [random(4) * 3, random(4, low=0.5, high=2.0, seed=1)]),
    ("sum_to_size", lambda x: x.sum_to_size(1, 3), [random(2, 3)]),
    ("frac", lambda x: x.frac(), [random(3, 4) * 3]),
]


@pytest.mark.parametrize("fn, arrays", [c[1:] for c in COMPOSITE_GRADIENTS], ids=[c[0] for c in COMPOSITE_GRADIENTS])
def test_composite_gradient_matches_finite_differences(fn, arrays):
    check_vjp(fn, arrays)


def test_clamp_gradient_passes_at_the_boundary_like_pytorch():
    x = ember.tensor([1.0, 2.0, 2.5, 3.0, 4.0], requires_grad=True)
    x.clamp(2.0, 3.0).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    low = ember.tensor([1.5, 1.5], requires_grad=True)
    y = ember.tensor([1.0, 2.0], requires_grad=True)
    ember.clamp(y, min=low).sum().backward()
    assert low.grad.tolist() == [1.0, 0.0] and y.grad.tolist() == [0.0, 1.0]
    check_vjp(lambda x: x.clamp(-0.5, 0.5), [random(3, 4)])


def test_max_dim_sends_the_gradient_to_the_returned_index_and_amax_splits_ties():
    x = ember.tensor([[1.0, 3.0, 3.0]], requires_grad=True)
    values, indices = x.max(dim=1)
    values.sum().backward()
    assert indices.tolist() == [1] and x.grad.tolist() == [[0.0, 1.0, 0.0]]
    x = ember.tensor([[1.0, 3.0, 3.0]], requires_grad=True)
    x.amax(dim=1).sum().backward()
    assert x.grad.tolist() == [[0.0, 0.5, 0.5]]
    x = ember.tensor([[1.0, 3.0, 3.0]], requires_grad=True)
    x.max().backward()
    assert x.grad.tolist() == [[0.0, 0.5, 0.5]]


def test_norm_gradient_of_a_zero_vector_is_zero_like_pytorch():
    for p in (2, 3, "fro"):
        x = ember.zeros(2, 3, requires_grad=True)
        x.norm(p=p, dim=1).sum().backward()
        assert x.grad.tolist() == [[0.0] * 3] * 2, p


def test_prod_gradient_with_zeros():
    check_vjp(lambda x: x.prod(dim=1), [np.array([[0.0, 2.0, 3.0], [1.5, 0.0, 0.0], [1.0, 2.0, -1.0]])])
