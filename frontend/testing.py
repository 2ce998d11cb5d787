"""`ember.testing.assert_close` (torch.testing.assert_close): tensors, numbers and nested
sequences or mappings of them compared elementwise within rtol/atol (defaults by dtype, as
torch's), with torch's messages for mismatched shapes, dtypes and values."""
import math

import numpy as np

from ember import dtypes
from .tensor import Tensor

# (rtol, atol) by dtype, as torch.testing's defaults; integers and bools compare exactly
DEFAULT_TOLERANCES = {"float16": (1e-3, 1e-5), "bfloat16": (1.6e-2, 1e-5), "float32": (1.3e-6, 1e-5),
                      "float64": (1e-7, 1e-7)}


def assert_close(actual, expected, *, allow_subclasses=True, rtol=None, atol=None, equal_nan=False,
                 check_device=True, check_dtype=True, check_layout=True, check_stride=False, msg=None):
    if (rtol is None) != (atol is None):
        raise ValueError(f"Both 'rtol' and 'atol' must be either specified or omitted, but got no value for "
                         f"{'atol' if atol is None else 'rtol'}.")
    _compare(actual, expected, rtol, atol, equal_nan, check_dtype, msg, path=())


def _compare(actual, expected, rtol, atol, equal_nan, check_dtype, msg, path):
    if isinstance(actual, dict) and isinstance(expected, dict):
        if set(actual) != set(expected):
            _fail(f"The keys of the mappings do not match:\nactual: {sorted(actual)}\nexpected: {sorted(expected)}",
                  msg, path)
        for key in expected:
            _compare(actual[key], expected[key], rtol, atol, equal_nan, check_dtype, msg, path + (key,))
        return
    if isinstance(actual, (list, tuple)) and isinstance(expected, (list, tuple)) \
            and not isinstance(actual, str):
        if len(actual) != len(expected):
            _fail(f"The length of the sequences mismatch: {len(actual)} != {len(expected)}", msg, path)
        for k, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, rtol, atol, equal_nan, check_dtype, msg, path + (k,))
        return
    numbers = (int, float, bool, complex)
    if isinstance(actual, numbers) and isinstance(expected, numbers):
        a, e = np.asarray(actual), np.asarray(expected)
        if check_dtype and type(actual) is not type(expected):
            _fail(f"The values for attribute 'dtype' do not match: {type(actual)} != {type(expected)}.", msg, path)
        if rtol is None:  # Python floats compare as float64 (torch's default), ints and bools exactly
            rtol, atol = DEFAULT_TOLERANCES["float64"] if isinstance(actual, float) or isinstance(expected, float) \
                else (0.0, 0.0)
        _values(a, e, rtol, atol, equal_nan, msg, path, "Scalars")
        return
    if not isinstance(actual, Tensor) or not isinstance(expected, Tensor):
        raise TypeError(f"No comparison pair was able to handle inputs of type {type(actual)} and "
                        f"{type(expected)}.")
    if tuple(actual.shape) != tuple(expected.shape):
        _fail(f"The values for attribute 'shape' do not match: {actual.shape} != {expected.shape}.", msg, path)
    if check_dtype and actual.dtype != expected.dtype:
        _fail(f"The values for attribute 'dtype' do not match: {actual.dtype} != {expected.dtype}.", msg, path)
    a = np.asarray(actual.detach()._data)
    e = np.asarray(expected.detach()._data)
    if rtol is None:
        kinds = [dtypes.as_dtype(t.dtype).name for t in (actual, expected)]
        pairs = [DEFAULT_TOLERANCES.get(kind, (0.0, 0.0)) for kind in kinds]
        rtol, atol = max(p[0] for p in pairs), max(p[1] for p in pairs)
    _values(a, e.astype(a.dtype) if not check_dtype else e, rtol, atol, equal_nan, msg, path, "Tensor-likes")


def _values(a, e, rtol, atol, equal_nan, msg, path, what):
    rtol = 0.0 if rtol is None else rtol
    atol = 0.0 if atol is None else atol
    if a.dtype == np.bool_ or e.dtype == np.bool_:
        close = a == e
    else:
        wide = np.result_type(a.dtype, e.dtype, np.float64)
        a64, e64 = a.astype(wide), e.astype(wide)
        with np.errstate(invalid="ignore", over="ignore"):
            close = np.isclose(a64, e64, rtol=rtol, atol=atol, equal_nan=equal_nan)
            close |= (a64 == e64)  # infinities of one sign
    if close.all():
        return
    mismatched = int((~close).sum())
    total = close.size
    if a.ndim == 0:
        detail = (f"Scalars are not close!\n\n"
                  f"Expected {e.item()} but got {a.item()}.\n"
                  f"Absolute difference: {abs(float(a) - float(e))} (up to {atol} allowed)\n"
                  f"Relative difference: {_relative(float(a), float(e))} (up to {rtol} allowed)")
    else:
        diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
        diff = np.where(close, 0.0, np.nan_to_num(diff, nan=np.inf))
        worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
        relative = diff / np.abs(e.astype(np.float64))
        relative = np.where(close, 0.0, np.nan_to_num(relative, nan=np.inf))
        worst_relative = np.unravel_index(int(np.argmax(relative)), diff.shape)
        detail = (f"{what} are not close!\n\n"
                  f"Mismatched elements: {mismatched} / {total} ({mismatched / total * 100:.1f}%)\n"
                  f"Greatest absolute difference: {diff[worst]} at index {tuple(int(i) for i in worst)} "
                  f"(up to {atol} allowed)\n"
                  f"Greatest relative difference: {relative[worst_relative]} at index "
                  f"{tuple(int(i) for i in worst_relative)} (up to {rtol} allowed)")
    _fail(detail, msg, path)


def _relative(a, e):
    return math.inf if e == 0 and a != 0 else abs(a - e) / abs(e) if e else 0.0


def _fail(detail, msg, path):
    if path:
        detail += "\n\nThe failure occurred for item " + "".join(f"[{p!r}]" for p in path)
    raise AssertionError(msg if isinstance(msg, str) else msg(detail) if callable(msg) else detail)


__all__ = ["assert_close"]
