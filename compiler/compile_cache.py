"""The on-disk cache of compiled machine code, so a program LLVM has compiled once loads in
milliseconds in every later process.

An entry is the object code of one program (or of the sgemm support library), keyed by a
SHA-256 over everything that changes the code: the planned graph's JSON, the target (triple,
CPU name and features, llvmlite version), ember's version, the code generator's own source
and build options (`cache_key`). Files live under EMBER_CACHE_DIR (ember/config.py) as
`<key[:2]>/<key>.o`, begin with a header holding the payload's checksum, and are written
atomically (a temporary file in the same folder, then os.replace), so a reader never sees
half a file. A corrupted entry (bad header or checksum) is reported with a warning, removed
and rebuilt by the caller.
"""
import hashlib
import os
import tempfile
import warnings

from ember import config

MAGIC = b"EMBER-OBJECT-1\n"
DIGEST_BYTES = 64  # hex sha256


def cache_key(*parts):
    """SHA-256 (hex) over the parts (str or bytes), each length-prefixed so no two
    different part lists collide."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else bytes(part)
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def source_digest(*paths):
    """A hash of source files (paths or modules): generated code changes when they do."""
    digest = hashlib.sha256()
    for path in paths:
        path = getattr(path, "__file__", path)
        digest.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def code_generator_sources():
    """Every file whose change changes generated machine code: the lowering, the loop IR,
    all compiler/llvm_*.py modules (kernels, math, sgemm, convolutions, target) and the
    runtime's calling convention."""
    import glob
    from ember.runtime import cpu_program
    here = os.path.dirname(os.path.abspath(__file__))
    files = sorted(glob.glob(os.path.join(here, "llvm_*.py")))
    files += [os.path.join(here, "lowering.py"), os.path.join(here, "loop_ir.py"), cpu_program.__file__]
    return source_digest(*files)


class CompileCache:
    """Object code by key under `directory` (default EMBER_CACHE_DIR). Counts hits, misses
    and corrupted entries found."""

    def __init__(self, directory=None):
        self.directory = directory or config.CACHE_DIR
        self.hits = self.misses = self.corrupted = 0

    def path(self, key):
        return os.path.join(self.directory, key[:2], key + ".o")

    def load(self, key):
        """The payload stored under `key`, or None (missing, or corrupted: then warned and removed)."""
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as error:
            warnings.warn(f"ember: cannot read compile cache entry {path} ({error}); compiling again",
                          stacklevel=3)
            self.misses += 1
            return None
        payload = _verified_payload(data)
        if payload is None:
            self.corrupted += 1
            self.misses += 1
            warnings.warn(f"ember: compile cache entry {path} is corrupted (bad header or checksum); "
                          f"rebuilding it", stacklevel=3)
            try:
                os.remove(path)
            except OSError:
                pass
            return None
        self.hits += 1
        return payload

    def store(self, key, payload):
        """Write the entry atomically; a cache that cannot be written is skipped with a warning."""
        path = self.path(key)
        folder = os.path.dirname(path)
        data = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + bytes(payload)
        try:
            os.makedirs(folder, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".o", dir=folder)
            try:
                with os.fdopen(handle, "wb") as f:
                    f.write(data)
                os.replace(temporary, path)
            except BaseException:
                if os.path.exists(temporary):
                    os.remove(temporary)
                raise
        except OSError as error:
            warnings.warn(f"ember: cannot write compile cache entry {path} ({error}); "
                          f"set EMBER_CACHE_DIR to a writable folder", stacklevel=3)


def _verified_payload(data):
    head = len(MAGIC) + DIGEST_BYTES + 1
    if len(data) < head or not data.startswith(MAGIC) or data[head - 1:head] != b"\n":
        return None
    payload = data[head:]
    expected = data[len(MAGIC):head - 1]
    if hashlib.sha256(payload).hexdigest().encode() != expected:
        return None
    return payload
