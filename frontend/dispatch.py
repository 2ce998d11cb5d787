"""Eager mode, the base of the mode stack every Tensor operation goes through, and the state it reads.

`Primitive.bind` sends each call to the mode on top of one stack (ember.ops.registry): eager
mode (`eager_bind`: the numpy implementation plus an autograd node) at the bottom, a tracer
above it while ember.compile records (ember.frontend.tracer), the autodiff pass's graph builder
while it differentiates symbolically. `STATE.recorder` is the tracer on top of that stack, if
any, kept in step with it (it is read on hot paths: an attribute, not a lookup).
"""
import numpy as np

from ember import config, dtypes
from ember.ops import registry
from ember.ops.registry import OpError, Spec


class DispatchState:
    """Grad mode, the active recorder and the module path, in one place (torch keeps these
    thread-local; ember runs one Python thread of model code)."""

    def __init__(self):
        self.grad_enabled = True
        self.recorder = None  # the tracer on top of the mode stack, or None (set only by _follow_modes)
        self.module_path = []  # names of the modules being called, for errors and IR names
        self.strict = config.STRICT  # also run shape rules in eager mode and compare (EMBER_STRICT)
        # while an in-place op computes its new value: the tensor standing for the old value, which
        # autograd nodes save a copy of (PyTorch's original_self), as the write is part of the op
        self.inplace_target = None


STATE = DispatchState()


def run_eagerly(reason):
    """Code being traced did something whose effect a compiled program cannot reproduce on
    later calls (a tensor hook, autograd.grad, a leaf created inside): this call signature
    runs eagerly, and the compile report says why."""
    recorder = STATE.recorder
    if recorder is not None and getattr(recorder, "eager_reason", None) is None:
        recorder.eager_reason = reason


def current_module():
    return STATE.module_path[-1] if STATE.module_path else None


def spec_of(tensor):
    return Spec(tuple(tensor.shape), tensor.dtype)


def explain_failure(prim, operands, attrs, error):
    """numpy raised: run the primitive's shape rule to raise an error written for people."""
    try:
        prim.infer(*[spec_of(t) for t in operands], **attrs)
    except OpError as nice:
        raise nice.in_module(current_module()) from None
    if isinstance(error, (IndexError, OpError, ModifiedTensorError, FreedValueError)):
        raise error
    where = f"{prim.name} ({current_module()})" if current_module() else prim.name
    shapes = ", ".join(registry.describe(spec_of(t)) for t in operands)
    raise RuntimeError(f"{where}: failed on {shapes} with {attrs}: {error}") from error



def eager_bind(prim, operands, attrs):
    """Compute with numpy (on a device: frontend/device_ops.py); attach an autograd node when an
    operand requires grad. (The hot path of eager mode: keep it short.)"""
    device = check_same_device(prim.name, operands) if device_arrays.in_use else None
    try:
        if device is not None:
            out = device_bind(prim, [t._data for t in operands], attrs, device)
        elif len(operands) == 2 and not attrs:  # the common binary op: no list, no kwargs
            a, b = operands[0]._data, operands[1]._data
            if a.dtype in LOW_PRECISION or b.dtype in LOW_PRECISION:
                out = in_float32(prim, operands, attrs)
            else:
                out = prim.impl(a, b)
        else:
            arrays = [t._data for t in operands]
            if any(x.dtype in LOW_PRECISION for x in arrays) and not prim.view:
                out = in_float32(prim, operands, attrs)
            else:  # (erf and erfc of large tensors run compiled code: frontend/eager_compiled_ops.py)
                out = COMPILED_FOR_EAGER.get(prim.name, prim.impl)(*arrays, **attrs)
    except Exception as error:  # numpy's message is rewritten by the shape rule
        explain_failure(prim, operands, attrs, error)
    if type(out) is not np.ndarray:
        out = np.asarray(out)
    state = STATE
    if state.strict:
        check_against_rule(prim, operands, attrs, out)
    result = _new_tensor(Tensor)  # Tensor._wrap without the recorder check: no recorder is active here
    if out.base is not None:
        if prim.view:
            if shares_memory_with(out, operands[0]._data):
                register_view(result, operands[0], ViewStep(prim, attrs))
        elif any(shares_memory_with(out, t._data) for t in operands):
            out = copy_array(out)  # only view primitives may alias their inputs (a safety net: see
            # test_only_view_primitives_return_memory_of_their_inputs, which keeps impls honest)
    result._data = out
    if state.grad_enabled and prim.vjp is not None:
        for t in operands:
            if t.requires_grad:
                if out.dtype.kind == "f" or out.dtype in LOW_PRECISION:  # only floating-point results have gradients
                    Node.attach(result, prim, operands, attrs)
                break
    return result


_new_tensor = object.__new__
LOW_PRECISION = dtypes.LOW_PRECISION_NP  # float16, bfloat16 once loaded (one set, shared)


def in_float32(prim, operands, attrs):
    """An op on float16/bfloat16 operands as PyTorch's CPU computes it: in float32, the result
    rounded once to the dtype the op's rule gives (numpy would accumulate sums and products in
    the 2-byte type, and ml_dtypes' matmul returns float32)."""
    arrays = [t._data.astype(np.float32) if t._data.dtype in LOW_PRECISION else t._data for t in operands]
    out = np.asarray(prim.impl(*arrays, **attrs))
    expected = prim.infer(*[spec_of(t) for t in operands], **attrs).dtype.np
    return out if out.dtype == expected else out.astype(expected)


def check_against_rule(prim, operands, attrs, out):
    from .watched_sizes import unwatched_sizes
    try:
        with unwatched_sizes():  # (a check: its comparisons of sizes decide nothing in a trace)
            rule = prim.infer(*[spec_of(t) for t in operands], **attrs)
    except OpError as error:
        raise error.in_module(current_module()) from None
    got = (tuple(out.shape), out.dtype.name)
    if (tuple(rule.shape), rule.dtype.name) != got:
        raise AssertionError(f"{prim.name}: shape rule says {rule.shape} {rule.dtype.name}, "
                             f"numpy gave {got[0]} {got[1]} for attrs {attrs}")


def shares_memory_with(out, array):
    """Is `out` a numpy view of `array`'s memory? (Same owner; cheap, no overlap analysis.)"""
    return memory_owner(out) is memory_owner(array)


class ModifiedTensorError(RuntimeError):
    """A value saved for backward was overwritten in place before the backward read it."""


class FreedValueError(RuntimeError):
    """A backward read a value saved for it that an earlier backward without retain_graph freed."""


class EagerMode:
    """The base mode: numpy values, autograd nodes."""

    records_tensors = False
    bind = staticmethod(eager_bind)


def _follow_modes(top):
    STATE.recorder = top if getattr(top, "records_tensors", False) else None


registry.install_base_mode(EagerMode())
registry.on_mode_change(_follow_modes)

from .tensor import Tensor  # noqa: E402  (Tensor uses dispatch; dispatch wraps into Tensor)
from .views import ViewStep, register_view, memory_owner  # noqa: E402
from .autograd import Node  # noqa: E402
from .eager_compiled_ops import COMPILED_FOR_EAGER  # noqa: E402
from .device_tensors import check_same_device, copy_array  # noqa: E402
from .device_ops import device_bind  # noqa: E402
from ember.runtime import device_arrays  # noqa: E402  (its `in_use`: whether any tensor was ever on a device)
