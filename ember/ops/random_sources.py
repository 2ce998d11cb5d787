"""The `random` source primitive: a counter-based generator (splitmix64 of seed and element
index), so every backend can reproduce the same numbers from the same seed. Traced code
that draws random numbers (rand, randn, dropout masks) binds it with a seed input that
the compiled program receives fresh on every call.
"""
import numpy as np

from .registry import OpError, Spec, describe, register
from ember import dtypes

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def uniform_bits(seed, count, stream=0):
    """`count` floats in [0, 1) with 24 random bits each (exact in float32)."""
    index = np.arange(count, dtype=np.uint64) + np.uint64(stream) * np.uint64(count)
    z = (np.uint64(seed) + (index + np.uint64(1)) * _GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) * (1.0 / (1 << 24))


def _random(seed, distribution, shape, dtype, a, b):
    count = int(np.prod(shape, dtype=np.int64))
    with np.errstate(over="ignore"):
        if distribution == "uniform":
            values = a + (b - a) * uniform_bits(int(seed), count)
        else:  # normal(mean=a, std=b) by Box-Muller
            u1 = uniform_bits(int(seed), count, stream=0)
            u2 = uniform_bits(int(seed), count, stream=1)
            values = a + b * np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
    return values.reshape(shape).astype(dtype)


def _random_rule(seed, distribution, shape, dtype, a, b):
    if seed.dtype is not dtypes.int64 or seed.shape != ():
        raise OpError("random", f"seed must be a 0-d int64 tensor, got {describe(seed)}")
    if distribution not in ("uniform", "normal"):
        raise OpError("random", f"unknown distribution {distribution!r} (uniform or normal)")
    return Spec(tuple(shape), dtypes.from_name(dtype))


register("random", "source", _random, _random_rule)


# ----------------------------------------------------------------------------- iota

def _iota(length, start, step, dtype):
    """start + i * step for i in range(length), as numpy's arange computes it."""
    kind = np.float64 if np.dtype(dtype).kind == "f" else np.int64
    return (kind(start) + np.arange(int(length), dtype=kind) * kind(step)).astype(dtype)


def _iota_rule(length, start, step, dtype):
    return Spec((length,), dtypes.from_name(dtype))


# `arange` of a symbolic length in a dynamic program (frontend/dynamic_shapes.py writes it
# where two traces held aranges of two lengths): its values are computed, not stored
register("iota", "source", _iota, _iota_rule)
