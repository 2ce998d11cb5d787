"""The backward of a compiled call: a forward program that also returns the saved activations,
and a backward program from the autodiff pass, both compiled by the backend. Eager autograd
sees one node (`CompiledFunctionBackward0`) whose VJP runs the compiled backward, after
checking, as every eager node does, that no value it saved was overwritten in place since.
"""
import traceback
import weakref

import numpy as np

from ember import config

from ember.ops import PRIMITIVES
from ember.passes.autodiff import split_forward_backward
from .autograd import Node, modified_message
from .dispatch import STATE, ModifiedTensorError
from .segments import array_of
from .tensor import Tensor
from .device_tensors import copy_array
from ember.runtime.device_arrays import device_of


class CompiledBackward:
    """Quacks like a Primitive for the autograd engine: `vjp` runs the backward program.

    What it keeps of the forward: `saved` ({node: array} for the split's saved values; for a
    saved view of a tensor the call writes, that tensor's memory, viewed again when the
    backward runs), `param_arrays` (the params' arrays as the forward read them) and `reads`:
    for each caller tensor whose memory the backward reads, directly or through a view,
    (tensor, how the error names it, its version when the forward read it), or None for a
    placeholder that is no tensor. `result` (a weak reference) and `result_version` do the
    same for the returned output when the backward reads it (exp's VJP does)."""

    name = "compiled_function"
    vjp_uses_output = False
    kind = "opaque"

    def __init__(self, plan, saved, param_arrays, reads, result=None):
        self.plan, self.saved, self.param_arrays, self.reads = plan, saved, param_arrays, reads
        self.result = None if result is None else weakref.ref(result)  # weakly: result -> node -> result
        self.result_version = 0 if result is None else result._version

    def vjp(self, g, out, *wrt_tensors):
        if STATE.grad_enabled:  # backward(create_graph=True) / autograd.grad(create_graph=True) through it
            raise RuntimeError("ember.compile: a double backward (create_graph=True) through the result of a "
                               "compiled call is not supported: its backward is machine code without history. "
                               "Compute the gradient inside the compiled function, or call the function eagerly.")
        self.check_saved_versions()
        fb = self.plan.split
        inputs = dict(self.saved)
        for s, steps in self.plan.view_steps.items():
            inputs[s] = _apply_views(steps, inputs[s])
        inputs[fb.seeds[0]] = g._data
        results = self.plan.backward(inputs, self.param_arrays)
        by_wrt = dict(zip(fb.wrt, (results[o] for o in fb.grad_outputs)))
        return tuple(Tensor._wrap(np.asarray(by_wrt[w])) if w in by_wrt else None for w in self.plan.wrt_nodes)

    def keeps_values(self):
        """(autograd._kept_values) Does the backward program read values the forward kept? Then a
        second backward after a free raises, as PyTorch's compiled function does."""
        return bool(self.saved) or bool(self.param_arrays) or any(read is not None for read in self.reads) \
            or self.result is not None

    def check_saved_versions(self):
        """PyTorch's "modified by an inplace operation" error if a tensor whose memory the
        backward reads was written in place after the forward read it."""
        for read in self.reads:
            if read is not None and read[0]._version != read[2]:
                tensor, which, version = read
                raise ModifiedTensorError(modified_message(tensor, NODE_NAME, which, version))
        result = self.result() if self.result is not None else None
        if result is not None and result._version != self.result_version:
            raise ModifiedTensorError(modified_message(result, NODE_NAME, "output 0", self.result_version))


class _NodeName:
    """What `modified_message` needs of a node: its name."""

    @staticmethod
    def name():
        return "CompiledFunctionBackward0"


NODE_NAME = _NodeName()


class DifferentiablePlan:
    """Forward and backward programs for one segment and one choice of `wrt` placeholders,
    and what the backward reads of the caller's memory."""

    @property
    def backward(self):
        """The backward program, compiled when a backward() first needs it: a model called with
        grad enabled but never differentiated (eval() without no_grad) compiles no backward."""
        if self._backward is None:
            self._backward = self._backend.compile(self.split.backward)
        return self._backward

    def __init__(self, segment, wrt_nodes, backend):
        graph = segment.graph
        self.wrt_nodes = list(wrt_nodes)
        self.output = segment.result_nodes[0]
        self.split = split_forward_backward(graph, self.wrt_nodes, outputs=[self.output])
        self.forward = backend.compile(self.split.forward)
        self._backend, self._backward = backend, None  # compiled on the first backward() (see `backward`)
        self.param_names = list(graph.params)
        saved = self.split.saved
        roots = {s: _caller_root(graph, s) for s in saved}
        # The caller's tensors whose memory the backward reads, with their versions checked as
        # eagerly: saved placeholders (inputs, or values of earlier segments), the params the
        # backward program takes, and the tensor under a saved view of one (eagerly, a view
        # shares its base's version counter: `x.reshape(3, 1)` saved, then `x.mul_(10)`, raises)
        placeholders, param_names = {}, {}
        for kind, root, _ in roots.values():
            if kind == "input":
                placeholders.setdefault(root, _describe_placeholder(graph.node(root)))
            elif kind == "param":
                param_names.setdefault(root, f"param '{root}'")
        for name in self.split.backward.params:
            param_names.setdefault(name, f"param '{name}'")
        self.read_placeholders = list(placeholders.items())
        self.read_params = list(param_names.items())
        # The call's own mutations are written back after the forward (jit's _write_back) into
        # the targets' memory, as eager in-place ops write: the backward reads a saved input or
        # param the call writes, and views of it, in the new state, as eagerly. A write eager
        # autograd sees makes the compiled call fail backward anyway (Segment.backward_error);
        # one it does not see (through `.data`) must not, so those versions count from after
        # the write-back.
        written_params = {m.target for m in segment.mutations if m.kind == "param"}
        inputs_written = any(m.kind == "input" for m in segment.mutations)

        def may_be_written(kind, root):
            if kind == "input":
                return inputs_written and not graph.node(root).attrs.get("carried")
            return kind == "param" and root in written_params

        reads = [("input", s) for s, _ in self.read_placeholders] + [("param", n) for n, _ in self.read_params]
        self.versions_after_write_back = [k for k, (kind, root) in enumerate(reads) if may_be_written(kind, root)]
        # saved views of such tensors: derived again from their memory when the backward runs
        self.rederived = [(s, kind, root) for s, (kind, root, steps) in roots.items()
                          if steps and may_be_written(kind, root)]
        self.view_steps = {s: roots[s][2] for s, _, _ in self.rederived}
        self.saved_computed = [s for s in saved if graph.node(s).op != "input" and s not in self.view_steps]
        # A mutation's new value may become the target's own array when written back: the
        # backward keeps a copy (today's write-back copies values from this forward program,
        # which it cannot adopt; the copy keeps that an implementation detail)
        written = {m.node for m in segment.mutations}
        self.written = [s for s in self.saved_computed if s in written]
        self.private = None  # saved values to copy on every call: `written`, and those the program
        # returns as an input's or param's own array (found on the first call)


def _caller_root(graph, node_id):
    """(kind, root, view steps): ("input", placeholder, steps) or ("param", name, steps) if
    the value of `node_id` is a placeholder or param, or views of one (ember.ops' `view=True`)
    made by `steps` [(impl, attrs), ...]; else (None, None, None)."""
    node = graph.node(node_id)
    steps = []
    while len(node.inputs) == 1 and (node.op == "stop_gradient" or PRIMITIVES[node.op].view):
        steps.append((PRIMITIVES[node.op].impl, node.attrs))
        node = graph.node(node.inputs[0])
    steps.reverse()
    if node.op == "input" and not node.attrs.get("rng"):
        return "input", node.id, steps
    if node.op == "param":
        return "param", node.attrs["name"], steps
    return None, None, None


def _apply_views(steps, array):
    for impl, attrs in steps:
        array = impl(array, **attrs)
    return np.asarray(array)


def _describe_placeholder(node):
    return f"value '{node.name}'" if node.attrs.get("carried") else f"input '{node.name}'"


def plan_for(segment, wrt_nodes, backend):
    key = tuple(wrt_nodes)
    plans = segment.__dict__.setdefault("differentiable_plans", {})
    if key not in plans:
        plans[key] = DifferentiablePlan(segment, wrt_nodes, backend)
    return plans[key]


def can_use_compiled_backward(segment):
    """One segment (no guards) with exactly one floating-point output (and, for a dynamic one,
    forward and backward programs its sizes let the compiler build: else its ops replay eagerly)."""
    graph = segment.graph
    return (not segment.replays_autograd and segment.guard is None and len(segment.result_nodes) == 1
            and len(graph.outputs) >= 1
            and segment.result_nodes[0] in graph.outputs and graph.spec(segment.result_nodes[0]).dtype.is_floating_point)


def run_with_compiled_backward(segment, env, params, backend):
    """Run the forward program; return the output tensor, linked to a compiled backward."""
    graph = segment.graph
    tensors = {node: env[node] for node in graph.inputs}
    tensors.update({graph.params[name]: t for name, t in params.items() if name in graph.params})
    wrt_nodes = [n for n, t in tensors.items() if isinstance(t, Tensor) and t.requires_grad]
    inputs = {i: array_of(env[i]) for i in graph.inputs}
    sizes = None
    if graph.symbols is not None:  # (a dynamic program: its backward is told the sizes its inputs may not show)
        try:
            plan = plan_for(segment, wrt_nodes, backend)
            plan.backward  # (compiled now: a backward it cannot build replays eagerly instead)
        except Exception:
            if config.DEBUG:
                traceback.print_exc()
            segment.replays_autograd = True
            from .segments import replay_with_autograd
            replay_with_autograd(graph, env, params)
            return env[segment.result_nodes[0]]
        sizes = graph.symbols.sizes_or_raise(lambda n: inputs[n].shape, graph)
    else:
        plan = plan_for(segment, wrt_nodes, backend)
    arrays = {name: params[name]._data for name in plan.param_names}
    # versions as the forward reads them: the caller's in-place writes after this raise in backward
    reads = []
    for s, which in plan.read_placeholders:
        tensor = env[s]
        reads.append((tensor, which, tensor._version) if isinstance(tensor, Tensor) else None)
    for name, which in plan.read_params:
        tensor = params[name]
        reads.append((tensor, which, tensor._version))
    values = plan.forward(inputs, arrays)
    env.update(values)
    saved = {s: values[s] if s in values else inputs[s] for s in plan.split.saved}
    _keep_private_copies(plan, saved, inputs, arrays)
    for s, kind, root in plan.rederived:  # the memory its views are derived from when backward runs
        saved[s] = inputs[root] if kind == "input" else arrays[root]
    out_node = plan.output
    result = Tensor._wrap(np.asarray(values[out_node]))
    node = CompiledBackward(plan, saved, arrays, reads, result if out_node in saved else None)
    for carrier, symbol in plan.split.size_carriers.items():  # (an array of that length: its size)
        node.saved[carrier] = np.broadcast_to(np.int8(0), (sizes[symbol],))
    Node.attach(result, node, [tensors[n] for n in wrt_nodes], {})
    env[out_node] = result
    return result


def versions_after_write_back(segment, env):
    """Called by the compiled call after it wrote `segment`'s mutations back (frontend/jit.py):
    the versions a compiled backward checks for the tensors the call may write count from
    here, so the call's own write-back does not make its backward fail (see DifferentiablePlan)."""
    if not segment.result_nodes:
        return
    fn = getattr(env[segment.result_nodes[0]], "grad_fn", None)
    backward = getattr(fn, "prim", None)
    if type(backward) is CompiledBackward:
        reads = backward.reads
        for k in backward.plan.versions_after_write_back:
            if reads[k] is not None:
                tensor, which, _ = reads[k]
                reads[k] = (tensor, which, tensor._version)


def _keep_private_copies(plan, saved, inputs, arrays):
    """Copy the computed saved values whose memory the caller can reach: a mutation's new value,
    and a value that is an input's or param's array or a numpy view of one (a program may return
    an input as it is; the interpret backend's reshape is a view). The backward then reads what
    the forward computed, as torch.compile's does."""
    if plan.private is None:  # which results are the caller's arrays is fixed by the program
        caller = {id(a) for a in inputs.values()} | {id(a) for a in arrays.values()}
        plan.private = plan.written + [s for s in plan.saved_computed
                                       if id(saved[s]) in caller and s not in plan.written]
    for s in plan.private:
        saved[s] = copy_array(saved[s])
    for s in plan.saved_computed:
        value = saved[s]
        if type(value) is np.ndarray and value.base is not None and device_of(value) is None:
            saved[s] = value.copy()  # (a device array's base is its device buffer, not an array the caller holds)
