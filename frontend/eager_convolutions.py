"""Eager conv2d and its two gradients through the compiled CPU support library (ctypes).

numpy has no convolution: ember/ops implements conv2d and its gradients with im2col blocks
and BLAS (6 of an eager seed Net training step's 9 ms inside ops at batch 64). Compiled
programs call the support library's ember_conv2d, ember_conv2d_grad_input and
ember_conv2d_grad_weight (compiler/cpu/conv.py: direct kernels, or im2col around the packed
sgemm; images spread over libgomp's threads), whose shapes are arguments. Here eager mode calls
those same pieces on float32 CPU arrays, linked once into a shared library kept in the compile
cache. Other dtypes, empty tensors, and machines where the library cannot be built or loaded
(no llvmlite, no C compiler) keep the numpy implementation; the IR interpreter always does (it
stays the reference). dispatch.eager_bind finds these through eager_compiled_ops.COMPILED_FOR_EAGER.
"""
import ctypes
import threading

import numpy as np

_FLOAT32 = np.dtype(np.float32)
# The kernels run on the calling thread alone: eager matmuls run on numpy's BLAS threads, and
# libgomp's threads spinning after a parallel convolution slowed the BLAS call that followed up
# to 14x (a seed Net step at 2 threads: 13 ms with one-thread convolutions, 18-40 ms with them
# on two, 20 ms with numpy's).
THREADS = 1
_PIECES = ("sgemm", "conv2d", "conv2d_grad_input", "conv2d_grad_weight")
_LIBRARY = {}  # "library": the loaded ctypes library, or None where it cannot be built or loaded
_LOCK = threading.Lock()


def _library(build=True):
    """The loaded library (built or linked on first use when `build`), or None."""
    with _LOCK:
        if "library" not in _LIBRARY:
            if not build:
                return None
            _LIBRARY["library"] = _build_or_load()
        return _LIBRARY["library"]


def _build_or_load():
    """The support pieces linked into one shared library (from the compile cache when there),
    loaded; None where that cannot be done here (the numpy implementations serve then)."""
    try:
        from ember.compiler import compile_cache
        from ember.compiler.cpu import linker, support_library
        from ember.compiler.cpu.target import linking_works, thread_runtime_loaded
        from ember.runtime.shared_library import load_shared_library
        if not linking_works():
            return None
        parallel = thread_runtime_loaded()  # (libgomp loaded globally: the pieces call it)
        cache = compile_cache.CompileCache()
        key = compile_cache.cache_key("eager-convolutions", *(support_library.piece_key(p, parallel) for p in _PIECES))
        payload = cache.load(key, kind="so")
        if payload is None:
            payload = linker.link_shared_library([support_library.piece_object(p, cache, parallel) for p in _PIECES])
            cache.store(key, payload, kind="so")
        library, _ = load_shared_library(payload, "ember_conv2d", [cache.directory])
        for kind in _PIECES[1:]:
            getattr(library, f"ember_{kind}").restype = None
        return library
    except Exception:  # (correct results either way: the numpy implementations are the fallback)
        return None


class EagerConvolution:
    """One of conv2d, conv2d_grad_input, conv2d_grad_weight: the support library's kernel on
    float32 arrays, else the primitive's numpy implementation."""

    def __init__(self, kind):
        self.kind = kind
        self.workspace = np.empty(0, _FLOAT32)  # (grown as needed; calls hold the lock)
        self.lock = threading.Lock()

    def __call__(self, first, second, **attrs):
        from ember.ops import PRIMITIVES
        from ember.ops.registry import tracing_below
        prim = PRIMITIVES[self.kind]
        # (a trace computes its values with the library only once eager mode has loaded it: a cold
        # ember.compile must not also compile the library, about a second, for values alone)
        out_shape = _checked_output_shape(prim, first, second, attrs) \
            if first.dtype == _FLOAT32 and second.dtype == _FLOAT32 else None
        if out_shape is None or _library(build=not tracing_below()) is None:
            return prim.impl(first, second, **attrs)  # (which raises the shape rule's error where it fails)
        x_shape, w_shape = self._operand_shapes(first, second, attrs)
        if min(out_shape + x_shape + w_shape) <= 0:
            return prim.impl(first, second, **attrs)
        from ember.compiler.cpu.conv import conv2d_workspace_bytes
        stride, padding, dilation, groups = attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"]
        threads = slots = THREADS
        floats = conv2d_workspace_bytes(self.kind, x_shape, w_shape, stride, padding, dilation, groups, slots) // 4
        in0, in1 = np.ascontiguousarray(first), np.ascontiguousarray(second)
        out = np.empty(out_shape, _FLOAT32)
        geometry = (*x_shape, w_shape[0], w_shape[2], w_shape[3], *stride, *padding, *dilation, groups)
        with self.lock:  # (one workspace per kind)
            if self.workspace.size < floats:
                self.workspace = np.empty(max(floats, 1), _FLOAT32)
            getattr(_library(), f"ember_{self.kind}")(
                _pointer(in0), _pointer(in1), _pointer(out), *(ctypes.c_int64(int(v)) for v in geometry),
                _pointer(self.workspace), ctypes.c_int64(slots), ctypes.c_int32(threads))
        return out

    def _operand_shapes(self, first, second, attrs):
        """(the convolution's input shape, its weight's shape) in this call."""
        if self.kind == "conv2d":
            return tuple(first.shape), tuple(second.shape)
        if self.kind == "conv2d_grad_input":
            return tuple(attrs["input_shape"]), tuple(second.shape)
        return tuple(first.shape), tuple(attrs["weight_shape"])


def _checked_output_shape(prim, first, second, attrs):
    """The result's shape by the primitive's shape rule, or None where the rule fails or a
    stride, dilation or groups is not positive or a padding negative. The kernel trusts its
    arguments (a channel count that disagrees with the weight's, or a gradient of another shape,
    would make it read and write out of bounds); eager_bind consults the rule only after an
    implementation fails."""
    from ember import dtypes
    from ember.ops.registry import Spec
    stride, padding, dilation, groups = attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"]
    if first.ndim != 4 or second.ndim != 4 or type(groups) is not int or groups < 1 \
            or min(*stride, *dilation) < 1 or min(padding) < 0:
        return None
    try:
        spec = prim.infer(Spec(first.shape, dtypes.float32), Spec(second.shape, dtypes.float32), **attrs)
    except Exception:
        return None
    return tuple(spec.shape) if len(spec.shape) == 4 else None


def _pointer(array):
    return ctypes.c_void_p(array.ctypes.data)


CONVOLUTIONS_FOR_EAGER = {kind: EagerConvolution(kind) for kind in _PIECES[1:]}
