"""What a loaded program is, for every runtime (runtime/cpu_program.py, runtime/cuda_program.py):
its external buffers and results as plain data (the compiler's targets build a ProgramSpec
from a program's description), and the checks and collection every runner does the same way.
"""
import builtins

import numpy as np


class External:
    """One external buffer of a program: table position, kind (input/param/constant/output),
    key (input node id, param name, constant array, output node id), shape and dtype."""

    __slots__ = ("position", "kind", "key", "shape", "dtype")

    def __init__(self, position, kind, key, shape, dtype):
        self.position, self.kind, self.key = position, kind, key
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)


class ProgramSpec:
    """Everything the runtime needs to call a compiled program (plain data).

    externals: [External]; arena_bytes: int; results: [(result node id, source)] where source
    is ("output", node) | ("input", node) | ("param", name) | ("constant", array);
    errors: [(exception name, message)]; fallbacks: {kernel number: callable(arrays) that
    runs a numpy fallback, given `read(location)` (see CpuProgram.location_array)};
    kernel_names: names for timing reports, kernel_sources the model lines each came from;
    threads: int; timed: instrumented build."""

    def __init__(self, name, externals, arena_bytes, results, errors=(), fallbacks=None, kernel_names=(),
                 threads=1, timed=False, kernel_sources=None, dynamic=None, scratch=None):
        self.name, self.externals, self.arena_bytes = name, list(externals), int(arena_bytes)
        self.dynamic = dynamic  # a DynamicLayout for a program over size symbols, else None
        # a dynamic program's scratch: ([each slot's offset past the scratch base], [each kernel's bytes]),
        # ints or SymDims (the arena holds the placed buffers, then the largest kernel's scratch)
        self.scratch = scratch
        self.results, self.errors = list(results), list(errors)
        self.fallbacks = dict(fallbacks or {})
        self.kernel_names, self.threads, self.timed = list(kernel_names), int(threads), timed
        self.kernel_sources = list(kernel_sources or [""] * len(self.kernel_names))


class DynamicLayout:
    """What a program over size symbols needs per call: `symbols` (ember/ir/symbols.py's
    SymbolTable: where each size is read among the inputs) and `place(sizes)`, the memory plan
    placed for those sizes (its `order` of buffers, their offsets and `arena_bytes`); the
    external buffers' shapes are expressions of the symbols, and the program's scratch
    (`arena_bytes` of the spec) lies after the placed buffers."""

    def __init__(self, symbols, place, order):
        self.symbols, self.place, self.order = symbols, place, list(order)


def conform_array(program, value, shape, dtype, what):
    """`value` (an array or an ember tensor) as a C-contiguous array of `dtype`; ValueError
    naming the program and `what` (e.g. "input %3") when its shape is not `shape`."""
    array = np.asarray(getattr(value, "_data", value), dtype=dtype, order="C")  # (keeps 0-d arrays 0-d)
    if array.shape != shape:
        raise ValueError(f"{program}: {what} has shape {list(array.shape)}, "
                         f"the compiled program expects {list(shape)}")
    return array


def collect_results(results, outputs, inputs, params, copy=np.array, sizes=None):
    """{result node: array} from a call's output arrays {output node: array}, its inputs and
    params, per ProgramSpec.results (a value under two result ids becomes two arrays, made by
    `copy`: a device-resident call's copies stay on the device). A dynamic program's "sized
    constant" (value, shape, dtype) is filled at the call's `sizes`."""
    result = {}
    for node, (kind, key) in results:
        if kind == "output":
            value = outputs[key]
            if any(value is v for v in result.values()):
                value = copy(value)
        elif kind == "input":
            value = inputs[key]
        elif kind == "param":
            value = params[key]
        elif kind == "sized constant":
            from ember.ir.symbols import evaluate
            filler, shape, dtype = key
            value = np.full(evaluate(tuple(shape), sizes), evaluate(filler, sizes), dtype=dtype)
        else:
            value = copy(np.asarray(key))
        result[node] = value
    return result


def program_error(spec, status):
    """The exception a program's failed check number `status` (from 1) raises."""
    kind, message = spec.errors[status - 1]
    return getattr(builtins, kind, RuntimeError)(f"{spec.name}: {message}")
