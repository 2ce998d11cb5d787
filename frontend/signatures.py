"""What a compiled function's cache key is made of (ember.compile's signature parts) and how a
change of signature is explained in the compile report ("dim 0 of x: 8 -> 16").

frontend/jit.py builds signatures from these parts on every call; the Python state the function
reads comes from python_guards (the "python" parts)."""
import functools
import math

import numpy as np

from .python_guards import PlainValue, explain_change, explain_settings_change, is_plain_value
from .tensor import Tensor


def explain_signature_change(fn, old, new):
    """`dim 0 of x: 8 -> 16`, `lr: 0.1 -> 0.2`, `training: True -> False`, ..."""
    old_parts = {_part_key(p): p for p in old}
    changes = []
    for part in new:
        key = _part_key(part)
        before = old_parts.get(key)
        if before == part or part[0] == "scalars":  # (runtime scalars explain their own tests)
            continue
        if before is None:
            if part[0] == "python":
                changes.append(f"{part[2]} {part[1]}" + (f" (read by {part[3]})" if part[3] else "")
                               + " is read now (new code reached)")
            elif part[0] == "refused":
                changes.append(f"{part[1]} (not guarded: runs eagerly)")
            else:
                changes.append(f"new argument {input_name(fn, key[1])}" if part[0] in (
                    "tensor", "value", "object") else f"new {' '.join(map(str, key))}")
            continue
        kind = part[0]
        name = input_name(fn, part[1]) if kind in ("tensor", "value", "object") else kind
        if kind == "tensor":
            _, _, shape, dtype, grad = part
            _, _, old_shape, old_dtype, old_grad = before
            if len(shape) != len(old_shape):
                changes.append(f"rank of {name}: {len(old_shape)} -> {len(shape)}")
            else:
                changes += [f"dim {i} of {name}: {a} -> {b}" for i, (a, b) in enumerate(zip(old_shape, shape)) if a != b]
            if dtype != old_dtype:
                changes.append(f"dtype of {name}: {old_dtype} -> {dtype}")
            if grad != old_grad:
                changes.append(f"requires_grad of {name}: {old_grad} -> {grad}")
        elif kind == "value":
            changes.append(f"{name}: {before[3]!r} -> {part[3]!r} (Python values are specialised)")
        elif kind == "training":
            owner = "" if part[1] == "self" else f" of {part[1]}"
            changes.append(f"training flags{owner}: {before[2]} -> {part[2]}")
        elif kind == "grad":
            changes.append(f"grad mode: {before[1]} -> {part[1]}")
        elif kind == "devices":
            changes.append("tensors moved between the CPU and the GPU (arguments, then parameters and buffers)")
        elif kind == "tf32":
            changes.append(f"TF32 switches (matmul, convolution): {before[1]} -> {part[1]}")
        elif kind == "state":
            owner = "" if part[1] == "self" else f" of {part[1]}"
            changes.append(f"parameters or buffers{owner} were replaced or changed requires_grad/dtype/hooks")
        elif kind == "settings":
            changes.append(f"module settings of {part[1]} changed: {explain_settings_change(before[2], part[2])}")
        elif kind == "optimizer":
            changes.append(f"hyperparameters of {part[1]} changed (e.g. lr from a scheduler): "
                           f"{_hyperparameter_changes(before[3], part[3])}")
        elif kind == "argument autograd":
            changes.append("which arguments that require grad are leaves, or which arguments have a .grad: "
                           f"{before[1]} -> {part[1]}")
        elif kind == "optimizer state":
            changes.append(f"{part[1]} holds other state tensors, params or step hooks (load_state_dict, a new "
                           f"param list, a hook registered or removed, state made on a step)")
        elif kind == "python":
            _, label, what, reader, key = part
            changes.append(explain_change(what, label, reader, before[4], key))
        elif kind == "object":
            changes.append(explain_change("argument", name, "", before[3], part[3]))
        elif kind == "refused":
            changes.append(f"{part[1]} (not guarded: runs eagerly)")
        elif kind == "aliasing":
            changes.append(f"which arguments share memory: {before[1]} -> {part[1]}")
        else:
            changes.append(f"{name} changed")
    return "; ".join(dict.fromkeys(changes)) or "new call signature"


def _part_key(part):
    """Signature parts about an argument or a named piece of state are keyed by (kind, name);
    Python state by (kind, path, what it is, which function reads it)."""
    if part[0] == "python":
        return part[:4]
    return part[:1] if part[0] in ("grad", "aliasing", "tf32", "devices") else part[:2]


def _is_plain(value):
    return is_plain_value(value)


def _plain_settings(module):
    """A module's plain attributes (Dropout.p, flags a forward reads) and its forward hooks: the
    module parts cache them until ember.nn's settings version moves."""
    settings = tuple((k, PlainValue(v)) for k, v in vars(module).items() if not k.startswith("_") and k != "training"
                     and _is_plain(v))
    hooks = tuple(hook for table in ("_forward_pre_hooks", "_forward_hooks")
                  for hook in (vars(module).get(table) or {}).values())
    return settings + ((("forward hooks", hooks),) if hooks else ())


def _aliasing(flat):
    """For each tensor argument, the index of the first earlier one sharing its memory (or -1):
    a program traced with distinct arguments is wrong for aliased ones, and the other way round."""
    if len(flat) < 2:
        return (-1,) * len(flat)
    pattern, seen = [], {}
    for i, (_, t) in enumerate(flat):
        base = t._data
        while base.base is not None and isinstance(base.base, np.ndarray):
            base = base.base
        key = (base.__array_interface__["data"][0], base.nbytes)
        if key in seen:
            pattern.append(seen[key])
        else:
            seen[key] = i
            pattern.append(-1)
    return tuple(pattern)




@functools.lru_cache(maxsize=None)
def _positional_paths(count):
    """flatten_tensors' paths of the tensors in ((t0, t1, ...), {})."""
    return tuple(f"args[0][{i}]" for i in range(count))


@functools.lru_cache(maxsize=None)
def _positional_containers(count):
    """_leaf_signature's container parts for ((t0, ..., t{count-1}), {}): outer, args, kwargs."""
    return (("container", "args", "tuple", 2), ("container", "args[0]", "tuple", count),
            ("container", "args[1]", "dict", ()))


def _leaf_signature(value, path, parts, object_key):
    """Signature parts of an argument: tensors by shape, dtype and requires_grad, containers by
    their length or keys, Python values by value, other objects by `object_key(value, path)` (the
    readable state of the object, python_guards.PythonState.argument_key)."""
    if isinstance(value, Tensor):
        data = value._data
        parts.append(("tensor", path, data.shape, data.dtype, value.requires_grad))
    elif isinstance(value, (tuple, list)):
        parts.append(("container", path, type(value).__name__, len(value)))
        for i, v in enumerate(value):
            _leaf_signature(v, f"{path}[{i}]", parts, object_key)
    elif isinstance(value, dict):
        parts.append(("container", path, "dict", tuple(value.keys())))
        for k, v in value.items():
            _leaf_signature(v, f"{path}[{k!r}]", parts, object_key)
    elif type(value) is float:
        parts.append(("value", path, "float", signature_float(value)))
    elif value is None or isinstance(value, (bool, int, float, str, bytes, np.number)):
        parts.append(("value", path, type(value).__name__, value))
    else:  # an object argument: what code can read of it
        parts.append(("object", path, type(value).__name__, object_key(value, path)))


def signature_float(value):
    """A float as a signature holds it: itself, except -0.0 and nan, which compare equal to 0.0
    and unequal to themselves (a program traced at 0.0 must not serve -0.0: 1 / (x * s))."""
    if value != value:
        return "nan"
    if value == 0 and math.copysign(1.0, value) < 0:
        return "-0.0"
    return value


_ADVICE = (
    ("guard at ", "the branch on that line reads a tensor's value: express it with tensor ops (torch.where, "
                  "masks) to keep one program"),
    ("rank of ", "call it with tensors of one rank"),
    ("(dynamic from now on)", "expected once per dim: from now on one program serves every size of it "
                              "(ember.compile(..., dynamic=False) keeps shapes static)"),
    (" -> 1;", "sizes 0 and 1 get programs of their own (as in PyTorch): expected once per such size"),
    (" -> 0;", "sizes 0 and 1 get programs of their own (as in PyTorch): expected once per such size"),
    ("dim ", "each new size is traced and compiled again: the dim stays static (the compile report's "
             "dynamic dims say why), so keep its size fixed (pad the last batch, or DataLoader(drop_last=True))"),
    ("dtype of ", "convert the inputs to one dtype before the call"),
    ("requires_grad of ", "keep requires_grad of each argument the same from call to call"),
    ("runtime scalars", "expected once: a float that changes between calls is an input of the program after "
                        "its first change"),
    ("Python values are specialised", "a Python number is baked into the program: pass it as a tensor if it "
                                      "changes often"),
    ("training flags", "train() and eval() each get a program: expected once per mode"),
    ("grad mode", "no_grad and grad mode each get a program: expected once per mode"),
    ("hyperparameters of", "scalar hyperparameters are baked into the program: a scheduler that changes lr "
                           "every step recompiles every step; change it less often"),
    ("the traced program changed", "expected once, when the first step creates the optimizer's state"),
    ("module settings", "set module attributes before the first call, not between calls"),
    ("whose .grad the program read", "expected once per .grad state (with and without gradients): each "
                                     "state's program is kept"),
)


def recompile_advice(reason):
    """How to avoid a recompile, from the reason the report gives."""
    for marker, advice in _ADVICE:
        if marker in reason + ";":  # (";" ends each change: " -> 1;" is a size 1, not 128)
            return advice
    return "keep what the reason names the same from call to call"


def _hyperparameter_changes(before, after):
    """Only what changed between two optimizers' hyperparameters (one tuple of (name, value) pairs
    per param group): `lr 0.1 -> 0.05` (with the group where there are several)."""
    if not (isinstance(before, tuple) and isinstance(after, tuple) and len(before) == len(after)):
        return f"{before} -> {after}"
    changes = []
    for number, (old, new) in enumerate(zip(before, after)):
        try:
            old_values, new_values = dict(old), dict(new)
        except (TypeError, ValueError):
            return f"{before} -> {after}"
        group = f" (group {number})" if len(before) > 1 else ""
        names = dict.fromkeys([*old_values, *new_values])  # (in order, once)
        changes += [f"{name} {old_values.get(name)!r} -> {new_values.get(name)!r}{group}"
                    for name in names if old_values.get(name) != new_values.get(name)]
    return ", ".join(changes) or f"{before} -> {after}"


def input_name(fn, path):
    """`args[0][0]` -> the parameter's name (`x`) when the signature says so."""
    import inspect
    target = fn.forward if hasattr(fn, "forward") and hasattr(fn, "named_parameters") else fn
    try:
        params = [p for p in inspect.signature(target).parameters.values() if p.kind in (p.POSITIONAL_ONLY,
                                                                                   p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return path
    if path.startswith("args[0]["):
        rest = path[len("args[0]["):]
        index, _, tail = rest.partition("]")
        if index.isdigit() and int(index) < len(params):
            return params[int(index)].name + tail
    if path.startswith("args[1]['"):
        return path[len("args[1]['"):].replace("']", "", 1)
    return path
