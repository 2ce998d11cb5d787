"""Which registered primitives a target can compile, and what the others lack.

Every primitive in ember/ops must have a lowering on every target, or be declared host-only:
an elementwise one through its scalar lowering rule (ember/ops, `register_lowering`), whose
expression may use only the loop IR's core ops and the math functions the target supplies
(loop_ir.MATH_FUNCTIONS, `Target.math_function_names()`); the others through the loop forms
of compiler/lowering.py (LOOP_RULES), compiler/lowering_opaque.py (OPAQUE_RULES) or, for
`constant`, a buffer the caller passes (or a scalar inlined). tests/test_lowering_coverage.py
runs `missing_lowerings` for every registered target.
"""
import inspect

from ember import dtypes
from ember.ops import PRIMITIVES, OpError, Spec
from . import loop_ir as L
from .lowering import LOOP_RULES
from .lowering_opaque import OPAQUE_MATH_FUNCTIONS, OPAQUE_RULES

SAMPLE_DTYPES = ("float32", "float64", "int32", "int64", "bool")
SOURCES = ("constant",)  # inlined when scalar, else a buffer the caller passes (driver.layout)


def missing_lowerings(target):
    """{primitive name: what it lacks on `target`} (empty when the target compiles them all)."""
    supplied = target.math_function_names()
    missing = {}
    for name, prim in sorted(PRIMITIVES.items()):
        if prim.host_only or name in SOURCES:
            continue
        if prim.kind == "elementwise":
            gaps = elementwise_gaps(prim, target.name, supplied)
        elif name in LOOP_RULES or name in OPAQUE_RULES:
            gaps = [f"its loops use the math function {fn!r}, which the {target.name} target does not supply"
                    for fn in OPAQUE_MATH_FUNCTIONS.get(name, ()) if fn not in supplied]
        else:
            gaps = [f"no loop form ({prim.kind}: compiler/lowering.py LOOP_RULES or compiler/lowering_opaque.py "
                    f"OPAQUE_RULES) and not declared host_only"]
        if gaps:
            missing[name] = "; ".join(gaps)
    return missing


def elementwise_gaps(prim, target_name, supplied):
    """What keeps `prim`'s lowering rule from compiling on the target named `target_name`,
    checked on every operand dtype its shape rule accepts."""
    rule = prim.lowering_for(target_name)
    if rule is None:
        return ["no scalar lowering rule (ember/ops: lowering= or register_lowering)"]
    gaps, tried = [], 0
    for operands, attrs, spec in sample_applications(prim):
        tried += 1
        args = [L.load(k, L.index(0), dtype) for k, dtype in enumerate(operands)]
        value = rule(L.ScalarBuilder(), *args, **attrs)
        where = f"on {', '.join(operands)}"
        if value.dtype != spec.dtype.name:
            gaps.append(f"{where} its rule gives {value.dtype}, its shape rule {spec.dtype.name}")
        for op, kind in sorted(L.scalar_ops(value)):
            if op in L.CORE_OPS[kind] or (kind == "float" and op in supplied):
                continue
            what = "math function" if kind == "float" and op in L.MATH_FUNCTIONS else f"{kind} op"
            gaps.append(f"{where} it uses the {what} {op!r}, which the {target_name} target does not supply")
    if not tried:
        gaps.append("its shape rule accepts none of the sample operand dtypes")
    return sorted(set(gaps))


def sample_applications(prim):
    """(operand dtypes, attrs, result Spec) for each application of an elementwise `prim` to
    operands of one sample dtype (a `where` condition: bool) that its shape rule accepts;
    `convert` to each sample dtype."""
    params = [p for p in inspect.signature(prim.infer).parameters.values() if p.default is p.empty]
    attr_names = [p.name for p in params if p.name == "dtype"]  # convert's only attr
    arity = len(params) - len(attr_names)
    targets = SAMPLE_DTYPES if attr_names else (None,)
    for dtype in SAMPLE_DTYPES:
        for operands in {(dtype,) * arity, ("bool",) + (dtype,) * (arity - 1)}:
            for to in targets:
                attrs = {"dtype": to} if to else {}
                try:
                    spec = prim.infer(*[Spec((), dtypes.from_name(d)) for d in operands], **attrs)
                except OpError:
                    continue
                yield operands, attrs, spec
