"""torch's window functions for signal processing: hann, hamming, blackman, bartlett and kaiser.

Factory functions (no inputs to differentiate), computed in numpy in the requested dtype with
PyTorch's formulas step by step (a periodic window is the symmetric one of length N + 1 without
its last value), so values agree with PyTorch's to the last bits of the dtype.
"""
import math

import numpy as np

from ember import dtypes
from ember.ops.special import bessel_i0
from .tensor import Tensor


def _window_dtype(name, dtype, requires_grad):
    dtype = dtypes.as_dtype(dtype) if dtype is not None else dtypes.defaults.floating
    if not dtype.is_floating_point:
        from .linalg import cpp_type_name
        flag = "true" if requires_grad else "false (default)"
        raise RuntimeError(f"{name} expects floating point dtypes, got: TensorOptions(dtype={cpp_type_name(dtype)}, "
                           f"device=cpu, layout=Strided (default), requires_grad={flag}, pinned_memory=false, "
                           f"memory_format=(nullopt))")
    return dtype


def _window(name, window_length, periodic, dtype, requires_grad, values):
    """`values(n, np_dtype)` of the symmetric window of length n, periodic-trimmed, as a tensor."""
    dtype = _window_dtype(name, dtype, requires_grad)
    if window_length < 0:
        raise RuntimeError(f"{name} requires non-negative window_length, got window_length={window_length}")
    np_dtype = dtype.np if dtype.np.kind == "f" else np.dtype(np.float32)  # (bfloat16: computed in float32)
    if window_length <= 1:
        data = np.ones(window_length, np_dtype)
    else:
        n = window_length + 1 if periodic else window_length
        data = values(n, np_dtype)[:window_length]
    out = Tensor._wrap(np.asarray(data).astype(dtype.np))
    return out.requires_grad_(True) if requires_grad else out


def _scaled_range(n, step, np_dtype):
    """arange(n) * step in the dtype, as arange(...).mul_(step)."""
    return np.arange(n, dtype=np_dtype) * np.asarray(step, np_dtype)


def hamming_window(window_length, periodic=True, alpha=0.54, beta=0.46, *, dtype=None, layout=None, device=None,
                   pin_memory=False, requires_grad=False):
    """alpha - beta cos(2 pi n / (N - 1))."""
    def values(n, np_dtype):
        cosine = np.cos(_scaled_range(n, math.pi * 2.0 / (n - 1), np_dtype))
        return cosine * np.asarray(-beta, np_dtype) + np.asarray(alpha, np_dtype)
    return _window("hamming_window", window_length, periodic, dtype, requires_grad, values)


def hann_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, requires_grad=False):
    """0.5 - 0.5 cos(2 pi n / (N - 1)) (hamming_window with alpha = beta = 0.5)."""
    def values(n, np_dtype):
        cosine = np.cos(_scaled_range(n, math.pi * 2.0 / (n - 1), np_dtype))
        return cosine * np.asarray(-0.5, np_dtype) + np.asarray(0.5, np_dtype)
    return _window("hann_window", window_length, periodic, dtype, requires_grad, values)


def blackman_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, requires_grad=False):
    """0.42 - 0.5 cos(2 pi n / (N - 1)) + 0.08 cos(4 pi n / (N - 1))."""
    def values(n, np_dtype):
        phase = _scaled_range(n, math.pi / (n - 1), np_dtype)
        four = np.cos(phase * np.asarray(4, np_dtype)) * np.asarray(0.08, np_dtype)
        two = np.cos(phase * np.asarray(2, np_dtype)) * np.asarray(0.5, np_dtype)
        return (four - two) + np.asarray(0.42, np_dtype)
    return _window("blackman_window", window_length, periodic, dtype, requires_grad, values)


def bartlett_window(window_length, periodic=True, *, dtype=None, layout=None, device=None, requires_grad=False):
    """The triangle 2n / (N - 1) up to the middle, 2 - 2n / (N - 1) after it."""
    def values(n, np_dtype):
        window = _scaled_range(n, 2.0 / (n - 1), np_dtype)
        half = ((n - 1) >> 1) + 1
        window[half:] = np.asarray(2, np_dtype) - window[half:]
        return window
    return _window("bartlett_window", window_length, periodic, dtype, requires_grad, values)


def kaiser_window(window_length, periodic=True, beta=12.0, *, dtype=None, layout=None, device=None,
                  requires_grad=False):
    """i0(beta sqrt(1 - ((n - (N - 1)/2) / ((N - 1)/2))^2)) / i0(beta)."""
    def values(n, np_dtype):
        alpha = (n - 1) / 2.0
        position = np.arange(n, dtype=np.float64)
        argument = beta * np.sqrt(np.abs(1 - ((position - alpha) / alpha) ** 2))
        return (bessel_i0(argument) / bessel_i0(np.asarray(float(beta)))).astype(np_dtype)
    return _window("kaiser_window", window_length, periodic, dtype, requires_grad, values)
