"""Which "tiles" launches of the PTX target cuBLAS can compute instead, and with what call.

A contraction nest (tiled_matmul.MatmulNest) whose epilogue is the plain store of the sum,
over one row, one column and one depth loop (and at most one batch loop) of float32 operands
that are strided matrices with a unit stride along one side, is `C = A @ B` for
`cublasSgemmStridedBatched`. cuBLAS is column-major; a row-major C is computed as
C^T = B^T A^T, and an operand whose unit stride runs along its columns is passed transposed.
`gemm_call` returns that call as plain data (kept in the program's cached description); the
runtime (runtime/cuda_program.py) times it against the tiled kernel on the first run and
keeps the faster per launch (EMBER_GPU_GEMM=cublas or tiles forces one). Fused epilogues
(bias, relu, an optimizer's update) keep the tiled kernel, which runs them in its stores.
"""
from .. import loop_ir as L


def _coefficients(offset, names):
    """({loop name: coefficient}, constant) of an affine offset over loop variables, or None."""
    terms, constant = L.terms_of(offset)
    found = {}
    for atom, coefficient in terms.items():
        if atom.op != "var" or atom.attr[0] not in names:
            return None
        found[atom.attr[0]] = coefficient
    return found, constant


def _stored(row_stride, col_stride, rows, cols):
    """(op, leading dimension) of a rows x cols matrix whose element (p, q) is at
    p * row_stride + q * col_stride, as cuBLAS reads it (op "N": column-major as it is,
    "T": its transpose is column-major), or None when neither stride is 1."""
    if row_stride == 1 and col_stride >= rows:
        return "N", col_stride
    if col_stride == 1 and row_stride >= cols:
        return "T", row_stride
    return None


def gemm_call(nest):
    """The cuBLAS call computing `nest` (a MatmulNest), as a dict of plain data, or None.
    Operands: [slot number, element offset, op, leading dimension, batch stride]; the result
    [slot number, element offset, leading dimension, batch stride]; m, n, k, batches the
    column-major call's sizes."""
    if nest.declare.dtype != "float32" or len(nest.stores) != 1:
        return None
    store = nest.stores[0]
    if store.combine is not None or store.value.op != "acc" or store.value.attr != nest.declare.name:
        return None
    if not (len(nest.rows) == len(nest.cols) == len(nest.depth) == 1 and len(nest.batch) <= 1):
        return None
    if nest.left.op != "load" or nest.right.op != "load":
        return None
    row, col, depth = nest.rows[0], nest.cols[0], nest.depth[0]
    batch = nest.batch[0] if nest.batch else None
    names = {loop.name for loop in (row, col, depth, batch) if loop is not None}
    found = [_coefficients(expr, names) for expr in (nest.left.args[0], nest.right.args[0], store.offset)]
    if None in found:
        return None
    (a, a0), (b, b0), (c, c0) = found
    if depth.name in c:
        return None
    m, n, k = row.extent, col.extent, depth.extent
    batches = batch.extent if batch is not None else 1
    strides = [coefficients.get(batch.name, 0) if batch is not None else 0 for coefficients in (a, b, c)]
    if c.get(col.name, 0) == 1:  # row-major C: C^T (n x m, column-major) = B^T A^T
        first = _stored(b.get(col.name, 0), b.get(depth.name, 0), n, k)
        second = _stored(a.get(depth.name, 0), a.get(row.name, 0), k, m)
        call = {"m": n, "n": m, "ldc": c.get(row.name, 0),
                "a": (nest.right.attr, b0, first, strides[1]), "b": (nest.left.attr, a0, second, strides[0])}
    elif c.get(row.name, 0) == 1:  # column-major C: C = A B
        first = _stored(a.get(row.name, 0), a.get(depth.name, 0), m, k)
        second = _stored(b.get(depth.name, 0), b.get(col.name, 0), k, n)
        call = {"m": m, "n": n, "ldc": c.get(col.name, 0),
                "a": (nest.left.attr, a0, first, strides[0]), "b": (nest.right.attr, b0, second, strides[1])}
    else:
        return None
    if call["a"][2] is None or call["b"][2] is None or call["ldc"] < call["m"]:
        return None
    (a_slot, a_offset, (a_op, lda), a_batch), (b_slot, b_offset, (b_op, ldb), b_batch) = call["a"], call["b"]
    return {"m": call["m"], "n": call["n"], "k": k, "batches": batches,
            "a": [a_slot, a_offset, a_op, lda, a_batch], "b": [b_slot, b_offset, b_op, ldb, b_batch],
            "c": [store.slot, c0, call["ldc"], strides[2]]}
