"""Every primitive in ember.ops, bound directly: its VJP agrees with float64 central finite
differences, its shape/dtype rule agrees with its numpy implementation, its kind is known.

The case table below must cover every registered primitive (a test enumerates PRIMITIVES),
so a new primitive cannot land without a gradient check.
"""
import math
from collections import namedtuple

import numpy as np
import pytest

import ember
from ember.ops import KINDS, PRIMITIVES, Primitive, Spec
from ember.frontend.dispatch import STATE
from finite_differences import check_vjp, random
from test_linalg import SYMMETRIC_GRADIENTS, primitive_cases

Case = namedtuple("Case", "label arrays attrs reference tolerance", defaults=(None, None))
Case.__doc__ = """One application of a primitive: numpy operands, attrs, an optional numpy
reference for the forward value, and optional (eps-free) tolerance overrides (rtol, atol)."""

I64 = np.int64


def _away_from_integers(*shape, seed=0):
    """Values whose fractional part stays in (0.1, 0.4): floor/ceil/round are locally constant."""
    rng = np.random.default_rng(seed)
    return rng.integers(-3, 3, shape) + rng.uniform(0.1, 0.4, shape)


def _positive(*shape, seed=0):
    return random(*shape, seed=seed, low=0.5, high=2.0)


def _nonzero(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def _erfinv_by_bisection(x):
    """erfinv to the last bit: 100 halvings of [-6, 6] against math.erf."""
    def one(value):
        low, high = -6.0, 6.0
        for _ in range(100):
            middle = (low + high) / 2
            low, high = (middle, high) if math.erf(middle) < value else (low, middle)
        return low
    return np.vectorize(one, otypes=[np.float64])(x)


CONV_ATTRS = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)

CASES = {
    # --------------------------------------------------------------- unary elementwise
    "neg": [Case("matrix", [random(3, 4)], {}, np.negative)],
    "exp": [Case("matrix", [random(3, 4)], {}, np.exp)],
    "log": [Case("positive", [_positive(3, 4)], {}, np.log)],
    "log1p": [Case("above_minus_one", [random(3, 4, low=-0.5, high=2.0)], {}, np.log1p)],
    "expm1": [Case("matrix", [random(3, 4)], {}, np.expm1)],
    "sqrt": [Case("positive", [_positive(3, 4)], {}, np.sqrt)],
    "rsqrt": [Case("positive", [_positive(3, 4)], {}, lambda x: 1 / np.sqrt(x))],
    "reciprocal": [Case("nonzero", [_nonzero(3, 4)], {}, lambda x: 1 / x)],
    "sin": [Case("matrix", [random(3, 4)], {}, np.sin)],
    "cos": [Case("matrix", [random(3, 4)], {}, np.cos)],
    "tanh": [Case("matrix", [random(3, 4)], {}, np.tanh)],
    "sigmoid": [Case("matrix", [random(3, 4) * 3], {}, lambda x: 1 / (1 + np.exp(-x)))],
    "erf": [Case("matrix", [random(3, 4)], {},
                 np.vectorize(__import__("math").erf, otypes=[np.float64]))],
    "erfc": [Case("matrix", [random(3, 4) * 2], {},
                  np.vectorize(__import__("math").erfc, otypes=[np.float64]))],
    "atan": [Case("matrix", [random(3, 4) * 2], {}, np.arctan)],
    "asin": [Case("inside", [random(3, 4, low=-0.9, high=0.9)], {}, np.arcsin)],
    "acos": [Case("inside", [random(3, 4, low=-0.9, high=0.9)], {}, np.arccos)],
    "erfinv": [Case("inside", [random(3, 4, low=-0.9, high=0.9)], {}, _erfinv_by_bisection)],
    "relu": [Case("matrix", [random(3, 4)], {}, lambda x: np.maximum(x, 0))],
    "abs": [Case("matrix", [random(3, 4)], {}, np.abs)],
    "sign": [Case("matrix", [random(3, 4)], {}, np.sign)],
    "floor": [Case("off_integer", [_away_from_integers(3, 4)], {}, np.floor)],
    "ceil": [Case("off_integer", [_away_from_integers(3, 4)], {}, np.ceil)],
    "round": [Case("off_half", [_away_from_integers(3, 4)], {}, np.round)],
    "logical_not": [Case("bool", [random(3, 4) > 0], {}, np.logical_not)],
    # --------------------------------------------------------------- binary elementwise (broadcasting)
    "add": [Case("broadcast", [random(3, 1, 4), random(2, 4, seed=1)], {}, np.add),
            Case("scalar_rhs", [random(2, 3), random(seed=1)], {}, np.add)],
    "sub": [Case("broadcast", [random(3, 1, 4), random(2, 4, seed=1)], {}, np.subtract),
            Case("scalar_lhs", [random(seed=1), random(2, 3)], {}, np.subtract)],
    "mul": [Case("broadcast", [random(3, 1, 4), random(2, 4, seed=1)], {}, np.multiply),
            Case("column_times_row", [random(3, 1), random(1, 4, seed=1)], {}, np.multiply)],
    "div": [Case("broadcast", [random(3, 1, 4), _nonzero(2, 4, seed=1)], {}, np.divide),
            Case("scalar_denominator", [random(2, 3), _nonzero(seed=1)], {}, np.divide)],
    "pow": [Case("positive_base", [_positive(3, 1, 4), random(2, 4, seed=1)], {}, np.power),
            Case("negative_base_integer_exponent", [_nonzero(2, 3), np.array([2.0, 3.0, -1.0])], {},
                 np.power)],
    "atan2": [Case("broadcast", [random(3, 1, 4), random(2, 4, seed=1)], {}, np.arctan2)],
    "maximum": [Case("broadcast", [random(3, 1, 4), random(2, 4, seed=1)], {}, np.maximum)],
    "minimum": [Case("broadcast", [random(3, 1, 4), random(2, 4, seed=1)], {}, np.minimum)],
    "remainder": [Case("mixed_signs", [random(3, 4) * 3, _nonzero(4, seed=1)], {}, np.remainder)],
    "floor_divide": [Case("mixed_signs", [random(3, 4) * 3, _nonzero(4, seed=1)], {}, np.floor_divide),
                     Case("integers", [np.array([7, -7, 7, -7]), np.array([2, 2, -2, -2])], {},
                          np.floor_divide)],
    **{name: [Case("broadcast", [np.round(random(3, 4)), np.round(random(4, seed=1))], {}, fn)]
       for name, fn in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
                        ("gt", np.greater), ("ge", np.greater_equal))},
    **{name: [Case("bool", [random(3, 4) > 0, random(4, seed=1) > 0], {}, fn)]
       for name, fn in (("logical_and", np.logical_and), ("logical_or", np.logical_or),
                        ("logical_xor", np.logical_xor))},
    # --------------------------------------------------------------- where, convert, constant
    "where": [Case("broadcast", [random(3, 1) > 0, random(3, 4), random(4, seed=1)], {}, np.where)],
    "convert": [Case("float64_identity", [random(3, 4)], {"dtype": "float64"}, lambda x, dtype: x),
                Case("to_float32", [random(3, 4)], {"dtype": "float32"},
                     lambda x, dtype: x.astype(np.float32), (1e-4, 1e-4)),
                Case("float_to_int_truncates", [np.array([1.7, -1.3, 2.4])], {"dtype": "int64"},
                     lambda x, dtype: x.astype(np.int64))],
    "constant": [Case("filled", [], {"value": 2.5, "shape": (2, 3), "dtype": "float32"},
                      lambda value, shape, dtype: np.full(shape, value, dtype))],
    "iota": [Case("int64", [], {"length": 5, "start": 3, "step": 2, "dtype": "int64"},
                  lambda length, start, step, dtype: np.arange(start, start + length * step, step)),
             Case("float32", [], {"length": 4, "start": 0.5, "step": 0.25, "dtype": "float32"},
                  lambda length, start, step, dtype: np.arange(0.5, 1.5, 0.25, dtype=np.float32))],
    "random": [Case("uniform", [np.array(7, I64)],
                    {"distribution": "uniform", "shape": (2, 3), "dtype": "float32", "a": -1.0, "b": 1.0}, None),
               Case("normal", [np.array(7, I64)],
                    {"distribution": "normal", "shape": (4,), "dtype": "float64", "a": 0.0, "b": 1.0}, None)],
    # --------------------------------------------------------------- reductions and scans
    "sum": [Case("two_axes_keepdims", [random(2, 3, 4)], {"axes": (0, 2), "keepdims": True},
                 lambda x, axes, keepdims: x.sum(axes, keepdims=keepdims)),
            Case("two_axes", [random(2, 3, 4)], {"axes": (0, 2), "keepdims": False},
                 lambda x, axes, keepdims: x.sum(axes, keepdims=keepdims)),
            Case("all_axes", [random(2, 3)], {"axes": (0, 1), "keepdims": False},
                 lambda x, axes, keepdims: x.sum(axes, keepdims=keepdims))],
    "prod": [Case("axis1_keepdims", [_nonzero(2, 3, 4)], {"axes": (1,), "keepdims": True},
                  lambda x, axes, keepdims: x.prod(axes, keepdims=keepdims)),
             Case("all_axes", [_nonzero(2, 3)], {"axes": (0, 1), "keepdims": False},
                  lambda x, axes, keepdims: x.prod(axes, keepdims=keepdims)),
             Case("one_zero_per_row", [np.array([[0.0, 2.0, 3.0], [4.0, 0.0, -1.5]])],
                  {"axes": (1,), "keepdims": False}, lambda x, axes, keepdims: x.prod(axes)),
             Case("two_zeros", [np.array([[0.0, 2.0, 0.0], [1.5, 2.0, 3.0]])],
                  {"axes": (1,), "keepdims": False}, lambda x, axes, keepdims: x.prod(axes))],
    "amax": [Case("axis2_keepdims", [random(2, 3, 4)], {"axes": (2,), "keepdims": True},
                  lambda x, axes, keepdims: x.max(axes, keepdims=keepdims)),
             Case("axes01", [random(2, 3, 4)], {"axes": (0, 1), "keepdims": False},
                  lambda x, axes, keepdims: x.max(axes, keepdims=keepdims))],
    "amin": [Case("axis0_keepdims", [random(2, 3, 4)], {"axes": (0,), "keepdims": True},
                  lambda x, axes, keepdims: x.min(axes, keepdims=keepdims)),
             Case("all_axes", [random(2, 3)], {"axes": (0, 1), "keepdims": False},
                  lambda x, axes, keepdims: x.min(axes, keepdims=keepdims))],
    "argmax": [Case("axis1", [random(3, 4)], {"axis": 1, "keepdims": False},
                    lambda x, axis, keepdims: np.argmax(x, axis)),
               Case("flat_keepdims", [random(3, 4)], {"axis": None, "keepdims": True},
                    lambda x, axis, keepdims: np.argmax(x).reshape(1, 1)),
               Case("ties_pick_first", [np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])],
                    {"axis": 1, "keepdims": True}, lambda x, axis, keepdims: np.array([[1], [0]]))],
    "argmin": [Case("axis0_keepdims", [random(3, 4)], {"axis": 0, "keepdims": True},
                    lambda x, axis, keepdims: np.argmin(x, 0)[None]),
               Case("flat", [random(3, 4)], {"axis": None, "keepdims": False},
                    lambda x, axis, keepdims: np.argmin(x))],
    "cumsum": [Case("axis1", [random(3, 4)], {"axis": 1}, lambda x, axis: np.cumsum(x, axis)),
               Case("ints_to_int64", [np.array([[1, 2], [3, 4]], np.int32)], {"axis": 0},
                    lambda x, axis: np.cumsum(x, axis, dtype=np.int64))],
    "argsort": [Case("ascending_stable", [np.array([[3.0, 1.0, 3.0, 2.0, 1.0]])],
                     {"axis": 1, "descending": False}, lambda x, axis, descending: np.array([[1, 4, 3, 0, 2]])),
                Case("descending_stable", [np.array([[3.0, 1.0, 3.0, 2.0, 1.0]])],
                     {"axis": 1, "descending": True}, lambda x, axis, descending: np.array([[0, 2, 3, 1, 4]])),
                Case("axis0", [random(4, 3)], {"axis": 0, "descending": False},
                     lambda x, axis, descending: np.argsort(x, 0, kind="stable"))],
    # --------------------------------------------------------------- special functions (ember/ops/special.py)
    "lgamma": [Case("both_signs", [_away_from_integers(3, 4) + 0.05], {}, np.vectorize(math.lgamma))],
    "digamma": [Case("both_signs", [_away_from_integers(3, 4)], {})],
    "polygamma": [Case("trigamma", [_away_from_integers(3, 4)], {"n": 1}),
                  Case("n3", [_positive(3, 4)], {"n": 3})],
    "zeta": [Case("hurwitz", [_positive(3, 4) + 1.5, _positive(4, seed=1)], {})],
    "bessel_i0": [Case("matrix", [random(3, 4) * 3], {}, np.i0)],
    "bessel_i0e": [Case("matrix", [random(3, 4) * 3], {}, lambda x: np.i0(x) * np.exp(-np.abs(x)))],
    "bessel_i1": [Case("away_from_zero", [_nonzero(3, 4) * 3], {})],
    "bessel_i1e": [Case("away_from_zero", [_nonzero(3, 4) * 3], {})],
    "erfcx": [Case("both_signs", [random(3, 4) * 1.5], {})],
    "log_ndtr": [Case("both_signs", [random(3, 4) * 4], {})],
    "ndtri": [Case("inside", [random(3, 4, low=0.02, high=0.98)], {})],
    "nextafter": [Case("broadcast", [random(3, 4), random(4, seed=1)], {"dtype": "float64"}, np.nextafter)],
    "searchsorted": [Case("rows", [np.sort(random(3, 5), -1), random(3, 4, seed=1)], {"right": False},
                          lambda s, v, right: np.stack([np.searchsorted(a, b) for a, b in zip(s, v)]))],
    "gcd": [Case("integers", [np.array([12, -18, 0, 7]), np.array([8, 12, 0, -3])], {}, np.gcd)],
    **{name: [Case("integers", [np.array([[12, -7, 0, 255]]), np.array([10, 3, -1, -256])], {}, fn)]
       for name, fn in (("bitwise_and", np.bitwise_and), ("bitwise_or", np.bitwise_or),
                        ("bitwise_xor", np.bitwise_xor))},
    # --------------------------------------------------------------- movement
    "reshape": [Case("merge", [random(2, 3, 4)], {"shape": (6, 4)}, lambda x, shape: x.reshape(shape))],
    "permute": [Case("rotate", [random(2, 3, 4)], {"perm": (2, 0, 1)}, lambda x, perm: x.transpose(perm))],
    "broadcast_to": [Case("new_and_unit_dims", [random(3, 1)], {"shape": (2, 3, 4)},
                          lambda x, shape: np.broadcast_to(x, shape))],
    "slice": [Case("steps", [random(5, 7)], {"starts": (1, 0), "stops": (5, 7), "steps": (2, 3)},
                   lambda x, starts, stops, steps: x[1:5:2, 0:7:3]),
              Case("empty", [random(3, 4)], {"starts": (1, 2), "stops": (1, 4), "steps": (1, 1)},
                   lambda x, starts, stops, steps: x[1:1, 2:4])],
    "pad": [Case("interior", [random(2, 3)], {"lo": (1, 0), "hi": (0, 2), "interior": (1, 2), "value": 0.5},
                 None)],
    "concat": [Case("three_on_axis1", [random(2, 1), random(2, 3, seed=1), random(2, 2, seed=2)], {"axis": 1},
                    lambda *xs, axis: np.concatenate(xs, axis))],
    "flip": [Case("two_axes", [random(2, 3, 4)], {"axes": (0, 2)}, lambda x, axes: np.flip(x, axes))],
    "unfold_windows": [Case("stride_dilation", [random(1, 2, 6, 7)],
                            {"kernel": (2, 3), "stride": (2, 1), "dilation": (1, 2)}, None)],
    "fold_windows": [Case("stride_dilation", [random(1, 2, 3, 3, 2, 3)],
                          {"size": (6, 7), "stride": (2, 1), "dilation": (1, 2)}, None)],
    # --------------------------------------------------------------- data-dependent indexing
    "take": [Case("matrix_index_with_repeats", [random(4, 5), np.array([[0, 3], [3, -1]], I64)], {"axis": 1},
                  lambda x, idx, axis: np.take(x, idx, axis))],
    "index_add": [Case("repeated_rows", [random(4, 3), np.array([0, 2, 0], I64), random(3, 3, seed=1)],
                       {"axis": 0}, None)],
    "gather": [Case("smaller_index", [random(3, 4), np.array([[0, 3, 3], [2, 1, 0]], I64)], {"axis": 1},
                    lambda x, idx, axis: np.take_along_axis(x[:2], idx, axis))],
    "scatter_add": [Case("repeated_targets", [random(3, 4), np.array([[0, 3, 3], [2, 1, 2]], I64),
                                              random(2, 3, seed=1)], {"axis": 1}, None)],
    "index_put": [Case("rows", [random(4, 3), np.array([2, 0], I64), random(2, 3, seed=1)], {"axis": 0}, None),
                  Case("columns", [random(3, 4), np.array([[3], [1]], I64), random(3, 2, 1, seed=1)],
                       {"axis": 1}, None)],
    "slice_update": [Case("steps", [random(5, 6), random(2, 3, seed=1)],
                          {"starts": (1, 0), "stops": (5, 6), "steps": (2, 2)}, None)],
    # --------------------------------------------------------------- gradient flow (identities on values)
    "stop_gradient": [Case("matrix", [random(3, 4)], {}, lambda x: x)],
    "overwrite": [Case("matrix", [random(3, 4), random(3, 4, seed=1)], {}, lambda old, new: new)],
    "replace_value": [Case("matrix", [random(3, 4), random(3, 4, seed=1)], {}, lambda old, new: new)],
    # --------------------------------------------------------------- contractions
    "matmul": [Case("batch_broadcast", [random(2, 1, 3, 4), random(5, 4, 2, seed=1)], {}, np.matmul),
               Case("plain", [random(3, 4), random(4, 2, seed=1)], {}, np.matmul)],
    "conv2d": [Case("stride_pad_dilation_groups", [random(2, 4, 8, 6), random(6, 2, 3, 2, seed=1)],
                    CONV_ATTRS, None),
               Case("plain", [random(1, 2, 5, 5), random(3, 2, 3, 3, seed=1)],
                    dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1), None)],
    "conv2d_grad_input": [Case("stride_pad_dilation_groups", [random(2, 6, 4, 8), random(6, 2, 3, 2, seed=1)],
                               dict(input_shape=(2, 4, 8, 6), **CONV_ATTRS), None)],
    "conv2d_grad_weight": [Case("stride_pad_dilation_groups", [random(2, 4, 8, 6), random(2, 6, 4, 8, seed=1)],
                                dict(weight_shape=(6, 2, 3, 2), **CONV_ATTRS), None)],
}


def _bind(name, attrs):
    return lambda *tensors: PRIMITIVES[name].bind(*tensors, **attrs)


def _float_in_and_out(name, case):
    specs = [Spec(np.shape(a), ember.tensor(a).dtype) for a in case.arrays]
    return any(s.dtype.is_floating_point for s in specs) and \
        PRIMITIVES[name].infer(*specs, **case.attrs).dtype.is_floating_point


# VJPs that are deliberately not the derivative of the value (they steer gradients the way
# eager autograd did); test_overwrite_routes_the_gradient_to_the_old_value checks this one
STEERING = {"overwrite"} | SYMMETRIC_GRADIENTS  # (cholesky, eigh: torch's symmetric gradient, not one triangle's)
CASES.update(primitive_cases(Case))  # the linear-algebra primitives (ember/ops/linalg_ops.py)


def _all_cases(only_differentiable=False):
    for name, cases in CASES.items():
        if only_differentiable and (PRIMITIVES[name].vjp is None or name in STEERING):
            continue
        for case in cases:
            if only_differentiable and not _float_in_and_out(name, case):
                continue  # integer operands or an integer result: nothing to differentiate
            yield pytest.param(name, case, id=f"{name}-{case.label}")


# primitives that need a process group: tests/distributed/ddp_training.py checks them under mpirun
# (tests/test_distributed.py), eagerly, interpreted by tracing and compiled
NEED_A_PROCESS_GROUP = {"all_reduce_start", "all_reduce_wait"}


def test_every_primitive_has_a_case():
    missing = sorted(set(PRIMITIVES) - set(CASES) - NEED_A_PROCESS_GROUP)
    assert not missing, f"primitives without a test case (add them to CASES): {missing}"
    unknown = sorted(set(CASES) - set(PRIMITIVES))
    assert not unknown, f"cases for primitives that do not exist: {unknown}"


def test_every_differentiable_primitive_has_a_float_case():
    for name, prim in PRIMITIVES.items():
        if prim.vjp is None:
            continue
        float_cases = [c for c in CASES[name] if _float_in_and_out(name, c)]
        assert float_cases, f"{name} has a VJP but no case with a floating-point operand to check it"


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_kind_is_known(name):
    assert PRIMITIVES[name].kind in KINDS


@pytest.mark.parametrize("name, case", list(_all_cases(only_differentiable=True)))
def test_vjp_matches_finite_differences(name, case):
    if case.tolerance:
        # a float32 result: a wide step keeps float32 rounding out of the difference quotient
        rtol, atol = case.tolerance
        check_vjp(_bind(name, case.attrs), case.arrays, rtol=rtol, atol=atol, eps=1e-2)
        return
    check_vjp(_bind(name, case.attrs), case.arrays)


@pytest.mark.parametrize("name, case", list(_all_cases()))
def test_shape_rule_agrees_with_numpy(name, case):
    prim = PRIMITIVES[name]
    tensors = [ember.tensor(a) for a in case.arrays]
    out = prim.impl(*[t.numpy() for t in tensors], **case.attrs)
    rule = prim.infer(*[Spec(tuple(t.shape), t.dtype) for t in tensors], **case.attrs)
    assert tuple(rule.shape) == np.shape(out)
    assert rule.dtype.name == np.asarray(out).dtype.name


@pytest.mark.parametrize("name, case", [p for p in _all_cases() if p.values[1].reference is not None])
def test_forward_matches_numpy_reference(name, case):
    got = PRIMITIVES[name].bind(*[ember.tensor(a) for a in case.arrays], **case.attrs).numpy()
    expected = np.asarray(case.reference(*case.arrays, **case.attrs))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- hand-checked forwards

def test_pad_places_values_with_interior_padding():
    x = ember.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = PRIMITIVES["pad"].bind(x, lo=(1, 0), hi=(0, 1), interior=(1, 1), value=9.0).numpy()
    np.testing.assert_array_equal(out, [[9, 9, 9, 9],
                                        [1, 9, 2, 9],
                                        [9, 9, 9, 9],
                                        [3, 9, 4, 9]])


def test_unfold_then_fold_counts_window_overlaps():
    x = ember.ones(1, 1, 4, 4, dtype=ember.float64)
    windows = PRIMITIVES["unfold_windows"].bind(x, kernel=(2, 2), stride=(1, 1), dilation=(1, 1))
    assert tuple(windows.shape) == (1, 1, 3, 3, 2, 2)
    folded = PRIMITIVES["fold_windows"].bind(windows, size=(4, 4), stride=(1, 1), dilation=(1, 1)).numpy()
    np.testing.assert_array_equal(folded[0, 0], [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])


def test_conv2d_matches_direct_sum():
    x, w = random(2, 4, 8, 6), random(6, 2, 3, 2, seed=1)
    got = PRIMITIVES["conv2d"].bind(ember.tensor(x), ember.tensor(w), **CONV_ATTRS).numpy()
    (sh, sw), (ph, pw), (dh, dw), groups = CONV_ATTRS.values()
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros(got.shape)
    per_group_out, per_group_in = w.shape[0] // groups, w.shape[1]
    for o in range(w.shape[0]):
        c0 = (o // per_group_out) * per_group_in
        for i in range(out.shape[2]):
            for j in range(out.shape[3]):
                for c in range(per_group_in):
                    for a in range(w.shape[2]):
                        for b in range(w.shape[3]):
                            out[:, o, i, j] += padded[:, c0 + c, i * sh + a * dh, j * sw + b * dw] * w[o, c, a, b]
    np.testing.assert_allclose(got, out, rtol=1e-10, atol=1e-10)


def test_scatter_and_index_add_accumulate_repeats():
    target = ember.zeros(3, 4, dtype=ember.float64)
    out = PRIMITIVES["scatter_add"].bind(target, ember.tensor([[0, 3, 3]]), ember.ones(1, 3, dtype=ember.float64),
                                         axis=1).numpy()
    np.testing.assert_array_equal(out[0], [1, 0, 0, 2])
    out = PRIMITIVES["index_add"].bind(target, ember.tensor([2, 2]), ember.ones(3, 2, dtype=ember.float64),
                                       axis=1).numpy()
    np.testing.assert_array_equal(out[:, 2], [2, 2, 2])


def test_extremum_ties_split_the_gradient_like_pytorch():
    a = ember.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = ember.tensor([1.0, 5.0, 0.0], requires_grad=True)
    ga, gb = ember.autograd.grad(PRIMITIVES["maximum"].bind(a, b).sum(), [a, b])
    assert ga.tolist() == [0.5, 0.0, 1.0] and gb.tolist() == [0.5, 1.0, 0.0]
    x = ember.tensor([[2.0, 1.0, 2.0]], requires_grad=True)
    (gx,) = ember.autograd.grad(PRIMITIVES["amax"].bind(x, axes=(1,), keepdims=False).sum(), [x])
    assert gx.tolist() == [[0.5, 0.0, 0.5]]


def test_conv2d_double_backward_matches_finite_differences():
    """Second order through autograd: d/d(x, w, g) of <VJP(x, w; g), (u, v)>."""
    u, v = random(1, 2, 5, 4, seed=3), random(4, 1, 2, 2, seed=4)
    attrs = dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1), groups=2)

    def first_order_dot(x, w, g):
        with ember.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_()
            w = w if w.requires_grad else w.detach().requires_grad_()
            out = PRIMITIVES["conv2d"].bind(x, w, **attrs)
            gx, gw = ember.autograd.grad(out, [x, w], grad_outputs=g, create_graph=True)
        return (gx * ember.tensor(u)).sum() + (gw * ember.tensor(v)).sum()

    check_vjp(first_order_dot, [random(1, 2, 5, 4), random(4, 1, 2, 2, seed=1), random(1, 4, 5, 2, seed=2)])


# ----------------------------------------------------------------------------- strict mode

def _bad_primitive(infer):
    return Primitive("deliberately_wrong", "elementwise", lambda x: x * 2, infer)


def test_strict_mode_catches_a_shape_rule_that_disagrees_with_numpy():
    wrong_shape = _bad_primitive(lambda x: Spec((1,) + tuple(x.shape), x.dtype))
    with pytest.raises(AssertionError, match=r"deliberately_wrong: shape rule says \(1, 3\) float32, "
                                             r"numpy gave \(3,\) float32"):
        wrong_shape.bind(ember.ones(3))


def test_strict_mode_catches_a_dtype_rule_that_disagrees_with_numpy():
    wrong_dtype = _bad_primitive(lambda x: Spec(tuple(x.shape), ember.float64))
    with pytest.raises(AssertionError, match="shape rule says .* float64, numpy gave .* float32"):
        wrong_dtype.bind(ember.ones(3))


def test_without_strict_mode_the_rule_is_not_run_on_success():
    wrong_shape = _bad_primitive(lambda x: Spec((7,), x.dtype))
    STATE.strict = False  # conftest restores it
    assert wrong_shape.bind(ember.ones(3)).tolist() == [2.0, 2.0, 2.0]


def test_random_source_is_reproducible_and_in_range():
    attrs = dict(distribution="uniform", shape=(1000,), dtype="float64", a=-1.0, b=1.0)
    first = PRIMITIVES["random"].bind(ember.tensor(7), **attrs).numpy()
    again = PRIMITIVES["random"].bind(ember.tensor(7), **attrs).numpy()
    other = PRIMITIVES["random"].bind(ember.tensor(8), **attrs).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.min() >= -1.0 and first.max() < 1.0 and abs(first.mean()) < 0.1


def test_sigmoid_keeps_the_relative_precision_of_tiny_results():
    x = np.array([-700.0, -100.0, -40.0, -20.0, -1e-9, 0.0, 20.0, 700.0, np.inf, -np.inf, np.nan])
    d = np.exp(-np.abs(x))
    expected = np.where(x >= 0, 1 / (1 + d), d / (1 + d))
    for dtype, rtol in ((ember.float64, 1e-15), (ember.float32, 1e-6)):
        got = ember.sigmoid(ember.tensor(x, dtype=dtype)).numpy()
        reference = expected.astype(got.dtype)
        normal = np.abs(reference) >= np.finfo(got.dtype).tiny  # subnormal results lose bits
        np.testing.assert_allclose(got[normal], reference[normal], rtol=rtol)
        assert got[-1] != got[-1] and got[-2] == 0 and got[-3] == 1


def test_overwrite_routes_the_gradient_to_the_old_value():
    old = ember.tensor(random(3, 4), requires_grad=True)
    new = ember.tensor(random(3, 4, seed=1), requires_grad=True)
    out = PRIMITIVES["overwrite"].bind(old * 1, new * 1)
    np.testing.assert_array_equal(out.detach().numpy(), random(3, 4, seed=1))
    (out * ember.tensor(random(3, 4, seed=2))).sum().backward()
    np.testing.assert_array_equal(old.grad.numpy(), random(3, 4, seed=2))
    assert new.grad is None


def test_stop_gradient_passes_no_gradient():
    x = ember.tensor(random(3, 4), requires_grad=True)
    out = PRIMITIVES["stop_gradient"].bind(x * 2) + x
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((3, 4)))


@pytest.mark.parametrize("name, case", list(_all_cases()))
def test_only_view_primitives_return_memory_of_their_inputs(name, case):
    """Eager dispatch relies on this: a non-view result never aliases an operand (no runtime
    check on the hot path), so in-place writes to one cannot change the other."""
    arrays = [np.asarray(a) for a in case.arrays]
    out = np.asarray(PRIMITIVES[name].impl(*arrays, **case.attrs))
    if not PRIMITIVES[name].view:
        assert not any(np.shares_memory(out, a) for a in arrays), f"{name} returned memory of an operand"
