"""The on-disk cache of compiled machine code, so a program LLVM has compiled once loads in
milliseconds in every later process.

An entry is a payload (the shared library or object code of one program, the object code of
one support-library piece, or nothing) plus a small JSON description (what the runtime needs
to call a program without lowering it again), keyed by a SHA-256 over everything that changes
the code: the planned graph's JSON, the target (triple, CPU name and features, llvmlite
version), ember's version, the code generator's own source and build options (`cache_key`).
Files live under EMBER_CACHE_DIR (ember/config.py) as `<key[:2]>/<key>.<kind>` (kind `so`,
`o` or `json`): the payload first (a cached library is an ELF file that `nm` can read), then
the description, then a trailer with both lengths and a checksum. Entries are written atomically (a
temporary file in the same folder, then os.replace), so a reader never sees half a file; a
corrupted or truncated entry is reported with a warning, removed and rebuilt by the caller.
"""
import hashlib
import json
import os
import struct
import tempfile
import warnings

from ember import config

MAGIC = b"EMBER-ENTRY-2\n"
_LENGTHS = struct.Struct("<QQ")  # payload bytes, description bytes
TRAILER_BYTES = _LENGTHS.size + 32 + len(MAGIC)  # lengths, sha256 of payload + description, magic


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
    all compiler/llvm_*.py modules (kernels, math, sgemm, convolutions, target), the support
    library's pieces, the linker and the runtime's calling convention."""
    import glob
    here = os.path.dirname(os.path.abspath(__file__))
    runtime = os.path.join(os.path.dirname(here), "runtime")
    files = sorted(glob.glob(os.path.join(here, "llvm_*.py")) + glob.glob(os.path.join(here, "lowering*.py")))
    files += [os.path.join(here, name) for name in ("loop_ir.py", "support_library.py", "linker.py")]
    files += [os.path.join(runtime, "cpu_program.py")]
    return source_digest(*files)


class Entry:
    """One cache entry read back: `payload` (bytes) and `description` (JSON data)."""

    __slots__ = ("payload", "description")

    def __init__(self, payload, description):
        self.payload, self.description = payload, description


class CompileCache:
    """Entries by key and kind under `directory` (default EMBER_CACHE_DIR). Counts hits,
    misses and corrupted entries found."""

    def __init__(self, directory=None):
        self.directory = directory or config.CACHE_DIR
        self.hits = self.misses = self.corrupted = 0

    def path(self, key, kind="o"):
        return os.path.join(self.directory, key[:2], f"{key}.{kind}")

    def load(self, key, kind="o"):
        """The payload stored under `key`, or None (missing, or corrupted: then warned and removed)."""
        entry = self.load_entry(key, kind)
        return None if entry is None else entry.payload

    def load_entry(self, key, kind="o"):
        """The `Entry` stored under `key`, or None (missing, or corrupted: then warned and removed)."""
        path = self.path(key, kind)
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
        parts = _verified_parts(data)
        if parts is None:
            self.discard(key, kind, "is corrupted (bad trailer or checksum); rebuilding it")
            return None
        self.hits += 1
        return Entry(*parts)

    def discard(self, key, kind, why):
        """Count, warn about and remove a bad entry (`why` ends the warning's sentence)."""
        path = self.path(key, kind)
        self.corrupted += 1
        self.misses += 1
        warnings.warn(f"ember: compile cache entry {path} {why}", stacklevel=4)
        try:
            os.remove(path)
        except OSError:
            pass

    def store(self, key, payload, description=None, kind="o"):
        """Write the entry atomically; a cache that cannot be written is skipped with a warning."""
        path = self.path(key, kind)
        folder = os.path.dirname(path)
        payload = bytes(payload)
        text = json.dumps(description or {}, separators=(",", ":")).encode()
        trailer = _LENGTHS.pack(len(payload), len(text)) + hashlib.sha256(payload + text).digest() + MAGIC
        try:
            os.makedirs(folder, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix="." + kind, dir=folder)
            try:
                with os.fdopen(handle, "wb") as f:
                    f.write(payload + text + trailer)
                os.replace(temporary, path)
            except BaseException:
                if os.path.exists(temporary):
                    os.remove(temporary)
                raise
        except OSError as error:
            warnings.warn(f"ember: cannot write compile cache entry {path} ({error}); "
                          f"set EMBER_CACHE_DIR to a writable folder", stacklevel=3)


def _verified_parts(data):
    """(payload, description) of an entry's bytes, or None when they are not a whole entry."""
    if len(data) < TRAILER_BYTES or not data.endswith(MAGIC):
        return None
    trailer = data[-TRAILER_BYTES:]
    payload_bytes, text_bytes = _LENGTHS.unpack_from(trailer)
    if payload_bytes + text_bytes + TRAILER_BYTES != len(data):
        return None
    body = memoryview(data)[:payload_bytes + text_bytes]
    if hashlib.sha256(body).digest() != trailer[_LENGTHS.size:_LENGTHS.size + 32]:
        return None
    try:
        description = json.loads(bytes(body[payload_bytes:]))
    except ValueError:
        return None
    return data[:payload_bytes], description
