"""ember.compiler: IR -> code. Backends compile a (segment) graph into something that runs."""
from .backends import get_backend, BACKENDS

__all__ = ["get_backend", "BACKENDS"]
