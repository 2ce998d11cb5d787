"""Broadcasting and PyTorch's type promotion: which dtype a mixed operation returns, how
Python scalars and 0-d tensors take part, bool arithmetic, reflected scalar operators,
integer division, and what in-place ops may and may not cast.
"""
import numpy as np
import pytest

import ember


def t(values, dtype):
    return ember.tensor(values, dtype=dtype)


def zero_d(value, dtype):
    return ember.tensor(value, dtype=dtype)


PROMOTION = [
    # (label, lhs, rhs, expected dtype) -- each line is PyTorch's answer
    ("int64 + float32 tensors", lambda: t([1, 2], ember.int64), lambda: t([1.0, 2.0], ember.float32), ember.float32),
    ("int32 + python int stays int32", lambda: t([1, 2], ember.int32), lambda: 5, ember.int32),
    ("int64 + python float is the default float", lambda: t([1, 2], ember.int64), lambda: 2.5, ember.float32),
    ("float32 + float64 0-d tensor stays float32", lambda: t([1.0], ember.float32),
     lambda: zero_d(1.0, ember.float64), ember.float32),
    ("int64 + float64 0-d tensor takes the 0-d float", lambda: t([1], ember.int64),
     lambda: zero_d(1.0, ember.float64), ember.float64),
    ("int32 + int64 0-d tensor stays int32", lambda: t([1], ember.int32), lambda: zero_d(1, ember.int64), ember.int32),
    ("0-d int32 + 0-d int64 promote normally", lambda: zero_d(1, ember.int32), lambda: zero_d(1, ember.int64),
     ember.int64),
    ("0-d float32 + 0-d float64 promote normally", lambda: zero_d(1.0, ember.float32),
     lambda: zero_d(1.0, ember.float64), ember.float64),
    ("uint8 + int8 is int16", lambda: t([1], ember.uint8), lambda: t([1], ember.int8), ember.int16),
    ("int8 + int16", lambda: t([1], ember.int8), lambda: t([1], ember.int16), ember.int16),
    ("bool + python int is int64", lambda: t([True], ember.bool), lambda: 1, ember.int64),
    ("bool + python float is the default float", lambda: t([True], ember.bool), lambda: 1.5, ember.float32),
    ("bool + python bool stays bool", lambda: t([True], ember.bool), lambda: True, ember.bool),
    ("bool + int32 0-d tensor is int32", lambda: t([True], ember.bool), lambda: zero_d(1, ember.int32), ember.int32),
    ("float16 + python float stays float16", lambda: t([1.0], ember.float16), lambda: 1.0, ember.float16),
    ("float16 + float32 tensors", lambda: t([1.0], ember.float16), lambda: t([1.0], ember.float32), ember.float32),
    ("uint8 + python int stays uint8", lambda: t([1], ember.uint8), lambda: 3, ember.uint8),
    ("0-d int + python float", lambda: zero_d(1, ember.int64), lambda: 0.5, ember.float32),
    ("float64 + float32 tensors", lambda: t([1.0], ember.float64), lambda: t([1.0], ember.float32), ember.float64),
]


@pytest.mark.parametrize("lhs, rhs, expected", [p[1:] for p in PROMOTION], ids=[p[0] for p in PROMOTION])
def test_binary_result_dtype_follows_pytorch(lhs, rhs, expected):
    a, b = lhs(), rhs()
    assert (a + b).dtype is expected
    assert (b + a).dtype is expected  # order does not matter
    assert (a * b).dtype is expected
    assert ember.result_type(a, b) is expected


def test_values_of_a_mixed_add_are_computed_in_the_result_dtype():
    out = t([1, 2], ember.int64) + 2.5
    np.testing.assert_array_equal(out.numpy(), np.array([3.5, 4.5], np.float32))
    big = t([2 ** 40], ember.int64) + zero_d(1, ember.int32)
    assert big.dtype is ember.int64 and big.item() == 2 ** 40 + 1


def test_promote_types_and_can_cast():
    assert ember.promote_types(ember.int32, ember.float32) is ember.float32
    assert ember.promote_types(ember.uint8, ember.int8) is ember.int16
    assert ember.promote_types(ember.bool, ember.int8) is ember.int8
    assert ember.can_cast(ember.int32, ember.float32)
    assert not ember.can_cast(ember.float32, ember.int32)


def test_true_division_of_integers_gives_the_default_float():
    out = t([1, 2, -3], ember.int64) / t([2, 2, 2], ember.int64)
    assert out.dtype is ember.float32
    assert out.tolist() == [0.5, 1.0, -1.5]
    assert (t([1], ember.int32) / 2).dtype is ember.float32
    assert (t([True], ember.bool) / 2).dtype is ember.float32


def test_default_dtype_decides_what_python_floats_become():
    previous = ember.get_default_dtype()
    ember.set_default_dtype(ember.float64)
    try:
        assert ember.tensor([1.5]).dtype is ember.float64
        assert (t([1], ember.int64) + 2.5).dtype is ember.float64
        assert (t([1], ember.int64) / 2).dtype is ember.float64
        assert (t([1.0], ember.float32) + 2.5).dtype is ember.float32
    finally:
        ember.set_default_dtype(previous)
    with pytest.raises(TypeError, match="floating-point"):
        ember.set_default_dtype(ember.int64)


def test_unary_float_functions_promote_integers():
    for fn in (ember.sqrt, ember.exp, ember.log, ember.sin, ember.sigmoid, ember.tanh):
        out = fn(t([1, 4], ember.int64))
        assert out.dtype is ember.float32, fn.__name__
    assert ember.sqrt(t([4], ember.int32)).tolist() == [2.0]
    # sign-preserving ops keep integer dtypes
    assert ember.abs(t([-1, 2], ember.int32)).dtype is ember.int32
    assert (-t([1], ember.int16)).dtype is ember.int16
    assert ember.floor(t([3], ember.int64)).tolist() == [3]


# ----------------------------------------------------------------------------- comparisons and bools

@pytest.mark.parametrize("op", ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"])
def test_comparisons_return_bool_with_promotion(op):
    a = t([1, 2, 3], ember.int64)
    b = t([1.5, 2.0, 2.5], ember.float32)
    out = getattr(a, op)(b)
    assert out.dtype is ember.bool
    np.testing.assert_array_equal(out.numpy(), getattr(np.array([1, 2, 3]), op)(np.array([1.5, 2.0, 2.5])))
    assert getattr(a, op)(2).dtype is ember.bool
    assert getattr(a, op)(2.5).dtype is ember.bool


def test_equality_with_non_numbers_is_false_not_an_error():
    assert (t([1], ember.int64) == None) is False  # noqa: E711
    assert (t([1], ember.int64) != "a") is True


def test_bool_add_is_logical_or_and_mul_is_logical_and():
    a, b = t([True, True, False, False], ember.bool), t([True, False, True, False], ember.bool)
    assert (a + b).dtype is ember.bool and (a + b).tolist() == [True, True, True, False]
    assert (a * b).dtype is ember.bool and (a * b).tolist() == [True, False, False, False]
    assert ember.maximum(a, b).tolist() == [True, True, True, False]
    assert ember.minimum(a, b).tolist() == [True, False, False, False]
    assert (a + True).tolist() == [True, True, True, True]


def test_bool_arithmetic_records_logical_primitives_while_tracing():
    graph = ember.trace(lambda a, b: ((a > 0) + (b > 0), (a > 0) * (b > 0)), ember.tensor([1.0, -1.0]),
                        ember.tensor([-1.0, -1.0]))
    graph.verify()
    text = str(graph)
    assert "logical_or(" in text and "logical_and(" in text and "= add(" not in text and "= mul(" not in text


def test_bool_subtraction_and_negation_raise_with_the_logical_alternative():
    a = t([True, False], ember.bool)
    with pytest.raises(RuntimeError, match=r"sub: is not defined for bool tensors, got b8\[2\] and b8\[2\].*xor"):
        a - a
    with pytest.raises(RuntimeError, match=r"neg: is not defined for bool tensors.*logical_not"):
        -a


def test_logical_ops_accept_any_dtype_and_return_bool():
    out = ember.logical_and(t([1, 0, 2], ember.int64), t([0.5, 0.5, 0.0], ember.float32))
    assert out.dtype is ember.bool and out.tolist() == [True, False, False]
    assert ember.logical_not(t([0.0, 2.0], ember.float32)).tolist() == [True, False]
    assert (~t([True, False], ember.bool)).tolist() == [False, True]
    assert (t([True, False], ember.bool) ^ t([True, True], ember.bool)).tolist() == [False, True]


# ----------------------------------------------------------------------------- reflected scalar operators

REFLECTED = [
    ("2 - t", lambda x: 2 - x, lambda x: 2 - x),
    ("2 / t", lambda x: 2 / x, lambda x: 2 / x),
    ("2 ** t", lambda x: 2 ** x, lambda x: 2.0 ** x),
    ("2 + t", lambda x: 2 + x, lambda x: 2 + x),
    ("2 * t", lambda x: 2 * x, lambda x: 2 * x),
    ("7 // t", lambda x: 7 // x, lambda x: 7 // x),
    ("7 % t", lambda x: 7 % x, lambda x: 7 % x),
    ("1.5 - t", lambda x: 1.5 - x, lambda x: 1.5 - x),
]


@pytest.mark.parametrize("ember_fn, numpy_fn", [r[1:] for r in REFLECTED], ids=[r[0] for r in REFLECTED])
def test_reflected_scalar_operators(ember_fn, numpy_fn):
    values = np.array([1.5, -2.0, 4.0], np.float32)
    out = ember_fn(ember.tensor(values))
    assert out.dtype is ember.float32
    np.testing.assert_allclose(out.numpy(), numpy_fn(values.astype(np.float64)), rtol=1e-6)


def test_reflected_operators_on_integer_tensors():
    x = t([1, 2, 3], ember.int64)
    assert (2 - x).tolist() == [1, 0, -1] and (2 - x).dtype is ember.int64
    assert (2 ** x).tolist() == [2, 4, 8] and (2 ** x).dtype is ember.int64
    assert (2 / x).dtype is ember.float32
    assert (2.5 ** x).dtype is ember.float32
    np.testing.assert_allclose((2.5 ** x).numpy(), 2.5 ** np.array([1, 2, 3]), rtol=1e-6)


def test_numpy_scalars_on_the_left_defer_to_the_tensor():
    out = np.float32(2.0) * ember.tensor([1.0, 2.0])
    assert isinstance(out, ember.Tensor) and out.tolist() == [2.0, 4.0]


# ----------------------------------------------------------------------------- integer division, pow

def test_floor_divide_and_remainder_follow_python_signs():
    a = t([7, -7, 7, -7], ember.int64)
    b = t([2, 2, -2, -2], ember.int64)
    assert (a // b).tolist() == [3, -4, -4, 3]
    assert (a % b).tolist() == [1, 1, -1, -1]
    assert ember.remainder(ember.tensor([5.5, -5.5]), 3).tolist() == [2.5, 0.5]


def test_div_rounding_modes():
    a = t([-7, 7], ember.int64)
    trunc = ember.div(a, 2, rounding_mode="trunc")
    assert trunc.dtype is ember.int64 and trunc.tolist() == [-3, 3]
    floor = ember.div(a, 2, rounding_mode="floor")
    assert floor.dtype is ember.int64 and floor.tolist() == [-4, 3]
    assert ember.div(ember.tensor([-7.0, 7.0]), 2, rounding_mode="trunc").tolist() == [-3.0, 3.0]


def test_integer_division_by_zero_raises():
    with pytest.raises(RuntimeError, match="floor_divide.*division by zero"):
        t([1, 2], ember.int64) // 0
    with pytest.raises(RuntimeError, match="remainder.*division by zero"):
        t([1, 2], ember.int64) % t([1, 0], ember.int64)
    assert (t([1, 0], ember.int64) / 0).tolist()[0] == float("inf")  # true division gives a float


def test_integer_powers():
    x = t([1, 2, 3], ember.int64)
    assert (x ** 2).dtype is ember.int64 and (x ** 2).tolist() == [1, 4, 9]
    assert (x ** 0.5).dtype is ember.float32
    with pytest.raises(RuntimeError, match="negative integer powers"):
        x ** -1
    assert (ember.tensor([2.0]) ** -1).tolist() == [0.5]


# ----------------------------------------------------------------------------- broadcasting

BROADCASTS = [((2, 3), (3,)), ((2, 1), (1, 4)), ((3, 1, 5), (4, 1)), ((), (2, 3)), ((1,), (0,)), ((2, 0), (1, 0)),
              ((5, 1, 1), (1, 6, 1), (1, 1, 7))]


@pytest.mark.parametrize("shapes", BROADCASTS, ids=[str(s) for s in BROADCASTS])
def test_broadcasting_matches_numpy(shapes):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    total = ember.tensor(arrays[0])
    for a in arrays[1:]:
        total = total + ember.tensor(a)
    expected = sum(arrays[1:], arrays[0])
    assert tuple(total.shape) == expected.shape
    np.testing.assert_allclose(total.numpy(), expected, rtol=1e-6)
    assert tuple(ember.broadcast_tensors(*[ember.tensor(a) for a in arrays])[0].shape) == expected.shape


def test_non_broadcastable_shapes_raise_naming_both():
    with pytest.raises(RuntimeError, match=r"add: shapes f32\[2,3\] and f32\[4\] are not broadcastable "
                                           r"\(dim -1 is 3 vs 4\)"):
        ember.zeros(2, 3) + ember.zeros(4)
    with pytest.raises(RuntimeError, match=r"mul: shapes f32\[2,3\] and f32\[3,1\] are not broadcastable "
                                           r"\(dim -2 is 2 vs 3\)"):
        ember.zeros(2, 3, dtype=ember.int64) * ember.zeros(3, 1)


def test_where_promotes_and_broadcasts():
    cond = ember.tensor([[True], [False]])
    out = ember.where(cond, ember.tensor([1, 2, 3]), 2.5)
    assert out.dtype is ember.float32 and tuple(out.shape) == (2, 3)
    assert out.tolist() == [[1.0, 2.0, 3.0], [2.5, 2.5, 2.5]]
    assert ember.where(cond, 1, 0).dtype is ember.int64


# ----------------------------------------------------------------------------- in-place casting

def test_inplace_keeps_the_destination_dtype_when_the_result_can_be_cast():
    x = ember.tensor([1.0, 2.0])
    x += t([1, 1], ember.int64)
    assert x.dtype is ember.float32 and x.tolist() == [2.0, 3.0]
    x.mul_(zero_d(2.0, ember.float64))
    assert x.dtype is ember.float32 and x.tolist() == [4.0, 6.0]
    y = t([1, 2], ember.int32)
    y += 3
    assert y.dtype is ember.int32 and y.tolist() == [4, 5]


def test_inplace_refuses_a_result_that_cannot_be_cast():
    x = t([1, 2], ember.int64)
    with pytest.raises(RuntimeError, match="result type ember.float32 can't be cast to the desired output "
                                           "type ember.int64"):
        x += 2.5
    with pytest.raises(RuntimeError, match="can't be cast"):
        x /= 2
    assert x.tolist() == [1, 2]  # nothing half-written
