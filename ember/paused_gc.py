"""Python's cyclic garbage collector paused while ember compiles.

A compile allocates hundreds of thousands of small objects that live until it ends (graph
nodes, loop-IR expressions, llvmlite instructions): each collection of the oldest generation
walks all of them, and on a transformer's training step such collections took a sixth of
its cold compile (0.45 of 2.85 s). Traces pause it too (they build the graph the same way). Reference counting still frees everything acyclic at once;
cycles wait for the first collection after the compile, as they would anyway.
"""
import contextlib
import gc


@contextlib.contextmanager
def paused_gc():
    """Pause the cyclic collector for the block (nested blocks: the outermost resumes it;
    a collector the caller disabled stays disabled)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
