"""PyTorch's inverse trigonometric and hyperbolic functions, erfinv, hypot and logaddexp(2)
(frontend/math_ops.py): values against float64 references over grids with the edge values,
eagerly and compiled (the compiled code runs compiler/llvm/math.py's atan and erfinv
polynomials), within ulp bounds; nan outside the domain, inf at the poles, C's signed zeros;
gradients against float64 finite differences and PyTorch's formulas at the edges, eagerly and
compiled; integer promotion; Tensor methods, in-place forms and aliases; the PTX target's code.
"""
import math
import shutil
import subprocess

import numpy as np
import pytest

import ember
from ember.frontend import math_ops as M
from finite_differences import check_vjp

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on inf and nan operands

INF, NAN = math.inf, math.nan
UNARY = ("atan", "asin", "acos", "erfinv", "asinh", "acosh", "atanh")
BINARY = ("atan2", "hypot", "logaddexp", "logaddexp2")
_erf, _erfc = np.frompyfunc(math.erf, 1, 1), np.frompyfunc(math.erfc, 1, 1)


def erfinv_reference(x):
    """float64 erfinv: Winitzki's closed form (2e-3), then Newton's method on math.erf (math.erfc
    beyond 1/2, where 1 - |x| is exact); independent of ember's pieces."""
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    with np.errstate(all="ignore"):
        w = -np.log((1 - a) * (1 + a))
        t = 2 / (np.pi * 0.147) - w / 2
        y = np.sqrt((w / 0.147) / (np.sqrt(t * t + w / 0.147) + t))
        for _ in range(6):
            miss = np.where(a > 0.5, (1 - a) - _erfc(y).astype(np.float64), _erf(y).astype(np.float64) - a)
            y = y - miss / (2 / np.sqrt(np.pi) * np.exp(-y * y))
        out = np.copysign(y, x)
    out[a == 1] = np.copysign(INF, x[a == 1])
    out[(a > 1) | np.isnan(a)] = NAN
    return out


REFERENCES = {"atan": np.arctan, "asin": np.arcsin, "acos": np.arccos, "erfinv": erfinv_reference,
              "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "atan2": np.arctan2,
              "hypot": np.hypot, "logaddexp": np.logaddexp, "logaddexp2": np.logaddexp2}


def reference(name, *arrays):
    with np.errstate(all="ignore"):
        return REFERENCES[name](*[np.asarray(a, np.float64) for a in arrays])


# ----------------------------------------------------------------------------- test points

def edge_values(dtype):
    info = np.finfo(dtype)
    values = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, INF, -INF, NAN, info.max, -info.max, info.tiny, -info.tiny,
              info.smallest_subnormal, -info.smallest_subnormal, 1e-30, -1e-30, 7 / 16, 11 / 16, 19 / 16, 39 / 16,
              4096.0, 4097.0, 2.0 ** 26, 2.0 ** 26 + 4, 1 - info.eps / 2, -(1 - info.eps / 2), 1 + info.eps, 0.999,
              0.9999999, 3.0, 1e5, -1e5]
    return np.array(values, dtype=dtype)


def grid(dtype, count=20_000, seed=0):
    """Every binade both signs, uniform stretches, and the approach to +-1 from both sides."""
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)
    one = dtype(1)
    gaps = np.spacing(one) * rng.integers(1, 1 << 12, count // 8)
    with np.errstate(over="ignore"):
        parts = [rng.uniform(-1, 1, count), rng.standard_normal(count) * 3,
                 rng.choice([-1.0, 1.0], count) * np.exp(rng.uniform(np.log(info.tiny), np.log(info.max), count)),
                 one - gaps, gaps - one, one + 2 * gaps, 1 + np.exp(rng.uniform(-30, 3, count // 8)),
                 edge_values(dtype)]
        return np.concatenate([np.asarray(p, np.float64) for p in parts]).astype(dtype)


def pairs(dtype, count=20_000, seed=1):
    """Operand pairs: independent, nearly equal (logaddexp's cancellation), and every pair of edge values."""
    rng = np.random.default_rng(seed)
    a, b = grid(dtype, count, seed), rng.permutation(grid(dtype, count, seed + 1))
    near = rng.random(a.size) < 0.3
    with np.errstate(all="ignore"):
        b = np.where(near, (a + rng.standard_normal(a.size) * 4).astype(dtype), b)
    edges = edge_values(dtype)
    ea, eb = np.meshgrid(edges, edges)
    return np.concatenate([a, ea.ravel()]), np.concatenate([b, eb.ravel()])


def ulp_errors(got, truth, dtype, scale=None):
    """|got - truth| in ulps of truth rounded to dtype (of `scale` where given); 0 where equal
    (nan included)."""
    with np.errstate(all="ignore"):
        rounded = truth.astype(dtype)
        unit = np.spacing(np.abs(rounded if scale is None else scale.astype(dtype))).astype(np.float64)
        errors = np.abs(got.astype(np.float64) - truth) / np.maximum(unit, np.finfo(dtype).smallest_subnormal)
    same = (got == rounded) | (np.isnan(got) & np.isnan(rounded))
    return np.where(same, 0.0, errors)


def assert_within(name, got, truth, dtype, bound, inputs, scale=None):
    errors = ulp_errors(got, truth, dtype, scale)
    worst = int(np.argmax(np.where(np.isnan(errors), np.inf, errors)))
    at = ", ".join(repr(a[worst]) for a in inputs)
    assert errors[worst] <= bound, f"{name}({at}): got {got[worst]!r}, want {truth[worst]!r} ({errors[worst]:.2f} ulp)"


def assert_same_specials(name, got, truth, dtype, inputs):
    """nan where the reference is nan, its infinities, and its signed zeros, exactly."""
    want = truth.astype(dtype)
    for where, what in ((np.isnan(got) != np.isnan(want), "nan"),
                        ((np.isinf(want) | np.isinf(got)) & (got != want), "infinity"),
                        ((want == 0) & ((got != 0) | (np.signbit(got) != np.signbit(want))), "signed zero")):
        if where.any():
            i = int(np.argmax(where))
            at = ", ".join(repr(a[i]) for a in inputs)
            raise AssertionError(f"{name}({at}): got {got[i]!r}, want {want[i]!r} ({what})")


# measured maxima over millions of points (float32 / float64 ulp): eagerly numpy's atan, asin,
# acos, atan2 (float32 computed in float64) 0.5 / 0.5, erfinv 0.5 / 5, the compositions 3.2 / 2
# (acosh near 1); compiled atan 0.8 / 1, asin 2.0 / 2, acos 2.1 / 2, atan2 1.4 / 1, erfinv 2.1 / 5,
# the compositions 2.7 / 2 (logaddexp in ulps of the larger operand)
BOUNDS = {np.float32: {"eager": 3.5, "compiled": 3.0}, np.float64: {"eager": 4.0, "compiled": 4.0}}
NUMPY_EAGER_BOUND = 1.0


def _scale(name, a, b):
    """logaddexp(2) = max + correction cancels where max < 0: its error is measured in ulps of
    the larger operand (as PyTorch's formula's is)."""
    if name.startswith("logaddexp"):
        with np.errstate(invalid="ignore"):
            return np.maximum(np.maximum(np.abs(a), np.abs(b)), 1.0)
    return None


def _unary_all(*xs):
    return tuple(getattr(M, name)(x) for name, x in zip(UNARY, xs))


def _binary_all(*operands):
    return tuple(getattr(M, name)(operands[2 * i], operands[2 * i + 1]) for i, name in enumerate(BINARY))


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def computed(request):
    """(dtype, {mode: {name: (inputs, result)}}) for every function, eager and compiled."""
    dtype = request.param
    x = grid(dtype)
    a, b = pairs(dtype)
    unary = ember.compile(_unary_all)
    binary = ember.compile(_binary_all)
    unary_args = [ember.tensor(x) for _ in UNARY]
    binary_args = [ember.tensor(v) for _ in BINARY for v in (a, b)]
    results = {}
    for mode in ("eager", "compiled"):
        if mode == "compiled":
            unary(*unary_args), binary(*binary_args)  # the first call traces (eagerly)
            outs_u, outs_b = unary(*unary_args), binary(*binary_args)
            assert unary.report.compiled_calls == binary.report.compiled_calls == 1
        else:
            outs_u, outs_b = _unary_all(*unary_args), _binary_all(*binary_args)
        results[mode] = {**{name: ((x,), out.numpy()) for name, out in zip(UNARY, outs_u)},
                         **{name: ((a, b), out.numpy()) for name, out in zip(BINARY, outs_b)}}
    return dtype, results


@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("name", UNARY + BINARY)
def test_values_within_ulp_bounds_of_float64(computed, name, mode):
    dtype, results = computed
    inputs, got = results[mode][name]
    assert got.dtype == dtype
    truth = reference(name, *inputs)
    numpy_computed = name in ("atan", "asin", "acos", "atan2") or (name == "erfinv" and dtype == np.float32)
    bound = NUMPY_EAGER_BOUND if (mode == "eager" and numpy_computed) else BOUNDS[dtype][mode]
    if name == "erfinv" and dtype == np.float64:
        bound = 6.0
    assert_within(name, got, truth, dtype, bound, inputs, _scale(name, *inputs) if len(inputs) == 2 else None)


@pytest.mark.parametrize("mode", ["eager", "compiled"])
@pytest.mark.parametrize("name", UNARY + BINARY)
def test_nan_outside_the_domain_inf_at_poles_and_signed_zeros(computed, name, mode):
    dtype, results = computed
    inputs, got = results[mode][name]
    assert_same_specials(name, got, reference(name, *inputs), dtype, inputs)


def test_edge_values_spelled_out():
    t = ember.tensor
    assert M.asin(t([1.0, -1.0])).numpy().tolist() == [np.float32(math.pi / 2), -np.float32(math.pi / 2)]
    assert np.isnan(M.asin(t([1.5, -1.0000001, NAN]))).all() and np.isnan(M.acos(t([2.0]))).all()
    assert M.erfinv(t([1.0, -1.0, 0.0])).tolist() == [INF, -INF, 0.0]
    assert np.isnan(M.erfinv(t([1.01, -2.0, INF]))).all()
    assert M.atanh(t([1.0, -1.0])).tolist() == [INF, -INF] and np.isnan(M.atanh(t([1.5]))).all()
    assert M.acosh(t([1.0, INF])).tolist() == [0.0, INF] and np.isnan(M.acosh(t([0.5, -2.0, -INF]))).all()
    assert M.asinh(t([INF, -INF])).tolist() == [INF, -INF]
    assert M.atan(t([INF, -INF])).numpy().tolist() == [np.float32(np.pi / 2), -np.float32(np.pi / 2)]
    zeros = t([0.0, -0.0, 0.0, -0.0])
    angles = M.atan2(zeros, t([0.0, 0.0, -0.0, -0.0])).numpy()
    assert angles.tolist() == [0.0, -0.0, np.float32(np.pi), -np.float32(np.pi)] and np.signbit(angles[1])
    assert M.atan2(t([INF, INF, -INF]), t([INF, -INF, INF])).numpy().tolist() == \
        np.arctan2(np.float32([INF, INF, -INF]), np.float32([INF, -INF, INF])).tolist()
    assert M.hypot(t([INF, NAN, 0.0, 3e38, 1e-30]), t([NAN, -INF, 0.0, 3e38, 1e-30])).numpy().tolist() == \
        [INF, INF, 0.0, INF, np.float32(np.hypot(1e-30, 1e-30))]
    assert M.logaddexp(t([INF, -INF, 2.0]), t([INF, -INF, 2.0])).numpy().tolist() == \
        [INF, -INF, np.float32(2 + math.log(2))]
    assert M.logaddexp2(t([INF, -INF, 2.0]), t([INF, -INF, 2.0])).tolist() == [INF, -INF, 3.0]
    for name in ("asinh", "atanh", "asin", "atan", "erfinv"):  # odd functions keep -0
        assert np.signbit(getattr(M, name)(t([-0.0])).numpy()[0]), name


# ----------------------------------------------------------------------------- gradients

INTERIOR = {"atan": (-3, 3), "asin": (-0.9, 0.9), "acos": (-0.9, 0.9), "erfinv": (-0.9, 0.9),
            "asinh": (-3, 3), "acosh": (1.2, 4), "atanh": (-0.9, 0.9)}


@pytest.mark.parametrize("name", UNARY)
def test_unary_gradients_match_finite_differences(name):
    low, high = INTERIOR[name]
    x = np.random.default_rng(0).uniform(low, high, (3, 4))
    check_vjp(getattr(M, name), [x])


@pytest.mark.parametrize("name", BINARY)
def test_binary_gradients_match_finite_differences_with_broadcasting(name):
    rng = np.random.default_rng(1)
    check_vjp(getattr(M, name), [rng.standard_normal((3, 1, 4)) * 2, rng.standard_normal((2, 4)) * 2])


def test_asinh_gradient_is_one_at_zero_and_large_arguments_use_the_log_branch():
    check_vjp(M.asinh, [np.array([0.0, -0.0, 1e-9, 5e3, -3e9, 1e20])], rtol=1e-6)
    check_vjp(M.acosh, [np.array([1.001, 5e3, 3e9, 1e20])], rtol=1e-6)


def _gradients(fn, *arrays, compiled=False):
    tensors = [ember.tensor(a, requires_grad=True) for a in arrays]
    if compiled:
        f = ember.compile(fn)
        f(*[ember.tensor(a, requires_grad=True) for a in arrays])  # the tracing call
        out = f(*tensors)
    else:
        out = fn(*tensors)
    out.backward(ember.ones_like(out))
    return [t.grad.numpy() for t in tensors]


EDGE_GRADIENTS = [  # PyTorch's gradients at the edges of the domain (its formulas, float32)
    ("asin", [[1.0, -1.0, 2.0, 0.0]], [[INF, INF, NAN, 1.0]]),
    ("acos", [[1.0, -1.0, 2.0, 0.0]], [[-INF, -INF, NAN, -1.0]]),
    ("atan", [[INF, -INF, NAN, 0.0]], [[0.0, 0.0, NAN, 1.0]]),
    ("erfinv", [[1.0, -1.0, 2.0, 0.0]], [[INF, INF, NAN, math.sqrt(math.pi) / 2]]),
    ("atanh", [[1.0, -1.0, 2.0, 0.0]], [[INF, INF, -1 / 3, 1.0]]),
    ("acosh", [[1.0, INF, 0.5, 2.0]], [[INF, 0.0, NAN, 1 / math.sqrt(3)]]),
    ("asinh", [[0.0, -0.0, INF, NAN]], [[1.0, 1.0, 0.0, NAN]]),
    # the origin (and squares that underflow) get 0, as in PyTorch
    ("atan2", [[0.0, -0.0, 2e-23, 1.0], [0.0, 0.0, 0.0, INF]], [[0.0, 0.0, 0.0, NAN], [-0.0, 0.0, -0.0, -0.0]]),
    ("hypot", [[0.0, 3.0, 1e-30], [0.0, -4.0, 0.0]], [[NAN, 0.6, 1.0], [NAN, -0.8, 0.0]]),
    ("logaddexp", [[2.0, INF, 1.0, INF], [2.0, 1.0, -INF, INF]], [[0.5, 1.0, 1.0, NAN], [0.5, 0.0, 0.0, NAN]]),
    ("logaddexp2", [[2.0, INF, NAN], [2.0, 1.0, 1.0]], [[0.5, 1.0, NAN], [0.5, 0.0, NAN]]),
]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name, inputs, expected", EDGE_GRADIENTS, ids=[case[0] for case in EDGE_GRADIENTS])
def test_gradients_at_the_edges_are_pytorchs(name, inputs, expected, compiled):
    grads = _gradients(getattr(M, name), *[np.array(v, np.float32) for v in inputs], compiled=compiled)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, np.array(want, np.float32), rtol=1e-6, err_msg=name)
        zero = np.array(want) == 0
        assert (np.signbit(got[zero]) == np.signbit(np.array(want)[zero])).all(), (name, got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_gradients_match_eager_ones(dtype):
    rng = np.random.default_rng(2)
    arrays = [rng.uniform(*INTERIOR[name], 64).astype(dtype) for name in UNARY]
    arrays += [(rng.standard_normal(64) * 3).astype(dtype) for _ in range(2 * len(BINARY))]

    def everything(*tensors):
        outs = _unary_all(*tensors[:len(UNARY)]) + _binary_all(*tensors[len(UNARY):])
        total = outs[0].sum()
        for out in outs[1:]:
            total = total + out.sum()
        return total
    eager, compiled = _gradients(everything, *arrays), _gradients(everything, *arrays, compiled=True)
    for e, c in zip(eager, compiled):
        np.testing.assert_allclose(c, e, rtol=4 * np.finfo(dtype).eps * 8, atol=0)


# ----------------------------------------------------------------------------- dtypes, methods, aliases

@pytest.mark.parametrize("name", UNARY)
def test_integer_and_bool_inputs_give_the_default_float(name):
    for data in ([0, 1, 2], [True, False]):
        out = getattr(M, name)(ember.tensor(data))
        assert out.dtype is ember.float32
        np.testing.assert_allclose(out.numpy(), reference(name, np.array(data, np.float64)).astype(np.float32),
                                   rtol=1e-6)


def test_binary_promotion_as_pytorch():
    i, f, d = ember.tensor([1, 2]), ember.tensor([1.0, 2.0]), ember.tensor([1.0, 2.0], dtype=ember.float64)
    assert M.atan2(i, i).dtype is ember.float32 and M.arctan2(ember.tensor([True]), ember.tensor([False])).dtype \
        is ember.float32
    for name in BINARY:
        fn = getattr(M, name)
        assert fn(i, f).dtype is ember.float32 and fn(f, d).dtype is ember.float64 and fn(i, 2.5).dtype is ember.float32
    for name in ("hypot", "logaddexp", "logaddexp2"):
        with pytest.raises(NotImplementedError, match=f'"{name}_cpu" not implemented for \'Long\''):
            getattr(M, name)(i, i)


def test_methods_aliases_and_in_place_forms():
    x = ember.tensor([0.25, -0.5])
    for name in UNARY:
        assert np.array_equal(getattr(x, name)().numpy(), getattr(M, name)(x).numpy(), equal_nan=True)
    for alias, name in (("arcsin", "asin"), ("arccos", "acos"), ("arctan", "atan"), ("arcsinh", "asinh"),
                        ("arccosh", "acosh"), ("arctanh", "atanh"), ("arctan2", "atan2")):
        assert getattr(M, alias) is getattr(M, name)
        assert getattr(ember.Tensor, alias) is getattr(ember.Tensor, name)
    y = ember.tensor([3.0, -1.0])
    for name in BINARY:
        assert np.array_equal(getattr(x, name)(y).numpy(), getattr(M, name)(x, y).numpy())
    for name in UNARY + ("sinh", "cosh", "arcsin", "arctanh"):
        z = x.clone()
        assert getattr(z, name + "_")() is z
        assert np.array_equal(z.numpy(), getattr(M, name)(x).numpy(), equal_nan=True)
    for name in ("atan2", "arctan2", "hypot"):
        z = x.clone()
        assert getattr(z, name + "_")(y) is z and np.array_equal(z.numpy(), getattr(M, name)(x, y).numpy())
    assert not hasattr(ember.Tensor, "logaddexp_")  # PyTorch has none
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
        ember.tensor([1, 2]).asin_()


def test_a_write_to_an_input_after_a_composite_fails_its_backward():
    x = ember.tensor([0.5, 2.0], requires_grad=True)
    base = x * 1
    out = M.hypot(base, 1.0)
    base.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


# ----------------------------------------------------------------------------- the PTX target

def test_the_ptx_target_computes_every_function_without_calls(tmp_path):
    from ember.compiler import driver
    from ember.compiler.ptx.target import PtxTarget
    from ember.compiler.stage_timer import StageTimer

    def program(x32, y32, x64, y64):
        out = []
        for x, y in ((x32, y32), (x64, y64)):
            out += list(_unary_all(*[x] * len(UNARY))) + list(_binary_all(*[x, y] * len(BINARY)))
        return tuple(out)
    with ember.no_grad():
        graph = ember.trace(program, ember.randn(64), ember.randn(64), ember.randn(64).double(),
                            ember.randn(64).double())
    target = PtxTarget("sm_90")
    lowered = driver.lower(driver.plan(graph), target)
    ptx = target.link(target.emit(lowered), lowered, None, StageTimer()).payload.decode()
    assert "call" not in ptx and "ember.pow" not in ptx  # logaddexp2's 2^-d: the target's inline pow
    assert "div.rn.f32" in ptx and "div.rn.f64" in ptx and "sqrt.rn.f32" in ptx
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas (CUDA toolkit) is not on PATH")
    source = tmp_path / "program.ptx"
    source.write_text(ptx)
    result = subprocess.run([ptxas, "-arch=sm_90", str(source), "-o", str(tmp_path / "program.cubin")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
