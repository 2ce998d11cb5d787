"""Finding the Python state a compiled function reads besides its arguments.

A trace bakes in every Python value it reads: globals, closure cells, items of dicts and lists,
attributes of objects, classes and modules, default arguments. `_Analysis` finds those reads in
the bytecode of the function and of the user code it reaches (helpers, methods, module forwards
and hooks) as access chains (`cfg['scale']`, `config.SCALE`, `self.cfg['k']`), each a `Source`
that python_guards reads on every call into ember.compile's signature (frontend/jit.py).
"""
import builtins
import dis
import enum
import functools
import importlib.util
import inspect
import operator
import os
import sys
import sysconfig
import types

import numpy as np

from ember.dtypes import DType
from .nn.module import Module
from .tensor import Device, Tensor

MAX_FUNCTIONS = 256  # user functions and methods analysed for one compiled function


class _Absent:
    """What a path reads when a name, key or attribute is missing (a value like any other)."""

    def __repr__(self):
        return "<missing>"


ABSENT = _Absent()
_NEVER = object()
# the attributes every Module has (its tables, hooks and caches): covered by the module's own parts
MODULE_INTERNALS = frozenset(vars(Module())) | {"_names_cache", "_orig_mod", "_compiled", "_version"}


class Unguardable(Exception):
    """A value ember cannot guard: the signature runs eagerly with `reason`."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason
        self.steps = []  # filled while unwinding: where inside the guarded value


# types whose values are their own keys: nothing inside them can change
_IMMUTABLE = {type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis), type(NotImplemented),
              DType, Device, np.dtype, types.CodeType, _Absent}


def _is_immutable(value):
    t = type(value)
    return t in _IMMUTABLE or isinstance(value, (np.generic, enum.Enum)) or (
        t is tuple and all(_is_immutable(v) for v in value))


# ----------------------------------------------------------------------------- library code
def _library_dirs():
    dirs = []
    for name in ("ember", "ember.frontend", "ember.passes", "ember.compiler", "ember.runtime"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        dirs += [os.path.abspath(p) for p in (spec.submodule_search_locations or []) if spec]
    paths = sysconfig.get_paths()
    dirs += [os.path.abspath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    return tuple(d.rstrip(os.sep) + os.sep for d in dict.fromkeys(dirs))


_LIBRARY_DIRS = _library_dirs()


@functools.lru_cache(maxsize=None)
def is_library_file(filename):
    """Code of ember, the standard library and installed packages: its reads are not the user's
    state (ember's own state is covered by the module and optimizer parts of the signature)."""
    return filename.startswith("<frozen") or os.path.abspath(filename).startswith(_LIBRARY_DIRS)


def _is_user_function(fn):
    return type(fn) is types.FunctionType and not is_library_file(fn.__code__.co_filename)


_USER_CLASSES = {}


def _is_user_class(cls):
    known = _USER_CLASSES.get(cls)
    if known is None:
        name = getattr(cls, "__module__", None) or "builtins"
        filename = getattr(sys.modules.get(name), "__file__", None)
        builtin = name == "builtins" or name.split(".")[0] in sys.builtin_module_names
        known = _USER_CLASSES[cls] = not builtin and (filename is None or not is_library_file(filename))
    return known


def _is_user_module(module):
    filename = getattr(module, "__file__", None)
    return filename is not None and not is_library_file(filename)


# ----------------------------------------------------------------------------- bytecode
_LOAD_FAST = {"LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_BORROW"}
_LOAD_DEREF = {"LOAD_DEREF", "LOAD_CLASSDEREF"}
_CALLS = {"PRECALL", "CALL", "CALL_FUNCTION"}
_SKIPPED = {"CACHE", "EXTENDED_ARG", "NOP"}
_PLAIN_KEYS = (str, int, bytes, bool, type(None), float)


def _is_subscript(ins):
    return ins.opname == "BINARY_SUBSCR" or (ins.opname == "BINARY_OP" and ins.argrepr == "[]")


@functools.lru_cache(maxsize=4096)
def code_chains(code):
    """The access chains of `code` and of the code nested in it (lambdas, comprehensions):
    (root kind, root name, steps, end) with root kind "global", "deref" (a closure cell) or
    "fast" (a local: `self` or a parameter with a default), steps ((is_attr, name or key), ...)
    and end "len" (only its length is read), "call" (it is called) or "value" (used any other
    way: iterated, passed on, compared ...). Also the locals the code assigns."""
    chains, stored = [], set()
    _scan(code, code, chains, stored)
    return tuple(chains), frozenset(stored)


def _scan(code, top, chains, stored, shadowed=frozenset()):
    own = code is top
    arguments = top.co_varnames[:top.co_argcount + top.co_kwonlyargcount]
    ins = [i for i in dis.get_instructions(code) if i.opname not in _SKIPPED]
    for i, op in enumerate(ins):
        name = op.opname
        if (name in ("STORE_FAST", "DELETE_FAST") and own) or name in ("STORE_DEREF", "DELETE_DEREF"):
            stored.add(op.argval)
            continue
        if name == "LOAD_GLOBAL":
            root = ("global", op.argval)
        elif name in _LOAD_DEREF:
            local = op.argval in shadowed or (not own and op.argval in code.co_varnames + code.co_cellvars)
            if op.argval in top.co_freevars and not local and op.argval not in top.co_cellvars:
                root = ("deref", op.argval)  # a closed-over cell
            elif op.argval in top.co_cellvars and op.argval in arguments and not local:
                root = ("fast", op.argval)  # an argument (`self`) that nested code captures
            else:
                continue  # a cell of this call: a local
        elif name in _LOAD_FAST and own:
            root = ("fast", op.argval)
        elif name == "LOAD_FAST_LOAD_FAST" and own:
            chains.append(("fast", op.argval[0], (), "value"))
            root = ("fast", op.argval[1])
        else:
            continue
        steps, j, method = [], i + 1, False
        while j < len(ins):
            step = ins[j]
            if step.opname in ("LOAD_ATTR", "LOAD_METHOD"):
                steps.append((True, step.argval))
                method = step.opname == "LOAD_METHOD" or step.argrepr.startswith("NULL|self")
                j += 1
            elif (step.opname in ("LOAD_CONST", "LOAD_SMALL_INT") and j + 1 < len(ins) and _is_subscript(ins[j + 1])
                  and type(step.argval) in _PLAIN_KEYS):
                steps.append((False, step.argval))
                method = False
                j += 2
            else:
                break
        end = "value"
        previous = ins[i - 1] if i else None
        if (previous is not None and previous.opname == "LOAD_GLOBAL" and previous.argval == "len"
                and j < len(ins) and ins[j].opname in _CALLS and ins[j].arg == 1):
            end = "len"
        elif (steps and method) or (not steps and (op.argrepr.startswith("NULL +") or (
                previous is not None and previous.opname == "PUSH_NULL"))):
            end = "call"
        chains.append((root[0], root[1], tuple(steps), end))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _scan(const, top, chains, stored, shadowed if own else shadowed | set(code.co_varnames + code.co_cellvars))


# ----------------------------------------------------------------------------- sources
GLOBAL, CELL, CONST = 0, 1, 2
VALUE, LEN, METHOD = "value", "len", "method"


class Source:
    """A path from a root (a global, a closure cell, an object held here) through attributes
    and constant items to a value, with the readable name of the path (`cfg['scale']`)."""

    __slots__ = ("kind", "holder", "name", "steps", "label", "what", "reader", "mode", "head", "fetch", "last")

    def __init__(self, kind, holder, name, steps, label, what, reader=""):
        self.kind, self.holder, self.name, self.steps = kind, holder, name, steps
        self.label, self.what, self.reader = label, what, reader
        self.mode, self.head, self.fetch = VALUE, None, self.read
        self.last = (_NEVER, None)  # (value, part) of the last call, for values whose key never changes

    def finish(self, mode):
        """Fix the mode (what of the value is guarded) and pick the fastest way to read it."""
        self.mode = mode
        if mode is LEN:
            self.label = f"len({self.label})"
        self.head = ("python", self.label, self.what, self.reader)
        attributes = all(is_attr for is_attr, _ in self.steps)
        if self.kind == GLOBAL and not self.steps:
            self.fetch = functools.partial(self.holder.get, self.name, ABSENT)
        elif self.kind == CELL and not self.steps:
            self.fetch = functools.partial(getattr, self.holder, "cell_contents")  # ValueError when empty
        elif self.kind == CONST and self.steps and attributes:
            self.fetch = functools.partial(operator.attrgetter(".".join(k for _, k in self.steps)), self.holder)
        elif self.kind == GLOBAL and attributes:
            self.fetch = functools.partial(_global_attributes, self.holder, self.name,
                                           operator.attrgetter(".".join(k for _, k in self.steps)))

    def step(self, is_attr, key):
        label = f"{self.label}.{key}" if is_attr else f"{self.label}[{key!r}]"
        return Source(self.kind, self.holder, self.name, self.steps + ((is_attr, key),), label, self.what,
                      self.reader)

    def parent(self):
        if not self.steps:
            return None
        *rest, (is_attr, key) = self.steps
        suffix = f".{key}" if is_attr else f"[{key!r}]"
        return Source(self.kind, self.holder, self.name, tuple(rest), self.label[:-len(suffix)], self.what,
                      self.reader)

    def identity(self):
        return (self.kind, id(self.holder), self.name, self.steps, self.mode)

    def read(self):
        try:
            if self.kind == GLOBAL:
                value = self.holder[self.name]
            elif self.kind == CELL:
                value = self.holder.cell_contents
            else:
                value = self.holder
            for is_attr, key in self.steps:
                value = getattr(value, key) if is_attr else value[key]
            return value
        except Exception:  # noqa: BLE001 - a missing name, key or attribute is a value too
            return ABSENT


def _global_attributes(namespace, name, attributes):
    return attributes(namespace[name])


def _describe_root(where, value):
    """How a message names the root of a path: `closed-over dict`, `module attribute`, ..."""
    if isinstance(value, types.ModuleType):
        return "module attribute"
    if isinstance(value, type):
        return "class attribute"
    if isinstance(value, Module):
        return f"{where} module"
    if isinstance(value, Tensor):
        return f"{where} tensor"
    if isinstance(value, types.FunctionType):
        return f"{where} function"
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return f"{where} {type(value).__name__}"
    if value is None or isinstance(value, (bool, int, float, str, bytes, np.generic)):
        return "closed-over variable" if where == "closed-over" else where
    return f"{where} {type(value).__name__} object"


class _ClassInstance:
    """`self` in a method analysed without an instance at hand (objects met inside snapshots or
    made inside the function): its instance attributes are guarded by the snapshot of the
    object, so only what resolves to the class (class attributes, methods, properties) is read."""

    def __init__(self, cls):
        self.cls = cls


# ----------------------------------------------------------------------------- analysis
class _Analysis:
    """Walks the user code a compiled function reaches and collects the sources to guard."""

    def __init__(self, state):
        self.state = state
        self.sources = {}
        self.done = set()
        self.visited = {}  # id -> function, class or module whose reads are in `sources`
        self.covered = {}  # id -> module whose training flags, state and plain settings are parts

    def add(self, source, mode=VALUE):
        source.mode = mode
        if source.identity() not in self.sources:
            source.finish(mode)
            self.sources[source.identity()] = source

    # -- roots
    def function(self, fn, self_source=None, reader=None):
        if isinstance(fn, types.MethodType):
            self_source = self_source or Source(CONST, fn.__self__, None, (), "self",
                                                f"{type(fn.__self__).__name__} attribute")
            fn = fn.__func__
        if not _is_user_function(fn):
            self.visited[id(fn)] = fn  # library code: nothing of it to analyse
            return
        owner = self_source.label if isinstance(self_source, Source) else \
            ("instance", id(self_source.cls)) if self_source is not None else None
        token = (id(fn), owner)
        if token in self.done:
            return
        self.done.add(token)
        self.visited[id(fn)] = fn
        if len(self.done) > MAX_FUNCTIONS:
            raise Unguardable(f"the compiled function reaches more than {MAX_FUNCTIONS} user functions "
                              f"and methods; ember does not follow that many to guard what they read")
        code = fn.__code__
        chains, stored = code_chains(code)
        if reader is None:
            reader = "" if fn is self.state.function else fn.__qualname__
        cells = dict(zip(code.co_freevars, fn.__closure__ or ()))
        self_name = None
        if self_source is not None and code.co_argcount and code.co_varnames[0] not in stored:
            self_name = code.co_varnames[0]
        defaults = self._defaults(fn, code, stored, reader)
        for kind, name, steps, end in chains:
            if kind == "global":
                if name not in fn.__globals__ and hasattr(builtins, name):
                    continue  # a builtin (shadowing one later with a global is not followed)
                value = fn.__globals__.get(name)  # (a name not defined yet is guarded as missing)
                root = Source(GLOBAL, fn.__globals__, name, (), name, _describe_root("global", value), reader)
            elif kind == "deref":
                cell = cells.get(name)
                if cell is None or name == "__class__":
                    continue
                try:
                    value = cell.cell_contents
                except ValueError:
                    value = None
                root = Source(CELL, cell, name, (), name, _describe_root("closed-over", value), reader)
            elif name == self_name:
                root = self_source
            elif name in defaults:
                root = defaults[name]
            else:
                continue
            self.chain(root, steps, end)

    def _defaults(self, fn, code, stored, reader):
        """Parameters whose default is a mutable value (`opts={}`), as sources of that default."""
        found = {}
        positional = code.co_varnames[:code.co_argcount]
        for i, value in enumerate(fn.__defaults__ or ()):
            name = positional[len(positional) - len(fn.__defaults__) + i]
            if name not in stored and not _is_immutable(value):
                found[name] = Source(CONST, fn, None, ((True, "__defaults__"), (False, i)), name,
                                     f"default argument of {fn.__qualname__}", reader)
        for name, value in (fn.__kwdefaults__ or {}).items():
            if name not in stored and not _is_immutable(value):
                found[name] = Source(CONST, fn, None, ((True, "__kwdefaults__"), (False, name)), name,
                                     f"default argument of {fn.__qualname__}", reader)
        return found

    def module_tree(self, module, source):
        """A module whose parts are in the signature: analyse the forwards and hooks of its tree."""
        for name, m in module.named_modules():
            self.covered[id(m)] = m
        for name, m in module.named_modules():
            label = f"{source.label}.{name}" if name else source.label
            sub = source if not name else Source(CONST, m, None, (), label, f"{type(m).__name__} attribute")
            self.visited[id(m)] = m
            forwards = [c.__dict__["forward"] for c in type(m).__mro__ if "forward" in c.__dict__]
            for forward in forwards:
                self.function(forward, sub, reader="")
            if not forwards or not _is_user_function(forwards[0]):
                self.attributes(m, sub, public_only=True)  # what a library forward may read
            for table in ("_forward_pre_hooks", "_forward_hooks"):
                for hook in (m.__dict__.get(table) or {}).values():
                    self.function(hook)

    def attributes(self, module, source, public_only=False):
        """The attributes of a module its parts do not cover (containers, objects, tensors that are
        not params or buffers, private values), for code that reads the module in unknown ways."""
        for key, value in vars(module).items():
            if key in MODULE_INTERNALS or key == "training":
                continue
            if key.startswith("_") and (public_only or key.startswith("__")):
                continue
            if not key.startswith("_") and is_plain_value(value):
                continue  # covered by the module's plain settings
            self.add(source.step(True, key))
        if not public_only:
            self.class_attributes(type(module))

    def class_attributes(self, cls):
        """Data attributes of the user classes in `cls`'s MRO, read through `cls` (so that one set
        on a subclass later, shadowing its base's, is what the guard reads)."""
        names = dict.fromkeys(key for klass in cls.__mro__ if _is_user_class(klass)
                              for key, value in vars(klass).items() if _is_class_data(key, value))
        for key in names:
            self.add(Source(CONST, cls, None, ((True, key),), f"{cls.__name__}.{key}", "class attribute"))

    def reach(self, value, label):
        """Code met inside a snapshot (a lambda in a dict, an object of a user class, a module in a
        list): analyse what it reads."""
        if isinstance(value, Module):
            self.module_tree(value, Source(CONST, value, None, (), label, f"{type(value).__name__} attribute"))
        elif isinstance(value, type):
            self.klass(value)
        elif isinstance(value, types.FunctionType):
            self.function(value)
        self.visited[id(value)] = value  # (a Python module: chains through it were analysed)

    def klass(self, cls):
        """A user class met as a value or as the type of an object: what its methods read of their
        globals, closures and class attributes."""
        if id(cls) in self.visited or not _is_user_class(cls):
            return
        self.visited[id(cls)] = cls
        proxy = _ClassInstance(cls)
        for klass in cls.__mro__:
            if not _is_user_class(klass):
                continue
            for value in list(vars(klass).values()):
                if isinstance(value, (staticmethod, classmethod)):
                    value = value.__func__
                elif isinstance(value, property):
                    value = value.fget
                if _is_user_function(value):
                    self.function(value, proxy)

    # -- chains
    def chain(self, source, steps, end):
        if isinstance(source, _ClassInstance):
            return self._class_chain(source, steps, end)
        value, covered = source.read(), False
        if steps and not source.steps and _library_code_through(value, steps):
            self.visited[id(value)] = value  # F.relu, np.float32: guard only which module F is
            source.what = ("global" if source.kind == GLOBAL else "closed-over") + " module"
            return self.add(source)
        for index, (is_attr, key) in enumerate(steps):
            if value is ABSENT:
                return self.add(source)
            if isinstance(value, Tensor):
                end = "value"
                break  # a tensor's attributes (shape, dtype, ...) are in its key
            if is_attr:
                prop = _property(value, key)
                if prop is not None:  # what the getter reads is what is read
                    if prop.fget is not None:
                        self.function(prop.fget, source)
                    return None
            covered = is_attr and id(value) in self.covered and _covered_attribute(value, key)
            try:
                value = getattr(value, key) if is_attr else value[key]
            except Exception:  # noqa: BLE001 - guarded as absent
                value = ABSENT
            source = source.step(is_attr, key)
        if covered and not (isinstance(value, Module) and end == "value"):
            return None  # a submodule, param, buffer, flag or plain setting of a module in the parts
        return self.leaf(source, value, end)

    def _class_chain(self, proxy, steps, end):
        if not steps or not steps[0][0]:
            return None  # the instance itself: its snapshot guards it
        key = steps[0][1]
        try:
            found = inspect.getattr_static(proxy.cls, key)
        except AttributeError:
            return None  # an instance attribute
        if isinstance(found, property):
            if found.fget is not None:
                self.function(found.fget, proxy)
            return None
        if isinstance(found, (staticmethod, classmethod)):
            found = found.__func__
        if _is_user_function(found):
            self.function(found, proxy)
            return None
        if not _is_class_data(key, found):
            return None  # `__dict__`, slots and other descriptors of the instance, library callables
        root = Source(CONST, proxy.cls, None, (), proxy.cls.__name__, "class attribute")
        return self.chain(root, steps, end)

    def leaf(self, source, value, end):
        if value is ABSENT:
            return self.add(source)
        if isinstance(value, Module):
            if id(value) in self.covered:
                if end == "value":  # passed on or iterated: anything of it may be read
                    self.attributes(value, source, public_only=not _is_user_class(type(value)))
                return None
            self.add(source)
            return self.module_tree(value, source)
        if isinstance(value, Tensor):
            return self.add(source)
        if end == "len" and hasattr(type(value), "__len__"):
            return self.add(source, LEN)
        if isinstance(value, types.MethodType):
            if _is_user_function(value.__func__):
                self.add(source, METHOD)
                owner = source.parent() if source.parent() is not None and value.__self__ is source.parent().read() \
                    else source.step(True, "__self__")
                name = value.__func__.__name__
                for klass in () if isinstance(value.__self__, type) else type(value.__self__).__mro__:
                    found = klass.__dict__.get(name)
                    if _is_user_function(found):
                        self.function(found, owner)  # methods it overrides, reached through super()
                return self.function(value.__func__, owner)
            parent = source.parent()
            return self.leaf(parent, value.__self__, "value") if parent is not None else self.add(source)
        if type(value) in (types.BuiltinMethodType, types.MethodWrapperType) and not isinstance(
                getattr(value, "__self__", None), (types.ModuleType, type(None))):
            parent = source.parent()
            if parent is not None:
                return self.leaf(parent, value.__self__, "value")  # `cfg.get(...)`: the dict is read
        if isinstance(value, types.FunctionType):
            self.add(source)
            return self.function(value)
        if isinstance(value, type):
            if not source.steps and source.kind != CONST:
                source.what = ("global" if source.kind == GLOBAL else "closed-over") + " class"
            self.add(source)
            return self.klass(value)
        if _is_compiled(value):
            self.add(source)  # another compiled function: what its function reads
            return self.leaf(source.step(True, "fn"), value.fn, end)
        if isinstance(value, types.ModuleType):
            if end == "call" or not _is_user_module(value):
                return None
        self.add(source)
        if not _is_immutable(value):
            self.klass(type(value))
        return None


def _library_code_through(value, steps):
    """Do `steps` lead from a library module through library modules to library code (a
    function, class or module of ember, numpy, the standard library)? Such code is not state."""
    for is_attr, key in steps:
        if not (is_attr and isinstance(value, types.ModuleType)) or _is_user_module(value):
            return False
        value = getattr(value, key, ABSENT)
    if isinstance(value, types.FunctionType):
        return not _is_user_function(value)
    if isinstance(value, type):
        return not _is_user_class(value)
    if isinstance(value, types.ModuleType):
        return not _is_user_module(value)
    return isinstance(value, (types.BuiltinFunctionType, np.ufunc))


def _property(value, key):
    """The property `value.key` goes through, if any (its getter is what is read)."""
    if isinstance(value, (dict, list, tuple, types.ModuleType)) or key in getattr(value, "__dict__", ()):
        return None
    for klass in type(value).__mro__:
        found = vars(klass).get(key)
        if found is not None:
            return found if isinstance(found, property) else None
    return None


def _covered_attribute(module, key):
    """Is `module.key` in the module's parts (a submodule, param, buffer, flag or plain setting)?"""
    d = module.__dict__
    if key == "training" or any(key in (d.get(t) or ()) for t in ("_parameters", "_buffers", "_modules")):
        return True
    return not key.startswith("_") and key in d and is_plain_value(d[key])


def is_plain_value(value):
    """A Python value a signature part holds as it is: module settings (jit._plain_settings) and
    optimizer hyperparameters."""
    if value is None or isinstance(value, (bool, int, float, str, np.number)):
        return True
    return isinstance(value, tuple) and len(value) <= 8 and all(is_plain_value(v) for v in value)


def _is_class_data(key, value):
    return not (key.startswith("__") or callable(value) or isinstance(
        value, (staticmethod, classmethod, property, types.MemberDescriptorType, types.GetSetDescriptorType)))


def _is_compiled(value):
    """Is `value` another ember.compile'd function (whose function's reads are guarded)?"""
    from .jit import CompiledFunction  # (jit imports this module: import it when first needed)
    return issubclass(type(value), CompiledFunction)
