"""Collective primitives: an allreduce as two host-only ops of a compiled program.

`all_reduce_start(x, op, tag)` hands a copy of `x` to the process group's collective worker
(runtime/communicator.py) and returns a token; `all_reduce_wait(token, op, tag, shape, dtype)`
waits for that allreduce and returns the reduced value. Between the two, the program goes on
computing: the collective-schedule pass (passes/collective_schedule.py) starts each allreduce
as soon as its operand exists and waits as late as possible, so a bucket of gradients is
reduced while backward computes the next one. Both have effects (passes neither fold nor
merge them) and run as numpy callbacks (`host_only`): targets without host callbacks refuse
them by name. `tag` pairs a wait with its start within one call.
"""
import numpy as np

from ember import dtypes
from .registry import OpError, Spec, describe, register

OPS = ("sum", "avg", "product", "min", "max")


def _start_rule(x, op, tag):
    if op not in OPS:
        raise OpError("all_reduce_start", f"op must be one of {', '.join(OPS)}, got {op!r}")
    if op == "avg" and not x.dtype.is_floating_point:
        raise OpError("all_reduce_start", f"avg needs a floating-point tensor, got {describe(x)}")
    return Spec((), dtypes.int64)


def _start(x, op, tag):
    from ember.runtime.communicator import world
    world().start_tagged(tag, x, op)
    return np.array(tag, np.int64)


def _wait_rule(token, op, tag, shape, dtype):
    return Spec(tuple(shape), dtypes.as_dtype(dtype))


def _wait(token, op, tag, shape, dtype):
    from ember.runtime.communicator import world
    return world().finish_tagged(tag)


register("all_reduce_start", "opaque", _start, _start_rule, host_only=True, effects=True)
register("all_reduce_wait", "opaque", _wait, _wait_rule, host_only=True, effects=True)
