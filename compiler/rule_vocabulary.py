"""The vocabulary an elementwise primitive's lowering rule writes in (`ScalarBuilder`), and the
ops every target's scalar code generator computes itself (`CORE_OPS`): part of the loop IR
(compiler/loop_ir.py re-exports it; every stage reaches it as L.ScalarBuilder, L.CORE_OPS)."""
from .loop_ir import COMPARISONS, FLOATS, Expr, apply, cast, const, select

# What every target's scalar code generator computes itself, by operand kind: trunc_div and
# trunc_rem are C's truncating / and % (Python's signs are built from them), pow on integers
# is exponentiation by squaring; maximum and minimum on floats come from MATH_FUNCTIONS.
CORE_OPS = {
    "float": frozenset(COMPARISONS + ("add", "sub", "mul", "div", "neg", "trunc_rem")),
    "int": frozenset(COMPARISONS + ("add", "sub", "mul", "neg", "maximum", "minimum", "trunc_div", "trunc_rem",
                                    "pow", "bitwise_xor", "shift_right_logical")),
    "bool": frozenset(COMPARISONS + ("logical_and", "logical_or", "logical_xor", "logical_not", "maximum",
                                     "minimum")),
}
STRUCTURE_OPS = frozenset(("const", "var", "acc", "load", "affine", "floordiv", "mod", "cast", "select",
                           "size", "imul", "floordiv_by", "mod_by"))  # (the last four: symbolic sizes)
# Float functions a target supplies from its tables (compiler/llvm/target.py: float_intrinsics,
# math_functions): an expression using one the target lacks has no code there.
MATH_FUNCTIONS = ("sqrt", "exp", "log", "log1p", "expm1", "sin", "cos", "tanh", "sigmoid", "erf", "floor", "ceil",
                  "round", "abs", "maximum", "minimum", "pow", "copysign")


def operand_kind(dtype):
    return "float" if dtype in FLOATS else "bool" if dtype == "bool" else "int"


def scalar_ops(expr):
    """{(op, operand kind)} of the computing ops in `expr` (not loads, casts, selects)."""
    return {(e.op, operand_kind((e.args[0] if e.args else e).dtype)) for e in expr.walk()
            if e.op not in STRUCTURE_OPS}


class ScalarBuilder:
    """The vocabulary an elementwise primitive's lowering rule writes its value in
    (`rule(s, *operands, **attrs)`, registered beside the primitive in ember/ops).

    `s.add(x, 1)`, `s.lt(x, 0)`, `s.where(c, a, b)`, `s.cast(x, "bool")`, `s.op("exp", x)`:
    each builds an Expr; a plain Python number among the operands becomes a constant of the
    first Expr operand's dtype. Core ops (CORE_OPS) are methods; float math functions
    (MATH_FUNCTIONS) go through `op`. `check(cond, exception, message)` makes the kernel stop
    with that error where `cond` is false (an integer division by zero)."""

    def __init__(self, on_check=None):
        self._on_check = on_check

    @staticmethod
    def const(value, dtype):
        return const(value, dtype)

    @staticmethod
    def is_float(x):
        return x.dtype in FLOATS

    @staticmethod
    def _lift(args):
        like = next(a for a in args if isinstance(a, Expr))
        return [a if isinstance(a, Expr) else const(a, like.dtype) for a in args]

    def op(self, name, *args, dtype=None):
        """The scalar op or math function `name`; comparisons and logical ops give bool."""
        return apply(name, *self._lift(args), dtype=dtype)

    def where(self, cond, a, b):
        a, b = self._lift((a, b))
        return select(cond, a, b)

    @staticmethod
    def cast(x, dtype):
        return cast(x, dtype)

    def check(self, cond, exception, message):
        if self._on_check is not None:
            self._on_check(cond, exception, message)


def _core_op(name):
    def build(self, *args):
        return self.op(name, *args)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"The core scalar op {name}."
    return build


for _name in sorted(set().union(*CORE_OPS.values())):
    setattr(ScalarBuilder, _name, _core_op(_name))
