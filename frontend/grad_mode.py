"""Grad mode: `no_grad`, `enable_grad`, `set_grad_enabled`, `inference_mode` (context managers
and decorators, generators included) over the dispatcher's `STATE.grad_enabled`, which eager
autograd and the tracer read. ember.autograd re-exports them (`ember.no_grad` is this one)."""
import contextlib
import functools
import inspect

from .dispatch import STATE, run_eagerly


def _enabling_grad():
    """Grad mode is switched on: inside a compiled call made under no_grad, the program (traced
    for a call without autograd) cannot give its results history, so such calls run eagerly."""
    if getattr(STATE.recorder, "called_without_grad", False):
        run_eagerly("enables gradients inside a call made without them")


class set_grad_enabled:
    """Context manager and decorator that switches gradient recording on or off."""

    def __init__(self, mode=True):
        self.mode = bool(mode)
        if self.mode and not STATE.grad_enabled:
            _enabling_grad()
        self.prev = STATE.grad_enabled
        STATE.grad_enabled = self.mode  # torch applies it immediately, also as a plain call

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        STATE.grad_enabled = self.prev
        return False

    def __call__(self, fn):
        STATE.grad_enabled = self.prev  # used as a decorator: undo the immediate switch
        return _decorate(fn, lambda: set_grad_enabled(self.mode))


class _GradModeContext:
    """`with no_grad():`, `@no_grad()` and, as in current PyTorch, `@no_grad` without parentheses."""
    mode = None

    def __new__(cls, orig_func=None, *args, **kwargs):
        if callable(orig_func) and not args and not kwargs:  # used bare as a decorator
            return cls()(orig_func)
        return super().__new__(cls)

    def __enter__(self):
        self.prev = STATE.grad_enabled
        if self.mode and not self.prev:
            _enabling_grad()
        STATE.grad_enabled = self.mode
        return self

    def __exit__(self, *exc):
        STATE.grad_enabled = self.prev
        return False

    def __call__(self, fn):
        return _decorate(fn, type(self))


class no_grad(_GradModeContext):
    """Disable gradient recording inside the block or the decorated function (and generator)."""
    mode = False


class enable_grad(_GradModeContext):
    """Enable gradient recording inside the block, even within no_grad."""
    mode = True


class inference_mode(no_grad):
    def __init__(self, mode=True):
        self.mode = not mode


def _decorate(fn, make_context):
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            gen = fn(*args, **kwargs)
            value = None
            while True:
                with make_context():
                    try:
                        value = gen.send(value)
                    except StopIteration as stop:
                        return stop.value
                value = yield value
        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with make_context():
            return fn(*args, **kwargs)
    return wrapper


def is_grad_enabled():
    return STATE.grad_enabled


@contextlib.contextmanager
def _no_recording():
    prev = STATE.grad_enabled
    STATE.grad_enabled = False
    try:
        yield
    finally:
        STATE.grad_enabled = prev
