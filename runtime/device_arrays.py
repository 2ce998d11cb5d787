"""Where tensors on a CUDA device keep their values: numpy arrays over the device's unified
(managed) memory, which kernels and host code address alike.

A device array is an ordinary numpy array whose memory a `DeviceBuffer` owns: slicing,
transposing and reshaping make views as for any array, and every one of them knows its
device by where its memory comes from (`device_of`), never by a flag that could disagree.
The GPU runs the kernels of the ops on these arrays (frontend/device_ops.py); host code may
read them (printing, `.item()`, the rare op with no kernel) because ember synchronises the
device's stream after every program, so the memory is never read while a kernel writes it.
On the grid emulator (runtime/emulated_cuda.py) the same memory is host memory the emulated
device allocated, and a launch given any other address fails as it would on a GPU.
"""
import numpy as np

ALIGNMENT = 8  # bytes: a buffer holds whole elements of every dtype
in_use = False  # whether this process ever made a device array (eager mode checks devices only then)


class DeviceBuffer:
    """`nbytes` of managed memory on `device`, given back when the last array over it goes."""

    def __init__(self, device, nbytes):
        global in_use
        in_use = True
        self.device = device
        self.nbytes = max(-(-int(nbytes) // ALIGNMENT) * ALIGNMENT, ALIGNMENT)
        self.address = device.allocate_managed(self.nbytes)
        self.__array_interface__ = {"shape": (self.nbytes,), "typestr": "|u1", "data": (self.address, False),
                                    "version": 3}

    def __del__(self):
        address, self.address = self.address, None
        if address is not None:
            try:
                self.device.free(address)
            except Exception:  # (the device may be gone at interpreter exit)
                pass


def empty(device, shape, dtype):
    """A new C-contiguous array of `shape` and `dtype` in `device`'s memory (uninitialised)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return np.asarray(DeviceBuffer(device, nbytes))[:nbytes].view(dtype).reshape(shape)


def buffer_of(array):
    """The DeviceBuffer owning `array`'s memory, or None for host memory (numpy's as_strided
    keeps its source under an object's `.base` too)."""
    base = array.base
    while base is not None and not isinstance(base, DeviceBuffer):
        base = getattr(base, "base", None)
    return base


def device_of(array):
    """The device whose memory `array` is in, or None (host memory)."""
    buffer = buffer_of(array) if isinstance(array, np.ndarray) else None
    return None if buffer is None else buffer.device


def in_host_memory(*arrays):
    """Whether every array is in host memory (eager mode's numpy fast paths apply only there)."""
    return not in_use or all(device_of(a) is None for a in arrays)


def to_device(device, array):
    """A C-contiguous copy of host or device `array` in `device`'s memory."""
    array = np.asarray(array)
    out = empty(device, array.shape, array.dtype)
    source = device_of(array)
    if source is device and array.flags.c_contiguous:
        device.copy_on_device(out.ctypes.data, array.ctypes.data, array.nbytes)
        device.synchronize()
    else:  # from the host (or a strided device view, read through unified memory)
        device.copy_in(out.ctypes.data, np.array(array, order="C", copy=not array.flags.c_contiguous))
    return out


def copy_into(target, source):
    """Write `source`'s values into `target` (same shape), on the device when both are
    contiguous arrays of one device and dtype; else through unified memory on the host."""
    device = device_of(target)
    if (device is not None and device_of(source) is device and target.dtype == source.dtype
            and target.shape == source.shape and target.flags.c_contiguous and source.flags.c_contiguous):
        device.copy_on_device(target.ctypes.data, source.ctypes.data, source.nbytes)
        device.synchronize()
    else:
        np.copyto(target, source)
