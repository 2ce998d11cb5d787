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
from .python_reads import is_plain_value
from .tensor import Tensor


def _value_key(value):
    if isinstance(value, Tensor):
        return ("tensor", id(value))
    if is_plain_value(value):
        return value
    return ("object", type(value).__name__)  # (LBFGS's lists of tensors: read by the code, not guarded)


def state_items_key(state):
    """The key of one param's state: its entries, a tensor by identity, a plain value by value."""
    return tuple((key, _value_key(value)) for key, value in state.items())


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


def optimizer_state_part(optimizer, label):
    """The signature part: state, each group's params (and their gradient hooks), step hooks."""
    groups = tuple(tuple((id(p), tuple(map(id, p._hooks or ()))) for p in group["params"])
                   for group in optimizer.param_groups)
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
