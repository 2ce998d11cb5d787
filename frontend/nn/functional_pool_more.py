"""More pooling of ember.nn.functional (re-exported there): the max pools with PyTorch's flat
indices (max_pool1d/2d/3d_with_indices, adaptive_max_pool1d/2d/3d[_with_indices]), their partial
inverses max_unpool1d/2d/3d, and the power-average pools lp_pool1d/2d/3d.

The max pools share functional_conv3d's window tables (`take`, `argmax`, `gather`); unpooling
scatters each value to its index in a zero output (`index_put`); lp_pool composes avg_pool as
torch.nn.functional does.
"""
import math

import numpy as np

from ember.ops import PRIMITIVES as P
from ember.frontend import math_ops as M
from ember.frontend import shape_ops as S
from ember.frontend.linalg import scalar_type_name
from .functional_conv import (adaptive_max_pool2d as _adaptive_max_pool2d_values, avg_pool1d, avg_pool2d,
                              max_pool1d as _max_pool1d_values, max_pool2d as _max_pool2d_values, pair,
                              where_named)
from .functional_conv3d import (adaptive_output_sizes, adaptive_window_table, avg_pool3d, check_adaptive_input,
                                check_pool_rank, max_over_windows, max_pool3d, max_pool_with_indices, pool_error)


# ----------------------------------------------------------------------------- max pooling with indices

def max_pool1d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    """(values, indices) of torch.nn.functional.max_pool1d: indices are positions along L."""
    return max_pool_with_indices("max_pool1d", input, 1, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    """(values, indices) of torch.nn.functional.max_pool2d: indices are flat positions in H*W."""
    return max_pool_with_indices("max_pool2d", input, 2, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool3d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=False):
    """(values, indices) of torch.nn.functional.max_pool3d: indices are flat positions in D*H*W."""
    return max_pool_with_indices("max_pool3d", input, 3, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool1d: the values, or (values, indices) with return_indices."""
    if return_indices:
        return max_pool1d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _max_pool1d_values(input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d: the values, or (values, indices) with return_indices."""
    if return_indices:
        return max_pool2d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _max_pool2d_values(input, kernel_size, stride, padding, dilation, ceil_mode)


# ----------------------------------------------------------------------------- adaptive max pooling

_ADAPTIVE_RANK_WORDS = {
    1: lambda x: (f"Expected 2 to 3 dimensions, but got {x.ndim}-dimensional tensor for argument #1 'self' "
                  f"(while checking arguments for adaptive_max_pool1d)"),
    2: lambda x: f"adaptive_max_pool2d(): Expected 3D or 4D tensor, but got: {list(x.shape)}",
    3: lambda x: f"adaptive_max_pool3d(): Expected 4D or 5D tensor, but got: {list(x.shape)}",
}


def _adaptive_max(input, output_size, dims):
    op = f"adaptive_max_pool{dims}d"
    if dims == 1:
        if output_size is None:
            raise TypeError("adaptive_max_pool1d(): argument 'output_size' (position 2) must be tuple of ints, "
                            "not NoneType")
        if isinstance(output_size, (list, tuple)) and len(output_size) != 1:
            raise RuntimeError(f"adaptive_max_pool1d() argument 'output_size' should contain one int "
                               f"(got {len(output_size)})")
    check_pool_rank(op, input, dims, _ADAPTIVE_RANK_WORDS[dims](input))
    outs = adaptive_output_sizes(op, input, output_size, dims,
                                 f"{op}(): internal error: output_size.size() must be {dims}")
    if min(outs) < 0:
        shape = list(input.shape[:-dims]) + ([1] if dims == 1 else []) + list(outs)
        raise pool_error(op, f"Trying to create tensor with negative dimension {min(outs)}: {shape}", input)
    check_adaptive_input(op, input, dims, "adaptive_max_pool3d_cpu" if dims == 3 else "adaptive_max_pool2d")
    table = adaptive_window_table(tuple(input.shape[-dims:]), outs)
    return max_over_windows(input, dims, table, outs)


def adaptive_max_pool1d_with_indices(input, output_size, return_indices=False):
    """(values, indices) of torch.nn.functional.adaptive_max_pool1d (bins as adaptive_avg_pool1d's)."""
    return _adaptive_max(input, output_size, 1)


def adaptive_max_pool2d_with_indices(input, output_size, return_indices=False):
    """(values, indices) of torch.nn.functional.adaptive_max_pool2d; indices are flat in H*W."""
    return _adaptive_max(input, output_size, 2)


def adaptive_max_pool3d_with_indices(input, output_size, return_indices=False):
    """(values, indices) of torch.nn.functional.adaptive_max_pool3d; indices are flat in D*H*W."""
    return _adaptive_max(input, output_size, 3)


def adaptive_max_pool1d(input, output_size, return_indices=False):
    values, indices = _adaptive_max(input, output_size, 1)
    return (values, indices) if return_indices else values


def adaptive_max_pool2d(input, output_size, return_indices=False):
    if return_indices:
        return _adaptive_max(input, output_size, 2)
    return _adaptive_max_pool2d_values(input, output_size)


def adaptive_max_pool3d(input, output_size, return_indices=False):
    values, indices = _adaptive_max(input, output_size, 3)
    return (values, indices) if return_indices else values


# ----------------------------------------------------------------------------- unpooling

def unpool_output_size(input, kernel, stride, padding, output_size):
    """torch.nn.functional._unpool_output_size: the default (L-1)*stride + kernel - 2*padding, or
    `output_size` (spatial, or with N and C first) within a stride of it."""
    dims = len(kernel)
    default = [(input.shape[-dims + d] - 1) * stride[d] + kernel[d] - 2 * padding[d] for d in range(dims)]
    if output_size is None:
        sizes = default
    else:
        sizes = list(output_size)
        if len(sizes) == dims + 2:
            sizes = sizes[2:]
        if len(sizes) != dims:
            raise ValueError(f"output_size should be a sequence containing {dims} or {dims + 2} elements, but it "
                             f"has a length of '{len(sizes)}'")
        for d in range(dims):
            low, high = default[d] - stride[d], default[d] + stride[d]
            if not low < sizes[d] < high:
                raise ValueError(f'invalid output_size "{output_size}" (dim {d} must be between {low} and {high})')
    for d, size in enumerate(sizes):
        if size < 0:
            raise ValueError(f"max_unpooling: output_size must contain non-negative spatial dimensions, but got "
                             f"output_size[{d}]={size}")
    return tuple(int(s) for s in sizes)


def _max_unpool(input, indices, dims, kernel_size, stride, padding, output_size):
    """Scatter each value of `input` to its flat index in a zero [..., *output_size] (the C++
    checks of max_unpooling2d/3d, in their order and words; 1-D runs as 2-D over [L, 1])."""
    op = f"max_unpool{dims}d"
    kernel = pair(kernel_size, dims, "kernel_size")
    stride = kernel if stride is None else pair(stride, dims, "stride")
    padding = pair(padding, dims, "padding")
    sizes = unpool_output_size(input, kernel, stride, padding, output_size)
    shown = sizes + (1,) if dims == 1 else sizes  # PyTorch unpools 1-D as 2-D over [L, 1]
    planar = dims + (dims == 1)
    if indices._data.dtype != np.int64:
        words = "elements in indices should be type int64"
        if planar == 2:
            words += f" but got: {scalar_type_name(indices.dtype)}"
        raise pool_error(op, words, input)
    rank = input.ndim + (dims == 1)
    if rank not in (planar + 1, planar + 2):
        ranks = "3d or 4d" if planar == 2 else "4d or 5d"
        raise pool_error(op, f"Input to max_unpooling{planar}d should be a {ranks} Tensor, but got a tensor with "
                             f"{rank} dimensions.", input)
    if tuple(input.shape) != tuple(indices.shape):
        extra = [1] if dims == 1 else []
        raise pool_error(op, f"Expected shape of indices to be same as that of the input tensor "
                             f"({list(input.shape) + extra}) but got indices tensor with shape: "
                             f"{list(indices.shape) + extra}", input)
    for axis in range(1, input.ndim):
        if input.shape[axis] == 0:
            raise pool_error(op, f"max_unpooling{planar}d_forward_out_cpu(): Expected input to have non-zero size "
                                 f"for non-batch dimensions, but got {list(input.shape) + [1] * (dims == 1)} with "
                                 f"dimension {axis} being empty.", input)
    if not input.is_floating_point():
        raise NotImplementedError(f"{where_named(op)}: \"max_unpool{planar}d\" not implemented for "
                                  f"'{scalar_type_name(input.dtype)}'")
    plane = math.prod(sizes)
    flat_indices = indices._data.reshape(-1)
    bad = flat_indices[(flat_indices < 0) | (flat_indices >= plane)]
    if bad.size:
        raise pool_error(op, f"Found an invalid max index: {int(bad[0])} (output volumes are of size "
                             f"{'x'.join(map(str, shown))})", input)
    lead = tuple(input.shape[:-dims])
    zeros = P["constant"].bind(value=0, shape=lead + (plane,), dtype=input.dtype.name)
    count = math.prod(input.shape[-dims:])
    out = S.scatter(zeros, len(lead), S.reshape(indices, lead + (count,)), S.reshape(input, lead + (count,)))
    return S.reshape(out, lead + sizes)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """torch.nn.functional.max_unpool1d: [N, C, L] (or [C, L]) values back to their indices along L_out."""
    return _max_unpool(input, indices, 1, kernel_size, stride, padding, output_size)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """torch.nn.functional.max_unpool2d: values back to their flat indices in H_out*W_out."""
    return _max_unpool(input, indices, 2, kernel_size, stride, padding, output_size)


def max_unpool3d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """torch.nn.functional.max_unpool3d: values back to their flat indices in D_out*H_out*W_out."""
    return _max_unpool(input, indices, 3, kernel_size, stride, padding, output_size)


# ----------------------------------------------------------------------------- power-average pooling

def _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, dims, max_pool, avg_pool):
    """torch's lp_pool{1,2,3}d: (sum of x**p over each window) ** (1/p), computed as PyTorch does,
    from avg_pool times the window size (so ceil_mode's clipped windows match), and max_pool of
    |x| for p = +-inf."""
    if norm_type == math.inf:
        return max_pool(M.abs(input), kernel_size, stride, 0, 1, ceil_mode)
    if norm_type == -math.inf:
        return M.neg(max_pool(M.neg(M.abs(input)), kernel_size, stride, 0, 1, ceil_mode))
    window = math.prod(pair(kernel_size, dims, "kernel_size"))
    powered = M.pow(input, norm_type)
    out = avg_pool(powered, kernel_size, stride, 0, ceil_mode) if stride is not None else \
        avg_pool(powered, kernel_size, padding=0, ceil_mode=ceil_mode)
    # PyTorch writes sign(out) * relu(|out|): out itself, with a zero gradient where out == 0
    # (there the root's slope is infinite); a select gives both without multiplying inf by 0
    return M.pow(M.mul(M.where(M.ne(out, 0), out, 0), window), 1.0 / norm_type)


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """torch.nn.functional.lp_pool1d over [N, C, L] or [C, L]."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 1, max_pool1d, avg_pool1d)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """torch.nn.functional.lp_pool2d over [N, C, H, W] or [C, H, W]."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 2, max_pool2d, avg_pool2d)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """torch.nn.functional.lp_pool3d over [N, C, D, H, W] or [C, D, H, W]."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 3, max_pool3d, avg_pool3d)
