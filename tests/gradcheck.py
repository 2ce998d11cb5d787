"""Gradient checks for modules: every input and parameter of a module against float64
central finite differences (tests/finite_differences.py does the arithmetic).

`check_module(module, inputs)` casts the module to float64 and treats its parameters as
extra inputs of a pure function, by calling it with the parameters swapped for the values
under test (torch.func.functional_call's trick).
"""
import contextlib

import numpy as np

import ember
from finite_differences import check_vjp


@contextlib.contextmanager
def swapped_parameters(module, values):
    """Temporarily make `module`'s parameters (by qualified name) the given tensors."""
    saved = []
    for name, value in values.items():
        owner_path, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_path)
        saved.append((owner, leaf, owner._parameters[leaf]))
        owner._parameters[leaf] = value
    try:
        yield
    finally:
        for owner, leaf, original in saved:
            owner._parameters[leaf] = original


def check_module(module, inputs, seed=0, rtol=1e-5, atol=1e-7, extra=()):
    """Gradients of module(*inputs, *extra) w.r.t. every float input and every parameter.
    `inputs` are numpy arrays (cast to float64); `extra` are non-differentiated arguments
    (e.g. class-index targets). Randomness (dropout) is reseeded on every call."""
    module.double()
    names = [name for name, _ in module.named_parameters()]
    arrays = [np.asarray(a, dtype=np.float64) for a in inputs]
    arrays += [p.detach().numpy().copy() for _, p in module.named_parameters()]
    count = len(inputs)

    def fn(*tensors):
        ember.manual_seed(seed)
        with swapped_parameters(module, dict(zip(names, tensors[count:]))):
            return module(*tensors[:count], *extra)

    check_vjp(fn, arrays, rtol=rtol, atol=atol, seed=seed)
