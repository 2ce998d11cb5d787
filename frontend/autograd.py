"""Eager autograd: a tape of nodes, walked in reverse with the primitives' VJP rules.

Each primitive application on a tensor that requires grad gets a `Node` (the tensor's
`grad_fn`) holding the primitive, its attrs, its input tensors and its output. `backward`
orders the nodes reachable from the roots and applies each VJP once, summing fan-out.
The VJP rules come from ember.ops, so the autodiff pass uses the very same derivatives.
"""
import itertools
import weakref

import numpy as np

from .dispatch import STATE, ModifiedTensorError, run_eagerly
from .saved_values import FreedValue, ModifiedValue  # noqa: F401 (ModifiedValue: re-exported)
from .grad_mode import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from .grad_mode import _no_recording  # noqa: F401  (re-exported: ember.autograd's grad-mode names)
from .backward_callbacks import current_backward, final_callbacks, queue_callback  # noqa: F401  (re-exported)
from .views import bump_version, memory_owner, version_counter
from .device_tensors import copy_array, like
from .device_ops import add_on_device
from ember.runtime.device_arrays import copy_into, device_of
from .gradient_sums import SLICE, accumulate_owned, add_into_slice


def _camel(name):
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))  # (a Function's MyFn stays MyFn)


_sequence = itertools.count()


class Node:
    """One recorded primitive application: the `grad_fn` of its output tensor."""

    __slots__ = ("prim", "attrs", "inputs", "saved", "out", "out_ref", "out_version",
                 "freed", "saves_no_values", "hooks", "retain", "out_token", "checked", "seq", "__weakref__")

    @staticmethod
    def attach(result, prim, operands, attrs):
        node = Node()
        node.seq = next(_sequence)  # creation order: the engine runs later nodes first
        node.prim = prim
        node.attrs = attrs
        node.inputs = operands
        # each input as it was: its array, history, requires_grad and version (an in-place op may
        # later rebind the tensor object to a new value; the VJP must see this one). (A plain
        # loop: the hot path of eager autograd. Whether a gradient flows back into an input,
        # has_grad_edge, is decided at backward.)
        saved = []
        current = STATE.inplace_target  # while an in-place op computes: its old value (original_self)
        for t in operands:
            counter = t._vc
            saved.append((t._data if t is not current else copy_array(t._data), t.grad_fn, t.requires_grad,
                          0 if counter is None else counter.value))
        node.saved = saved
        node.out = result._data
        # the output tensor, weakly: to check it was not overwritten before a VJP reads it
        node.out_ref = weakref.ref(result) if prim.vjp_uses_output else None
        node.out_version = result._version if prim.vjp_uses_output else 0
        node.freed = False
        node.saves_no_values = False  # (a composite's node standing for a PyTorch op that saves none: mean's)
        node.hooks = None
        node.checked = None  # see saves_like_pytorch
        node.retain = False
        node.out_token = None  # the output's IR value while tracing
        result.grad_fn = node
        result.requires_grad = True
        return node

    def name(self):
        return f"{_camel(self.prim.name)}Backward0"

    def __repr__(self):
        return f"<{self.name()} object at {hex(id(self))}>"

    @property
    def next_functions(self):
        return tuple((fn if fn is not None else (edge_of(t) if requires_grad and has_grad_edge(t) else None), 0)
                     for t, (_, fn, requires_grad, _) in zip(self.inputs, self.saved))

    def unpack_inputs(self, freed=False):
        """The inputs as they were when this node was recorded. A tensor whose history changed
        since (an in-place op rebased it) is replaced by a stand-in with the old history; one
        whose memory was overwritten in place stands in with a value that raises PyTorch's
        "modified by an inplace operation" error if, and only if, the VJP reads it (shapes and
        dtypes stay readable: add's VJP needs no values, mul's does). After a backward without
        retain_graph (`freed`) every input stands in with a value that raises PyTorch's "backward
        through the graph a second time" error if read: PyTorch frees what a node saved, and a
        node that saved nothing (a slice, a sum, an add) runs again."""
        values = []
        for i, (t, (data, fn, requires_grad, version)) in enumerate(zip(self.inputs, self.saved)):
            if requires_grad and fn is None and t._creation == "no_grad":
                requires_grad = False  # a view made under no_grad: no gradient flows into it (has_grad_edge)
            if freed and not self.saves_no_values:
                data = FreedValue(data, f"{self.name()}: {BACKWARD_TWICE}")
            elif t._data is data:
                if t._version != version:
                    data = ModifiedValue(data, _stale_view_message(t) or
                                         modified_message(t, self, f"input {i}", expected=version))
                elif t.grad_fn is fn and t.requires_grad is requires_grad:
                    values.append(t)
                    continue
            elif t._version != version and memory_owner(t._data) is memory_owner(data):
                # the same memory under a new array (t_(), transpose_() rearranged it), written since
                data = ModifiedValue(data, modified_message(t, self, f"input {i}", expected=version))
            stand_in = Tensor._wrap(data)
            stand_in.grad_fn = fn
            stand_in.requires_grad = requires_grad
            values.append(stand_in)
        return values

    def output_written_into(self, tensor):
        """An in-place op wrote this node's output into `tensor`'s memory (the tensor it modified,
        possibly a view): a VJP that reads the output reads that memory, and raises if a later
        write moved the version counter it shares with its base and views, as PyTorch's saved
        result does. A view is watched through a stand-in holding its array and counter (the
        view itself is often a temporary, `y[0].exp_()`). The output a composite op checks
        (saves_like_pytorch) is watched in `tensor` from now on, likewise."""
        if self.checked is not None:
            watch = (version_counter(tensor), tensor._version, "output 0", weakref.ref(tensor))
            self.checked = [watch if entry[2] == "output 0" else entry for entry in self.checked]
        if not self.prim.vjp_uses_output:
            if tensor._base is None and self.out_ref is not None:
                self.out_ref = weakref.ref(tensor)  # retain_grad's tensor
            return
        self.out = tensor._data
        self.out_version = tensor._version
        if tensor._base is None:
            self.out_ref = weakref.ref(tensor)
        else:
            watch = Tensor._wrap(tensor._data)
            watch._vc = tensor._vc
            self.out_ref = _Held(watch)

    def saved_output(self, create_graph, freed=False):
        """The output as a tensor for VJP rules; linked to this node when differentiating twice
        (after a backward without retain_graph, a value that raises if read: `unpack_inputs`)."""
        alive = self.out_ref() if self.out_ref is not None else None
        value = self.out
        if freed:
            value = FreedValue(value, f"{self.name()}: {BACKWARD_TWICE}")
        elif alive is not None and alive._version != self.out_version and (
                alive._data is value or memory_owner(alive._data) is memory_owner(value)):
            value = ModifiedValue(value, modified_message(alive, self, "output 0", self.out_version))
        out = Tensor._wrap(value)
        out._node = self.out_token
        if create_graph:
            out.grad_fn = self
            out.requires_grad = True
        return out



class _Held:
    """A strong reference called like a weakref (a `Node.out_ref` that must outlive its tensor)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __call__(self):
        return self.value


class AccumulateGrad:
    """The terminal node of a leaf tensor that requires grad (torch's AccumulateGrad)."""

    __slots__ = ("variable", "__weakref__")

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "AccumulateGrad"

    next_functions = ()

    def __repr__(self):
        return f"<AccumulateGrad object at {hex(id(self))}>"


def has_grad_edge(t):
    """Does a gradient flow from an op back into `t`? Not when it needs none, and not for a view
    made under no_grad of a tensor that requires grad: such a view says requires_grad=True but
    has no history and no .grad of its own (PyTorch gives it no edge, so its users save nothing
    for it)."""
    return t.requires_grad and (t.grad_fn is not None or t._creation != "no_grad")


def edge_of(t):
    if t.grad_fn is not None:
        return t.grad_fn
    if t.requires_grad:
        acc = t._accumulator
        if acc is None:
            acc = t._accumulator = AccumulateGrad(t)
        return acc
    return None


def _stale_view_message(tensor):
    """PyTorch's error for unpacking a saved view whose history can no longer be read (an
    output of split/chunk/unbind or a no_grad view whose memory was written), else None."""
    if type(tensor) is not StaleView:
        return None
    try:
        tensor.grad_fn
    except RuntimeError as error:
        return str(error)
    return None


def modified_message(tensor, node, which, expected):
    from .printing import type_name
    return ("one of the variables needed for gradient computation has been modified by an inplace "
            f"operation: [{type_name(tensor)} {list(tensor.shape)}], which is {which} of {node.name()}, "
            f"is at version {tensor._version}; expected version {expected} instead. Hint: do the "
            "in-place update on a clone, or after backward().")


def raise_modified(tensor, node, which, expected=None):
    expected = tensor._version - 1 if expected is None else expected
    raise ModifiedTensorError(modified_message(tensor, node, which, expected))


def saves_like_pytorch(result, inputs=(), output=False):
    """A composite op built from primitives stands for one PyTorch op whose backward saves
    `inputs` (and its output, with output=True). Its last node checks their versions at backward,
    so an in-place write to them since raises PyTorch's error, as for the op it stands for (the
    primitives' own VJPs may not read those values)."""
    node = result.grad_fn
    if node is not None and STATE.grad_enabled:
        current = STATE.inplace_target  # (an in-place op keeps the old value itself: original_self)
        saved = [(t, f"input {i}") for i, t in enumerate(inputs) if isinstance(t, Tensor) and t is not current]
        if output:
            saved.append((result, "output 0"))
        # counters and weak references: the node must not keep its own output alive (a cycle)
        node.checked = (node.checked or []) + [(version_counter(t), t._version, which, weakref.ref(t))
                                               for t, which in saved]
    return result


def saves_no_values_like_pytorch(result):
    """A composite standing for one PyTorch op that saves no tensors (mean: a sum, then a division
    by the count): its last node runs again after a freeing backward, though it reads its divisor."""
    node = result.grad_fn
    if isinstance(node, Node):
        node.saves_no_values = True
    return result


class _FailingBackward:
    """Quacks like a Primitive: its VJP raises the given error (see fails_backward)."""

    name = "modified_saved_value"
    vjp_uses_output = False
    kind = "opaque"

    def __init__(self, message):
        self.message = message

    def vjp(self, g, out, *inputs):
        if self.message == BACKWARD_TWICE:
            raise RuntimeError(self.message)
        raise ModifiedTensorError(self.message)


class _NoGradient:
    """Quacks like a Primitive with no operands: a history that passes no gradient anywhere."""

    name = "no_gradient"
    vjp_uses_output = False
    kind = "opaque"

    def vjp(self, g, out):
        return ()


def without_gradient_edges(tensor):
    """`tensor`'s value, requiring grad with a history that leads nowhere: as an op's result in
    PyTorch whose operands all require grad without an edge (views made under no_grad)."""
    result = Tensor._wrap(tensor._data)
    Node.attach(result, _NoGradient(), [], {})
    return result


def fails_backward(tensor, message):
    """`tensor`'s value, whose backward raises `message`: a compiled call whose eager twin would
    have overwritten a value saved for backward gives its caller the same error."""
    result = Tensor._wrap(tensor._data)
    Node.attach(result, _FailingBackward(message), [tensor], {})
    return result


def _kept_values(node):
    """Must a freed node's backward raise before it runs? A saves_like_pytorch composite's and a
    compiled program's (`keeps_values`) must; other backwards raise when they read a stand-in."""
    if node.checked:
        return True
    keeps = getattr(node.prim, "keeps_values", None)
    return keeps is not None and keeps()


def _free(node):  # (a backward without retain_graph ran through `node`)
    node.freed = True
    release = getattr(node.prim, "release", None)
    if release is not None:
        release(node.name())


# ----------------------------------------------------------------------------- the engine

def _consumed_history(tensors):
    """The eager nodes a backward() from `tensors` runs through, for the bookkeeping of one the
    tracer differentiates symbolically (freed unless retain_graph)."""
    return [n for n in _topological_order([t.grad_fn for t in tensors]) if isinstance(n, Node)]


def _topological_order(roots):
    """Nodes reachable from the roots, later-created first, as PyTorch's engine prioritises them
    (a node is always created after the nodes whose outputs it reads, so each node comes after
    every node that consumes its output). Backward then reaches the last layers' weights first
    and accumulates each leaf's gradient as early as it can (DDP's buckets start sooner)."""
    found, seen = [], set()
    stack = [root for root in roots if root is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        found.append(node)
        if isinstance(node, Node):
            for _, child, _, _ in node.saved:
                if child is not None and id(child) not in seen:
                    stack.append(child)
    found.sort(key=_creation, reverse=True)
    return found


def _creation(node):
    return getattr(node, "seq", float("inf"))  # (a history marker that is no Node goes first)


def _accumulate(table, key, value):
    prior = table.get(key)
    table[key] = value if prior is None else prior + value


def _accumulate_leaf(table, tensor, g):
    prior = table.get(id(tensor))
    table[id(tensor)] = (tensor, g if prior is None else prior[1] + g)


BACKWARD_TWICE = ("Trying to backward through the graph a second time (or directly access saved tensors after "
                  "they have already been freed). Saved intermediate values of the graph are freed when you call "
                  ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through the "
                  "graph a second time.")


def run_backward(outputs, grad_outputs, retain_graph, create_graph, inputs=None, prune=True):
    """Propagate cotangents from `outputs`. With `inputs`, return their gradients (autograd.grad);
    otherwise accumulate into the `.grad` of the leaves, then run the callbacks queued meanwhile.
    `prune=False` runs every node even with `inputs` (the tracer's trial backward, which looks
    for the errors a full backward would raise)."""
    with final_callbacks(create_graph):
        return _propagate(outputs, grad_outputs, retain_graph, create_graph, inputs, prune)


def _propagate(outputs, grad_outputs, retain_graph, create_graph, inputs, prune=True, run_input_nodes=False):
    node_grads, leaf_grads = {}, {}
    roots = []
    for out, g in zip(outputs, grad_outputs):
        if out.grad_fn is None:
            if out.requires_grad and has_grad_edge(out):  # (a view made under no_grad has none)
                _accumulate_leaf(leaf_grads, out, g)
                continue
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        _accumulate(node_grads, id(out.grad_fn), g)
        roots.append(out.grad_fn)

    wanted = None if inputs is None else {id(t): t for t in inputs}
    wanted_nodes = None if inputs is None else {id(t.grad_fn): t for t in inputs if t.grad_fn is not None}
    captured = {}

    order = _topological_order(roots)
    # A leaf's gradient is accumulated as soon as the last node that can contribute to it has
    # run (PyTorch's AccumulateGrad), so post-accumulate-grad hooks (DDP's buckets) fire during
    # backward; autograd.grad (`inputs`) accumulates nothing.
    ready_after = {} if wanted is None else None
    if ready_after is not None:
        last = {}
        for position, node in enumerate(order):
            for t, (_, fn, requires_grad, _) in zip(node.inputs, node.saved) if isinstance(node, Node) else ():
                if fn is None and requires_grad:
                    last[id(t)] = position
        last_use = set(last)
        for position, node in enumerate(order):  # (leaves ready together: in the node's operand order)
            for t in node.inputs if isinstance(node, Node) else ():
                if last.get(id(t)) == position:
                    ready_after.setdefault(position, []).append(id(t))
                    del last[id(t)]
    recorded = create_graph or STATE.recorder is not None  # a tracer must see the accumulation
    owned = {}  # pending gradients this backward made, summed into in place (frontend/gradient_sums.py)

    # autograd.grad / backward(inputs=): only the nodes on a path to a requested input run (their
    # VJPs, hooks and saved-value checks), as PyTorch prunes the graph
    leads_to_inputs = None if wanted is None or not prune else _leading_to(order, wanted, wanted_nodes)

    with set_grad_enabled(create_graph):
        if ready_after is not None:  # leaves passed as roots themselves go first (as in PyTorch)
            for key in [key for key in leaf_grads if key not in last_use]:
                _accumulate_ready(leaf_grads, [key], create_graph, recorded)
        for position, node in enumerate(order):
            if ready_after is not None and position - 1 in ready_after:
                _accumulate_ready(leaf_grads, ready_after.pop(position - 1), create_graph, recorded)
            g = node_grads.pop(id(node), None)
            if g is None:
                continue
            if leads_to_inputs is not None and id(node) not in wanted_nodes and not leads_to_inputs[id(node)]:
                continue
            if node.hooks or node.retain:
                g = _run_tensor_hooks(node, g)
            if wanted_nodes is not None and id(node) in wanted_nodes:
                _accumulate(captured, id(wanted_nodes[id(node)]), g)
                if leads_to_inputs is not None and not leads_to_inputs[id(node)] and not run_input_nodes:
                    continue  # (nothing requested lies beyond it; backward(inputs=) still runs the node)
            if node.freed and _kept_values(node):  # (a node that saved none runs again, as in PyTorch;
                raise RuntimeError(f"{node.name()}: {BACKWARD_TWICE}")  # its output's hooks ran first)
            if node.checked is not None:
                for counter, version, which, ref in node.checked:
                    if counter.value != version:
                        t = ref()
                        stale = _stale_view_message(t) if t is not None else None
                        if stale is not None:  # (PyTorch unpacks a saved view's history first)
                            raise RuntimeError(stale)
                        raise ModifiedTensorError(modified_message(t, node, which, version) if t is not None else
                                                  f"one of the variables needed for gradient computation has "
                                                  f"been modified by an inplace operation: {which} of "
                                                  f"{node.name()} is at version {counter.value}; expected "
                                                  f"version {version} instead.")
            siblings = getattr(node.prim, "siblings", None)
            if siblings:  # the other outputs of one custom Function call: one backward call for all
                node.prim.sibling_grads = _gather_siblings(node_grads, siblings, retain_graph, wanted_nodes, captured)
            if not recorded and node.prim is SLICE and add_into_slice(node, g, node_grads, owned):
                if not retain_graph:
                    node.freed = True
                continue
            values = node.unpack_inputs(freed=node.freed)
            out = node.saved_output(create_graph, freed=node.freed) if _uses_output(node) else None
            grads = node.prim.vjp(g, out, *values, **node.attrs)
            if not retain_graph:
                _free(node)
            for t, (_, fn, requires_grad, _), gi in zip(node.inputs, node.saved, grads):
                if gi is None or not requires_grad or fn is None and t._creation == "no_grad":
                    continue  # (no edge: see has_grad_edge)
                if fn is not None:
                    if recorded:
                        _accumulate(node_grads, id(fn), gi)
                    else:
                        accumulate_owned(node_grads, id(fn), gi, owned, node if node.prim is SLICE else None)
                else:
                    _accumulate_leaf(leaf_grads, t, gi)

        if wanted is not None:
            for t, g in leaf_grads.values():
                if id(t) in wanted:
                    for hook in t._hooks or ():
                        replaced = hook(g)
                        if replaced is not None:
                            g = replaced
                    _accumulate(captured, id(t), g)
            return captured
        for position in sorted(ready_after):  # (the leaves the last nodes feed)
            _accumulate_ready(leaf_grads, ready_after[position], create_graph, recorded)
        for t, g in list(leaf_grads.values()):  # (outputs that are leaves themselves)
            _accumulate_leaf_grad(t, g, create_graph, recorded)
    return None


def _gather_siblings(node_grads, siblings, retain_graph, wanted_nodes, captured):
    """{output index: gradient} of a custom Function's other outputs, taken from the pending
    gradients (their nodes then have none left and are skipped; an output autograd.grad asked
    for is captured here). Every node that feeds one of them was created later and has already
    run, since nodes run later-created first: the gradients are complete. Without retain_graph
    the siblings are freed with this node when it saved tensors: in PyTorch they are one node,
    whose saved tensors a second backward would miss."""
    found = {}
    for index, sibling in siblings:
        g = node_grads.pop(id(sibling), None)
        if g is not None and sibling.freed and _kept_values(sibling):
            raise RuntimeError(f"{sibling.name()}: {BACKWARD_TWICE}")
        if g is not None and (sibling.hooks or sibling.retain):
            g = _run_tensor_hooks(sibling, g)
        if g is not None:
            found[index] = g
            if wanted_nodes is not None and id(sibling) in wanted_nodes:
                _accumulate(captured, id(wanted_nodes[id(sibling)]), g)
        if not retain_graph and sibling.prim.ctx._saved:
            sibling.freed = True  # (their shared ctx is released once the node's backward has run: _free)
    return found


def _leading_to(order, wanted, wanted_nodes):
    """{id(node): does its VJP lead to a requested input} (a requested leaf among its operands,
    or an operand's node that is requested or leads to one)."""
    leads = {}
    for node in reversed(order):  # (producers first)
        found = False
        for t, (_, fn, requires_grad, _) in zip(node.inputs, node.saved) if isinstance(node, Node) else ():
            if fn is not None:
                found = found or leads.get(id(fn), False) or id(fn) in wanted_nodes
            elif requires_grad and id(t) in wanted:
                found = True
        leads[id(node)] = found
    return leads


def _accumulate_ready(leaf_grads, keys, create_graph, recorded):
    for key in keys:
        entry = leaf_grads.pop(key, None)
        if entry is not None:
            _accumulate_leaf_grad(entry[0], entry[1], create_graph, recorded)


def check_hook_result(hook, replaced, g):
    """A tensor hook may replace a gradient only by one of its size and dtype (PyTorch's checks
    and messages)."""
    name = getattr(hook, "__name__", hook)
    if tuple(getattr(replaced, "shape", ())) != tuple(g.shape):
        raise RuntimeError(f"hook '{name}' has changed the size of value")
    dtype = getattr(replaced, "dtype", None)
    if dtype != g.dtype:
        raise RuntimeError(f"hook '{name}' has changed the type of value (was {g.dtype} got {dtype})")


def _accumulate_leaf_grad(t, g, create_graph, recorded, tensor_hooks=True):
    """AccumulateGrad: the leaf's tensor hooks, `.grad += g`, then its post-accumulate-grad hooks."""
    for hook in t._hooks or () if tensor_hooks else ():
        replaced = hook(g)
        if replaced is not None:
            check_hook_result(hook, replaced, g)
            g = replaced
    if not create_graph:
        g = g.detach()
    if t.grad is None:
        if create_graph:
            g = g.clone()  # (differentiable; never the caller's tensor nor another leaf's .grad)
        t.grad = g if recorded else _owned(g)
    else:
        t.grad = t.grad + g if recorded else _accumulate_into(t.grad, g)
    for hook in t._post_accumulate_hooks or ():
        if hook(t) is not None:
            raise RuntimeError("Tensor post accumulate grad hooks should return None.")


def _owned(g):
    """A gradient the leaf may keep: a copy (the cotangent may be the caller's grad_output, or
    reach two leaves, or a retained .grad: later accumulation adds into the leaf's own memory)."""
    return Tensor._wrap(copy_array(g._data))


def _accumulate_into(existing, g):
    """A plain backward adds into the .grad's own memory, as PyTorch's AccumulateGrad with grad
    mode off, also into a .grad that requires grad (one a create_graph backward left)."""
    data = existing._data
    device = device_of(data)
    if data.flags.writeable and data.shape == g._data.shape:  # into the grad's own memory (records nothing)
        if device is None:
            np.add(data, g._data, out=data)
        else:
            copy_into(data, add_on_device(data, g._data, device))
        bump_version(existing)
        return existing
    return Tensor._wrap(data + g._data if device is None else add_on_device(data, g._data, device))


def _uses_output(node):
    return node.prim.vjp_uses_output


def _run_tensor_hooks(node, g):
    for hook in node.hooks or ():
        replaced = hook(g)
        if replaced is not None:
            check_hook_result(hook, replaced, g)
            g = replaced
    if node.retain:
        t = node.out_ref() if node.out_ref is not None else None
        if t is not None:
            t.grad = g.detach() if t.grad is None else t.grad + g.detach()
    return g


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """ember.autograd.backward: like Tensor.backward for several roots."""
    from .tensor import Tensor
    if isinstance(tensors, Tensor):
        tensors = [tensors]
    tensors = list(tensors)
    if grad_tensors is None or isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors] * len(tensors) if grad_tensors is None else [grad_tensors]
    grads = [_default_grad(t, g) for t, g in zip(tensors, grad_tensors)]
    recorder = STATE.recorder
    retain = create_graph if retain_graph is None else retain_graph
    if create_graph or inputs is not None:
        run_eagerly("calls backward() with create_graph or inputs")
    if getattr(recorder, "stale_saved", None) is not None:
        run_eagerly(recorder.stale_saved)
    if recorder is not None and hasattr(recorder, "backward") and not create_graph and inputs is None \
            and recorder.eager_reason is None:  # (a call that will run eagerly gets eager autograd now)
        nodes = _consumed_history(tensors)
        if any(node.freed for node in nodes):
            # whether it raises PyTorch's error depends on what the freed nodes' backwards read:
            # the eager engine below finds out, before any gradient
            run_eagerly("runs backward() again through a history an earlier backward() freed")
        else:
            recorder.backward(tensors, grads, retain)  # the autodiff pass, on the graph being recorded
            if not retain:
                for node in nodes:
                    _free(node)
            return
    if inputs is not None:
        inputs = list({id(t): t for t in ([inputs] if isinstance(inputs, Tensor) else inputs)}.values())
        recorded = create_graph or recorder is not None
        with final_callbacks(create_graph):
            captured = _propagate(tensors, grads, retain, create_graph, inputs, run_input_nodes=True)
            with set_grad_enabled(create_graph):
                for t in inputs:  # (their tensor hooks ran as they were captured)
                    g = captured.get(id(t))
                    if g is not None and not t.retains_grad:  # (retain_grad filled it already)
                        _accumulate_leaf_grad(t, g, create_graph, recorded, tensor_hooks=False)
        return
    run_backward(tensors, grads, retain, create_graph)


def _default_grad(t, g):
    from .tensor import Tensor
    if g is None:
        if t.numel() != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs; backward() "
                               f"was called on a tensor of shape {list(t.shape)}: pass gradient= "
                               f"with the same shape")
        return Tensor._wrap(like(np.ones(t.shape, dtype=t._data.dtype), t._data))
    if not isinstance(g, Tensor):
        g = Tensor._wrap(like(np.asarray(g, dtype=t._data.dtype), t._data))
    elif g.device != t.device:
        raise RuntimeError(f"invalid gradient at index 0 - expected device {t.device} but got {g.device}")
    elif g._data.dtype != t._data.dtype:
        from .math_ops import to_dtype
        g = to_dtype(g, t.dtype)  # PyTorch casts the given gradient to the output's dtype
    if tuple(g.shape) != tuple(t.shape):
        raise RuntimeError(f"backward: gradient has shape {list(g.shape)} but the output has "
                           f"shape {list(t.shape)}")
    return g


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False, materialize_grads=False):
    """ember.autograd.grad: gradients of outputs with respect to inputs, returned (not accumulated)."""
    from .tensor import Tensor
    run_eagerly("calls autograd.grad")
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    grads = [_default_grad(t, g) for t, g in zip(outputs, grad_outputs)]
    for t in inputs:
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    retain = create_graph if retain_graph is None else retain_graph
    captured = run_backward(outputs, grads, retain, create_graph, inputs=inputs)
    result = []
    for i, t in enumerate(inputs):
        g = captured.get(id(t))
        if g is None:
            if materialize_grads:
                g = Tensor._wrap(like(np.zeros(t.shape, dtype=t._data.dtype), t._data))
            elif not allow_unused:
                raise RuntimeError(f"One of the differentiated Tensors (input {i}, shape {list(t.shape)}) "
                                   "appears to not have been used in the graph. Set allow_unused=True "
                                   "if this is the desired behavior.")
        elif not create_graph:
            g = g.detach()
        result.append(g)
    return tuple(result)


def __getattr__(name):
    """`ember.autograd.Function` and `Variable` live in custom_function (imported lazily: it
    needs Tensor, which needs this module)."""
    if name in ("Function", "Variable", "FunctionCtx"):
        from . import custom_function
        return getattr(custom_function, name)
    raise AttributeError(f"module 'ember.autograd' has no attribute {name!r}")


# at the end: tensor imports dispatch, which imports this module (hot paths use Tensor)
from .tensor import StaleView, Tensor  # noqa: E402
