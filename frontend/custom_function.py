"""`ember.autograd.Function`: user-defined operations with a hand-written backward.

`MyOp.apply(*args)` runs `forward(ctx, *args)` without recording, then links each output to
a node whose VJP calls `backward(ctx, *grads)`. Inside `ember.compile` a custom backward
cannot be honoured (the autodiff pass differentiates the recorded primitives), so applying
one to tensors that require grad while tracing is an error rather than a silent change.
"""
import numpy as np

from .autograd import Node, no_grad
from .dispatch import STATE
from .tensor import Tensor


class FunctionCtx:
    """The `ctx` a Function's forward and backward share."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad
        self._saved = ()
        self.released = None  # the node's name once a backward without retain_graph freed what it saved
        self.non_differentiable = set()
        self.materialize_grads = True
        self.dirty = ()

    def save_for_backward(self, *tensors):
        self._saved = tuple(tensors)
        self.saved_versions = tuple(t._version if isinstance(t, Tensor) else None for t in tensors)

    @property
    def saved_tensors(self):
        """What forward saved; after a backward without retain_graph freed it, reading it raises
        PyTorch's "backward through the graph a second time" (a backward that reads none runs)."""
        if self.released is not None and self._saved:
            from .autograd import BACKWARD_TWICE
            from .dispatch import FreedValueError
            raise FreedValueError(f"{self.released}: {BACKWARD_TWICE}")
        return self._saved

    def mark_non_differentiable(self, *tensors):
        self.non_differentiable.update(id(t) for t in tensors)

    def mark_dirty(self, *tensors):
        self.dirty = tensors

    def set_materialize_grads(self, value):
        self.materialize_grads = bool(value)


class _CustomBackward:
    """Quacks like a Primitive for the engine: output `index` of a Function's forward."""

    vjp_uses_output = False
    kind = "opaque"

    def __init__(self, function, ctx, index, outputs_meta, arg_positions):
        self.name = f"{function.__name__}"
        self.function, self.ctx, self.index = function, ctx, index
        self.outputs_meta, self.arg_positions = outputs_meta, arg_positions

    siblings = None  # [(output index, node)] of the same call's other differentiable outputs
    sibling_grads = None  # {output index: gradient}, gathered by the engine before vjp

    def release(self, node_name):
        """A backward without retain_graph ran through the node: what forward saved is freed."""
        self.ctx.released = node_name

    def vjp(self, g, out, *inputs):
        grads = []
        gathered, self.sibling_grads = self.sibling_grads or {}, None
        for i, (shape, dtype) in enumerate(self.outputs_meta):
            if i == self.index:
                grads.append(g)
            elif i in gathered:
                grads.append(gathered[i])
            elif self.ctx.materialize_grads:
                grads.append(Tensor._wrap(np.zeros(shape, dtype)))  # backward is linear in its grads
            else:
                grads.append(None)
        for k, (t, version) in enumerate(zip(self.ctx._saved if self.ctx.released is None else (),
                                             getattr(self.ctx, "saved_versions", ()))):
            if isinstance(t, Tensor) and t._version != version:  # (PyTorch's message, as for built-in backwards)
                from .autograd import ModifiedTensorError, modified_message
                raise ModifiedTensorError(modified_message(t, _Named(f"{self.name}Backward"),
                                                           f"saved tensor {k}", version))
        result = self.function.backward(self.ctx, *grads)
        if not isinstance(result, tuple):
            result = (result,)
        if len(result) != self.arg_count:  # PyTorch's checks of what a custom backward returns
            raise RuntimeError(f"function {self.name}Backward returned an incorrect number of gradients "
                               f"(expected {self.arg_count}, got {len(result)})")
        checked = []
        for position, value in zip(self.arg_positions, inputs):
            grad = result[position]
            if isinstance(grad, Tensor):
                if tuple(grad.shape) != tuple(value.shape):
                    if not _sums_to(tuple(grad.shape), tuple(value.shape)):
                        raise RuntimeError(f"Function {self.name}Backward returned an invalid gradient at index "
                                           f"{position} - got {list(grad.shape)} but expected shape compatible "
                                           f"with {list(value.shape)}")
                    from .reductions import sum_to_size
                    grad = sum_to_size(grad, *value.shape)
                if grad.dtype != value.dtype:  # PyTorch casts a gradient to its input's dtype
                    grad = grad.to(value.dtype)
            checked.append(grad)
        return tuple(checked)


class _Named:
    """A node as modified_message names it."""

    def __init__(self, name):
        self._name = name

    def name(self):
        return self._name


def _sums_to(shape, target):
    """Can a gradient of `shape` be summed to `target` (PyTorch's is_expandable_to(target, shape))?"""
    if len(target) > len(shape):
        return False
    return all(t == s or t == 1 for t, s in zip(target[::-1], shape[::-1]))


class Function:
    """Subclass with static `forward(ctx, *args)` and `backward(ctx, *grad_outputs)`;
    call `YourFunction.apply(*args)`."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("a Function subclass must define forward(ctx, *args)")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("a Function subclass must define backward(ctx, *grad_outputs) to be differentiated")

    @classmethod
    def apply(cls, *args, **kwargs):
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        recording = STATE.grad_enabled and any(needs)
        if recording and STATE.recorder is not None:
            raise RuntimeError(f"{cls.__name__}: an autograd.Function with a custom backward was applied to "
                               "tensors that require grad inside ember.compile; compiled code differentiates "
                               "the primitives it records and cannot use a hand-written backward. Call it "
                               "outside the compiled function, or write it with ember ops and no custom backward.")
        ctx = FunctionCtx(needs)
        with no_grad():
            outputs = cls.forward(ctx, *args, **kwargs)
        single = not isinstance(outputs, tuple)
        outputs_tuple = (outputs,) if single else outputs
        if recording:
            positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
            tensors = [args[i] for i in positions]
            meta = [(tuple(o.shape), o._data.dtype) if isinstance(o, Tensor) else ((), np.float32)
                    for o in outputs_tuple]
            linked = []
            for index, out in enumerate(outputs_tuple):
                if not isinstance(out, Tensor) or id(out) in ctx.non_differentiable or not out.is_floating_point():
                    linked.append(out)
                    continue
                if any(out is a for a in args):
                    out = out.detach()  # forward returned an input: give the result its own history
                node = _CustomBackward(cls, ctx, index, meta, positions)
                node.arg_count = len(args)
                Node.attach(out, node, tensors, {})
                linked.append(out)
            outputs_tuple = tuple(linked)
            # several differentiable outputs: backward runs once, with all of their gradients
            nodes = [(k, o.grad_fn) for k, o in enumerate(outputs_tuple)
                     if isinstance(o, Tensor) and isinstance(getattr(o.grad_fn, "prim", None), _CustomBackward)]
            if len(nodes) > 1:
                for k, node in nodes:
                    node.prim.siblings = [(j, other) for j, other in nodes if j != k]
        return outputs_tuple[0] if single else outputs_tuple


def Variable(data, requires_grad=False, volatile=False):
    """The pre-0.4 PyTorch wrapper: now just returns a Tensor (sharing `data`)."""
    from .creation import as_tensor
    tensor = as_tensor(data)
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor
