"""Products of tensors: matmul (with PyTorch's 1-d rules), mm, bmm, mv, dot, outer, einsum,
cross, and the torch.* forms of linear algebra (det, inverse, svd, qr, lu, ...) with their
Tensor methods; `ember.linalg` itself lives in frontend/linalg_functions.py.

All products bind the one `matmul` contraction primitive (einsum lowers to permute, reshape
and matmul), so the compiler sees every product the same way. As in PyTorch, products do not
promote: operands of two dtypes (float32 @ float64, a float weight applied to int64 input)
raise an error naming both dtypes.
"""
import math
import os
import sys
import warnings
from collections import namedtuple

import numpy as np

from ember.ops import PRIMITIVES as P
from ember.ops.registry import OpError, describe
from .dispatch import current_module, spec_of
from . import math_ops as M
from .math_ops import mul, promote_operands
from .reductions import sum as reduce_sum
from .shape_ops import unsqueeze, squeeze, reshape, permute, _slice_axis
from .tensor import Tensor
from . import linalg_functions as LF
from .linalg_functions import linalg  # noqa: F401  (ember.linalg)


# how PyTorch's messages spell dtypes: its C++ type names ("float != double") and its
# ScalarType names ("got Long and Float")
_CPP_NAMES = {"float32": "float", "float64": "double", "float16": "c10::Half", "int64": "long int",
              "int32": "int", "int16": "short int", "int8": "signed char", "uint8": "unsigned char",
              "bool": "bool", "bfloat16": "c10::BFloat16"}
_SCALAR_TYPE_NAMES = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long",
                      "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool",
                      "bfloat16": "BFloat16"}


def cpp_type_name(dtype):
    """float32 -> 'float', as in PyTorch's "expected m1 and m2 to have the same dtype"."""
    return _CPP_NAMES[dtype.name]


def scalar_type_name(dtype):
    """int64 -> 'Long', as in PyTorch's "mat1 and mat2 must have the same dtype"."""
    return _SCALAR_TYPE_NAMES[dtype.name]


def _where(op):
    module = current_module()
    return f"{op} ({module})" if module else op


def check_product_operands(op, a, b):
    """Tensors of one dtype, and not bool (PyTorch's matmul neither promotes nor takes bools)."""
    for position, (name, x) in enumerate((("input", a), ("other", b)), 1):
        if not isinstance(x, Tensor):
            raise TypeError(f"{op}(): argument '{name}' (position {position}) must be Tensor, not "
                            f"{type(x).__name__}")
    if a._data.dtype != b._data.dtype:  # (numpy's dtypes: the check runs on every product)
        raise RuntimeError(f"{_where(op)}: expected m1 and m2 to have the same dtype, but got: "
                           f"{cpp_type_name(a.dtype)} != {cpp_type_name(b.dtype)} "
                           f"({describe(spec_of(a))} and {describe(spec_of(b))})")
    if a._data.dtype.kind == "b":
        raise NotImplementedError(f"{_where(op)}: not implemented for 'Bool' tensors "
                                  f"({describe(spec_of(a))} and {describe(spec_of(b))})")


def matmul(input, other):
    check_product_operands("matmul", input, other)
    a, b = input, other
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(f"matmul: both arguments need at least 1 dimension, got {a.ndim}D and {b.ndim}D tensors")
    inner_a, inner_b = a._data.shape[-1], b._data.shape[0] if b.ndim == 1 else b._data.shape[-2]
    if inner_a != inner_b:  # checked here so the error names the user's shapes, not unsqueezed ones
        raise OpError("matmul", f"shapes {describe(spec_of(a))} and {describe(spec_of(b))} cannot be "
                                f"multiplied ({inner_a} != {inner_b})").in_module(current_module())
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = unsqueeze(a, 0)
    if squeeze_b:
        b = unsqueeze(b, -1)
    out = P["matmul"].bind(a, b)
    if squeeze_a:
        out = squeeze(out, -2)
    if squeeze_b:
        out = squeeze(out, -1)
    return out


def _need_dims(op, tensor, n, which):
    if tensor.ndim != n:
        where = f"{op} ({current_module()})" if current_module() else op
        raise RuntimeError(f"{where}: {which} must be a {n}D tensor, got shape {list(tensor.shape)}")


def mm(input, mat2):
    check_product_operands("mm", input, mat2)
    _need_dims("mm", input, 2, "self")
    _need_dims("mm", mat2, 2, "mat2")
    return matmul(input, mat2)


def bmm(input, mat2):
    check_product_operands("bmm", input, mat2)
    _need_dims("bmm", input, 3, "batch1")
    _need_dims("bmm", mat2, 3, "batch2")
    if input.shape[0] != mat2.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {list(input.shape)} and {list(mat2.shape)}")
    return matmul(input, mat2)


def mv(input, vec):
    check_product_operands("mv", input, vec)
    _need_dims("mv", input, 2, "self")
    _need_dims("mv", vec, 1, "vec")
    return matmul(input, vec)


def dot(input, other):
    check_product_operands("dot", input, other)
    _need_dims("dot", input, 1, "self")
    _need_dims("dot", other, 1, "other")
    return matmul(input, other)


inner = dot


def outer(input, vec2):
    return mul(unsqueeze(input, 1), unsqueeze(vec2, 0))


ger = outer


def addmm(input, mat1, mat2, beta=1, alpha=1):
    product = mm(mat1, mat2)
    if isinstance(input, Tensor) and input.dtype is not product.dtype:
        raise RuntimeError(f"{_where('addmm')}: self and mat2 must have the same dtype, but got "
                           f"{scalar_type_name(input.dtype)} and {scalar_type_name(mat2.dtype)} "
                           f"(self {describe(spec_of(input))}, mat2 {describe(spec_of(mat2))})")
    return _scaled_sum(input, product, beta, alpha)


def _scaled_sum(input, product, beta, alpha):
    """beta * input + alpha * product; with beta == 0 the input is ignored (its nan and inf
    are not propagated), as torch documents for addmm, baddbmm and addbmm."""
    if alpha != 1:
        product = mul(product, alpha)
    if beta == 0:
        if isinstance(input, Tensor) and input.requires_grad:  # a zero gradient edge, as torch: nan not read
            from .math_ops import where
            from .creation import tensor
            return product + where(tensor(False), input, 0.0)
        return product
    return product + (input if beta == 1 else mul(input, beta))


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """beta * input + alpha * (batch1 @ batch2) over a batch of matrices."""
    return _scaled_sum(input, bmm(batch1, batch2), beta, alpha)


def addbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """beta * input + alpha * (the sum over the batch of batch1[i] @ batch2[i])."""
    from .reductions import sum as reduce_sum
    return _scaled_sum(input, reduce_sum(bmm(batch1, batch2), dim=0), beta, alpha)


def einsum(equation, *operands):
    """Lowered to permute/reshape/slice and one matmul per pair of operands."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    for i, op in enumerate(operands):
        if not isinstance(op, Tensor):
            raise TypeError(f"einsum(): operand {i} must be a Tensor, got {type(op).__name__}")
        if op.dtype is not operands[0].dtype:
            raise RuntimeError(f"{_where('einsum')}: expected scalar type {scalar_type_name(operands[0].dtype)} but "
                               f"found {scalar_type_name(op.dtype)}: operands must have one dtype, got operand 0 "
                               f"{describe(spec_of(operands[0]))} and operand {i} {describe(spec_of(op))}")
    operands = list(operands)
    terms, output = _parse_einsum(equation.replace(" ", ""), operands)
    for i, (term, op) in enumerate(zip(terms, operands)):
        terms[i], operands[i] = _take_diagonals(term, op)
    term, value = terms[0], operands[0]
    for i in range(1, len(terms)):
        needed_later = output + "".join(terms[i + 1:])
        term, value = _contract_pair(term, value, terms[i], operands[i], needed_later)
    dropped = tuple(i for i, c in enumerate(term) if c not in output)
    if dropped:
        value = reduce_sum(value, dropped)
        term = "".join(c for c in term if c in output)
    return permute(value, [term.index(c) for c in output]) if term != output else value


def _parse_einsum(equation, operands):
    """Operand terms and the output term, with '...' spelled out as unused capital letters
    (aligned from the right, size-1 dims broadcast) and an implicit output made explicit."""
    from .shape_ops import expand
    inputs, arrow, output = equation.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(operands):
        raise RuntimeError(f"einsum(): {len(terms)} operand subscripts for {len(operands)} operands")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in equation]
    counts = [op.ndim - len(t.replace("...", "")) if "..." in t else 0 for t, op in zip(terms, operands)]
    broadcast = "".join(spare[:max(counts, default=0)])
    terms = [t.replace("...", broadcast[len(broadcast) - k:]) for t, k in zip(terms, counts)]
    for given, term, op in zip(inputs.split(","), terms, operands):
        if len(term) != op.ndim or not term.isalpha() and term:
            raise RuntimeError(f"einsum(): subscript '{given}' does not match an operand of shape "
                               f"{list(op.shape)}")
    if arrow:
        output = output.replace("...", broadcast)
    else:  # the letters used once, in alphabetical order, after the broadcast dims
        letters = "".join(terms)
        output = broadcast + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in broadcast))
    seen = {}
    for i, (term, op) in enumerate(zip(terms, operands)):
        for c, d in zip(term, op.shape):
            if c not in broadcast and seen.setdefault(c, (d, i))[0] != d:
                raise RuntimeError(f"einsum(): subscript '{c}' has size {seen[c][0]} in operand {seen[c][1]} "
                                   f"{list(operands[seen[c][1]].shape)} but size {d} in operand {i} {list(op.shape)}")
    sizes = {c: d for t, op in zip(terms, operands) for c, d in zip(t, op.shape) if c in broadcast and d != 1}
    for i, (term, op) in enumerate(zip(terms, operands)):
        target = tuple(sizes.get(c, d) if c in broadcast else d for c, d in zip(term, op.shape))
        if target != tuple(op.shape):
            operands[i] = expand(op, target)
    return terms, output


def _take_diagonals(term, value):
    """A letter repeated within one operand ('ii->i', 'ii->') takes the diagonal: the
    repeated dims are moved last, flattened, and sliced with a stride of n^(k-1)+...+n+1."""
    while len(set(term)) != len(term):
        letter = next(c for c in term if term.count(c) > 1)
        dims = [i for i, c in enumerate(term) if c == letter]
        n = value.shape[dims[0]]  # _parse_einsum checked the repeated dims agree
        rest = [i for i in range(len(term)) if i not in dims]
        value = reshape(permute(value, rest + dims), tuple(value.shape[i] for i in rest) + (n ** len(dims),))
        stride = sum(n ** k for k in range(len(dims)))
        value = _slice_axis(value, value.ndim - 1, 0, n ** len(dims), stride) if n > 1 else value
        term = "".join(term[i] for i in rest) + letter
    return term, value


def _contract_pair(term_a, a, term_b, b, needed_later):
    """Contract two operands: shared letters not needed later are summed by a batched matmul."""
    sizes = {c: d for t, v in ((term_a, a), (term_b, b)) for c, d in zip(t, v.shape)}
    batch = [c for c in term_a if c in term_b and c in needed_later]
    contract = [c for c in term_a if c in term_b and c not in needed_later]
    only_a = [c for c in term_a if c not in term_b]
    only_b = [c for c in term_b if c not in term_a]

    def arrange(term, value, middle, last):
        value = permute(value, [term.index(c) for c in batch + middle + last])
        return reshape(value, tuple(sizes[c] for c in batch) + (_prod(sizes, middle), _prod(sizes, last)))

    product = P["matmul"].bind(arrange(term_a, a, only_a, contract), arrange(term_b, b, contract, only_b))
    value = reshape(product, tuple(sizes[c] for c in batch + only_a + only_b))
    return "".join(batch + only_a + only_b), value


def _prod(sizes, letters):
    n = 1
    for c in letters:
        n *= sizes[c]
    return n


def cross(input, other, dim=None):
    """torch.cross: without dim, along the first dim of size 3 (deprecated, as torch warns)."""
    a, b = promote_operands((input, other))
    if dim is None:
        _deprecated("Using torch.cross without specifying the dim arg is deprecated.\nPlease either pass the dim "
                    "explicitly or simply use torch.linalg.cross.\nThe default value of dim will change to agree with "
                    "that of linalg.cross in a future release.")
        dim = next(i for i, d in enumerate(a.shape) if d == 3)
    return LF.cross_along(a, b, dim)


# ----------------------------------------------------------------------------- torch.* linear algebra
# torch's older spellings of ember.linalg's functions; the deprecated ones warn as torch does

slogdet_result = namedtuple("slogdet", "sign logabsdet")
qr_result = namedtuple("qr", "Q R")
svd_result = namedtuple("svd", "U S V")
triangular_solve_result = namedtuple("triangular_solve", "solution cloned_coefficient")
lu_with_info_result = namedtuple("_lu_with_info", "LU pivots info")
lu_unpack_result = namedtuple("lu_unpack", "P L U")

det = LF.det
inverse = LF.inv
matrix_power = LF.matrix_power
matrix_exp = LF.matrix_exp


def logdet(input):
    """log(det): nan for a negative determinant, -inf for a singular matrix (as torch)."""
    LF.check_matrices("logdet", input)
    sign, logabsdet = LF.slogdet(input)
    return M.where(M.lt(sign, 0), math.nan, logabsdet)


def slogdet(input):
    return slogdet_result(*LF.slogdet(input))


def pinverse(input, rcond=1e-15):
    return LF.pinv(input, rtol=rcond)


_FRONTEND_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _deprecated(message):
    """torch's deprecation warning, at the user's line (the first frame outside the frontend: the
    out= wrapper adds one)."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_FRONTEND_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def cholesky(input, upper=False):
    _deprecated("torch.cholesky is deprecated in favor of torch.linalg.cholesky and will be removed in a future "
                "PyTorch release.\nL = torch.cholesky(A)\nshould be replaced with\nL = torch.linalg.cholesky(A)\nand\n"
                "U = torch.cholesky(A, upper=True)\nshould be replaced with\nU = torch.linalg.cholesky(A).mH\nThis "
                "transform will produce equivalent results for all valid (symmetric positive definite) inputs.")
    try:
        return LF.cholesky(input, upper=upper)
    except LF.LinAlgError as error:
        raise LF.LinAlgError("cholesky", error.detail) from None
    except RuntimeError as error:
        raise RuntimeError(str(error).replace("linalg.cholesky:", "cholesky:", 1)) from None


def _gram(L, upper):
    """L L^T (U^T U when upper): the matrix whose Cholesky factor L is. torch's gradients for
    cholesky_solve and cholesky_inverse are those of this product, on all of L."""
    return matmul(LF.mT(L), L) if upper else matmul(L, LF.mT(L))


def cholesky_solve(B, L, upper=False):
    if B.ndim < 2:
        raise RuntimeError(f"b should have at least 2 dimensions, but has {B.ndim} dimensions instead")
    if L.ndim < 2:
        raise RuntimeError(f"u should have at least 2 dimensions, but has {L.ndim} dimensions instead")
    if B.dtype is not L.dtype:
        raise RuntimeError(f"Expected b and A to have the same dtype, but found b of type {scalar_type_name(B.dtype)} "
                           f"and A of type {scalar_type_name(L.dtype)} instead.")
    if L.shape[-1] != L.shape[-2] or B.shape[-2] != L.shape[-1]:
        raise RuntimeError(f"Incompatible matrix sizes for cholesky_solve: each A matrix is {L.shape[-2]} by "
                           f"{L.shape[-1]} but each b matrix is {B.shape[-2]} by {B.shape[-1]}")
    LF.check_float("cholesky_solve", L)
    return P["linalg_solve"].bind(_gram(L, upper), B, check_errors=True)


def cholesky_inverse(L, upper=False):
    if not L.dtype.is_floating_point:
        raise NotImplementedError(f"\"cholesky_inverse_out_cpu\" not implemented for '{scalar_type_name(L.dtype)}'")
    LF.check_matrices("cholesky_inverse", L)
    return P["linalg_inv"].bind(_gram(L, upper), check_errors=True)


def qr(input, some=True):
    return qr_result(*LF.qr(input, "reduced" if some else "complete"))


def svd(input, some=True, compute_uv=True):
    """The legacy SVD: U, S and V (not V^H); without compute_uv, U and V are zeros of (m, m) and (n, n)."""
    if not compute_uv:
        LF.check_matrices("linalg.svd", input, square=False)
        m, n = input.shape[-2:]
        batch = tuple(input.shape[:-2])
        zeros = (Tensor._wrap(np.zeros(batch + (k, k), input.dtype.np)) for k in (m, n))
        U, V = zeros
        return svd_result(U, LF.svdvals(input), V)
    U, S, Vh = LF.svd(input, full_matrices=not some)
    return svd_result(U, S, LF.mT(Vh))


def triangular_solve(b, A, upper=True, transpose=False, unitriangular=False):
    """A^-1 b (A^-T b when transpose) for triangular A, and a copy of A (broadcast as b's batch)."""
    _deprecated("torch.triangular_solve is deprecated in favor of torch.linalg.solve_triangularand will be removed "
                "in a future PyTorch release.\ntorch.linalg.solve_triangular has its arguments reversed and does not "
                "return a copy of one of the inputs.\nX = torch.triangular_solve(B, A).solution\nshould be replaced "
                "with\nX = torch.linalg.solve_triangular(A, B).")
    coefficients = LF.mT(A) if transpose else A
    solution = LF.solve_triangular(coefficients, b, upper=upper != bool(transpose), unitriangular=unitriangular)
    batch = tuple(solution.shape[:-2])
    return triangular_solve_result(solution, M.clone(A.expand(*batch, *A.shape[-2:])))


def chain_matmul(*matrices):
    _deprecated("torch.chain_matmul is deprecated and will be removed in a future PyTorch release. Use "
                "torch.linalg.multi_dot instead, which accepts a list of two or more tensors rather than multiple "
                "parameters.")
    if not matrices:
        raise RuntimeError("chain_matmul(): Expected one or more matrices")
    for m in matrices:
        if m.ndim != 2:
            raise RuntimeError(f"Tensor dimension is {m.ndim}, expected 2 instead.")
    return M.clone(matrices[0]) if len(matrices) == 1 else LF.multi_dot(matrices)


def frobenius_norm(input, dim, keepdim=False):
    _deprecated("at::frobenius_norm is deprecated and it is just left for JIT compatibility. It will be removed in a "
                "future PyTorch release. Please use `linalg.vector_norm(A, 2., dim, keepdim)` instead")
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    if len(dims) > 2:
        raise RuntimeError(f"Expected at most 2 dimensions, but got {len(dims)} dimensions instead.")
    return LF.vector_norm(input, 2, dims, keepdim)


def nuclear_norm(input, dim=None, keepdim=False):
    """torch.nuclear_norm(input, keepdim=False) or (input, dim, keepdim=False)."""
    _deprecated("at::nuclear_norm is deprecated and it is just left for JIT compatibility. It will be removed in a "
                "future PyTorch release. Please use `linalg.matrix_norm(A, 'nuc', dim, keepdim)` instead")
    if isinstance(dim, bool):
        dim, keepdim = None, dim
    return LF.matrix_norm(input, "nuc", (-2, -1) if dim is None else dim, keepdim)


def lu(A, pivot=True, get_infos=False):
    _deprecated("torch.lu is deprecated in favor of torch.linalg.lu_factor / torch.linalg.lu_factor_ex and will be "
                "removed in a future PyTorch release.\nLU, pivots = torch.lu(A, compute_pivots)\nshould be replaced "
                "with\nLU, pivots = torch.linalg.lu_factor(A, compute_pivots)\nand\nLU, pivots, info = torch.lu(A, "
                "compute_pivots, get_infos=True)\nshould be replaced with\nLU, pivots, info = "
                "torch.linalg.lu_factor_ex(A, compute_pivots)")
    factors = LF.lu_factor_ex(A, pivot=pivot)
    return lu_with_info_result(*factors) if get_infos else (factors.LU, factors.pivots)


def lu_solve(b, LU_data, LU_pivots):
    return LF.lu_solve(LU_data, LU_pivots, b)


def lu_unpack(LU_data, LU_pivots, unpack_data=True, unpack_pivots=True):
    if LU_pivots.dtype.name != "int32":
        raise RuntimeError("torch.lu_unpack: LU_pivots is expected to be a contiguous tensor of torch.int32 dtype.\n"
                           "Note: this function is intended to be used with the output produced by "
                           "torch.linalg.lu_factor")
    if unpack_pivots and bool(M.logical_or(M.lt(LU_pivots, 1), M.gt(LU_pivots, LU_data.shape[-2])).any()):
        raise RuntimeError("pivots passed to lu_unpack must be between 1 and LU.size(-2) inclusive.Did you properly "
                           "pass the result of lu_factor?")
    empty = Tensor._wrap(np.zeros((0,), LU_data.dtype.np))
    L, U = LF.unpack_lu(LU_data) if unpack_data else (empty, empty)
    perm = LF.permutation(LU_pivots, LU_data.shape[-2], LU_data.dtype) if unpack_pivots else empty
    return lu_unpack_result(perm, L, U)


# functions torch 1.9 removed: calling them raises torch's message saying what replaces them
_REMOVED = {
    "solve": "`torch.solve` is deprecated in favor of `torch.linalg.solve`. `torch.linalg.solve` has its arguments "
             "reversed and does not return the LU factorization.\n\nTo get the LU factorization see `torch.lu`, which "
             "can be used with `torch.lu_solve` or `torch.lu_unpack`.\nX = torch.solve(B, A).solution should be "
             "replaced with:\nX = torch.linalg.solve(A, B)",
    "lstsq": "`torch.lstsq` is deprecated in favor of `torch.linalg.lstsq`.\n`torch.linalg.lstsq` has reversed "
             "arguments and does not return the QR decomposition in the returned tuple (although it returns other "
             "information about the problem).\n\nTo get the QR decomposition consider using `torch.linalg.qr`.\n\nThe "
             "returned solution in `torch.lstsq` stored the residuals of the solution in the last m - n columns of the "
             "returned value whenever m > n. In torch.linalg.lstsq, the residuals are in the field 'residuals' of the "
             "returned named tuple.\n\nThe unpacking of the solution, as in\nX, _ = torch.lstsq(B, A).solution[:A.size("
             "1)]\nshould be replaced with:\nX = torch.linalg.lstsq(A, B).solution",
    "symeig": "The default behavior has changed from using the upper triangular portion of the matrix by default "
              "to using the lower triangular portion.\n\nL, _ = torch.symeig(A, upper=upper) should be replaced "
              "with:\nL = torch.linalg.eigvalsh(A, UPLO='U' if upper else 'L')\n\nand\n\nL, V = torch.symeig(A, "
              "eigenvectors=True) should be replaced with:\nL, V = torch.linalg.eigh(A, UPLO='U' if upper else 'L')",
    "eig": "`torch.linalg.eig` returns complex tensors of dtype `cfloat` or `cdouble` rather than real tensors "
           "mimicking complex tensors.\n\nL, _ = torch.eig(A) should be replaced with:\nL_complex = "
           "torch.linalg.eigvals(A)\n\nand\n\nL, V = torch.eig(A, eigenvectors=True) should be replaced with:\n"
           "L_complex, V_complex = torch.linalg.eig(A)",
    "matrix_rank": "\nPlease use the `torch.linalg.matrix_rank` function instead. The parameter 'symmetric' was "
                   "renamed in `torch.linalg.matrix_rank()` to 'hermitian'.",
}


def _removed(name):
    def function(*args, **kwargs):
        separator = "" if _REMOVED[name].startswith("\n") else " "
        raise RuntimeError(f"This function was deprecated since version 1.9 and is now removed.{separator}"
                           f"{_REMOVED[name]}")
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"torch.{name}: removed in torch 1.9; raises torch's message naming its replacement."
    return function


solve, lstsq, symeig, eig, matrix_rank = (_removed(name) for name in ("solve", "lstsq", "symeig", "eig", "matrix_rank"))


# Tensor methods of these (frontend/tensor_methods.py installs them)
TENSOR_METHODS = {
    "det": det, "logdet": logdet, "slogdet": slogdet, "inverse": inverse, "pinverse": pinverse,
    "matrix_power": matrix_power, "matrix_exp": matrix_exp, "cholesky": cholesky, "cholesky_solve": cholesky_solve,
    "cholesky_inverse": cholesky_inverse, "qr": qr, "svd": svd, "triangular_solve": triangular_solve,
    "lu": lu, "lu_solve": lu_solve, "solve": solve, "lstsq": lstsq, "symeig": symeig, "eig": eig,
}
