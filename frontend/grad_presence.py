"""Which params have a `.grad`: part of a compiled function's call signature (frontend/jit.py).

A traced backward() adds into a `.grad` that existed before the call, or makes a new one, so a
training step traced with gradients present is another program than one traced without: the
module "state" part and the "optimizer state" part of a signature hold, for each param, whether
it has a `.grad` (gradient accumulation, with the optimizer stepping and setting the gradients
to None outside every few calls, keeps one program for each state). A program that neither
reads nor writes a `.grad` serves every such state: it is found under the signature without
them (`grad_free_key`), so a compiled forward whose backward runs outside traces once.
"""
from .external_names import GradOf, HeldGrad


def without_grad_presence(part):
    """A module's "state" or an optimizer's "optimizer state" signature part without whether
    each param has a .grad (the last field of each param's entry); another part as it is."""
    if part[0] == "state":
        return part[:2] + (tuple(entry[:-1] for entry in part[2]),)
    if part[0] == "optimizer state":
        return part[:4] + (tuple(tuple(entry[:-1] for entry in group) for group in part[4]),) + part[5:]
    return part


def grad_free_key(signature):
    """The signature without which params have a .grad."""
    return tuple(without_grad_presence(part) for part in signature)


def touches_grads(graph, externals):
    """Does a traced program read or write a .grad (a backward inside, a .grad it was given)?"""
    return any(m.kind.endswith("_grad") for m in graph.mutations) or any(
        type(held) in (GradOf, HeldGrad) for held in externals.values())
