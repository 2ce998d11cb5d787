"""Runtime scalars: the Python floats of a compiled function that are inputs of its program.

ember.compile specialises a program on the Python numbers it reads (frontend/signatures.py), so
a float that changes between calls (an optimizer's lr or momentum set by an lr_scheduler, a
float argument) would compile again on every change. After its first change such a float is
dynamic: the next trace hands the function a `ScalarInput` in its place, which carries the value
and a 0-d float64 input tensor of the trace. Tensor ops take that tensor where they would take a
number (math_ops.constant), Python arithmetic on it computes both, and the compiled program reads
the float from its input on every call (jit.py feeds `RuntimeScalars.input_tensors`).

Python control flow on a runtime scalar stays exact. A comparison (`if momentum != 0`,
`alpha == 1`) is recorded as a test, and the outcomes of all tests are part of the signature: a
value that would take another branch traces again. Where a value must become a plain number
(float(), numpy, an op that keeps it as an attribute) it is pinned: its value joins the
signature, as before it was dynamic. Nothing is silently baked in.
"""
import contextlib
import operator
import re

import numpy as np

from .tensor import Tensor

DYNAMIC = "<runtime scalar>"  # what a signature holds in place of a dynamic float
_PLAIN = (int, float, bool, np.integer, np.floating, np.bool_)
_FLOAT_TYPES = ("float", "float64")  # float arguments that may become runtime scalars (np.float64 too)
_BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "truediv": operator.truediv,
           "floordiv": operator.floordiv, "mod": operator.mod, "pow": operator.pow}
_UNARY = {"neg": operator.neg, "abs": abs}
_COMPARE = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
            "ge": operator.ge}
_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**",
           "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


# ----------------------------------------------------------------------------- expressions
# An expression is a number, ("slot", slot), (unary, e) or (binary, e1, e2): how a value the
# traced code computed follows from the runtime scalars, so a test can be evaluated on new values.
def evaluate(expr, values):
    if not isinstance(expr, tuple):
        return expr
    kind = expr[0]
    if kind == "slot":
        return values[expr[1]]
    if kind in _UNARY:
        return _UNARY[kind](evaluate(expr[1], values))
    return _BINARY[kind](evaluate(expr[1], values), evaluate(expr[2], values))


def _outcome(test, values):
    expr, how, other = test
    try:
        value = evaluate(expr, values)
        if how == "value":  # (by repr: -0.0 is not 0.0, and nan is nan)
            return repr(value) if isinstance(value, float) else value
        if how == "evaluates":  # Python arithmetic that may raise (a division by zero)
            return True
        return _COMPARE[how](value, evaluate(other, values))
    except KeyError:  # a scalar this call does not have (its signature differs anyway)
        return "absent"
    except (ArithmeticError, ValueError, TypeError) as error:
        return type(error).__name__


_RAISING = ("truediv", "floordiv", "mod", "pow")  # Python arithmetic that raises for some values


def _operand(other):
    """(value, tensor or number, expression) of the other operand of a ScalarInput's operator,
    or None for what it does not take (a Tensor: its own reflected operator runs)."""
    if isinstance(other, ScalarInput):
        return other.value, other.tensor, other.expr
    if isinstance(other, _PLAIN):
        number = other.item() if isinstance(other, np.generic) else other
        return number, number, number
    return None


class ScalarInput:
    """A float of the traced function that is an input of the program (see module docstring).

    `value` is this call's value, `tensor` the traced 0-d float64 tensor that computes it from
    the program's inputs, `expr` how it follows from the runtime scalars. It reads as a float
    to isinstance() (its `__class__`), not to numpy, which converts it through `__float__`
    or `__array__` (pinned). Float methods it lacks pin it too. After the trace it behaves as
    its value."""

    __slots__ = ("value", "tensor", "expr", "trace")

    @property
    def __class__(self):
        return float

    def __init__(self, value, tensor, expr, trace):
        self.value, self.tensor, self.expr, self.trace = value, tensor, expr, trace

    def _binary(self, name, other, reflected):
        theirs = _operand(other)
        if theirs is None:
            return NotImplemented  # a Tensor: its reflected operator takes this as a number
        mine = self.value, self.tensor, self.expr
        (a, a_tensor, a_expr), (b, b_tensor, b_expr) = (theirs, mine) if reflected else (mine, theirs)
        fn = _BINARY[name]
        value = fn(a, b)
        if not self.trace.open:
            return value
        expr = (name, a_expr, b_expr)
        if name in _RAISING:  # another value may raise here (1 / (1 - m) at m = 1): it traces again
            self.trace.test((expr, "evaluates", None))
        return ScalarInput(value, fn(a_tensor, b_tensor), expr, self.trace)

    def _unary(self, name):
        value = _UNARY[name](self.value)
        if not self.trace.open:
            return value
        return ScalarInput(value, _UNARY[name](self.tensor), (name, self.expr), self.trace)

    def _compare(self, name, other):
        theirs = _operand(other)
        if theirs is None:
            return NotImplemented
        self.trace.test((self.expr, name, theirs[2]))
        return _COMPARE[name](self.value, theirs[0])

    def pinned(self):
        """The plain value, which the signature now holds (a use that needs a plain number)."""
        self.trace.test((self.expr, "value", None))
        return self.value

    def __getattr__(self, name):  # float's other methods and attributes (is_integer, hex, real...)
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.pinned(), name)

    def __reduce__(self):  # copy, deepcopy and pickle give the plain value
        return float, (self.pinned(),)

    def __bool__(self):
        self.trace.test((self.expr, "ne", 0))
        return self.value != 0

    def __float__(self):
        return float(self.pinned())

    def __int__(self):
        return int(self.pinned())

    def __complex__(self):
        return complex(self.pinned())

    def __round__(self, ndigits=None):
        return round(self.pinned(), ndigits)

    def __trunc__(self):
        import math
        return math.trunc(self.pinned())

    def __floor__(self):
        import math
        return math.floor(self.pinned())

    def __ceil__(self):
        import math
        return math.ceil(self.pinned())

    def __hash__(self):
        return hash(self.pinned())

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.pinned(), dtype=dtype)

    def __repr__(self):  # (text may become a key or a file name: the value is pinned)
        return repr(self.pinned())

    def __str__(self):
        return str(self.pinned())

    def __format__(self, spec):
        return format(self.pinned(), spec)

    def __divmod__(self, other):
        return divmod(self.pinned(), other)

    def __rdivmod__(self, other):
        return divmod(other, self.pinned())

    def __neg__(self):
        return self._unary("neg")

    def __pos__(self):
        return self

    def __abs__(self):
        return self._unary("abs")


def _binary_methods(name):
    return (lambda self, other: self._binary(name, other, False),
            lambda self, other: self._binary(name, other, True))


for _name in _BINARY:
    _forward, _reflected = _binary_methods(_name)
    setattr(ScalarInput, f"__{_name}__", _forward)
    setattr(ScalarInput, f"__r{_name}__", _reflected)
for _name in _COMPARE:
    setattr(ScalarInput, f"__{_name}__", (lambda name: lambda self, other: self._compare(name, other))(_name))


# ----------------------------------------------------------------------------- slots
def _map_floats(part, change):
    """`part` with each Python float it holds replaced by `change(slot, value)`: a float
    argument, a module setting (Dropout.p), an optimizer hyperparameter (a float, or a float
    inside a tuple such as Adam's betas)."""
    kind = part[0]
    if kind == "value":
        return part[:3] + (change(("value", part[1]), part[3]),) if part[2] in _FLOAT_TYPES else part
    if kind == "settings":  # (settings hold python_guards.PlainValue wrappers: a float is its .value)
        def setting(number, key, value):
            raw = getattr(value, "value", value)
            if type(raw) is not float:
                return value
            changed = change(("settings", part[1], number, key), raw)
            return value if changed is raw else changed
        return part[:2] + (tuple(tuple((key, setting(number, key, value)) for key, value in settings)
                                 for number, settings in enumerate(part[2])),)
    if kind != "optimizer":
        return part

    def element(number, key, value, index):
        return change(("optimizer", part[2], number, key, index), value) if type(value) is float else value
    return part[:3] + (tuple(tuple(
        (key, tuple(element(number, key, e, i) for i, e in enumerate(value)) if type(value) is tuple
         else element(number, key, value, None)) for key, value in group) for number, group in enumerate(part[3])),)


def _float_slots(part):
    """[(slot, value)] of the Python floats a signature part holds (see _map_floats)."""
    found = []
    _map_floats(part, lambda slot, value: found.append((slot, value)) or value)
    return found


def _replace_floats(part, dynamic, values):
    """`part` with DYNAMIC in place of each dynamic float (its value goes into `values`)."""
    def change(slot, value):
        if slot not in dynamic:
            return value
        values[slot] = float(value)  # (-0.0 and nan are held as text: signatures.signature_float)
        return DYNAMIC
    return _map_floats(part, change)


class _Trace:
    """One trace's runtime scalars: open while the function runs, closed after."""

    def __init__(self, scalars):
        self.scalars, self.open = scalars, True

    def test(self, test):
        """Record `test` ((expression, how, other), see _outcome) while the trace runs."""
        if self.open:
            self.scalars.tests.setdefault(test, None)


class RuntimeScalars:
    """A compiled function's dynamic floats, the tests its traces made on them, and this call's
    values (set by `rewrite` from the call's signature)."""

    def __init__(self, input_name, modules_of):
        self.input_name = input_name  # signature path -> the argument's name (signatures.input_name)
        self.modules_of = modules_of  # a module parts' label -> [(path, module)] of its tree
        self.dynamic = {}  # slot -> readable name, in the order they became dynamic
        self.tests = {}  # (expr, how, other) -> None, in the order first made
        self.values = {}  # slot -> this call's value
        self.labels = {}  # optimizer id -> its label in the signature
        self.labels_seen, self.optimizers_seen = set(), set()  # module trees and optimizers this call reaches

    def learn(self, before, after):
        """Make dynamic the floats that changed from signature `before` to `after`; returns their
        names (`opt.param_groups[0]['lr']`), empty when none changed."""
        old = {}
        for part in before:
            old.update(_float_slots(part))
        changed = []
        for part in after:
            for slot, value in _float_slots(part):
                if slot not in self.dynamic and slot in old and old[slot] != value:
                    if part[0] == "optimizer":
                        self.labels[part[2]] = part[1]
                    self.dynamic[slot] = self._name(slot)
                    changed.append(self.dynamic[slot])
        return changed

    def _name(self, slot):
        if slot[0] == "value":
            return self.input_name(slot[1])
        if slot[0] == "settings":
            path = self.modules_of(slot[1])[slot[2]][0]
            return ".".join(filter(None, (slot[1], path, slot[3])))
        _, oid, number, key, index = slot
        return f"{self.labels.get(oid, 'optimizer')}.param_groups[{number}][{key!r}]" + (
            f"[{index}]" if index is not None else "")

    def rewrite(self, parts):
        """The signature's parts with dynamic floats as DYNAMIC and the tests' outcomes added."""
        values = self.values = {}
        self.labels_seen = {p[1] for p in parts if p[0] == "settings"}
        self.optimizers_seen = {p[2] for p in parts if p[0] == "optimizer"}
        out = [_replace_floats(p, self.dynamic, values) for p in parts]
        out.append(self.outcomes())
        return out

    def outcomes(self):
        return ("scalars", tuple(_outcome(test, self.values) for test in self.tests))

    def explain(self, before, after):
        """How the tests' outcomes differ between two signatures (`lr > 0.5: False -> True`), or ''."""
        old = before[-1][1] if before and before[-1][0] == "scalars" else ()
        new = after[-1][1] if after and after[-1][0] == "scalars" else ()
        changes = []
        for test, was, now in zip(self.tests, old, new):
            if was != now:
                expr, how, other = test
                what = (self.render(expr) if how in ("value", "evaluates") else
                        f"{self.render(expr)} {_SYMBOL[how]} {self.render(other)}")
                changes.append(f"{what}: {was!r} -> {now!r}")
        return ", ".join(changes)

    def render(self, expr):
        """An expression over the runtime scalars as Python reads it: `(1 - lr) * 0.5`."""
        if not isinstance(expr, tuple):
            return repr(expr)
        if expr[0] == "slot":
            return self.dynamic[expr[1]]
        if expr[0] == "neg":
            return f"-{self.render(expr[1])}"
        if expr[0] == "abs":
            return f"abs({self.render(expr[1])})"
        return f"({self.render(expr[1])} {_SYMBOL[expr[0]]} {self.render(expr[2])})"

    def refresh(self, signature):
        """`signature` (this call's) with the outcomes of tests a trace added since it was computed."""
        return self.rekeyed(signature, self.values)

    def rekeyed(self, signature, values):
        """A cached signature with the outcomes of tests made since, evaluated at the values
        its trace saw (`values`): its program stays reachable. (A test its trace never met only
        narrows the calls it serves, never widens them.)"""
        if signature and signature[-1][0] == "scalars" and len(signature[-1][1]) != len(self.tests):
            return signature[:-1] + (("scalars", tuple(_outcome(test, values) for test in self.tests)),)
        return signature

    def input_tensors(self, slots):
        """This call's values of `slots` (a program's scalar inputs) as 0-d float64 tensors."""
        values = self.values
        return [Tensor._wrap(np.array(values[slot], dtype=np.float64)) for slot in slots]

    @contextlib.contextmanager
    def substituted(self, tracer, args, kwargs):
        """While tracing: a ScalarInput, an input of the trace, in place of each dynamic float of
        this call (in the arguments and the optimizers' param groups). Yields (args, kwargs,
        slots, nodes); restores the groups after."""
        trace = _Trace(self)
        slots = [slot for slot in self.dynamic if slot in self.values]
        nodes, restore, homes = [], [], {}  # (id(module or group), key) -> the ScalarInput put there
        for slot in slots:
            value = self.values[slot]
            tensor = Tensor._wrap(np.array(value, dtype=np.float64))
            nodes.append(tracer.add_input(tensor, _node_name(self.dynamic[slot])))
            scalar = ScalarInput(value, tensor, ("slot", slot), trace)
            if slot[0] == "value":
                (args, kwargs), placed = _put((args, kwargs), slot[1], "args", scalar)
                if not placed:
                    scalar.pinned()  # (the traced function reads the float itself)
            elif slot[0] == "settings":
                module = self.modules_of(slot[1])[slot[2]][1]
                homes[(id(module), slot[3])] = scalar
                restore.append(_put_setting(module, slot[3], scalar))
            else:
                restore.append(_put_hyperparameter(slot, scalar, homes))
        try:
            yield args, kwargs, slots, nodes
        finally:
            self._pin_escaped(homes)
            trace.open = False
            for undo in reversed(restore):
                undo()

    def _pin_escaped(self, homes):
        """A runtime scalar the function stored in a module or an optimizer's param groups
        (`self.temperature = t`) is pinned there as its value: compiled calls do not run that
        Python, so only the value it held may be served (a new value traces again)."""
        for label in self.labels_seen:
            for _, module in self.modules_of(label):
                for key, value in list(vars(module).items()):
                    if type(value) is ScalarInput and homes.get((id(module), key)) is not value:
                        vars(module)[key] = value.pinned()
        for oid in self.optimizers_seen:
            from .optim.optimizer import live_optimizer
            for group in live_optimizer(oid).param_groups:
                for key, value in list(group.items()):
                    home = homes.get((id(group), key))
                    if type(value) is ScalarInput and value is not home:
                        group[key] = value.pinned()
                    elif type(value) is tuple and any(type(v) is ScalarInput and v is not home for v in value):
                        group[key] = tuple(v.pinned() if type(v) is ScalarInput and v is not home else v
                                           for v in value)


def _node_name(name):
    return "scalar_" + re.sub(r"\W+", "_", name).strip("_")


def _put(value, path, here, scalar, top=True):
    """(`value` with `scalar` at signature path `path`, whether it went there). Only into plain
    tuples and the call's own keyword dict: a float in a list, a dict or a tuple subclass (a
    namedtuple) the caller holds stays as it is (the function may write to the container, and
    a compiled call would not), and its slot is pinned instead."""
    if here == path:
        return scalar, True
    if not path.startswith(here + "["):
        return value, False
    if type(value) is tuple or top and type(value) is dict and here == "args[1]":
        placed = False
        items = []
        for key, v in (enumerate(value) if type(value) is tuple else value.items()):
            new, went = _put(v, path, f"{here}[{key!r}]" if type(value) is dict else f"{here}[{key}]", scalar,
                             top and here == "args")
            placed |= went
            items.append((key, new))
        return (tuple(v for _, v in items) if type(value) is tuple else dict(items)), placed
    return value, False


def _put_setting(module, key, scalar):
    """Put `scalar` in place of a module's float setting (its dict, so the module's settings
    version, which the signature's cache follows, does not move); returns the undo."""
    settings = vars(module)
    original = settings[key]
    settings[key] = scalar

    def undo():
        now = settings.get(key)
        if now is scalar:
            settings[key] = original
        elif isinstance(now, ScalarInput):
            settings[key] = now.value
    return undo


def _put_hyperparameter(slot, scalar, homes):
    """Put `scalar` into the optimizer's param group; returns the undo."""
    from .optim.optimizer import live_optimizer
    _, oid, number, key, index = slot
    group = live_optimizer(oid).param_groups[number]
    homes[(id(group), key)] = scalar
    original = group[key]
    if index is None:
        group[key] = scalar
    else:
        group[key] = tuple(scalar if i == index else v for i, v in enumerate(original))

    substituted = group[key]

    def undo():
        now = group[key]
        if now is substituted:
            group[key] = original
        elif isinstance(now, ScalarInput):  # the function set it from a runtime scalar: keep the value
            group[key] = now.value
    return undo


def plain_numbers(result):
    """A traced function's result with each runtime scalar in it as its pinned value (a program
    returns tensors; a number it returns is a constant of the trace, so its value is guarded)."""
    if isinstance(result, ScalarInput):
        return result.pinned()
    if type(result) in (tuple, list):
        return type(result)(plain_numbers(v) for v in result)
    if type(result) is dict:
        return {k: plain_numbers(v) for k, v in result.items()}
    return result
