"""The eager values a trace saw, by node: what the tracer's backward() evaluates the new
gradient nodes from (frontend/tracer.py).

An op's result is held weakly: an array nobody else holds (an optimizer's temporary, a
gradient's intermediate) is freed as eager mode frees it, instead of living until the trace
ends. (A small GPT's training step held 240 MB of values where eager mode holds 50 MB; first
touching that memory cost a warm compile's first call 0.06-0.1 s of page faults.) A value a
later backward() needs after its array was freed is computed again from its inputs' values,
as eager mode computed it (the same implementation; random draws read their seed input).
Placeholders, constants, the copies `before_write` keeps, and the results of ops with effects
outside the program (collectives) are held strongly: they cannot be computed again.
"""
import weakref

import numpy as np

from .views import memory_owner

_Weak = weakref.ReferenceType


class TraceValues:
    def __init__(self, graph):
        self.graph = graph
        self._values = {}  # node id -> its value, or a weakref to it (an op's result)
        self._over = {}  # id(memory owner) -> nodes whose value lies in that memory
        self.recomputed = 0  # values computed again after their arrays were freed

    def __contains__(self, node):
        return node in self._values

    def remember(self, node, array, weak=False):
        if isinstance(array, np.ndarray):
            self._over.setdefault(id(memory_owner(array)), []).append(node)
            if weak:
                array = weakref.ref(array)
        self._values[node] = array

    def same_as(self, node, other):
        """`node` stands for the value `other` holds (a stop_gradient of it)."""
        value = self._values.get(other)
        if type(value) is _Weak:
            if value() is None:  # (freed: computed again from `other` if needed)
                self._values[node] = value
                return
            value = value()
        if isinstance(value, np.ndarray):
            self._over.setdefault(id(memory_owner(value)), []).append(node)
            self._values[node] = weakref.ref(value)
        else:
            self._values[node] = value

    def value(self, node, device=None):
        """The value of `node` seen while tracing (computed again if its array was freed)."""
        value = self._values[node]
        if type(value) is _Weak:
            value = value()
            if value is None:
                value = self._recompute(node, device)
        return value

    def evaluate_new_nodes(self, keep, device=None):
        """Compute the nodes added to the graph since the last values were recorded (the
        gradient nodes a backward() just added), in order; each intermediate is held only until
        its last use among them. Returns {node: value} for the nodes in `keep` it computed."""
        from ember.ops import PRIMITIVES
        from .device_ops import evaluate
        new = [node for node in self.graph.nodes() if node.id not in self._values]
        last_use = {}
        for position, node in enumerate(new):
            for i in node.inputs:
                last_use[i] = position
        held = {}
        for position, node in enumerate(new):
            arrays = [held[i] if i in held else self.value(i, device) for i in node.inputs]
            out = evaluate(PRIMITIVES[node.op], arrays, node.attrs, device)
            self.remember(node.id, out, weak=True)
            held[node.id] = out
            for i in node.inputs:
                if last_use.get(i) == position and i not in keep:
                    held.pop(i, None)
        return {node: value for node, value in held.items() if node in keep}

    def before_write(self, array):
        """An in-place op is about to overwrite `array`'s memory: the values recorded over that
        memory are copied first, so they keep the values their nodes stand for."""
        for node in self._over.pop(id(memory_owner(array)), ()):
            value = self._values.get(node)
            if type(value) is _Weak:
                value = value()
            if isinstance(value, np.ndarray):
                self._values[node] = value.copy()

    def _recompute(self, node, device):
        """`node`'s value from its inputs', each computed again first where freed too (a chain
        of freed values is walked without recursion)."""
        from ember.ops import PRIMITIVES
        from .device_ops import evaluate
        done = {}
        pending = [node]
        while pending:
            current = pending[-1]
            if current in done:
                pending.pop()
                continue
            inputs = self.graph.node(current).inputs
            missing = [i for i in inputs if i not in done and self._freed(i)]
            if missing:
                pending.extend(missing)
                continue
            spec = self.graph.node(current)
            arrays = [done[i] if i in done else self.value(i, device) for i in inputs]
            done[current] = evaluate(PRIMITIVES[spec.op], arrays, spec.attrs, device)
            self.recomputed += 1
            pending.pop()
        for computed, array in done.items():  # (held again weakly: freed when no longer used)
            self._values[computed] = weakref.ref(array) if isinstance(array, np.ndarray) else array
        return done[node]

    def _freed(self, node):
        value = self._values[node]
        return type(value) is _Weak and value() is None
