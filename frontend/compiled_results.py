"""What a compiled call hands back (frontend/jit.py runs the program, then this): each
mutation's new value written into its param, input or .grad (in place where anything else may
see the memory, else by adopting the program's output array), and results that were eagerly
views of an input or param made again on the caller's tensor."""
from collections import Counter
from sys import getrefcount

import numpy as np

from ember.runtime.device_arrays import copy_into
from .autograd import no_grad
from .device_tensors import copy_array
from .segments import array_of
from .tensor import Tensor
from .views import bump_version, replay


def clear_grads(segment):
    """`p.grad = None` for the tensors whose .grad the traced call set to None (a zero_grad at
    its end, after a backward outside): the program's part that is no tensor value."""
    for ref in segment.cleared_grads:
        tensor = ref()
        if tensor is not None:
            tensor.grad = None


def write_back(segment, env, params, inputs):
    """Give each mutation's new value to its target (a param, an input, or their .grad);
    returns {node: .grad tensor} for the .grad mutations.

    The target's memory is updated in place when anything besides the target may see it
    (a numpy array or view the caller holds, autograd's saved tensors). When nothing does
    (its reference count says so), the program's output array simply becomes the target's
    array and the old one becomes that output's buffer for the next call: no copy."""
    clear_grads(segment)
    if not segment.mutations:
        return {}
    grads = {}  # node -> the .grad tensor its value became (a result that is that node is that tensor)
    keep_values_of_targets(segment, env, params, inputs)
    adoptable = segment.adoptable_mutations()
    exchange = getattr(segment.runner, "exchange", None) if adoptable else None
    in_env = Counter(map(id, env.values())) if exchange is not None else None
    for m in segment.mutations:
        target = owner_of(m, params, inputs)
        data = array_of(env[m.node])
        adopt = exchange is not None and m.node in adoptable
        if m.kind.endswith("_grad"):
            grad = target.grad
            fresh = (m.kind, m.target) in segment.fresh_grads  # (as eagerly: a new .grad tensor each call)
            if fresh and m.node in grads:  # (one new tensor, the .grad of two: `w.grad = t; v.grad = t`)
                target.grad = grads[m.node]
                continue
            if grad is None or grad._data.shape != data.shape or not grad._data.flags.writeable or fresh:
                # the old .grad's memory serves the next call when nothing else holds that tensor
                # (references: target.grad, `grad`, getrefcount's argument) or its array
                spare = grad._data if fresh and grad is not None and getrefcount(grad) == 3 \
                    and getrefcount(grad._data) == 2 and owns_memory_alone(grad._data) else None
                if adopt and exchange(data, spare):
                    target.grad = Tensor._wrap(data)
                else:
                    target.grad = Tensor._wrap(copy_array(data))
                grads[m.node] = target.grad
                continue
            grads[m.node] = target = grad
        current = target._data
        # references to `current`: target._data, this frame, getrefcount's argument, env
        private = adopt and getrefcount(current) == 3 + in_env[id(current)] and owns_memory_alone(current)
        if private and current.shape == data.shape and current.dtype == data.dtype \
                and exchange(data, current):
            target._data = data
        elif current.flags.writeable and current.shape == data.shape and current.dtype == data.dtype:
            copy_into(current, data)  # through views too: memory shared with the caller sees it
        else:
            target._data = copy_array(data)
        bump_version(target)
    return grads


def keep_values_of_targets(segment, env, params, inputs):
    """A result or new value that is a mutation target's own array as it was (a param returned
    unchanged while the optimizer updates it, `b.copy_(w)` before `w.add_(1)`) is copied
    before any target is written, so it keeps that value."""
    current = set()
    for m in segment.mutations:
        target = owner_of(m, params, inputs)
        target = target.grad if m.kind.endswith("_grad") else target
        if target is not None:
            current.add(id(target._data))
    for node in segment.returned_or_written():
        value = env[node]
        if type(value) is np.ndarray and id(value) in current:
            env[node] = copy_array(value)


def owner_of(mutation, params, inputs):
    """The tensor a mutation updates (for the _grad kinds: the tensor whose .grad it sets)."""
    return params[mutation.target] if mutation.kind.startswith("param") else inputs[mutation.target]


def owns_memory_alone(array):
    """Does no other array see `array`'s memory? True if it owns it, or if it is a view of an
    array that owns it and that nothing else references (an eager temporary's transpose)."""
    base = array.base
    if base is None:
        return True
    # references to base: array.base, this frame, getrefcount's argument
    return type(base) is np.ndarray and base.flags.owndata and getrefcount(base) == 3


def returned_view(source, chain, detached, creation):
    """A result that eagerly was a view of an input or param, made again on the caller's tensor:
    detached, or in the mode it was made in (a view made under no_grad passes no gradient)."""
    if detached:
        return replay(chain, source).detach()
    if creation is not None and creation[0] == "no_grad":
        with_history = creation[3] and chain
        with no_grad():
            view = replay(chain[:-1] if with_history else chain, source)
        return replay(chain[-1:], view) if with_history else view  # (its last step taken in grad mode)
    view = replay(chain, source)
    if creation is not None:
        view._creation, view._output_nr, view._created_by = creation[:3]
    return view


def grads_as_views(segment, params, inputs):
    """`w.grad = x`, or a view of x, for an argument, param or closed-over x (Tracer.finish's
    grads_are_views): each compiled call sets the caller's tensor itself, or that view of it, as
    the .grad, after the write-back, as eagerly (a DDP-style flat buffer: a write through one
    shows in the other)."""
    for kind, target, (source_kind, source, chain, detached, creation) in segment.grads_are_views:
        owner = params[target] if kind == "param" else inputs[target]
        tensor = params[source] if source_kind == "param" else inputs[source]
        owner.grad = tensor if not chain and not detached else returned_view(tensor, chain, detached, creation)


def returned_view_of_mutated(graph, outputs, watched):
    """'<output path>, which shares memory with <tensor> that the call updates in place' for a
    returned tensor (not the tensor's new value itself) sharing memory with an input, param or
    closed-over tensor the trace mutates, else None."""
    tensors = {(kind, target): tensor for kind, target, tensor in watched}
    for m in graph.mutations:
        tensor = tensors.get((m.kind, m.target))
        if tensor is None:
            continue
        for (path, out), node in zip(outputs, graph.outputs):
            if node != m.node and np.shares_memory(out._data, tensor._data):
                what = f"argument {m.target}" if m.kind == "input" else repr(m.target)
                return f"{path}, which shares memory with {what} that the call updates in place"
    return None
