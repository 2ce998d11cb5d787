"""Linear-algebra primitives: inverse, determinants, solvers and the matrix decompositions.

Each is host-only (compiled programs call its numpy implementation back) and carries the VJP
PyTorch uses, written with primitives (these ones included), so second derivatives work. A
decomposition with several results packs them, flattened, along one last axis (`pack`);
`unpack` takes them apart with slice and reshape, in the frontend (ember.linalg) and in VJPs.
"""
import numpy as np

from ember import dtypes
from . import compose as C
from .registry import OpError, Spec, describe, register, PRIMITIVES
from .shape_rules import broadcast_shapes, same_dtype


class LinAlgError(OpError):
    """A matrix the op cannot take (singular, not positive-definite): ember.linalg.LinAlgError,
    a RuntimeError as torch.linalg.LinAlgError is, its message naming the op as torch's does."""


def _p(name):
    return PRIMITIVES[name]


# ----------------------------------------------------------------------------- packed results

def pack(batch, parts):
    """numpy results of shapes batch + part shape, flattened and joined along a last axis."""
    return np.concatenate([np.reshape(p, tuple(batch) + (-1,)) for p in parts], axis=-1)


def unpack(packed, shapes):
    """The results a packed value holds, of shapes batch + each of `shapes` (slice + reshape)."""
    batch = tuple(packed.shape[:-1])
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        out.append(C.reshape(narrow(packed, -1, start, start + size), batch + tuple(shape)))
        start += size
    return out


def narrow(x, axis, start, stop):
    """x's elements start..stop along `axis` (the slice primitive)."""
    ndim = len(x.shape)
    axis %= ndim
    if start == 0 and stop == x.shape[axis]:
        return x
    return _p("slice").bind(x, starts=tuple(start if i == axis else 0 for i in range(ndim)),
                            stops=tuple(stop if i == axis else d for i, d in enumerate(x.shape)), steps=(1,) * ndim)


def eigh_shapes(n):
    return [(n,), (n, n)]


def svd_shapes(m, n, full_matrices):
    k = min(m, n)
    return [(m, m if full_matrices else k), (k,), (n if full_matrices else k, n)]


def qr_shapes(m, n, mode):
    k = m if mode == "complete" else min(m, n)
    return [(m, k), (k, n)]


def lu_shapes(m, n):
    """The compact LU, the permutation matrix P (A = P L U) and the pivots (as floats)."""
    return [(m, n), (m, m), (min(m, n),)]


# ----------------------------------------------------------------------------- matrices in primitives
# the vocabulary of the VJP rules: it runs on eager tensors and on IR values alike

def _mm(a, b):
    return _p("matmul").bind(a, b)


_mT = C.swap_last


def _ones(n, like):
    return _p("constant").bind(value=1, shape=(n,), dtype=like.dtype.name)


def eye(n, like, columns=None):
    """The n x n identity (its first `columns` columns) in like's dtype: ones spread n apart by pad."""
    square = C.reshape(_p("pad").bind(_ones(n, like), lo=(0,), hi=(0,), interior=(n,), value=0), (n, n)) \
        if n else C.zeros((0, 0), like)
    return square if columns is None else narrow(square, 1, 0, columns)


def diag_embed(v):
    """(..., n) -> (..., n, n) with v on the diagonal."""
    n, lead = v.shape[-1], len(v.shape) - 1
    spread = _p("pad").bind(v, lo=(0,) * (lead + 1), hi=(0,) * (lead + 1), interior=(0,) * lead + (n,), value=0)
    return C.reshape(spread, tuple(v.shape[:-1]) + (n, n))


def diagonal(x):
    """(..., n, n) -> (..., n): a strided slice of the flattened matrices."""
    n, batch = x.shape[-1], tuple(x.shape[:-2])
    flat = C.reshape(x, batch + (n * n,))
    ndim = len(flat.shape)
    return _p("slice").bind(flat, starts=(0,) * ndim, stops=batch + (n * n,), steps=(1,) * (ndim - 1) + (n + 1,))


def triangle(x, lower, k=0):
    """tril(x, k) (lower) or triu(x, k) over the last two dims, masked by comparing iotas."""
    rows, cols = x.shape[-2], x.shape[-1]

    def iota(n):
        return C.sub(_p("cumsum").bind(_ones(n, x), axis=0), C.scalar(1, x))
    offset = C.sub(C.reshape(iota(cols), (1, cols)), C.reshape(iota(rows), (rows, 1)))  # j - i
    keep = _p("le" if lower else "ge").bind(offset, C.scalar(k, x))
    return C.where(keep, x, C.scalar(0, x))


def _copyltu(m):
    """The lower triangle of m mirrored onto the upper one."""
    return C.add(triangle(m, True), _mT(triangle(m, True, -1)))


def _as_matrices(v):
    """(...) -> (..., 1, 1): a value per matrix, broadcast over it."""
    return C.reshape(v, tuple(v.shape) + (1, 1))


def _sum_matrices(x):
    return C.reduce_sum(x, (len(x.shape) - 2, len(x.shape) - 1), keepdims=True)


def _solve_right(x, a, upper, unitriangular=False):
    """x a^-1 for triangular a: (a^T \\ x^T)^T."""
    return _mT(_p("linalg_solve_triangular").bind(_mT(a), _mT(x), upper=not upper, unitriangular=unitriangular))


def _divide_off_diagonal(numerator, e):
    """numerator / e where the numerator is not 0, else 0: a gradient that does not flow
    into the singular vectors (or eigenvectors) adds nothing, even at repeated values."""
    zero = C.scalar(0, numerator)
    return C.where(_p("eq").bind(numerator, zero), zero, C.div(numerator, e))


# ----------------------------------------------------------------------------- numpy helpers

def _batch_prefix(shape, index):
    return f"(Batch element {index}): " if len(shape) > 2 else ""


def _first_failure(info):
    """(flat batch index, info) of the first matrix whose info is not 0."""
    flat = np.reshape(info, -1)
    bad = np.flatnonzero(flat)
    return (int(bad[0]), int(flat[bad[0]])) if bad.size else (0, 0)


def lu_arrays(a):
    """LAPACK getrf's LU with partial pivoting, batched: the compact LU, the 1-based pivots
    (int32), the permutation matrices P (A = P L U) and info (the 1-based index of the first
    zero pivot, 0 when there is none)."""
    m, n = a.shape[-2:]
    k, batch = min(m, n), a.shape[:-2]
    lu = np.array(a, copy=True).reshape((-1, m, n))
    count = lu.shape[0]
    rows = np.arange(count)
    pivots = np.zeros((count, k), np.int32)
    order = np.tile(np.arange(m), (count, 1))
    info = np.zeros(count, np.int32)
    with np.errstate(all="ignore"):
        for j in range(k):
            p = j + np.argmax(np.abs(lu[:, j:, j]), axis=1)
            pivots[:, j] = p + 1
            top = lu[rows, j].copy()
            lu[rows, j] = lu[rows, p]
            lu[rows, p] = top
            first = order[rows, j].copy()
            order[rows, j] = order[rows, p]
            order[rows, p] = first
            pivot = lu[:, j, j]
            zero = pivot == 0
            info[zero & (info == 0)] = j + 1
            lu[:, j + 1:, j] /= np.where(zero, 1, pivot)[:, None]
            lu[:, j + 1:, j + 1:] -= lu[:, j + 1:, j, None] * lu[:, j, None, j + 1:]
    perm = np.zeros((count, m, m), a.dtype)
    perm[rows[:, None], order, np.arange(m)[None, :]] = 1
    return lu.reshape(a.shape), pivots.reshape(batch + (k,)), perm.reshape(batch + (m, m)), info.reshape(batch)


def substitute(a, b, upper, unitriangular=False):
    """a^-1 b for triangular a by substitution, batch dims broadcast; only a's triangle is
    read, and a zero on its diagonal gives inf and nan, as LAPACK's trsm."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    n = a.shape[-1]
    x = np.zeros(b.shape, a.dtype)
    with np.errstate(all="ignore"):
        for i in range(n - 1, -1, -1) if upper else range(n):
            known = slice(i + 1, n) if upper else slice(0, i)
            rest = b[..., i, :] - np.matmul(a[..., i, None, known], x[..., known, :])[..., 0, :]
            x[..., i, :] = rest if unitriangular else rest / a[..., i, i, None]
    return x


def _lu_solve_arrays(a, b):
    """a^-1 b through the LU factors (inf and nan where a is singular, no error)."""
    lu, _, perm, _ = lu_arrays(a)
    y = substitute(lu, np.matmul(np.swapaxes(perm, -1, -2), b), upper=False, unitriangular=True)
    return substitute(lu, y, upper=True)


def cholesky_arrays(a):
    """LAPACK potf2's Cholesky of the lower triangle, batched: L and info (the order of the
    first leading minor that is not positive-definite, whose pivot is left on the diagonal)."""
    n = a.shape[-1]
    low = np.tril(a).reshape((-1, n, n))
    info = np.zeros(low.shape[0], np.int32)
    active = np.ones(low.shape[0], bool)
    with np.errstate(all="ignore"):
        for j in range(n):
            pivot = low[:, j, j] - np.sum(low[:, j, :j] ** 2, axis=-1)
            failed = active & ~(pivot > 0)
            info[failed] = j + 1
            low[failed, j, j] = pivot[failed]
            active &= ~failed
            root = np.sqrt(np.where(active, pivot, 1))
            below = (low[:, j + 1:, j] - np.einsum("bik,bk->bi", low[:, j + 1:, :j], low[:, j, :j])) / root[:, None]
            low[active, j, j] = root[active]
            low[active, j + 1:, j] = below[active]
    return low.reshape(a.shape), info.reshape(a.shape[:-2])


# ----------------------------------------------------------------------------- shape rules

def _matrices(op, a, square=True):
    """(batch, rows, cols) of a float matrix or batch of them, else an OpError naming it."""
    if len(a.shape) < 2:
        raise OpError(op, f"needs a matrix or a batch of matrices, got {describe(a)}")
    if not a.dtype.is_floating_point:
        raise OpError(op, f"needs floating-point matrices, got {describe(a)}")
    if square and a.shape[-1] != a.shape[-2]:
        raise OpError(op, f"needs square matrices, got {describe(a)}")
    return tuple(a.shape[:-2]), a.shape[-2], a.shape[-1]


def _same_shape_rule(op):
    def infer(a, **attrs):
        _matrices(op, a)
        return Spec(tuple(a.shape), a.dtype)
    return infer


def _batch_rule(op, tail=()):
    def infer(a, **attrs):
        batch, _, _ = _matrices(op, a)
        return Spec(batch + tail, a.dtype)
    return infer


def _system_rule(op):
    def infer(a, b, **attrs):
        batch_a, n, _ = _matrices(op, a)
        if len(b.shape) < 2 or b.shape[-2] != n:
            raise OpError(op, f"cannot solve {describe(a)} x = {describe(b)}: the right side must be (..., {n}, k)")
        dtype = same_dtype(op, a, b)
        batch = broadcast_shapes(op, Spec(batch_a, dtype), Spec(tuple(b.shape[:-2]), dtype))
        return Spec(batch + (n, b.shape[-1]), dtype)
    return infer


def _packed_rule(op, shapes_of, square=True):
    def infer(a, **attrs):
        batch, m, n = _matrices(op, a, square)
        return Spec(batch + (sum(int(np.prod(s, dtype=np.int64)) for s in shapes_of(m, n, **attrs)),), a.dtype)
    return infer


# ----------------------------------------------------------------------------- inverse, determinants

def _inv(a, check_errors):
    try:
        return np.linalg.inv(a)
    except np.linalg.LinAlgError:
        if check_errors:
            index, first = _first_failure(lu_arrays(a)[3])
            raise LinAlgError("linalg.inv", f"{_batch_prefix(a.shape, index)}The diagonal element "
                                            f"{first or a.shape[-1]} is zero, the inversion could not be completed "
                                            f"because the input matrix is singular.") from None
        return _lu_solve_arrays(a, np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape))


def _inv_vjp(g, out, a, check_errors):
    t = _mT(out)
    return (C.neg(_mm(_mm(t, g), t)),)


register("linalg_inv", "opaque", _inv, _same_shape_rule("linalg_inv"), _inv_vjp, host_only=True)


def _det(a):
    return np.asarray(np.linalg.det(a), a.dtype)


def _det_vjp(g, out, a):
    return (C.mul(_as_matrices(g), _p("linalg_cofactor").bind(a)),)


register("linalg_det", "opaque", _det, _batch_rule("linalg_det"), _det_vjp, host_only=True)


def _cofactor(a):
    """det(a) a^-T, the gradient of det; from the SVD where a is singular (it is defined there)."""
    try:
        return (np.swapaxes(np.linalg.inv(a), -1, -2) * np.linalg.det(a)[..., None, None]).astype(a.dtype)
    except np.linalg.LinAlgError:
        u, s, vh = np.linalg.svd(a)
        others = np.prod(np.where(np.eye(a.shape[-1], dtype=bool), 1, s[..., None, :]), axis=-1)  # prod of s_j, j != i
        sign = np.linalg.det(u) * np.linalg.det(vh)
        return (np.matmul(u * others[..., None, :], vh) * sign[..., None, None]).astype(a.dtype)


def _cofactor_vjp(g, out, a):
    # d(det a^-T) = tr(a^-1 da) det a^-T - det a^-T da^T a^-T
    inv_t = _mT(_p("linalg_inv").bind(a, check_errors=True))
    det = _as_matrices(_p("linalg_det").bind(a))
    return (C.sub(C.mul(_sum_matrices(C.mul(g, out)), inv_t), C.mul(det, _mm(_mm(inv_t, _mT(g)), inv_t))),)


register("linalg_cofactor", "opaque", _cofactor, _same_shape_rule("linalg_cofactor"), _cofactor_vjp, host_only=True)


def _slogdet(a):
    sign, logabsdet = np.linalg.slogdet(a)
    return np.stack([sign, logabsdet], axis=-1).astype(a.dtype)


def _slogdet_vjp(g, out, a):
    g_log = C.reshape(narrow(g, -1, 1, 2), tuple(g.shape[:-1]) + (1, 1))
    return (C.mul(g_log, _mT(_p("linalg_inv").bind(a, check_errors=True))),)


register("linalg_slogdet", "opaque", _slogdet, _batch_rule("linalg_slogdet", (2,)), _slogdet_vjp, host_only=True)


# ----------------------------------------------------------------------------- solvers

def _solve(a, b, check_errors):
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])  # (numpy 1.x would read a b of fewer dims as vectors)
    a, b = np.broadcast_to(a, batch + a.shape[-2:]), np.broadcast_to(b, batch + b.shape[-2:])
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        if check_errors:
            index, _ = _first_failure(lu_arrays(a)[3])
            raise LinAlgError("torch.linalg.solve", f"{_batch_prefix(a.shape, index)}The solver failed because the "
                                                    f"input matrix is singular.") from None
        return _lu_solve_arrays(a, b)


def _solve_vjp(g, out, a, b, check_errors):
    gb = _p("linalg_solve").bind(_mT(a), g, check_errors=True)
    ga = C.sum_to(C.neg(_mm(gb, _mT(out))), a.shape) if C.needs_grad(a) else None
    return ga, C.sum_to(gb, b.shape)


register("linalg_solve", "opaque", _solve, _system_rule("linalg_solve"), _solve_vjp, host_only=True)


def _solve_triangular_vjp(g, out, a, b, upper, unitriangular):
    gb = _p("linalg_solve_triangular").bind(_mT(a), g, upper=not upper, unitriangular=unitriangular)
    ga = None
    if C.needs_grad(a):  # only the triangle the solve read (without its diagonal when unit)
        k = (1 if upper else -1) if unitriangular else 0
        ga = C.sum_to(triangle(C.neg(_mm(gb, _mT(out))), not upper, k), a.shape)
    return ga, C.sum_to(gb, b.shape)


register("linalg_solve_triangular", "opaque", substitute, _system_rule("linalg_solve_triangular"),
         _solve_triangular_vjp, host_only=True)


# ----------------------------------------------------------------------------- Cholesky

def _cholesky(a, check_errors):
    """The lower factor, from a's lower triangle."""
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        factor, info = cholesky_arrays(a)
        if check_errors:
            index, order = _first_failure(info)
            raise LinAlgError("linalg.cholesky", f"{_batch_prefix(a.shape, index)}The factorization could not be "
                                                 f"completed because the input is not positive-definite (the leading "
                                                 f"minor of order {order} is not positive-definite).") from None
        return factor


def _cholesky_vjp(g, out, a, check_errors):
    # PyTorch's: gA = L^-T phi(L^T gL) L^-1, phi keeping the lower triangle, mirrored, its diagonal halved
    lt = _mT(out)
    phi = triangle(_mm(lt, g), True)
    phi = C.mul(C.add(phi, _mT(triangle(phi, True, -1))), C.scalar(0.5, g))
    left = _p("linalg_solve_triangular").bind(lt, phi, upper=True, unitriangular=False)
    return (_solve_right(left, out, upper=False),)


register("linalg_cholesky", "opaque", _cholesky, _same_shape_rule("linalg_cholesky"), _cholesky_vjp, host_only=True)


# ----------------------------------------------------------------------------- QR

def _qr(a, mode):
    if mode == "r":
        return np.linalg.qr(a, mode="r")
    q, r = np.linalg.qr(a, mode=mode)
    return pack(a.shape[:-2], (q, r))


def _qr_rule(a, mode):
    batch, m, n = _matrices("linalg_qr", a, square=False)
    if mode == "r":
        return Spec(batch + (min(m, n), n), a.dtype)
    return _packed_rule("linalg_qr", qr_shapes, square=False)(a, mode=mode)


def _qr_vjp(g, out, a, mode):
    if mode == "r":
        raise RuntimeError("The derivative of linalg.qr depends on Q, which is not computed when mode='r'. Please use "
                           "linalg.qr(A, mode='reduced') if you are going to differentiate through linalg.qr.")
    m, n = a.shape[-2:]
    if mode == "complete" and m > n:
        raise RuntimeError("The QR decomposition is not differentiable when mode='complete' and nrows > ncols.")
    q, r = unpack(out, qr_shapes(m, n, mode))
    gq, gr = unpack(g, qr_shapes(m, n, mode))
    if m >= n:  # gA = (gQ + Q copyltu(R gR^T - gQ^T Q)) R^-T
        inner = C.sub(_mm(r, _mT(gr)), _mm(_mT(gq), q))
        return (_solve_right(C.add(gq, _mm(q, _copyltu(inner))), _mT(r), upper=False),)
    # wide: A = [X | Y], R = [U | V] with X = Q U; Y = Q V feeds gQ too
    u, v = narrow(r, -1, 0, m), narrow(r, -1, m, n)
    gu, gv = narrow(gr, -1, 0, m), narrow(gr, -1, m, n)
    gq = C.add(gq, _mm(_mm(q, v), _mT(gv)))
    inner = C.sub(_mm(u, _mT(gu)), _mm(_mT(gq), q))
    gx = _solve_right(C.add(gq, _mm(q, _copyltu(inner))), _mT(u), upper=False)
    return (_p("concat").bind(gx, _mm(q, gv), axis=-1),)


register("linalg_qr", "opaque", _qr, _qr_rule, _qr_vjp, host_only=True)


# ----------------------------------------------------------------------------- symmetric eigenproblem

def _eigh(a):
    """Eigenvalues (ascending) and eigenvectors of the symmetric matrix a's lower triangle holds."""
    w, v = np.linalg.eigh(a)
    return pack(a.shape[:-2], (w, v))


def _eigh_vjp(g, out, a):
    n = a.shape[-1]
    w, v = unpack(out, eigh_shapes(n))
    gw, gv = unpack(g, eigh_shapes(n))
    # gA = V (diag(gL) + skew(V^T gV) / E) V^T, E_ij = L_j - L_i (PyTorch's linalg_eig_backward, symmetric case)
    vt_gv = _mm(_mT(v), gv)
    skew = C.mul(C.sub(vt_gv, _mT(vt_gv)), C.scalar(0.5, g))
    e = C.add(C.sub(C.reshape(w, tuple(w.shape[:-1]) + (1, n)), C.reshape(w, tuple(w.shape) + (1,))), eye(n, g))
    inner = C.add(_divide_off_diagonal(skew, e), diag_embed(gw))
    return (_mm(_mm(v, inner), _mT(v)),)


register("linalg_eigh", "opaque", _eigh, _packed_rule("linalg_eigh", lambda m, n: eigh_shapes(n)), _eigh_vjp,
         host_only=True)


def _eigvalsh_vjp(g, out, a):
    _, v = unpack(_p("linalg_eigh").bind(a), eigh_shapes(a.shape[-1]))
    return (_mm(C.mul(v, C.reshape(g, tuple(g.shape[:-1]) + (1, g.shape[-1]))), _mT(v)),)


def _eigvalsh_rule(a):
    batch, _, n = _matrices("linalg_eigvalsh", a)
    return Spec(batch + (n,), a.dtype)


register("linalg_eigvalsh", "opaque", lambda a: np.linalg.eigvalsh(a), _eigvalsh_rule, _eigvalsh_vjp, host_only=True)


# ----------------------------------------------------------------------------- SVD

def _svd(a, full_matrices):
    u, s, vh = np.linalg.svd(a, full_matrices=full_matrices)
    return pack(a.shape[:-2], (u, s, vh))


def _svd_vjp(g, out, a, full_matrices):
    """PyTorch's svd_backward; with full_matrices the extra singular vectors get no gradient."""
    m, n = a.shape[-2:]
    k = min(m, n)
    shapes = svd_shapes(m, n, full_matrices)
    u, s, vh = unpack(out, shapes)
    gu, gs, gvh = unpack(g, shapes)
    if full_matrices:
        u, gu, vh, gvh = narrow(u, -1, 0, k), narrow(gu, -1, 0, k), narrow(vh, -2, 0, k), narrow(gvh, -2, 0, k)
    row, col = C.reshape(s, tuple(s.shape[:-1]) + (1, k)), C.reshape(s, tuple(s.shape) + (1,))
    uhgu = _mm(_mT(u), gu)
    uhgu = C.sub(uhgu, _mT(uhgu))
    vhgv = _mm(vh, _mT(gvh))
    vhgv = C.sub(vhgv, _mT(vhgv))
    e = C.add(C.sub(C.mul(row, row), C.mul(col, col)), eye(k, g))  # E_jk = s_k^2 - s_j^2, 1 on the diagonal
    inner = C.add(_divide_off_diagonal(C.add(C.mul(uhgu, row), C.mul(col, vhgv)), e), diag_embed(gs))
    if m > n:  # gA = [U inner + (I - U U^T) gU S^-1] V^H
        gu_s = C.div(gu, row)
        left = C.add(_mm(u, inner), C.sub(gu_s, _mm(u, _mm(_mT(u), gu_s))))
        return (_mm(left, vh),)
    if m < n:  # gA = U [inner V^H + S^-1 gV^H (I - V V^H)]
        s_gvh = C.div(gvh, col)
        right = C.add(_mm(inner, vh), C.sub(s_gvh, _mm(_mm(s_gvh, _mT(vh)), vh)))
        return (_mm(u, right),)
    return (_mm(_mm(u, inner), vh),)


register("linalg_svd", "opaque", _svd, _packed_rule("linalg_svd", svd_shapes, square=False), _svd_vjp, host_only=True)


def _svdvals_rule(a):
    batch, m, n = _matrices("linalg_svdvals", a, square=False)
    return Spec(batch + (min(m, n),), a.dtype)


def _svdvals_vjp(g, out, a):
    m, n = a.shape[-2:]
    u, _, vh = unpack(_p("linalg_svd").bind(a, full_matrices=False), svd_shapes(m, n, False))
    k = min(m, n)
    return (_mm(C.mul(u, C.reshape(g, tuple(g.shape[:-1]) + (1, k))), vh),)


register("linalg_svdvals", "opaque", lambda a: np.linalg.svd(a, compute_uv=False), _svdvals_rule, _svdvals_vjp,
         host_only=True)


# ----------------------------------------------------------------------------- pseudo-inverse

def _pinv(a, atol, rtol, hermitian):
    """torch.linalg.pinv: singular values (|eigenvalues| when hermitian) at most
    max(atol, rtol * the largest) count as zero."""
    if hermitian:
        w, v = np.linalg.eigh(a)
        s = np.abs(w)
        largest = s.max(axis=-1, initial=0)
        keep = s > np.maximum(atol, rtol * largest)[..., None]
        with np.errstate(divide="ignore"):
            inverse = np.where(keep, 1 / np.where(keep, w, 1), 0)
        return np.matmul(v * inverse[..., None, :], np.swapaxes(v, -1, -2)).astype(a.dtype)
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    largest = s[..., 0] if s.shape[-1] else np.zeros(s.shape[:-1], a.dtype)
    keep = s > np.maximum(atol, rtol * largest)[..., None]
    inverse = np.where(keep, 1 / np.where(keep, s, 1), 0)
    return np.matmul(np.swapaxes(vh, -1, -2) * inverse[..., None, :], np.swapaxes(u, -1, -2)).astype(a.dtype)


def _pinv_rule(a, atol, rtol, hermitian):
    batch, m, n = _matrices("linalg_pinv", a, square=hermitian)
    return Spec(batch + (n, m), a.dtype)


def _pinv_vjp(g, out, a, atol, rtol, hermitian):
    """PyTorch's pinv_backward (constant rank), arranged for the smaller of m and n."""
    m, n = a.shape[-2:]
    p, ph, gh = out, _mT(out), _mT(g)
    if m <= n:
        k = _mm(gh, p)
        k_ph = _mm(k, ph)
        terms = C.add(C.sub(k_ph, _mT(_mm(p, k))), C.sub(_mm(_mm(ph, p), C.sub(gh, _mm(k, a))), _mm(_mm(a, p), k_ph)))
        return (terms,)
    k = _mm(p, gh)
    ph_k = _mm(ph, k)
    terms = C.add(C.sub(ph_k, _mT(_mm(k, p))), C.sub(_mm(_mm(C.sub(gh, _mm(a, k)), p), ph), _mm(_mm(ph_k, p), a)))
    return (terms,)


register("linalg_pinv", "opaque", _pinv, _pinv_rule, _pinv_vjp, host_only=True)


# ----------------------------------------------------------------------------- matrix exponential

_PADE13 = (64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0, 129060195264000.0,
           10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0, 40840800.0, 960960.0, 16380.0, 182.0, 1.0)
_PADE13_THETA = 5.371920351148152  # the 1-norm up to which degree 13 is exact to float64 rounding (Higham 2005)


def _matrix_exp(a):
    """Scaling and squaring with the degree-13 Pade approximant, in float64."""
    x = np.asarray(a, np.float64)
    n = x.shape[-1]
    if n == 0 or x.size == 0:
        return np.zeros(a.shape, a.dtype)
    norm = np.abs(x).sum(axis=-2).max(axis=-1)
    finite = np.isfinite(norm)
    scaled = np.where(finite, norm, 1) / _PADE13_THETA
    squarings = np.where(finite & (scaled > 1), np.ceil(np.log2(np.maximum(scaled, 1))), 0).astype(np.int64)
    x = x / np.exp2(squarings)[..., None, None]
    b, ident = _PADE13, np.eye(n)
    x2 = x @ x
    x4 = x2 @ x2
    x6 = x4 @ x2
    u = x @ (x6 @ (b[13] * x6 + b[11] * x4 + b[9] * x2) + b[7] * x6 + b[5] * x4 + b[3] * x2 + b[1] * ident)
    v = x6 @ (b[12] * x6 + b[10] * x4 + b[8] * x2) + b[6] * x6 + b[4] * x4 + b[2] * x2 + b[0] * ident
    result = np.linalg.solve(v - u, v + u)
    for step in range(int(squarings.max(initial=0))):
        result = np.where((squarings > step)[..., None, None], result @ result, result)
    result = np.where(finite[..., None, None], result, np.nan)
    return result.astype(a.dtype)


def _matrix_exp_vjp(g, out, a):
    # the top-right block of exp([[A^T, g], [0, A^T]])
    n = a.shape[-1]
    at = _mT(a)
    top = _p("concat").bind(at, g, axis=-1)
    bottom = _p("concat").bind(C.zeros(tuple(a.shape), g), at, axis=-1)
    big = _p("linalg_matrix_exp").bind(_p("concat").bind(top, bottom, axis=-2))
    return (narrow(narrow(big, -2, 0, n), -1, n, 2 * n),)


register("linalg_matrix_exp", "opaque", _matrix_exp, _same_shape_rule("linalg_matrix_exp"), _matrix_exp_vjp,
         host_only=True)


# ----------------------------------------------------------------------------- LU

def _lu_factor(a):
    lu, pivots, perm, _ = lu_arrays(a)
    return pack(a.shape[:-2], (lu, perm, pivots.astype(a.dtype)))


def _lu_factor_vjp(g, out, a):
    """PyTorch's linalg_lu_backward, square, wide and tall, on the compact LU."""
    m, n = a.shape[-2:]
    k = min(m, n)
    lu, perm, _ = unpack(out, lu_shapes(m, n))
    glu = unpack(g, lu_shapes(m, n))[0]
    lower = C.add(triangle(narrow(lu, -1, 0, k), True, -1), eye(m, g, columns=k))  # m x k, unit diagonal
    upper = triangle(narrow(lu, -2, 0, k), False)  # k x n
    gl, gu = narrow(glu, -1, 0, k), narrow(glu, -2, 0, k)
    if m == n:  # gA = P L^-T [tril(L^T gL, -1) + triu(gU U^T)] U^-T
        inner = C.add(triangle(_mm(_mT(lower), gl), True, -1), triangle(_mm(gu, _mT(upper)), False))
        inner = _solve_right(inner, _mT(upper), upper=False)
    elif m < n:  # wide
        u1 = narrow(upper, -1, 0, k)
        inner = C.sub(_mm(_mT(lower), gl), _mm(triangle(gu, False), _mT(upper)))
        inner = _solve_right(triangle(inner, True, -1), _mT(u1), upper=False)
        inner = _p("concat").bind(C.add(inner, triangle(narrow(gu, -1, 0, k), False)), narrow(gu, -1, k, n), axis=-1)
    else:  # tall
        l1 = narrow(lower, -2, 0, k)
        inner = C.sub(_mm(gu, _mT(upper)), _mm(_mT(lower), triangle(gl, True, -1)))
        inner = _p("linalg_solve_triangular").bind(_mT(l1), triangle(inner, False), upper=True, unitriangular=True)
        inner = _p("concat").bind(C.add(inner, triangle(narrow(gl, -2, 0, k), True, -1)), narrow(gl, -2, k, m), axis=-2)
        return (_mm(perm, _solve_right(inner, _mT(upper), upper=False)),)
    if m <= n:
        inner = _p("linalg_solve_triangular").bind(_mT(lower), inner, upper=True, unitriangular=True)
    return (_mm(perm, inner),)


register("linalg_lu_factor", "opaque", _lu_factor, _packed_rule("linalg_lu_factor", lu_shapes, square=False),
         _lu_factor_vjp, host_only=True)


def _lu_permutation(pivots, size, dtype):
    """The permutation matrix P of LAPACK's 1-based row swaps (A = P L U)."""
    k, batch = pivots.shape[-1], pivots.shape[:-1]
    swaps = pivots.reshape((-1, k)).astype(np.int64) - 1
    if swaps.size and (swaps.min() < 0 or swaps.max() >= size):
        raise LinAlgError("linalg_lu_permutation", f"pivots must be between 1 and {size}, got {swaps.min() + 1} to "
                                                   f"{swaps.max() + 1}")
    rows = np.arange(swaps.shape[0])
    order = np.tile(np.arange(size), (swaps.shape[0], 1))
    for j in range(k):
        first = order[:, j].copy()
        order[:, j] = order[rows, swaps[:, j]]
        order[rows, swaps[:, j]] = first
    perm = np.zeros((swaps.shape[0], size, size), dtype)
    perm[rows[:, None], order, np.arange(size)[None, :]] = 1
    return perm.reshape(batch + (size, size))


def _lu_permutation_rule(pivots, size, dtype):
    if len(pivots.shape) < 1 or pivots.dtype.category != 1:
        raise OpError("linalg_lu_permutation", f"needs integer pivots, got {describe(pivots)}")
    if pivots.shape[-1] > size:
        raise OpError("linalg_lu_permutation", f"{pivots.shape[-1]} pivots for {size} rows")
    return Spec(tuple(pivots.shape[:-1]) + (size, size), dtypes.from_name(dtype))


register("linalg_lu_permutation", "opaque", _lu_permutation, _lu_permutation_rule, host_only=True)


# the host-only primitives this module adds (tests list the host-only ones)
LINALG_PRIMITIVES = tuple(name for name in PRIMITIVES if name.startswith("linalg_"))
