"""`ember.utils.checkpoint` (torch.utils.checkpoint): activation checkpointing. The wrapped
function runs without recording autograd history; backward runs it again (with the random
generator's state of the first run, so dropout draws the same masks) and differentiates that.

The recomputation needs to know every tensor the function reads: its tensor arguments and,
when the function is a Module (or a method of one), that module's parameters. For any other
callable (a closure may read parameters the checkpoint cannot see) it runs as a plain call: the
same values and gradients, without the memory saving. Inside ember.compile it is a plain call
too: the compiled program plans its own memory.
"""
import warnings

from ember.frontend.autograd import enable_grad, grad as autograd_grad
from ember.frontend.custom_function import Function
from ember.frontend.dispatch import STATE
from ember.frontend.random import default_generator
from ember.frontend.tensor import Tensor


def _module_of(function):
    owner = function if hasattr(function, "named_parameters") else getattr(function, "__self__", None)
    return owner if hasattr(owner, "named_parameters") else None


class _Recompute(Function):
    @staticmethod
    def forward(ctx, run, preserve_rng_state, arg_count, *tensors):
        ctx.run, ctx.arg_count, ctx.parameters = run, arg_count, list(tensors[arg_count:])
        ctx.rng_state = default_generator.get_state() if preserve_rng_state else None
        ctx.save_for_backward(*tensors[:arg_count])
        outputs = run(*tensors[:arg_count])
        ctx.single = not isinstance(outputs, tuple)
        return outputs

    @staticmethod
    def backward(ctx, *grad_outputs):
        args = [a.detach().requires_grad_(a.requires_grad) for a in ctx.saved_tensors]
        parameters = ctx.parameters
        if ctx.rng_state is not None:
            current = default_generator.get_state()
            default_generator.set_state(ctx.rng_state)
        try:
            with enable_grad():
                outputs = ctx.run(*args)
        finally:
            if ctx.rng_state is not None:
                default_generator.set_state(current)
        outputs = (outputs,) if ctx.single else outputs
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if isinstance(o, Tensor) and o.requires_grad
                 and g is not None]
        wanted = [t for t in args + parameters if t.requires_grad]
        grads = dict(zip(map(id, wanted), autograd_grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                                         allow_unused=True))) if pairs and wanted else {}
        return (None, None, None) + tuple(grads.get(id(t)) for t in args + parameters)


def checkpoint(function, *args, use_reentrant=None, context_fn=None, determinism_check="default", debug=False,
               preserve_rng_state=True, **kwargs):
    """function(*args, **kwargs), recomputed in backward instead of keeping its activations."""
    if use_reentrant is None:
        warnings.warn("torch.utils.checkpoint: the use_reentrant parameter should be passed explicitly. Starting in "
                      "PyTorch 2.9, calling checkpoint without use_reentrant will raise an exception. "
                      "use_reentrant=False is recommended, but if you need to preserve the current default "
                      "behavior, you can pass use_reentrant=True. Refer to docs for more details on the "
                      "differences between the two variants.", stacklevel=2)
    if use_reentrant and kwargs:
        raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
    module = _module_of(function)
    tensors_only = all(isinstance(a, Tensor) for a in args)
    if STATE.recorder is not None or not STATE.grad_enabled or module is None or not tensors_only or kwargs:
        return function(*args, **kwargs)
    parameters = [p for p in module.parameters() if p.requires_grad]
    if not any(a.requires_grad for a in args) and (use_reentrant or not parameters):
        if use_reentrant:
            warnings.warn("None of the inputs have requires_grad=True. Gradients will be None", stacklevel=2)
        return function(*args)
    return _Recompute.apply(function, preserve_rng_state, len(args), *args, *parameters)


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """Run a Sequential (or list of modules) in `segments` checkpointed chunks; the last runs plainly."""
    functions = list(functions.children()) if hasattr(functions, "children") else list(functions)
    size = max(len(functions) // segments, 1)
    end = -1
    from ember.frontend.nn.container import Sequential
    for start in range(0, size * (segments - 1), size):
        end = start + size - 1
        input = checkpoint(Sequential(*functions[start:end + 1]), input, use_reentrant=use_reentrant, **kwargs)
    for function in functions[end + 1:]:
        input = function(input)
    return input


__all__ = ["checkpoint", "checkpoint_sequential"]
