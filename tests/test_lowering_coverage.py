"""Every registered primitive has a lowering on every registered target, or is declared
host-only (issue 12 item 4): elementwise ones through the scalar lowering rule beside the
primitive in ember/ops, using only core ops and the math functions the target supplies; the
others through compiler/lowering.py's and compiler/lowering_opaque.py's loop forms. A target
registered in compiler/backends.py (the CPU's "llvm", the GPU's "ptx") is checked without
being named here."""
import numpy as np
import pytest

import ember
from ember.compiler import backends, driver, loop_ir as L
from ember.compiler.lowering_coverage import missing_lowerings
from ember.compiler.target import Target
from ember.ir import Graph
from ember.ops import PRIMITIVES, OpError, register, register_lowering


def registered_targets():
    """(backend name, target) of every registered backend that compiles through a target."""
    found = []
    for name in sorted(backends.BACKENDS):
        target = getattr(backends.get_backend(name), "target", None)
        if target is not None:
            found.append((name, target))
    return found


def report(missing):
    return "\n".join(f"  {name}: {gap}" for name, gap in sorted(missing.items()))


@pytest.mark.parametrize("backend,target", registered_targets(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_primitive_has_a_lowering_on_every_registered_target_or_is_host_only(backend, target):
    missing = missing_lowerings(target)
    assert not missing, f"primitives the {target.name} target ({backend} backend) cannot compile:\n{report(missing)}"


def test_the_cpu_and_ptx_targets_are_among_the_registered_ones():
    names = [target.name for _, target in registered_targets()]
    assert "cpu" in names and "ptx" in names


def test_host_only_primitives_are_declared_and_elementwise_ones_all_have_rules():
    from ember.ops.linalg_ops import LINALG_PRIMITIVES
    special = ["bessel_i0", "bessel_i0e", "bessel_i1", "bessel_i1e", "digamma", "erfcx", "gcd", "lgamma", "log_ndtr",
               "ndtri", "nextafter", "polygamma", "searchsorted", "zeta"]  # (ember/ops/special.py)
    assert sorted(name for name, prim in PRIMITIVES.items() if prim.host_only) == sorted(
        ["all_reduce_start", "all_reduce_wait", "argsort"]  # (collectives: ember/ops/collectives.py)
        + special + list(LINALG_PRIMITIVES))
    assert all(prim.lowering_for() is not None for prim in PRIMITIVES.values() if prim.kind == "elementwise")


class _NoMathTarget(Target):
    """A target that supplies no float math function at all."""

    name = "bare"


def test_a_target_without_a_math_function_is_told_which_primitives_need_it():
    missing = missing_lowerings(_NoMathTarget())
    assert "'exp'" in missing["exp"] and "bare" in missing["exp"]
    assert "'sqrt'" in missing["rsqrt"]
    assert "'cos'" in missing["random"]  # normal numbers
    assert "add" not in missing and "relu" not in missing and "reshape" not in missing  # core ops only


@pytest.fixture
def scratch_primitive():
    """A primitive registered for one test, then removed from the registry."""
    names = []

    def float_only(x):
        if not x.dtype.is_floating_point:
            raise OpError("scratch", "takes floats only")
        return x

    def make(name, kind="elementwise", **options):
        names.append(name)
        return register(name, kind, np.negative, float_only, **options)
    yield make
    for name in names:
        del PRIMITIVES[name]


def test_a_primitive_without_a_lowering_fails_coverage_until_it_gets_a_rule(scratch_primitive):
    cpu = dict(registered_targets())["llvm"]
    scratch_primitive("negate_twice")
    scratch_primitive("mystery_sort", kind="opaque")
    scratch_primitive("host_sort", kind="opaque", host_only=True)
    missing = missing_lowerings(cpu)
    assert "no scalar lowering rule" in missing["negate_twice"]
    assert "not declared host_only" in missing["mystery_sort"] and "host_sort" not in missing
    register_lowering("negate_twice", lambda s, x: s.neg(s.neg(x)))
    assert "negate_twice" not in missing_lowerings(cpu)


def test_a_rule_registered_for_one_target_replaces_the_shared_one_there_only(scratch_primitive):
    scratch_primitive("cube_root_ish", lowering=lambda s, x: s.op("cbrt", x))
    cpu = dict(registered_targets())["llvm"]
    assert "'cbrt'" in missing_lowerings(cpu)["cube_root_ish"]
    register_lowering("cube_root_ish", lambda s, x: s.mul(x, x), target=cpu.name)
    assert "cube_root_ish" not in missing_lowerings(cpu)
    assert "cube_root_ish" in missing_lowerings(_NoMathTarget())


def test_a_target_specific_rule_is_the_one_lowering_uses(scratch_primitive):
    scratch_primitive("double_it", lowering=lambda s, x: s.add(x, x))
    register_lowering("double_it", lambda s, x: s.mul(x, 2), target="cpu")
    graph = Graph("double")
    x = graph.add_input((5,), "float32", "x")
    graph.outputs = [graph.add_node("double_it", [x], (5,), "float32")]
    from ember.compiler.cpu.target import CpuTarget
    (kernel,) = driver.lower(driver.plan(graph), CpuTarget()).kernels
    (store,) = [s for s in L.walk_statements(kernel.body) if isinstance(s, L.Store)]
    assert store.value.op == "mul"
    assert ember.compile(lambda t: t * 2, backend="llvm")(ember.ones(3)).numpy().tolist() == [2, 2, 2]


def test_rule_checks_become_kernel_checks_naming_the_op():
    graph = Graph("int_division")
    a, b = graph.add_input((3,), "int64", "a"), graph.add_input((3,), "int64", "b")
    graph.outputs = [graph.add_node("floor_divide", [a, b], (3,), "int64", name="q")]
    from ember.compiler.cpu.target import CpuTarget
    lowered = driver.lower(driver.plan(graph), CpuTarget())
    assert lowered.errors == [("ZeroDivisionError", "floor_divide (q): integer division by zero")]
