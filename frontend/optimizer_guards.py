"""Guards on what an optimizer holds, for ember.compile's signatures (frontend/python_guards.py).

A compiled program reads an optimizer's state tensors by identity: they are closed-over params
of the program. Eager mode reads `opt.state[p][key]` afresh at every step. So the signature
holds, beside the hyperparameters, which tensors (and plain values) the state holds, which
params each group updates, and the step hooks: after `load_state_dict`, a reset `opt.state`,
a new param list or a hook registered or removed, the next call traces again instead of
running a program that updates tensors the optimizer no longer holds.

A trace whose step made missing state eagerly, outside its program (Optimizer._states_for),
is the program of the signature after the call, when that state is all that changed
(`holds_after_the_call`): the first training step compiles at its second call.
"""
from .nn.parameter import Parameter
from .python_reads import is_plain_value
from .tensor import Tensor

_TENSOR_TYPES = {Tensor, Parameter}


MAX_CONTAINER = 16  # items of a list, tuple or dict in the state guarded by value


def _value_key(value, depth=0):
    if isinstance(value, Tensor):
        return ("tensor", id(value))
    if is_plain_value(value):
        return value
    if depth < 2 and type(value) in (list, tuple) and len(value) <= MAX_CONTAINER:
        return (type(value).__name__, tuple(_value_key(v, depth + 1) for v in value))
    if depth < 2 and type(value) is dict and len(value) <= MAX_CONTAINER:
        return ("dict", tuple((k, _value_key(v, depth + 1)) for k, v in value.items() if is_plain_value(k)))
    return ("object", type(value).__name__)  # (LBFGS's long lists of tensors: read by the code, not guarded)


def state_items_key(state, tensors=_TENSOR_TYPES):
    """The key of one param's state: its entries, a tensor by identity, a plain value by value
    (on every compiled call, for every param: written for speed)."""
    return tuple([(key, ("tensor", id(value)) if type(value) in tensors else _value_key(value))
                  for key, value in state.items()])


def state_key(optimizer, made=None):
    """The key of an optimizer's state; `made` ({id(param): state_items_key}) leaves out the
    params whose state is still exactly what a trace made outside its program."""
    entries = []
    for param, state in getattr(optimizer, "state", {}).items():
        if not state:  # (a defaultdict's empty entry: no state yet)
            continue
        items = state_items_key(state)
        if made is not None and made.get(id(param)) == items:
            continue
        entries.append((id(param), items))
    return tuple(entries)


def hook_ids(tensor):
    """Which gradient and post-accumulate-grad hooks a tensor has (None: none), for signatures."""
    hooks, after = tensor._hooks, tensor._post_accumulate_hooks
    if not hooks and not after:
        return None
    return tuple(map(id, hooks or ())), tuple(map(id, after or ()))


def optimizer_state_part(optimizer, label):
    """The signature part: state, each group's params (and their gradient hooks), step hooks."""
    groups = tuple(tuple((id(p), hook_ids(p)) for p in group["params"]) for group in optimizer.param_groups)
    hooks = (tuple(getattr(optimizer, "_step_pre_hooks", ())), tuple(getattr(optimizer, "_step_post_hooks", ())))
    return ("optimizer state", label, id(optimizer), state_key(optimizer), groups, hooks)


def holds_after_the_call(tracer, before, after):
    """Is the program traced under signature `before` the program of `after`, the signature
    after the call? Yes where they differ only in optimizer state, and there only by the
    state the trace made outside its program, unchanged since."""
    if len(before) != len(after):
        return False
    for old, new in zip(before, after):
        if old == new:
            continue
        if new[0] != "optimizer state" or old[0] != new[0] or old[1:3] != new[1:3] or old[4:] != new[4:]:
            return False
        optimizer, made = tracer.state_made_outside.get(new[2], (None, None))
        if optimizer is None or state_key(optimizer, made) != old[3]:
            return False
    return True


def state_changed_by_call(before, after):
    """The first optimizer state entry that existed before the call and holds another value
    after it (`state['buf'] = buf * m + g`, `state['n'] += 1`), as `opt.state[<param 2>]['buf']`;
    None where the call only added state. A compiled program cannot replay such a change: the
    function runs eagerly (ember.compile)."""
    old_parts = {part[2]: part for part in before if part[0] == "optimizer state"}
    for new in after:
        old = old_parts.get(new[2]) if new[0] == "optimizer state" else None
        if old is None or old[3] == new[3]:
            continue
        now = dict(new[3])
        for number, (param, items) in enumerate(old[3]):
            entries = dict(now.get(param, ()))
            for key, value in items:
                if key in entries and entries[key] != value:
                    return f"{new[1]}.state[<param {number}>][{key!r}]"
    return None


class StateRebound(str):
    """What optimizer state entry a traced call replaced (optimizer_guards.state_changed_by_call)."""
