"""TF32 tensor cores for the tiled products of tiled_matmul.py, where PyTorch would allow them.

PyTorch computes float32 matrix products in TF32 on Ampere and newer GPUs when
`torch.backends.cuda.matmul.allow_tf32` is set (or `set_float32_matmul_precision("high")`),
and convolutions when `torch.backends.cudnn.allow_tf32` is (its default); ember follows the same
switches (frontend/global_settings.py `tf32_allowed`). A TF32 tile runs its multiply-adds as
`mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32` (LLVM's
`llvm.nvvm.mma.m16n8k8.row.col.tf32`): the block's 8 warps each own a 16 x 32 piece of the
64 x 64 tile (warp w: rows 16 * (w // 2), columns 32 * (w % 2)), four 16 x 8 products per
k-step of 8. Operands are read from the same shared-memory tiles as the float32 kernel and
rounded to TF32 (10-bit mantissa, round to nearest with ties away, cvt.rna.tf32.f32); sums
stay float32. Each thread holds the fragment the instruction defines (lane = 4 * group +
thread-in-group): outputs (16w_r + group + 8a, 32w_c + 8j + 2 t + c) for a, c in {0, 1}, so
`positions` gives the epilogue the element each of its 2 x 8 sums belongs to.
"""
from llvmlite import ir

from ..llvm.loops import I32, I64, declare

MMA = "llvm.nvvm.mma.m16n8k8.row.col.tf32"
F32 = ir.FloatType()
RESULT = ir.LiteralStructType([F32] * 4)
K_STEP = 8
WARP_ROWS, WARP_COLS = 16, 32  # the piece of the tile one warp computes
ROWS, COLS = 2, 8  # a thread's sums: 2 rows (group, group + 8) x 8 columns (4 n-tiles x 2)


def _i64(value):
    return ir.Constant(I64, value)


def _i32(value):
    return ir.Constant(I32, value)


class Fragments:
    """One thread's place in the warp-level products (see the module docstring)."""

    def __init__(self, b, tid):
        warp, lane = b.udiv(tid, _i64(32)), b.urem(tid, _i64(32))
        self.b = b
        self.group, self.in_group = b.udiv(lane, _i64(4)), b.urem(lane, _i64(4))
        self.row0 = b.mul(b.udiv(warp, _i64(2)), _i64(WARP_ROWS))
        self.col0 = b.mul(b.urem(warp, _i64(2)), _i64(WARP_COLS))

    def positions(self):
        """[a][c] -> (row, column) inside the tile of this thread's sum (a, c)."""
        b = self.b
        rows = [b.add(self.row0, b.add(self.group, _i64(8 * a))) for a in range(ROWS)]
        return [[(rows[a], b.add(self.col0, b.add(_i64(8 * (c // 2) + c % 2), b.mul(self.in_group, _i64(2)))))
                 for c in range(COLS)] for a in range(ROWS)]


def tf32_bits(b, value):
    """The float32 `value` rounded to TF32 as the instruction reads it (an i32: round to nearest,
    ties away from zero, on the 13 dropped bits; infinities kept, NaN made quiet)."""
    bits = b.bitcast(value, I32)
    rounded = b.and_(b.add(bits, _i32(0x1000)), _i32(-0x2000))  # (0xFFFFE000)
    special = b.icmp_unsigned("==", b.and_(bits, _i32(0x7F800000)), _i32(0x7F800000))
    is_nan = b.fcmp_unordered("uno", value, value)
    return b.select(is_nan, _i32(0x7FFFE000), b.select(special, bits, rounded))


def multiply(writer, fragments, sums):
    """sums += this warp's products over the DEPTH steps of the shared tiles, on tensor cores
    (`writer`: the TileWriter, whose left tile is k-major with its LEFT_STRIDE, right k-major)."""
    from .tiled_matmul import DEPTH, LEFT_STRIDE, TILE
    b = writer.b
    mma = declare(b.module, MMA, RESULT, [I32] * 6 + [F32] * 4)
    totals = [[b.load(cell, typ=F32) for cell in row] for row in sums]
    group, in_group = fragments.group, fragments.in_group
    for k0 in range(0, DEPTH, K_STEP):
        left = []
        for k_high in (0, 4):  # a0, a1 at k = t, a2, a3 at k = t + 4; rows group and group + 8
            k = b.add(in_group, _i64(k0 + k_high))
            for row_high in (0, 8):
                m = b.add(fragments.row0, b.add(group, _i64(row_high)))
                left.append(tf32_bits(b, b.load(writer.cell(writer.left_tile, b.add(b.mul(k, _i64(LEFT_STRIDE)), m)),
                                                typ=F32)))
        for j in range(4):
            n = b.add(fragments.col0, b.add(group, _i64(8 * j)))
            right = [tf32_bits(b, b.load(writer.cell(writer.right_tile, b.add(b.mul(b.add(in_group, _i64(k0 + k)),
                                                                                    _i64(TILE)), n)), typ=F32))
                     for k in (0, 4)]
            inputs = [totals[0][2 * j], totals[0][2 * j + 1], totals[1][2 * j], totals[1][2 * j + 1]]
            result = b.call(mma, left + right + inputs)
            totals[0][2 * j], totals[0][2 * j + 1], totals[1][2 * j], totals[1][2 * j + 1] = (
                b.extract_value(result, k) for k in range(4))
    for row, cells in zip(totals, sums):
        for total, cell in zip(row, cells):
            b.store(total, cell)
