"""Shape and dtype rules shared by the primitives: broadcasting, axes, and error wording.

Every rule raises `OpError` naming the op and the operands as `f32[64,120]`, so a user's
mistake reads the same in eager mode, during tracing and in the IR verifier.
"""
from .registry import OpError, Spec, describe


def broadcast_shapes(op, *specs):
    """numpy/PyTorch broadcasting of the operands' shapes, or an OpError naming them."""
    ndim = max(len(s.shape) for s in specs)
    out = []
    for axis in range(ndim):
        size = 1
        for s in specs:
            offset = axis - (ndim - len(s.shape))
            if offset < 0:
                continue
            d = s.shape[offset]
            if d == 1:
                continue
            if size != 1 and d != size:
                shapes = " and ".join(describe(x) for x in specs)
                raise OpError(op, f"shapes {shapes} are not broadcastable "
                                  f"(dim {axis - ndim} is {size} vs {d})")
            size = d
        out.append(size)
    return tuple(out)


def same_dtype(op, *specs):
    first = specs[0].dtype
    for s in specs[1:]:
        if s.dtype is not first:
            operands = ", ".join(describe(x) for x in specs)
            raise OpError(op, f"operands must have one dtype, got {operands}")
    return first


def require_float(op, spec):
    if not spec.dtype.is_floating_point:
        raise OpError(op, f"needs a floating-point operand, got {describe(spec)}")


def normalize_axis(op, axis, ndim):
    if not -max(ndim, 1) <= axis < max(ndim, 1):
        raise OpError(op, f"dim {axis} is out of range for a tensor of {ndim} dims "
                          f"(expected in [{-max(ndim, 1)}, {max(ndim, 1) - 1}])")
    return axis % ndim if ndim else 0


def normalize_axes(op, axes, ndim):
    """A sorted tuple of non-negative axes; None means all of them."""
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, int):
        axes = (axes,)
    out = tuple(sorted({normalize_axis(op, a, ndim) for a in axes}))
    if len(out) != len(tuple(axes)):
        raise OpError(op, f"dims {tuple(axes)} name the same dim twice")
    return out


def reduced_shape(shape, axes, keepdims):
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def spec(shape, dtype):
    return Spec(tuple(shape), dtype)
