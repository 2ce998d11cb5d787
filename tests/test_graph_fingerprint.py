"""ember/ir/json_format.py graph_fingerprint: the traced cache key's bytes tell graphs apart
exactly as their JSON does, in every process."""
import os
import subprocess
import sys

import ember
from ember.ir import Graph
from ember.ir.json_format import graph_fingerprint

SCRIPT = """
import hashlib, ember
from ember.ir.json_format import graph_fingerprint
def step(w, x):
    loss = ((x @ w).relu() * 0.5 - 1.0).pow(2).mean()
    return loss
graph = ember.trace(step, ember.ones(3, 4, requires_grad=True), ember.ones(2, 3))
print(hashlib.sha256(graph_fingerprint(graph)).hexdigest(), hashlib.sha256(graph.to_json().encode()).hexdigest())
"""


def _graph():
    namespace = {}
    exec(SCRIPT.split("graph =")[0].split("from ember.ir.json_format import graph_fingerprint")[1], namespace)
    return ember.trace(namespace["step"], ember.ones(3, 4, requires_grad=True), ember.ones(2, 3))


def test_a_graph_read_back_from_its_json_has_the_same_fingerprint():
    graph = _graph()
    assert graph_fingerprint(Graph.from_json(graph.to_json())) == graph_fingerprint(graph)


def test_graphs_whose_json_differs_have_different_fingerprints():
    graph = _graph()
    scale = next(n for n in graph.nodes() if n.op == "constant" and n.attrs.get("value") == 0.5)
    variants = []
    for value in (0.25, -0.5, 1, "0.5"):  # another float, another sign, an int, a string
        other = Graph.from_json(graph.to_json())
        other.nx.nodes[scale.id]["attrs"] = {**scale.attrs, "value": value}
        assert other.to_json() != graph.to_json()
        variants.append(graph_fingerprint(other))
    renamed = Graph.from_json(graph.to_json())
    renamed.nx.nodes[scale.id]["name"] = "other"
    variants.append(graph_fingerprint(renamed))
    assert len(set(variants + [graph_fingerprint(graph)])) == len(variants) + 1


def test_fresh_processes_with_different_hash_seeds_give_the_same_fingerprint():
    # (the string hash seed changes set and dict orders built from hashes, and interning)
    digests = {tuple(subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, "PYTHONHASHSEED": seed},
                                    capture_output=True, text=True, timeout=120, check=True).stdout.split()[-2:])
               for seed in ("1", "2")}
    assert len(digests) == 1  # (the JSON's digest the same too: the same graph in both)
