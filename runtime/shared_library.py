"""Loading a compiled program's shared library with ctypes: no llvmlite, one dlopen.

compiler/linker.py links the libraries and the compile cache keeps them. A library is loaded
from a private copy under a fresh name, never from the cache file itself: the dynamic loader
hands back an already loaded library for a path it has seen, and a cache file rewritten in
place while mapped would corrupt the running code. libgomp must be loaded
(ember.runtime.thread_runtime) before a program that runs parallel loops.
"""
import ctypes
import os
import tempfile


def load_shared_library(data, entry_name, folders=()):
    """(library, entry address) of the shared library `data` (bytes); keep the library alive.
    The copy goes to the system's temporary folder, else to the first of `folders` where it
    can be loaded (a temporary folder may forbid executing mapped files); it is removed
    again once loaded."""
    problems = []
    for folder in (None, *folders):
        try:
            handle, path = tempfile.mkstemp(prefix=".ember-program-", suffix=".so", dir=folder)
        except OSError as error:
            problems.append(str(error))
            continue
        try:
            with os.fdopen(handle, "wb") as f:
                f.write(data)
            library = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        except OSError as error:
            problems.append(str(error))
            continue
        finally:
            os.remove(path)
        try:
            function = getattr(library, entry_name)
        except AttributeError:
            raise RuntimeError(f"ember runtime: compiled library has no {entry_name} function") from None
        return library, ctypes.cast(function, ctypes.c_void_p).value
    raise OSError(f"ember runtime: cannot load a compiled program's shared library ({'; '.join(problems)})")
