"""The primitive registry: one `Primitive` object per op, holding every rule each stage needs.

A primitive carries its kind (for fusion and lowering), a shape/dtype rule, a numpy
implementation (eager mode and the IR interpreter) and a VJP rule written in terms of other
primitives, so the same rule serves eager autograd and the autodiff pass. `Primitive.bind`
hands an application to the dispatcher the frontend installs (eager, tracing or symbolic).
"""
from collections import namedtuple

KINDS = ("elementwise", "reduce", "movement", "contraction", "window", "opaque", "source")

Spec = namedtuple("Spec", "shape dtype")
Spec.__doc__ = "What a shape rule sees of an operand: its shape tuple and its ember DType."


class OpError(RuntimeError):
    """An op applied to operands it cannot take. The message names the op, the module (when
    known) and the shapes and dtypes involved."""

    def __init__(self, op, message, module=None):
        self.op = op
        self.detail = message
        self.module = module
        where = f"{op} ({module})" if module else op
        super().__init__(f"{where}: {message}")

    def in_module(self, module):
        return OpError(self.op, self.detail, module) if module and not self.module else self


def describe(spec):
    """`f32[64,120]`: how shapes and dtypes read in errors and IR dumps."""
    dims = ",".join(str(d) for d in spec.shape)
    return f"{spec.dtype.short}[{dims}]"


class Primitive:
    """One op. `impl(*arrays, **attrs)`, `infer(*specs, **attrs) -> Spec`,
    `vjp(g, out, *inputs, **attrs) -> tuple of cotangents (None where not differentiable)`.

    A view primitive (`view=True`) returns memory shared with its input in eager mode, as the
    PyTorch op it stands for does (reshape, permute, slice, expand). Its `view_update(base,
    new_view, **attrs) -> new_base`, written in primitives, is the functional write through the
    view: eager in-place ops on views and the tracer's functionalization both use it. None means
    the view cannot be written through (an expanded or overlapping view)."""

    __slots__ = ("name", "kind", "impl", "infer", "vjp", "vjp_uses_output", "view", "view_update")

    def __init__(self, name, kind, impl, infer, vjp=None, view=False, view_update=None):
        assert kind in KINDS, kind
        self.name = name
        self.kind = kind
        self.impl = impl
        self.infer = infer
        self.vjp = vjp
        # does the VJP read the primary output? (autograd then keeps it and checks its version)
        self.vjp_uses_output = vjp is not None and "out" in _locals_read(vjp)
        self.view = view
        self.view_update = view_update

    def __repr__(self):
        return f"<primitive {self.name} ({self.kind})>"

    def bind(self, *operands, **attrs):
        """Apply this primitive to tensors (eager values or IR values) through the dispatcher."""
        return _dispatcher[0](self, operands, attrs)


def _locals_read(fn):
    """Local names a function's body actually loads (not merely declares as arguments)."""
    import dis
    return {ins.argval for ins in dis.get_instructions(fn) if ins.opname.startswith("LOAD_FAST")}


PRIMITIVES = {}

# The dispatcher is installed by ember.frontend.dispatch at import; it is the one global hook.
_dispatcher = [None]


def set_dispatcher(fn):
    _dispatcher[0] = fn


class dispatching_to:
    """Send every `bind` to `fn` inside the block: the autodiff pass applies VJP rules to IR
    values this way (symbolic mode), without the frontend."""

    def __init__(self, fn):
        self.fn = fn

    def __enter__(self):
        self.previous = _dispatcher[0]
        _dispatcher[0] = self.fn
        return self

    def __exit__(self, *exc):
        _dispatcher[0] = self.previous
        return False


def register(name, kind, impl, infer, vjp=None, view=False, view_update=None):
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name} is defined twice")
    prim = Primitive(name, kind, impl, infer, vjp, view, view_update)
    PRIMITIVES[name] = prim
    return prim


def get(name):
    try:
        return PRIMITIVES[name]
    except KeyError:
        raise KeyError(f"unknown primitive {name!r}; known: {', '.join(sorted(PRIMITIVES))}") from None
