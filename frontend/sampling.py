"""Random sampling: `torch.multinomial`, `normal`, `bernoulli`, `poisson`, and the in-place fills
of the Tensor methods (`bernoulli_`, `random_`, `exponential_`, `cauchy_`, `log_normal_`,
`geometric_`), with torch's overloads, dtypes, checks and messages. Draws are composed of tensor
ops on `rand`/`randn`, so inside ember.compile they become the `random` primitive fed a fresh seed
per call. The values of ember's draws are not torch's: the generators differ.
"""
import math
import operator
import warnings

import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES as P
from . import math_ops as M
from . import reductions as R
from . import shape_ops as S
from .creation import rand, randn, untraceable_draw
from .dispatch import STATE
from .linalg import cpp_type_name, scalar_type_name
from .random import generator_or_default
from .tensor import Tensor
from .device_tensors import keeps_device


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """Indices drawn from rows of non-negative weights. With replacement each draw inverts the
    row's cumulative distribution; without, the k smallest of the exponential races -log(u) / w
    win (the same distribution as drawing one by one and removing what was drawn)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial(): argument 'input' must be Tensor, not {type(input).__name__}")
    if input.ndim not in (1, 2):
        raise RuntimeError("prob_dist must be 1 or 2 dim")
    if not input.is_floating_point():
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got: "
                           f"{dtypes.as_dtype(input.dtype).name.capitalize()}")
    if num_samples <= 0:
        raise RuntimeError("cannot sample n_sample <= 0 samples")
    categories = input.shape[-1]
    if not replacement and num_samples > categories:
        raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without replacement")
    values = np.asarray(input.detach()._data)  # checks on the values, as torch makes them
    if not np.isfinite(values).all() or (values < 0).any():
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    if (values.reshape(-1, categories).sum(-1) <= 0).any():
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
    rows = S.reshape(input.detach(), (-1, categories))
    count = rows.shape[0]
    if replacement:
        cdf = R.cumsum(M.div(rows, R.sum(rows, dim=-1, keepdim=True)), dim=-1)
        draws = rand(count, num_samples, generator=generator, dtype=rows.dtype)
        below = M.lt(S.unsqueeze(cdf, 1), S.unsqueeze(draws, -1))  # cdf[j] < u: j is not chosen yet
        chosen = M.clamp(R.sum(M.to_dtype(below, dtypes.int64), dim=-1), max=categories - 1)
        # (weight-0 categories whose cdf equals the previous one are never chosen: below counts them)
    else:
        draws = rand(count, categories, generator=generator, dtype=rows.dtype)
        races = M.div(M.neg(M.log(M.sub(1.0, draws))), rows)  # exponential, infinite where the weight is 0
        from .sorting import topk
        chosen = topk(races, num_samples, dim=-1, largest=False, sorted=True)[1]
    return S.reshape(chosen, tuple(input.shape[:-1]) + (num_samples,))


# ----------------------------------------------------------------------------- argument checks

_NUMBER = (int, float, np.integer, np.floating, np.bool_)

_NORMAL_OVERLOADS = (
    "(Tensor mean, Tensor std, *, torch.Generator generator = None, Tensor out = None)",
    "(Tensor mean, float std = 1, *, torch.Generator generator = None, Tensor out = None)",
    "(float mean, Tensor std, *, torch.Generator generator = None, Tensor out = None)",
    "(float mean, float std, tuple of ints size, *, torch.Generator generator = None, Tensor out = None, "
    "torch.dtype dtype = None, torch.layout layout = None, torch.device device = None, bool pin_memory = False, "
    "bool requires_grad = False)")
_BERNOULLI_OVERLOADS = ("(Tensor input, *, torch.Generator generator = None, Tensor out = None)",
                        "(Tensor input, float p, *, torch.Generator generator = None)")
_RANDOM_OVERLOADS = ("(*, torch.Generator generator = None)",
                     "(int from, int to, *, torch.Generator generator = None)",
                     "(int to, *, torch.Generator generator = None)")
_P_IN_RANGE = ("Expected p_in >= 0 && p_in <= 1 to be true, but got false.  (Could this error message be improved?  "
               "If so, please report an enhancement request to PyTorch.)")


def _type_name(value):
    if isinstance(value, Tensor):
        return "Tensor"
    if isinstance(value, dtypes.DType):
        return "torch.dtype"
    return type(value).__name__


def _invalid_combination(op, args, kwargs, overloads):
    got = ", ".join([_type_name(a) for a in args] + [f"{k}={_type_name(v)}" for k, v in kwargs.items()])
    got += ", " if kwargs and not args else ""  # (torch's spelling of keyword-only calls: "(to=NoneType, )")
    expected = "".join(f" * {o}\n" for o in overloads)
    return TypeError(f"{op}() received an invalid combination of arguments - got ({got}), but expected one of:\n"
                     f"{expected}")


def _is_number(value):
    return isinstance(value, _NUMBER)


def _float_argument(op, name, position, value):
    """A Python float from a number or a one-element tensor, as torch's `float` arguments take."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.item())
    if not _is_number(value):
        raise TypeError(f"{op}(): argument '{name}' (position {position}) must be float, not {_type_name(value)}")
    return float(value)


def _require_tensor(op, value):
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}(): argument 'input' (position 1) must be Tensor, not {_type_name(value)}")


def _not_implemented(kernel, dtype):
    return NotImplementedError(f'"{kernel}" not implemented for \'{scalar_type_name(dtypes.as_dtype(dtype))}\'')


def _values(tensor):
    return np.asarray(tensor.detach()._data, dtype=np.float64)  # (checks on the values, as torch makes them)


def _broadcast_shape(a, b):
    """torch's infer_size: the broadcast of two shapes, or its message naming the first mismatch."""
    ndim = max(len(a), len(b))
    a, b = (1,) * (ndim - len(a)) + tuple(a), (1,) * (ndim - len(b)) + tuple(b)
    for dim, (x, y) in enumerate(zip(a, b)):
        if x != y and x != 1 and y != 1:
            raise RuntimeError(f"The size of tensor a ({x}) must match the size of tensor b ({y}) at non-singleton "
                               f"dimension {dim}")
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _expand_to(tensor, shape):
    """`tensor` expanded to `shape`, refused with torch's expand messages."""
    if tensor.ndim > len(shape):
        kind = tensor.type().split(".")[-1]
        raise RuntimeError(f"expand(torch.{kind}{{{list(tensor.shape)}}}, size={list(shape)}): the number of sizes "
                           f"provided ({len(shape)}) must be greater or equal to the number of dimensions in the "
                           f"tensor ({tensor.ndim})")
    for dim in range(1, tensor.ndim + 1):
        have, want = tensor.shape[-dim], shape[-dim]
        if have != want and have != 1:
            raise RuntimeError(f"The expanded size of the tensor ({want}) must match the existing size ({have}) at "
                               f"non-singleton dimension {len(shape) - dim}.  Target sizes: {list(shape)}.  Tensor "
                               f"sizes: {list(tensor.shape)}")
    return S.expand(tensor, tuple(shape))


def _write_out(op, out, result):
    from .out_arguments import write_out
    if STATE.grad_enabled and result.requires_grad:
        raise RuntimeError(f"{op}(): functions with out=... arguments don't support automatic differentiation, but "
                           f"one of the arguments requires grad.")
    return write_out(out, result, f"{op}()")


def _zero_gradient(inputs, value):
    """`value`, requiring grad with a zero gradient for each of the tensors `inputs` that does (as
    torch, which does not differentiate through its draws); else `value` itself."""
    inputs = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    if not (STATE.grad_enabled and inputs):
        return value
    sources = M.mul(M.to_dtype(inputs[0], value.dtype), 0.0)  # (times 0: the zero gradients are +0)
    for other in inputs[1:]:
        sources = M.add(sources, M.mul(M.to_dtype(other, value.dtype), 0.0))
    sources = S.expand(sources, tuple(value.shape))
    return P["replace_value"].bind(sources, value.detach())


def _uniform(shape, generator):
    """Uniform draws in [0, 1), in float64 (so probabilities and tails are not rounded to float32)."""
    return rand(tuple(shape), generator=generator, dtype=dtypes.float64)


# ----------------------------------------------------------------------------- torch.normal

def normal(mean, std=1.0, size=None, *, generator=None, out=None, dtype=None, layout=None, device=None,
           pin_memory=False, requires_grad=False):
    """Draws from normal distributions: `mean + std * randn`. mean and std are tensors (broadcast)
    or numbers; two numbers need a `size`. As in torch the result does not differentiate through
    the draw: it requires grad when mean or std does, with a zero gradient for both."""
    args = (mean, std) if size is None else (mean, std, size)
    factory = {k: v for k, v in (("dtype", dtype), ("layout", layout), ("device", device),
                                 ("pin_memory", pin_memory or None), ("requires_grad", requires_grad or None))
               if v is not None}
    mean_is_tensor, std_is_tensor = isinstance(mean, Tensor), isinstance(std, Tensor)
    if mean_is_tensor or std_is_tensor:
        if size is not None or factory or not (mean_is_tensor or _is_number(mean)) or not (
                std_is_tensor or _is_number(std)):
            raise _invalid_combination("normal", args, factory, _NORMAL_OVERLOADS)
        return _normal_of_tensors(mean, std, generator, out)
    if not (_is_number(mean) and _is_number(std) and isinstance(size, (tuple, list))):
        raise _invalid_combination("normal", args, factory, _NORMAL_OVERLOADS)
    return _normal_of_numbers(float(mean), float(std), size, generator, out, dtype, requires_grad)


def _check_std(std):
    if not std >= 0.0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std:g}")


def _normal_of_tensors(mean, std, generator, out):
    if isinstance(std, Tensor):
        if not (_values(std) >= 0.0).all():
            raise RuntimeError("normal expects all elements of std >= 0.0")
    else:
        std = float(std)
        _check_std(std)
    dtype = dtypes.as_dtype(out.dtype if out is not None else (mean if isinstance(mean, Tensor) else std).dtype)
    if not dtype.is_floating_point:
        raise _not_implemented("normal_kernel_cpu", dtype)
    if isinstance(mean, Tensor) and isinstance(std, Tensor):
        shape = _broadcast_shape(mean.shape, std.shape)
    elif isinstance(mean, Tensor):  # (torch broadcasts mean with out= here: the result takes out's shape)
        shape = _broadcast_shape(mean.shape, out.shape) if out is not None else tuple(mean.shape)
    else:
        shape = tuple(std.shape)
    noise = randn(shape, generator=generator, dtype=dtype)
    scaled = M.mul(M.to_dtype(std, dtype), noise) if isinstance(std, Tensor) else M.mul(noise, std)
    value = M.add(M.to_dtype(mean, dtype), scaled) if isinstance(mean, Tensor) else M.add(scaled, float(mean))
    result = _zero_gradient((mean, std), value)
    return result if out is None else _write_out("normal", out, result)


def _normal_of_numbers(mean, std, size, generator, out, dtype, requires_grad):
    _check_std(std)
    sizes = tuple(operator.index(d) for d in size)
    if any(d < 0 for d in sizes):
        bad = next(d for d in sizes if d < 0)
        raise RuntimeError(f"Trying to create tensor with negative dimension {bad}: {list(sizes)}")
    dtype = dtypes.as_dtype(dtype)
    if out is not None and dtype is not None and dtype is not dtypes.as_dtype(out.dtype):
        raise RuntimeError(f"dtype {scalar_type_name(dtype)} does not match dtype of out parameter "
                           f"({scalar_type_name(dtypes.as_dtype(out.dtype))})")
    dtype = dtype or (dtypes.as_dtype(out.dtype) if out is not None else dtypes.defaults.floating)
    if not dtype.is_floating_point:
        raise _not_implemented("normal_kernel_cpu", dtype)
    result = M.add(M.mul(randn(sizes, generator=generator, dtype=dtype), std), mean)
    if out is not None:
        return _write_out("normal", out, result)
    return result.requires_grad_(True) if requires_grad else result


# ----------------------------------------------------------------------------- bernoulli

def _bernoulli_draws(probability, shape, dtype, generator):
    """1 where a uniform draw falls below the probability (a number or a tensor), else 0."""
    return M.to_dtype(M.lt(_uniform(shape, generator), probability), dtype)


def _check_probability(op, p):
    if not 0.0 <= p <= 1.0:
        raise RuntimeError(f"{op} expects p to be in [0, 1], but got p={p:g}")


def _check_probability_tensor(p):
    if not p.is_floating_point():
        raise _not_implemented("bernoulli_tensor_cpu_p_", p.dtype)
    values = _values(p)
    if not ((values >= 0.0) & (values <= 1.0)).all():
        raise RuntimeError(_P_IN_RANGE)


def bernoulli(input, p=None, *, generator=None, out=None):
    """0 or 1 drawn with the probabilities in `input` (in input's dtype, or out's), or with the one
    probability `p` (then in input's shape and dtype). The draw has a zero gradient, as in torch;
    the `p` form has none (backward raises torch's error)."""
    _require_tensor("bernoulli", input)
    if p is None:
        _check_probability_tensor(input)
        dtype = dtypes.as_dtype(out.dtype if out is not None else input.dtype)
        result = _bernoulli_draws(input.detach(), input.shape, dtype, generator)
        result = _zero_gradient((input,), result)
        return result if out is None else _write_out("bernoulli", out, result)
    if out is not None or not _is_number(p):
        kwargs = {"out": out} if out is not None else {}
        raise _invalid_combination("bernoulli", (input, p), kwargs, _BERNOULLI_OVERLOADS)
    p = float(p)
    _check_probability("bernoulli_", p)
    result = _bernoulli_draws(p, input.shape, input.dtype, generator)
    if STATE.grad_enabled and input.requires_grad and input.is_floating_point():
        result = _zero_gradient((input,), result)
        if STATE.recorder is None:
            from .autograd import fails_backward
            result = fails_backward(result, "derivative for aten::bernoulli is not implemented")
    return result


def tensor_bernoulli(tensor, p=None, *, generator=None):
    """Tensor.bernoulli(p=None, *, generator=None): torch.bernoulli, refusing what the method refuses."""
    if p is not None and not _is_number(p):
        raise _invalid_combination("bernoulli", (p,), {}, ("(*, torch.Generator generator = None)",
                                                          "(float p, *, torch.Generator generator = None)"))
    return bernoulli(tensor, p, generator=generator)


def bernoulli_(tensor, p=0.5, *, generator=None):
    """Tensor.bernoulli_: fill with 0/1 draws of probability p (a number, or a float tensor that
    broadcasts to this tensor's shape)."""
    if isinstance(p, Tensor):
        probability = _expand_to(p.detach(), tuple(tensor.shape))
        _check_probability_tensor(p)

        def draw(current):
            result = _bernoulli_draws(probability, current.shape, current.dtype, generator)
            return _zero_gradient((p,), result) if current.is_floating_point() else result
        return tensor._inplace(draw, "bernoulli_", (p,))
    if not _is_number(p):
        raise _invalid_combination("bernoulli_", (p,), {}, ("(Tensor p, *, torch.Generator generator = None)",
                                                            "(float p = 0.5, *, torch.Generator generator = None)"))
    p = float(p)
    _check_probability("bernoulli_", p)
    return tensor._inplace(lambda current: _bernoulli_draws(p, current.shape, current.dtype, generator), "bernoulli_")


# ----------------------------------------------------------------------------- poisson

@keeps_device
def poisson(input, generator=None):
    """Counts drawn from Poisson distributions with the rates in `input` (float dtypes; a zero
    gradient, as in torch). The draw is numpy's: a compiled function using it runs eagerly."""
    _require_tensor("poisson", input)
    if not input.is_floating_point():
        raise _not_implemented("poisson_cpu", input.dtype)
    untraceable_draw("poisson")
    rates = _values(input)
    if not (rates >= 0.0).all():
        raise RuntimeError("invalid Poisson rate, expected rate to be non-negative")
    rng = generator_or_default(generator)
    huge = rates > 1e15  # (numpy refuses rates near 2^63; at these the normal approximation is exact to print)
    counts = rng.poisson(np.where(huge, 0.0, rates)).astype(np.float64)
    if huge.any():
        counts[huge] = np.round(rng.normal(rates[huge], np.sqrt(rates[huge])))
    counts[np.isinf(rates)] = float(np.iinfo(np.int64).min)  # (what torch's int64 cast of an infinite count gives)
    return _zero_gradient((input,), Tensor._wrap(counts.astype(input._data.dtype)))


# ----------------------------------------------------------------------------- in-place fills

def _require_float(tensor, distribution, name_of=scalar_type_name):
    dtype = dtypes.as_dtype(tensor.dtype)
    if not dtype.is_floating_point:
        raise RuntimeError(f"{distribution} distribution is a continuous probability distribution. dtype must be a "
                           f"floating point but you specified {name_of(dtype)}")


def _fill(tensor, name, draw):
    """Write `draw(shape, dtype)` (a float64 tensor) into `tensor`, cast to its dtype."""
    return tensor._inplace(lambda current: M.to_dtype(draw(tuple(current.shape), current.dtype), current.dtype),
                           name)


def normal_(tensor, mean=0.0, std=1.0, *, generator=None):
    """mean + std * z, z standard normal (drawn by randn: inside ember.compile, afresh per call)."""
    mean = _float_argument("normal_", "mean", 1, mean)
    std = _float_argument("normal_", "std", 2, std)
    if not std >= 0.0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std:g}")
    if not tensor.is_floating_point():
        raise _not_implemented("normal_kernel_cpu", tensor.dtype)
    return _fill(tensor, "normal_", lambda shape, dtype: M.add(
        M.mul(randn(tuple(shape), generator=generator, dtype=dtypes.float64), std), mean))


def uniform_(tensor, a=0.0, b=1.0, *, generator=None):
    """a + (b - a) * u, u uniform in [0, 1) (drawn by rand: inside ember.compile, afresh per call)."""
    a = _float_argument("uniform_", "from", 1, a)
    b = _float_argument("uniform_", "to", 2, b)
    if not a <= b:
        raise RuntimeError(f"uniform_ expects to return a [from, to) range, but found from={a:g} > to={b:g}")
    if not tensor.is_floating_point():
        raise _not_implemented("check_uniform_bounds", tensor.dtype)
    return _fill(tensor, "uniform_", lambda shape, dtype: M.add(M.mul(_uniform(shape, generator), b - a), a))


def exponential_(tensor, lambd=1.0, *, generator=None):
    """-log(1 - u) / lambd; the log is at most -eps/2 of the dtype, so 0 is never drawn (as torch)."""
    lambd = _float_argument("exponential_", "lambd", 1, lambd)
    if not lambd > 0.0:
        raise RuntimeError(f"exponential_ expects lambda > 0.0, but found lambda={lambd:g}")
    _require_float(tensor, "Exponential")
    return _fill(tensor, "exponential_", lambda shape, dtype: M.div(
        M.clamp_min(M.neg(M.log1p(M.neg(_uniform(shape, generator)))), dtypes.finfo(dtype).eps / 2), lambd))


def cauchy_(tensor, median=0.0, sigma=1.0, *, generator=None):
    """median + sigma * tan(pi (u - 1/2))."""
    median = _float_argument("cauchy_", "median", 1, median)
    sigma = _float_argument("cauchy_", "sigma", 2, sigma)
    if not sigma > 0.0:
        raise RuntimeError(f"cauchy_ expects sigma > 0.0, but found sigma={sigma:g}")
    _require_float(tensor, "Cauchy", cpp_type_name)
    return _fill(tensor, "cauchy_", lambda shape, dtype: M.add(
        M.mul(M.tan(M.mul(M.sub(_uniform(shape, generator), 0.5), math.pi)), sigma), median))


def log_normal_(tensor, mean=1.0, std=2.0, *, generator=None):
    """exp(mean + std * z): mean and std are those of the underlying normal distribution."""
    mean = _float_argument("log_normal_", "mean", 1, mean)
    std = _float_argument("log_normal_", "std", 2, std)
    if not std > 0.0:
        raise RuntimeError(f"log_normal_ expects std > 0.0, but found std={std:g}")
    if not tensor.is_floating_point():
        raise _not_implemented("log_normal_cpu", tensor.dtype)
    return _fill(tensor, "log_normal_", lambda shape, dtype: M.exp(
        M.add(M.mul(randn(shape, generator=generator, dtype=dtypes.float64), std), mean)))


def geometric_(tensor, p, *, generator=None):
    """The number of trials up to the first success, in {1, 2, ...}: ceil(log(1 - u) / log(1 - p))."""
    p = _float_argument("geometric_", "p", 1, p)
    if not 0.0 < p < 1.0:
        raise RuntimeError(f"geometric_ expects p to be in (0, 1), but got p={p:g}")
    if dtypes.as_dtype(tensor.dtype) is dtypes.bool_:
        raise _not_implemented("geometric_cpu", tensor.dtype)
    return _fill(tensor, "geometric_", lambda shape, dtype: M.clamp_min(M.ceil(
        M.div(M.log1p(M.neg(_uniform(shape, generator))), math.log1p(-p))), 1.0))


# ----------------------------------------------------------------------------- random_

_MANTISSA_DIGITS = {"float32": 24, "float64": 53, "float16": 11, "bfloat16": 8}
_INT64_MIN, _INT64_MAX = -2 ** 63, 2 ** 63 - 1


def _random_arguments(args, kwargs):
    """torch's overloads of random_: (), (to), (from, to) with `to` possibly None; `from` and `to`
    may be keywords. Returns (from, to, whether from was given)."""
    unknown = [k for k in kwargs if k not in ("from", "to")]
    if unknown:
        raise TypeError(f"random_() got an unexpected keyword argument '{unknown[0]}'")
    if len(args) > 2:
        raise TypeError(f"random_() takes 2 positional arguments but {len(args)} were given")
    if len(args) == 2 or "from" in kwargs or (args and "to" in kwargs):
        bound = dict(zip(("from", "to"), args))
        if set(bound) & set(kwargs) or "to" not in {**bound, **kwargs}:
            raise _invalid_combination("random_", args, kwargs, _RANDOM_OVERLOADS)
        bound.update(kwargs)
        start, stop, given = bound["from"], bound["to"], True
    elif args or kwargs:
        start, stop, given = 0, args[0] if args else kwargs["to"], False
        if stop is None:
            raise _invalid_combination("random_", args, kwargs, _RANDOM_OVERLOADS)
    else:
        return 0, None, False
    try:
        if isinstance(start, (bool, np.bool_)) or isinstance(stop, (bool, np.bool_)):
            raise TypeError
        start = operator.index(start)
        stop = None if stop is None else operator.index(stop)
    except TypeError:
        raise _invalid_combination("random_", args, kwargs, _RANDOM_OVERLOADS) from None
    return start, stop, given


def _check_random_bounds(value, name, dtype):
    """torch's check_from_to_in_range: within the dtype's limits, and warned beyond the integers
    a float dtype holds exactly."""
    if dtype.is_floating_point:
        info = dtypes.finfo(dtype)
        low, high = info.min, info.max
    elif dtype is dtypes.bool_:
        low, high = 0, 1
    else:
        info = dtypes.iinfo(dtype)
        low, high = info.min, info.max
    if not low <= value <= high:
        raise RuntimeError(f"{name} is out of bounds for {cpp_type_name(dtype)}")
    digits = _MANTISSA_DIGITS.get(dtype.name)
    if digits is not None and not -(2 ** digits) <= value <= 2 ** digits:
        warnings.warn(f"{name} is out of bounds [-(2^{digits}), 2^{digits}]. Due to precision limitations "
                      f"{cpp_type_name(dtype)} can support discrete uniform distribution only within this range. "
                      f"This warning will become an error in version 1.7 release, please fix the code in advance",
                      UserWarning, stacklevel=4)


def _random_range(dtype, start, stop, start_given):
    """The inclusive range [low, high] random_ draws from, as torch's random_from_to."""
    digits = _MANTISSA_DIGITS.get(dtype.name)
    if stop is not None:
        if start >= stop:
            raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={start} >= to={stop}")
        high = stop - 1
    elif start_given and start == _INT64_MIN:  # the full 64-bit range
        if dtype.name not in ("int64", "float64", "float32", "bfloat16"):
            raise RuntimeError("random_full_64_bits_range_kernel_cpu handles only int64, double, float and bfloat16")
        return _INT64_MIN, _INT64_MAX
    elif digits is not None:
        high = 2 ** digits
        if start >= high:
            raise RuntimeError(f"random_ expects 'from' casted to dtype to be less than or equal to 'to_inc' casted "
                               f"to dtype, but got from={start} > to_inc={high}")
    else:
        high = 1 if dtype is dtypes.bool_ else dtypes.iinfo(dtype).max
    if start_given or stop is not None:
        _check_random_bounds(start, "from", dtype)
        _check_random_bounds(high, "to - 1", dtype)
    return start, high


def random_(tensor, *args, generator=None, **kwargs):
    """Tensor.random_(from=0, to=None): integers uniform in [from, to - 1]; without `to`, in
    [from, the dtype's largest] (2^mantissa for float dtypes, whose integers are exact up to it)."""
    start, stop, start_given = _random_arguments(args, kwargs)
    dtype = dtypes.as_dtype(tensor.dtype)
    low, high = _random_range(dtype, start, stop, start_given)
    untraceable_draw("random_")
    values = generator_or_default(generator).integers(low, high, size=tuple(tensor.shape), dtype=np.int64,
                                                      endpoint=True)
    drawn = Tensor._wrap(values.astype(dtype.np))
    return tensor._inplace(lambda current: drawn, "random_")
