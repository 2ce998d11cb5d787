"""`ember.trace`: run a function once eagerly and return the IR graph its ops recorded (the
tracer of frontend/tracer.py, without ember.compile's guards and caching); `export_library`
builds on `trace_with_values`."""
import numpy as np

from .signatures import input_name
from .tracer import Tracer, module_state, recording
from .value_trees import flatten_tensors


def trace(fn, *args, **kwargs):
    """Run `fn(*args, **kwargs)` eagerly and return the recorded `Graph` (ember.trace).

    Module params and buffers become named params; tensor arguments become inputs."""
    return trace_with_values(fn, args, kwargs)[0]


def trace_with_values(fn, args, kwargs=None, name=None):
    """(graph, {param name: array}) of `fn(*args, **kwargs)`: ember.trace, plus the value of every
    param the graph reads (module state and closed-over tensors), as the trace saw them.
    `name` names the graph (default: the module's class or the function's name)."""
    kwargs = kwargs or {}
    module = fn if hasattr(fn, "named_parameters") else getattr(fn, "__self__", None)
    if module is not None and not hasattr(module, "named_parameters"):
        module = None
    if name is None:
        name = type(fn).__name__ if module is fn else getattr(fn, "__name__", "graph")
    tracer = Tracer(name)
    tracer.name_externals_of(fn)
    arg_tensors = flatten_tensors((args, kwargs), "args")
    for path, t in arg_tensors:
        tracer.add_input(t, input_name(fn, path))
    state = module_state(module)
    for pname, t in state:
        tracer.add_param(t, pname)
    with recording(tracer):
        result = fn(*args, **kwargs)
    watched = [("input", i, t) for i, (_, t) in enumerate(arg_tensors)] + [("param", n, t) for n, t in state]
    graph = tracer.finish([t for _, t in flatten_tensors(result)], watched)
    values = {n: np.asarray(t._data) for n, t in list(state) + list(tracer.externals)
              if t is not None and n in graph.params}
    tracer.release()
    return graph, values
