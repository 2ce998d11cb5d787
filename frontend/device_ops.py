"""Eager ops on tensors on a CUDA device: each primitive runs as a one-op program of the GPU
target (compiler/ptx), compiled once per primitive, attributes, operand shapes and dtypes,
device, and kept in memory (and the compiler's disk cache).

dispatch.eager_bind sends an op here when an operand is on the device (host operands are copied
over: frontend/device_tensors.check_same_device). What runs where:
- view primitives make numpy views of the device memory (no kernel, no copy); where numpy
  would copy (a reshape of a strided view), the operand is first made contiguous on the device;
- every other primitive is a program: its operands are passed where they are (contiguous
  device arrays, no copy), a strided view is first gathered into contiguous device memory by
  the one-op program of `take` over its span, and the result is a new device array;
- host-only primitives (sort, unique, ...: numpy run as callbacks on the CPU target) run on
  the host over unified memory after the device finished, their result placed on the device.
"""
import threading
from collections import OrderedDict

import numpy as np

from ember.ir import Graph
from ember.runtime import device_arrays
from ember.runtime.device_arrays import buffer_of, device_of, to_device

_PROGRAMS = OrderedDict()  # key -> (runner, [input node ids], output node id), least recently used first
_INDEXES = OrderedDict()  # (device id, shape, strides, itemsize) -> (span start, span length, index device array)
KEPT_PROGRAMS, KEPT_INDEXES = 1024, 256  # (each holds device memory: the oldest go beyond these)
_LOCK = threading.Lock()
_BACKENDS = {}  # runtime device id -> the ptx backend that compiles for it


def device_bind(prim, arrays, attrs, device):
    """The array of `prim` applied to `arrays` (some on `device`), computed there."""
    if prim.view:
        out = prim.impl(*arrays, **attrs)
        if device_of(out) is device:
            return out
        contiguous = [contiguous_on(device, a) if device_of(a) is device else a for a in arrays]
        out = prim.impl(*contiguous, **attrs)  # (a view of contiguous memory never copies)
        return out if device_of(out) is device else to_device(device, out)
    if prim.host_only:
        device.synchronize()
        host = [np.asarray(a) for a in arrays]
        return to_device(device, np.asarray(prim.impl(*host, **attrs)))
    placed = [contiguous_on(device, a) for a in arrays]
    return run_one_op(device, prim.name, placed, attrs)


def add_on_device(a, b, device):
    """a + b computed on `device` (eager autograd's gradient accumulation)."""
    from ember.ops import PRIMITIVES
    return device_bind(PRIMITIVES["add"], [a, b], {}, device)


def evaluate(prim, arrays, attrs, device=None):
    """`prim` on arrays as eager mode would compute it: on `device`, or the device of any
    device array among them, else its numpy implementation (for code that evaluates IR nodes
    outside eager dispatch: the tracer's gradient values)."""
    if device is None and device_arrays.in_use:
        device = next((found for found in map(device_of, arrays) if found is not None), None)
    if device is None:
        return np.asarray(prim.impl(*arrays, **attrs))
    return device_bind(prim, arrays, attrs, device)


def graph_runner(graph, device):
    """A runner of `graph` node by node on `device` (each node as eager mode would run it there):
    what ember.compile runs for a trace on the device that the GPU target cannot compile (it
    holds host-only ops such as sort, which eager mode runs on the host)."""
    from ember.ir import run_graph

    def run(inputs, params):
        env = run_graph(graph, [inputs[i] for i in graph.inputs], params,
                        evaluate=lambda prim, arrays, attrs, dtype: evaluate(prim, arrays, attrs, device))
        return {o: env[o] for o in graph.outputs}
    run.graph = graph
    return run


def contiguous_on(device, array):
    """`array` as a C-contiguous array in `device`'s memory: itself, a host array copied in, or
    a strided device view gathered on the device."""
    if device_of(array) is not device:
        return to_device(device, array)
    if array.flags.c_contiguous:
        return array
    itemsize = array.dtype.itemsize
    if any(stride % itemsize for stride in array.strides) or (array.ctypes.data - buffer_of(array).address) % itemsize:
        return to_device(device, array)  # (a reinterpreted view off the element grid: through unified memory)
    flat, index = _span_and_index(device, array)
    return run_one_op(device, "take", [flat, index], {"axis": 0})


def _span_and_index(device, array):
    """(the device memory a strided view reads, as a flat array of its dtype; the int64 index
    of each of the view's elements in it): `take` of the two is the view made contiguous."""
    itemsize = array.dtype.itemsize
    key = (id(device), array.shape, array.strides, itemsize)
    found = _INDEXES.get(key)
    if found is not None:
        _INDEXES.move_to_end(key)
    else:
        steps = [s // itemsize for s in array.strides]
        offsets = np.zeros(array.shape, np.int64)
        for axis, (size, step) in enumerate(zip(array.shape, steps)):
            shape = [1] * array.ndim
            shape[axis] = size
            offsets = offsets + (np.arange(size, dtype=np.int64) * step).reshape(shape)
        low = int(offsets.min()) if offsets.size else 0
        length = int(offsets.max()) - low + 1 if offsets.size else 1
        found = _INDEXES[key] = (low, length, to_device(device, offsets - low))
        while len(_INDEXES) > KEPT_INDEXES:
            _INDEXES.popitem(last=False)
    low, length, index = found
    owner = buffer_of(array)
    offset = array.ctypes.data - owner.address + low * itemsize
    flat = np.asarray(owner)[offset:offset + length * itemsize].view(array.dtype)
    return flat, index


def run_one_op(device, name, arrays, attrs):
    """The result (a new device array) of primitive `name` on contiguous device `arrays`."""
    runner, inputs, output = one_op_program(device, name, [(a.shape, a.dtype) for a in arrays], attrs)
    return runner(dict(zip(inputs, arrays)), {})[output]


def one_op_program(device, name, operand_specs, attrs):
    """(runner, input node ids, output node id) of the one-op program, compiled on first use."""
    from ember.backends.cuda import tf32_switches
    key = (id(device), name, tuple((tuple(s), np.dtype(d).str) for s, d in operand_specs), _attrs_key(attrs),
           tf32_switches())  # (the PTX target's code follows the switches)
    with _LOCK:
        found = _PROGRAMS.get(key)
        if found is not None:
            _PROGRAMS.move_to_end(key)
            return found
    found = _compile_one_op(device, name, operand_specs, attrs)
    found[0].resident = True  # (an op of empty tensors, or a program without inputs, too)
    with _LOCK:
        found = _PROGRAMS.setdefault(key, found)
        while len(_PROGRAMS) > KEPT_PROGRAMS:
            _PROGRAMS.popitem(last=False)
    return found


def _compile_one_op(device, name, operand_specs, attrs):
    from ember.ops import PRIMITIVES
    from ember.ops.registry import Spec
    from ember import dtypes
    prim = PRIMITIVES[name]
    specs = [Spec(tuple(shape), dtypes.from_numpy(np.dtype(dtype))) for shape, dtype in operand_specs]
    result = prim.infer(*specs, **attrs)
    graph = Graph(f"eager_{name}")
    inputs = [graph.add_input(spec.shape, spec.dtype.name, f"x{k}") for k, spec in enumerate(specs)]
    output = graph.add_node(name, inputs, result.shape, result.dtype.name, dict(attrs), name)
    graph.outputs = [output]
    return backend_for(device).compile(graph), inputs, output


def backend_for(device):
    """The GPU target's backend for `device` (the real one, or the grid emulator), made once."""
    backend = _BACKENDS.get(id(device))
    if backend is None:
        from ember.compiler.driver import Driver
        from ember.compiler.ptx.target import PtxTarget
        target = PtxTarget(device.compute_capability if device.compute_capability in ("sm_80", "sm_90") else "sm_90",
                           emulated=device.emulated)
        backend = _BACKENDS[id(device)] = Driver(target, "ptx-emulated" if device.emulated else "ptx", None, 0)
    return backend


def _attrs_key(attrs):
    """A hashable, exact key of a primitive's attributes (arrays by dtype, shape and bytes)."""
    def freeze(value):
        if isinstance(value, np.ndarray):
            return ("array", value.dtype.str, value.shape, value.tobytes())
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, tuple(freeze(v) for v in value))
        if isinstance(value, dict):
            return ("dict", tuple(sorted((k, freeze(v)) for k, v in value.items())))
        if isinstance(value, float):
            return ("float", value.hex())
        return (type(value).__name__, repr(value))
    return tuple(sorted((k, freeze(v)) for k, v in attrs.items()))
