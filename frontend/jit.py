"""`ember.compile`: the signature cache, the tree of guarded segments, recompiles and the report.

The one place that drives the whole pipeline: trace (eagerly, on the real inputs), split at
guards, hand each new segment to a backend, run compiled segments on later calls, check guards
between them, write mutations back. Never a silently wrong result: a changed signature or a new
guard outcome traces again; past the recompile limit the function runs eagerly, with one warning
that says why and how to fix it."""
import threading
import time
import traceback
import warnings
import weakref

import numpy as np

from ember import config
from ember.paused_gc import paused_gc
from .compile_modes import check_dynamic_and_options, check_mode, refuse_graph_break
from .dispatch import STATE
from .nn.module import _settings_version, _tree_version  # bumped when a module's tree or settings change
from .python_guards import PythonState, explain_change
from .runtime_scalars import RuntimeScalars, plain_numbers
from .compile_report import CompileReport, TraceRecord
from .signatures import (explain_signature_change, _aliasing, _leaf_signature, _plain_settings,
                         _positional_containers, _positional_paths, input_name)
from .segments import Segment, same_program, split_trace, array_of, walk_segments
from .compiled_autograd import versions_after_write_back
from .tensor import Tensor
from .views import root_of, writable
from .device_tensors import copy_array
from ember.backends.cuda import tf32_switches
from .trace_backends import TraceBackends, device_of_tensors
from ember.runtime import device_arrays
from ember.runtime.device_arrays import device_of
from .autograd import BACKWARD_TWICE, fails_backward, without_gradient_edges
from .grad_state_trees import GradStateTrees, grad_state_holds
from .bound_grads import param_sources
from .external_names import ExternalNumbers, GradOf, cleared_grads, held_external
from .optimizer_guards import StateRebound, holds_after_the_call, hook_ids, state_changed_by_call
from .tracer import Tracer, recording, module_state, observed_value
from .value_trees import flatten_tensors, rebuild, template_of
from .compiled_results import grads_as_views, returned_view, returned_view_of_mutated, write_back
from .result_histories import history_of
from .dynamic_shapes import DYNAMIC, DynamicDims
from .dynamic_calls import DynamicCalls
from ember.ir.symbols import SizesDoNotFit, SymDim

DEFAULT_RECOMPILE_LIMIT = 8
FREED_OR_REGRADED = ("a tensor whose .grad the program read has a .grad now, or has none now, or a closed-over "
                     "tensor was freed or is not the .grad it was")


class TraceTree:
    """Everything cached for one call signature: the root segment and how to bind inputs."""

    def __init__(self, root, input_nodes):
        self.root = root
        self.input_nodes = input_nodes
        self.unconfirmed = False  # the trace mutated state: confirm it by tracing once more
        self.without_grad = []  # weakrefs to tensors the program holds only while they have no .grad
        self.with_grad = []  # weakrefs to tensors the program holds only while they have a .grad
        self.param_sources = None  # cached by CompiledFunction._bind_params
        self.bound_params = None  # (segments, module view version, module, {name: tensor}): the same
        self.trains_itself = False  # the program writes new values into params that require grad
        self.segment_count = 0
        self.state_roots = set()  # ids of the roots of params and closed-over tensors (see _execute)
        self.scalar_slots = []  # the runtime scalars its programs read, in input order
        self.scalar_values = None  # their values when it was traced (see CompiledFunction._rekey_scalar_trees)
        self.trace_graph = None  # the whole traced graph (unguarded traces): a dynamic program is built from two
        self.check_sizes = None  # a dynamic tree: (its dims, the sizes traced) until checked at a third size
        self.dynamic_graph = None  # a dynamic tree: its symbolic graph (what the check compares)
        # a static program under a signature with dynamic dims: (those dims, the sizes it was traced at)
        self.static_sizes = None


class CompiledFunction(DynamicCalls):
    """The callable `ember.compile(fn)` returns for a function (see CompiledModule for modules)."""

    def __init__(self, fn, backend="llvm", recompile_limit=DEFAULT_RECOMPILE_LIMIT, module=None, fullgraph=False,
                 dynamic=None):
        self.fn, self.fullgraph = fn, fullgraph
        self._dynamic = DynamicDims(dynamic)  # which argument dims are dynamic (frontend/dynamic_shapes.py)
        self._lock = threading.RLock()
        self.module = module
        from ember.compiler import get_backend  # here: the compiler and llvmlite load on first compile, not at import
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.recompile_limit = recompile_limit
        self.name = type(module).__name__ if module is not None else getattr(fn, "__name__", "function")
        self.report = CompileReport(self.name, self.backend.name)
        self._backends = TraceBackends(self.backend, self.report)  # (each trace's, by the device of its tensors)
        self._cache = {}  # signature -> TraceTree
        self._grad_states = GradStateTrees()  # trees set aside for another .grad state
        self._signatures = []  # in the order first seen, for explaining misses
        self._eager = False
        self._views = {}  # cached module state, see _module_view
        self._settings = {}  # cached module flags and settings, see _module_parts
        self._reached = PythonState(fn, module, self._module_parts)  # the Python state fn reads: python_guards
        self._eager_signatures = set()  # see _returned_view_of_mutated
        self._labelled_modules = {}  # module parts' label -> the module (see _module_parts)
        self._external_numbers = ExternalNumbers()  # unnamed closed-over tensors' numbers, for every trace
        self._scalars = RuntimeScalars(lambda path: input_name(fn, path), self._modules_labelled)
        self.__wrapped__ = fn

    # ------------------------------------------------------------------ calling
    def __call__(self, *args, **kwargs):
        with self._lock:  # (one call at a time: a program's arena, outputs and tree are shared by its calls)
            return self._call(args, kwargs)

    def _call(self, args, kwargs):
        self.report.calls += 1
        if self._eager or STATE.recorder is not None:
            # (called from code being traced: its ops become part of that trace, inlined, as
            # torch.compile does; its own program would be a constant to the outer trace)
            return self.fn(*args, **kwargs)
        positional = not kwargs and all(type(a) is Tensor for a in args)  # the usual call: f(x, y)
        flat = list(zip(_positional_paths(len(args)), args)) if positional else flatten_tensors((args, kwargs), "args")
        signature = self._signature(args, kwargs, flat, positional)
        if any(i >= 0 for i in signature[1][1]):
            # arguments sharing memory: an in-place update through one must be seen through the
            # other, which the traced (functional) program cannot express; run this call eagerly
            self.report.eager_calls += 1
            return self.fn(*args, **kwargs)
        if signature in self._eager_signatures:
            self.report.eager_calls += 1
            return self.fn(*args, **kwargs)
        tree = self._cache.get(signature)
        if tree is not None and (tree.without_grad or tree.with_grad):  # (held to .grad states)
            tree = self._cache[signature] = self._grad_states.for_this_call(signature, tree)
        if tree is None:
            reason = self._miss_reason(signature)
            became_dynamic = self._signatures and self._scalars.learn(self._signatures[-1], signature)
            if became_dynamic:  # floats that changed are inputs from now on: signatures leave them out
                reason += f"; from now on inputs of the program (runtime scalars): {', '.join(became_dynamic)}"
                self.report.runtime_scalars = list(self._scalars.dynamic.values())
                signature = self._signature(args, kwargs, flat, positional)
            dynamic = self._learn_dynamic_dims(signature, flat)
            if dynamic is not None:  # dims whose size changed: one program for every size from now on
                reason += " (dynamic from now on)"
                signature = self._signature(args, kwargs, flat, positional)
                tree = self._cache.get(signature)
                if tree is not None and not tree.unconfirmed:
                    return self._execute(signature, tree, args, kwargs, [t for _, t in flat])
            return self._trace(signature, args, kwargs, reason, None, dynamic=dynamic)
        if tree.static_sizes is not None and self._sizes_of(flat, tree.static_sizes[0]) != tree.static_sizes[1]:
            # a program traced at one size under a signature with dynamic dims (after a runtime
            # scalar or another dim changed) meets another size: make it dynamic from the two
            return self._trace(signature, args, kwargs, "dims dynamic before, traced again at one size: "
                               "now at another", None, dynamic=(tree, tree.static_sizes[0]))
        if tree.unconfirmed:
            return self._trace(signature, args, kwargs, None, tree, confirming=True)
        if tree.check_sizes is not None and self._new_sizes(tree, flat):
            return self._trace(signature, args, kwargs, None, tree, verifying=True)
        inputs = [t for _, t in flat]
        if tree.scalar_slots:
            inputs += self._scalars.input_tensors(tree.scalar_slots)
        return self._execute(signature, tree, args, kwargs, inputs)

    def _execute(self, signature, tree, args, kwargs, inputs):
        params = self._bind_params(tree)
        if params is None:
            self._grad_states.set_aside(signature, tree)
            return self._trace(signature, args, kwargs, FREED_OR_REGRADED, None)
        grads = tree.param_sources[3]  # (.grads bound by path, frontend/bound_grads.py: as below)
        if grads is not None and grads.overlap(inputs):
            self.report.eager_calls += 1
            return self.fn(*args, **kwargs)
        roots = tree.state_roots
        if roots:
            for t in inputs:
                base = t._base
                if id(t if base is None else base) in roots:
                    # an argument sharing memory with a param or closed-over tensor (e.g. a view of
                    # it): a write through one must show through the other, which this program,
                    # traced without that sharing, cannot do; run this call eagerly
                    self.report.eager_calls += 1
                    return self.fn(*args, **kwargs)
        # outputs carry autograd history unless the program updates its own trainable params
        # (a whole training step: its loss is for reading, not for another backward)
        with_autograd = STATE.grad_enabled and not tree.trains_itself and (
            any(t.requires_grad for t in inputs) or any(t.requires_grad for t in params.values()))
        env = dict(zip(tree.input_nodes, inputs if with_autograd else [t._data for t in inputs]))
        segment = tree.root
        while True:
            try:
                segment.run(env, params, with_autograd, self._backends.for_device(segment.device))
            except SizesDoNotFit as error:  # (two dims of one size symbol differ in this call)
                self.report.eager_calls += 1
                self.report.eager_reasons.append(str(error))
                return self.fn(*args, **kwargs)
            if segment.guard is None:
                break
            outcome = observed_value(array_of(env[segment.guard.node]))
            child = segment.children.get(outcome)
            if child is None:
                g = segment.guard
                reason = (f"guard at {g.source or '?'} ({g.code or g.how}) was {g.expected!r}, now {outcome!r}")
                return self._trace(signature, args, kwargs, reason, tree)
            segment = child
        self.report.compiled_calls += 1
        outputs = [_as_tensor(env[node]) for node in segment.result_nodes]
        for out in outputs:
            if not out._data.flags.writeable:  # an expanded view from the interpreter: writes reach its one
                data = writable(out._data)  # element for all, as in PyTorch (else: a copy of its own)
                out._data = data if data is not None else np.array(out._data)
        passthrough = segment.passthrough.get(with_autograd)
        if passthrough is None:  # which results are an input or param unchanged: fixed per program
            callers = {id(t._data) for t in inputs}
            callers.update(id(t._data) for t in params.values())
            passthrough = segment.passthrough[with_autograd] = [
                position for position, out in enumerate(outputs)
                if id(out._data) in callers and position not in segment.output_views]
        for position in passthrough:
            # simplify made this result an input or param unchanged (x * 1, clone()): the caller
            # gets new memory, as eagerly, not its own
            out = outputs[position]
            if any(out is t for t in inputs) or any(out is t for t in params.values()):
                outputs[position] = Tensor._wrap(copy_array(out._data))
            else:
                out._data = copy_array(out._data)  # (a fresh result tensor: its autograd node stays)
        # (before the write-back: a result that is an input unchanged shows its value before the writes)
        grads = write_back(segment, env, params, inputs)
        grads_as_views(segment, params, inputs)  # (`w.grad = x[:3]`: a view of the caller's x, as eagerly)
        if with_autograd and segment.mutations:  # a compiled backward counts versions from after the write-back
            versions_after_write_back(segment, env)
        if with_autograd:
            for position in segment.outputs_without_grad:  # as eagerly: e.g. a .grad read in the function
                outputs[position] = outputs[position].detach()
            if segment.backward_error is not None:  # eagerly, backward() would hit an overwritten saved value
                outputs = [fails_backward(o, segment.backward_error) if o.requires_grad else o for o in outputs]
            for position, error in segment.stale_outputs.items():  # eagerly it requires grad, and its
                outputs[position] = fails_backward(outputs[position], error)  # history cannot be read
        if STATE.grad_enabled:
            for position, has_history in segment.outputs_requiring_grad:  # eagerly, even where no gradient reaches it
                out = outputs[position]
                if has_history and not out.requires_grad:
                    outputs[position] = without_gradient_edges(out)
                elif not has_history and (out.grad_fn is not None or not out.requires_grad):
                    # (a view made under no_grad of an intermediate that requires grad: no history)
                    outputs[position] = out = Tensor._wrap(out._data)
                    out.requires_grad = True
            for position in segment.freed_outputs:  # eagerly, backward() inside the function freed its history
                if with_autograd or position not in segment.output_views:
                    outputs[position] = fails_backward(outputs[position], BACKWARD_TWICE)
        if grads:  # (a returned .grad is that .grad itself, as eagerly, and a view of it a view of it)
            outputs = [grads.get(node, out) for node, out in zip(segment.result_nodes, outputs)]
        for position, (kind, target, chain, detached, creation) in segment.output_views.items():
            source = params[target] if kind == "param" else inputs[target]  # the caller's memory
            outputs[position] = returned_view(source, chain, detached, creation)
        for position, source, chain, detached, creation in segment.views_of_outputs:
            outputs[position] = returned_view(outputs[source], chain, detached, creation)
        return rebuild(segment.result, iter(outputs))

    def _bind_params(self, tree):
        """{param name: tensor} for every param of the tree's segments: module state by name,
        closed-over tensors through their weak references. None if one was freed."""
        if not grad_state_holds(tree):  # (a tensor the program saw without a .grad has one, or with one none)
            return None
        segments = tree.segment_count  # a new branch may bring new params
        if tree.param_sources is None or tree.param_sources[0] != segments:
            tree.param_sources = (segments, *param_sources(tree))  # (frontend/bound_grads.py)
        _, sources, externals, grads = tree.param_sources
        view = self._module_view() if self.module is not None else (None, {}, None, None)
        bound = tree.bound_params
        if bound is None or bound[0] != segments or bound[1] != view[0] or bound[2] is not view[3]:
            state = view[1]
            if any(state.get(name) is None for name in sources):
                return None
            bound = tree.bound_params = (segments, view[0], view[3], {name: state[name] for name in sources})
        params = dict(bound[3])
        for name, ref in externals:
            tensor = ref(params) if type(ref) is GradOf else ref()
            if tensor is None:
                return None
            params[name] = tensor
        if grads is not None and not grads.fit(params):  # (a .grad bound by path that no longer fits)
            return None
        return params

    def _module_view(self, module=None):
        """(tree version, {name: param or buffer}, [modules]) of the compiled module (or of a
        module the function reaches), cached until the module tree changes (ember.nn bumps a
        version whenever a submodule, param or buffer is replaced)."""
        module = self.module if module is None else module
        view = self._views.get(id(module))
        if view is None or view[0] != _tree_version[0] or view[3] is not module:
            view = (_tree_version[0], dict(module_state(module)), list(module.modules()), module)
            self._views[id(module)] = view
        return view

    def _modules_labelled(self, label):
        """[(path, module)] of the tree whose parts carry `label` (for runtime scalars)."""
        return list(self._labelled_modules[label].named_modules())

    def _module_parts(self, module, label, parts):
        """What of a module the program depends on besides tensor values: training flags, the
        identity, shape, dtype and requires_grad of its params and buffers, and its plain
        settings (Dropout.p, BatchNorm.momentum, attributes a forward reads)."""
        tree_version, state, modules, _ = self._module_view(module)
        self._labelled_modules[label] = module
        cached = self._settings.get(id(module))
        if cached is None or cached[0] != (tree_version, _settings_version[0]) or cached[1] is not module:
            cached = ((tree_version, _settings_version[0]), module, tuple(m.training for m in modules),
                      tuple(_plain_settings(m) for m in modules))
            self._settings[id(module)] = cached
        parts.append(("training", label, cached[2]))
        parts.append(("state", label, tuple([(id(t), t._data.shape, t._data.dtype, t.requires_grad, hook_ids(t))
                                             for t in state.values()])))
        parts.append(("settings", label, cached[3]))

    # ------------------------------------------------------------------ tracing
    def _trace(self, signature, args, kwargs, reason, tree, confirming=False, dynamic=None, verifying=False):
        with paused_gc():  # (ember/paused_gc.py)
            return self._trace_call(signature, args, kwargs, reason, tree, confirming, dynamic, verifying)

    def _trace_call(self, signature, args, kwargs, reason, tree, confirming, dynamic, verifying):
        if not confirming and not verifying and self._cache:
            if len(self.report.recompiles) >= self.recompile_limit:
                return self._fall_back(args, kwargs, reason)
            self.report.recompiles.append(reason)
        start = time.perf_counter()
        tracer = Tracer(self.name)
        tracer.called_without_grad = not STATE.grad_enabled  # (see grad_mode._enabling_grad)
        tracer.name_externals_of(self.fn, self._external_numbers)
        arg_tensors = flatten_tensors((args, kwargs), "args")
        input_nodes = [tracer.add_input(t, input_name(self.fn, path)) for path, t in arg_tensors]
        state = module_state(self.module)
        for name, t in state:
            tracer.add_param(t, name)
        histories = [history_of(t) for _, t in arg_tensors]
        watched_dims = dynamic[1] if dynamic is not None else ()
        if watched_dims:  # (comparisons of the dynamic sizes in the code are watched: see _symbolize)
            by_path = dict(arg_tensors)
            tracer.size_symbols = {int(by_path[path].shape[dim]): SymDim.symbol(f"d{k}")
                                   for k, (path, dim) in enumerate(watched_dims) if path in by_path}
        with self._scalars.substituted(tracer, args, kwargs) as (call_args, call_kwargs, scalar_slots, scalar_nodes):
            with recording(tracer):
                result = plain_numbers(self.fn(*call_args, **call_kwargs))
        input_nodes += scalar_nodes
        refreshed = self._scalars.refresh(signature)  # (with the outcomes of tests this trace added)
        if refreshed is not signature:
            self._rekey_scalar_trees(tree, refreshed)
            signature = refreshed
        if STATE.grad_enabled and any(history_of(t) is not h for (_, t), h in zip(arg_tensors, histories)):
            # an argument written in place with autograd recording: its new history is eager autograd's
            tracer.eager_reason = "writes in place into an argument that has autograd history"
        state_roots = {id(root_of(t)) for t in [t for _, t in state] + [t for _, t in tracer.externals]}
        if any(id(root_of(t)) in state_roots for _, t in arg_tensors):
            tracer.eager_reason = "an argument shares memory with a param or closed-over tensor it reads"
        outputs = flatten_tensors(result)
        self._trace_device = device_of_tensors([t for _, t in arg_tensors + list(state) + list(tracer.externals)])
        watched = [("input", i, t) for i, (_, t) in enumerate(arg_tensors)] + [("param", n, t) for n, t in state]
        graph = tracer.finish([t for _, t in outputs], watched)
        traced_graph = graph
        if dynamic is not None:
            graph, signature = self._symbolize(graph, tracer, dynamic, signature, args, kwargs, result)
            if graph is traced_graph:
                dynamic = None
        pieces = split_trace(tracer, graph)
        if self.fullgraph:
            refuse_graph_break(self.name, graph, tracer.eager_reason)
        for g in graph.guards:
            self.report.guards.setdefault((g.source, g.code, g.how), set()).add(g.expected)
        externals = {name: GradOf(*tracer.grads_of[name]) if name in tracer.grads_of else held_external(name, t, tracer)
                     for name, t in tracer.externals}
        trainable = {name for name, t in list(tracer.externals) + list(state) if t.requires_grad}
        output_facts = dict(tracer.output_facts, cleared_grads=cleared_grads(tracer))
        output_views = output_facts["output_views"]
        aliased = returned_view_of_mutated(graph, [o for i, o in enumerate(outputs) if i not in output_views],
                                            watched + [("param", n, t) for n, t in tracer.externals])
        without_grad = [weakref.ref(t) for t in tracer.saw_without_grad.values()]
        with_grad = [weakref.ref(t) for t in tracer.saw_with_grad.values()]
        tracer.release()
        if tracer.state_made_outside and dynamic is None and not verifying:
            signature = self._key_after_the_call(signature, tree, tracer, args, kwargs)
        changed = self._python_state_changed_by_call(signature, args, kwargs)
        if isinstance(changed, StateRebound):  # (on every step, as a rule: never compiled, never traced again)
            why = f"the call changes {changed}, which it reads (a compiled program cannot replay that)"
            if self.fullgraph:
                refuse_graph_break(self.name, graph, why)
            self._eager = True
            self.report.eager_reasons.append(f"{why}; {self.name} runs eagerly from now on")
            self._cache.pop(signature, None)
            return result
        if aliased is not None or changed is not None or tracer.eager_reason is not None:
            # a returned view of a tensor the function then updates in place (eager returns memory
            # that shows the update, which a compiled program's fresh outputs cannot reproduce),
            # Python state the function both reads and changes (a compiled call would not change
            # it), or autograd effects of the call that only eager mode has (tracer.eager_reason)
            why = (f"returns {aliased}" if aliased is not None else
                   f"the call changes {changed}, which it reads" if changed is not None else tracer.eager_reason)
            if self.fullgraph:
                refuse_graph_break(self.name, graph, why)
            self._eager_signatures.add(signature)
            self.report.eager_reasons.append(
                f"{self._describe_signature(signature)}: {why}; this signature runs eagerly")
            self._cache.pop(signature, None)
            return result

        if verifying:
            self._verify_dynamic(tree, traced_graph, tracer, signature, args, kwargs)
            return result
        if confirming:
            same = same_program(tree, pieces)
            tree.unconfirmed = not same
            if same:
                tree.without_grad, tree.with_grad = without_grad, with_grad  # (what the confirming call saw)
                self._compile_deferred(tree)
                return result
            if not grad_state_holds(tree):  # (traced in another .grad state: kept for when it comes back)
                self._grad_states.set_aside(signature, tree)
            reason = ("the traced program changed between two calls with the same signature (Python "
                      "state such as optimizer buffers created on the first step, or a value read with "
                      ".item()); using the new trace")
            if len(self.report.recompiles) >= self.recompile_limit:
                self._fall_back_after(reason)  # this call's eager result stands; later calls run eagerly
                return result
            self.report.recompiles.append(reason)
            tree = None
        if dynamic is None:
            new_segments, depth = self._attach(tree, pieces, externals, graph, result, signature, input_nodes,
                                               trainable, output_facts)
        else:
            try:
                new_segments, depth = self._attach(None, pieces, externals, graph, result, signature, input_nodes,
                                                   trainable, output_facts)
                # (two traces agreed on the program: no third is needed to confirm it)
                self._cache[signature].unconfirmed = False
                self._compile_deferred(self._cache[signature])
            except Exception as error:  # a dynamic program the compiler cannot build: this size, static
                if config.DEBUG:
                    traceback.print_exc()
                self._cache.pop(signature, None)
                self._signatures = [s for s in self._signatures if s != signature]
                self._dynamic.refuse(dynamic[1], f"its dynamic program did not compile ({type(error).__name__}: "
                                     f"{error})", lambda path: input_name(self.fn, path))
                self.report.dynamic_dims = self._dynamic.report_lines()
                signature = self._signature_of(args, kwargs)
                graph, pieces = traced_graph, split_trace(tracer, traced_graph)
                new_segments, depth = self._attach(None, pieces, externals, graph, result, signature, input_nodes,
                                                   trainable, output_facts)
        if dynamic is not None and signature in self._cache:  # (checked at the first call of a third size)
            dims = list(dynamic[1])
            seen = {tuple(self._dynamic.traced_sizes(dims, 0)), tuple(self._dynamic.traced_sizes(dims, 1))}
            self._cache[signature].check_sizes = (dims, seen)
            self._cache[signature].dynamic_graph = graph
            self._cache[signature].trace_graph = dynamic[0].trace_graph
        else:
            self._cache[signature].trace_graph = traced_graph if len(pieces) == 1 else None
        marked = [(part[1], d) for part in signature if part[0] == "tensor"
                  for d, size in enumerate(part[2]) if size == DYNAMIC]
        if marked and self._cache[signature].dynamic_graph is None:  # (static, under a dynamic signature)
            self._cache[signature].static_sizes = (marked, self._sizes_of(flatten_tensors((args, kwargs), "args"),
                                                                          marked))
        self._cache[signature].state_roots |= state_roots
        self._cache[signature].without_grad += without_grad
        self._cache[signature].with_grad += with_grad
        self._cache[signature].scalar_slots = scalar_slots
        self._cache[signature].scalar_values = dict(self._scalars.values)
        self.report.traces.append(TraceRecord(len(self.report.traces) + 1, reason or "first call",
                                              self._describe_signature(signature), len(graph), new_segments,
                                              len(graph.guards), time.perf_counter() - start))
        return result

    def _signature_of(self, args, kwargs):
        positional = not kwargs and all(type(a) is Tensor for a in args)
        flat = list(zip(_positional_paths(len(args)), args)) if positional else flatten_tensors((args, kwargs), "args")
        return self._signature(args, kwargs, flat, positional)

    def _attach(self, tree, pieces, externals, graph, result, signature, input_nodes, trainable, output_facts):
        """Add the trace's segments to the signature's tree, compiling only the new ones:
        follow the cached tree along the trace's guard outcomes to where it diverges."""
        start, parent = 0, None
        if tree is not None:
            node, depth = tree.root, 0
            while pieces[depth][1] is not None:
                child = node.children.get(pieces[depth][1].expected)
                if child is None:
                    start, parent = depth + 1, node
                    break
                node, depth = child, depth + 1
        built = []
        written = {m.target for m in graph.mutations if m.kind.startswith("param")}
        written.update(target for kind, target, _ in output_facts["grads_are_views"] if kind == "param")
        # a new trace that mutates state is confirmed by the next call's trace before any call
        # runs it: it compiles then, so a trace the next call does not repeat (an optimizer
        # creating its state on the first step) costs no compile; at once where an earlier process
        # confirmed this very graph (the disk cache says: a warm process traces a step once)
        deferred = parent is None and bool(graph.mutations)
        for sub, guard in pieces[start:]:
            segment = Segment(sub, guard, None)
            segment.device = self._trace_device
            last = guard is None  # the last segment writes the mutations back
            segment.externals = {n: r for n, r in externals.items() if n in sub.params or (last and n in written)}
            if built:
                built[-1].children[built[-1].guard.expected] = segment
            built.append(segment)
        if deferred and all(self._backends.confirmed_before(s) for s in built):
            deferred = False
        if not deferred:
            for segment in built:
                self._compile_segment(segment)
        built[-1].result = template_of(result)
        built[-1].result_nodes = list(graph.outputs)
        vars(built[-1]).update(output_facts)  # output_views, outputs_without_grad, backward_error, ...
        built[-1].mutations = list(graph.mutations)
        if parent is not None:
            parent.children[pieces[start - 1][1].expected] = built[0]
            tree.segment_count += len(built)
        else:
            tree = TraceTree(built[0], input_nodes)
            tree.segment_count = len(built)
            if signature not in self._cache:
                self._signatures.append(signature)
            self._cache[signature] = tree
            tree.unconfirmed = deferred
            # (only when no result has history left for another backward: eagerly, the rest fail it)
            tree.trains_itself = output_facts["ran_backward"] and any(
                m.kind == "param" and m.target in trainable for m in graph.mutations) and not output_facts["live_histories"]
        return len(built), start

    def _key_after_the_call(self, signature, tree, tracer, args, kwargs):
        """The signature after the call where only optimizer state made outside changed, else `signature`."""
        after = self._signature_of(args, kwargs)
        if after == signature or not holds_after_the_call(tracer, signature, after):
            return signature
        if tree is not None and self._cache.get(signature) is tree:
            del self._cache[signature]
            self._cache[after] = tree
            self._signatures = [after if s == signature else s for s in self._signatures]
        return after

    def _rekey_scalar_trees(self, extended, signature):
        """After a trace added runtime-scalar tests: every other cached tree under its signature
        with the new tests' outcomes at the values it was traced with (else none would match
        again; it never met those tests). The tree this trace extends (`extended`, if any) now
        holds a branch traced with this call's outcomes: it is keyed by `signature` alone."""
        moved = {old: (signature if tree is extended else self._scalars.rekeyed(old, tree.scalar_values))
                 for old, tree in self._cache.items() if tree is extended or tree.scalar_values is not None}
        trees = {old: self._cache.pop(old) for old in moved}
        for old, new in moved.items():
            self._cache[new] = trees[old]
        self._signatures = [moved.get(s, s) for s in self._signatures]

    def _compile_segment(self, segment):
        self._backends.compile_segment(segment)

    def _compile_deferred(self, tree):
        """Compile the segments of a trace confirmed by a second trace (see _attach)."""
        for segment in walk_segments(tree.root):
            if segment.runner is None:
                self._compile_segment(segment)
            self._backends.mark_confirmed(segment)

    def _python_state_changed_by_call(self, signature, args, kwargs):
        """What Python state the traced call changed among the values its signature guards
        (`state['flag'] = not state['flag']`), as the report words it, or None."""
        before = [part for part in signature if part[0] in ("python", "optimizer state")]
        if not before:
            return None
        after = []
        flat = flatten_tensors((args, kwargs), "args")
        self._reached.add_parts(after, {id(t) for _, t in flat})
        rebound = state_changed_by_call(before, after)
        if rebound is not None:
            return StateRebound(rebound)
        before = [part for part in before if part[0] == "python"]
        after = [part for part in after if part[0] == "python"]
        if len(after) != len(before):  # the state's shape itself changed: the next call re-traces
            return None
        for old, new in zip(before, after):  # (the same sources in the same order)
            if old != new:
                return explain_change(new[2], new[1], new[3], old[4], new[4])
        return None

    def _fall_back(self, args, kwargs, reason):
        self._fall_back_after(reason)
        return self.fn(*args, **kwargs)

    def _fall_back_after(self, reason):
        self._eager = True
        top = reason or "signature changes"
        if "guard at" in top:
            fix = ("the branch depends on tensor values: compute both sides and select with ember.where, "
                   "move the data-dependent Python control flow out of the compiled function")
        else:
            fix = "call it with inputs of one shape and dtype (pad the batch), or keep Python arguments fixed"
        self.report.fallback = f"recompile limit ({self.recompile_limit}) reached; last reason: {top}"
        warnings.warn(f"ember.compile({self.name}): recompiled {len(self.report.recompiles)} times, past the "
                      f"limit of {self.recompile_limit}; running eagerly from now on. Last reason: {top}. "
                      f"Fix: {fix}, or raise the limit with ember.compile(..., recompile_limit=N).",
                      RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ signatures
    def _signature(self, args, kwargs, flat, positional=False):
        """Everything a trace specialises on: arguments (tensor shapes, dtypes, requires_grad,
        which arguments alias each other, Python values), grad mode, and the state the function
        reaches: modules (flags, params, settings), optimizers (hyperparameters such as lr), and
        every Python value its code reads (python_guards.PythonState: globals, closure cells,
        containers, attributes of objects, classes and modules, tensors they hold). State that
        cannot be guarded gives a signature that runs eagerly, with the reason in the report."""
        parts = [("grad", STATE.grad_enabled), ("aliasing", _aliasing(flat)),  # __call__ reads [1]
                 ("tf32", tf32_switches())]  # (GPU programs may multiply in TF32: ember.backends.cuda)
        argument_ids = {id(t) for _, t in flat}
        if positional:  # what _leaf_signature gives for ((tensor, ...), {}), without the walk
            containers = _positional_containers(len(args))
            parts += containers[:2]
            parts += [("tensor", path, t._data.shape, t._data.dtype, t.requires_grad) for path, t in flat]
            parts.append(containers[2])
        else:
            refusals = []  # of object arguments

            def object_key(value, path):
                key = self._reached.argument_key(value, input_name(self.fn, path), argument_ids, parts)
                if key[0] == "refused":
                    refusals.append(key[1])
                return key
            _leaf_signature((args, kwargs), "args", parts, object_key)
        learning = [(path, t.grad_fn is None, t._grad is not None) for path, t in flat
                    if t.requires_grad or t._grad is not None]
        if learning:  # (a backward() inside treats a leaf argument, a non-leaf, a .grad to add into apart)
            parts.append(("argument autograd", tuple(learning)))
        if self.module is not None:
            self._module_parts(self.module, "self", parts)
        if device_arrays.in_use:  # which tensors are on a GPU: a program's target and where its results go
            state = [t for _, t in module_state(self.module)] if self.module is not None else []
            parts.append(("devices", tuple(device_of(t._data) is not None for t in [t for _, t in flat] + state)))
        refusal = self._reached.add_parts(parts, argument_ids)
        if refusal is None and not positional and refusals:
            refusal = refusals[0]
        if refusal is not None:
            parts.append(("refused", refusal))
            signature = tuple(parts)
            if signature not in self._eager_signatures:
                self._eager_signatures.add(signature)
                self.report.eager_reasons.append(f"{self._describe_signature(signature)}: {refusal}; ember cannot "
                                                 f"guard it, so calls like this one run eagerly")
            return signature
        parts = self._dynamic.rewrite(parts)
        return tuple(self._scalars.rewrite(parts) if self._scalars.dynamic else parts)

    def _describe_signature(self, signature):
        words = []
        for part in signature:
            if part[0] == "tensor":
                _, path, shape, dtype, grad = part
                words.append(f"{input_name(self.fn, path)}: {dtype}[{','.join(map(str, shape))}]"
                             + (" requires_grad" if grad else ""))
            elif part[0] == "value":
                words.append(f"{input_name(self.fn, part[1])}={part[3]!r}")
            elif part[0] == "training" and part[1] == "self":
                words.append(f"training={part[2][0] if part[2] else None}")
        return ", ".join(words) or "()"

    def _miss_reason(self, signature):
        if not self._signatures:
            return None
        previous = self._signatures[-1]
        tests = self._scalars.explain(previous, signature)  # a runtime scalar's test that changed outcome
        reason = explain_signature_change(self.fn, previous, signature)
        return tests if tests and reason == "new call signature" else "; ".join(filter(None, (reason, tests)))


def _as_tensor(value):
    if isinstance(value, Tensor):
        return value
    return Tensor._wrap(value)


def compile(model=None, *, backend="llvm", recompile_limit=DEFAULT_RECOMPILE_LIMIT, fullgraph=False,
            dynamic=None, mode=None, options=None, disable=False):
    """Compile a function or an nn.Module. Returns a callable (a Module stays a Module).

    backend="llvm" (the default) runs native CPU code; backend="interpret" runs the graphs
    with the reference interpreter. Usable as `ember.compile(fn)`, `@ember.compile` and
    `@ember.compile(backend=...)`.

    mode takes PyTorch's values, fullgraph=True raises at the first graph break with its source
    line, options warn that they change nothing (frontend/compile_modes.py). dynamic=None (automatic
    dynamic) gives a dim whose size changes between calls one program for every size >= 2;
    dynamic=False keeps every shape static (frontend/dynamic_shapes.py)."""
    if mode is not None:
        check_mode(mode, options)
    check_dynamic_and_options(dynamic, options)
    if model is None:
        return lambda fn: compile(fn, backend=backend, recompile_limit=recompile_limit, fullgraph=fullgraph,
                                  dynamic=dynamic, disable=disable)
    if disable:
        return model
    if hasattr(model, "named_parameters") and hasattr(model, "forward"):
        from .compiled_module import CompiledModule
        return CompiledModule(model, CompiledFunction(model, backend, recompile_limit, module=model,
                                                      fullgraph=fullgraph, dynamic=dynamic))
    return CompiledFunction(model, backend, recompile_limit, fullgraph=fullgraph, dynamic=dynamic)


def explain(fn, *args, **kwargs):
    """Compile `fn`, call it once on the arguments, and return the compile report."""
    compiled = fn if isinstance(fn, CompiledFunction) or hasattr(fn, "_compiled") else compile(fn)
    compiled(*args, **kwargs)
    return compiled.report
