"""Bitwise and/or/xor/not, shifts, gcd and lcm on integer and bool tensors, and the float bit
functions frexp, ldexp and nextafter (frontend/bitwise.py): values against Python-integer and
numpy references with PyTorch's rules (wrapping, out-of-range shifts, promotion), the operators
and in-place forms, gradients against finite differences, eager against ember.compile (the
integer ops lower to loops: no callback), and PyTorch's errors."""
import math

import numpy as np
import pytest

import ember
from ember.ops import PRIMITIVES
from finite_differences import check_vjp

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

RNG = np.random.default_rng(0)
INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8"]


def operands(dtype, shape=(4, 6)):
    info = np.iinfo(dtype)
    low, high = max(info.min, -1000), min(info.max, 1000)
    a = RNG.integers(low, high, shape, endpoint=True).astype(dtype)
    a.flat[:2] = [info.min, info.max]
    return a, RNG.integers(low, high, shape[-1:], endpoint=True).astype(dtype)


def wrap(value, dtype):
    """A Python integer wrapped to the dtype's width, as C's conversions wrap."""
    info = np.iinfo(dtype)
    span = info.max - info.min + 1
    return (value - info.min) % span + info.min


def elementwise(fn, a, b, dtype):
    a, b = np.broadcast_arrays(a, b)
    return np.array([wrap(fn(int(x), int(y)), dtype) for x, y in zip(a.ravel(), b.ravel())]).reshape(a.shape)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_and_or_xor_not_match_python_integers(dtype):
    a, b = operands(dtype)
    x, y = ember.tensor(a), ember.tensor(b)
    for fn, op in ((ember.bitwise_and, lambda p, q: p & q), (ember.bitwise_or, lambda p, q: p | q),
                   (ember.bitwise_xor, lambda p, q: p ^ q)):
        out = fn(x, y)
        assert out.dtype.name == dtype
        np.testing.assert_array_equal(out.numpy(), elementwise(op, a, b, dtype))
    np.testing.assert_array_equal(ember.bitwise_not(x).numpy(), elementwise(lambda p, q: ~p, a, a, dtype))
    np.testing.assert_array_equal((x & y).numpy(), ember.bitwise_and(x, y).numpy())
    np.testing.assert_array_equal((~x).numpy(), ember.bitwise_not(x).numpy())


def reference_shift(a, b, dtype, left):
    """PyTorch's shifts: wrapping a << b for 0 <= b < width, else 0; a >> b arithmetic (floor),
    the sign fill where b is negative or not below the width."""
    width = 8 * np.dtype(dtype).itemsize

    def shift(p, q):
        if left:
            return p << q if 0 <= q < width else 0
        return p >> q if 0 <= q < width else (-1 if p < 0 else 0)
    return elementwise(shift, a, b, dtype)


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_shifts_follow_pytorchs_rules_at_every_width(dtype):
    a, _ = operands(dtype)
    width = 8 * np.dtype(dtype).itemsize
    low = 0 if dtype == "uint8" else -2
    b = np.array([low, 0, 1, width - 2, width - 1, width + 3], dtype)
    x, s = ember.tensor(a), ember.tensor(b)
    np.testing.assert_array_equal(ember.bitwise_left_shift(x, s).numpy(), reference_shift(a, b, dtype, True))
    np.testing.assert_array_equal(ember.bitwise_right_shift(x, s).numpy(), reference_shift(a, b, dtype, False))
    np.testing.assert_array_equal((x << s).numpy(), ember.bitwise_left_shift(x, s).numpy())
    np.testing.assert_array_equal((x >> 1).numpy(), reference_shift(a, np.ones_like(b), dtype, False))
    assert (x >> 1).dtype.name == dtype


def test_promotion_scalars_and_bool_operands():
    assert (ember.tensor([1, 2], dtype=ember.uint8) & ember.tensor([3], dtype=ember.int8)).dtype is ember.int16
    np.testing.assert_array_equal((ember.tensor([True, False]) & 3).numpy(), [1, 0])
    np.testing.assert_array_equal((ember.tensor([True, False]) | ember.tensor([False, False])).numpy(), [True, False])
    assert (ember.tensor([True]) ^ ember.tensor([True])).dtype is ember.bool
    np.testing.assert_array_equal((5 & ember.tensor([1, 3])).numpy(), [1, 1])
    np.testing.assert_array_equal((5 << ember.tensor([1, 2])).numpy(), [10, 20])
    np.testing.assert_array_equal((6 ^ ember.tensor([3])).numpy(), [5])
    assert (ember.tensor([1, 2], dtype=ember.int32) >> 1).dtype is ember.int32
    assert ember.bitwise_and(5, ember.tensor([3])).tolist() == [1]


def test_in_place_forms_and_operators():
    x = ember.tensor([12, 10, -7])
    x &= 6
    x |= 1
    x ^= 8
    x <<= 2
    x >>= 1
    expected = [((((v & 6) | 1) ^ 8) << 2) >> 1 for v in (12, 10, -7)]
    assert x.tolist() == expected
    y = ember.tensor([5, 9], dtype=ember.int16)
    assert y.bitwise_not_() is y and y.tolist() == [-6, -10]
    y.bitwise_left_shift_(ember.tensor([1, 2], dtype=ember.int16))
    assert y.tolist() == [-12, -40] and y.dtype is ember.int16
    with pytest.raises(RuntimeError, match="can't be cast"):
        ember.tensor([True, True]).bitwise_and_(ember.tensor([1, 2]))


def test_gcd_and_lcm_match_math_and_wrap_as_pytorch():
    a = np.array([12, -18, 0, 0, 7, 2 ** 40, -(2 ** 62)])
    b = np.array([8, 12, 0, -5, -3, 3 * 2 ** 40, 6])
    np.testing.assert_array_equal(ember.gcd(ember.tensor(a), ember.tensor(b)).numpy(),
                                  [math.gcd(int(p), int(q)) for p, q in zip(a, b)])
    np.testing.assert_array_equal(ember.lcm(ember.tensor(a[:6]), ember.tensor(b[:6])).numpy(),
                                  [math.lcm(int(p), int(q)) for p, q in zip(a[:6], b[:6])])
    small_a, small_b = operands("int8")
    got = ember.lcm(ember.tensor(small_a), ember.tensor(small_b)).numpy()
    np.testing.assert_array_equal(got, elementwise(math.lcm, small_a, small_b, "int8"))  # computed wide, wrapped
    assert ember.gcd(ember.tensor([12], dtype=ember.uint8), ember.tensor([8], dtype=ember.int8)).dtype is ember.int16
    x = ember.tensor([12, 18])
    assert x.gcd_(ember.tensor([8, 4])) is x and x.tolist() == [4, 2]
    ember.lcm_(x, ember.tensor([6, 3]))
    assert x.tolist() == [12, 6]


def test_frexp_decomposes_every_float_exactly():
    values = np.array([0.0, -0.0, 1.0, -3.5, 0.75, 1e-310, 5e-324, 1.7976931348623157e308, 1e300, -2.0 ** -1022,
                       np.inf, -np.inf, np.nan])
    mantissa, exponent = ember.frexp(ember.tensor(values))
    assert mantissa.dtype is ember.float64 and exponent.dtype is ember.int32
    expected = [math.frexp(v) if np.isfinite(v) else (v, 0) for v in values]
    np.testing.assert_array_equal(mantissa.numpy(), [m for m, _ in expected])
    np.testing.assert_array_equal(exponent.numpy(), [e for _, e in expected])
    np.testing.assert_array_equal(np.signbit(mantissa.numpy()), np.signbit(values))
    f32 = np.array([1e-45, 3e38, 1.5e-40, 0.1, -7.0], np.float32)
    m32, e32 = ember.tensor(f32).frexp()
    assert m32.dtype is ember.float32
    np.testing.assert_array_equal(m32.numpy().astype(np.float64) * 2.0 ** e32.numpy(), f32.astype(np.float64))
    assert ((np.abs(m32.numpy()) >= 0.5) & (np.abs(m32.numpy()) < 1)).all()
    m16, e16 = ember.frexp(ember.tensor([1.0, 2.0], dtype=ember.float16))
    assert m16.dtype is ember.float16 and m16.tolist() == [0.5, 0.5] and e16.tolist() == [1, 2]


def test_frexp_mantissa_gradient_is_grad_over_two_to_the_exponent():
    x = ember.tensor([1.5, -3.0, 0.1], dtype=ember.float64, requires_grad=True)
    mantissa, exponent = ember.frexp(x)
    assert not exponent.requires_grad
    mantissa.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2.0 ** -exponent.numpy().astype(np.float64))


def test_ldexp_values_dtypes_and_gradients():
    x, e = np.array([1.0, -2.5, 3.0]), np.array([3, -2, 0])
    np.testing.assert_array_equal(ember.ldexp(ember.tensor(x), ember.tensor(e)).numpy(), x * 2.0 ** e)
    assert ember.ldexp(ember.tensor([1, 2]), ember.tensor([3, 4])).dtype is ember.float32
    assert ember.ldexp(ember.tensor([1.0], dtype=ember.float16), ember.tensor([3])).dtype is ember.float16
    assert ember.ldexp(ember.tensor([1.0]), ember.tensor([2.5], dtype=ember.float64)).dtype is ember.float64
    check_vjp(ember.ldexp, [np.array([0.5, -1.5, 2.0]), np.array([0.25, -1.0, 3.0])])
    y = ember.tensor([1.0, 2.0])
    ember.ldexp_(y, ember.tensor([1, 2]))
    assert y.tolist() == [2.0, 8.0]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_nextafter_steps_one_unit_in_the_dtype(dtype):
    x = np.array([1.0, 0.0, -0.0, np.inf, 1.0, -2.0, 65504.0 if dtype == "float16" else 1e30], dtype)
    y = np.array([2.0, 1.0, -1.0, 0.0, 1.0, -3.0, np.inf], dtype)
    out = ember.nextafter(ember.tensor(x), ember.tensor(y))
    assert out.dtype.name == dtype
    np.testing.assert_array_equal(out.numpy(), np.nextafter(x, y))


def test_nextafter_gradient_passes_to_input_only():
    check_vjp(lambda a, b: ember.nextafter(a, b), [np.array([1.5, -3.0]), np.array([2.0, 2.0])])
    a = ember.tensor([1.5], dtype=ember.float64, requires_grad=True)
    b = ember.tensor([2.0], dtype=ember.float64, requires_grad=True)
    ember.nextafter(a, b).sum().backward()
    assert a.grad.tolist() == [1.0] and b.grad.tolist() == [0.0]


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "int64"])
def test_compiled_integer_ops_lower_to_loops_and_match_eager(dtype):
    a, b = operands(dtype, (3, 5))
    shifts = np.arange(5).astype(dtype)

    def bits(x, y, s):
        return (x & y) | (x ^ 7), ~x, x << s, x >> s, ember.lcm(x, y)
    compiled = ember.compile(bits)
    tensors = [ember.tensor(v) for v in (a, b, shifts)]
    eager = bits(*tensors)
    for _ in range(2):
        for got, want in zip(compiled(*tensors), eager):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert not any(PRIMITIVES[name].host_only for name in ("bitwise_and", "bitwise_or", "bitwise_xor"))


def test_compiled_float_bit_functions_match_eager():
    def float_bits(x, e):
        mantissa, exponent = ember.frexp(x)
        return mantissa, exponent, ember.ldexp(x, e), ember.nextafter(x, ember.zeros_like(x))
    x = ember.tensor(np.array([1e-45, 3e38, 0.0, -0.75, np.inf, 1e-40, 6.5], np.float32))
    e = ember.tensor([1, -2, 3, 0, 1, 5, -1])
    compiled = ember.compile(float_bits)
    compiled(x, e)
    for got, want in zip(compiled(x, e), float_bits(x, e)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_pytorchs_errors():
    cases = [
        (lambda: ember.bitwise_and(ember.tensor([1.5]), 1), NotImplementedError,
         "\"bitwise_and_cpu\" not implemented for 'Float'"),
        (lambda: ember.tensor([1.5]) | 1, NotImplementedError, "\"bitwise_or_cpu\" not implemented for 'Float'"),
        (lambda: ember.bitwise_not(ember.tensor([1.5], dtype=ember.float64)), NotImplementedError,
         "\"bitwise_not_cpu\" not implemented for 'Double'"),
        (lambda: ember.tensor([True]) << ember.tensor([True]), NotImplementedError,
         "\"lshift_cpu\" not implemented for 'Bool'"),
        (lambda: ember.gcd(ember.tensor([1.0]), ember.tensor([2.0])), NotImplementedError,
         "\"gcd_cpu\" not implemented for 'Float'"),
        (lambda: ember.gcd(ember.tensor([4]), 6), TypeError, "argument 'other' \\(position 2\\) must be Tensor"),
        (lambda: ember.frexp(ember.tensor([1, 2])), RuntimeError, "only supports floating-point dtypes"),
        (lambda: ember.ldexp(ember.tensor([1.0]), 3), TypeError, "must be Tensor, not int"),
        (lambda: ember.nextafter(ember.tensor([1, 2]), ember.tensor([2, 3])), NotImplementedError,
         "\"nextafter_cpu\" not implemented for 'Long'"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
