"""Guards on the Python state a compiled function reads besides its arguments.

`PythonState` takes the reads python_reads finds in the function's code (each a `Source`: a
global, closure cell, item or attribute) and on each call reads them afresh into hashable keys
for ember.compile's signature (frontend/jit.py). A value used whole (iterated, passed on,
called) is snapshotted within bounds; past them, or where its state cannot be read, the call
runs eagerly and the report says why.
"""
import collections
import enum
import functools
import math
import types

import numpy as np

from .nn.module import Module, _settings_version, _tree_version
from .nn.parameter import Parameter
from .python_reads import (ABSENT, CONST, LEN, METHOD, MODULE_INTERNALS, VALUE, Source, Unguardable, _Analysis,
                           _IMMUTABLE, _is_class_data, _is_user_class, _is_user_function, _is_user_module,
                           is_plain_value)
from .optimizer_guards import optimizer_state_part
from .tensor import Tensor

MAX_ITEMS = 64  # values one guard snapshots (elements, entries, attributes, all levels)
MAX_DEPTH = 6  # containers and objects nested in one another
MAX_ARRAY = 64  # elements of a numpy array guarded by value


# ----------------------------------------------------------------------------- snapshots
_FUNCTION, _PYMODULE, _METHOD = types.FunctionType, types.ModuleType, types.MethodType
_TENSORS = {Tensor, Parameter}


class _Context:
    """What one signature computation gives the snapshots: the parts list (modules and
    optimizers add their own), the ids of the tensor arguments, and what code was analysed."""

    __slots__ = ("parts", "argument_ids", "module_parts", "visited", "in_tree", "novel", "found", "budget", "seen",
                 "source", "count", "in_argument")

    def __init__(self):
        self.parts, self.argument_ids, self.module_parts = None, (), None
        self.visited, self.in_tree = {}, {}
        self.novel, self.found, self.budget, self.seen, self.source, self.count = False, None, 0, set(), None, 0
        self.in_argument = False  # snapshotting an object passed as an argument

    def is_new(self, value):
        """Note code (a function, class, module) whose reads are not among the sources yet."""
        if self.visited.get(id(value)) is not value:
            self.novel = True
            if self.found is not None:
                self.found.append((value, self.source.label if self.source is not None else "value"))

    def first(self, value):
        """Is this the first time this call meets `value` (a module or optimizer adding parts)?"""
        if self.seen is None:
            self.seen = set()
        if id(value) in self.seen:
            return False
        self.seen.add(id(value))
        return True

    def spend(self, count):
        self.budget -= count
        if self.budget < 0:
            raise Unguardable(f"holds more than {MAX_ITEMS} values (ember snapshots at most {MAX_ITEMS} values of "
                              f"state read as a whole): read the items you need with constant keys or attribute "
                              f"names, or pass them as arguments")

    def label(self, value, depth):
        """The name of a module's or optimizer's parts: the source's, or numbered inside it."""
        if depth == 0:
            return self.source.label
        self.count += 1
        return f"{self.source.label} ({type(value).__name__} #{self.count})"


def snapshot(value, ctx, depth=0):
    """A hashable key that changes whenever what code can read of `value` changes."""
    t = type(value)
    if t in _IMMUTABLE:
        return _plain_key(t, value)
    return _handler(t)(value, ctx, depth)


def _plain_key(t, value):
    """(type, value), with the sign of a zero float: 0.0 == -0.0, but x / 0.0 is inf and
    x / -0.0 is -inf, so a program traced with one must not serve the other."""
    if (t is float or isinstance(value, np.floating)) and value == 0:
        return (t, value, math.copysign(1.0, value))
    return (t, value)


class PlainValue:
    """A plain value (a module setting) that compares and hashes by `_plain_key`, element by
    element for a tuple (0.0, -0.0, 0 and False differ), and prints as itself."""
    __slots__ = ("value", "key")

    def __init__(self, value):
        self.value = value
        self.key = _nested_key(value)

    def __eq__(self, other):
        return isinstance(other, PlainValue) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def __repr__(self):
        return repr(self.value)


def _nested_key(value):
    if type(value) is tuple:
        return (tuple, tuple(_nested_key(v) for v in value))
    return _plain_key(type(value), value)


def _handler(t):
    handler = _HANDLERS.get(t)
    if handler is None:
        handler = _HANDLERS[t] = _handler_for(t)
    return handler


def _items(pairs, ctx, depth, attr):
    """Snapshots of (name or key, value) pairs, naming the failing one in an Unguardable."""
    out = []
    for key, v in pairs:
        t = type(v)
        if t in _IMMUTABLE:
            out.append((key, _plain_key(t, v)))
            continue
        try:
            out.append((key, snapshot(v, ctx, depth + 1)))
        except Unguardable as error:
            error.steps.append((attr, key))
            raise
    return tuple(out)


def _nested(ctx, depth, count):
    if depth >= MAX_DEPTH:
        raise Unguardable(f"holds containers or objects nested more than {MAX_DEPTH} deep (ember guards at most "
                          f"{MAX_DEPTH} levels of state read as a whole): read the items you need directly, "
                          f"or pass them as arguments")
    ctx.spend(count)


def _sequence(value, ctx, depth):
    _nested(ctx, depth, len(value))
    return ("seq", type(value), tuple(v for _, v in _items(enumerate(value), ctx, depth, False)))


def _mapping(value, ctx, depth):
    _nested(ctx, depth, len(value))
    return ("dict", type(value), _items(value.items(), ctx, depth, False))


def _set(value, ctx, depth):
    _nested(ctx, depth, len(value))
    objects = tuple(snapshot(v, ctx, depth + 1) for v in value if type(v) not in _IMMUTABLE)  # hashed by identity
    return ("set", type(value), frozenset(value), objects)


def _tensor(value, ctx, depth):
    data = value._data
    return ("tensor", id(value), data.shape, data.dtype, value.requires_grad, id(value) in ctx.argument_ids)


def _module(value, ctx, depth):
    if id(value) not in ctx.in_tree:  # the compiled module's tree has its parts already
        ctx.is_new(value)
        if ctx.module_parts is not None and ctx.first(value):
            ctx.module_parts(value, ctx.label(value, depth), ctx.parts)
    if ctx.in_argument:
        # code reached through an argument is not analysed: guard what its forwards may read
        return ("module", value, tuple(_items([(k, v) for k, v in vars(m).items() if _unlisted_attribute(k, v)],
                                              ctx, depth, True) for m in value.modules()))
    return ("module", value)


def _unlisted_attribute(key, value):
    """Is a module attribute outside its parts (not a table, flag or plain public setting)?"""
    return key not in MODULE_INTERNALS and key != "training" and not (
        not key.startswith("_") and is_plain_value(value))


_UNGUARDED = object()


def _hyperparameter_key(value):
    """How an optimizer hyperparameter stands in its signature part: a plain value as itself, a
    list such as betas=[0.9, 0.99] by its values, a tensor (a tensor lr) by identity (the program
    reads its value); anything else is not guarded (_UNGUARDED)."""
    if is_plain_value(value):
        return value
    if type(value) is list and len(value) <= 8 and all(is_plain_value(e) for e in value):
        return ("list", tuple(value))
    if type(value) in _TENSORS:
        return ("tensor", id(value), value._data.shape, value._data.dtype)
    return _UNGUARDED


def _optimizer(value, ctx, depth):
    if ctx.parts is not None and ctx.first(value):
        groups = []
        for group in value.param_groups:
            keys = ((k, _hyperparameter_key(v)) for k, v in group.items() if k != "params")
            groups.append(tuple((k, key) for k, key in keys if key is not _UNGUARDED))
        label = ctx.label(value, depth)
        ctx.parts.append(("optimizer", label, id(value), tuple(groups)))
        ctx.parts.append(optimizer_state_part(value, label))
    return ("optimizer", value)


def _function(value, ctx, depth):
    if ctx.visited.get(id(value)) is not value and _is_user_function(value):
        ctx.is_new(value)
    return ("function", value)


def _method(value, ctx, depth):
    func = value.__func__
    if _is_user_function(func):
        ctx.is_new(func)
    try:
        owner = snapshot(value.__self__, ctx, depth + 1)
    except Unguardable as error:
        error.steps.append((True, "__self__"))
        raise
    return ("method", func, owner)


def _builtin(value, ctx, depth):
    owner = getattr(value, "__self__", None)
    if owner is None or isinstance(owner, types.ModuleType):
        return ("callable", value)
    return ("builtin method", value.__name__, snapshot(owner, ctx, depth + 1))


def _class(value, ctx, depth):
    if _is_user_class(value):
        ctx.is_new(value)
    return ("class", value)


def _python_module(value, ctx, depth):
    if _is_user_module(value):
        raise Unguardable(f"is the module {value.__name__}, used as a value: ember cannot tell which of its "
                          f"attributes the compiled code reads; read them directly ({value.__name__}.NAME)")
    ctx.is_new(value)  # a module in place of the one analysed: what is read through it changes
    return ("pymodule", value)


def _array(value, ctx, depth):
    if value.size > MAX_ARRAY:
        raise Unguardable(f"is a numpy array of {value.size} elements (ember guards numpy arrays of at most "
                          f"{MAX_ARRAY} by value): make it an ember.tensor, which compiled code reads at each call")
    return ("ndarray", value.shape, value.dtype.str, value.tobytes())


def _scalar(value, ctx, depth):
    return _plain_key(type(value), value)


def _partial(value, ctx, depth):
    _nested(ctx, depth, 1)
    return ("partial", snapshot(value.func, ctx, depth + 1), snapshot(value.args, ctx, depth + 1),
            snapshot(value.keywords, ctx, depth + 1))


def _object(value, ctx, depth):
    t = type(value)
    state = getattr(value, "__dict__", None)
    pairs = list(state.items()) if state is not None else []
    for klass in t.__mro__:
        slots = vars(klass).get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                pairs.append((slot, getattr(value, slot)))
    _nested(ctx, depth, len(pairs))
    key = ("object", t, _items(pairs, ctx, depth, True))
    if _is_user_class(t):
        ctx.is_new(t)
        data = [(f"{k.__name__}.{name}", v) for k in t.__mro__ if _is_user_class(k)
                for name, v in vars(k).items() if _is_class_data(name, v)]
        if data:
            ctx.spend(len(data))
            key += (_items(data, ctx, depth, True),)
    return key


def _callable(value, ctx, depth):
    return ("callable", value)


def _opaque(value, ctx, depth):
    t = type(value)
    raise Unguardable(f"is a {t.__module__}.{t.__qualname__}, whose state ember cannot read to guard it")


def _compiled(value, ctx, depth):
    """Another ember.compile'd function called from this one: what its function reads."""
    try:
        return ("compiled", value, snapshot(value.fn, ctx, depth))
    except Unguardable as error:
        error.steps.append((True, "fn"))
        raise


def _slice(value, ctx, depth):
    return ("slice", value.start, value.stop, value.step)  # (slices are not hashable before 3.12)


def _handler_for(t):
    """The snapshot rule for values of type `t`: the first that matches (cached in _HANDLERS)."""
    from .jit import CompiledFunction
    from .optim.optimizer import Optimizer
    rules = ((CompiledFunction, _compiled), (Tensor, _tensor), (Module, _module),
             ((tuple, list, collections.deque), _sequence), (dict, _mapping), ((set, frozenset), _set),
             ((np.generic, enum.Enum, np.dtype), _scalar), (slice, _slice), (np.ndarray, _array),
             (types.FunctionType, _function), (types.MethodType, _method),
             ((types.BuiltinFunctionType, types.MethodWrapperType, types.WrapperDescriptorType,
               types.MethodDescriptorType, np.ufunc), _builtin),
             (type, _class), (types.ModuleType, _python_module), (functools.partial, _partial),
             (Optimizer, _optimizer))
    for base, rule in rules:
        if issubclass(t, base):
            return rule
    if any("__dict__" in vars(k) or "__slots__" in vars(k) for k in t.__mro__[:-1]):
        return _object
    if any("__call__" in vars(k) for k in t.__mro__[:-1]):
        return _callable  # a C-level callable: its identity
    return _opaque


_HANDLERS = {}


# ----------------------------------------------------------------------------- the state of one function
class PythonState:
    """The Python state a compiled function (or module) reads, as signature parts.

    Built from the code on the first call, and again when code not yet analysed is reached (a
    global rebound to another function, an object of a new class in a container) or, where
    modules are reached, when a module's tree or settings change (new attributes)."""

    def __init__(self, fn, module=None, module_parts=None):
        self.fn, self.module = fn, module
        self.module_parts = module_parts  # (module, label, parts): appends a module's parts (jit)
        self.function = getattr(fn, "__func__", fn)
        self.sources = []
        self.refusal = None
        self.watch = True
        self.tree_version = self.settings_version = None  # of ember.nn when built
        self.ctx = _Context()

    def _build(self, argument_ids=()):
        analysis = _Analysis(self)
        ctx = self.ctx
        self.refusal = None
        try:
            fn = self.fn
            if self.module is not None:
                root = Source(CONST, self.module, None, (), "self", f"{type(self.module).__name__} attribute")
                analysis.module_tree(self.module, root)
            elif isinstance(fn, (types.FunctionType, types.MethodType)):
                analysis.function(fn)
            else:  # a callable object or a functools.partial: what it holds and what its code reads
                analysis.leaf(Source(CONST, fn, None, (), "self", f"{type(fn).__name__} object"), fn, "value")
                call = getattr(type(fn), "__call__", None)
                if _is_user_function(call):
                    analysis.function(call, Source(CONST, fn, None, (), "self", f"{type(fn).__name__} attribute"))
            ctx.in_tree = {id(m): m for m in self.module.modules()} if self.module is not None else {}
            for _ in range(MAX_DEPTH + 2):  # follow code met inside snapshots until none is new
                ctx.visited, ctx.found, ctx.argument_ids = analysis.visited, [], argument_ids
                for source in list(analysis.sources.values()):
                    try:
                        self._key(source, source.read())
                    except Exception:  # noqa: BLE001 - reported when the signature is computed
                        pass
                if not ctx.found:
                    break
                for value, label in ctx.found:
                    analysis.reach(value, label)
        except Unguardable as error:
            self.refusal = error.reason
        except Exception as error:  # noqa: BLE001 - code ember cannot analyse is not compiled
            self.refusal = (f"ember could not analyse the Python state the function reads "
                            f"({type(error).__name__}: {error})")
        finally:
            ctx.found, ctx.source = None, None
        self.sources = list(analysis.sources.values())
        ctx.visited = analysis.visited
        self.watch = self.module is not None or any(isinstance(v, Module) for v in analysis.visited.values())
        self.tree_version, self.settings_version = _tree_version[0], _settings_version[0]

    def add_parts(self, parts, argument_ids):
        """Append the parts of the state read; return None, or why it cannot be guarded.
        Runs on every compiled call: plain values, functions and tensors are keyed inline."""
        if self.tree_version is None or self.watch and (
                self.tree_version != _tree_version[0] or self.settings_version != _settings_version[0]):
            self._build(argument_ids)
        sources = self.sources
        if not sources:
            return self.refusal
        visited, start = self.ctx.visited, len(parts)
        for source in sources:
            try:
                value = source.fetch()
            except Exception:  # noqa: BLE001 - a missing name, key or attribute
                value = ABSENT
            last = source.last
            if last[0] is value:  # the same immutable value, function or module as last call
                parts.append(last[1])
                continue
            t = type(value)
            if t in _IMMUTABLE:
                key = _plain_key(t, value)
                source.last = (value, source.head + (key,))
            elif (t is _FUNCTION or t is _PYMODULE) and visited.get(id(value)) is value:
                key = ("function" if t is _FUNCTION else "pymodule", value)
                source.last = (value, source.head + (key,))
            elif t in _TENSORS:
                data = value._data
                key = ("tensor", id(value), data.shape, data.dtype, value.requires_grad, id(value) in argument_ids)
            elif t is _METHOD and source.mode is METHOD and visited.get(id(value.__func__)) is value.__func__:
                key = ("method", value.__func__)
            elif source.mode is LEN and (t is list or t is dict or t is tuple):
                key = ("len", len(value))
            else:
                del parts[start:]
                return self._add_snapshots(parts, argument_ids)
            parts.append(source.head + (key,))
        return self.refusal

    def _add_snapshots(self, parts, argument_ids):
        """add_parts for state with containers, objects, modules: every value through `snapshot`."""
        ctx = self.ctx
        for _ in range(2):  # a rebuild follows new code, then the state is read again
            start = len(parts)
            ctx.parts, ctx.argument_ids, ctx.module_parts = parts, argument_ids, self.module_parts
            ctx.novel, ctx.seen = False, None
            source = None
            try:
                for source in self.sources:
                    try:
                        value = source.fetch()
                    except Exception:  # noqa: BLE001 - a missing name, key or attribute
                        value = ABSENT
                    parts.append(source.head + (self._key(source, value),))
            except Unguardable as error:
                return _reason(source, error.reason, error.steps)
            except Exception as error:  # noqa: BLE001 - state that breaks while being read is not guarded
                return _reason(source, f"could not be read to guard it ({type(error).__name__}: {error})", [])
            finally:
                ctx.parts = ctx.module_parts = ctx.source = None
            if not ctx.novel:
                break
            del parts[start:]
            self._build(argument_ids)
        return self.refusal

    def _key(self, source, value):
        ctx = self.ctx
        ctx.budget, ctx.source, ctx.count = MAX_ITEMS, source, 0
        if source.mode is VALUE or value is ABSENT:
            return snapshot(value, ctx)
        if source.mode is LEN:
            try:
                return ("len", len(value))
            except TypeError:
                return snapshot(value, ctx)
        func = getattr(value, "__func__", None)
        if func is None:
            return snapshot(value, ctx)
        ctx.is_new(func)
        return ("method", func)

    def argument_key(self, value, path, argument_ids, parts):
        """The key of an object passed as an argument: its attributes within bounds, or why not."""
        ctx = self.ctx
        ctx.parts, ctx.argument_ids, ctx.module_parts = parts, argument_ids, self.module_parts
        ctx.budget, ctx.count, ctx.seen = MAX_ITEMS, 0, None
        ctx.source, ctx.in_argument = Source(CONST, value, None, (), path, "argument"), True
        try:
            return snapshot(value, ctx)
        except Unguardable as error:
            return ("refused", f"argument {path}{_path(error.steps)} {error.reason}")
        except Exception as error:  # noqa: BLE001 - state that breaks while being read is not guarded
            return ("refused", f"argument {path} could not be read to guard it ({type(error).__name__}: {error})")
        finally:
            ctx.parts = ctx.module_parts = ctx.source = None
            ctx.in_argument = False


def _path(steps):
    return "".join(f".{key}" if is_attr else f"[{key!r}]" for is_attr, key in reversed(steps))


def _reason(source, reason, steps):
    return f"{source.what} {source.label}{_path(steps)}" + (
        f" (read by {source.reader})" if source.reader else "") + f" {reason}"


# ----------------------------------------------------------------------------- explaining
def explain_change(what, label, reader, old, new):
    """`closed-over dict cfg['scale']: 2.0 -> 3.0`: the first difference of two keys of one value."""
    where, was, now = _difference(label, old, new)
    by = f" (read by {reader})" if reader else ""
    return f"{what} {where}{by}: {was} -> {now}"


def _difference(path, old, new):
    """(where, was, is now) at the first difference between two keys of one source."""
    if type(old) is tuple and type(new) is tuple and old and new and old[0] == new[0] and len(old) > 1:
        tag = old[0]
        if tag == "seq" and old[1] is new[1]:
            if len(old[2]) != len(new[2]):
                return path, f"length {len(old[2])}", f"length {len(new[2])}"
            for i, (a, b) in enumerate(zip(old[2], new[2])):
                if a != b:
                    return _difference(f"{path}[{i}]", a, b)
        elif tag in ("dict", "object") and old[1] is new[1]:
            names = "attributes" if tag == "object" else "keys"
            if [k for k, _ in old[2]] != [k for k, _ in new[2]]:
                return path, f"{names} {[k for k, _ in old[2]]}", f"{names} {[k for k, _ in new[2]]}"
            for (k, a), (_, b) in zip(old[2], new[2]):
                if a != b:
                    return _difference(f"{path}.{k}" if tag == "object" else f"{path}[{k!r}]", a, b)
            for (k, a), (_, b) in zip(old[3] if len(old) > 3 else (), new[3] if len(new) > 3 else ()):
                if a != b:
                    return _difference(f"{path} (class attribute {k})", a, b)
        elif tag in ("method", "builtin method") and old[1] == new[1] and len(old) > 2:
            return _difference(f"{path}.__self__", old[2], new[2])
        elif tag == "tensor" and old[1] != new[1]:
            return path, _describe_key(old), f"another {_describe_key(new)}"
        elif tag == "partial":
            for name, a, b in zip(("func", "args", "keywords"), old[1:], new[1:]):
                if a != b:
                    return _difference(f"{path}.{name}", a, b)
        elif tag == "ndarray" and old[1:3] == new[1:3]:
            return path, _array_values(old), _array_values(new)
    return path, _describe_key(old), _describe_key(new)


def _array_values(key):
    return f"array {np.frombuffer(key[3], dtype=np.dtype(key[2])).reshape(key[1]).tolist()}"


def _describe_key(key):
    if key is ABSENT:
        return "<missing>"
    if type(key) is tuple and len(key) == 2 and isinstance(key[0], type):
        return repr(key[1])
    tag = key[0] if type(key) is tuple and key else None
    if tag == "seq":
        return f"{key[1].__name__} of length {len(key[2])}"
    if tag == "dict":
        return f"{key[1].__name__} with keys {[k for k, _ in key[2]]}"
    if tag == "set":
        return f"{key[1].__name__} {set(key[2])!r}" if len(key[2]) <= 8 else f"{key[1].__name__} of {len(key[2])}"
    if tag == "object":
        return f"{key[1].__name__} object"
    if tag == "len":
        return f"length {key[1]}"
    if tag in ("function", "class", "pymodule", "callable", "module", "optimizer"):
        name = getattr(key[1], "__qualname__", None) or type(key[1]).__name__
        return f"{tag} {name}"
    if tag == "method":
        return f"method {key[1].__qualname__}"
    if tag == "tensor":
        return f"tensor {key[3]}[{','.join(map(str, key[2]))}]" + (" requires_grad" if key[4] else "") + (
            " (also an argument)" if key[5] else "")
    if tag == "ndarray":
        return f"numpy array {np.dtype(key[2]).name}{list(key[1])}"
    if tag == "partial":
        return f"functools.partial of {_describe_key(key[1])}"
    return repr(key)


def explain_settings_change(old, new):
    """`p: 0.5 -> 0.0`: the first module of two `settings` parts (jit._plain_settings) that differs."""
    for before, after in zip(old, new):
        if before != after:
            before, after = dict(before), dict(after)
            return ", ".join(f"{k}: {_short(before.get(k))} -> {_short(after.get(k))}"
                             for k in dict.fromkeys(list(before) + list(after)) if before.get(k) != after.get(k))
    return f"{len(old)} -> {len(new)} modules"


def _short(value):
    if isinstance(value, tuple) and value and callable(value[0]):
        return f"{len(value)} hook(s)"
    return repr(value)
