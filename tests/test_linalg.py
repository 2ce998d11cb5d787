"""ember.linalg and the torch.* linear algebra (det, inverse, solve, cholesky, qr, eigh, svd, pinv,
lstsq, lu, matrix_exp, norms, ...): values against numpy float64 references, shapes and dtypes
of batched inputs, every gradient against float64 finite differences (second derivatives too),
PyTorch's errors and warnings, and eager against ember.compile, a training step included."""
import math
import warnings

import numpy as np
import pytest

import ember
from ember.ops.linalg_ops import LINALG_PRIMITIVES
from finite_differences import check_vjp

RNG = np.random.default_rng(0)
linalg = ember.linalg


def t64(a):
    return ember.tensor(np.asarray(a, np.float64))


def well_conditioned(*shape, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape)
    return a + 3 * np.eye(shape[-1]) if shape[-1] == shape[-2] else a


def spd(*shape, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape)
    return a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])


def close(got, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(got.detach().numpy() if hasattr(got, "detach") else got, expected, rtol=rtol, atol=atol)


def symmetrized(fn):
    """fn of x + x^T: the symmetric-input ops (cholesky, eigh) read one triangle, and their
    gradient is PyTorch's symmetric one, which finite differences see through x + x^T."""
    return lambda x: fn(x + x.mT)


SHAPES = [(3, 3), (2, 3, 3)]


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("shape", SHAPES)
def test_inverse_determinants_and_solvers_match_numpy(shape):
    a, b = well_conditioned(*shape), RNG.standard_normal(shape[:-1] + (2,))
    close(linalg.inv(t64(a)), np.linalg.inv(a))
    close(ember.inverse(t64(a)), np.linalg.inv(a))
    close(linalg.det(t64(a)), np.linalg.det(a))
    sign, logabsdet = linalg.slogdet(t64(a))
    close(sign, np.linalg.slogdet(a)[0]), close(logabsdet, np.linalg.slogdet(a)[1])
    close(ember.logdet(t64(spd(*shape))), np.linalg.slogdet(spd(*shape))[1])
    close(linalg.solve(t64(a), t64(b)), np.linalg.solve(a, b))
    close(linalg.solve(t64(a), t64(b[..., 0])), np.linalg.solve(a, b[..., :1])[..., 0])  # a vector right side
    close(linalg.solve(t64(a), t64(np.swapaxes(b, -1, -2)), left=False), np.swapaxes(np.linalg.solve(
        np.swapaxes(a, -1, -2), b), -1, -2))
    for upper in (True, False):
        tri = np.triu(a) if upper else np.tril(a)
        close(linalg.solve_triangular(t64(a), t64(b), upper=upper), np.linalg.solve(tri, b))
        unit = tri.copy()
        unit[..., range(shape[-1]), range(shape[-1])] = 1
        close(linalg.solve_triangular(t64(a), t64(b), upper=upper, unitriangular=True), np.linalg.solve(unit, b))
    for p in (0, 1, 3, -2):
        expected = np.linalg.matrix_power(a, p)
        close(linalg.matrix_power(t64(a), p), expected, rtol=1e-9)
    assert ember.matrix_power(ember.tensor([[1, 1], [0, 1]]), 3).tolist() == [[1, 3], [0, 1]]  # integers too


def test_batched_results_keep_the_batch_and_float32():
    a = well_conditioned(4, 2, 3, 3).astype(np.float32)
    x = ember.from_numpy(a)
    assert linalg.det(x).shape == (4, 2) and linalg.det(x).dtype == ember.float32
    assert linalg.slogdet(x).sign.shape == (4, 2) and linalg.inv(x).dtype == ember.float32
    assert linalg.solve(x, ember.ones(3, 5)).shape == (4, 2, 3, 5)  # batch dims broadcast
    assert linalg.solve(x, ember.ones(3)).shape == (4, 2, 3)
    assert [t.shape for t in linalg.svd(ember.ones(2, 5, 3))] == [(2, 5, 5), (2, 3), (2, 3, 3)]
    assert [t.shape for t in linalg.svd(ember.ones(2, 5, 3), full_matrices=False)] == [(2, 5, 3), (2, 3), (2, 3, 3)]
    assert [t.shape for t in linalg.qr(ember.ones(2, 5, 3), mode="complete")] == [(2, 5, 5), (2, 5, 3)]
    assert [t.shape for t in linalg.qr(ember.ones(5, 3), mode="r")] == [(0,), (3, 3)]
    assert [t.shape for t in linalg.lu(ember.ones(4, 3))] == [(4, 4), (4, 3), (3, 3)]
    assert linalg.lu_factor(x).pivots.dtype == ember.int32 and linalg.matrix_rank(x).dtype == ember.int64
    close(linalg.eigvalsh(x + x.mT), np.linalg.eigvalsh(a + np.swapaxes(a, -1, -2)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (2, 5, 3)])
def test_decompositions_match_numpy_and_reconstruct(shape):
    a = RNG.standard_normal(shape)
    q, r = linalg.qr(t64(a))
    close(q, np.linalg.qr(a)[0]), close(r, np.linalg.qr(a)[1])
    u, s, vh = linalg.svd(t64(a), full_matrices=False)
    close(s, np.linalg.svd(a, compute_uv=False))
    close((u * s.unsqueeze(-2)) @ vh, a)
    legacy = ember.svd(t64(a))
    close((legacy.U * legacy.S.unsqueeze(-2)) @ legacy.V.mT, a)
    close(linalg.svdvals(t64(a)), np.linalg.svd(a, compute_uv=False))
    close(linalg.pinv(t64(a)), np.linalg.pinv(a))
    assert linalg.matrix_rank(t64(a)).tolist() == np.linalg.matrix_rank(a).tolist()
    perm, lower, upper = linalg.lu(t64(a))
    close(perm @ lower @ upper, a)
    assert np.all(np.abs(lower.numpy()) <= 1) and np.allclose(np.triu(lower.numpy(), 1), 0)  # partial pivoting
    factors = linalg.lu_factor(t64(a))
    unpacked = ember.lu_unpack(*factors)
    close(unpacked.P @ unpacked.L @ unpacked.U, a)
    for name, ordv in (("fro", "fro"), ("nuc", "nuc"), ("2", 2), ("-2", -2), ("1", 1), ("-1", -1), ("inf", math.inf),
                       ("-inf", -math.inf)):
        close(linalg.matrix_norm(t64(a), ordv), np.linalg.norm(a, ordv, axis=(-2, -1)), rtol=1e-9)


def test_symmetric_eigenproblem_cholesky_and_matrix_exp():
    a = spd(2, 4, 4)
    w, v = linalg.eigh(t64(a))
    close(w, np.linalg.eigvalsh(a))
    close((v * w.unsqueeze(-2)) @ v.mT, a)
    skewed = np.triu(a) + 5 * np.tril(a, -1)  # only the chosen triangle is read
    close(linalg.eigvalsh(t64(skewed), UPLO="U"), np.linalg.eigvalsh(a))
    close(linalg.cholesky(t64(a)), np.linalg.cholesky(a))
    close(linalg.cholesky(t64(a), upper=True), np.swapaxes(np.linalg.cholesky(a), -1, -2))
    low = np.linalg.cholesky(a)
    b = RNG.standard_normal((2, 4, 3))
    close(ember.cholesky_solve(t64(b), t64(low)), np.linalg.solve(a, b))
    close(ember.cholesky_inverse(t64(np.swapaxes(low, -1, -2)), upper=True), np.linalg.inv(a), rtol=1e-9)
    small = 0.3 * RNG.standard_normal((3, 3))
    series = sum(np.linalg.matrix_power(small, k) / math.factorial(k) for k in range(30))
    close(linalg.matrix_exp(t64(small)), series)
    big = t64(4 * RNG.standard_normal((2, 3, 3)))  # scaling and squaring: exp(A) exp(-A) = I, exp(2A) = exp(A)^2
    close(linalg.matrix_exp(big) @ linalg.matrix_exp(-big), np.broadcast_to(np.eye(3), (2, 3, 3)), rtol=1e-8,
          atol=1e-8)
    close(linalg.matrix_exp(2 * big), (linalg.matrix_exp(big) @ linalg.matrix_exp(big)).numpy(), rtol=1e-9)


def test_least_squares_condition_numbers_and_the_rest_match_numpy():
    a, b = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 2))
    expected, residuals, rank, values = np.linalg.lstsq(a, b, rcond=None)
    got = linalg.lstsq(t64(a), t64(b), driver="gelsd")
    close(got.solution, expected), close(got.residuals, residuals), close(got.singular_values, values)
    assert got.rank.item() == rank
    default = linalg.lstsq(t64(a), t64(b))  # gelsy: no residuals nor singular values, as torch
    close(default.solution, expected)
    assert default.residuals.shape == (0,) and default.singular_values.shape == (0,) and default.rank.item() == 3
    square = well_conditioned(3, 3)
    for p in (None, 2, -2, 1, -1, math.inf, -math.inf, "fro", "nuc"):
        close(linalg.cond(t64(square), p), np.linalg.cond(square, p), rtol=1e-9)
    assert linalg.cond(ember.zeros(2, 2), 1).item() == math.inf
    chain = [RNG.standard_normal(s) for s in ((4,), (4, 6), (6, 2), (2, 5))]
    close(linalg.multi_dot([t64(m) for m in chain]), np.linalg.multi_dot(chain))
    with pytest.warns(UserWarning, match="chain_matmul is deprecated"):
        close(ember.chain_matmul(*[t64(m) for m in chain[1:]]), np.linalg.multi_dot(chain[1:]))
    x, y = RNG.standard_normal((2, 1, 3)), RNG.standard_normal((4, 3))
    close(linalg.cross(t64(x), t64(np.broadcast_to(y, (1, 4, 3)))), np.cross(x, y))
    close(linalg.vecdot(t64(y), t64(y)), (y * y).sum(-1))
    close(linalg.vander(t64(y[0]), N=4), np.vander(y[0], 4, increasing=True))
    big = well_conditioned(6, 6).reshape(2, 3, 6)
    close(linalg.tensorinv(t64(big.reshape(6, 2, 3)), ind=1), np.linalg.tensorinv(big.reshape(6, 2, 3), ind=1))
    close(linalg.tensorsolve(t64(big), t64(y[:2, :3].reshape(2, 3))), np.linalg.tensorsolve(big, y[:2, :3]))
    m = RNG.standard_normal((2, 3, 4))
    close(linalg.norm(t64(m)), np.linalg.norm(m.ravel()))
    close(linalg.norm(t64(m[0]), "nuc"), np.linalg.norm(m[0], "nuc"))
    close(linalg.norm(t64(m), 3, dim=-1), np.linalg.norm(m, 3, axis=-1))
    close(linalg.vector_norm(t64(m), math.inf, dim=(0, 2)), np.abs(m).max(axis=(0, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (deprecated, as in torch)
        close(ember.nuclear_norm(t64(m)), np.linalg.norm(m, "nuc", axis=(-2, -1)))
        close(ember.frobenius_norm(t64(m), (0, 2)), np.sqrt((m * m).sum((0, 2))))
    close(linalg.diagonal(t64(m), offset=1), np.diagonal(m, 1, -2, -1))


def test_singular_matrices_give_what_torch_gives():
    singular = t64([[1.0, 2.0], [2.0, 4.0]])
    assert linalg.det(singular).item() == 0.0
    assert linalg.slogdet(singular).logabsdet.item() == -math.inf
    assert ember.logdet(singular).item() == -math.inf
    assert math.isnan(ember.logdet(t64([[0.0, 1.0], [1.0, 0.0]])).item())  # a negative determinant
    assert linalg.inv_ex(ember.stack([ember.eye(2), ember.zeros(2, 2)])).info.tolist() == [0, 1]
    assert linalg.lu_factor_ex(singular).info.item() == 2
    failed = linalg.cholesky_ex(t64([[1.0, 2.0], [2.0, 1.0]]))
    assert failed.info.item() == 2 and failed.info.dtype == ember.int32 and failed.L.tolist() == [[1, 0], [2, -3]]
    assert linalg.matrix_rank(singular).item() == 1
    close(linalg.pinv(singular, hermitian=True), np.linalg.pinv(singular.numpy()))
    assert np.isinf(linalg.solve_triangular(ember.zeros(2, 2), ember.ones(2, 2), upper=True).numpy()).any()


# ----------------------------------------------------------------------------- gradients

GRADIENTS = {
    "det": (linalg.det, lambda s: [well_conditioned(*s)]),
    "slogdet": (lambda x: linalg.slogdet(x).logabsdet, lambda s: [well_conditioned(*s)]),
    "logdet": (ember.logdet, lambda s: [spd(*s)]),
    "inv": (linalg.inv, lambda s: [well_conditioned(*s)]),
    "solve": (linalg.solve, lambda s: [well_conditioned(*s), RNG.standard_normal(s[:-1] + (2,))]),
    "solve_broadcast": (linalg.solve, lambda s: [well_conditioned(*s), RNG.standard_normal((2,) + s[-1:] + (2,))]),
    "solve_triangular": (lambda a, b: linalg.solve_triangular(a, b, upper=True),
                         lambda s: [well_conditioned(*s), RNG.standard_normal(s[:-1] + (2,))]),
    "solve_triangular_unit_right": (lambda a, b: linalg.solve_triangular(a, b, upper=False, left=False,
                                                                         unitriangular=True),
                                    lambda s: [well_conditioned(*s), RNG.standard_normal(s[:-2] + (2, s[-1]))]),
    "cholesky": (symmetrized(lambda x: linalg.cholesky(x + 2 * s_eye(x))), lambda s: [spd(*s) / 2]),
    "cholesky_upper": (symmetrized(lambda x: linalg.cholesky(x + 2 * s_eye(x), upper=True)), lambda s: [spd(*s) / 2]),
    "cholesky_solve": (lambda b, low: ember.cholesky_solve(b, low),
                       lambda s: [RNG.standard_normal(s[:-1] + (2,)), np.linalg.cholesky(spd(*s))]),
    "cholesky_inverse": (ember.cholesky_inverse, lambda s: [np.linalg.cholesky(spd(*s))]),
    "eigvalsh": (symmetrized(linalg.eigvalsh), lambda s: [RNG.standard_normal(s)]),
    "eigh": (symmetrized(lambda x: (lambda w, v: w.unsqueeze(-2) * v * v + v[..., :1, :].abs())(*linalg.eigh(x))),
             lambda s: [RNG.standard_normal(s)]),
    "matrix_exp": (linalg.matrix_exp, lambda s: [RNG.standard_normal(s)]),
    "matrix_power_negative": (lambda x: linalg.matrix_power(x, -3), lambda s: [well_conditioned(*s)]),
    "pinv_hermitian": (symmetrized(lambda x: linalg.pinv(x, hermitian=True)), lambda s: [spd(*s)]),
    "cond_fro": (lambda x: linalg.cond(x, "fro"), lambda s: [well_conditioned(*s)]),
    "lu_solve": (lambda a, b: linalg.lu_solve(*linalg.lu_factor(a), b, adjoint=True),
                 lambda s: [well_conditioned(*s), RNG.standard_normal(s[:-1] + (2,))]),
}

RECTANGULAR = {
    "qr": (lambda x: (lambda q, r: ember.cat([q, r.mT], -2))(*linalg.qr(x)), lambda s: [RNG.standard_normal(s)]),
    "qr_complete_wide": (lambda x: (lambda q, r: ember.cat([q, r], -1))(*linalg.qr(x, mode="complete")),
                         lambda s: [RNG.standard_normal(s[:-2] + (min(s[-2:]), max(s[-2:])))]),
    "svd": (lambda x: (lambda u, s, vh: ember.cat([u.reshape(*u.shape[:-2], -1), s, vh.reshape(*vh.shape[:-2], -1)],
                                                  -1))(*linalg.svd(x, full_matrices=False)),
            lambda s: [RNG.standard_normal(s)]),
    "svd_full_invariant": (lambda x: (lambda u, s, vh: (u[..., :, :2] @ vh[..., :2, :]) * s.sum(-1, keepdim=True)
                                      .unsqueeze(-1))(*linalg.svd(x)), lambda s: [RNG.standard_normal(s)]),
    "legacy_svd": (lambda x: (lambda u, s, v: u @ v.mT * s[..., :1].unsqueeze(-1))(*ember.svd(x)),
                   lambda s: [RNG.standard_normal(s[:-2] + (min(s[-2:]), min(s[-2:])))]),
    "svdvals": (linalg.svdvals, lambda s: [RNG.standard_normal(s)]),
    "pinv": (linalg.pinv, lambda s: [RNG.standard_normal(s)]),
    "lstsq": (lambda a, b: linalg.lstsq(a, b).solution,
              lambda s: [RNG.standard_normal(s[:-2] + (max(s[-2:]), min(s[-2:]))),
                         RNG.standard_normal(s[:-2] + (max(s[-2:]), 2))]),
    "lu": (lambda x: (lambda p, low, up: ember.cat([low.reshape(*low.shape[:-2], -1), up.reshape(*up.shape[:-2], -1)],
                                                   -1))(*linalg.lu(x)), lambda s: [RNG.standard_normal(s)]),
    "lu_factor": (lambda x: linalg.lu_factor(x).LU, lambda s: [RNG.standard_normal(s)]),
    "nuclear_norm": (lambda x: linalg.matrix_norm(x, "nuc"), lambda s: [RNG.standard_normal(s)]),
    "spectral_norm": (lambda x: linalg.matrix_norm(x, -2, keepdim=True), lambda s: [RNG.standard_normal(s)]),
    "norm_inf": (lambda x: linalg.matrix_norm(x, math.inf), lambda s: [RNG.standard_normal(s)]),
    "cond_2": (linalg.cond, lambda s: [RNG.standard_normal(s)]),
}


def s_eye(x):
    return ember.eye(x.shape[-1], dtype=x.dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=["unbatched", "batched"])
@pytest.mark.parametrize("name", sorted(GRADIENTS))
def test_square_matrix_gradients_match_finite_differences(name, shape):
    fn, arrays = GRADIENTS[name]
    check_vjp(fn, arrays(shape), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(4, 3), (3, 4), (2, 4, 3), (2, 3, 4)])
@pytest.mark.parametrize("name", sorted(RECTANGULAR))
def test_rectangular_matrix_gradients_match_finite_differences(name, shape):
    fn, arrays = RECTANGULAR[name]
    check_vjp(fn, arrays(shape), rtol=1e-5, atol=1e-7)


def test_det_gradient_is_the_cofactor_matrix_at_singular_matrices_too():
    rank_one = np.array([[1.0, 2.0], [2.0, 4.0]])
    x = t64(rank_one).requires_grad_()
    linalg.det(x).backward()
    close(x.grad, [[4.0, -2.0], [-2.0, 1.0]])
    check_vjp(linalg.det, [np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]])])


@pytest.mark.parametrize("name, fn", [
    ("det", linalg.det), ("inv", linalg.inv), ("eigh", symmetrized(lambda x: (lambda w, v: (v * v * w).sum())(
        *linalg.eigh(x)))), ("svd", lambda x: (lambda u, s, vh: (u @ vh).sum() * s.sum())(*linalg.svd(x))),
    ("qr", lambda x: (lambda q, r: (q * r).sum())(*linalg.qr(x))), ("matrix_exp", linalg.matrix_exp),
    ("pinv", linalg.pinv), ("lu", lambda x: (lambda p, low, up: (low * up).sum())(*linalg.lu(x))),
    ("cholesky", symmetrized(lambda x: linalg.cholesky(x + 4 * s_eye(x))))])
def test_second_derivatives_match_finite_differences(name, fn):
    def gradient(x):
        x = x if x.requires_grad else x.detach().requires_grad_()
        with ember.enable_grad():
            out = fn(x)
            weights = ember.arange(out.numel(), dtype=ember.float64).reshape(out.shape) / 4
            (grad,) = ember.autograd.grad((out * weights).sum(), [x], create_graph=True)
        return grad
    check_vjp(gradient, [well_conditioned(3, 3)], rtol=1e-4, atol=1e-6)


def test_decompositions_refuse_gradients_torch_does_not_define():
    x = ember.randn(4, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="depends on Q, which is not computed when mode='r'"):
        linalg.qr(x, mode="r").R.sum().backward()
    with pytest.raises(RuntimeError, match="not differentiable when mode='complete' and nrows > ncols"):
        linalg.qr(x, mode="complete").Q.sum().backward()


# ----------------------------------------------------------------------------- errors and warnings

def test_errors_read_as_torchs():
    singular = ember.tensor([[1.0, 2.0], [2.0, 4.0]])
    not_positive = ember.tensor([[1.0, 2.0], [2.0, 1.0]])
    cases = [
        (lambda: linalg.inv(singular), linalg.LinAlgError,
         "linalg.inv: The diagonal element 2 is zero, the inversion could not be completed because the input matrix "
         "is singular"),
        (lambda: linalg.inv(ember.stack([ember.eye(2), singular])), linalg.LinAlgError,
         r"\(Batch element 1\): The diag"),
        (lambda: linalg.solve(singular, ember.ones(2)), linalg.LinAlgError,
         "torch.linalg.solve: The solver failed because the input matrix is singular."),
        (lambda: linalg.cholesky(not_positive), linalg.LinAlgError,
         r"linalg.cholesky: .*not positive-definite \(the leading minor of order 2 is not positive-definite\)"),
        (lambda: linalg.cholesky_ex(not_positive, check_errors=True), linalg.LinAlgError, "linalg.cholesky_ex: "),
        (lambda: linalg.lu_factor(ember.zeros(2, 2)), RuntimeError, r"torch.linalg.lu_factor: U\[1,1\] is zero"),
        (lambda: linalg.inv(ember.tensor([[1, 2], [3, 4]])), RuntimeError,
         "linalg.inv: Expected a floating point or complex tensor as input. Got Long"),
        (lambda: linalg.det(ember.eye(2).half()), RuntimeError,
         "linalg.det: Low precision dtypes not supported. Got Half"),
        (lambda: linalg.det(ember.ones(2, 3)), RuntimeError,
         "linalg.det: A must be batches of square matrices, but they are 2 by 3 matrices"),
        (lambda: linalg.svd(ember.ones(3)), RuntimeError,
         "linalg.svd: The input tensor A must have at least 2 dimensions."),
        (lambda: linalg.solve(ember.ones(3, 3), ember.ones(2, 3)), RuntimeError,
         r"linalg.solve: Incompatible shapes of A and B for the equation AX = B \(3x3 and 2x3\)"),
        (lambda: linalg.solve(ember.ones(3, 3), ember.ones(3, dtype=ember.float64)), RuntimeError,
         "Expected A and B to have the same dtype, but found A of type Float and B of type Double instead"),
        (lambda: linalg.qr(ember.ones(2, 2), mode="x"), RuntimeError, "qr received unrecognized mode 'x'"),
        (lambda: linalg.eigh(ember.eye(2), UPLO="X"), RuntimeError,
         "Expected UPLO argument to be 'L' or 'U', but got X"),
        (lambda: linalg.matrix_norm(ember.ones(3, 3), ord=3), RuntimeError,
         "linalg.matrix_norm: Order 3 not supported."),
        (lambda: linalg.norm(ember.ones(2, 2, 2), ord=2), RuntimeError, "If dim is not specified but ord is, the input "
                                                                       "must be 1D or 2D. Got 3D."),
        (lambda: linalg.vector_norm(ember.ones(3), ord="fro"), TypeError, "argument 'ord' must be Number, not str"),
        (lambda: linalg.multi_dot([ember.ones(2, 3), ember.ones(4, 2)]), RuntimeError,
         r"multi_dot\(\): tensors 0 and 1 with shapes \[2, 3\] and \[4, 2\] cannot be multiplied"),
        (lambda: linalg.lstsq(ember.ones(4, 3), ember.ones(4, 2), driver="foo"), RuntimeError,
         r"parameter `driver` should be one of \(gels, gelsy, gelsd, gelss\)"),
        (lambda: linalg.cond(ember.eye(3), 3), RuntimeError, "linalg.cond got an invalid norm type: 3"),
        (lambda: linalg.matrix_power(ember.eye(2), 1.5), TypeError, "argument 'n' \\(position 2\\) must be int"),
        (lambda: linalg.svd(ember.eye(2), driver="gesvd"), RuntimeError, "only supported on CUDA inputs"),
        (lambda: ember.cholesky_solve(ember.ones(2, 2), ember.eye(3)), RuntimeError,
         "Incompatible matrix sizes for cholesky_solve: each A matrix is 3 by 3 but each b matrix is 2 by 2"),
        (lambda: ember.lu_unpack(ember.eye(3), ember.tensor([4, 2, 3], dtype=ember.int32)), RuntimeError,
         "pivots passed to lu_unpack must be between 1 and LU.size"),
        (lambda: ember.solve(ember.eye(2), ember.eye(2)), RuntimeError, "deprecated since version 1.9 and is now "
                                                                        "removed. `torch.solve` is deprecated"),
        (lambda: ember.eye(2).lstsq(ember.eye(2)), RuntimeError, "`torch.lstsq` is deprecated in favor of"),
        (lambda: ember.matrix_rank(ember.eye(2)), RuntimeError, "Please use the `torch.linalg.matrix_rank` function"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert issubclass(linalg.LinAlgError, RuntimeError)


def test_deprecated_torch_functions_warn_as_torch_does():
    a = ember.tensor(spd(3, 3))
    for call, message in [(lambda: ember.cholesky(a), "torch.cholesky is deprecated in favor of torch.linalg.cholesky"),
                          (lambda: ember.lu(a), "torch.lu is deprecated in favor of torch.linalg.lu_factor"),
                          (lambda: ember.chain_matmul(a, a), "torch.chain_matmul is deprecated"),
                          (lambda: ember.triangular_solve(a, a), "torch.triangular_solve is deprecated"),
                          (lambda: ember.nuclear_norm(a), "at::nuclear_norm is deprecated"),
                          (lambda: ember.frobenius_norm(a, (0, 1)), "at::frobenius_norm is deprecated"),
                          (lambda: ember.cross(a, a), "Using torch.cross without specifying the dim arg")]:
        with pytest.warns(UserWarning, match=message):
            call()
    with pytest.raises(ember.linalg.LinAlgError, match="^cholesky: The factorization could not be completed"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ember.cholesky(ember.tensor([[1.0, 2.0], [2.0, 1.0]]))


def test_tensor_methods_are_the_torch_functions():
    a = t64(well_conditioned(3, 3))
    close(a.det(), np.linalg.det(a.numpy()))
    close(a.inverse(), np.linalg.inv(a.numpy()))
    close(a.pinverse(), np.linalg.pinv(a.numpy()))
    close(a.matrix_power(2), a.numpy() @ a.numpy())
    close(a.matrix_exp(), linalg.matrix_exp(a).numpy())
    close(a.slogdet().logabsdet, np.linalg.slogdet(a.numpy())[1])
    close(a.qr().R, np.linalg.qr(a.numpy())[1])
    close(a.svd().S, np.linalg.svd(a.numpy(), compute_uv=False))
    b = t64(RNG.standard_normal((3, 2)))
    low = t64(np.linalg.cholesky(spd(3, 3)))
    close(b.cholesky_solve(low), np.linalg.solve(spd(3, 3), b.numpy()))
    close(low.cholesky_inverse(), np.linalg.inv(spd(3, 3)), rtol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        close(b.triangular_solve(a).solution, np.linalg.solve(np.triu(a.numpy()), b.numpy()))
        close(t64(spd(3, 3)).cholesky(), low.numpy())
        lu, pivots = a.lu()
    close(b.lu_solve(lu, pivots), np.linalg.solve(a.numpy(), b.numpy()))
    close(t64(spd(3, 3)).logdet(), np.linalg.slogdet(spd(3, 3))[1])


# ----------------------------------------------------------------------------- ember.compile

def test_compiled_linear_algebra_equals_eager_forward_and_training_step():
    rng = np.random.default_rng(1)
    a = ember.from_numpy((rng.standard_normal((2, 3, 3)) + 3 * np.eye(3)).astype(np.float32))
    b = ember.from_numpy(rng.standard_normal((2, 3, 2)).astype(np.float32))

    def forward(a, b):
        lu, pivots = linalg.lu_factor(a)
        w, v = linalg.eigh(a + a.mT)
        u, s, vh = linalg.svd(a)
        return (linalg.solve(a, b).sum() + linalg.det(a).sum() + linalg.cholesky(a @ a.mT).sum() + w.sum()
                + linalg.qr(a).R.abs().sum() + s.sum() + linalg.matrix_exp(0.1 * a).sum() + linalg.pinv(a).sum()
                + linalg.lu_solve(lu, pivots, b).sum() + linalg.matrix_rank(a).sum() + linalg.inv(a).sum())
    compiled = ember.compile(forward)
    for _ in range(2):
        np.testing.assert_allclose(compiled(a, b).item(), forward(a, b).item(), rtol=1e-5)
    inverse = ember.compile(lambda a: linalg.inv(a) * 2)
    close(inverse(a), 2 * np.linalg.inv(a.numpy()), rtol=1e-5, atol=1e-6)
    with pytest.raises(linalg.LinAlgError, match=r"linalg.inv: \(Batch element 1\): The diagonal element"):
        inverse(ember.stack([a[0], ember.zeros(3, 3)]))  # the host callback's error, from compiled code

    weight = ember.nn.Parameter(ember.from_numpy((0.3 * rng.standard_normal((4, 4)) + np.eye(4)).astype(np.float32)))
    optimizer = ember.optim.SGD([weight], lr=0.01)
    x = ember.from_numpy(rng.standard_normal((4, 3)).astype(np.float32))

    def step(x):
        optimizer.zero_grad()
        gram = weight @ weight.mT + ember.eye(4)
        y = linalg.solve_triangular(linalg.cholesky(gram), x, upper=False)
        evals, evecs = linalg.eigh(gram)
        q, r = linalg.qr(weight)
        loss = (y.pow(2).mean() + ember.logdet(gram) + linalg.det(weight) ** 2 + evals.max()
                + (evecs ** 2 * evals).sum() + linalg.svdvals(weight).sum() + (q * r).sum()
                + linalg.matrix_exp(0.1 * weight).sum()
                + linalg.inv(weight).pow(2).mean() + linalg.lu(weight).U.sum())
        loss.backward()
        optimizer.step()
        return loss
    start = weight.detach().clone()
    eager = [step(x).item() for _ in range(3)]
    trained = weight.detach().clone()
    with ember.no_grad():
        weight.copy_(start)
    compiled_step = ember.compile(step)
    np.testing.assert_allclose([compiled_step(x).item() for _ in range(3)], eager, rtol=1e-5)
    np.testing.assert_allclose(weight.detach().numpy(), trained.numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the primitives' table rows

# their VJP is the gradient over symmetric inputs (PyTorch's), not the one-triangle derivative
SYMMETRIC_GRADIENTS = {"linalg_cholesky", "linalg_eigh", "linalg_eigvalsh"}


def primitive_cases(Case):
    """Cases of the linear-algebra primitives for tests/test_primitives.py's CASES table."""
    square, rect = well_conditioned(2, 3, 3), RNG.standard_normal((4, 3))
    rhs = RNG.standard_normal((2, 3, 2))
    return {
        "linalg_inv": [Case("batched", [square], dict(check_errors=True), lambda a, check_errors: np.linalg.inv(a))],
        "linalg_det": [Case("batched", [square], {}, np.linalg.det)],
        "linalg_cofactor": [Case("batched", [square], {}, lambda a: np.linalg.det(a)[..., None, None] *
                                 np.swapaxes(np.linalg.inv(a), -1, -2))],
        "linalg_slogdet": [Case("batched", [square], {}, lambda a: np.stack(np.linalg.slogdet(a), -1))],
        "linalg_solve": [Case("batched", [square, rhs], dict(check_errors=True),
                              lambda a, b, check_errors: np.linalg.solve(a, b))],
        "linalg_solve_triangular": [Case("upper", [square, rhs], dict(upper=True, unitriangular=False),
                                         lambda a, b, upper, unitriangular: np.linalg.solve(np.triu(a), b))],
        "linalg_cholesky": [Case("spd", [spd(2, 3, 3)], dict(check_errors=True),
                                 lambda a, check_errors: np.linalg.cholesky(a))],
        "linalg_qr": [Case("tall", [rect], dict(mode="reduced"))],
        "linalg_eigh": [Case("symmetric", [spd(3, 3)], {})],
        "linalg_eigvalsh": [Case("symmetric", [spd(3, 3)], {}, np.linalg.eigvalsh)],
        "linalg_svd": [Case("tall", [rect], dict(full_matrices=False))],
        "linalg_svdvals": [Case("tall", [rect], {}, lambda a: np.linalg.svd(a, compute_uv=False))],
        "linalg_pinv": [Case("tall", [rect], dict(atol=0.0, rtol=1e-12, hermitian=False),
                             lambda a, atol, rtol, hermitian: np.linalg.pinv(a))],
        "linalg_matrix_exp": [Case("batched", [0.5 * square], {})],
        "linalg_lu_factor": [Case("tall", [rect], {})],
        "linalg_lu_permutation": [Case("swaps", [np.array([[3, 2, 3], [1, 3, 3]], np.int32)],
                                       dict(size=3, dtype="float64"))],
    }


def test_the_primitive_cases_cover_every_linear_algebra_primitive():
    from collections import namedtuple
    cases = primitive_cases(namedtuple("Case", "label arrays attrs reference tolerance", defaults=(None, None)))
    assert sorted(cases) == sorted(LINALG_PRIMITIVES)
    assert all(ember.ops.PRIMITIVES[name].host_only for name in LINALG_PRIMITIVES)
