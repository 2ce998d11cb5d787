"""`ember.linalg`, as torch.linalg: inverses, determinants, solvers, decompositions and norms.

Each function checks its operands with PyTorch's messages and binds the host-only primitives
of ember/ops/linalg_ops.py (whose VJPs are PyTorch's) or composes them with other ops, so the
results carry gradients eagerly and under ember.compile. frontend/linalg.py holds the products
and the torch.* forms (torch.det, torch.svd, ...), which call these.
"""
import math
from collections import namedtuple

import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from ember.ops import linalg_ops as ops
from ember.ops.linalg_ops import LinAlgError
from . import math_ops as M, reductions as R, shape_ops as S
from .tensor import Tensor
from .device_tensors import keeps_device

slogdet_result = namedtuple("linalg_slogdet", "sign logabsdet")
inv_ex_result = namedtuple("linalg_inv_ex", "inverse info")
solve_ex_result = namedtuple("linalg_solve_ex", "result info")
cholesky_ex_result = namedtuple("linalg_cholesky_ex", "L info")
qr_result = namedtuple("linalg_qr", "Q R")
eigh_result = namedtuple("linalg_eigh", "eigenvalues eigenvectors")
svd_result = namedtuple("linalg_svd", "U S Vh")
lstsq_result = namedtuple("linalg_lstsq", "solution residuals rank singular_values")
lu_factor_result = namedtuple("linalg_lu_factor", "LU pivots")
lu_factor_ex_result = namedtuple("linalg_lu_factor_ex", "LU pivots info")
lu_result = namedtuple("linalg_lu", "P L U")


# ----------------------------------------------------------------------------- operand checks

def type_name(dtype):
    from .linalg import scalar_type_name
    return scalar_type_name(dtype)


def check_float(op, A, low_precision=False):
    """A floating tensor; float16/bfloat16 only where torch takes them (`low_precision`: norms)."""
    if not low_precision and A.dtype.name in ("float16", "bfloat16"):
        raise RuntimeError(f"{op}: Low precision dtypes not supported. Got {type_name(A.dtype)}")
    if not A.dtype.is_floating_point:
        raise RuntimeError(f"{op}: Expected a floating point or complex tensor as input. Got {type_name(A.dtype)}")


def check_matrices(op, A, square=True, name="A"):
    """A float tensor of (..., m, n) matrices (square ones unless told), with torch's messages."""
    if not isinstance(A, Tensor):
        raise TypeError(f"{op}(): argument '{name}' must be Tensor, not {type(A).__name__}")
    if A.ndim < 2:
        raise RuntimeError(f"{op}: The input tensor {name} must have at least 2 dimensions.")
    check_float(op, A)
    if square and A.shape[-1] != A.shape[-2]:
        raise RuntimeError(f"{op}: {name} must be batches of square matrices, but they are {A.shape[-2]} by "
                           f"{A.shape[-1]} matrices")


def check_same_dtype(op, A, B, a="A", b="B"):
    if A.dtype is not B.dtype:
        raise RuntimeError(f"{op}: Expected {a} and {b} to have the same dtype, but found {a} of type "
                           f"{type_name(A.dtype)} and {b} of type {type_name(B.dtype)} instead")


def mT(x):
    return S.transpose(x, -2, -1)


def _first_flagged(flags):
    """The 1-based index of the first True along the last dim, 0 where there is none (int32)."""
    first = R.argmax(M.to_dtype(flags, dtypes.int32), dim=-1)
    return M.to_dtype(M.where(R.any(flags, dim=-1), first + 1, 0), dtypes.int32)


def _lu_info(A):
    """LAPACK getrf's info: the first zero on U's diagonal (1-based), 0 for invertible matrices."""
    m, n = A.shape[-2:]
    lu = ops.unpack(P["linalg_lu_factor"].bind(A), ops.lu_shapes(m, n))[0]
    return _first_flagged(M.eq(ops.diagonal(ops.narrow(ops.narrow(lu, -2, 0, min(m, n)), -1, 0, min(m, n))), 0))


def _raise_if_failed(op, info, message, error=LinAlgError):
    """Raise `error` naming the first matrix whose info is not 0 (a data-dependent check)."""
    if bool(R.any(M.ne(info, 0))):
        flat = info.reshape(-1).numpy()
        index = int(np.flatnonzero(flat)[0])
        text = ("(Batch element %d): " % index if info.ndim else "") + message(int(flat[index]))
        raise error(op, text) if error is LinAlgError else error(f"{op}: {text}")


# ----------------------------------------------------------------------------- determinants, inverses

def det(A):
    check_matrices("linalg.det", A)
    return P["linalg_det"].bind(A)


def slogdet(A):
    check_matrices("linalg.slogdet", A)
    sign, logabsdet = ops.unpack(P["linalg_slogdet"].bind(A), [(), ()])
    return slogdet_result(sign, logabsdet)


def inv(A):
    check_matrices("linalg.inv", A)
    return P["linalg_inv"].bind(A, check_errors=True)


def inv_ex(A, *, check_errors=False):
    check_matrices("linalg.inv_ex", A)
    info = _lu_info(A)
    if check_errors:
        _raise_if_failed("linalg.inv_ex", info, lambda k: f"The diagonal element {k} is zero, the inversion could "
                                                          f"not be completed because the input matrix is singular.")
    return inv_ex_result(P["linalg_inv"].bind(A, check_errors=False), info)


@keeps_device
def matrix_power(A, n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"matrix_power(): argument 'n' (position 2) must be int, not {type(n).__name__}")
    if A.ndim < 2:
        raise RuntimeError("linalg.matrix_power: The input tensor A must have at least 2 dimensions.")
    if A.shape[-1] != A.shape[-2]:
        raise RuntimeError(f"linalg.matrix_power: A must be batches of square matrices, but they are {A.shape[-2]} by "
                           f"{A.shape[-1]} matrices")
    if n == 0:
        return Tensor._wrap(np.broadcast_to(np.eye(A.shape[-1], dtype=A.dtype.np), tuple(A.shape)).copy())
    base, n = (inv(A), -int(n)) if n < 0 else (A, int(n))
    result = None
    while n:  # repeated squaring
        if n & 1:
            result = base if result is None else P["matmul"].bind(result, base)
        n >>= 1
        if n:
            base = P["matmul"].bind(base, base)
    return M.clone(result) if result is A else result  # (A ** 1 is a new tensor, as in torch)


def matrix_exp(A):
    check_matrices("linalg.matrix_exp", A)
    return P["linalg_matrix_exp"].bind(A)


def _tolerances(op, A, atol, rtol):
    """torch's defaults: atol 0; rtol eps * max(m, n) unless a positive atol is given (then 0)."""
    def number(value, name):
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise RuntimeError(f"{op}: ember takes {name} as a number or a one-element tensor, got a tensor of "
                                   f"shape {list(value.shape)}")
            return float(value.item())
        return float(value)
    atol_value = 0.0 if atol is None else number(atol, "atol")
    if rtol is None:
        rtol_value = float(np.finfo(A.dtype.np).eps) * max(A.shape[-2:]) if atol is None or atol_value <= 0 else 0.0
    else:
        rtol_value = number(rtol, "rtol")
    return atol_value, rtol_value


def pinv(A, rcond=None, hermitian=False, *, atol=None, rtol=None):
    if not isinstance(A, Tensor) or A.ndim < 2 or not A.dtype.is_floating_point:
        described = f"{type_name(A.dtype)}{list(A.shape)}" if isinstance(A, Tensor) else type(A).__name__
        raise RuntimeError(f"linalg.pinv({described.replace('[', '{[').replace(']', ']}')}): expected a tensor with 2 "
                           f"or more dimensions of float, double, cfloat or cdouble types")
    check_matrices("linalg.pinv", A, square=hermitian)
    atol, rtol = _tolerances("linalg.pinv", A, atol, rcond if rtol is None else rtol)
    return P["linalg_pinv"].bind(A, atol=atol, rtol=rtol, hermitian=bool(hermitian))


def cond(A, p=None):
    if p in (None, 2, -2):
        check_matrices("linalg.cond", A, square=False)
        s = svdvals(A)
        largest, smallest = S.select(s, -1, 0), S.select(s, -1, -1)
        return largest / smallest if p != -2 else smallest / largest
    if p not in ("fro", "nuc", math.inf, -math.inf, 1, -1):
        raise RuntimeError(f"linalg.cond got an invalid norm type: {p}")
    check_matrices(f"linalg.cond(ord={p})", A)
    inverse, info = inv_ex(A)
    value = matrix_norm(A, p) * matrix_norm(inverse, p)
    return M.where(M.gt(info, 0), math.inf, value)


# ----------------------------------------------------------------------------- solvers

def _is_vector_rhs(A, B):
    return B.ndim == 1 or (B.ndim == A.ndim - 1 and tuple(B.shape) == tuple(A.shape[:-1]))


def _solve(op, A, B, left, check_errors):
    check_matrices(op, A)
    check_float(op, B)
    check_same_dtype(op, A, B)
    vector = _is_vector_rhs(A, B)
    matrix = S.unsqueeze(B, -1) if vector else B
    n = A.shape[-1]
    if (matrix.shape[-2] if left or vector else matrix.shape[-1]) != n:
        equation = "AX = B" if left else "XA = B"
        raise RuntimeError(f"{op}: Incompatible shapes of A and B for the equation {equation} "
                           f"({A.shape[-2]}x{A.shape[-1]} and {B.shape[-2] if B.ndim > 1 else B.shape[-1]}x"
                           f"{B.shape[-1] if B.ndim > 1 else 1})")
    if left or vector:
        x = P["linalg_solve"].bind(A if left else mT(A), matrix, check_errors=check_errors)
    else:
        x = mT(P["linalg_solve"].bind(mT(A), mT(matrix), check_errors=check_errors))
    return S.squeeze(x, -1) if vector else x


def solve(A, B, *, left=True):
    return _solve("linalg.solve", A, B, left, True)


def solve_ex(A, B, *, left=True, check_errors=False):
    info = _lu_info(A) if isinstance(A, Tensor) and A.ndim >= 2 and A.shape[-1] == A.shape[-2] else None
    if check_errors and info is not None:
        _raise_if_failed("torch.linalg.solve_ex", info,
                         lambda k: "The solver failed because the input matrix is singular.")
    return solve_ex_result(_solve("linalg.solve_ex", A, B, left, False), info)


def solve_triangular(A, B, *, upper, left=True, unitriangular=False):
    op = "linalg.solve_triangular"
    check_matrices(op, A)
    if B.ndim < 2:
        raise RuntimeError(f"{op}: The input tensor B must have at least 2 dimensions.")
    if not A.dtype.is_floating_point:
        raise NotImplementedError(f"\"triangular_solve_cpu\" not implemented for '{type_name(A.dtype)}'")
    B = M.to_dtype(B, A.dtype)  # (torch solves in A's dtype)
    if (B.shape[-2] if left else B.shape[-1]) != A.shape[-1]:
        raise RuntimeError(f"{op}: Incompatible shapes of A and B for the equation {'AX = B' if left else 'XA = B'} "
                           f"({A.shape[-2]}x{A.shape[-1]} and {B.shape[-2]}x{B.shape[-1]})")
    if left:
        return P["linalg_solve_triangular"].bind(A, B, upper=bool(upper), unitriangular=bool(unitriangular))
    return mT(P["linalg_solve_triangular"].bind(mT(A), mT(B), upper=not upper, unitriangular=bool(unitriangular)))


def lstsq(A, B, rcond=None, *, driver=None):
    """The least-squares solution pinv(A) @ B (PyTorch's gradient is that of pinv), with the
    residuals, rank and singular values each driver reports."""
    op = "torch.linalg.lstsq"
    driver = "gelsy" if driver is None else driver
    if driver not in ("gels", "gelsy", "gelsd", "gelss"):
        raise RuntimeError(f"{op}: parameter `driver` should be one of (gels, gelsy, gelsd, gelss)")
    check_matrices("linalg.lstsq", A, square=False)
    if A.dtype is not B.dtype:
        raise RuntimeError(f"{op}: Expected input and other to have the same dtype, but got input's dtype "
                           f"{type_name(A.dtype)} and other's dtype {type_name(B.dtype)}")
    vector = B.ndim == A.ndim - 1
    matrix = S.unsqueeze(B, -1) if vector else B
    if matrix.shape[-2] != A.shape[-2]:
        raise RuntimeError(f"{op}: input.size(-2) should match other.size(-2)")
    m, n = A.shape[-2:]
    rcond = float(np.finfo(A.dtype.np).eps) * max(m, n) if rcond is None else float(rcond)
    solution = P["matmul"].bind(P["linalg_pinv"].bind(A, atol=0.0, rtol=rcond, hermitian=False), matrix)
    empty = Tensor._wrap(np.zeros((0,), A.dtype.np))
    values = svdvals(A).detach() if driver != "gels" else None
    rank = empty.long() if driver == "gels" else R.sum(M.gt(values, M.mul(S.narrow(values, -1, 0, 1), rcond)), -1)
    residuals = empty
    if m > n and driver != "gelsy" and (driver == "gels" or bool(R.all(M.eq(rank, n)))):
        residuals = R.sum(M.square(P["matmul"].bind(A, solution) - matrix), -2)
    return lstsq_result(S.squeeze(solution, -1) if vector else solution, residuals, rank,
                        values if driver in ("gelsd", "gelss") else empty)


# ----------------------------------------------------------------------------- decompositions

def cholesky(A, *, upper=False):
    check_matrices("linalg.cholesky", A)
    if upper:  # from A's upper triangle: chol(A^T)^T
        return mT(P["linalg_cholesky"].bind(mT(A), check_errors=True))
    return P["linalg_cholesky"].bind(A, check_errors=True)


def cholesky_ex(A, *, upper=False, check_errors=False):
    check_matrices("linalg.cholesky_ex", A)
    lower = P["linalg_cholesky"].bind(mT(A) if upper else A, check_errors=False)
    info = _first_flagged(M.logical_not(M.gt(ops.diagonal(lower), 0)))
    if check_errors:
        _raise_if_failed("linalg.cholesky_ex", info, lambda k: f"The factorization could not be completed because the "
                                                               f"input is not positive-definite (the leading minor of "
                                                               f"order {k} is not positive-definite).")
    return cholesky_ex_result(mT(lower) if upper else lower, info)


def qr(A, mode="reduced"):
    if mode not in ("reduced", "complete", "r"):
        raise RuntimeError(f"qr received unrecognized mode '{mode}' but expected one of 'reduced' (default), 'r', "
                           f"or 'complete'")
    check_matrices("linalg.qr", A, square=False)
    if mode == "r":
        return qr_result(Tensor._wrap(np.zeros((0,), A.dtype.np)), P["linalg_qr"].bind(A, mode="r"))
    m, n = A.shape[-2:]
    return qr_result(*ops.unpack(P["linalg_qr"].bind(A, mode=mode), ops.qr_shapes(m, n, mode)))


def _symmetric(op, A, UPLO):
    if UPLO not in ("L", "U"):
        raise RuntimeError(f"Expected UPLO argument to be 'L' or 'U', but got {UPLO}")
    if isinstance(A, Tensor) and not A.dtype.is_floating_point:
        raise NotImplementedError(f"\"linalg_eigh_cpu\" not implemented for '{type_name(A.dtype)}'")
    check_matrices(op, A)
    return mT(A) if UPLO == "U" else A  # the upper triangle is the transpose's lower one


def eigh(A, UPLO="L"):
    A = _symmetric("linalg.eigh", A, UPLO)
    return eigh_result(*ops.unpack(P["linalg_eigh"].bind(A), ops.eigh_shapes(A.shape[-1])))


def eigvalsh(A, UPLO="L"):
    return P["linalg_eigvalsh"].bind(_symmetric("linalg.eigvalsh", A, UPLO))


def _no_driver(driver, op):
    if driver is not None:
        raise RuntimeError(f"{op}: keyword argument `driver=` is only supported on CUDA inputs with cuSOLVER backend.")


def svd(A, full_matrices=True, *, driver=None):
    _no_driver(driver, "torch.linalg.svd")
    check_matrices("linalg.svd", A, square=False)
    m, n = A.shape[-2:]
    packed = P["linalg_svd"].bind(A, full_matrices=bool(full_matrices))
    return svd_result(*ops.unpack(packed, ops.svd_shapes(m, n, bool(full_matrices))))


def svdvals(A, *, driver=None):
    _no_driver(driver, "torch.linalg.svdvals")
    check_matrices("linalg.svdvals", A, square=False)
    return P["linalg_svdvals"].bind(A)


def matrix_rank(A, tol=None, hermitian=False, *, atol=None, rtol=None):
    if not isinstance(A, Tensor) or not A.dtype.is_floating_point:
        raise RuntimeError("This function doesn't handle types other than float and double")
    check_matrices("linalg.matrix_rank", A, square=hermitian)
    if tol is not None:
        atol, rtol = tol, 0.0
    values = (M.abs(eigvalsh(A)) if hermitian else svdvals(A)).detach()
    if not values.shape[-1]:
        return Tensor._wrap(np.zeros(values.shape[:-1], np.int64))
    eps = float(np.finfo(A.dtype.np).eps) * max(A.shape[-2:])
    atol = 0.0 if atol is None else atol
    if rtol is None:  # torch's default: eps * max(m, n), or 0 where atol is positive
        rtol = M.where(M.gt(atol, 0), 0.0, eps) if isinstance(atol, Tensor) else (eps if atol <= 0 else 0.0)
    threshold = M.mul(R.amax(values, dim=-1), rtol)
    threshold = M.maximum(threshold, atol) if isinstance(atol, Tensor) else M.clamp_min(threshold, atol)
    return R.sum(M.gt(values, S.unsqueeze(threshold, -1)), -1)


def lu_factor_ex(A, *, pivot=True, check_errors=False):
    if not pivot:
        raise RuntimeError("linalg.lu_factor: LU without pivoting is not implemented on the CPU")
    if isinstance(A, Tensor) and A.ndim < 2:
        raise RuntimeError(f"torch.lu_factor: Expected tensor with 2 or more dimensions. Got size: {list(A.shape)} "
                           f"instead")
    check_matrices("linalg.lu_factor", A, square=False)
    m, n = A.shape[-2:]
    lu, _, pivots = ops.unpack(P["linalg_lu_factor"].bind(A), ops.lu_shapes(m, n))
    k = min(m, n)
    info = _first_flagged(M.eq(ops.diagonal(ops.narrow(ops.narrow(lu, -2, 0, k), -1, 0, k)), 0))
    if check_errors:
        _raise_if_failed("torch.linalg.lu_factor_ex", info, _zero_pivot, RuntimeError)
    return lu_factor_ex_result(lu, M.to_dtype(pivots, dtypes.int32), info)


def _zero_pivot(i):
    return (f"U[{i},{i}] is zero and using it on lu_solve would result in a division by zero. If you still want to "
            f"perform the factorization, consider calling linalg.lu(A, pivot) or linalg.lu_factor_ex(A, pivot)")


def lu_factor(A, *, pivot=True):
    lu, pivots, info = lu_factor_ex(A, pivot=pivot)
    _raise_if_failed("torch.linalg.lu_factor", info, _zero_pivot, RuntimeError)
    return lu_factor_result(lu, pivots)


def unpack_lu(lu):
    """The unit lower factor L (m x k) and the upper factor U (k x n) of a compact LU."""
    m, n = lu.shape[-2:]
    k = min(m, n)
    lower = M.add(S.tril(S.narrow(lu, -1, 0, k), -1), ops.eye(m, lu, columns=k))
    return lower, S.triu(S.narrow(lu, -2, 0, k))


def lu(A, *, pivot=True):
    if not pivot:
        raise RuntimeError("linalg.lu_factor: LU without pivoting is not implemented on the CPU")
    check_matrices("linalg.lu", A, square=False)
    m, n = A.shape[-2:]
    packed, perm, _ = ops.unpack(P["linalg_lu_factor"].bind(A), ops.lu_shapes(m, n))
    return lu_result(perm.detach(), *unpack_lu(packed))


def permutation(pivots, size, dtype):
    """The permutation matrix P (A = P L U) of LAPACK's pivots."""
    return P["linalg_lu_permutation"].bind(pivots, size=int(size), dtype=dtype.name)


def lu_solve(LU, pivots, B, *, left=True, adjoint=False):
    op = "linalg.lu_solve"
    check_matrices(op, LU, name="LU")
    if B.ndim < 2:
        raise RuntimeError(f"{op}: The input tensor B must have at least 2 dimensions.")
    check_same_dtype(op, LU, B, "LU", "B")
    if not left:  # X A = B is A^T X^T = B^T
        return mT(lu_solve(LU, pivots, mT(B), left=True, adjoint=not adjoint))
    if B.shape[-2] != LU.shape[-1]:
        raise RuntimeError(f"{op}: Incompatible shapes of A and B for the equation AX = B ({LU.shape[-2]}x"
                           f"{LU.shape[-1]} and {B.shape[-2]}x{B.shape[-1]})")
    perm = permutation(pivots, LU.shape[-2], LU.dtype)
    tri = P["linalg_solve_triangular"].bind  # each reads only its own triangle of LU
    if adjoint:  # A^T = U^T L^T P^T
        y = tri(mT(LU), B, upper=False, unitriangular=False)
        return P["matmul"].bind(perm, tri(mT(LU), y, upper=True, unitriangular=True))
    y = tri(LU, P["matmul"].bind(mT(perm), B), upper=False, unitriangular=True)
    return tri(LU, y, upper=True, unitriangular=False)


# ----------------------------------------------------------------------------- norms

def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    op = "linalg.vector_norm"
    if isinstance(ord, str):
        raise TypeError(f"linalg_vector_norm(): argument 'ord' must be Number, not str")
    check_float(op, x, low_precision=True)
    if dtype is not None:
        dtype = dtypes.as_dtype(dtype)
        if not dtype.is_floating_point:
            raise RuntimeError(f"{op}: dtype should be floating point or complex, but got {type_name(dtype)}")
        if dtypes.promote(x.dtype, dtype) is not dtype:
            raise RuntimeError(f"{op}: the dtype of the input ({type_name(x.dtype)}) should be convertible without "
                               f"narrowing to the specified dtype ({type_name(dtype)})")
    return R.norm(x, ord, dim, keepdim, dtype)


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    op = "linalg.matrix_norm"
    if A.ndim < 2:
        raise RuntimeError(f"{op}: The input tensor A must have at least 2 dimensions.")
    check_float(op, A, low_precision=ord not in ("nuc", 2, -2))  # (the spectral norms take an SVD)
    if dtype is not None:
        dtype = dtypes.as_dtype(dtype)
        if not dtype.is_floating_point:
            raise RuntimeError(f"{op}: dtype should be floating point or complex, but got {type_name(dtype)}")
        A = M.to_dtype(A, dtype)
    dim = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    if len(dim) != 2:
        raise RuntimeError(f"{op}: dim must be a 2-tuple. Got {' '.join(str(d) for d in dim)}")
    rows, cols = (d % A.ndim for d in dim)
    if rows == cols:
        raise RuntimeError(f"{op}: dims must be different. Got ({dim[0]}, {dim[1]})")
    if ord == "fro":
        return R.norm(A, 2, (rows, cols), keepdim)
    if ord not in ("nuc", 2, -2, 1, -1, math.inf, -math.inf):
        raise RuntimeError(f"{op}: Order {ord} not supported.")
    if ord in ("nuc", 2, -2):
        values = svdvals(S.movedim(A, (rows, cols), (-2, -1)))
        out = R.sum(values, -1) if ord == "nuc" else (R.amax if ord == 2 else R.amin)(values, dim=-1)
        for d in sorted((rows, cols)) if keepdim else ():
            out = S.unsqueeze(out, d)
        return out
    summed, other = (rows, cols) if ord in (1, -1) else (cols, rows)  # 1: column sums, inf: row sums
    extreme = R.amax if ord > 0 else R.amin
    out = extreme(R.sum(M.abs(A), summed, keepdim=True), dim=other, keepdim=True)
    return out if keepdim else S.squeeze(out, sorted((rows, cols)))


def norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    if isinstance(dim, int):
        dim = (dim,)
    if dim is not None and len(dim) not in (1, 2):
        raise RuntimeError(f"linalg.norm: If dim is specified, it must be of length 1 or 2. Got {list(dim)}")
    if dim is None and ord is not None and A.ndim not in (1, 2):
        raise RuntimeError(f"linalg.norm: If dim is not specified but ord is, the input must be 1D or 2D. Got "
                           f"{A.ndim}D.")
    as_matrix = isinstance(ord, str) or (dim is not None and len(dim) == 2) or (dim is None and ord is not None and
                                                                              A.ndim == 2)
    if as_matrix:
        return matrix_norm(A, "fro" if ord is None else ord, (-2, -1) if dim is None else dim, keepdim, dtype=dtype)
    return vector_norm(A, 2 if ord is None else ord, dim, keepdim, dtype=dtype)


# ----------------------------------------------------------------------------- products and the rest

def matmul(input, other):
    from .linalg import matmul as product
    return product(input, other)


def multi_dot(tensors):
    """The chain product in the cheapest order (dynamic programming over the split points)."""
    tensors = list(tensors)
    if len(tensors) < 2:
        raise RuntimeError(f"multi_dot(): expected at least 2 tensors but got {len(tensors)}")
    first, last = tensors[0], tensors[-1]
    for position, t in (("first", first), ("last", last)):
        if t.ndim not in (1, 2):
            raise RuntimeError(f"multi_dot(): the {position} tensor must be 1D or 2D but got {t.ndim}D")
    for i, t in enumerate(tensors[1:-1], 1):
        if t.ndim != 2:
            raise RuntimeError(f"multi_dot(): tensor {i} must be 2D but got {t.ndim}D")
    for i, t in enumerate(tensors):
        if t.dtype is not first.dtype:
            from .linalg import cpp_type_name
            raise RuntimeError(f"multi_dot(): all tensors must have be the same dtype but tensor 0 is "
                               f"{cpp_type_name(first.dtype)} and tensor {i} {cpp_type_name(t.dtype)}")
    mats = [S.unsqueeze(first, 0) if first.ndim == 1 else first] + tensors[1:-1] + \
        [S.unsqueeze(last, -1) if last.ndim == 1 else last]
    for i in range(len(mats) - 1):
        if mats[i].shape[1] != mats[i + 1].shape[0]:
            raise RuntimeError(f"multi_dot(): tensors {i} and {i + 1} with shapes {list(tensors[i].shape)} and "
                               f"{list(tensors[i + 1].shape)} cannot be multiplied")
    dims = [mats[0].shape[0]] + [t.shape[1] for t in mats]
    count = len(mats)
    cost = [[0] * count for _ in range(count)]
    split = [[0] * count for _ in range(count)]
    for length in range(1, count):
        for i in range(count - length):
            j = i + length
            cost[i][j], split[i][j] = min((cost[i][k] + cost[k + 1][j] + dims[i] * dims[k + 1] * dims[j + 1], k)
                                          for k in range(i, j))

    def product(i, j):
        return mats[i] if i == j else P["matmul"].bind(product(i, split[i][j]), product(split[i][j] + 1, j))
    out = product(0, count - 1)
    if first.ndim == 1:
        out = S.squeeze(out, 0)
    return S.squeeze(out, -1) if last.ndim == 1 else out


def cross_along(a, b, dim):
    """The cross product of 3-vectors along `dim` of two tensors of one shape."""
    a0, a1, a2 = S.unbind(a, dim)
    b0, b1, b2 = S.unbind(b, dim)
    return S.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], dim)


def cross(input, other, *, dim=-1):
    if input.ndim != other.ndim:
        raise RuntimeError("linalg.cross: inputs must have the same number of dimensions.")
    if input.shape[dim] != 3 or other.shape[dim] != 3:
        raise RuntimeError(f"linalg.cross: inputs dimension {dim} must have length 3. Got {input.shape[dim]} and "
                           f"{other.shape[dim]}")
    if input.dtype is not other.dtype:
        raise RuntimeError(f"expected scalar type {type_name(input.dtype)} but found {type_name(other.dtype)}")
    a, b = S.broadcast_tensors(input, other)
    return cross_along(a, b, dim)


def vecdot(x, y, *, dim=-1):
    check_float("linalg.vecdot", x, low_precision=True)
    check_same_dtype("linalg.vecdot", x, y, "x", "y")
    return R.sum(M.mul(x, y), dim)


def diagonal(A, *, offset=0, dim1=-2, dim2=-1):
    return S.diagonal(A, offset, dim1, dim2)


def vander(x, N=None):
    n = x.shape[-1] if x.ndim else 0
    N = n if N is None else N
    if x.ndim == 0 or N <= 1:
        raise RuntimeError("N must be greater than 1.")
    from .creation import ones_like
    ones = ones_like(S.unsqueeze(x, -1))
    powers = S.cat([ones, S.expand(S.unsqueeze(x, -1), tuple(x.shape) + (N - 1,))], -1)
    return R.cumprod(powers, -1)


def tensorinv(A, ind=2):
    if ind <= 0:
        raise RuntimeError(f"Expected a strictly positive integer for 'ind', but got {ind}")
    rows, cols = tuple(A.shape[:ind]), tuple(A.shape[ind:])
    size = int(np.prod(rows, dtype=np.int64))
    if size != int(np.prod(cols, dtype=np.int64)):
        raise RuntimeError(f"Expected self to satisfy the requirement prod(self.shape[ind:]) == "
                           f"prod(self.shape[:ind]), but got {int(np.prod(cols))} != {size}")
    return S.reshape(inv(S.reshape(A, (size, size))), cols + rows)


def tensorsolve(A, B, dims=None):
    if dims is not None:
        dims = [d % A.ndim for d in dims]
        A = S.movedim(A, dims, list(range(A.ndim - len(dims), A.ndim)))
    result = tuple(A.shape[B.ndim:])
    rows, cols = int(np.prod(A.shape[:B.ndim], dtype=np.int64)), int(np.prod(result, dtype=np.int64))
    if rows != cols:
        raise RuntimeError(f"Expected self to satisfy the requirement prod(self.shape[other.ndim:]) == "
                           f"prod(self.shape[:other.ndim]), but got {cols} != {rows}")
    return S.reshape(solve(S.reshape(A, (rows, cols)), S.reshape(B, (rows,))), result)


class linalg:
    """`ember.linalg`: torch.linalg's functions (see the module docstring)."""

    LinAlgError = LinAlgError


for _name in ("det slogdet inv inv_ex solve solve_ex solve_triangular lstsq cholesky cholesky_ex qr eigh eigvalsh "
              "svd svdvals pinv matrix_power matrix_exp matrix_norm norm vector_norm matrix_rank cond lu_factor "
              "lu_factor_ex lu lu_solve multi_dot cross vecdot diagonal vander tensorinv tensorsolve matmul").split():
    setattr(linalg, _name, staticmethod(globals()[_name]))
