"""The PTX target's call-free sin, cos and pow (compiler/llvm/math.py emit_sin/emit_cos/emit_pow,
taken from PtxTarget's tables), run on this CPU: the emitters and the target's own "ember.pow"
function (`define_intrinsics`) in float and double loops, JIT-compiled with llvmlite's MCJIT,
against float64 numpy over millions of points with ulp bounds, and C's special cases of pow.
No GPU needed. The CPU target keeps llvm.sin/cos/pow (libm)."""
import ctypes
import itertools

import numpy as np
import pytest

pytest.importorskip("llvmlite")
from llvmlite import ir  # noqa: E402

from ember.compiler.cpu import host  # noqa: E402
from ember.compiler.cpu.target import CpuTarget  # noqa: E402
from ember.compiler.llvm import math as llvm_math  # noqa: E402
from ember.compiler.llvm.scalar import intrinsic  # noqa: E402
from ember.compiler.ptx.target import PtxTarget  # noqa: E402

F32, F64, I64 = ir.FloatType(), ir.DoubleType(), ir.IntType(64)
ELEMENTS = {np.float32: F32, np.float64: F64}
SUFFIX = {np.float32: "f32", np.float64: "f64"}
# measured over these points: float32 sin, cos and pow equal numpy's float64 result rounded
# to float32 everywhere (they are computed in doubles); float64 sin 3, cos 2, pow 1 ulp at most
FLOAT32_ULP_BOUND = 1.0
FLOAT64_ULP_BOUND = 4.0
TRIG_LIMIT = 2.0 ** 50  # |x| from here on gives nan (no Payne-Hanek reduction)


def _loop(module, name, element, arity, compute):
    """void name(element* x0, [element* x1,] element* y, i64 n): y[i] = compute(builder, x0[i], ...)."""
    pointer = element.as_pointer()
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [pointer] * (arity + 1) + [I64]), name=name)
    *sources, target, n = function.args
    entry, body, done = (function.append_basic_block(label) for label in ("entry", "body", "done"))
    builder = ir.IRBuilder(entry)
    builder.cbranch(builder.icmp_signed(">", n, I64(0)), body, done)
    builder.position_at_end(body)
    index = builder.phi(I64)
    index.add_incoming(I64(0), entry)
    operands = [builder.load(builder.gep(source, [index])) for source in sources]
    builder.store(compute(builder, *operands), builder.gep(target, [index]))
    following = builder.add(index, I64(1))
    index.add_incoming(following, body)
    builder.cbranch(builder.icmp_signed("<", following, n), body, done)
    builder.position_at_end(done)
    builder.ret_void()


def _vector_call(module, name, compute, arity, lanes=8):
    """void name(<lanes x float>* x0, [x1,] y): compute on whole vectors."""
    vector = ir.VectorType(F32, lanes)
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [vector.as_pointer()] * (arity + 1)), name=name)
    builder = ir.IRBuilder(function.append_basic_block("entry"))
    operands = [builder.load(argument, align=4) for argument in function.args[:arity]]
    builder.store(compute(builder, *operands), function.args[arity], align=4)
    builder.ret_void()


class PtxMath:
    """sin and cos from PtxTarget().math_functions(), pow through its "ember.pow" intrinsic
    defined by PtxTarget.define_intrinsics, in float and double loops, plus the emitters on
    <8 x float>: one MCJIT module for this host."""

    def __init__(self):
        target = PtxTarget()
        tables = target.math_functions()
        llvm = host.llvm_binding()
        module = host.new_module("ptx_math_tests")
        computes = {"sin": (1, tables["sin"]), "cos": (1, tables["cos"]),
                    "pow": (2, lambda b, x, y: b.call(intrinsic(b.module, target.float_intrinsics["pow"], x.type, 2),
                                                      [x, y]))}
        for name, (arity, compute) in computes.items():
            for dtype, element in ELEMENTS.items():
                _loop(module, f"{name}_{SUFFIX[dtype]}", element, arity, compute)
        _vector_call(module, "sin_v8", llvm_math.emit_sin, 1)
        _vector_call(module, "pow_v8", llvm_math.emit_pow, 2)
        target.define_intrinsics(module)
        parsed = llvm.parse_assembly(str(module))
        parsed.verify()
        host.optimize_module(parsed)
        self.optimized_ir = str(parsed)
        self.engine = llvm.create_mcjit_compiler(parsed, host.new_host_target_machine())
        self.engine.finalize_object()
        self.arity = {name: arity for name, (arity, _) in computes.items()}

    def run(self, name, *operands):
        operands = [np.ascontiguousarray(x) for x in np.broadcast_arrays(*operands)]
        result = np.empty_like(operands[0])
        address = self.engine.get_function_address(f"{name}_{SUFFIX[result.dtype.type]}")
        function = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * (len(operands) + 1), ctypes.c_int64)(address)
        function(*[x.ctypes.data for x in operands], result.ctypes.data, result.size)
        return result

    def run_vector(self, name, *operands):
        operands = [np.ascontiguousarray(x, dtype=np.float32) for x in operands]
        result = np.empty_like(operands[0])
        function = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * (len(operands) + 1))(
            self.engine.get_function_address(f"{name}_v8"))
        function(*[x.ctypes.data for x in operands], result.ctypes.data)
        return result


@pytest.fixture(scope="module")
def ptx_math():
    return PtxMath()


def ulp_errors(got, truth, dtype):
    """|got - truth| in units of the last place of truth rounded to dtype (0 where equal)."""
    with np.errstate(all="ignore"):
        rounded = truth.astype(dtype)
        spacing = np.maximum(np.spacing(np.abs(rounded)).astype(np.float64), np.finfo(dtype).smallest_subnormal)
        errors = np.abs(got.astype(np.float64) - truth) / spacing
    same = (got == rounded) | (np.isnan(got) & np.isnan(rounded))
    return np.where(same, 0.0, errors)


def assert_within(got, truth, dtype, bound, *operands):
    errors = ulp_errors(got, truth, dtype)
    assert not np.isnan(errors).any(), "nan where numpy has a number, or the other way round"
    i = int(np.argmax(errors))
    where = ", ".join(repr(x[i]) for x in np.broadcast_arrays(*operands))
    assert errors[i] <= bound, f"worst at ({where}): got {got[i]!r}, want {truth[i]!r} ({errors[i]:.2f} ulp)"


def trig_points(dtype, rng, count):
    sign = rng.choice(np.array([-1.0, 1.0]), count)
    top = 34.0 if dtype == np.float32 else 34.6  # every binade below TRIG_LIMIT
    parts = [rng.standard_normal(count) * 3, rng.uniform(-110, 110, count), rng.uniform(-1e4, 1e4, count),
             sign * np.exp(rng.uniform(-80, top, count)), rng.uniform(-1e-3, 1e-3, count // 4),
             np.pi / 2 * np.arange(-1000, 1001)]  # near the multiples of pi/2 that reduce to ~0
    return np.concatenate(parts).astype(dtype)


# ----------------------------------------------------------------------------- sin and cos

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_and_cos_within_ulp_bound_of_float64_numpy(ptx_math, name, dtype):
    x = trig_points(dtype, np.random.default_rng(11), 1_000_000 if dtype == np.float32 else 300_000)
    got = ptx_math.run(name, x)
    truth = getattr(np, name)(x.astype(np.float64))
    bound = FLOAT32_ULP_BOUND if dtype == np.float32 else FLOAT64_ULP_BOUND
    assert_within(got, truth, dtype, bound, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sin_and_cos_special_values(ptx_math, dtype):
    info = np.finfo(dtype)
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, info.tiny, -info.smallest_subnormal, 1e-30], dtype)
    sin, cos = ptx_math.run("sin", x), ptx_math.run("cos", x)
    np.testing.assert_array_equal(sin[:2], x[:2])
    assert np.signbit(sin[1]) and not np.signbit(sin[0])  # sin(-0) = -0
    assert np.isnan(sin[2:5]).all() and np.isnan(cos[2:5]).all()  # inf, -inf, nan
    np.testing.assert_array_equal(sin[5:], x[5:])  # sin x = x for tiny x, subnormals included
    np.testing.assert_array_equal(cos[[0, 1, 5, 6, 7]], np.ones(5, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sin_and_cos_give_nan_beyond_the_reduction_range(ptx_math, dtype):
    x = np.array([TRIG_LIMIT * 0.99, -TRIG_LIMIT * 0.99, TRIG_LIMIT, -3e15, 1e20, np.finfo(dtype).max], dtype)
    for name in ("sin", "cos"):
        got = ptx_math.run(name, x)
        assert_within(got[:2], getattr(np, name)(x[:2].astype(np.float64)), dtype,
                      FLOAT32_ULP_BOUND if dtype == np.float32 else FLOAT64_ULP_BOUND, x[:2])
        assert np.isnan(got[2:]).all(), (name, got)


def test_sin_takes_vector_values(ptx_math):
    x = np.array([-3.5, -1.0, -0.25, -0.0, 1e-4, 0.7, 2.0, 9000.0], np.float32)
    np.testing.assert_array_equal(ptx_math.run_vector("sin", x), ptx_math.run("sin", x))


# ----------------------------------------------------------------------------- pow

def pow_points(dtype, rng, count):
    """(x, y): moderate bases and exponents, results over the whole range (overflow and
    underflow included), large exponents near 1, negative bases with integer exponents."""
    log_max = 88.0 if dtype == np.float32 else 709.0
    big_y = 100.0 if dtype == np.float32 else 1000.0
    x = [rng.uniform(0, 10, count), np.exp(rng.uniform(-log_max, log_max, count)), rng.uniform(0.5, 2, count),
         1 + rng.uniform(-1e-3, 1e-3, count), -rng.uniform(0, 10, count), np.exp(rng.uniform(-5, 5, count))]
    y = [rng.uniform(-10, 10, count), rng.uniform(-1.2, 1.2, count), rng.uniform(-big_y, big_y, count),
         rng.uniform(-1e5, 1e5, count), np.round(rng.uniform(-40, 40, count)), rng.uniform(-40, 40, count)]
    return np.concatenate(x).astype(dtype), np.concatenate(y).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pow_within_ulp_bound_of_float64_numpy(ptx_math, dtype):
    x, y = pow_points(dtype, np.random.default_rng(12), 300_000 if dtype == np.float32 else 100_000)
    got = ptx_math.run("pow", x, y)
    with np.errstate(all="ignore"):
        truth = np.power(x.astype(np.float64), y.astype(np.float64))
    bound = FLOAT32_ULP_BOUND if dtype == np.float32 else FLOAT64_ULP_BOUND
    assert_within(got, truth, dtype, bound, x, y)


def _special_operands(dtype):
    info = np.finfo(dtype)
    return np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 2.5, -2.5, np.inf, -np.inf, np.nan,
                     info.max, -info.max, info.tiny, info.smallest_subnormal, 1e10, -1e10, 2.0 ** 53 + 2], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pow_special_cases_match_c_for_every_pair_of_special_operands(ptx_math, dtype):
    """numpy's power is C's pow: nan, inf, zero and its sign exactly, other values in bound."""
    values = _special_operands(dtype)
    pairs = np.array(list(itertools.product(values, values)), dtype)
    x, y = pairs[:, 0], pairs[:, 1]
    got = ptx_math.run("pow", x, y)
    with np.errstate(all="ignore"):
        want = np.power(x, y)
        truth = np.power(x.astype(np.float64), y.astype(np.float64))
    for i in np.flatnonzero(np.isnan(want) != np.isnan(got)):
        pytest.fail(f"pow({x[i]!r}, {y[i]!r}) = {got[i]!r}, C gives {want[i]!r}")
    exact = np.isinf(want) | (want == 0) | (np.abs(want) == 1)
    for i in np.flatnonzero(exact & ((got != want) | (np.signbit(got) != np.signbit(want)))):
        pytest.fail(f"pow({x[i]!r}, {y[i]!r}) = {got[i]!r}, C gives {want[i]!r}")
    rest = ~exact & ~np.isnan(want)
    assert_within(got[rest], truth[rest], dtype, FLOAT32_ULP_BOUND if dtype == np.float32 else FLOAT64_ULP_BOUND,
                  x[rest], y[rest])


# (x, y, C's pow(x, y)): the cases PyTorch documents and C99 Annex F lists
POW_TABLE = [
    (-2.0, 3.0, -8.0), (-2.0, 2.0, 4.0), (-2.0, -3.0, -0.125), (-2.0, 0.5, np.nan), (-8.0, 1 / 3, np.nan),
    (np.nan, 0.0, 1.0), (np.nan, -0.0, 1.0), (np.inf, 0.0, 1.0), (1.0, np.nan, 1.0), (1.0, np.inf, 1.0),
    (1.0, -np.inf, 1.0), (-1.0, np.inf, 1.0), (-1.0, -np.inf, 1.0), (-1.0, np.nan, np.nan), (np.nan, 1.0, np.nan),
    (2.0, np.nan, np.nan), (0.0, -1.0, np.inf), (-0.0, -1.0, -np.inf), (-0.0, -2.0, np.inf), (-0.0, -0.5, np.inf),
    (0.0, 3.0, 0.0), (-0.0, 3.0, -0.0), (-0.0, 2.0, 0.0), (-0.0, 0.5, 0.0), (0.0, -np.inf, np.inf),
    (0.5, np.inf, 0.0), (0.5, -np.inf, np.inf), (2.0, np.inf, np.inf), (2.0, -np.inf, 0.0), (-0.5, np.inf, 0.0),
    (-2.0, -np.inf, 0.0), (np.inf, -1.0, 0.0), (np.inf, 0.5, np.inf), (-np.inf, 3.0, -np.inf),
    (-np.inf, 2.0, np.inf), (-np.inf, 0.5, np.inf), (-np.inf, -3.0, -0.0), (-np.inf, -2.0, 0.0),
    (-np.inf, -0.5, 0.0), (4.0, 0.5, 2.0), (2.0, -1.0, 0.5), (10.0, 400.0, np.inf), (10.0, -400.0, 0.0),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pow_special_case_table(ptx_math, dtype):
    x, y, want = (np.array(column, dtype) for column in zip(*POW_TABLE))
    got = ptx_math.run("pow", x, y)
    for xi, yi, g, w in zip(x, y, got, want):
        same = (np.isnan(g) and np.isnan(w)) or (g == w and np.signbit(g) == np.signbit(w))
        assert same, f"pow({xi!r}, {yi!r}) = {g!r}, want {w!r}"


def test_pow_takes_vector_values(ptx_math):
    x = np.array([-2.0, -0.0, 0.5, 1.0, 2.0, 3.0, -8.0, 10.0], np.float32)
    y = np.array([3.0, -1.0, 0.5, np.nan, -2.5, 40.0, 0.5, -3.0], np.float32)
    np.testing.assert_array_equal(ptx_math.run_vector("pow", x, y), ptx_math.run("pow", x, y))


# ----------------------------------------------------------------------------- where they are used

def test_no_call_is_left_once_optimised(ptx_math):
    """The functions inline completely: no libm call, and "ember.pow" itself is gone."""
    import re
    calls = {c for c in re.findall(r"call [^@]*@\"?([\w.]+)", ptx_math.optimized_ir)}
    assert not {c for c in calls if not c.startswith("llvm.")}, calls
    assert not [c for c in calls if c.startswith(("llvm.sin", "llvm.cos", "llvm.pow"))], calls


def test_only_the_ptx_target_takes_them_the_cpu_keeps_libm():
    cpu, ptx = CpuTarget(), PtxTarget()
    assert "sin" not in cpu.math_functions() and "cos" not in cpu.math_functions()
    assert (cpu.float_intrinsics["sin"], cpu.float_intrinsics["pow"]) == ("llvm.sin", "llvm.pow")
    assert not cpu.defined_intrinsics
    assert ptx.math_functions()["sin"] is llvm_math.emit_sin and ptx.math_functions()["cos"] is llvm_math.emit_cos
    assert ptx.float_intrinsics["pow"] == "ember.pow" and "sin" not in ptx.float_intrinsics
    assert ptx.defined_intrinsics == {"ember.pow": llvm_math.emit_pow}
    assert {"sin", "cos", "pow"} <= ptx.math_function_names()
