"""The backend registry: `ember.compile(..., backend=NAME)` looks NAME up here.

A backend is an object with `name` and `compile(graph) -> runner`, where
runner({input node id: array}, {param name: array}) returns {node id: array} for every node
in graph.outputs (see compiler/interpret_backend.py for the reference one).
"""
from .interpret_backend import InterpretBackend
from .llvm_backend import LLVMBackend

BACKENDS = {"interpret": InterpretBackend, "llvm": LLVMBackend}


def get_backend(name):
    if name not in BACKENDS:
        raise ValueError(f"unknown ember.compile backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]()
