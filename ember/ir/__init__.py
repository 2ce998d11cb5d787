"""ember.ir: the graph IR every stage shares, its verifier, dumps and reference interpreter."""
from .graph import Graph, Guard, Mutation, NodeView, PLACEHOLDERS
from .verify import verify, VerifyError
from .interpreter import interpret, run_graph
from .text import format_graph, format_node

__all__ = ["Graph", "Guard", "Mutation", "NodeView", "PLACEHOLDERS", "verify", "VerifyError", "interpret",
           "run_graph", "format_graph", "format_node"]
