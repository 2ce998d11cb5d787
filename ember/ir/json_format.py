"""Graph <-> JSON (an exact round trip: tuples stay tuples, -inf stays -inf, arrays keep their
dtype) and GraphML through networkx for other graph tools."""
import json
import marshal
import math

import numpy as np

from .graph import Graph, Guard, Mutation
from .symbols import SymDim, SymbolTable, parse, render

FORMAT_VERSION = 1


def encode_value(value):
    kind = type(value)
    if kind is int or kind is str or kind is bool or value is None:  # (most attributes: fast path)
        return value
    if kind is tuple and all(type(v) is int for v in value):
        return {"tuple": list(value)}
    if isinstance(value, SymDim):
        return {"size": render(value)}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else {"float": repr(value)}
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, tuple):
        return {"tuple": [encode_value(v) for v in value]}
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {"dict": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    if isinstance(value, np.ndarray):
        data = value.astype(np.float64).tolist() if value.dtype.kind == "f" else value.tolist()
        return {"array": _encode_floats(data), "dtype": value.dtype.name, "shape": list(value.shape)}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    raise TypeError(f"cannot encode {type(value).__name__} in the IR's JSON form")


def _encode_floats(data):
    if isinstance(data, list):
        return [_encode_floats(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return {"float": repr(data)}
    return data


def decode_value(value):
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "float" in value:
        return float(value["float"])
    if "tuple" in value:
        return tuple(decode_value(v) for v in value["tuple"])
    if "dict" in value:
        return {_hashable(decode_value(k)): decode_value(v) for k, v in value["dict"]}
    if "array" in value:
        data = _decode_floats(value["array"])
        return np.array(data, dtype=value["dtype"]).reshape(value["shape"])
    if "bytes" in value:
        return bytes.fromhex(value["bytes"])
    if "size" in value:
        return parse(value["size"])
    raise ValueError(f"unknown encoded value {value!r}")


def _decode_floats(data):
    if isinstance(data, list):
        return [_decode_floats(v) for v in data]
    if isinstance(data, dict):
        return float(data["float"])
    return data


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def graph_to_json(graph, indent=None):
    return json.dumps(graph_document(graph), indent=indent)


def graph_fingerprint(graph):
    """Bytes that tell graphs apart exactly as their JSON does, made in a fifth of the time:
    the JSON document marshalled (format 2: no back-references, so no object identity leaks
    in; dicts in insertion order, floats exact). For cache keys, which hash them, never for
    storage: the format is CPython's and may change between its versions (keys hash those too)."""
    return marshal.dumps(graph_document(graph), 2)


def graph_document(graph):
    """The graph as JSON data (dicts, lists, numbers, strings): what `graph_to_json` writes."""
    nodes = []
    fields = graph.node_data()
    for node_id in graph.node_order():
        node = fields[node_id]
        shape = node["shape"]
        encoded = {"id": node_id, "op": node["op"], "inputs": node["inputs"],  # (tuples: JSON arrays, as lists)
                   "shape": shape if all(type(d) is int for d in shape) else [encode_value(d) for d in shape],
                   "dtype": node["dtype"], "attrs": {k: encode_value(v) for k, v in node["attrs"].items()},
                   "name": node["name"]}
        if node.get("source"):
            encoded["source"] = node["source"]
        nodes.append(encoded)
    doc = {
        "format": "ember-ir", "version": FORMAT_VERSION, "name": graph.name, "next_id": graph._next_id,
        "inputs": list(graph.inputs), "params": [[k, v] for k, v in graph.params.items()],
        "outputs": list(graph.outputs),
        "mutations": [{"kind": m.kind, "target": m.target, "node": m.node} for m in graph.mutations],
        "guards": [{"node": g.node, "expected": encode_value(g.expected), "how": g.how, "source": g.source,
                    "code": g.code} for g in graph.guards],
        "nodes": nodes,
    }
    if graph.symbols is not None:  # a dynamic graph: where each size symbol is read
        doc["symbols"] = {name: [list(place) for place in places] for name, places in graph.symbols.sources.items()}
    return doc


def graph_from_json(text):
    doc = json.loads(text)
    if doc.get("format") != "ember-ir":
        raise ValueError("not an ember IR JSON document (missing format: ember-ir)")
    graph = Graph(doc["name"])
    for n in doc["nodes"]:
        graph.nx.add_node(n["id"], op=n["op"], inputs=tuple(n["inputs"]),
                          shape=tuple(decode_value(d) for d in n["shape"]),
                          dtype=n["dtype"], attrs={k: decode_value(v) for k, v in n["attrs"].items()},
                          name=n["name"])
        if n.get("source"):
            graph.nx.nodes[n["id"]]["source"] = n["source"]
    for n in doc["nodes"]:
        for position, source in enumerate(n["inputs"]):
            graph.nx.add_edge(source, n["id"], key=position)
    graph.inputs = list(doc["inputs"])
    graph.params = {k: v for k, v in doc["params"]}
    graph.outputs = list(doc["outputs"])
    graph.mutations = [Mutation(m["kind"], m["target"], m["node"]) for m in doc["mutations"]]
    graph.guards = [Guard(g["node"], decode_value(g["expected"]), g["how"], g["source"], g["code"])
                    for g in doc["guards"]]
    graph._next_id = doc["next_id"]
    if "symbols" in doc:
        graph.symbols = SymbolTable({name: [tuple(place) for place in places] for name, places in doc["symbols"].items()})
    return graph


def graph_to_graphml(graph):
    """GraphML text (networkx's writer) with string attributes other tools can read."""
    import networkx as nx
    flat = nx.DiGraph(name=graph.name)
    for node in graph.nodes():
        flat.add_node(node.id, op=node.op, name=node.name, dtype=node.dtype,
                      shape="x".join(map(str, node.shape)),
                      attrs=json.dumps({k: encode_value(v) for k, v in node.attrs.items()}))
    for src, dst, key in graph.nx.edges(keys=True):
        flat.add_edge(src, dst, operand=key)
    return "\n".join(nx.generate_graphml(flat))
