"""ember.ops: the primitive registry. One definition per primitive, read by every stage.

`PRIMITIVES` maps a name to its `Primitive` (kind, shape rule, numpy implementation, VJP,
and for elementwise ops the scalar lowering rule every compiler target reads).
Composite ops (linear, softmax, cross_entropy, norms) live in the frontend, built from these.
"""
from .registry import (KINDS, OpError, PRIMITIVES, Primitive, Spec, current_mode, describe, get, in_mode,
                       install_base_mode, register, register_lowering)
from . import elementwise, reduce, movement, indexing, contraction, random_sources, gradient_flow, collectives  # noqa: F401,E501  (registers the primitives)
from . import special  # noqa: F401  (registers the special-function and bitwise primitives)
from . import compose, linalg_ops  # noqa: F401

__all__ = ["KINDS", "OpError", "PRIMITIVES", "Primitive", "Spec", "describe", "get", "register", "register_lowering",
           "in_mode", "current_mode", "install_base_mode", "compose"]
