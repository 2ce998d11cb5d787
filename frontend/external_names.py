"""Names of the tensors a traced function reads without making them or being passed them.

A trace binds such a tensor as a named param of its program (frontend/tracer.py `_external`):
`net.fc1.weight` for a module's weight and `opt.state[0].exp_avg` for optimizer state, found
through the function's globals and closure (`external_names`), or `external_<n>` with one
number per tensor for the whole compiled function (`ExternalNumbers`), so that two traces of
one tensor agree on its name and two tensors never share one in a tree of segments. The
`.grad` of a param is bound by path instead (`GradOf`): that param's `.grad` at each call.
"""
import weakref

from .tensor import Tensor
from .views import memory_owner


class ExternalNumbers:
    """One number per tensor, for as long as it lives, across every trace of a compiled function."""

    def __init__(self):
        self.by_id = {}  # id(tensor) -> (weak reference, number)
        self.count = 0

    def number(self, tensor):
        entry = self.by_id.get(id(tensor))
        if entry is None or entry[0]() is not tensor:  # (a new tensor, perhaps at a dead one's address)
            entry = self.by_id[id(tensor)] = (weakref.ref(tensor), self.count)
            self.count += 1
        return entry[1]


class GradOf:
    """Binds a closed-over param's `.grad` by path: the param's `.grad` at each call (the trace
    read that attribute, not one tensor object). The param is the program's param of that name,
    or where the program reads only its `.grad`, the tensor itself (a weak reference)."""

    __slots__ = ("owner", "tensor")

    def __init__(self, owner, tensor):
        self.owner = owner
        self.tensor = weakref.ref(tensor)

    def __call__(self, params):
        owner = params.get(self.owner)
        if owner is None:
            owner = self.tensor()
        return None if owner is None else owner._grad


class HeldGrad:
    """A closed-over tensor that was (the base of) the `.grad` of another tensor when traced
    (read before that tensor: zero_grad(set_to_none=False) first): called like a weak
    reference, it gives the tensor while each such `.grad` is still the tensor it was, else
    None (the call traces again: after `w.grad = other` or `del w.grad`)."""

    __slots__ = ("tensor", "conditions")

    def __init__(self, tensor, conditions):
        self.tensor = weakref.ref(tensor)
        self.conditions = [(weakref.ref(owner), weakref.ref(grad)) for owner, grad in conditions]

    def __call__(self):
        for owner, grad in self.conditions:
            owner, grad = owner(), grad()
            if owner is None or grad is None or owner.grad is not grad:
                return None
        return self.tensor()


def held_external(name, tensor, tracer):
    """How a program holds the closed-over tensor `tensor` its trace (`tracer`) named `name`:
    weakly, and where it was (the base of) the .grad of another tensor, only while it still
    is (HeldGrad)."""
    conditions = list(tracer.grad_conditions.get(name, ()))
    conditions += [(owner, tensor) for owner in tracer.naming.grad_owners.get(id(tensor), ()) if owner.grad is tensor]
    return HeldGrad(tensor, conditions) if conditions else weakref.ref(tensor)


class ExternalNaming:
    """One trace's names: from `external_names(fn)`, looked up again once after optimizer
    state was made outside the program during the trace (`stale`), else numbered."""

    def __init__(self, fn=None, numbers=None):
        self.fn = fn
        reached = reached_tensors(fn) if fn is not None else []
        self.names = _names_of(reached)  # id(tensor) -> name
        # id(a .grad) -> [the tensors it is the .grad of], among those `fn` reaches (see HeldGrad)
        self.grad_owners = {}
        self.reached = [t for _, t in reached]  # (their .grad at the start: see jit's entry state)
        for _, t in reached:
            if t._grad is not None:
                owners = self.grad_owners.setdefault(id(t._grad), [])
                if all(owner is not t for owner in owners):
                    owners.append(t)
        self.numbers = numbers if numbers is not None else ExternalNumbers()
        self.stale = False

    def name(self, tensor):
        name = self.names.get(id(tensor))
        if name is None and self.stale and self.fn is not None:
            self.stale = False
            self.names = {**external_names(self.fn), **self.names}
            name = self.names.get(id(tensor))
        return name or f"external_{self.numbers.number(tensor)}"


def cleared_grads(tracer):
    """Weak references to the tensors whose .grad a traced call set, and left None
    (compiled_results.clear_grads replays that): any tensor, held by a module, an optimizer, a
    list or a dict alike (Tracer.wrote_grad); one that had no .grad when traced may have one at
    a later call. An argument's is refused: the next call may pass another tensor (the signature
    runs eagerly)."""
    refs = []
    arguments = set(tracer.graph.inputs)
    for t in tracer.grads_written.values():
        if t._grad is not None:
            continue
        if tracer.known.get(id(t)) in arguments:
            tracer.eager_reason = tracer.eager_reason or "sets the .grad of an argument to None"
        else:
            refs.append(weakref.ref(t))
    return refs


def module_state(module):
    """Named params and buffers of a module (params first), the tensors a trace binds by name."""
    if module is None:
        return []
    seen, state = set(), []
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t is not None and id(t) not in seen:
            seen.add(id(t))
            state.append((name, t))
    return state




class ReachedState:
    """The globals and closure cells a function's code reads, read afresh on each `values()`
    (modules, optimizers, tensors, plain values; functions, classes and code modules skipped).
    ember.compile puts them in its signature; the tracer names closed-over tensors after them."""

    def __init__(self, fn):
        code = getattr(fn, "__code__", None)
        if code is None or hasattr(fn, "named_parameters"):
            self.globals, self.cells, self.names = {}, {}, ()
            return
        self.globals = getattr(fn, "__globals__", {})
        self.cells = dict(zip(code.co_freevars, getattr(fn, "__closure__", None) or ()))
        self.names = tuple(dict.fromkeys(code.co_names + code.co_freevars))

    def values(self):
        for name in self.names:
            cell = self.cells.get(name)
            if cell is not None:
                try:
                    value = cell.cell_contents
                except ValueError:
                    continue
            elif name in self.globals:
                value = self.globals[name]
            else:
                continue
            if isinstance(value, type) or callable(value) and not hasattr(value, "named_parameters"):
                continue  # functions, classes and modules of code are not state
            yield name, value


def external_names(fn):
    """Readable names for tensors a function reaches through its globals and closure:
    `net.fc1.weight` for a module's params, `opt.state[0].momentum_buffer` for optimizer state."""
    return _names_of(reached_tensors(fn))


def _names_of(reached):
    names = {}
    for name, t in reached:
        names.setdefault(id(t), name)
    return names


def reached_tensors(fn):
    """(name, tensor) for the tensors a function reaches through its globals and closure,
    modules' first (a weight is `net.fc1.weight`, not `opt.param[0]`)."""
    values = list(ReachedState(fn).values())
    found = []
    for var, value in values:
        if hasattr(value, "named_parameters") and hasattr(value, "named_buffers"):
            found += [(f"{var}.{pname}", t) for pname, t in module_state(value)]
    for var, value in values:
        if hasattr(value, "param_groups") and hasattr(value, "state"):
            params = [p for group in value.param_groups for p in group["params"]]
            for i, p in enumerate(params):
                found.append((f"{var}.param[{i}]", p))
                found += [(f"{var}.state[{i}].{key}", t) for key, t in value.state.get(p, {}).items()
                          if isinstance(t, Tensor)]
        elif isinstance(value, Tensor):
            found.append((var, value))
    return found


def grads_apart(watched, grads_of):
    """(Were the `.grad`s a trace binds by path (`grads_of`) apart in memory from each other and
    from every other tensor the program binds (`watched`: (kind, name, tensor))? frontend/
    bound_grads.py checks each call against that; the roots of the memory that two or more
    distinct `.grad`s of watched tensors share: a `.grad` the trace assigned there is no fresh
    tensor; one tensor that is the .grad of two is, one for both: compiled_results.write_back)."""
    def root(t):  # (as the tracer sees sharing: memory shared otherwise, by `q.data = p.grad`, is
        return t if t._base is None else t._base  # not apart for bound_grads, whose calls trace again)
    by_path = [id(root(t)) for _, name, t in watched if name in grads_of]
    others = {id(root(t)) for _, name, t in watched if name not in grads_of}
    counts = {}  # memory owner -> ids of the distinct .grad tensors over it
    for _, _, t in watched:
        if t._grad is not None:
            counts.setdefault(id(memory_owner(t._grad._data)), set()).add(id(t._grad))
    apart = len(set(by_path)) == len(by_path) and others.isdisjoint(by_path)
    return apart, {key for key, grads in counts.items() if len(grads) > 1}
