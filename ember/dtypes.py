"""ember's dtypes and PyTorch's type-promotion rules.

Shared by every stage: the frontend promotes operands with `result_type`, the IR stores the
numpy name (`dtype.name`), and the backends map those names to machine types.
`bfloat16` is numpy's dtype from ml_dtypes (numpy has none), imported on first use of
`ember.bfloat16` (it costs most of a second): `import ember` alone does not load it.
"""
import builtins

import numpy as np


class DType:
    """A tensor element type: `ember.float32` and friends. Compares equal only to itself."""

    __slots__ = ("name", "np", "itemsize", "is_floating_point", "category", "rank")

    def __init__(self, name, category, rank, np_dtype=None):
        self.name = name
        self.np = np.dtype(name if np_dtype is None else np_dtype)
        self.itemsize = self.np.itemsize
        self.is_floating_point = category == 2
        self.category = category  # 0 bool, 1 integer, 2 floating
        self.rank = rank  # order within the category

    def __repr__(self):
        return f"ember.{self.name}"

    def __reduce__(self):
        return (from_name, (self.name,))

    @property
    def is_signed(self):
        return self.category != 0

    @property
    def short(self):
        """The short form used in IR dumps: f32, i64, b8."""
        return {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64", "bool": "b8",
                "float16": "f16", "bfloat16": "bf16", "uint8": "u8", "int8": "i8", "int16": "i16"}[self.name]


bool_ = DType("bool", 0, 0)
uint8 = DType("uint8", 1, 0)
int8 = DType("int8", 1, 1)
int16 = DType("int16", 1, 2)
int32 = DType("int32", 1, 3)
int64 = DType("int64", 1, 4)
float16 = DType("float16", 2, 0)
float32 = DType("float32", 2, 1)
float64 = DType("float64", 2, 2)

ALL = (bool_, uint8, int8, int16, int32, int64, float16, float32, float64)
_BY_NAME = {d.name: d for d in ALL}
_BY_NP = {d.np: d for d in ALL}
# the 2-byte floats: PyTorch's CPU stores them as they are and computes each op in float32
LOW_PRECISION_NP = {float16.np}


def is_floating_np(np_dtype):
    """Is a numpy dtype one of ember's floating types? (bfloat16's numpy kind is "V", not "f".)"""
    return np_dtype.kind == "f" or np_dtype in LOW_PRECISION_NP


def _load_bfloat16():
    """Create `bfloat16` (ml_dtypes' numpy dtype) and register it with the tables above."""
    global ALL
    existing = _BY_NAME.get("bfloat16")
    if existing is not None:
        return existing
    import ml_dtypes
    dtype = DType("bfloat16", 2, 0, ml_dtypes.bfloat16)
    _BY_NAME[dtype.name] = dtype
    _BY_NP[dtype.np] = dtype
    LOW_PRECISION_NP.add(dtype.np)
    ALL = ALL + (dtype,)
    return dtype


def __getattr__(name):
    if name == "bfloat16":
        return _load_bfloat16()
    raise AttributeError(f"module 'ember.dtypes' has no attribute {name!r}")

# torch aliases
half = float16
float = float32
double = float64
short = int16
int = int32
long = int64


class _Defaults:
    """The default floating dtype (`ember.set_default_dtype`). One instance, set from the API."""

    floating = float32


defaults = _Defaults()


def from_name(name):
    if name == "bfloat16":
        return _load_bfloat16()
    return _BY_NAME[name]


def from_numpy(np_dtype):
    """The ember dtype of a numpy dtype; raises TypeError for unsupported ones (complex, str)."""
    try:
        return _BY_NP[np.dtype(np_dtype)]
    except (KeyError, TypeError):
        if getattr(np_dtype, "__name__", str(np_dtype)) == "bfloat16":
            return _load_bfloat16()
        raise TypeError(f"ember does not support numpy dtype {np_dtype}; "
                        f"supported: {', '.join(d.name for d in ALL)}") from None


def as_dtype(value):
    """Accept an ember dtype, a numpy dtype, a numpy name or a Python type (float, int, bool)."""
    if isinstance(value, DType):
        return value
    if value is None:
        return None
    if value is builtins.float:
        return float64  # dtype=float means float64 in PyTorch (as numpy's float)
    if value is builtins.int:
        return int64
    if value is builtins.bool:
        return bool_
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    if isinstance(value, str) and value == "bfloat16":
        return _load_bfloat16()
    return from_numpy(value)


class finfo:
    """`ember.finfo(dtype)`: the limits of a floating dtype, as torch.finfo (eps, max, min, tiny...)."""

    def __init__(self, type=None):
        dtype = defaults.floating if type is None else as_dtype(type)
        if not dtype.is_floating_point:
            raise TypeError(f"torch.finfo() requires a floating point input type. Use torch.iinfo to handle "
                            f"'{dtype!r}'")
        if dtype.name == "bfloat16":
            import ml_dtypes
            info = ml_dtypes.finfo(dtype.np)
        else:
            info = np.finfo(dtype.np)
        self.bits = dtype.itemsize * 8
        self.eps, self.max, self.min = builtins.float(info.eps), builtins.float(info.max), builtins.float(info.min)
        self.tiny = self.smallest_normal = builtins.float(info.smallest_normal)
        self.resolution = 10.0 ** -builtins.int(info.precision)  # torch: a power of ten, not a representable value
        self.dtype = dtype.name

    def __repr__(self):
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
                f"smallest_normal={self.smallest_normal:g}, tiny={self.tiny:g}, dtype={self.dtype})")


class iinfo:
    """`ember.iinfo(dtype)`: the limits of an integer dtype (bits, min, max), as torch.iinfo."""

    def __init__(self, type):
        dtype = as_dtype(type)
        if dtype.is_floating_point or dtype is bool_:
            raise TypeError(f"torch.iinfo() requires an integer input type. Use torch.finfo to handle '{dtype!r}'")
        info = np.iinfo(dtype.np)
        self.bits, self.dtype = info.bits, dtype.name
        self.min, self.max = builtins.int(info.min), builtins.int(info.max)

    def __repr__(self):
        return f"iinfo(min={self.min}, max={self.max}, dtype={self.dtype})"


def promote(a, b):
    """The larger of two dtypes in PyTorch's lattice (bool < integers < floats)."""
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    if a.category == 1 and {a.name, b.name} == {"uint8", "int8"}:
        return int16
    if a.category == 2 and {a.name, b.name} == {"float16", "bfloat16"}:
        return float32
    return a if a.rank >= b.rank else b


def scalar_dtype(value):
    """The dtype a Python scalar would have as a tensor: bool, int64 or the default float."""
    if isinstance(value, (builtins.bool, np.bool_)):
        return bool_
    if isinstance(value, (builtins.int, np.integer)):
        return int64
    return defaults.floating


def result_type(dimensioned, zero_dim, scalars):
    """PyTorch's promotion: tensors with dims decide; 0-d tensors and then Python scalars
    only count when they are of a higher category (bool < int < float).

    Each argument is a list of dtypes (for scalars, of `scalar_dtype` values)."""
    result = None
    for group in (dimensioned, zero_dim, scalars):
        if not group:
            continue
        group_type = group[0]
        for d in group[1:]:
            group_type = promote(group_type, d)
        if result is None:
            result = group_type
        elif group_type.category > result.category:
            # a Python float joining int tensors gives the default float, not float64
            result = defaults.floating if (group is scalars and group_type.category == 2) else group_type
    return result
