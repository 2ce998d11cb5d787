"""The tracer: records eager execution into an IR graph, with guards.

While a `Tracer` is the dispatcher's recorder, every primitive still runs eagerly (tracing
sees real values, autograd still records) and is also added to the graph. Module params and
buffers are named params, call arguments are inputs, other tensors become constants. When a
tensor's value flows into Python (`bool(t)`, `t.item()`, ...) the trace records a guard.
`ember.trace(fn, *args)` returns the whole recorded graph.
"""
import weakref
from collections import Counter

import numpy as np

from ember.ir import Graph, Guard
from ember.ops import in_mode
from .dispatch import STATE, eager_bind, run_eagerly
from .grad_mode import no_grad
from .watched_sizes import SizeInt, plain_sizes, unwatched_sizes
from .runtime_scalars import ScalarInput
from .tensor import Tensor
from .views import chain_suffix, has_internal_overlap, live_aliases, memory_owner, replay, root_of, scatter_into_base
from .external_names import ExternalNaming, grads_apart, module_state  # noqa: F401 (module_state: jit's)
from .trace_values import TraceValues
from .user_code import user_frame, user_location
from .result_histories import (creation_of, entry_history, freed_histories, stale_histories, views_of_outputs,
                               with_history)
from ember.runtime.device_arrays import device_of

def observed_value(data):
    """What Python sees of a tensor's value, as a hashable key for guard outcomes."""
    if data.size == 1:
        return data.reshape(()).item()
    return (tuple(data.shape), data.dtype.name, np.ascontiguousarray(data).tobytes())


class Tracer:
    """A mode on top of the mode stack while tracing (`recording`); `STATE.recorder` then names
    it. `bind` computes eagerly and records."""

    records_tensors = True
    stale_saved = None  # why a backward() inside must run eagerly (see record_write), if it must

    def __init__(self, name="graph"):
        self.graph = Graph(name)
        self.known = {}  # id(tensor) -> placeholder node, for inputs, params and buffers
        self.keep = []  # keeps registered tensors alive so their ids stay unique
        self.live = {}  # node id -> weakref of the tensor holding it (for carried values)
        self.guard_positions = []  # node count at each guard: where the trace splits
        self.alive_at_guard = []  # nodes whose tensors were still alive at each guard
        self.op_counts = Counter()
        self.externals = []  # (param name, tensor) for closed-over tensors
        self.naming = ExternalNaming()  # names of closed-over tensors (frontend/external_names.py)
        self.state_made_outside = {}  # id(optimizer) -> (optimizer, {id(param): its state's key}): see made_state
        self.grads_made = set()  # ids of the .grad tensors a backward() in the trace made (not added into)
        self.rng_inputs = []  # seed inputs of random draws
        self.size_symbols = {}  # a trace making dims dynamic: size -> SymDim placeholder (frontend/watched_sizes.py)
        self.size_tests = []  # comparisons of those sizes the ranges did not decide: (op, size, other, line)
        self.values = TraceValues(self.graph)  # the eager values seen while tracing, by node
        self.scalar_constants = {}  # (dtype, bytes) of a number wrapped for an op -> (its first tensor, its node)
        self.placeholder_tensors = {}  # placeholder node id -> its tensor
        self.entry_histories = {}  # placeholder node id -> (grad_fn, output_nr) of its tensor when registered
        self.placeholders_under = {}  # id(root tensor) -> inputs and params that are it or views of it
        self.deriving = False  # re-deriving views after a write (not new computation)
        # Nodes through which the graph's autodiff would reach a param or input that requires
        # grad. Where eager autograd did not connect such a value (computed under no_grad, or
        # detach() / .data) and grad-mode code uses it, the use reads a stop_gradient of it, so
        # the graph differentiates exactly as eager autograd did.
        self.differentiable = set()
        self.autograd_nodes = []  # weakrefs to the eager autograd nodes of this trace's ops
        self.stopped = {}  # node -> its stop_gradient node
        self.wrote = False  # did an in-place op run while tracing
        self.ran_backward = False  # did the traced code call backward() (a training step)
        self.grads_of = {}  # external param name -> (name, tensor) of the param whose .grad it is (by path)
        # external param name -> [(tensor, its .grad when traced: that external or a view of it)]:
        # the program holds the external only while each tensor still has that .grad (HeldGrad)
        self.grad_conditions = {}
        self.saw_without_grad = {}  # id -> tensor: the code read its .grad, None as at the start (read_grad)
        self.saw_with_grad = {}  # id -> tensor: the code read its .grad, the one of the start (read_grad)
        self.grads_written = {}  # id -> a tensor whose .grad the trace set (wrote_grad)
        self.grad_readers = {}  # id(.grad) -> the tensor it was read from (read_grad): see _external
        self.grad_view_readers = {}  # id(base) -> the tensors whose .grad, a view of it, was read
        self.grads_assigned = set()  # ids of the tensors this trace made and set as a .grad (wrote_grad)
        self.eager_reason = None  # why the compiled program could not reproduce this call, if so

    # ------------------------------------------------------------------ placeholders
    def watched_sizes(self, shape):
        """`shape` with each size of `size_symbols` a SizeInt recording what the code does with it."""
        return tuple(SizeInt(d, self.size_symbols[d], self.size_tests) if d in self.size_symbols else d for d in shape)

    def add_input(self, tensor, name):
        node = self.graph.add_input(tensor.shape, tensor.dtype, name)
        self._register(tensor, node)
        return node

    def add_param(self, tensor, name):
        node = self.graph.add_param(name, tensor.shape, tensor.dtype)
        self._register(tensor, node)
        return node

    def _register(self, tensor, node):
        self.known[id(tensor)] = node
        if tensor.requires_grad:
            self.differentiable.add(node)
        self.keep.append(tensor)
        self.values.remember(node, tensor._data)
        self.placeholder_tensors[node] = tensor
        history = entry_history(tensor)
        if history is not None:
            self.entry_histories[node] = history
        root = tensor._base if tensor._base is not None else tensor
        self.placeholders_under.setdefault(id(root), []).append(tensor)
        tensor._node = (self, node)

    def node_of(self, tensor):
        token = tensor._node
        if token is not None and token[0] is self:
            return token[1]
        node = self.known.get(id(tensor))
        if node is not None:
            return node
        if tensor._base is not None:  # a view made before the trace: derive it from what the trace knows
            root, chain = self.functional_root(tensor)
            if root is not tensor:
                with self.deriving_views():
                    node = self.node_of(replay(chain, root))
                self.rebind(tensor, node)
                return node
        if tensor._born is self:
            return self._constant(tensor)
        return self._external(tensor)

    def rebind(self, tensor, node):
        """`tensor` now holds the value of `node` (after a functional update, or derived anew)."""
        tensor._node = (self, node)
        known, held = self.live.get(node), weakref.ref(tensor)  # (`h.detach()` may hold it too: alive while any is)
        self.live[node] = held if known is None or known() is None else _Either(known, held)

    # ------------------------------------------------------------------ aliasing (functionalization)
    def functional_root(self, tensor):
        """(root, chain): the tensor whose node a write through `tensor` updates, and the view
        chain from it. That is the eager root, or the nearest input or param the tensor is a view
        of (an argument may itself be a view of the caller's memory, which the trace never sees)."""
        if id(tensor) in self.known or tensor._base is None:
            return tensor, ()
        root, chain = tensor._base, tensor._view_chain
        best = None
        for candidate in self.placeholders_under.get(id(root), ()):
            suffix = chain_suffix(chain, candidate._view_chain)
            if suffix is not None and (best is None or len(suffix) < len(best[1])):
                best = (candidate, suffix)
        if best is not None:
            return best
        if not tensor._detached or id(root) in self.known or id(root) in self.naming.names or (
                root._node is not None and root._node[0] is self):
            return root, chain  # (a root the function never names is bound as a hidden param)
        return tensor, ()  # a detached alias of memory out of the function's reach (a clone's source)

    def before_write(self, tensor):
        """An in-place op is about to overwrite `tensor`'s memory: the eager values recorded
        over that memory are copied first, so they keep the values their nodes stand for."""
        self.values.before_write(tensor._data)

    def record_write(self, tensor, new_value, recorded_history):
        """`tensor` was written in place with `new_value`: its root gets a functional update
        (a scatter through the view chain) and every live view of the root is derived anew.
        When eager autograd did not record the write into the root's history (no_grad, a write
        through `.data` or `detach()`), the root keeps its gradient path: `overwrite(old, new)`."""
        self.wrote = True
        root, chain = self.functional_root(tensor)
        if not recorded_history and root.grad_fn is not None and STATE.grad_enabled:
            # eager autograd's saved values see this unrecorded write (through .data or detach());
            # the graph's autodiff would use the values from before it
            self.eager_reason = (f"writes through .data or detach() into a tensor with autograd history "
                                 f"(shape {list(root.shape)})")
        elif not recorded_history and tensor._detached and root.requires_grad and self._saved_over(root, no_grad_views_only=True):
            # x * x[0], x[0] taken under no_grad (.data does not bump the version counter)
            self.eager_reason = (f"writes through .data or detach() into a leaf whose no_grad view is saved for "
                                 f"a backward not run yet (shape {list(root.shape)})")
        elif not recorded_history and tensor._detached and root.requires_grad and self._saved_over(root):
            # (w * a).sum(), w.data.mul_(0.5), y.backward() inside: eager autograd reads the new w
            self.stale_saved = (f"calls backward() after a write through .data or detach() into a leaf whose "
                                f"value it reads (shape {list(root.shape)})")
        old = self.node_of(root)
        if chain:
            new_root = scatter_into_base(root, chain, new_value)
        else:
            new_root = new_value
        node = self.node_of(new_root)
        if not recorded_history and root.requires_grad:
            node = self.graph.add_node("overwrite", [old, node], root.shape, root.dtype, {}, "overwrite")
            self.values.remember(node, root._data)
            if old in self.differentiable:
                self.differentiable.add(node)
        self.rebind(root, node)
        with self.deriving_views():
            for alias in live_aliases(root._base if root._base is not None else root):
                suffix = chain_suffix(alias._view_chain, root._view_chain)
                token = alias._node
                if alias is root or suffix is None or token is None or token[0] is not self:
                    continue  # (a view the trace has not used yet is derived when first used)
                node = replay(suffix, root)._node[1]
                if alias._creation == "no_grad" and node in self.differentiable:
                    # a view made under no_grad (or a view of one) passes no gradient to the root in
                    # eager autograd; derived again from the root, it must not either
                    node = self._stop_gradient(node)
                self.rebind(alias, node)

    def deriving_views(self):
        return _Deriving(self)

    def record_alias(self, alias, source):
        """`detach()` / `.data` while tracing: the same value, cut from autodiff."""
        self.rebind(alias, self.node_of(source))  # (a grad-mode use of it reads a stop_gradient)

    def record_data_assignment(self, tensor, value):
        """`t.data = value`: the tensor holds the value from now on, its gradient path unchanged.
        Eagerly `t` moves to new memory and what still reads the old (a view, a value saved for
        backward) keeps the old values; a compiled call writes the new value into the old memory."""
        if live_aliases(tensor) or self._saved_over(tensor):
            self.eager_reason = (f"assigns .data of a tensor whose old memory a view or a value saved for backward "
                                 f"still reads (shape {list(tensor.shape)})")
        old, new = self.node_of(tensor), self.node_of(value)
        if self.graph.spec(old) == self.graph.spec(new):
            node = self.graph.add_node("overwrite", [old, new], tensor.shape, tensor.dtype, {}, "data")
            if old in self.differentiable:
                self.differentiable.add(node)
        else:
            node = self.graph.add_node("stop_gradient", [new], value.shape, value.dtype, {}, "data")
        self.values.remember(node, value._data)
        self.rebind(tensor, node)

    def _cut_if_eager_cuts(self, tensor, node):
        """A result eager autograd gives no history (a value computed under no_grad, a view
        made there) passes no gradient from the compiled call either, even where the graph
        connects it to an input that requires grad."""
        if not STATE.grad_enabled or id(tensor) in self.known or node not in self.differentiable:
            return node  # (a call made under no_grad returns nothing with history anyway)
        if not tensor.requires_grad or tensor.__dict__.get("grad_fn") is None:
            return self._stop_gradient(node)
        return node

    def _stop_gradient(self, node):
        stopped = self.stopped.get(node)
        if stopped is None:
            spec = self.graph.spec(node)
            stopped = self.stopped[node] = self.graph.add_node("stop_gradient", [node], spec.shape, spec.dtype,
                                                                {}, "stop_gradient")
            self.values.same_as(stopped, node)
        return stopped

    def _external(self, tensor):
        """A tensor that existed before the trace and is not an argument (a closed-over
        module's weight, an optimizer's buffer): a param bound to that very tensor at each call,
        or, for the `.grad` of a param, to that param's `.grad` at each call."""
        # (a .grad the function also holds itself, as a closed-over tensor, stays that tensor: held)
        reached = id(tensor) in self.naming.names
        reader = self.grad_readers.get(id(tensor))
        if reader is not None and reader._grad is tensor and id(reader) not in self.known and not reached \
                and len(self.naming.grad_owners.get(id(tensor), ())) <= 1:  # (one .grad of several: held)
            self.node_of(reader)  # (read as `p.grad` before p itself: p first, so that it binds by p's path)
        owners, viewed = [], []  # (the params whose .grad it is; [(param, its .grad)] where that is a view of it)
        placeholders = self.placeholder_tensors
        for param_name, param_node in self.graph.params.items():
            param = placeholders[param_node]
            grad = param._grad
            if grad is tensor:
                owners.append((param_name, param))
            elif grad is not None and grad._base is tensor:
                viewed.append((param, grad))
        for reader in self.grad_view_readers.get(id(tensor), ()):  # (a .grad read, a view of this: q[:3])
            grad = reader._grad
            if grad is not None and grad._base is tensor and all(reader is not p for p, _ in viewed):
                viewed.append((reader, grad))
        owner = owners[0][0] if len(owners) == 1 and not viewed and not reached else None
        name = f"{owner}.grad" if owner is not None else self.naming.name(tensor)
        while name in self.graph.params:
            name += "_"
        node = self.add_param(tensor, name)
        self.externals.append((name, tensor))
        if owner is not None:
            self.grads_of[name] = owners[0]
        elif owners or viewed:  # the .grad of several, or the base of a .grad (a view), of tensors read before
            self.grad_conditions[name] = [(param, tensor) for _, param in owners] + viewed
        grad = tensor._grad  # (this one's .grad, or the base of it, read before)
        if grad is not None and owner is None:
            held = next((n for n, t in self.externals if t is root_of(grad) and t is not tensor), None)
            if held is not None:
                self.grad_conditions.setdefault(held, []).append((tensor, grad))
        return node

    def read_grad(self, tensor, grad):
        """The traced code read `tensor.grad` (Tensor.grad). Where that is still the .grad of the
        call's start (this trace set none, and made no `tensor`), the program holds only while
        the tensor still has none, or has one (`if w.grad is None` in user code; an optimizer step
        first traced before any backward would otherwise never update); wherever the code found
        the tensor (module, closure, list, object). An argument's .grad runs the call eagerly: the
        next call may pass another tensor. The tracer's own bookkeeping reads `_grad`, unnoted."""
        key = id(tensor)
        if grad is not None:
            self.grad_readers.setdefault(id(grad), tensor)
            if grad._base is not None:
                self.grad_view_readers.setdefault(id(grad._base), []).append(tensor)
        if key in self.grads_written or self.made_here(tensor):
            return
        if grad is None:
            self.saw_without_grad[key] = tensor
            return
        if self.known.get(key) in self.graph.inputs:
            run_eagerly("reads the .grad of an argument (a later call may pass another tensor)")
        self.saw_with_grad[key] = tensor

    def wrote_grad(self, tensor, grad):
        """The traced code sets `tensor.grad = grad` (Tensor.grad): from here on its .grad is the
        trace's doing (read_grad holds the program to no state of it), and where the call leaves
        it None, every compiled call sets it to None (external_names.cleared_grads); a `grad` this
        trace computed is a new tensor on every compiled call too (`w.grad = w.grad.clone()`)."""
        self.grads_written.setdefault(id(tensor), tensor)
        if grad is None:
            return
        if self.made_here(grad):
            self.grads_assigned.add(id(grad))
        elif self.grad_readers.get(id(grad), tensor) is not tensor or grad.requires_grad:
            run_eagerly("sets a .grad to another tensor's .grad, or to a tensor that requires grad")
        if not self.made_here(tensor) and id(tensor) not in self.known:
            self.node_of(tensor)  # (a param whose .grad alone the function sets: the program writes it)

    def name_externals_of(self, fn, numbers=None):
        """Name the tensors `fn` reaches through its globals and closure; `numbers` numbers the
        others for the whole compiled function (external_names.ExternalNumbers)."""
        self.naming = ExternalNaming(fn, numbers)

    def made_state(self, optimizer, param, state):
        """Optimizer._states_for made `param`'s state eagerly, outside the program: its
        tensors get names when read (named again), and ember.compile may key this trace
        under the signature after the call (optimizer_guards.holds_after_the_call)."""
        from .optimizer_guards import state_items_key
        self.state_made_outside.setdefault(id(optimizer), (optimizer, {}))[1][id(param)] = state_items_key(state)
        self.naming.stale = True

    def random(self, distribution, shape, dtype, a, b):
        """A random draw inside traced code: the `random` primitive fed by a fresh seed input."""
        from ember.ops import PRIMITIVES
        from .random import default_generator
        seed = Tensor._wrap(np.asarray(default_generator.np.integers(0, 2 ** 62), dtype=np.int64))
        node = self.graph.add_input((), "int64", f"rng_seed_{len(self.rng_inputs)}", rng=True)
        self._register(seed, node)
        self.rng_inputs.append(node)
        return PRIMITIVES["random"].bind(seed, distribution=distribution, shape=tuple(shape), dtype=dtype.name,
                                         a=float(a), b=float(b))

    def _constant(self, tensor):
        data = tensor._data
        if tensor._operand and data.ndim == 0 and type(data) is np.ndarray:  # (x * 0.9: one node per number)
            key = (data.dtype.str, data.tobytes())
            known = self.scalar_constants.get(key)
            if known is not None:
                tensor._node = (self, known[1])
                return known[1]
        value = data.reshape(()).item() if data.size == 1 else np.array(data, copy=True)
        if data.size > 1 and _uniform(data):  # one fill (an optimizer's zero state): one number
            value = data.reshape(-1)[0].item()
        node = self.graph.add_node("constant", (), data.shape, tensor.dtype,
                                   {"value": value, "shape": tuple(data.shape), "dtype": data.dtype.name},
                                   name="const")
        tensor._node = (self, node)
        self.values.remember(node, data)
        self.live[node] = weakref.ref(tensor)  # (a scalar's first tensor stays alive: scalar_constants)
        if tensor._operand and data.ndim == 0 and type(data) is np.ndarray:
            self.scalar_constants[key] = (tensor, node)
        return node

    # ------------------------------------------------------------------ recording
    def bind(self, prim, operands, attrs):
        if attrs and any(type(v) is ScalarInput for v in attrs.values()):
            # a runtime scalar kept as an attribute: the program holds its value (pinned)
            attrs = {k: v.pinned() if type(v) is ScalarInput else v for k, v in attrs.items()}
        inputs = [self.node_of(t) for t in operands]
        differentiable = self.differentiable
        if STATE.grad_enabled and not self.deriving:
            for i, t in enumerate(operands):
                if inputs[i] in differentiable and (not t.requires_grad or t.grad_fn is None and id(t) not in self.known):
                    inputs[i] = self._stop_gradient(inputs[i])  # eager autograd has no path from here to the node's
        # (the eager computation must not re-enter the tracer; what numpy does with watched sizes
        # decides nothing about the program, and the IR holds plain ints: symbolize finds the sizes)
        with in_mode(None), unwatched_sizes():
            result = eager_bind(prim, operands, attrs)
        if self.size_symbols:
            attrs = plain_sizes(attrs)
        node = self.graph.add_node(prim.name, inputs, result._data.shape, result.dtype, attrs, self._name(prim),
                                   source=user_location())  # (provenance: the model line each node came from)
        if prim.vjp is not None and any(i in differentiable for i in inputs):
            differentiable.add(node)  # (connected in the graph: a grad-mode use of it may need a cut)
        result._node = (self, node)
        self.values.remember(node, result._data, weak=not prim.effects)
        if result.grad_fn is not None:
            result.grad_fn.out_token = result._node  # VJPs that read the output refer to this node
            self.autograd_nodes.append(weakref.ref(result.grad_fn))
        self.live[node] = weakref.ref(result)
        return result

    def _saved_over(self, tensor, no_grad_views_only=False):
        """Does a node of this trace not yet run by a backward save an array over `tensor`'s memory
        (with `no_grad_views_only`: a view of it made under no_grad)?"""
        owner = memory_owner(tensor._data)
        for node in (ref() for ref in self.autograd_nodes):
            if node is None or node.freed:
                continue
            saved = ([t._data for t in node.inputs if t._creation == "no_grad"] if no_grad_views_only
                     else [entry[0] for entry in node.saved if isinstance(entry[0], np.ndarray)])
            if any(memory_owner(array) is owner for array in saved):
                return True
        return False

    def _name(self, prim):
        # ops in the root module's own forward are named by op ("relu_3"); inside a submodule
        # by its path ("conv1" for its contraction, "conv1.add" for the rest)
        module = STATE.module_path[-1] if len(STATE.module_path) > 1 else None
        self.op_counts[prim.name] += 1
        if module is None:
            return f"{prim.name}_{self.op_counts[prim.name]}"
        return module if prim.kind == "contraction" else f"{module}.{prim.name}"

    def observe(self, tensor, how):
        """Python is about to see this tensor's value: guard on it."""
        node = self.node_of(tensor)
        source, code = user_frame()
        self.graph.add_guard(Guard(node, observed_value(tensor._data), how, source, code))
        self.guard_positions.append(self.graph._next_id)
        self.alive_at_guard.append(self.alive_nodes())

    def backward(self, tensors, grad_tensors, retain_graph=False):
        """`loss.backward()` inside traced code: the autodiff pass differentiates the recorded
        graph; the new gradient nodes get their values from the interpreter, so tracing goes
        on (an optimizer step can read `.grad`), and the whole step is one graph."""
        self.ran_backward = True
        error = self._eager_backward_error(tensors) if self.wrote else None
        if error is not None:  # eager backward() would raise here: so does the traced call
            from .dispatch import ModifiedTensorError
            raise ModifiedTensorError(error)
        from ember.passes.autodiff import gradients
        from .autograd import check_hook_result, final_callbacks, run_backward
        for t in tensors:
            if not t.requires_grad:
                raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        outputs = [self.node_of(t) for t in tensors]
        seeds = [self.node_of(g) for g in grad_tensors]
        device = next((found for found in (device_of(t._data) for t in tensors) if found is not None), None)
        # (a tensor without history when the call began that has one now, from an in-place op with
        # an operand requiring grad: the placeholder, its value before that op, has no gradient)
        leaves = {node: t for node, t in self.placeholder_tensors.items()
                  if t.requires_grad and (node in self.entry_histories or t.grad_fn is None)}
        grads = gradients(self.graph, outputs, list(leaves), seeds=seeds)
        held = self.values.evaluate_new_nodes(set(grads.values()), device)  # (the gradients, until wrapped)
        pairs = []  # (placeholder, its gradient)
        starts = []  # where eager autograd goes on from each: the history it had when the call began
        for leaf_node, grad_node in grads.items():
            if grad_node is not None:
                g = Tensor._wrap(held[grad_node] if grad_node in held else self.values.value(grad_node, device))
                self.rebind(g, grad_node)  # (live: a later segment of the trace may read it)
                pairs.append((leaves[leaf_node], g))
                history = self.entry_histories.get(leaf_node)
                starts.append(leaves[leaf_node] if history is None else with_history(g._data, history))
        if any(t.grad_fn is not None for t in starts):
            # a placeholder with autograd history made outside the function (a non-leaf argument,
            # a view of a leaf): eagerly, the backward goes on through it to the leaves, each of
            # which gets one summed gradient; so does this call's (one eager backward from every
            # placeholder), and later calls run eagerly (a program cannot reach that history)
            run_eagerly("backward() inside reaches the autograd history of a tensor made outside the "
                        "function (a non-leaf argument, or a view of a leaf)")
            # (from each placeholder's history when the call began: an in-place op gave it a newer one)
            with in_mode(None):
                run_backward(starts, [g for _, g in pairs], retain_graph, False)
            return
        assigned = set()  # ids of the memory given to a leaf's .grad so far
        with final_callbacks():  # (DDP waits for its allreduces in one: they are recorded too)
            for leaf, g in pairs:
                if g.dtype != leaf.dtype:  # (as PyTorch's engine: a gradient has its input's dtype)
                    g = g.to(leaf.dtype)
                hooked = False
                for hook in leaf._hooks or ():
                    replaced = hook(g)
                    hooked = True
                    if replaced is not None:
                        check_hook_result(hook, replaced, g)
                        g = replaced
                self._accumulate_grad(leaf, g, assigned, hooked)
                for hook in leaf._post_accumulate_hooks or ():
                    if hook(leaf) is not None:
                        raise RuntimeError("Tensor post accumulate grad hooks should return None.")

    def _made_grad(self, grad):
        """Is `grad` a .grad this trace made (by a backward(), or a tensor made and assigned
        here), not one it added into? A compiled call then gives the param a new .grad."""
        return grad is not None and (id(grad) in self.grads_made or grad._born is self)

    def made_here(self, tensor):
        """Did this trace make `tensor` (an op's result or a constant), rather than get it (an
        argument, a param, a closed-over tensor)?"""
        token = tensor._node
        if token is not None and token[0] is self:
            return self.graph.node(token[1]).op not in ("input", "param")
        return tensor._born is self

    def _accumulate_grad(self, leaf, g, assigned, hooked=False):
        """`.grad += g` for a leaf, as eager mode's AccumulateGrad: a first gradient is the
        leaf's own (a copy where its memory is another leaf's .grad, a hook saw it, it came
        from outside the trace or is a broadcast), and a later one adds into a .grad that
        existed before the call in its own memory (which stays the same tensor), else makes a
        new sum."""
        existing = leaf.grad
        if existing is None:
            owner = id(memory_owner(g._data))
            if hooked or owner in assigned or not self.made_here(g) or has_internal_overlap(g._data) \
                    or not g._data.flags.c_contiguous:  # (eager's is a contiguous copy: a transposed one is not)
                g = g.clone()
                owner = id(memory_owner(g._data))
            assigned.add(owner)
            leaf.grad = g
            self.grads_made.add(id(g))
        elif self._made_grad(existing) or existing.requires_grad \
                or existing.shape != g.shape or not existing._data.flags.writeable \
                or has_internal_overlap(existing._data):
            leaf.grad = existing + g
            self.grads_made.add(id(leaf.grad))
        else:
            if self.known.get(id(leaf)) in self.graph.inputs:  # (a program binds no argument's .grad)
                run_eagerly("backward() adds into the .grad an argument already has")
            with no_grad():
                existing.add_(g)

    def release(self):
        """Drop what only tracing needed (eager values, kept tensors). Tensors touched while
        tracing keep a token naming this tracer; this keeps that from holding every
        intermediate array of the trace alive."""
        self.values = TraceValues(self.graph)
        self.scalar_constants = {}
        self.placeholders_under = {}
        self.keep = []
        self.live = {}
        self.placeholder_tensors = {}
        self.known = {}
        self.grads_written, self.grad_readers, self.grad_view_readers = {}, {}, {}
        self.saw_without_grad, self.saw_with_grad = {}, {}
        self.externals = [(name, None) for name, _ in self.externals]

    def alive_nodes(self):
        return {n for n, ref in self.live.items() if ref() is not None}

    # ------------------------------------------------------------------ finishing
    def _eager_backward_error(self, outputs):
        """The error eager backward() from these outputs would raise because an in-place op
        overwrote a value saved for it (compiled calls must raise it too), or None. Found by a
        trial backward that accumulates nothing."""
        from .autograd import BACKWARD_TWICE, run_backward
        from .device_tensors import like
        from .dispatch import ModifiedTensorError
        roots = [t for t in outputs if t.grad_fn is not None]
        if not roots:
            return None
        seeds = [Tensor._wrap(like(np.ones(t.shape, t._data.dtype), t._data)) for t in roots]
        try:
            with in_mode(None):
                run_backward(roots, seeds, retain_graph=True, create_graph=False, inputs=roots, prune=False)
        except ModifiedTensorError as error:
            return str(error)
        except RuntimeError as error:  # a history a backward() freed: see Tracer.output_facts' freed_outputs
            if BACKWARD_TWICE not in str(error):
                raise
        return None

    def _output_views(self, outputs, watched):
        """{output position: (kind, target, view chain, detached)} for each returned tensor that
        is an input, param or closed-over tensor, or a view of one: a compiled call returns it
        as a view of the caller's tensor again (after writing mutations back), as eager does."""
        owners = {id(t): (kind, target) for kind, target, t in watched}
        found = {}
        for position, tensor in enumerate(outputs):
            root, chain = self.functional_root(tensor)
            owner = owners.get(id(root))
            if owner is not None and tensor._detached and root is not tensor and tensor.__dict__.get("grad_fn"):
                # a detached alias of an argument that an in-place op gave a history of its own
                self.eager_reason = self.eager_reason or "returns a detached alias of an argument written in place with autograd recording"
            if owner is not None:
                found[position] = (*owner, chain, tensor._detached and root is not tensor, creation_of(tensor))
        return found

    def _shared_roots(self, outputs, skip):
        """Roots (not results, inputs or params themselves) of which two or more results are views."""
        by_root = {}
        for position, tensor in enumerate(outputs):
            if position not in skip and tensor._base is not None:  # (a detached alias shares it too)
                by_root.setdefault(id(tensor._base), [tensor._base, 0])[1] += 1
        return [root for root, count in by_root.values()
                if count > 1 and id(root) not in self.known and not any(root is t for t in outputs)]

    def finish(self, outputs, watched):
        """Set the graph's outputs and turn rebound inputs/params into mutations.

        `watched` lists (kind, target, tensor) for every input and param; closed-over
        (external) tensors are watched too."""
        for tensor in outputs:  # (first: a closed-over tensor the function only returns becomes a param here)
            self.node_of(tensor)
        watched = list(watched) + [("param", name, t) for name, t in self.externals]
        stale = stale_histories(outputs)
        freed = freed_histories(outputs, stale)
        views = self._output_views(outputs, watched)
        # views of one intermediate that is not returned (`return h.t(), h.expand(...)`): the
        # graph returns that intermediate too, after the results, to derive them from
        extended = list(outputs) + self._shared_roots(outputs, set(views))
        # a view of a .grad this trace made (`return w.grad.view(-1)`): the graph returns that
        # .grad too, so a compiled call derives the view from the param's new .grad, as eagerly
        for grad in [t.grad for _, _, t in watched if self._made_grad(t.grad)]:
            if not any(t is grad for t in extended) and any(
                    t._base is not None and t._base is (grad._base if grad._base is not None else grad)
                    for i, t in enumerate(outputs) if i not in views):
                extended.append(grad)
        self.graph.outputs = [self._cut_if_eager_cuts(t, self.node_of(t)) for t in extended]
        self.output_facts = {"output_views": views,
                             "outputs_without_grad": [i for i, t in enumerate(outputs) if not t.requires_grad],
                             "stale_outputs": stale,
                             "views_of_outputs": views_of_outputs(extended, set(views)),
                             "freed_outputs": freed,
                             "outputs_requiring_grad": [(i, t.__dict__.get("grad_fn") is not None)
                                                        for i, t in enumerate(outputs)
                                                        if t.requires_grad and i not in views and i not in stale],
                             "live_histories": [i for i, t in enumerate(outputs) if t.requires_grad and i not in views
                                                and i not in stale and i not in freed and t.grad_fn is not None],
                             "backward_error": self._eager_backward_error(
                                 [t for i, t in enumerate(outputs) if i not in stale]) if self.wrote else None,
                             "ran_backward": self.ran_backward}
        fresh_grads = self.output_facts["fresh_grads"] = set()
        grads_are_views = self.output_facts["grads_are_views"] = []
        self.output_facts["grads_apart"], shared = grads_apart(watched, self.grads_of)
        if not self.output_facts["grads_apart"]:  # (bound_grads.py then holds each to the tensor it was)
            self.output_facts["grads_held"] = {name: weakref.ref(t) for _, name, t in watched if name in self.grads_of}
        for kind, target, tensor in watched:
            placeholder = self.known.get(id(tensor))
            token = tensor._node
            if token is not None and token[0] is self and token[1] != placeholder:
                self.graph.add_mutation(kind, target, token[1])
            grad = tensor.grad  # set by a backward() inside the traced code
            if grad is not None and grad._node is None and grad._born is self:
                self.node_of(grad)  # (`w.grad = torch.zeros(3)` that no op read: a constant, new each call)
            if grad is not None and grad._node is not None and grad._node[0] is self:
                node = self.graph.node(grad._node[1])
                # (`w.grad = x` or a view of x, for an argument, param or closed-over x: that memory each call)
                view = self._output_views([grad], watched).get(0) if id(tensor) in self.grads_written else None
                if view is not None:
                    grads_are_views.append((kind, target, view))
                elif node.op not in ("input", "param"):
                    self.graph.add_mutation(f"{kind}_grad", target, grad._node[1])
                    if self._made_grad(grad) or id(grad) in self.grads_assigned \
                            and id(memory_owner(grad._data)) not in shared:
                        fresh_grads.add((f"{kind}_grad", target))  # (a new .grad tensor each call)
        return self.graph


class _Either:
    """Weak references to the tensors holding one node: called, the first one alive, or None."""
    __slots__ = ("refs",)

    def __init__(self, known, held):
        self.refs = (known.refs if type(known) is _Either else (known,)) + (held,)

    def __call__(self):
        return next((t for t in (ref() for ref in self.refs) if t is not None), None)


class _Deriving:
    def __init__(self, tracer):
        self.tracer = tracer

    def __enter__(self):
        self.previous = self.tracer.deriving
        self.tracer.deriving = True

    def __exit__(self, *exc):
        self.tracer.deriving = self.previous
        return False


def recording(tracer):
    """Context manager that puts `tracer` on top of the mode stack."""
    return in_mode(tracer)


def _uniform(data):
    """Do all elements of `data` have one value, signs of zeros included (not NaN)?"""
    first = data.reshape(-1)[0]
    return bool((data == first).all()) and (data.dtype.kind != "f" or bool((np.signbit(data) == np.signbit(first)).all()))
