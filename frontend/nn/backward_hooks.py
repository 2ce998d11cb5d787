"""Module backward hooks (torch.nn.Module.register_full_backward_hook / _pre_hook), the way
torch's BackwardHook does them: the module's tensor arguments and outputs pass through identity
autograd Functions; the outputs' one records grad_output (and runs the pre hooks, which may
replace it), the inputs' one runs the hooks with (grad_input, grad_output) when the gradients
for the module's inputs are known, and a hook's return value replaces grad_input. Called from
Module.__call__ (module.py).
"""
from ember.frontend.custom_function import Function
from ember.frontend.dispatch import STATE
from ember.frontend.tensor import Tensor


class _PassThrough(Function):
    """Identity on tensors; its backward hands the incoming gradients to `callback`, whose
    result (one gradient per tensor) flows on. With `materialize`, a tensor that gets no
    gradient (or needs none: it is marked non-differentiable) is handed zeros, as torch's
    BackwardHookFunction does for a module's inputs."""

    @staticmethod
    def forward(ctx, callback, materialize, *tensors):
        ctx.callback = callback
        ctx.set_materialize_grads(materialize)
        ctx.mark_non_differentiable(*[t for t in tensors if not t.requires_grad])
        return tensors

    @staticmethod
    def backward(ctx, *grads):
        return (None, None) + tuple(ctx.callback(grads))


class BackwardHook:
    """The hooks of one call of `module`: wrap_inputs before forward, wrap_outputs after it."""

    def __init__(self, module, hooks, pre_hooks):
        self.module, self.hooks, self.pre_hooks = module, hooks, pre_hooks
        self.grad_outputs = None
        self.input_count = 0
        self.inputs_wrapped = False

    def wrap_inputs(self, args):
        if STATE.recorder is not None:
            raise RuntimeError(f"{type(self.module).__name__}: ember.compile cannot run a module's full backward "
                               f"hooks (their Python runs during backward); remove the hook, or call the module "
                               f"outside the compiled function")
        self.input_count = len(args)
        positions = [k for k, a in enumerate(args) if isinstance(a, Tensor)]
        if not any(args[k].requires_grad for k in positions):
            if self.hooks:
                import warnings
                warnings.warn("Full backward hook is firing when gradients are computed with respect to module "
                              "outputs since no inputs require gradients. See https://docs.pytorch.org/docs/main/"
                              "generated/torch.nn.Module.html#torch.nn.Module.register_full_backward_hook for more "
                              "details.", stacklevel=4)
            return args
        self.inputs_wrapped = True
        passed = _PassThrough.apply(self._input_grads(positions), True, *[args[k] for k in positions])
        args = list(args)
        for k, tensor in zip(positions, passed):
            args[k] = tensor
        return tuple(args)

    def wrap_outputs(self, output):
        single = isinstance(output, Tensor)
        outputs = (output,) if single else output
        if not isinstance(outputs, tuple):
            return output
        positions = [k for k, o in enumerate(outputs) if isinstance(o, Tensor) and o.requires_grad]
        if not positions:
            return output
        passed = _PassThrough.apply(self._output_grads(positions, len(outputs)), False,
                                    *[outputs[k] for k in positions])
        outputs = list(outputs)
        for k, tensor in zip(positions, passed):
            outputs[k] = tensor
        return outputs[0] if single else tuple(outputs)

    def _output_grads(self, positions, count):
        def callback(grads):
            full = [None] * count
            for k, g in zip(positions, grads):
                full[k] = g
            for hook in list(self.pre_hooks.values()):
                result = hook(self.module, tuple(full))
                if result is not None:
                    result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
                    if len(result) != count:
                        raise RuntimeError(f"Backward pre hook returned an invalid number of grad_output, got "
                                           f"{len(result)}, but expected {count}")
                    full = list(result)
            self.grad_outputs = tuple(full)
            if not self.inputs_wrapped:  # no input needs a gradient: the hooks run now, with None for each
                for hook in list(self.hooks.values()):
                    result = hook(self.module, (None,) * self.input_count, self.grad_outputs)
                    if result is not None and not all(r is None for r in result):
                        raise RuntimeError("Backward hook for Modules where no input requires gradient should always "
                                           "return None or None for all gradients.")
            return [full[k] for k in positions]
        return callback

    def _input_grads(self, positions):
        def callback(grads):
            full = [None] * self.input_count
            for k, g in zip(positions, grads):
                full[k] = g
            for hook in list(self.hooks.values()):
                result = hook(self.module, tuple(full), self.grad_outputs)
                if result is not None:
                    result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
                    if len(result) != len(full):
                        raise RuntimeError(f"Backward hook returned an invalid number of grad_input, got "
                                           f"{len(result)}, but expected {len(full)}")
                    full = list(result)
            return [full[k] for k in positions]
        return callback
