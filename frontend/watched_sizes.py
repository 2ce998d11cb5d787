"""Watched sizes: while a trace makes dims dynamic (frontend/dynamic_shapes.py), shapes read
from tensors give `SizeInt`s, ints that remember which size they are, so that what the Python
code does with a size is seen: arithmetic keeps its expression, and a comparison the sizes'
ranges do not decide, or a use ember cannot follow (`int(n)`, `n / 2`, `str(n)`), is recorded
as a test that keeps the dims static (frontend/jit.py checks the trace's tests)."""
import os
import sys

import numpy as np

from ember.ir.symbols import SymDim, SymbolicDecision


class SizeInt(int):
    """A size read from a tensor's shape during a trace that makes dims dynamic: an int (numpy,
    Python and ember take it as one) that remembers it is `expr` (a SymDim over placeholders
    of the dynamic sizes). Arithmetic keeps the expression; a comparison the sizes' ranges do
    not decide (`x.shape[0] > 50`, `batch == 10`) is recorded in `tests` with its source line:
    the trace then cannot stand for every size, and its dims stay static (frontend/jit.py
    checks). ember's own code is trusted with equality tests of shapes (structural: a shape
    that differs at one size differs at the traced ones too, or gives the same values);
    its ordering comparisons count as a user's do. In user code, a size turned into something
    ember cannot follow (`int(n)`, `float(n)`, `n / 2`, `n ** 2`, `str(n)`, bit operations,
    `len(x)` of a dynamic dim: frontend/tensor.py) is a test too. Not caught: numpy scalars made
    from a size (`np.int64(n)` reads the int inside), which only differing traces reveal."""

    def __new__(cls, value, expr, tests):
        self = int.__new__(cls, value)
        self.expr, self.tests = expr, tests
        return self

    def _wrap(self, value, expr):
        return SizeInt(value, expr, self.tests) if isinstance(value, int) else value

    @staticmethod
    def _expr_of(other):
        return other.expr if isinstance(other, SizeInt) else _plain_int(other)

    def _arith(self, other, combine, value):
        """The SizeInt `value` = self <op> other, its expression `combine(self's, other's)`."""
        if isinstance(other, bool) or not isinstance(other, (int, np.integer)):
            return self._plain_use("float", value) if isinstance(value, float) else value
        other_expr = self._expr_of(other)
        if self.expr is None or other_expr is None:
            return self._wrap(value, None)
        return self._wrap(value, combine(self.expr, other_expr))

    def __add__(self, other):
        return self._arith(other, lambda a, b: a + b, int.__int__(self) + other)

    def __radd__(self, other):
        return self._arith(other, lambda a, b: b + a, other + int.__int__(self))

    def __sub__(self, other):
        return self._arith(other, lambda a, b: a - b, int.__int__(self) - other)

    def __rsub__(self, other):
        return self._arith(other, lambda a, b: b - a, other - int.__int__(self))

    def __mul__(self, other):
        return self._arith(other, lambda a, b: a * b, int.__int__(self) * other)

    def __rmul__(self, other):
        return self._arith(other, lambda a, b: b * a, other * int.__int__(self))

    def _exact(self, other, value, divide):
        """`value` (self // other or self % other) with its expression where the division is
        exact for every size (`400*s0 // 400`, `numel % s0`), else watched without one."""
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool) and self.expr is not None:
            other_expr = self._expr_of(other)
            if other_expr is not None:
                try:
                    return self._wrap(value, divide(self.expr, other_expr))
                except SymbolicDecision:
                    pass
        if not isinstance(value, int):  # (`n // 2.0`: a float ember cannot follow)
            return self._plain_use("float", value)
        return self._wrap(value, None)  # (watched still: a comparison or a plain use of it is a test)

    def __floordiv__(self, other):
        return self._exact(other, int.__int__(self) // _unwatched(other), lambda a, b: a // b)

    def __rfloordiv__(self, other):
        return self._wrap(other // int.__int__(self), None)

    def __mod__(self, other):
        return self._exact(other, int.__int__(self) % _unwatched(other), lambda a, b: a % b)

    def __rmod__(self, other):
        return self._wrap(other % int.__int__(self), None)

    def __truediv__(self, other):
        return self._as_float(int.__int__(self) / other)

    def __rtruediv__(self, other):
        return self._as_float(other / int.__int__(self))

    def _as_float(self, value):
        return self._plain_use("float", value)

    def _plain_use(self, how, value):
        """The size leaves what ember can follow (a float, a plain int, text, a power): in user
        code that is a test (the dims stay static). ember's own code does it for values the
        traces then hold (mean's 1/n, numpy's shapes), which `symbolize` checks."""
        if not _PAUSED[0]:
            line, in_ember = _caller()
            if not in_ember or self.expr is None:  # (a value computed beyond what ember follows: anywhere)
                self.tests.append((how, int.__int__(self), value, line))
        return value

    def __int__(self):
        return self._plain_use("int", int.__int__(self))

    def __float__(self):
        return self._plain_use("float", float(int.__int__(self)))

    def __index__(self):
        return self._plain_use("index", int.__int__(self))

    def __bool__(self):
        if self.expr is not None and _decided(self.expr, "ne") is not None:
            return _decided(self.expr, "ne")
        return self._plain_use("bool", int.__int__(self) != 0)

    def __str__(self):
        return self._plain_use("str", str(int.__int__(self)))

    __repr__ = __str__

    def __format__(self, spec):
        return self._plain_use("format", format(int.__int__(self), spec))

    def __pow__(self, other, modulo=None):
        return self._plain_use("pow", pow(int.__int__(self), other, modulo))

    def __rpow__(self, other):
        return self._plain_use("pow", other ** int.__int__(self))

    def __divmod__(self, other):
        return self._plain_use("divmod", divmod(int.__int__(self), other))

    def __and__(self, other):
        return self._plain_use("&", int.__int__(self) & other)

    def __or__(self, other):
        return self._plain_use("|", int.__int__(self) | other)

    def __xor__(self, other):
        return self._plain_use("^", int.__int__(self) ^ other)

    def __lshift__(self, other):
        return self._plain_use("<<", int.__int__(self) << other)

    def __rshift__(self, other):
        return self._plain_use(">>", int.__int__(self) >> other)

    def __neg__(self):
        return self._wrap(-int.__int__(self), None if self.expr is None else -self.expr)

    def _compare(self, other, op):
        outcome = getattr(int, op)(self, other)
        if outcome is NotImplemented or isinstance(other, bool) or not isinstance(other, (int, np.integer)) \
                or _PAUSED[0]:
            return outcome
        other_expr = other.expr if isinstance(other, SizeInt) else _plain_int(other)
        name = op.strip("_")
        if self.expr is None or other_expr is None or _decided(self.expr - other_expr, name) != outcome:
            line, in_ember = _caller()
            # (ember's own shape bookkeeping compares shapes for equality, `g.shape == shape`, where
            # the answer is structural: only its orderings of sizes count, a user's comparisons all do)
            if not in_ember or name not in ("eq", "ne") or self.expr is None:
                self.tests.append((name, int.__int__(self), _plain_int(other), line))
        return outcome

    def __eq__(self, other):
        return self._compare(other, "__eq__")

    def __ne__(self, other):
        return self._compare(other, "__ne__")

    def __lt__(self, other):
        return self._compare(other, "__lt__")

    def __le__(self, other):
        return self._compare(other, "__le__")

    def __gt__(self, other):
        return self._compare(other, "__gt__")

    def __ge__(self, other):
        return self._compare(other, "__ge__")

    __hash__ = int.__hash__

    def __reduce__(self):
        return (int, (int.__int__(self),))


def _unwatched(value):
    """A SizeInt's value without counting it as a use; anything else as it is."""
    return int.__int__(value) if isinstance(value, SizeInt) else value


def _plain_int(value):
    """An int (a SizeInt's value without counting it as a use; numpy's integers too)."""
    return int.__int__(value) if isinstance(value, int) else int(value)


PLAIN_USES = ("int", "float", "index", "bool", "str", "format", "pow", "divmod", "&", "|", "^", "<<", ">>")


def _decided(difference, op):
    """`difference <op> 0` for every size (op: eq, ne, lt, le, gt, ge), or None when the sizes'
    ranges (each at least MIN_SIZE) do not decide it."""
    if not isinstance(difference, SymDim):
        return {"eq": difference == 0, "ne": difference != 0, "lt": difference < 0, "le": difference <= 0,
                "gt": difference > 0, "ge": difference >= 0}[op]
    try:
        return difference._decide(op, 0)
    except SymbolicDecision:
        return None


def plain_sizes(value):
    """`value` (an attribute: ints, tuples, lists, dicts) with every SizeInt a plain int."""
    if isinstance(value, SizeInt):
        return int.__int__(value)
    if isinstance(value, (tuple, list)):
        return type(value)(plain_sizes(v) for v in value)
    if isinstance(value, dict):
        return {k: plain_sizes(v) for k, v in value.items()}
    return value


_PAUSED = [0]  # while a check only validates (strict mode's shape rules), comparisons are not tests


class _Unwatched:
    """`with unwatched_sizes():` comparisons of watched sizes inside are not tests: for code that
    checks, not decides, and for every op's numpy computation while tracing (a class, not a
    generator: the tracer enters it once per op)."""

    def __enter__(self):
        _PAUSED[0] += 1

    def __exit__(self, *error):
        _PAUSED[0] -= 1


_UNWATCHED = _Unwatched()


def unwatched_sizes():
    return _UNWATCHED


_EMBER_FOLDERS = None
# frames that only pass a size on (this module, Tensor's len()): the caller is the one before them
_PASSING_THROUGH = (__file__, os.path.join(os.path.dirname(__file__), "tensor.py"))


def _caller():
    """(`file.py:12` of the innermost frame outside _PASSING_THROUGH, whether it is ember's own code)."""
    global _EMBER_FOLDERS
    if _EMBER_FOLDERS is None:
        import ember
        from ember import compiler, frontend, passes, runtime
        _EMBER_FOLDERS = tuple(os.path.dirname(m.__file__) + os.sep for m in (ember, frontend, passes, compiler, runtime))
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename in _PASSING_THROUGH:
        frame = frame.f_back
    if frame is None:
        return "?", False
    filename = frame.f_code.co_filename
    return f"{os.path.basename(filename)}:{frame.f_lineno}", filename.startswith(_EMBER_FOLDERS)
