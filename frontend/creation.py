"""Tensor creation: ember.tensor, zeros, ones, arange, randn, ... and the legacy constructors.

Created tensors are leaves. While tracing, a tensor created inside the traced code is a
constant of the graph (its values are known at trace time); random ones are drawn eagerly.
"""
import builtins
import operator

import numpy as np

from ember import dtypes
from .random import generator_or_default
from .tensor import Tensor
from .device_tensors import place, runtime_device


def _sizes(size):
    """Accept zeros(2, 3), zeros((2, 3)), zeros([2, 3]) and zeros(ember.Size); sizes are ints."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    dims = []
    for d in size:
        try:
            dims.append(operator.index(d))
        except TypeError:
            raise TypeError(f"size must be a tuple of ints, but found element of type {type(d).__name__} "
                            f"in {tuple(size)}") from None
    if any(d < 0 for d in dims):
        raise RuntimeError(f"Trying to create tensor with negative dimension: {dims}")
    return tuple(dims)


def _float(dtype):
    return (dtypes.as_dtype(dtype) or dtypes.defaults.floating).np


def to_array(data, dtype=None):
    """A numpy array of PyTorch's inferred dtype: Python floats give the default float,
    ints give int64, bools bool; numpy arrays and numpy scalars keep their dtype."""
    want = dtypes.as_dtype(dtype)
    if isinstance(data, Tensor):
        array = data._data
    elif isinstance(data, (np.ndarray, np.generic)):  # numpy arrays and scalars keep their dtype
        array = np.asarray(data)
        dtypes.from_numpy(array.dtype)
    else:
        try:
            try:
                array = np.asarray(data)
            except TypeError:  # (cuda tensors in the list refuse np.asarray: read their values)
                array = np.asarray(_host_values(data))
        except ValueError:
            raise ValueError(f"ember.tensor: nested sequences must be rectangular (every row of a dim the same "
                             f"length), got {_outline(data)}") from None
        if array.dtype == object:
            raise TypeError(f"ember.tensor: could not infer dtype of {type(data).__name__} data "
                            f"(nested lists of numbers or tensors are expected)")
        if want is None:
            kind = array.dtype.kind
            if kind == "f":
                array = array.astype(dtypes.defaults.floating.np)
            elif kind in "iu":
                if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
                    raise RuntimeError(f"ember.tensor: value {int(array.max())} overflows int64")
                array = array.astype(np.int64)
            elif kind not in "b":
                raise TypeError(f"ember.tensor: unsupported data type {array.dtype}")
    if want is not None and array.dtype != want.np:
        if want.np in dtypes.LOW_PRECISION_NP and array.dtype.itemsize > (4 if array.dtype.kind == "f" else 2):
            array = array.astype(np.float32)  # as PyTorch: Python floats reach 2-byte floats through float32
        array = array.astype(want.np)
    return array


def _host_values(data):
    """Nested lists with every tensor replaced by its values as a host array."""
    if isinstance(data, Tensor):
        return np.array(data._data)
    if isinstance(data, (list, tuple)):
        return [_host_values(d) for d in data]
    return data


def _outline(data, depth=0):
    """A short picture of ragged data for error messages: the lengths of its rows."""
    if isinstance(data, (list, tuple)) and depth < 2:
        return "[" + ", ".join(_outline(d, depth + 1) for d in data[:4]) + (", ..." if len(data) > 4 else "") + "]"
    return f"<{len(data)} items>" if isinstance(data, (list, tuple)) else type(data).__name__


def tensor(data, dtype=None, device=None, requires_grad=False, pin_memory=False):
    """A new leaf tensor holding a copy of `data` (lists, numbers, numpy arrays, tensors)."""
    t = Tensor._wrap(np.array(to_array(data, dtype), copy=True))
    if device is None and isinstance(data, Tensor) and data.is_cuda:
        device = data.device  # (a copy where the source is, as in PyTorch)
    if device is not None:
        t._data = place(t._data, runtime_device(device))
    if requires_grad:
        t.requires_grad_(True)
    return t


def as_tensor(data, dtype=None, device=None):
    """Like tensor(), but shares memory with a numpy array or tensor when no conversion is needed."""
    if isinstance(data, Tensor) and (dtype is None or data.dtype is dtypes.as_dtype(dtype)):
        return data if device is None else data.to(device)
    return _leaf(to_array(data, dtype), False, device)


def from_numpy(array):
    """A tensor sharing memory with the numpy array: writes through either are seen by both."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(array).__name__})")
    dtypes.from_numpy(array.dtype)
    return Tensor._wrap(array)


def _leaf(array, requires_grad, device=None):
    if device is not None:
        array = place(array, runtime_device(device))
    t = Tensor._wrap(array)
    if requires_grad:
        t.requires_grad_(True)
    return t


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _leaf(np.zeros(_sizes(size), _float(dtype)), requires_grad, device)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _leaf(np.ones(_sizes(size), _float(dtype)), requires_grad, device)


def empty(*size, dtype=None, device=None, requires_grad=False, memory_format=None, pin_memory=False):
    return _leaf(np.zeros(_sizes(size), _float(dtype)), requires_grad, device)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None:
        dtype = dtypes.scalar_dtype(fill_value)
    return _leaf(np.full(_sizes((size,)), fill_value, dtypes.as_dtype(dtype).np), requires_grad, device)


def _like(fn):
    def like(input, dtype=None, device=None, requires_grad=False, memory_format=None):
        return fn(input.shape, dtype=dtype or input.dtype, requires_grad=requires_grad,
                  device=input.device if device is None else device)
    like.__name__ = fn.__name__ + "_like"
    return like


zeros_like = _like(zeros)
ones_like = _like(ones)
empty_like = _like(empty)


def full_like(input, fill_value, dtype=None, device=None, requires_grad=False, memory_format=None):
    return full(input.shape, fill_value, dtype=dtype or input.dtype, requires_grad=requires_grad,
                device=input.device if device is None else device)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    values = [start, end, step]
    if dtype is None:
        is_float = any(isinstance(v, float) or (isinstance(v, Tensor) and v.is_floating_point()) for v in values)
        dtype = dtypes.defaults.floating if is_float else dtypes.int64
    dtype = dtypes.as_dtype(dtype)
    start, end, step = (float(v) if dtype.is_floating_point else int(v) for v in values)
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    return _leaf(np.arange(start, end, step).astype(dtype.np), requires_grad, device)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    return _leaf(np.linspace(float(start), float(end), int(steps)).astype(_float(dtype)), requires_grad, device)


def logspace(start, end, steps, base=10.0, dtype=None, device=None, requires_grad=False):
    return _leaf(np.logspace(float(start), float(end), int(steps), base=base).astype(_float(dtype)), requires_grad,
                 device)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    return _leaf(np.eye(n, m, dtype=_float(dtype)), requires_grad, device)


def _traced_random(distribution, size, dtype, a, b, requires_grad):
    """Inside traced code a random draw is an op of the program (fresh every compiled call)."""
    from .dispatch import STATE
    out = STATE.recorder.random(distribution, _sizes(size), (dtypes.as_dtype(dtype) or dtypes.defaults.floating), a, b)
    return out.requires_grad_(True) if requires_grad else out


def untraceable_draw(what):
    """Inside traced code, a draw the program cannot make afresh on every call (numpy's, from a
    given generator, or of integers) makes this call signature run eagerly: a compiled program
    would repeat the trace's values on every call."""
    from .dispatch import STATE, run_eagerly
    if STATE.recorder is not None:
        run_eagerly(f"draws random numbers with {what}, which a compiled program would not draw afresh")


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False):
    from .dispatch import STATE
    if STATE.recorder is not None and generator is None:
        return _traced_random("uniform", size, dtype, 0.0, 1.0, requires_grad)
    if generator is not None:
        untraceable_draw("rand(generator=...)")
    rng = generator_or_default(generator)
    return _leaf(rng.random(_sizes(size), dtype=np.float64).astype(_float(dtype)), requires_grad, device)


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False):
    from .dispatch import STATE
    if STATE.recorder is not None and generator is None:
        return _traced_random("normal", size, dtype, 0.0, 1.0, requires_grad)
    if generator is not None:
        untraceable_draw("randn(generator=...)")
    rng = generator_or_default(generator)
    return _leaf(rng.standard_normal(_sizes(size), dtype=np.float64).astype(_float(dtype)), requires_grad, device)


def randint(low, high=None, size=None, generator=None, dtype=None, device=None, requires_grad=False):
    if size is None:  # randint(high, size)
        low, high, size = 0, low, high
    if high is None:
        low, high = 0, low
    untraceable_draw("randint")
    rng = generator_or_default(generator)
    dtype = dtypes.as_dtype(dtype) or dtypes.int64
    return _leaf(rng.integers(low, high, size=_sizes((size,))).astype(dtype.np), requires_grad, device)


def randperm(n, generator=None, dtype=None, device=None, requires_grad=False):
    untraceable_draw("randperm")
    rng = generator_or_default(generator)
    dtype = dtypes.as_dtype(dtype) or dtypes.int64
    return _leaf(rng.permutation(int(n)).astype(dtype.np), requires_grad, device)


def rand_like(input, dtype=None, generator=None, requires_grad=False, device=None):
    return rand(input.shape, dtype=dtype or input.dtype, generator=generator, requires_grad=requires_grad,
                device=input.device if device is None else device)


def randn_like(input, dtype=None, generator=None, requires_grad=False, device=None):
    return randn(input.shape, dtype=dtype or input.dtype, generator=generator, requires_grad=requires_grad,
                device=input.device if device is None else device)


def randint_like(input, low, high=None, dtype=None, generator=None, device=None):
    if high is None:
        low, high = 0, low
    return randint(low, high, input.shape, dtype=dtype or input.dtype, generator=generator,
                   device=input.device if device is None else device)


def legacy_constructor_data(args, dtype=None):
    """`ember.Tensor(2, 3)` is an uninitialised float tensor of that size; `ember.Tensor([1, 2])`
    a float tensor from data; `ember.Tensor()` an empty one (PyTorch's legacy constructor)."""
    dtype = dtypes.as_dtype(dtype) or dtypes.defaults.floating
    if not args:
        return np.zeros((0,), dtype.np)
    if builtins.all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in args):
        return np.zeros(tuple(int(a) for a in args), dtype.np)
    if len(args) == 1 and isinstance(args[0], tuple) and not args[0]:
        return np.zeros((0,), dtype.np)
    if len(args) == 1:
        return np.array(to_array(args[0], dtype), copy=True)
    raise TypeError(f"Tensor(): expected sizes or one data argument, got {args}")


def _typed_constructor(dtype):
    def construct(*args):
        return Tensor._wrap(legacy_constructor_data(args, dtype))
    construct.__name__ = {dtypes.float32: "FloatTensor", dtypes.float64: "DoubleTensor", dtypes.int64: "LongTensor",
                          dtypes.int32: "IntTensor", dtypes.bool_: "BoolTensor", dtypes.uint8: "ByteTensor"}[dtype]
    return construct


FloatTensor = _typed_constructor(dtypes.float32)
DoubleTensor = _typed_constructor(dtypes.float64)
LongTensor = _typed_constructor(dtypes.int64)
IntTensor = _typed_constructor(dtypes.int32)
BoolTensor = _typed_constructor(dtypes.bool_)
ByteTensor = _typed_constructor(dtypes.uint8)
