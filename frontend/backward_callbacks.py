"""Callbacks that run when a backward pass ends: PyTorch's
`Variable._execution_engine.queue_callback`, which DistributedDataParallel uses to wait for its
gradient allreduces. The engine (frontend/autograd.py) runs each backward pass inside
`final_callbacks`; code running during the pass queues with `queue_callback`.
"""
from .grad_mode import set_grad_enabled

_callback_queues = []  # one list per backward pass running (innermost last)


def queue_callback(callback):
    """Run `callback()` when the backward pass now running ends (PyTorch's
    `Variable._execution_engine.queue_callback`; DDP waits for its allreduces there)."""
    if not _callback_queues:
        raise RuntimeError("Final callbacks can only be installed during backward pass.")
    _callback_queues[-1].append(callback)


def current_backward():
    """A token of the backward pass now running (its callback queue), or None."""
    return _callback_queues[-1] if _callback_queues else None


class final_callbacks:
    """Around one backward pass: callbacks queued during it (or by those callbacks) run when it
    ends without error, with grad mode on only under create_graph (as PyTorch's engine)."""

    def __init__(self, create_graph=False):
        self.create_graph = create_graph

    def __enter__(self):
        _callback_queues.append([])

    def __exit__(self, kind, *rest):
        try:
            queued = _callback_queues[-1]
            if kind is None and queued:
                with set_grad_enabled(self.create_graph):
                    while queued:
                        queued.pop(0)()
        finally:
            _callback_queues.pop()
        return False
