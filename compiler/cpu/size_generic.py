"""Kernels that differ only in their element count, as one LLVM function (cpu/program.py
`build_module` asks `size_generic_form` of every kernel).

An optimizer updates each parameter with the same fused kernel, and gradient clipping sums
each gradient's squares with the same reduction: one kernel per parameter, all of one
structure but of as many element counts as the model has parameter shapes (a small GPT's
AdamW: 8 sizes; its clipping: 9). `kernel_structure` tells them apart by their sizes, so LLVM
compiled each size. A *flat* kernel has a size-generic form instead:
- its top-level loops all run over the same n > 1 elements (no nested loops);
- each slot holds n elements, read and written at the loop's index, or one element read or
  written at index 0, and the loop's index appears nowhere else;
- it has no checks, matrix or convolution calls, or callbacks.
Its function takes n as an argument (cpu/program.py `SizeGenericKernelWriter`), so one function serves every
kernel of its structure whatever its size, as PyTorch's multi-tensor (foreach and fused)
optimizers run one kernel over every parameter. Whether a loop is worth the threads
(`PARALLEL_MIN_WORK`) is then decided per call, from n.
"""
import re

from llvmlite import ir

from .. import loop_ir as L
from ..llvm.kernels import kernel_structure, statement_work
from ..llvm.scalar import I64

N = "n"  # the element count in a size-generic kernel's structure


def size_generic_form(program, kernel):
    """(structure, n) of a flat kernel (module docstring): `structure` is `kernel_structure`
    with n in place of the element count, so kernels of every size share it; None for any
    other kernel."""
    n = flat_count(kernel)
    if n is None:
        return None
    kind, slots, text, pairs, same_place, errors = kernel_structure(program, kernel)
    slots = tuple((dtype, N if size == n else size, writes) for dtype, size, writes in slots)
    text = text.replace(f" in 0..{n}:", f" in 0..{N}:").replace(f" in 0..{n} parallel:", f" in 0..{N} parallel:")
    for k, loop in enumerate(stmt for stmt in kernel.body if isinstance(stmt, L.Loop)):
        # (a weight's collapsed loop is `i0_i1`, a bias's `i0`: one name for both)
        text = re.sub(rf"(?<![\w.]){re.escape(loop.name)}(?![\w.])", f"loop{k}", text)
    return ("size-generic", kind, slots, text, pairs, same_place, errors), n


def flat_count(kernel):
    """n of a flat kernel, else None."""
    if kernel.errors:
        return None
    loops = [stmt for stmt in kernel.body if isinstance(stmt, L.Loop)]
    extents = {loop.extent for loop in loops}
    if len(extents) != 1:
        return None
    n = extents.pop()
    if not isinstance(n, int) or n < 2:
        return None
    sizes = {slot.size for slot in kernel.slots}
    if not sizes <= {n, 1} or any(type(stmt) not in _TOP for stmt in kernel.body):
        return None
    for stmt in kernel.body:
        if isinstance(stmt, L.Loop):
            if any(type(inner) not in _INNER for inner in stmt.body):
                return None
            if not all(_reads_flat(kernel, inner, stmt.var, n) for inner in stmt.body):
                return None
        elif not _reads_flat(kernel, stmt, None, n):
            return None
    return n


_TOP = (L.Loop, L.Declare, L.Store)
_INNER = (L.Declare, L.Update, L.Store)


def _reads_flat(kernel, stmt, index, n):
    """Does the statement read and write n-element slots only at `index` (the loop's
    variable; None outside loops: never) and one-element slots only at 0, with `index`
    nowhere else?"""
    if isinstance(stmt, L.Store) and not _flat_access(kernel, stmt.slot, stmt.offset, index, n):
        return False
    stack = list(L.statement_exprs(stmt))
    if isinstance(stmt, L.Store):
        stack = [stmt.value]
    while stack:
        e = stack.pop()
        if e.op == "load":
            if not _flat_access(kernel, e.attr, e.args[0], index, n):
                return False
            continue  # (its offset is the index or 0: checked)
        if e.op in ("var", "size"):
            return False
        stack.extend(e.args)
    return True


def _flat_access(kernel, slot, offset, index, n):
    size = kernel.slots[slot].size
    if offset.op == "const":
        return offset.attr == 0 and size == 1
    return index is not None and offset == index and size == n


def generic_symbol(name):
    """A size-generic function's name: its first kernel's, without the size
    (`elementwise_mul_sub_add_convert_384x128_2` -> `elementwise_mul_sub_add_convert_n`)."""
    return re.sub(r"(_\d+(x\d+)*)?(_\d+)?$", "", name) + "_" + N


def worth_threads(body_writer, loop, min_work):
    """An i1: is this call's loop of n iterations worth the threads (at least `min_work` element-ops)?"""
    per_iteration = max(statement_work(loop.body), 1)
    at_least = -(-min_work // per_iteration)
    b = body_writer.builder
    return b.icmp_signed(">=", body_writer.size_argument, ir.Constant(I64, at_least))


__all__ = ["size_generic_form", "flat_count", "generic_symbol", "worth_threads"]
