"""The reference interpreter: runs a graph node by node with the primitives' numpy
implementations. It is the oracle every backend is tested against.
"""
import numpy as np

from ember.ops import PRIMITIVES


def _array(value):
    data = getattr(value, "_data", value)
    return data if isinstance(data, np.ndarray) else np.asarray(data)


def run_graph(graph, inputs, params=None, env=None):
    """Evaluate every node; return the environment {node id: numpy array}.

    `inputs` are in `graph.inputs` order; `params` maps param names to arrays or tensors;
    `env` may pre-bind values (e.g. carried values between segments)."""
    env = dict(env or {})
    params = params or {}
    if len(inputs) != len(graph.inputs):
        raise TypeError(f"{graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    for node_id, value in zip(graph.inputs, inputs):
        env[node_id] = _array(value)
    for node in graph.nodes():
        if node.id in env:
            continue
        if node.op == "param":
            name = node.attrs["name"]
            if name not in params:
                raise KeyError(f"{graph.name}: no value bound for param {name!r}")
            env[node.id] = _array(params[name])
            continue
        if node.op == "input":
            raise KeyError(f"{graph.name}: no value for input %{node.id} ({node.name})")
        out = PRIMITIVES[node.op].impl(*[env[i] for i in node.inputs], **node.attrs)
        env[node.id] = out if type(out) is np.ndarray else np.asarray(out)
    return env


def interpret(graph, *inputs, params=None):
    """Run `graph` on `inputs`; returns its outputs as numpy arrays (a tuple when several)."""
    env = run_graph(graph, list(inputs), params)
    outputs = tuple(env[o] for o in graph.outputs)
    return outputs[0] if len(outputs) == 1 else outputs
