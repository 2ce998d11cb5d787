"""Movement primitives: pure index maps that move data without arithmetic (reshape, permute,
broadcast_to, slice, pad, concat, flip, unfold_windows) and fold_windows, the scatter-add
that is unfold's transpose. In eager mode most return numpy views.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import compose as C
from .registry import OpError, Spec, describe, register, PRIMITIVES
from .shape_rules import normalize_axis
from ember import dtypes


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


# ----------------------------------------------------------------------------- reshape / permute / broadcast

def _reshape_rule(x, shape):
    if _count(shape) != _count(x.shape) or any(d < 0 for d in shape):
        raise OpError("reshape", f"shape {list(shape)} is invalid for input {describe(x)} "
                                 f"of {_count(x.shape)} elements")
    return Spec(tuple(shape), x.dtype)


register("reshape", "movement", lambda x, shape: x.reshape(shape), _reshape_rule,
         lambda g, out, x, shape: (C.reshape(g, x.shape),),
         view=True, view_update=lambda base, new, shape: C.reshape(new, base.shape))


def _permute_rule(x, perm):
    if sorted(perm) != list(range(len(x.shape))):
        raise OpError("permute", f"{list(perm)} is not a permutation of the dims of {describe(x)}")
    return Spec(tuple(x.shape[p] for p in perm), x.dtype)


def _inverse(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


register("permute", "movement", lambda x, perm: x.transpose(perm), _permute_rule,
         lambda g, out, x, perm: (C.permute(g, _inverse(perm)),),
         view=True, view_update=lambda base, new, perm: C.permute(new, _inverse(perm)))


def _broadcast_rule(x, shape):
    lead = len(shape) - len(x.shape)
    if lead < 0 or any(d != 1 and d != shape[lead + i] for i, d in enumerate(x.shape)):
        raise OpError("broadcast_to", f"cannot expand {describe(x)} to shape {list(shape)}")
    return Spec(tuple(shape), x.dtype)


register("broadcast_to", "movement", lambda x, shape: np.broadcast_to(x, shape), _broadcast_rule,
         lambda g, out, x, shape: (C.sum_to(g, x.shape),), view=True)  # never written through


# ----------------------------------------------------------------------------- slice / pad

def _slice_rule(x, starts, stops, steps):
    if not len(starts) == len(stops) == len(steps) == len(x.shape):
        raise OpError("slice", f"needs one start/stop/step per dim of {describe(x)}")
    out = []
    for axis, (lo, hi, st, d) in enumerate(zip(starts, stops, steps, x.shape)):
        if st < 1 or not 0 <= lo <= d or not lo <= hi <= d:
            raise OpError("slice", f"[{lo}:{hi}:{st}] is out of range for dim {axis} of {describe(x)}")
        out.append(max(0, -(-(hi - lo) // st)))
    return Spec(tuple(out), x.dtype)


def _slice(x, starts, stops, steps):
    return x[tuple(slice(lo, hi, st) for lo, hi, st in zip(starts, stops, steps))]


def _slice_vjp(g, out, x, starts, stops, steps):
    lo = list(starts)
    interior = [st - 1 for st in steps]
    hi = []
    for start, step, n, d in zip(starts, steps, out.shape, x.shape):
        used = start + (n - 1) * step + 1 if n else start
        hi.append(d - used)
    if any(n == 0 for n in out.shape):
        return (C.zeros(x.shape, g),)
    return (PRIMITIVES["pad"].bind(g, lo=tuple(lo), hi=tuple(hi), interior=tuple(interior), value=0),)


def _slice_view_update(base, new, starts, stops, steps):
    return PRIMITIVES["slice_update"].bind(base, new, starts=starts, stops=stops, steps=steps)


register("slice", "movement", _slice, _slice_rule, _slice_vjp, view=True, view_update=_slice_view_update)


def _pad_rule(x, lo, hi, interior, value):
    if not len(lo) == len(hi) == len(interior) == len(x.shape):
        raise OpError("pad", f"needs one (lo, hi, interior) per dim of {describe(x)}")
    if min(lo + hi + interior, default=0) < 0:
        raise OpError("pad", f"negative padding {lo}/{hi}/{interior} for {describe(x)}")
    return Spec(tuple(l + h + d + max(d - 1, 0) * i for l, h, i, d in zip(lo, hi, interior, x.shape)), x.dtype)


def _pad(x, lo, hi, interior, value):
    shape = _pad_rule(Spec(x.shape, dtypes.from_numpy(x.dtype)), lo, hi, interior, value).shape
    out = np.full(shape, value, dtype=x.dtype)
    out[tuple(slice(l, l + (d - 1) * (i + 1) + 1 if d else l, i + 1)
              for l, i, d in zip(lo, interior, x.shape))] = x
    return out


def _pad_vjp(g, out, x, lo, hi, interior, value):
    stops = tuple(l + (d - 1) * (i + 1) + 1 if d else l for l, i, d in zip(lo, interior, x.shape))
    steps = tuple(i + 1 for i in interior)
    return (PRIMITIVES["slice"].bind(g, starts=tuple(lo), stops=stops, steps=steps),)


register("pad", "movement", _pad, _pad_rule, _pad_vjp)


# ----------------------------------------------------------------------------- concat / flip

def _concat_rule(*xs, axis):
    first = xs[0]
    axis = normalize_axis("concat", axis, len(first.shape))
    total = 0
    for x in xs:
        if x.dtype is not first.dtype or len(x.shape) != len(first.shape) or any(
                a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != axis):
            operands = ", ".join(describe(v) for v in xs)
            raise OpError("concat", f"tensors must match except in dim {axis}, got {operands}")
        total += x.shape[axis]
    shape = list(first.shape)
    shape[axis] = total
    return Spec(tuple(shape), first.dtype)


def _concat(*xs, axis):
    return np.concatenate(xs, axis=axis)


def _concat_vjp(g, out, *xs, axis):
    grads, offset = [], 0
    for x in xs:
        starts = [0] * len(g.shape)
        stops = list(g.shape)
        starts[axis], stops[axis] = offset, offset + x.shape[axis]
        offset += x.shape[axis]
        grads.append(PRIMITIVES["slice"].bind(g, starts=tuple(starts), stops=tuple(stops),
                                             steps=(1,) * len(g.shape)))
    return tuple(grads)


register("concat", "movement", _concat, _concat_rule, _concat_vjp)


def _flip_rule(x, axes):
    for a in axes:
        normalize_axis("flip", a, len(x.shape))
    return Spec(x.shape, x.dtype)


register("flip", "movement", lambda x, axes: np.flip(x, axes).copy(), _flip_rule,  # a copy, as PyTorch's
         lambda g, out, x, axes: (PRIMITIVES["flip"].bind(g, axes=axes),))


# ----------------------------------------------------------------------------- sliding windows (pooling, conv VJPs)

def _window_out(size, kernel, stride, dilation):
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def _unfold_rule(x, kernel, stride, dilation):
    if len(x.shape) < 2:
        raise OpError("unfold_windows", f"needs at least 2 dims, got {describe(x)}")
    *lead, h, w = x.shape
    oh = _window_out(h, kernel[0], stride[0], dilation[0])
    ow = _window_out(w, kernel[1], stride[1], dilation[1])
    if oh < 1 or ow < 1:
        raise OpError("unfold_windows", f"window {tuple(kernel)} (dilation {tuple(dilation)}) "
                                        f"does not fit in input {describe(x)}")
    return Spec(tuple(lead) + (oh, ow) + tuple(kernel), x.dtype)


def _unfold(x, kernel, stride, dilation):
    """[..., H, W] -> [..., OH, OW, KH, KW], a strided view (no copy)."""
    return window_view(x, kernel, stride, dilation, axes=(x.ndim - 2, x.ndim - 1))


def window_view(x, kernel, stride, dilation, axes):
    """The windows of x over two axes, as a read-only strided view: those axes become the
    window counts (OH, OW) in place, and the window's own axes (KH, KW) go last. (One
    as_strided call: numpy's sliding_window_view validates at 3x the cost.)"""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    row, col = axes
    shape, strides = list(x.shape), list(x.strides)
    shape[row] = _window_out(x.shape[row], kh, sh, dh)
    shape[col] = _window_out(x.shape[col], kw, sw, dw)
    if shape[row] < 1 or shape[col] < 1:
        raise ValueError(f"window {tuple(kernel)} does not fit in {x.shape}")  # the shape rule explains
    strides[row], strides[col] = x.strides[row] * sh, x.strides[col] * sw
    return as_strided(x, tuple(shape) + (kh, kw),
                      tuple(strides) + (x.strides[row] * dh, x.strides[col] * dw), writeable=False)


def _unfold_vjp(g, out, x, kernel, stride, dilation):
    return (PRIMITIVES["fold_windows"].bind(g, size=tuple(x.shape[-2:]), stride=stride, dilation=dilation),)


register("unfold_windows", "movement", _unfold, _unfold_rule, _unfold_vjp, view=True)  # overlapping windows


def _fold_rule(g, size, stride, dilation):
    if len(g.shape) < 4:
        raise OpError("fold_windows", f"needs [..., OH, OW, KH, KW], got {describe(g)}")
    *lead, oh, ow, kh, kw = g.shape
    return Spec(tuple(lead) + tuple(size), g.dtype)


def _fold(g, size, stride, dilation):
    """Sum each window back to where it came from: the transpose of unfold_windows. The result
    keeps the memory order of g's leading axes (a batch-last g gives a batch-last result)."""
    *lead, oh, ow, kh, kw = g.shape
    sh, sw = stride
    dh, dw = dilation
    # windows that tile the input write each element once; overlapping ones add up
    tiled = (sh, sw) == (kh, kw) and (dh, dw) == (1, 1)
    covered = tiled and tuple(size) == (oh * kh, ow * kw)  # every element written: no zero fill
    if covered:
        s_oh, s_ow, s_kh, s_kw = g.strides[-4:]
        if s_kh and s_kw and s_oh == kh * s_kh and s_ow == kw * s_kw:
            # g already lies in memory as the input does (a pooling VJP's windows follow the
            # batch-last input's order): the fold is a view
            return as_strided(g, tuple(lead) + tuple(size), g.strides[:-4] + (s_kh, s_kw))
    out = _array_in_layout_of(g, tuple(lead) + tuple(size), np.empty if covered else np.zeros)
    for i in range(kh):
        for j in range(kw):
            target = (Ellipsis, slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
                      slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))
            if tiled:
                out[target] = g[..., i, j]
            else:
                out[target] += g[..., i, j]
    return out


def _array_in_layout_of(windows, shape, make):
    """A new array (`make` is np.zeros or np.empty) of `shape` ([..., H, W]) whose axes lie in
    memory in the order of the windows' [..., OH, OW] axes (largest stride first)."""
    strides = windows.strides[:-2]
    order = sorted(range(len(shape)), key=lambda axis: -abs(strides[axis]))
    memory = make(tuple(shape[axis] for axis in order), dtype=windows.dtype)
    return memory.transpose(np.argsort(order))


def _fold_vjp(g, out, windows, size, stride, dilation):
    kernel = tuple(windows.shape[-2:])
    return (PRIMITIVES["unfold_windows"].bind(g, kernel=kernel, stride=stride, dilation=dilation),)


register("fold_windows", "window", _fold, _fold_rule, _fold_vjp)
