"""More of torch's array functions: nan-ignoring reductions, logcumsumexp, diff, kron, addr/addmv,
trapezoid rules, rot90, tensor_split and the h/v/d split and stack families, take, ravel.

Each is composed from shape_ops, reductions, linalg and math_ops, so eager autograd and
ember.compile handle them without new primitives.
"""
import numpy as np

from ember import dtypes
from .low_precision import computes_in_float32
from . import math_ops as M, shape_ops as S, reductions as R, linalg as L
from .math_ops import where
from .tensor import Tensor, _dim


# ----------------------------------------------------------------------------- reductions

def nansum(input, dim=None, keepdim=False, *, dtype=None):
    """sum with every nan counted as 0."""
    x = where(M.isnan(input), 0.0, input) if input.is_floating_point() else input
    return R.sum(x, dim, keepdim, dtype=dtype)


def nanmean(input, dim=None, keepdim=False, *, dtype=None):
    """The mean of the non-nan elements (nan where there are none)."""
    if dtype is not None:
        input = M.to_dtype(input, dtype)
    if not input.is_floating_point():
        raise RuntimeError("nanmean(): expected input to have floating point or complex dtype but got "
                           f"{L.scalar_type_name(input.dtype)}")
    present = M.logical_not(M.isnan(input))
    total = R.sum(where(present, input, 0.0), dim, keepdim)
    return M.div(total, R.sum(present, dim, keepdim))


@computes_in_float32
def logcumsumexp(input, dim):
    """log(cumsum(exp(x))) as a prefix scan of logaddexp (log2 n steps, as cumprod's): exact
    for any spread of values, where one shift by the maximum would underflow the small ones."""
    x = input if input.is_floating_point() else M.to_dtype(input, dtypes.defaults.floating)
    if x.ndim == 0:
        return M.clone(x)
    axis = _dim(dim, x.ndim, "logcumsumexp")
    size, step, result = x.shape[axis], 1, x
    while step < size:
        head = S._slice_axis(result, axis, 0, step)
        tail = M.logaddexp(S._slice_axis(result, axis, step, size), S._slice_axis(result, axis, 0, size - step))
        result = S.cat([head, tail], dim=axis)
        step *= 2
    return result


# ----------------------------------------------------------------------------- differences and integrals

def diff(input, n=1, dim=-1, prepend=None, append=None):
    """The n-th forward difference along dim, after concatenating prepend and append (bool
    tensors differ by xor, as torch's)."""
    if input.ndim == 0:
        raise RuntimeError("diff expects input to be at least one-dimensional")
    axis = _dim(dim, input.ndim, "diff")
    pieces = [t for t in (prepend, input, append) if t is not None]
    x = S.cat(pieces, dim=axis) if len(pieces) > 1 else input
    for _ in range(n):
        size = x.shape[axis]
        if size == 0:
            break
        later, earlier = S._slice_axis(x, axis, 1, size), S._slice_axis(x, axis, 0, size - 1)
        x = M.logical_xor(later, earlier) if x.dtype is dtypes.bool_ else M.sub(later, earlier)
    return x


def _trapezoid_pieces(y, x, dx, dim):
    axis = _dim(dim, y.ndim, "trapezoid")
    size = y.shape[axis]
    halves = M.mul(M.add(S._slice_axis(y, axis, 1, size), S._slice_axis(y, axis, 0, size - 1)), 0.5)
    if x is None:
        return M.mul(halves, 1.0 if dx is None else dx), axis
    if x.ndim == 1:
        if x.shape[0] != size:
            raise RuntimeError("trapezoid: There must be one `x` value for each sample point")
        shape = [1] * y.ndim
        shape[axis] = size - 1
        return M.mul(halves, S.reshape(diff(x), tuple(shape))), axis
    return M.mul(halves, diff(x, dim=dim)), axis


def trapezoid(y, x=None, *, dx=None, dim=-1):
    """The trapezoid rule along dim, with sample points x (a 1-d tensor or one like y) or a
    constant spacing dx (default 1)."""
    if x is not None and not isinstance(x, Tensor):
        x, dx = None, x  # trapezoid(y, 0.5): a number is the spacing
    pieces, axis = _trapezoid_pieces(y, x, dx, dim)
    return R.sum(pieces, axis) if y.is_floating_point() else R.sum(M.to_dtype(pieces, dtypes.defaults.floating), axis)


def trapz(y, x=None, *, dx=None, dim=-1):
    return trapezoid(y, x, dx=dx, dim=dim)


def cumulative_trapezoid(y, x=None, *, dx=None, dim=-1):
    """The running trapezoid rule: one value per interval."""
    if x is not None and not isinstance(x, Tensor):
        x, dx = None, x
    pieces, axis = _trapezoid_pieces(y, x, dx, dim)
    return R.cumsum(pieces, axis)


# ----------------------------------------------------------------------------- products

def kron(input, other):
    """The Kronecker product: element (i, j) of input scales a copy of other at block (i, j)."""
    ndim = max(input.ndim, other.ndim)
    a_shape = (1,) * (ndim - input.ndim) + tuple(input.shape)
    b_shape = (1,) * (ndim - other.ndim) + tuple(other.shape)
    a = S.reshape(input, tuple(v for d in a_shape for v in (d, 1)))
    b = S.reshape(other, tuple(v for d in b_shape for v in (1, d)))
    return S.reshape(M.mul(a, b), tuple(p * q for p, q in zip(a_shape, b_shape)))


def vdot(input, other):
    """The dot product of two 1-d tensors (conjugating the first, a no-op for real tensors)."""
    return L.dot(input, other)


def addr(input, vec1, vec2, *, beta=1, alpha=1):
    """beta * input + alpha * outer(vec1, vec2); beta == 0 ignores input (its nan too)."""
    if vec1.ndim != 1 or vec2.ndim != 1:
        raise RuntimeError(f"addr: Expected 1-D argument vec1, but got {vec1.ndim}-D" if vec1.ndim != 1 else
                           f"addr: Expected 1-D argument vec2, but got {vec2.ndim}-D")
    return L._scaled_sum(input, L.outer(vec1, vec2), beta, alpha)


def addmv(input, mat, vec, *, beta=1, alpha=1):
    """beta * input + alpha * (mat @ vec); beta == 0 ignores input (its nan too)."""
    return L._scaled_sum(input, L.mv(mat, vec), beta, alpha)


# ----------------------------------------------------------------------------- shapes

def rot90(input, k=1, dims=(0, 1)):
    """Rotate by 90 degrees k times in the plane of dims, from the first axis towards the second."""
    dims = tuple(dims)
    if len(dims) != 2:
        raise RuntimeError(f"expected total rotation dims == 2, but got dims = {len(dims)}")
    if input.ndim < 2:
        raise RuntimeError(f"expected total dims >= 2, but got total dims = {input.ndim}")
    a, b = _dim(dims[0], input.ndim, "rot90"), _dim(dims[1], input.ndim, "rot90")
    if a == b:
        raise RuntimeError(f"expected rotation dims to be different, but got dim0 = {a} and dim1 = {b}")
    k %= 4
    if k == 1:
        return S.transpose(S.flip(input, (b,)), a, b)
    if k == 2:
        return S.flip(input, (a, b))
    if k == 3:
        return S.flip(S.transpose(input, a, b), (b,))
    return M.clone(input)


def tensor_split(input, indices_or_sections, dim=0):
    """Views split at the given indices, or into n pieces whose sizes differ by at most one
    (the first size % n pieces one longer)."""
    axis = _dim(dim, input.ndim, "tensor_split")
    size = input.shape[axis]
    if isinstance(indices_or_sections, Tensor):
        if indices_or_sections.ndim > 1:
            raise RuntimeError("tensor_split expected tensor_indices_or_sections to be a zero-dimensional "
                               f"or one-dimensional tensor, but got a tensor with {indices_or_sections.ndim} dims")
        indices_or_sections = indices_or_sections.tolist()
    if isinstance(indices_or_sections, int):
        n = indices_or_sections
        if n <= 0:
            raise RuntimeError(f"number of sections must be larger than 0, got {n}")
        small, extra = divmod(size, n)
        bounds = np.cumsum([0] + [small + (i < extra) for i in range(n)])
    else:
        bounds = [0, *indices_or_sections, size]
    pieces = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        lo, hi = min(max(int(lo), 0), size), min(max(int(hi), 0), size)
        pieces.append(S._slice_axis(input, axis, lo, max(lo, hi)))
    return tuple(pieces)


def _split_family(name, min_ndim, axis):
    def split(input, indices_or_sections):
        if input.ndim < min_ndim:
            raise RuntimeError(f"torch.{name} requires a tensor with at least {min_ndim} dimension, but got a tensor "
                               f"with {input.ndim} dimensions!")
        dim = 0 if name == "hsplit" and input.ndim == 1 else axis
        if isinstance(indices_or_sections, int) and input.shape[dim] % indices_or_sections:
            raise RuntimeError(f"torch.{name} attempted to split along dimension {dim}, but the size of the "
                               f"dimension {input.shape[dim]} is not divisible by the split_size "
                               f"{indices_or_sections}!")
        return tensor_split(input, indices_or_sections, dim)
    split.__name__ = name
    return split


hsplit, vsplit, dsplit = _split_family("hsplit", 1, 1), _split_family("vsplit", 2, 0), _split_family("dsplit", 3, 2)


def at_least(name, tensors, lift):
    """torch.atleast_Nd's calling conventions: one tensor gives one tensor; several tensors, or
    one list or tuple of them (of any length), give a tuple."""
    if len(tensors) == 1 and isinstance(tensors[0], Tensor):
        return lift(tensors[0])
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    elif len(tensors) == 1:
        kind = type(tensors[0]).__name__
        raise TypeError(f"{name}() received an invalid combination of arguments - got ({kind}), but expected one "
                        f"of:\n * (Tensor input)\n      didn't match because some of the arguments have invalid "
                        f"types: (!{kind}!)\n * (tuple of Tensors tensors)\n      didn't match because some of "
                        f"the arguments have invalid types: (!{kind}!)\n")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"expected Tensor as element {i} in argument 0, but got {type(t).__name__}")
    return tuple(lift(t) for t in tensors)


def atleast_3d(*tensors):
    """Each tensor viewed with at least three dims: () -> (1,1,1), (n,) -> (1,n,1), (m,n) -> (m,n,1)."""
    def lift(t):
        if t.ndim == 0:
            return S.reshape(t, (1, 1, 1))
        if t.ndim == 1:
            return S.reshape(t, (1, t.shape[0], 1))
        if t.ndim == 2:
            return S.unsqueeze(t, -1)
        return t
    return at_least("atleast_3d", tensors, lift)


def dstack(tensors):
    return S.cat(list(atleast_3d(tuple(tensors))), dim=2)


def column_stack(tensors):
    return S.hstack([S.reshape(t, (t.numel(), 1)) if t.ndim <= 1 else t for t in tensors])


def row_stack(tensors):
    return S.vstack(tensors)


def moveaxis(input, source, destination):
    return S.movedim(input, source, destination)


def ravel(input):
    return S.reshape(input, (input.numel(),))


def take(input, index):
    """input flattened, read at index (negative indices count from the end); index's shape."""
    flat = ravel(input)
    n = flat.shape[0]
    values = index.tolist() if index.ndim else [index.item()]
    bad = [v for v in np.ravel(values) if not -n <= v < n]
    if bad:
        raise IndexError(f"out of range: tried to access index {bad[0]} on a tensor of {n} elements.")
    wrapped = where(M.lt(index, 0), M.add(index, n), index)
    return S.reshape(S.index_select(flat, 0, ravel(wrapped)), tuple(index.shape))


def diagflat(input, offset=0):
    """input flattened onto the offset-th diagonal of a square matrix."""
    return S.diag(ravel(input), offset)


def block_diag(*tensors):
    """The tensors (0-d, 1-d as a row, or 2-d) down the diagonal of one matrix, zeros elsewhere."""
    mats = [S.reshape(t, (1, 1)) if t.ndim == 0 else S.reshape(t, (1, t.shape[0])) if t.ndim == 1 else t
            for t in tensors]
    for i, t in enumerate(mats):
        if t.ndim != 2:
            raise RuntimeError(f"torch.block_diag: Input tensors must have 2 or fewer dimensions. Input {i} has "
                               f"{t.ndim} dimensions")
    mats = M.promote_operands(mats)
    width = sum(t.shape[1] for t in mats)
    rows, left = [], 0
    for t in mats:
        right = width - left - t.shape[1]
        parts = [Tensor._wrap(np.zeros((t.shape[0], left), t._data.dtype)), t,
                 Tensor._wrap(np.zeros((t.shape[0], right), t._data.dtype))]
        rows.append(S.cat(parts, dim=1))
        left += t.shape[1]
    return S.cat(rows, dim=0)
