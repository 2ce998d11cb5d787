"""The reference interpreter: runs a graph node by node with the primitives' numpy
implementations. It is the oracle every backend is tested against. Ops on float16 and
bfloat16 compute in float32 and round their result once, as eager mode and PyTorch's CPU do
(numpy would accumulate a sum in the 2-byte type).
"""
import numpy as np

from ember import dtypes
from ember.ops import PRIMITIVES
from . import symbols


def evaluate(prim, arrays, attrs, result_dtype):
    """`prim` on `arrays` (low-precision floats through float32, rounded to `result_dtype`)."""
    if not prim.view and any(a.dtype in dtypes.LOW_PRECISION_NP for a in arrays):
        wide = [a.astype(np.float32) if a.dtype in dtypes.LOW_PRECISION_NP else a for a in arrays]
        return np.asarray(prim.impl(*wide, **attrs)).astype(result_dtype)
    out = prim.impl(*arrays, **attrs)
    return out if type(out) is np.ndarray else np.asarray(out)


def _array(value):
    data = getattr(value, "_data", value)
    return data if isinstance(data, np.ndarray) else np.asarray(data)


def run_graph(graph, inputs, params=None, env=None, evaluate=evaluate):
    """Evaluate every node; return the environment {node id: numpy array}.

    `inputs` are in `graph.inputs` order; `params` maps param names to arrays or tensors;
    `env` may pre-bind values (e.g. carried values between segments); `evaluate(prim, arrays,
    attrs, result dtype)` computes one node (another for a graph on a GPU's memory)."""
    env = dict(env or {})
    params = params or {}
    if len(inputs) != len(graph.inputs):
        raise TypeError(f"{graph.name} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    for node_id, value in zip(graph.inputs, inputs):
        env[node_id] = _array(value)
    sizes = None
    table = getattr(graph, "symbols", None) or symbols.SymbolTable.of_inputs(graph)
    if table is not None:  # a dynamic graph: its sizes come from the inputs
        sizes = table.sizes_or_raise(lambda n: env[n].shape, graph)
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
        attrs = node.attrs if sizes is None else symbols.evaluate(node.attrs, sizes)
        env[node.id] = evaluate(PRIMITIVES[node.op], [env[i] for i in node.inputs], attrs,
                                dtypes.as_dtype(node.dtype).np)
    return env


def interpret(graph, *inputs, params=None):
    """Run `graph` on `inputs`; returns its outputs as numpy arrays (a tuple when several)."""
    env = run_graph(graph, list(inputs), params)
    outputs = tuple(env[o] for o in graph.outputs)
    return outputs[0] if len(outputs) == 1 else outputs
