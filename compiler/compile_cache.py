"""The on-disk cache of compiled machine code, so a program LLVM has compiled once loads in
milliseconds in every later process.

An entry is a payload (the shared library or object code of one program, the object code of
one support-library piece, or nothing) plus a small JSON description (what the runtime needs
to call a program without lowering it again), keyed by a SHA-256 over everything that changes
the code: the planned graph's JSON, the target (triple, CPU name and features, llvmlite
version), ember's version, the source of every module the code generator imports
(`code_generator_sources`, derived from its import statements) and build options (`cache_key`).
Files live under EMBER_CACHE_DIR (ember/config.py) as `<key[:2]>/<key>.<kind>` (kind `so`,
`o` or `json`): the payload first (a cached library is an ELF file that `nm` can read), then
the description, then a trailer with both lengths and a checksum. Entries are written atomically (a
temporary file in the same folder, then os.replace), so a reader never sees half a file; a
corrupted or truncated entry is reported with a warning, removed and rebuilt by the caller.
"""
import functools
import hashlib
import importlib.machinery
import json
import os
import re
import struct
import sys
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


# Where the code generator starts: the modules it imports, transitively, are its source. The
# driver; its package's registry (compiler/backends.py) brings in every target, with its
# compiler/llvm/ and compiler/<target>/ modules, so one key covers every target's code.
CODE_GENERATOR_ROOT = "ember.compiler.driver"
# Packages whose output reaches the key as data rather than as code: the IR and the passes
# (the planned graph's JSON, fusion groups and memory plan are hashed) and the frontend (it
# only builds graphs). ember's top-level package is imported for its version, also hashed.
KEYED_AS_DATA = ("ember.ir", "ember.passes", "ember.frontend")

# one import statement from the start of its line: `from (module) import (names)` (in
# parentheses or continued with backslashes) or `import (modules)`
_IMPORT = re.compile(rb"[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|(?:[^\n#;\\]|\\\r?\n)*)"
                     rb"|import[ \t]+((?:[^\n#;\\]|\\\r?\n)+))")
_SEMICOLON = re.compile(rb"[ \t]*;")


def _read_source(path):
    with open(path, "rb") as f:
        return f.read()


@functools.lru_cache(maxsize=None)
def code_generator_modules(root=CODE_GENERATOR_ROOT):
    """{module name: source path} of `root` and every module of its package that it imports,
    at module level or inside a function, transitively (with their packages), except the
    top-level package and KEYED_AS_DATA. Found in the source text without importing anything
    (a cached program loads without llvmlite), so the list follows the code: no one keeps it."""
    return {name: path for name, (path, _) in _scan(root).items()}


@functools.lru_cache(maxsize=None)
def code_generator_sources(root=CODE_GENERATOR_ROOT):
    """SHA-256 (hex) over the names and source bytes of `code_generator_modules(root)`, read
    once per process (the code this process runs), or once per change (`_memoized_by_stats`)."""
    def compute():
        digest, modules = hashlib.sha256(), _scan(root)
        for name, (_, source) in modules.items():
            for part in (name.encode(), source):
                digest.update(len(part).to_bytes(8, "little"))
                digest.update(part)
        return digest.hexdigest(), [path for path, _ in modules.values()]
    return _memoized_by_stats(f"code generator {root} at {_locate(root, {})[0]}", compute)


@functools.lru_cache(maxsize=None)
def graph_rewriter_sources(packages=("ember.ir", "ember.ops", "ember.passes")):
    """SHA-256 (hex) over the names and source bytes of every module in `packages`: the code
    that turns a traced graph into the planned one (read once per process). A program found
    by its traced graph alone (a warm compile skips the passes) is keyed with it, so a
    changed pass or rule never brings back a program the old passes planned."""
    import ember
    top = os.path.dirname(os.path.dirname(os.path.abspath(ember.__file__)))
    # (found, not imported: the passes bring in networkx, which a cached program never needs)
    folders = [os.path.dirname(os.path.abspath(_package_init(package))) for package in packages]

    def compute():
        digest, paths = hashlib.sha256(), []
        for folder in folders:
            for base, _, files in sorted(os.walk(folder)):
                for name in sorted(f for f in files if f.endswith(".py")):
                    paths.append(os.path.join(base, name))
                    for part in (os.path.relpath(paths[-1], top).encode(), _read_source(paths[-1])):
                        digest.update(len(part).to_bytes(8, "little"))
                        digest.update(part)
        return digest.hexdigest(), paths + [base for folder in folders for base, _, _ in os.walk(folder)]
    return _memoized_by_stats(f"graph rewriters in {' '.join(folders)}", compute)


def _package_init(package):
    """The __init__.py of an ember package, whether or not it is imported yet."""
    module = sys.modules.get(package)
    if module is not None:
        return module.__file__
    import importlib.util
    return importlib.util.find_spec(package).origin


# A process that loads a cached program still hashes the sources behind its key: reading and
# scanning about 150 files took 15-20 ms of a 0.2 s warm compile. The digests are kept under
# EMBER_CACHE_DIR with the size and modification time of every file read and of every folder
# holding one (a file added to a folder changes the folder's time), and read again only when
# one of those changed: Python's own bytecode cache trusts the same two stats.
SOURCE_DIGESTS = "source-digests"
MEMOIZE_DIGESTS = True  # (tests that edit sources without touching the files switch it off)


def _memoized_by_stats(what, compute):
    """compute()'s digest, from the memo when the stats of the paths it read still match.
    compute() -> (digest hex, paths whose content or listing the digest depends on)."""
    if not MEMOIZE_DIGESTS:
        return compute()[0]
    path = os.path.join(config.CACHE_DIR, SOURCE_DIGESTS, cache_key(what, sys.executable, __file__) + ".json")
    try:
        with open(path) as f:
            memo = json.load(f)
        if all(_stat(p) == stat for p, stat in memo["stats"]):
            return memo["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest, paths = compute()
    stats = [[p, _stat(p)] for p in dict.fromkeys(paths + [os.path.dirname(p) for p in paths])]
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(path))
        with os.fdopen(handle, "w") as f:
            json.dump({"what": what, "digest": digest, "stats": stats}, f)
        os.replace(temporary, path)
    except OSError:  # (a read-only cache: the digest is computed in every process, as before)
        pass
    return digest


def _stat(path):
    """[size, modification time in ns] of a file or folder, or None where it is missing."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _scan(root):
    """{module name: (path, source bytes)} for `code_generator_modules`, sorted by name."""
    top = root.split(".")[0]
    data_packages = tuple(package + "." for package in KEYED_AS_DATA)
    found, seen, pending, located = {}, set(), [root], {}
    while pending:
        name = pending.pop()
        if name in seen or not name.startswith(top + ".") or name in KEYED_AS_DATA \
                or name.startswith(data_packages):
            continue
        seen.add(name)
        path, folders = _locate(name, located)
        if path is None:  # an attribute (`from .loop_ir import Loop`) or no Python source
            continue
        source = _read_source(path)
        found[name] = (path, source)
        pending.append(name.rpartition(".")[0])  # importing a module runs its package first
        for module, names in _imports(name, folders is not None, source):
            pending.append(module)
            if names and (module + ".").startswith(top + ".") and _locate(module, located)[1] is not None:
                pending.extend(f"{module}.{leaf}" for leaf in names)  # `from package import module`
    return dict(sorted(found.items()))


def _locate(name, located):
    """(source path or None, package folders or None) of module `name`, from sys.modules or
    beside its parent package's source, never imported; `located` remembers answers."""
    if name not in located:
        module = sys.modules.get(name)
        if module is not None:
            path, folders = getattr(module, "__file__", None), getattr(module, "__path__", None)
        elif "." not in name:  # a top-level package not imported yet: on sys.path
            spec = importlib.machinery.PathFinder.find_spec(name)
            path, folders = (spec.origin, spec.submodule_search_locations) if spec else (None, None)
        else:
            parent, _, leaf = name.rpartition(".")
            path = folders = None
            for folder in _locate(parent, located)[1] or []:
                if os.path.isfile(os.path.join(folder, leaf + ".py")):
                    path = os.path.join(folder, leaf + ".py")
                    break
                if os.path.isfile(os.path.join(folder, leaf, "__init__.py")):
                    path, folders = os.path.join(folder, leaf, "__init__.py"), [os.path.join(folder, leaf)]
                    break
        located[name] = (path if path and path.endswith(".py") else None,
                         list(folders) if folders is not None else None)
    return located[name]


def _imports(name, is_package, text):
    """(module, names) per import statement of a module's source bytes, module names made
    absolute: `import a.b` gives (a.b, []), `from .c import d, e` (package.c, [d, e]). A
    docstring line that reads like an import adds a name at worst; a missing one is skipped."""
    package = name if is_package else name.rpartition(".")[0]
    for match in _import_statements(text):
        source, names, plain = (None if group is None else group.decode().replace("\\", " ")
                                for group in match.groups())
        if plain is not None:
            for part in plain.split(","):
                if part.split():
                    yield part.split()[0], ()
            continue
        dots = len(source) - len(source.lstrip("."))
        if dots:
            base = package.rsplit(".", dots - 1)[0] if dots > 1 else package
            source = f"{base}.{source[dots:]}" if source[dots:] else base
        yield source, [part.split()[0] for part in names.strip("()").split(",") if part.split()]


def _import_statements(text):
    """Matches of _IMPORT for the statements of every line holding the word `import` (found
    by a literal search: several times faster than a multi-line regex over the whole text)."""
    position = text.find(b"import")
    while position >= 0:
        start, end = text.rfind(b"\n", 0, position) + 1, position + 6
        while True:
            match = _IMPORT.match(text, start)
            if match is None:
                break
            yield match
            end = max(end, match.end())
            separator = _SEMICOLON.match(text, match.end())  # `import a; import b`
            if separator is None:
                break
            start = separator.end()
        position = text.find(b"import", end)


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
