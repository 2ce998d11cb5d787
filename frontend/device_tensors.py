"""Tensors on a CUDA device: which device "cuda" is, moving tensors there and back, and the
checks PyTorch makes when devices meet.

A tensor is on the device exactly when its array's memory is the device's unified memory
(runtime/device_arrays.py): `Tensor.device` asks the array, so it cannot disagree with where
the values are. Eager ops on such tensors run on the device (frontend/device_ops.py);
`ember.compile` runs a function whose tensors are on the device with the GPU target.
"cuda" is the machine's first NVIDIA GPU, or, with EMBER_EMULATE_CUDA=1, the CPU's grid
emulator (runtime/emulated_cuda.py): the same programs, slowly, for machines without a GPU.
"""
import numpy as np

from ember.runtime import device_arrays
from ember.runtime.device_arrays import device_of, to_device

_OPENED = {}  # emulated? -> the runtime device


def emulating():
    """EMBER_EMULATE_CUDA=1: "cuda" is the grid emulator (ember/config.py)."""
    from ember import config
    return config.emulate_cuda()


def cuda_runtime_device(index=0):
    """The runtime device behind `cuda` / `cuda:0`; RuntimeError saying why there is none."""
    from ember.runtime.cuda_driver import CudaError, open_device
    if index not in (None, 0):
        raise RuntimeError(f"ember: CUDA device cuda:{index} is not available (ember uses one device, cuda:0)")
    emulated = emulating()
    if emulated not in _OPENED:
        try:
            _OPENED[emulated] = open_device(0, emulated=emulated)
        except CudaError as error:
            raise RuntimeError(f"{error}. ember cannot place tensors on device cuda here; set EMBER_EMULATE_CUDA=1 "
                               "to run them on the CPU's emulation of a GPU") from None
    return _OPENED[emulated]


def opened():
    """Whether the "cuda" device of the current setting was opened in this process."""
    return emulating() in _OPENED


def cuda_is_available():
    try:
        cuda_runtime_device()
        return True
    except RuntimeError:
        return False


def device_name(device_object):
    return "cpu" if device_object is None else "cuda:0"


def runtime_device(device):
    """The runtime device of an ember.device / string ("cpu" -> None)."""
    from .tensor import Device
    device = Device(device)
    if device.type == "cuda":
        return cuda_runtime_device(device.index)
    if device.type in ("cpu", "meta"):
        return None
    raise RuntimeError(f"ember: device {device} is not supported (cpu and cuda are)")


def place(array, device_object):
    """`array` in the memory of `device_object` (None: the host): itself when it is there already."""
    if device_of(array) is device_object:
        return array
    if device_object is None:
        return np.array(array, copy=True)
    return to_device(device_object, array)


def like(array, reference):
    """`array` (computed on the host) placed where `reference` lives: for the host-side code
    of eager mode (autograd's seeds and accumulations) that must keep a device tensor's
    gradient on its device."""
    target = device_of(reference)
    return array if target is None or device_of(array) is target else to_device(target, array)


def keeps_device(fn):
    """`fn` (a frontend op that computes some results with numpy on the host: nonzero, unique,
    histogram...) with its tensor results placed on the device of its first device operand."""
    import functools
    from .tensor import Tensor

    def operands(values):
        for value in values:
            if isinstance(value, Tensor):
                yield value
            elif isinstance(value, (list, tuple)):
                yield from (v for v in value if isinstance(v, Tensor))

    def placed(result, target):
        if isinstance(result, Tensor):
            if device_of(result._data) is not target:
                result._data = place(result._data, target)
            return result
        if isinstance(result, tuple) and hasattr(result, "_fields"):
            return type(result)(*(placed(r, target) for r in result))
        if isinstance(result, (tuple, list)):
            return type(result)(placed(r, target) for r in result)
        return result

    @functools.wraps(fn)
    def on_device(*args, **kwargs):
        result = fn(*args, **kwargs)
        if not device_arrays.in_use:
            return result
        target = next((found for found in (device_of(t._data) for t in operands([*args, *kwargs.values()]))
                       if found is not None), None)
        return result if target is None else placed(result, target)
    return on_device


def copy_array(array):
    """A copy of `array` in the same memory (host or device)."""
    target = device_of(array)
    return np.array(array, copy=True, order="C") if target is None else to_device(target, array)


class _ToCopy:
    """The autograd record of a device move (grad_fn ToCopyBackward0): the gradient goes back
    to the source's device."""

    name = "to_copy"
    vjp_uses_output = False
    sibling_grads = None
    ctx = None

    @staticmethod
    def vjp(g, out, x, source):
        return (move(g, source),)


TO_COPY = _ToCopy()


def move(tensor, device):
    """`tensor.to(device)`: itself when it is there already, else a copy on `device` that
    autograd connects to `tensor` (gradients flow back to the source device). Inside ember.compile
    a move makes the call run eagerly: move inputs before calling a compiled function."""
    from .autograd import Node
    from .dispatch import STATE, run_eagerly
    from .tensor import Tensor
    target = runtime_device(device)
    source = device_of(tensor._data)
    if source is target:
        return tensor
    if STATE.recorder is not None:
        run_eagerly(f"moves a tensor from {device_name(source)} to {device_name(target)} inside the compiled "
                    "function (move inputs before calling it)")
    out = Tensor._wrap(place(tensor._data, target))
    if STATE.grad_enabled and tensor.requires_grad:
        Node.attach(out, TO_COPY, [tensor], {"source": device_name(source)})
    return out


def check_same_device(prim_name, operands):
    """The runtime device an op runs on: the one its device operands share, or None when all
    are on the host. Host operands of an op on the device are copied over (PyTorch does so for
    0-d host tensors and raises for others; ember's own helpers build small host constants,
    an index or a one-hot, next to device tensors, so ember copies them rather than refusing)."""
    found = None
    for t in operands:
        placed = device_of(t._data)
        if placed is not None:
            if found is not None and placed is not found:
                raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices "
                                   f"(when checking argument for {prim_name})")
            found = placed
    return found
