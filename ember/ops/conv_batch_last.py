"""numpy implementations of conv2d and its two gradient contractions (eager mode and the
interpreter), computed in a batch-last layout: activations as [C, H, W, N] in memory.

Batch-last makes every im2col row copy, col2im add and pooling pass run over long contiguous
rows (OW*N floats, not OW), and the matmul writes [O, OH, OW, N] directly. Results are returned
as [N, C, H, W]-shaped views of that memory; numpy's elementwise ops keep the layout, so the
next conv or pool reads it without a copy.
"""
import threading

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_TRANSPOSE_ROWS = 8  # images moved per block when making an NCHW array batch-last: stays in cache

# im2col columns are big, short-lived and the same size step after step: a fresh array each
# time costs more in page faults than the copy itself, so each thread keeps one workspace
# (up to this size; larger columns are rare and pay for a fresh array).
_WORKSPACE_LIMIT_BYTES = 64 << 20
_workspace = threading.local()


def _scratch(shape, dtype):
    """An uninitialised array of `shape` in this thread's workspace; valid until the next call."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes > _WORKSPACE_LIMIT_BYTES:
        return np.empty(shape, dtype=dtype)
    buffer = getattr(_workspace, "buffer", None)
    if buffer is None or buffer.nbytes < nbytes:
        buffer = _workspace.buffer = np.empty(nbytes, dtype=np.uint8)
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


def columns(x, kernel, stride, padding, dilation, groups):
    """im2col as [G, Cg*KH*KW, OH*OW*N]: a row per weight tap in the weight's (C, KH, KW) order,
    each row a copy of contiguous runs of OW*N values. Lives in the workspace: use it before
    the next call."""
    padded = _padded(batch_last(x), padding)
    kh, kw = kernel
    (sh, sw), (dh, dw) = stride, dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    windows = sliding_window_view(padded, span, axis=(1, 2))[:, ::sh, ::sw, :, ::dh, ::dw]  # C,OH,OW,N,KH,KW
    c, oh, ow, n = windows.shape[:4]
    cols = _scratch((c, kh, kw, oh, ow, n), padded.dtype)
    np.copyto(cols, windows.transpose(0, 4, 5, 1, 2, 3))
    return cols.reshape(groups, (c // groups) * kh * kw, oh * ow * n), (oh, ow, n)


def conv2d(x, w, stride, padding, dilation, groups):
    cols, (oh, ow, n) = columns(x, w.shape[2:], stride, padding, dilation, groups)
    out = np.matmul(w.reshape(groups, w.shape[0] // groups, -1), cols)  # G, Og, OH*OW*N
    return as_nchw(out.reshape(w.shape[0], oh, ow, n))


def conv2d_grad_input(g, w, input_shape, stride, padding, dilation, groups):
    n, c, h, width = input_shape
    o, cg, kh, kw = w.shape
    oh, ow = g.shape[2:]
    wmat = w.reshape(groups, o // groups, cg * kh * kw)
    taps = np.matmul(wmat.transpose(0, 2, 1), _channel_rows(g, groups))  # G, Cg*KH*KW, OH*OW*N
    taps = taps.reshape(c, kh, kw, oh, ow, n)
    (ph, pw), (sh, sw), (dh, dw) = padding, stride, dilation
    full = np.zeros((c, h + 2 * ph, width + 2 * pw, n), dtype=taps.dtype)  # col2im, batch last
    for i in range(kh):
        for j in range(kw):
            full[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw] += taps[:, i, j]
    if ph or pw:
        full = np.ascontiguousarray(full[:, ph:ph + h, pw:pw + width])
    return as_nchw(full)


def conv2d_grad_weight(x, g, weight_shape, stride, padding, dilation, groups):
    cols, _ = columns(x, weight_shape[2:], stride, padding, dilation, groups)
    gw = np.matmul(_channel_rows(g, groups), cols.transpose(0, 2, 1))  # G, Og, Cg*KH*KW
    return gw.reshape(weight_shape)
