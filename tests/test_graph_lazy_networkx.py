"""Graph keeps networkx's MultiDiGraph dicts itself and builds `graph.nx` over them on first use:
building, reading, copying, renumbering and serialising a graph never import networkx (a warm
compile traces and hits the cache without it), and the networkx view and the Graph stay one
structure whichever side changes it.
"""
import json
import subprocess
import sys

import networkx as nx

from ember.ir import Graph


def tiny_graph():
    g = Graph("tiny")
    x = g.add_input((3,), "float32", "x")
    w = g.add_param("w", (3,), "float32")
    square = g.add_node("mul", [x, x], (3,), "float32")
    g.outputs = [g.add_node("add", [square, w], (3,), "float32")]
    return g


def test_building_reading_copying_and_json_do_not_import_networkx(tmp_path):
    code = ("import json, sys\n"
            "from ember.ir import Graph\n"
            "g = Graph('tiny')\n"
            "x = g.add_input((3,), 'float32', 'x')\n"
            "w = g.add_param('w', (3,), 'float32')\n"
            "square = g.add_node('mul', [x, x], (3,), 'float32')\n"
            "dead = g.add_node('exp', [square], (3,), 'float32')\n"
            "g.outputs = [g.add_node('add', [square, w], (3,), 'float32')]\n"
            "g.remove_node(dead)\n"
            "assert [n.op for n in g.nodes()] == ['input', 'param', 'mul', 'add'] and g.users(x) == [square]\n"
            "assert len(g) == 4 and square in g and dead not in g and g.spec(square).shape == (3,)\n"
            "assert g.copy() == g and g.renumbered([w, x, square, 4]) is not None and str(g) and g.to_json()\n"
            "before = 'networkx' in sys.modules\n"
            "g.nx\n"
            "print(json.dumps([before, 'networkx' in sys.modules]))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [False, True]


def test_changes_through_graph_show_in_the_networkx_view_and_its_cached_views():
    g = tiny_graph()
    view = g.nx
    nodes, pred, edges = view.nodes, view.pred, view.edges  # (networkx caches these views)
    square, out = 2, g.outputs[0]
    neg = g.add_node("neg", [out], (3,), "float32")
    assert g.nx is view and neg in nodes and list(pred[neg]) == [out] and (out, neg, 0) in edges(keys=True)
    assert nodes[neg]["op"] == "neg" and sorted(view.in_edges(square, keys=True)) == [(0, square, 0), (0, square, 1)]
    assert list(nx.topological_sort(view)) == [0, 1, 2, 3, neg]
    g.remove_node(neg)
    assert neg not in view and list(view.successors(out)) == [] and view.number_of_edges() == 4


def test_changes_through_networkx_show_in_the_graph():
    g = tiny_graph()
    square, out = 2, g.outputs[0]
    g.nx.remove_edges_from([(square, out, 0)])
    g.nx.add_edge(0, out, key=0)
    assert g.users(square) == [] and g.users(0) == [square, out]
    g.nx.remove_node(out)
    assert out not in g and len(g) == 3 and [n.id for n in g.nodes()] == [0, 1, 2]
    g.nx.nodes[square]["name"] = "square"
    assert g.node(square).name == "square"


def test_a_copy_is_a_separate_structure_with_its_own_view():
    g = tiny_graph()
    g.nx  # noqa: B018 (build the original's view first)
    copy = g.copy()
    copy.nx.remove_node(copy.outputs[0])
    copy.add_node("neg", [2], (3,), "float32")
    assert len(g) == 4 and len(g.nx) == 4 and g.users(2) == [3]
    assert len(copy) == 4 and copy.users(2) == [4] and copy.nx.number_of_edges() == 3
