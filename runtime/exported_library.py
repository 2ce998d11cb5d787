"""`ember.load_exported(DIR)`: run a library made by `ember.export_library` from Python, through
ctypes and numpy alone: no tracing, no model source, no llvmlite or networkx.

The manifest says the inputs and outputs; the library's own C API (NAME_create, NAME_run_buffers,
NAME_last_error...) does the rest, so this runs exactly what a C program would.
"""
import ctypes
import json
import os
import threading

import numpy as np

from .shared_library import load_shared_library
from .thread_runtime import load_libgomp


class ExportedLibraryError(RuntimeError):
    """The exported library refused a call (its message included)."""


class ExportedModel:
    """A loaded exported library: `model(*inputs)` returns the output array (or a tuple of them)."""

    def __init__(self, directory, weights_path=None, threads=None):
        self._lock = threading.Lock()  # one call at a time per instance (the C API's rule; ctypes drops the GIL)
        manifest_path = os.path.join(directory, "manifest.json")
        try:
            with open(manifest_path) as f:
                self.manifest = json.load(f)
        except (OSError, ValueError) as error:
            raise ExportedLibraryError(f"load_exported: {directory} holds no readable manifest.json ({error}); "
                                       f"is it a directory ember.export_library wrote?") from None
        self.name = name = self.manifest["name"]
        self.directory = directory
        load_libgomp()  # (a no-op when the library was built without threads: it then needs none)
        # from a private copy: the dynamic loader would hand back an earlier library loaded from
        # the same path, which exporting again to this directory has since replaced
        with open(os.path.join(directory, self.manifest["library"]), "rb") as f:
            self._library, _ = load_shared_library(f.read(), f"{name}_create", [directory])
        lib = self._library
        self._create = getattr(lib, f"{name}_create")
        self._create.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        self._run = getattr(lib, f"{name}_run_buffers")
        self._run.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p),
                              ctypes.c_int64]
        self._error = getattr(lib, f"{name}_last_error")
        self._error.argtypes, self._error.restype = [ctypes.c_void_p], ctypes.c_char_p
        self._destroy = getattr(lib, f"{name}_destroy")
        self._destroy.argtypes = [ctypes.c_void_p]
        self._threads = getattr(lib, f"{name}_set_num_threads")
        self._threads.argtypes = [ctypes.c_void_p, ctypes.c_int]
        if weights_path is None and self.manifest["weights"]["mode"] == "file":
            weights_path = os.path.join(directory, self.manifest["weights"]["file"])
        handle = ctypes.c_void_p()
        status = self._create(weights_path.encode() if weights_path else None, ctypes.byref(handle))
        if status:
            raise ExportedLibraryError(self._error(None).decode())
        self._handle = handle
        if threads is not None:
            self.set_num_threads(threads)
        self.inputs, self.outputs = self.manifest["inputs"], self.manifest["outputs"]
        self.dynamic = self.manifest["batch"]["dynamic"]

    def set_num_threads(self, threads):
        with self._lock:
            if self._threads(self._handle, int(threads)):
                raise ExportedLibraryError(self._error(self._handle).decode())

    def __call__(self, *arrays):
        if len(arrays) != len(self.inputs):
            raise ExportedLibraryError(f"{self.name}: takes {len(self.inputs)} input(s) "
                                       f"({', '.join(t['name'] for t in self.inputs)}), got {len(arrays)}")
        batch = None
        inputs = []
        for given, spec in zip(arrays, self.inputs):
            array = np.asarray(getattr(given, "_data", given))
            kinds = {"f": "f", "i": "i", "u": "i", "b": "b"}  # floats, integers, bools: never mixed silently
            if kinds.get(array.dtype.kind) != kinds.get(np.dtype(spec["dtype"]).kind):
                raise ExportedLibraryError(f"{self.name}: input {spec['name']} is {array.dtype}, the library takes "
                                           f"{spec['dtype']}")
            array = np.require(array.astype(spec["dtype"], copy=False), requirements="C")  # (0-d stays 0-d)
            shape = list(array.shape)
            expected = [shape[0] if d == "batch" and shape else d for d in spec["shape"]]
            if shape != expected or (self.dynamic and batch is not None and shape[0] != batch):
                raise ExportedLibraryError(f"{self.name}: input {spec['name']} has shape {shape}, the library "
                                           f"takes {spec['shape']}" + (" (one batch size for all inputs)"
                                                                        if self.dynamic else ""))
            batch = shape[0] if shape else 1
            inputs.append(array)
        batch = batch if self.dynamic else self.manifest["batch"]["size"]
        outputs = [np.empty([batch if d == "batch" else d for d in spec["shape"]], dtype=spec["dtype"])
                   for spec in self.outputs]
        in_table = (ctypes.c_void_p * max(len(inputs), 1))(*[a.ctypes.data for a in inputs])
        out_table = (ctypes.c_void_p * max(len(outputs), 1))(*[a.ctypes.data for a in outputs])
        with self._lock:
            if not self._handle:
                raise ExportedLibraryError(f"{self.name}: the library was closed")
            if self._run(self._handle, in_table, out_table, batch):
                raise ExportedLibraryError(self._error(self._handle).decode())
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def close(self):
        if getattr(self, "_handle", None):
            with self._lock:
                self._destroy(self._handle)
                self._handle = None

    def __del__(self):
        self.close()


def load_exported(directory, weights_path=None, threads=None):
    """The exported library in `directory` (written by ember.export_library), ready to call with
    numpy arrays (or ember tensors): `load_exported("out")(x)`."""
    return ExportedModel(directory, weights_path, threads)
