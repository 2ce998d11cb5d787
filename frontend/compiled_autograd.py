"""The backward of a compiled call: a forward program that also returns the saved activations,
and a backward program from the autodiff pass, both compiled by the backend. Eager autograd
sees one node whose VJP runs the compiled backward.
"""
import numpy as np

from ember.passes.autodiff import split_forward_backward
from .autograd import Node
from .segments import array_of
from .tensor import Tensor


class CompiledBackward:
    """Quacks like a Primitive for the autograd engine: `vjp` runs the backward program."""

    name = "compiled_function"
    vjp_uses_output = False
    kind = "opaque"

    def __init__(self, plan, saved, params):
        self.plan, self.saved, self.params = plan, saved, params

    def vjp(self, g, out, *wrt_tensors):
        fb = self.plan.split
        inputs = dict(self.saved)
        inputs[fb.seeds[0]] = g._data
        arrays = {name: t._data for name, t in self.params.items() if name in fb.backward.params}
        results = self.plan.backward(inputs, arrays)
        by_wrt = dict(zip(fb.wrt, (results[o] for o in fb.grad_outputs)))
        return tuple(Tensor._wrap(np.asarray(by_wrt[w])) if w in by_wrt else None for w in self.plan.wrt_nodes)


class DifferentiablePlan:
    """Forward and backward programs for one segment and one choice of `wrt` placeholders."""

    def __init__(self, graph, wrt_nodes, output, backend):
        self.wrt_nodes = list(wrt_nodes)
        self.split = split_forward_backward(graph, self.wrt_nodes, outputs=[output])
        self.forward = backend.compile(self.split.forward)
        self.backward = backend.compile(self.split.backward)


def plan_for(segment, wrt_nodes, backend):
    key = tuple(wrt_nodes)
    plans = segment.__dict__.setdefault("differentiable_plans", {})
    if key not in plans:
        plans[key] = DifferentiablePlan(segment.graph, wrt_nodes, segment.result_nodes[0], backend)
    return plans[key]


def can_use_compiled_backward(segment):
    """One segment (no guards) with exactly one floating-point output."""
    graph = segment.graph
    return (segment.guard is None and len(segment.result_nodes) == 1 and len(graph.outputs) >= 1
            and segment.result_nodes[0] in graph.outputs and graph.spec(segment.result_nodes[0]).dtype.is_floating_point)


def run_with_compiled_backward(segment, env, params, backend):
    """Run the forward program; return the output tensor, linked to a compiled backward."""
    graph = segment.graph
    tensors = {node: env[node] for node in graph.inputs}
    tensors.update({graph.params[name]: t for name, t in params.items() if name in graph.params})
    wrt_nodes = [n for n, t in tensors.items() if isinstance(t, Tensor) and t.requires_grad]
    plan = plan_for(segment, wrt_nodes, backend)
    inputs = {i: array_of(env[i]) for i in graph.inputs}
    arrays = {name: t._data for name, t in params.items() if name in graph.params}
    values = plan.forward(inputs, arrays)
    env.update(values)
    saved = {s: values[s] if s in values else inputs.get(s, arrays.get(graph.node(s).attrs.get("name")))
             for s in plan.split.saved}
    out_node = segment.result_nodes[0]
    result = Tensor._wrap(np.asarray(values[out_node]))
    Node.attach(result, CompiledBackward(plan, saved, params), [tensors[n] for n in wrt_nodes], {})
    env[out_node] = result
    return result
