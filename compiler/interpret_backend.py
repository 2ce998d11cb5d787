"""The `interpret` backend: a compiled segment is the graph run by the reference interpreter.

It defines the backend interface the code generators implement: `compile(graph)` returns
a callable taking {node id: array} for the graph's inputs and {param name: array}, and
returning {node id: array} for the graph's outputs.
"""
from ember.ir import run_graph


class InterpretBackend:
    name = "interpret"

    def compile(self, graph):
        def run(inputs, params):
            env = run_graph(graph, [inputs[i] for i in graph.inputs], params)
            return {o: env[o] for o in graph.outputs}
        run.graph = graph
        return run
