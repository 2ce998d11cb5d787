"""numpy implementations of conv2d and its two gradient contractions (eager mode and the
interpreter), computed in a batch-last layout: activations as [C, H, W, N] in memory.

Batch-last makes every im2col row copy, col2im add and pooling pass run over long contiguous
rows (OW*N floats, not OW), and the matmul writes [O, OH, OW, N] directly. Results are returned
as [N, C, H, W]-shaped views of that memory; numpy's elementwise ops keep the layout, so the
next conv or pool reads it without a copy.
"""
import math
import threading

import numpy as np

from .movement import _window_out, window_view

_TRANSPOSE_ROWS = 8  # images moved per block when making an NCHW array batch-last: stays in cache

# im2col columns are big, short-lived and the same size step after step: a fresh array each
# time costs more in page faults than the copy itself, so each thread keeps one workspace
# (up to this size; larger columns are rare and pay for a fresh array).
_WORKSPACE_LIMIT_BYTES = 64 << 20
_workspace = threading.local()


def _scratch(shape, dtype, slot="columns"):
    """An uninitialised array of `shape` in one of this thread's workspaces (`slot`: the
    columns, or a matmul's block result); valid until the next call for that slot."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes > _WORKSPACE_LIMIT_BYTES:
        return np.empty(shape, dtype=dtype)
    buffer = getattr(_workspace, slot, None)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = np.empty(nbytes, dtype=np.uint8)
        setattr(_workspace, slot, buffer)
    return buffer[:nbytes].view(dtype).reshape(shape)


def batch_last(x):
    """[N, C, H, W] (any strides) -> a C-contiguous [C, H, W, N] array (a view when it is one)."""
    moved = x.transpose(1, 2, 3, 0)
    if moved.flags.c_contiguous or x.size == 0:
        return np.ascontiguousarray(moved)
    n = x.shape[0]
    out = np.empty(moved.shape, dtype=x.dtype)
    rows, out_rows = x.reshape(n, -1), out.reshape(-1, n)
    # a few images at a time: a one-shot transpose strides through memory and misses cache
    for start in range(0, n, _TRANSPOSE_ROWS):
        out_rows[:, start:start + _TRANSPOSE_ROWS] = rows[start:start + _TRANSPOSE_ROWS].T
    return out


def as_nchw(memory):
    """A [C, H, W, N] array seen as [N, C, H, W] (no copy)."""
    return memory.transpose(3, 0, 1, 2)


def _channel_rows(g, groups):
    """An output gradient [N, O, OH, OW] -> [G, O/G, OH*OW*N], batch last (a view if it already is)."""
    n, o, oh, ow = g.shape
    return batch_last(g).reshape(groups, o // groups, oh * ow * n)


def _padded(x_cwhn, padding):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x_cwhn
    c, h, w, n = x_cwhn.shape
    out = np.zeros((c, h + 2 * ph, w + 2 * pw, n), dtype=x_cwhn.dtype)
    out[:, ph:ph + h, pw:pw + w] = x_cwhn
    return out


def _windows(x, kernel, stride, padding, dilation):
    """The input's windows as a view [C, KH, KW, OH, OW, N]: im2col's rows, before the copy."""
    windows = window_view(_padded(batch_last(x), padding), kernel, stride, dilation, axes=(1, 2))
    return windows.transpose(0, 4, 5, 1, 2, 3)  # from C, OH, OW, N, KH, KW


def _row_blocks(taps, rows, row_values, budget):
    """Split OH output rows into blocks whose columns (`taps` x `row_values` bytes each row)
    fit `budget` bytes."""
    per_block = max(1, budget // max(1, taps * row_values))
    return [(start, min(start + per_block, rows)) for start in range(0, rows, per_block)]


# im2col a block of output rows at a time, the matmul reading it while it is still in cache:
# one pass over 15 MB of columns (the seed Net's conv1 at batch 64) is memory bound
_BLOCK_BYTES = 2 << 20
# col2im adds 25 shifted slices of the taps: fewer, larger blocks measured faster (each
# block's slices are shorter); the budget only bounds the workspace for large convs
_COL2IM_BLOCK_BYTES = 16 << 20


def column_blocks(x, kernel, stride, padding, dilation, groups):
    """im2col by blocks of output rows: yields (first row, end row, columns [G, Cg*KH*KW,
    rows*OW*N]), a row per weight tap in the weight's (C, KH, KW) order, each a copy of
    contiguous runs of OW*N values. The columns live in the workspace until the next block."""
    windows = _windows(x, kernel, stride, padding, dilation)
    c, kh, kw, oh, ow, n = windows.shape
    for start, stop in _row_blocks(c * kh * kw, oh, ow * n * windows.itemsize, _BLOCK_BYTES):
        cols = _scratch((c, kh, kw, stop - start, ow, n), windows.dtype)
        np.copyto(cols, windows[:, :, :, start:stop])
        yield start, stop, cols.reshape(groups, (c // groups) * kh * kw, (stop - start) * ow * n)


# A conv with few output channels is a matmul with few rows, which BLAS runs at a fraction of
# its speed while packing the tall im2col operand for little arithmetic. Computing P adjacent
# output rows per window instead (the kernel P-1 taps taller and strided by P down the height,
# the weights stacked P times, each copy shifted one tap) gives P*O matmul rows and packs
# (KH+P-1)/(P*KH) of the columns, for (KH+P-1)/KH of the arithmetic. Along the height, so
# the im2col rows stay long contiguous runs of OW*N values.
_PHASE_ROWS = 12  # aim for this many matmul rows
_PHASE_LIMIT = 4


def _row_phases(out_channels, oh, kernel_h, stride, dilation, groups):
    """How many adjacent output rows each window computes (1: a plain im2col conv)."""
    if groups != 1 or stride[0] != 1 or dilation[0] != 1 or kernel_h < 3:
        return 1
    for phases in range(min(_PHASE_LIMIT, _PHASE_ROWS // out_channels), 1, -1):
        if oh % phases == 0:
            return phases
    return 1


def _phase_weights(w, phases):
    """[O, C, KH, KW] -> [P*O, C, KH+P-1, KW]: copy p of the weights shifted down by p taps."""
    o, c, kh, kw = w.shape
    if phases == 1:
        return w
    stacked = np.zeros((phases, o, c, kh + phases - 1, kw), dtype=w.dtype)
    for p in range(phases):
        stacked[p, :, :, p:p + kh] = w
    return stacked.reshape(phases * o, c, kh + phases - 1, kw)


def _phase_geometry(kernel, stride, phases):
    """The taller kernel and stride that compute `phases` adjacent output rows at once."""
    return (kernel[0] + phases - 1, kernel[1]), (stride[0] * phases, stride[1])


def conv2d(x, w, stride, padding, dilation, groups):
    o, _, kh, kw = w.shape
    oh, ow, n = _output_size(x, (kh, kw), stride, padding, dilation)
    phases = _row_phases(o, oh, kh, stride, dilation, groups)
    wmat = _phase_weights(w, phases).reshape(groups, phases * o // groups, -1)
    out = np.empty((o, oh // phases, phases, ow, n), dtype=np.result_type(w, x))  # [O, OH, OW, N]
    per_row = ow * n
    kernel, strides = _phase_geometry((kh, kw), stride, phases)
    for start, stop, cols in column_blocks(x, kernel, strides, padding, dilation, groups):
        if phases == 1:
            np.matmul(wmat, cols, out=out.reshape(groups, o // groups, -1)[:, :, start * per_row:stop * per_row])
            continue
        block = _scratch((phases * o, (stop - start) * per_row), out.dtype, slot="block")
        np.matmul(wmat[0], cols[0], out=block)
        # phase p holds output rows p, p+P, ...: interleave them while the block is in cache
        out[:, start:stop] = block.reshape(phases, o, stop - start, ow, n).transpose(1, 2, 0, 3, 4)
    return as_nchw(out.reshape(o, oh, ow, n))


def _output_size(x, kernel, stride, padding, dilation):
    n, _, h, w = x.shape
    oh = _window_out(h + 2 * padding[0], kernel[0], stride[0], dilation[0])
    ow = _window_out(w + 2 * padding[1], kernel[1], stride[1], dilation[1])
    return oh, ow, n


def conv2d_grad_input(g, w, input_shape, stride, padding, dilation, groups):
    """col2im of the taps wᵀ·g, a block of output rows at a time, into a batch-last input."""
    n, c, h, width = input_shape
    o, cg, kh, kw = w.shape
    oh, ow = g.shape[2:]
    wmat_t = w.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)
    rows = _channel_rows(g, groups)
    (ph, pw), (sh, sw), (dh, dw) = padding, stride, dilation
    full = np.zeros((c, h + 2 * ph, width + 2 * pw, n), dtype=np.result_type(w, g))
    for start, stop in _row_blocks(c * kh * kw, oh, ow * n * full.itemsize, _COL2IM_BLOCK_BYTES):
        taps = _scratch((groups, cg * kh * kw, (stop - start) * ow * n), full.dtype)
        np.matmul(wmat_t, rows[:, :, start * ow * n:stop * ow * n], out=taps)
        taps = taps.reshape(c, kh, kw, stop - start, ow, n)
        for i in range(kh):
            top = i * dh + start * sh
            for j in range(kw):
                full[:, top:top + sh * (stop - start - 1) + 1:sh,
                     j * dw:j * dw + sw * (ow - 1) + 1:sw] += taps[:, i, j]
    if ph or pw:
        full = np.ascontiguousarray(full[:, ph:ph + h, pw:pw + width])
    return as_nchw(full)


def conv2d_grad_weight(x, g, weight_shape, stride, padding, dilation, groups):
    o, cg, kh, kw = weight_shape
    n, _, oh, ow = g.shape
    phases = _row_phases(o, oh, kh, stride, dilation, groups)
    rows = _channel_rows(g, groups)
    if phases > 1:  # each phase's output rows become matmul rows of their own: [P*O, OH/P*OW*N]
        split = rows.reshape(o, oh // phases, phases, ow * n).transpose(2, 0, 1, 3)
        rows = np.ascontiguousarray(split).reshape(1, phases * o, -1)
    per_row = ow * n
    kernel, strides = _phase_geometry((kh, kw), stride, phases)
    gw = None
    for start, stop, cols in column_blocks(x, kernel, strides, padding, dilation, groups):
        part = np.matmul(rows[:, :, start * per_row:stop * per_row], cols.transpose(0, 2, 1))
        gw = part if gw is None else np.add(gw, part, out=gw)  # G, Og*P, Cg*(KH+P-1)*KW
    if phases > 1:  # undo the shifts of _phase_weights and add the phases up
        stacked = gw.reshape(phases, o, cg, kh + phases - 1, kw)
        gw = stacked[0, :, :, :kh].copy()
        for p in range(1, phases):
            gw += stacked[p, :, :, p:p + kh]
    return gw.reshape(weight_shape)
