"""Attach PyTorch's Tensor methods and operators to `Tensor`, all delegating to the op modules.

Kept apart from tensor.py so the class stays readable: this file is the method table, and
the in-place variants (`add_`, `clamp_`, `normal_`, ...) built on `Tensor._inplace`.
"""
import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from . import math_ops as M, reductions as R, shape_ops as S, indexing as I, linalg as L, sorting as O
from . import math_more as MM, array_more as A
from .random import generator_or_default
from .views import same_elements, wrote_in_place
from .dispatch import STATE
from .tensor import Tensor, Device
from .device_tensors import move, place, runtime_device


def _equality(fn):
    def method(self, other):
        if not isinstance(other, (Tensor, int, float, bool, np.number, np.bool_)):
            return NotImplemented  # `t == None` is False, as in PyTorch
        return fn(self, other)
    return method


def _arithmetic(name):
    """`a + b` etc.: straight to the primitive when both are plain tensors of one non-bool
    dtype (the common case, and the tiny-op benchmark's), else through promotion."""
    bind = P[name].bind
    slow = getattr(M, name)

    def operator(self, other):
        if type(other) is Tensor:
            dtype = self._data.dtype
            if dtype is other._data.dtype and dtype is not _BOOL:
                return bind(self, other)
        return slow(self, other)
    operator.__name__ = f"__{name}__"
    return operator


_BOOL = np.dtype(bool)


def _reflected(fn):
    def method(self, other):
        return fn(other, self)
    return method


_OPERATORS = {
    "__add__": _arithmetic("add"), "__radd__": _reflected(M.add), "__sub__": _arithmetic("sub"),
    "__rsub__": _reflected(M.sub), "__mul__": _arithmetic("mul"), "__rmul__": _reflected(M.mul), "__truediv__": M.div, "__rtruediv__": _reflected(M.div),
    "__floordiv__": M.floor_divide, "__rfloordiv__": _reflected(M.floor_divide),
    "__mod__": M.remainder, "__rmod__": _reflected(M.remainder),
    "__pow__": M.pow, "__rpow__": _reflected(M.pow), "__matmul__": L.matmul, "__rmatmul__": _reflected(L.matmul),
    "__neg__": M.neg, "__pos__": lambda self: self, "__abs__": M.abs, "__invert__": M.bitwise_not,
    "__eq__": _equality(M.eq), "__ne__": _equality(M.ne), "__lt__": M.lt, "__le__": M.le, "__gt__": M.gt, "__ge__": M.ge,
    # & | ^ << >> and their reflected and in-place forms: frontend/bitwise.py's TENSOR_METHODS
    "__getitem__": I.getitem, "__setitem__": I.setitem,
}

_METHODS = {
    # math
    "add": M.add, "sub": M.sub, "subtract": M.sub, "mul": M.mul, "multiply": M.mul, "div": M.div,
    "divide": M.div, "true_divide": M.div, "floor_divide": M.floor_divide, "remainder": M.remainder,
    "pow": M.pow, "maximum": M.maximum, "minimum": M.minimum, "neg": M.neg, "negative": M.neg,
    "eq": M.eq, "ne": M.ne, "lt": M.lt, "le": M.le, "gt": M.gt, "ge": M.ge, "greater": M.gt, "less": M.lt,
    "logical_and": M.logical_and, "logical_or": M.logical_or, "logical_xor": M.logical_xor,
    "logical_not": M.logical_not, "exp": M.exp, "log": M.log, "log1p": M.log1p, "expm1": M.expm1,
    "log2": M.log2, "log10": M.log10, "sqrt": M.sqrt, "rsqrt": M.rsqrt, "reciprocal": M.reciprocal,
    "sin": M.sin, "cos": M.cos, "tan": M.tan, "tanh": M.tanh, "sinh": M.sinh, "cosh": M.cosh,
    "asin": M.asin, "acos": M.acos, "atan": M.atan, "atan2": M.atan2, "asinh": M.asinh, "acosh": M.acosh,
    "atanh": M.atanh, "arcsin": M.asin, "arccos": M.acos, "arctan": M.atan, "arctan2": M.atan2,
    "arcsinh": M.asinh, "arccosh": M.acosh, "arctanh": M.atanh, "erfinv": M.erfinv, "hypot": M.hypot,
    "logaddexp": M.logaddexp, "logaddexp2": M.logaddexp2,
    "sigmoid": M.sigmoid, "relu": M.relu, "erf": M.erf, "abs": M.abs, "absolute": M.abs, "sign": M.sign,
    "floor": M.floor, "ceil": M.ceil, "round": M.round, "trunc": M.trunc, "frac": M.frac, "square": M.square,
    "where": lambda self, condition, other: M.where(condition, self, other), "clamp": M.clamp, "clip": M.clamp,
    "clamp_min": M.clamp_min, "clamp_max": M.clamp_max, "lerp": M.lerp, "isnan": M.isnan, "isinf": M.isinf,
    "isfinite": M.isfinite, "nan_to_num": M.nan_to_num, "addcmul": M.addcmul, "addcdiv": M.addcdiv,
    "clone": M.clone, "masked_fill": I.masked_fill, "masked_select": I.masked_select, "nonzero": I.nonzero,
    # reductions
    "sum": R.sum, "mean": R.mean, "max": R.max, "min": R.min, "amax": R.amax, "amin": R.amin,
    "argmax": R.argmax, "argmin": R.argmin, "prod": R.prod, "var": R.var, "std": R.std, "norm": R.norm,
    "logsumexp": R.logsumexp, "all": R.all, "any": R.any, "cumsum": R.cumsum, "count_nonzero": R.count_nonzero,
    "aminmax": R.aminmax, "dist": R.dist, "cumprod": R.cumprod, "cummax": R.cummax, "cummin": R.cummin,
    # shape
    "reshape": S.reshape, "view": S.view, "view_as": S.view_as, "reshape_as": S.reshape_as,
    "permute": S.permute, "transpose": S.transpose, "swapaxes": S.transpose, "swapdims": S.transpose,
    "t": S.t, "movedim": S.movedim, "flatten": S.flatten, "unflatten": S.unflatten,
    "unsqueeze": S.unsqueeze, "squeeze": S.squeeze, "expand": S.expand, "expand_as": S.expand_as,
    "broadcast_to": S.broadcast_to, "repeat": S.repeat, "tile": S.tile, "split": S.split, "chunk": S.chunk,
    "unbind": S.unbind, "flip": S.flip, "fliplr": S.fliplr, "flipud": S.flipud, "roll": S.roll,
    "narrow": S.narrow, "gather": S.gather, "take_along_dim": S.take_along_dim, "index_select": S.index_select,
    "scatter_add": S.scatter_add, "contiguous": S.contiguous, "tril": S.tril, "triu": S.triu,
    "scatter": S.scatter, "index_add": S.index_add, "repeat_interleave": S.repeat_interleave, "diag": S.diag,
    "select": S.select, "diagonal": S.diagonal,
    "trace": R.trace, "median": R.median, "sum_to_size": R.sum_to_size, "fmod": M.fmod, "argwhere": I.argwhere,
    # products
    "matmul": L.matmul, "mm": L.mm, "bmm": L.bmm, "mv": L.mv, "dot": L.dot, "outer": L.outer,
    "cross": L.cross, "addmm": L.addmm, "baddbmm": L.baddbmm, "addbmm": L.addbmm,
    "multinomial": lambda self, num_samples, replacement=False, *, generator=None:
        _sampling().multinomial(self, num_samples, replacement, generator=generator),
    # sorting
    "sort": O.sort, "argsort": O.argsort, "topk": O.topk, "unique": O.unique, "kthvalue": O.kthvalue,
    "msort": O.msort,
    # math_more, array_more
    "exp2": M.exp2, "deg2rad": MM.deg2rad, "rad2deg": MM.rad2deg, "erfc": MM.erfc, "fix": MM.fix,
    "float_power": MM.float_power, "fmax": MM.fmax, "fmin": MM.fmin, "copysign": MM.copysign,
    "heaviside": MM.heaviside, "logit": MM.logit, "sinc": MM.sinc, "xlogy": MM.xlogy, "signbit": MM.signbit,
    "sgn": MM.sgn, "positive": MM.positive, "isneginf": MM.isneginf, "isposinf": MM.isposinf,
    "isreal": MM.isreal, "is_complex": MM.is_complex, "is_signed": MM.is_signed,
    "not_equal": M.ne, "greater_equal": M.ge, "less_equal": M.le,
    "type_as": lambda self, other: M.to_dtype(self, other.dtype),
    "allclose": lambda self, other, rtol=1e-05, atol=1e-08, equal_nan=False:
        _ember().allclose(self, other, rtol, atol, equal_nan),
    "isclose": lambda self, other, rtol=1e-05, atol=1e-08, equal_nan=False:
        _ember().isclose(self, other, rtol, atol, equal_nan),
    "equal": lambda self, other: _ember().equal(self, other),
    "nansum": A.nansum, "nanmean": A.nanmean, "logcumsumexp": A.logcumsumexp, "diff": A.diff, "kron": A.kron,
    "inner": L.inner, "ger": L.ger, "vdot": A.vdot, "addr": A.addr, "addmv": A.addmv, "rot90": A.rot90,
    "tensor_split": A.tensor_split, "hsplit": A.hsplit, "vsplit": A.vsplit, "dsplit": A.dsplit,
    "moveaxis": A.moveaxis, "ravel": A.ravel, "take": A.take, "diagflat": A.diagflat,
}


def _ember():
    import ember
    return ember


def _softmax(self, dim, dtype=None):
    from .nn import functional as F
    return F.softmax(self, dim, dtype=dtype)


def _log_softmax(self, dim, dtype=None):
    from .nn import functional as F
    return F.log_softmax(self, dim, dtype=dtype)


# ----------------------------------------------------------------------------- conversions

def to(self, *args, **kwargs):
    """to(dtype), to(device), to(device, dtype), to(other tensor); copy=True forces a copy."""
    dtype, device = kwargs.get("dtype"), None
    for a in args:
        if isinstance(a, Tensor):
            dtype, device = a.dtype, a.device
        elif isinstance(a, (dtypes.DType, np.dtype)) or a in (float, int, bool):
            dtype = a
        elif isinstance(a, (str, Device)) or (type(a) is int):
            device = a
    if kwargs.get("device") is not None:
        device = kwargs["device"]
    out = self if device is None else move(self, device)
    out = out if dtype is None else M.to_dtype(out, dtype)
    if kwargs.get("copy") and out is self:
        out = M.clone(self)
    return out


def _cast(dtype):
    def cast(self, memory_format=None):
        return M.to_dtype(self, dtype)
    return cast


_TYPE_NAMES = {"torch.FloatTensor": dtypes.float32, "torch.DoubleTensor": dtypes.float64,
               "torch.LongTensor": dtypes.int64, "torch.IntTensor": dtypes.int32, "torch.BoolTensor": dtypes.bool_,
               "torch.ByteTensor": dtypes.uint8, "torch.HalfTensor": dtypes.float16}


def type_(self, dtype=None, non_blocking=False):
    from .printing import type_name
    if dtype is None:
        return type_name(self)
    if isinstance(dtype, str):
        key = dtype.replace("ember.", "torch.")
        if key not in _TYPE_NAMES:
            raise ValueError(f"invalid type: {dtype!r}")
        dtype = _TYPE_NAMES[key]
    return M.to_dtype(self, dtype)


def cpu(self, memory_format=None):
    return move(self, "cpu")


def cuda(self, device=None, non_blocking=False):
    return move(self, "cuda" if device is None else device if isinstance(device, (str, Device)) else f"cuda:{device}")


def __contains__(self, element):
    if isinstance(element, (Tensor, int, float, bool)):
        return bool((self == element).any())
    raise RuntimeError(f"Tensor.__contains__ only supports Tensor or scalar, but you passed in a {type(element)}.")


def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    from .creation import tensor
    return tensor(data, dtype=dtype or self.dtype, requires_grad=requires_grad,
                  device=self.device if device is None else device)


def _new_filled(fill):
    def new(self, *size, dtype=None, device=None, requires_grad=False):
        from .creation import _sizes
        out = np.full(_sizes(size), fill, dtype=(dtypes.as_dtype(dtype) or self.dtype).np)
        out = Tensor._wrap(place(out, runtime_device(self.device if device is None else device)))
        return out.requires_grad_(True) if requires_grad else out
    return new


def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
    return _new_filled(fill_value)(self, size, dtype=dtype, device=device, requires_grad=requires_grad)


# ----------------------------------------------------------------------------- in-place

def _inplace_of(fn, name):
    """The in-place form of `fn`. Its tensor arguments are checked against the written memory
    as PyTorch checks them: a partial overlap is refused (`x[1:].add_(x[:-1])`), and by the
    index ops any overlap; masked_fill_ reads its value as a scalar."""
    refuse_full = name in _REFUSING_ANY_OVERLAP
    if name == "masked_fill_":  # (PyTorch also lets it write an expanded tensor)
        def method(self, mask, value):
            return self._inplace(lambda current: fn(current, mask, value), name, (mask,), internal_overlap=False)
    else:
        def method(self, *args, **kwargs):
            operands = args + tuple(kwargs.values()) if kwargs else args
            return self._inplace(lambda current: fn(current, *args, **kwargs), name, operands, refuse_full)
    method.__name__ = name
    return method


_REFUSING_ANY_OVERLAP = {"index_add_", "scatter_", "scatter_add_"}  # PyTorch's assert_no_overlap


_INPLACE = {
    "add_": M.add, "sub_": M.sub, "mul_": M.mul, "div_": M.div, "pow_": M.pow, "clamp_": M.clamp,
    "clip_": M.clamp, "clamp_min_": M.clamp_min, "clamp_max_": M.clamp_max, "neg_": M.neg, "abs_": M.abs,
    "exp_": M.exp, "log_": M.log, "sqrt_": M.sqrt, "relu_": M.relu, "sigmoid_": M.sigmoid, "tanh_": M.tanh,
    "floor_": M.floor, "ceil_": M.ceil, "round_": M.round, "reciprocal_": M.reciprocal,
    "sinh_": M.sinh, "cosh_": M.cosh, "asin_": M.asin, "acos_": M.acos, "atan_": M.atan, "atan2_": M.atan2,
    "asinh_": M.asinh, "acosh_": M.acosh, "atanh_": M.atanh, "arcsin_": M.asin, "arccos_": M.acos,
    "arctan_": M.atan, "arctan2_": M.atan2, "arcsinh_": M.asinh, "arccosh_": M.acosh, "arctanh_": M.atanh,
    "erfinv_": M.erfinv, "hypot_": M.hypot, "tril_": S.tril, "triu_": S.triu, "cumsum_": R.cumsum,
    "cumprod_": R.cumprod, "absolute_": M.abs, "cos_": M.cos, "sin_": M.sin, "tan_": M.tan, "erf_": M.erf,
    "expm1_": M.expm1, "log1p_": M.log1p, "log2_": M.log2, "log10_": M.log10, "rsqrt_": M.rsqrt,
    "frac_": M.frac, "trunc_": M.trunc, "sign_": M.sign, "square_": M.square, "negative_": M.neg,
    "nan_to_num_": M.nan_to_num, "subtract_": M.sub, "multiply_": M.mul, "divide_": M.div, "true_divide_": M.div,
    "floor_divide_": M.floor_divide, "eq_": M.eq, "ne_": M.ne, "lt_": M.lt, "le_": M.le, "gt_": M.gt, "ge_": M.ge,
    "less_": M.lt, "greater_": M.gt, "logical_and_": M.logical_and, "logical_or_": M.logical_or,
    "logical_xor_": M.logical_xor, "logical_not_": M.logical_not, "addmm_": L.addmm, "baddbmm_": L.baddbmm,
    "addbmm_": L.addbmm,
    "masked_fill_": I.masked_fill, "lerp_": M.lerp, "addcmul_": M.addcmul, "addcdiv_": M.addcdiv,
    "maximum_": M.maximum, "minimum_": M.minimum, "remainder_": M.remainder,
    "scatter_add_": S.scatter_add, "scatter_": S.scatter, "index_add_": S.index_add, "fmod_": M.fmod,
    "exp2_": M.exp2, "deg2rad_": MM.deg2rad, "rad2deg_": MM.rad2deg, "erfc_": MM.erfc, "fix_": MM.fix,
    "float_power_": MM.float_power, "copysign_": MM.copysign, "heaviside_": MM.heaviside, "logit_": MM.logit,
    "sinc_": MM.sinc, "xlogy_": MM.xlogy, "sgn_": MM.sgn, "not_equal_": M.ne, "greater_equal_": M.ge,
    "less_equal_": M.le, "addr_": A.addr, "addmv_": A.addmv,
    "__iadd__": M.add, "__isub__": M.sub, "__imul__": M.mul, "__itruediv__": M.div, "__ipow__": M.pow,
    "__ifloordiv__": M.floor_divide, "__imod__": M.remainder,
}


def _constant_fill(self, values, name, one_value=False):
    """Write `values` (broadcast); one value everywhere may go into an expanded tensor, as in PyTorch."""
    values = np.asarray(values, dtype=self._data.dtype)
    return self._inplace(lambda current: Tensor._wrap(np.broadcast_to(values, current.shape).copy()), name,
                         internal_overlap=not one_value)


def zero_(self):
    return _constant_fill(self, 0, "zero_", one_value=True)


def fill_(self, value):
    if isinstance(value, Tensor):
        if value.ndim:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor with {value.ndim} "
                               f"dimensions.")
        return self._inplace(lambda current: S.expand(M.to_dtype(value, current.dtype), tuple(current.shape)), "fill_")
    return _constant_fill(self, value, "fill_", one_value=True)


def copy_(self, src, non_blocking=False):
    src = src if isinstance(src, Tensor) else Tensor._wrap(np.asarray(src))
    if src is self or src._data.base is not None and same_elements(self._data, src._data):
        self._check_writable("copy_", STATE.grad_enabled, internal_overlap=False)  # as PyTorch: no write
        wrote_in_place(self)
        return self

    def value(current):
        result = S.expand(M.to_dtype(src, current.dtype), tuple(current.shape))
        # src itself (nothing to convert or broadcast) or a view of it: when the new value is
        # rebound rather than written (tracing, autograd), self must not share src's memory
        result = result.clone() if result is src or result._data.base is not None else result
        if current.requires_grad and STATE.grad_enabled:  # the old history gets a zero gradient, as in PyTorch
            return P["replace_value"].bind(current, result)
        return result
    return self._inplace(value, "copy_", (src,) if src is not self else ())


def normal_(self, mean=0.0, std=1.0, *, generator=None):
    return _sampling().normal_(self, mean, std, generator=generator)


def uniform_(self, *args, generator=None, **kwargs):  # uniform_(from=0, to=1): `from` is a keyword too
    if "from" in kwargs:
        kwargs["a"] = kwargs.pop("from")
    if "to" in kwargs:
        kwargs["b"] = kwargs.pop("to")
    return _sampling().uniform_(self, *args, generator=generator, **kwargs)


# the random fills and Tensor.bernoulli: frontend/sampling.py (torch's overloads, checks and messages)
def bernoulli_(self, p=0.5, *, generator=None):
    return _sampling().bernoulli_(self, p, generator=generator)


def random_(self, *args, generator=None, **kwargs):  # random_(from=0, to=None): `from` is a keyword too
    return _sampling().random_(self, *args, generator=generator, **kwargs)


def exponential_(self, lambd=1.0, *, generator=None):
    return _sampling().exponential_(self, lambd, generator=generator)


def cauchy_(self, median=0.0, sigma=1.0, *, generator=None):
    return _sampling().cauchy_(self, median, sigma, generator=generator)


def log_normal_(self, mean=1.0, std=2.0, *, generator=None):
    return _sampling().log_normal_(self, mean, std, generator=generator)


def geometric_(self, p, *, generator=None):
    return _sampling().geometric_(self, p, generator=generator)


def bernoulli(self, p=None, *, generator=None):
    return _sampling().tensor_bernoulli(self, p, generator=generator)


def index_fill_(self, dim, index, value):
    key = (slice(None),) * (dim % self.ndim) + (index,)
    I.setitem(self, key, value)
    return self


def _sampling():
    from . import sampling
    return sampling


def _install():
    for name, fn in {**_OPERATORS, **_METHODS}.items():
        setattr(Tensor, name, fn)
    for name, fn in _INPLACE.items():
        setattr(Tensor, name, _inplace_of(fn, name))
    extra = dict(
        softmax=_softmax, log_softmax=_log_softmax, to=to, type=type_, cpu=cpu, cuda=cuda,
        __contains__=__contains__, new_tensor=new_tensor, new_zeros=_new_filled(0), new_ones=_new_filled(1),
        new_empty=_new_filled(0), new_full=new_full, zero_=zero_, fill_=fill_, copy_=copy_, normal_=normal_,
        uniform_=uniform_, bernoulli_=bernoulli_, random_=random_, exponential_=exponential_,
        cauchy_=cauchy_, log_normal_=log_normal_, geometric_=geometric_, bernoulli=bernoulli,
        index_fill_=index_fill_,
        float=_cast(dtypes.float32), double=_cast(dtypes.float64), half=_cast(dtypes.float16),
        bfloat16=lambda self, memory_format=None: self.to(dtypes.bfloat16),
        long=_cast(dtypes.int64), int=_cast(dtypes.int32), bool=_cast(dtypes.bool_), byte=_cast(dtypes.uint8),
        short=_cast(dtypes.int16), char=_cast(dtypes.int8),
        T=property(lambda self: S.permute(self, tuple(reversed(range(self.ndim))))),
        mT=property(lambda self: S.transpose(self, -2, -1)),
    )
    for name, fn in extra.items():
        setattr(Tensor, name, fn)
    from . import scatter_ops, copy_variants, inplace_views  # (modules that define their own methods)
    for module in (scatter_ops, copy_variants, inplace_views, L):
        for name, fn in module.TENSOR_METHODS.items():
            setattr(Tensor, name, fn)
    from . import special_functions, bitwise, statistics, searching, distances
    for module in (special_functions, bitwise, statistics, searching, distances):  # their in-place names map to
        for name, fn in module.TENSOR_METHODS.items():                            # the out-of-place function
            in_place = name in ("__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__") or \
                (name.endswith("_") and not name.endswith("__"))
            setattr(Tensor, name, _inplace_of(fn, name) if in_place else fn)


_install()


# torch's in-place functions at the top level (torch.abs_(x) is x.abs_()): each calls the method
TORCH_INPLACE_FUNCTIONS = (
    "abs_ acos_ acosh_ arccos_ arccosh_ arcsin_ arcsinh_ arctan_ arctanh_ asin_ asinh_ atan_ atanh_ ceil_ clamp_ "
    "clamp_max_ clamp_min_ clip_ cos_ cosh_ erf_ exp_ expm1_ floor_ frac_ log10_ log1p_ log2_ log_ nan_to_num_ "
    "neg_ negative_ reciprocal_ relu_ round_ rsqrt_ sigmoid_ sin_ sinh_ sqrt_ square_ tan_ tanh_ trunc_ "
    "deg2rad_ rad2deg_ exp2_ erfc_ fix_ logit_ sinc_ xlogy_ addmv_").split()


def _function_form(name):
    def function(input, *args, **kwargs):
        return getattr(input, name)(*args, **kwargs)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"torch.{name}(input, ...): input.{name}(...), in place."
    return function


globals().update({name: _function_form(name) for name in TORCH_INPLACE_FUNCTIONS})
