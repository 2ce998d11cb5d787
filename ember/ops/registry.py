"""The primitive registry: one `Primitive` object per op, holding every rule each stage needs.

A primitive carries its kind (for fusion and lowering), a shape/dtype rule, a numpy
implementation (eager mode and the IR interpreter), a VJP rule written in terms of other
primitives, so the same rule serves eager autograd and the autodiff pass, and for elementwise
ops its scalar lowering rule (`register_lowering`, per target as JAX's). A primitive no target
compiles is declared `host_only`: its numpy implementation runs as a callback from compiled
code, where the target allows that. `Primitive.bind` hands an application to the current mode.
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
    the view cannot be written through (an expanded or overlapping view).

    An elementwise primitive's `lowering` rule, `rule(s, *operands, **attrs)`, returns its value
    as a scalar expression built with `s`, the loop IR's vocabulary (compiler/loop_ir.py
    `ScalarBuilder`: arithmetic, comparisons, select, casts, and the math functions every
    target supplies from its intrinsic tables); operands are expressions of the operands'
    elements. `lowerings` maps a target name to its own rule (None: every target's).
    `host_only`: no target compiles it; compiled programs call its numpy implementation.
    `effects`: it acts outside the program (a collective talks to the other processes), so
    passes neither fold it into a constant nor merge two of them."""

    __slots__ = ("name", "kind", "impl", "infer", "vjp", "vjp_uses_output", "view", "view_update", "lowerings",
                 "host_only", "effects")

    def __init__(self, name, kind, impl, infer, vjp=None, view=False, view_update=None, lowering=None,
                 host_only=False, effects=False):
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
        self.lowerings = {} if lowering is None else {None: lowering}
        self.host_only = host_only
        self.effects = effects

    def lowering_for(self, target=None):
        """The scalar lowering rule for the target named `target`: its own, else the shared one
        (None when the primitive has none)."""
        return self.lowerings.get(target, self.lowerings.get(None))

    def __repr__(self):
        return f"<primitive {self.name} ({self.kind})>"

    def bind(self, *operands, **attrs):
        """Apply this primitive to tensors (eager values or IR values) in the current mode."""
        return _top_bind[0](self, operands, attrs)


def _locals_read(fn):
    """Local names a function's body actually loads (not merely declares as arguments)."""
    import dis
    return {ins.argval for ins in dis.get_instructions(fn) if ins.opname.startswith("LOAD_FAST")}


PRIMITIVES = {}

# ----------------------------------------------------------------------------- the mode stack
# Every `bind` goes to the mode on top of one stack, as PyTorch's dispatch modes and JAX's
# trace stack: eager at the bottom (installed by ember.frontend.dispatch at import), a tracer
# above it while ember.compile records (ember.frontend.tracer), the autodiff pass's graph builder
# while it applies VJP rules to IR values (ember.passes.autodiff), and eager again where traced
# code pauses the tracer. A mode is an object with `bind(prim, operands, attrs)`.
_modes = [None]
_top_bind = [None]  # the top mode's bind, looked up once per change (Primitive.bind is the hot path)
_listeners = []  # called with the new top mode whenever it changes


def install_base_mode(mode):
    """The bottom of the stack: the mode that runs when nothing else is active (eager)."""
    _modes[0] = mode
    _changed()


def current_mode():
    return _modes[-1]


def on_mode_change(listener):
    """`listener(top)` runs whenever the top mode changes (the frontend keeps its view of the
    active tracer in step this way)."""
    _listeners.append(listener)
    listener(_modes[-1])


def _changed():
    top = _modes[-1]
    _top_bind[0] = top.bind
    for listener in _listeners:
        listener(top)


def tracing_below():
    """Is a recording mode (a tracer) on the stack, even under an `in_mode(None)` that computes
    a traced op's value eagerly?"""
    return any(getattr(mode, "records_tensors", False) for mode in _modes)


class in_mode:
    """Send every `bind` inside the block to `mode`; `in_mode(None)` runs the base (eager) mode."""

    __slots__ = ("mode",)

    def __init__(self, mode):
        self.mode = mode

    def __enter__(self):
        _modes.append(self.mode if self.mode is not None else _modes[0])
        _changed()
        return self.mode

    def __exit__(self, *exc):
        _modes.pop()
        _changed()
        return False


def register(name, kind, impl, infer, vjp=None, view=False, view_update=None, lowering=None, host_only=False,
             effects=False):
    if name in PRIMITIVES:
        raise ValueError(f"primitive {name} is defined twice")
    prim = Primitive(name, kind, impl, infer, vjp, view, view_update, lowering, host_only, effects)
    PRIMITIVES[name] = prim
    return prim


def register_lowering(name, rule, target=None):
    """`rule(s, *operands, **attrs)` lowers primitive `name` to a scalar expression on the
    target named `target` (None: on every target without its own rule), as JAX's
    `mlir.register_lowering(prim, rule, platform=...)`."""
    prim = get(name)
    if prim.kind != "elementwise":
        raise ValueError(f"{name} is a {prim.kind} primitive; only elementwise ones lower to scalar expressions")
    prim.lowerings[target] = rule
    return rule


def get(name):
    try:
        return PRIMITIVES[name]
    except KeyError:
        raise KeyError(f"unknown primitive {name!r}; known: {', '.join(sorted(PRIMITIVES))}") from None
