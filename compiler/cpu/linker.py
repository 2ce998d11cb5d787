"""Linking object code into a shared library with the system C compiler.

The CPU target links each program's object code with the support-library pieces it calls
into one shared library, which later processes load with ctypes alone (no llvmlite: a cache
hit costs a dlopen). The library is linked without the C runtime (`-nostdlib`): libc and
libgomp symbols resolve against the process that loads it (ember.runtime.thread_runtime
loads libgomp globally). Without a C compiler (`c_compiler()` is None) the backend loads
object code with llvmlite's MCJIT instead.
"""
import functools
import os
import shlex
import shutil
import subprocess
import tempfile


class LinkError(RuntimeError):
    """The C compiler could not link the objects (its message included)."""


@functools.lru_cache(maxsize=None)
def c_compiler():
    """The C compiler's command as a list ($CC, else cc, gcc or clang on PATH), or None."""
    wanted = shlex.split(os.environ.get("CC", ""))
    if wanted and shutil.which(wanted[0]):
        return wanted
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def link_shared_library(objects, compiler=None):
    """The bytes of a shared library linked from `objects` (object code, bytes each).
    -Bsymbolic binds the library's calls to its own definitions (every program library
    carries its own sgemm; none may pick up another's)."""
    command = compiler or c_compiler()
    if not command:
        raise LinkError("no C compiler found (set CC or install cc/gcc/clang)")
    with tempfile.TemporaryDirectory(prefix="ember-link-") as folder:
        paths = []
        for number, code in enumerate(objects):
            paths.append(os.path.join(folder, f"part{number}.o"))
            with open(paths[-1], "wb") as f:
                f.write(code)
        output = os.path.join(folder, "program.so")
        try:
            result = subprocess.run([*command, "-shared", "-nostdlib", "-Wl,-Bsymbolic", "-o", output, *paths],
                                    capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as error:
            raise LinkError(f"{' '.join(command)} could not run: {error}") from error
        if result.returncode != 0:
            raise LinkError(f"{' '.join(command)} -shared failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        with open(output, "rb") as f:
            return f.read()
