"""`ember.save` / `ember.load`: checkpoints (tensors, state dicts, optimizer states, nested
containers) in one safetensors-layout file, written and read without pickle.

Layout: an 8-byte little-endian header length, a JSON header mapping each entry's name to its
dtype, shape and `data_offsets` (plus `"__metadata__"`, whose "ember.structure" entry is the
JSON-encoded object tree with tensors replaced by references, and "ember.views" the table of
views described below), then the raw little-endian bytes. Any safetensors reader can read the
entries; `ember.load` rebuilds the exact object: dict keys of any type, OrderedDict, tuple vs
list, int vs float vs bool, None, Parameters (as Parameters, with their requires_grad), and a
tensor referenced twice loads as one tensor referenced twice.

Shared memory, as torch.save keeps shared storages: tensors whose memory overlaps (views of one
base, tied weights, a tensor and its slices, transposes, expansions) are stored once, as one
entry spanning their memory, and each is a view of it (byte offset, shape, byte strides), so
after loading they are numpy views of one buffer with the saved strides and an in-place write
into one shows through the others. A tensor sharing memory with no other saved tensor is stored
as its own values (a plain safetensors entry of its shape); it loads C-contiguous, while torch
would keep its whole storage and strides. numpy arrays are saved by value, as pickle saves them
for torch. `.grad` is not saved (as in torch); a tensor that requires grad loads as a leaf that
requires grad.
"""
import collections
import io
import json
import math
import mmap as mmap_module
import os
import secrets
import stat

import numpy as np

from ember import dtypes
from .tensor import Tensor, Device, Size

FORMAT_NAME = "ember"
FORMAT_VERSION = "2"  # 2 added tensors sharing storage ("view" nodes) and Parameters; 1 still loads
READABLE_VERSIONS = ("1", "2")
STRUCTURE_KEY = "ember.structure"
VIEWS_KEY = "ember.views"
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit

# safetensors dtype names
_CODE_OF = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "int32": "I32", "int64": "I64",
            "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64"}
_NAME_OF = {code: name for name, code in _CODE_OF.items()}
_STRUCTURE_TAGS = ("tuple", "dict", "odict", "float", "tensor", "view", "ndarray", "numpy_scalar", "dtype", "size",
                   "device")


# ----------------------------------------------------------------------------- encoding the object tree
class _Encoder:
    """Turns an object into a JSON-able tree; tensors and arrays are collected by name.

    Tree nodes: null, true/false, JSON ints and floats, strings and lists stand for themselves;
    everything else is a one-key object (the tag is its first key): {"tuple": [...]},
    {"dict": [[key, value], ...]}, {"odict": [...]}, {"float": "nan"|"inf"|"-inf"},
    {"tensor": name} (the whole header entry `name`), {"view": index} (entry `index` of the views
    table), both optionally with "requires_grad": true and "parameter": true, {"ndarray": name},
    {"numpy_scalar": name}, {"dtype": "float32"}, {"size": [...]}, {"device": "cpu"}."""

    def __init__(self):
        self.entries = {}  # name -> numpy array (None: reserved for a tensor until `finish`), first-seen order
        self.alignment = {}  # name -> byte alignment its data needs in the file (default: its itemsize)
        self.views = []  # the views table, see `_Encoder.finish`
        self._records = []  # [tensor, name, node] per distinct tensor object, first-seen order
        self._node_of = {}  # id(tensor) -> its node (a tensor referenced twice is one node, written twice)
        self._name_of = {}  # id(ndarray or numpy scalar) -> name
        self._keep_alive = []  # ids stay unique while we hold the objects
        self._open = set()  # ids of containers being encoded (cycle detection)

    def encode(self, value, path=()):
        """`path` is the tuple of keys/indices from the root, for names and error messages."""
        kind = type(value)
        if value is None or kind in (bool, str, int):
            return value
        if isinstance(value, np.generic):  # before float: np.float64 subclasses float
            return {"numpy_scalar": self._array_name(value, np.asarray(value), path)}
        if kind is float:
            return value if math.isfinite(value) else {"float": repr(value)}
        if isinstance(value, Tensor):
            return self._tensor_node(value, path)
        if isinstance(value, np.ndarray):
            return {"ndarray": self._array_name(value, value, path)}
        if kind is dtypes.DType:
            return {"dtype": value.name}
        if kind is Device:
            return {"device": str(value)}
        if kind in (list, tuple, dict, collections.OrderedDict, Size):
            return self._encode_container(value, path)
        raise TypeError(f"ember.save: cannot save {type(value).__module__}.{type(value).__qualname__} at "
                        f"{_describe_path(path)} "
                        f"(ember.save stores tensors, numpy arrays, numbers, strings, None and "
                        f"lists/tuples/dicts/OrderedDicts of them, exactly those types, so that they load "
                        f"back as saved; it never pickles arbitrary objects)")

    def _encode_container(self, value, path):
        if id(value) in self._open:
            raise ValueError(f"ember.save: the object contains itself at {_describe_path(path)} "
                             f"(a reference cycle)")
        self._open.add(id(value))
        try:
            if isinstance(value, dict):
                items = [[self.encode(key, path + ("<key>",)), self.encode(item, path + (key,))]
                         for key, item in value.items()]
                return {"odict" if isinstance(value, collections.OrderedDict) else "dict": items}
            items = [self.encode(item, path + (i,)) for i, item in enumerate(value)]
            if isinstance(value, Size):
                return {"size": items}
            return {"tuple": items} if isinstance(value, tuple) else items
        finally:
            self._open.discard(id(value))

    def _tensor_node(self, tensor, path):
        """The node is completed by `finish`, once every tensor is known and sharing can be seen."""
        node = self._node_of.get(id(tensor))
        if node is None:
            _check_dtype(tensor._data, path)
            node = self._node_of[id(tensor)] = {}
            self._records.append((tensor, self._reserve_name(path, None), node))
            self._keep_alive.append(tensor)
        return node

    def _array_name(self, owner, array, path):
        if id(owner) in self._name_of:
            return self._name_of[id(owner)]
        _check_dtype(array, path)
        name = self._name_of[id(owner)] = self._reserve_name(path, array)
        self._keep_alive.append(owner)
        return name

    def _reserve_name(self, path, array):
        # named by where it sits, so a saved state dict reads like a safetensors checkpoint
        name = ".".join(str(key) for key in path) or "tensor"
        unique, counter = name, 1
        while unique in self.entries or unique == "__metadata__":
            counter += 1
            unique = f"{name}#{counter}"
        self.entries[unique] = array
        return unique

    def finish(self):
        """Decide how each tensor is stored. A tensor sharing memory with no other saved tensor
        is stored as its values (a C-contiguous safetensors entry named by its path; it loads
        contiguous, as `.contiguous()` would make it). Tensors whose memory ranges overlap share
        one storage entry: the bytes spanning them all, in which each one is a view given by the
        views table: {"storage": name, "dtype": code, "offset": bytes, "shape": [...],
        "strides": [bytes...]}, plus "read_only": true for a read-only array (an expanded view)."""
        spans = []
        for index, (tensor, _, _) in enumerate(self._records):
            array = tensor._data
            extent = _byte_extent(array.shape, array.strides, array.itemsize)
            if extent is not None:
                address = _address(array)
                spans.append((address + extent[0], address + extent[1], index))
        groups, end = [], None  # memory ranges that overlap, transitively
        for low, high, index in sorted(spans):
            if end is not None and low < end:
                groups[-1].append(index)
                end = max(end, high)
            else:
                groups.append([index])
                end = high
        view_of = {}
        for group in groups:
            if len(group) > 1:
                view_of.update(self._shared_storage(sorted(group)))
        for index, (tensor, name, node) in enumerate(self._records):
            if index in view_of:
                node["view"] = view_of[index]
            else:
                self.entries[name] = tensor._data
                node["tensor"] = name
            if tensor.requires_grad:
                node["requires_grad"] = True
            if _is_parameter(tensor):
                node["parameter"] = True
        for name in [name for name, array in self.entries.items() if array is None]:
            del self.entries[name]  # names of tensors stored as views of another entry

    def _shared_storage(self, group):
        """One storage entry for the tensors `group` (indices into the records, first-seen
        order); returns {record index: views-table index}."""
        arrays = [self._records[index][0]._data for index in group]
        addresses = [_address(array) for array in arrays]
        extents = [_byte_extent(array.shape, array.strides, array.itemsize) for array in arrays]
        align = max(array.itemsize for array in arrays)
        low = min(address + extent[0] for address, extent in zip(addresses, extents))
        high = max(address + extent[1] for address, extent in zip(addresses, extents))
        start = low - low % align  # keeps every view's offset aligned as it is in memory
        length = -(-(high - start) // align) * align
        storage = np.zeros(length, np.uint8)  # bytes no view reaches stay zero
        for array, address in zip(arrays, addresses):
            target = np.ndarray(array.shape, array.dtype.newbyteorder("<"), buffer=storage,
                                offset=address - start, strides=array.strides)
            once = tuple(slice(0, 1) if step == 0 else slice(None) for step in array.strides) + (Ellipsis,)
            np.copyto(target[once], array[once])  # a repeated (expanded) element is written once
        dtype = arrays[0].dtype
        typed = all(array.dtype == dtype and (address - start) % dtype.itemsize == 0
                    and all(step % dtype.itemsize == 0 for step in array.strides)
                    for array, address in zip(arrays, addresses))
        name = self._records[group[0]][1]
        if typed:
            storage = storage.view(dtype.newbyteorder("<"))
            for index, array, address in zip(group, arrays, addresses):
                if address == start and array.nbytes == length and array.flags.c_contiguous:
                    storage = storage.reshape(array.shape)  # a safetensors reader sees this tensor whole
                    name = self._records[index][1]
                    break
        self.entries[name] = storage
        self.alignment[name] = align
        view_of = {}
        for index, array, address in zip(group, arrays, addresses):
            view = {"storage": name, "dtype": _CODE_OF[array.dtype.name], "offset": address - start,
                    "shape": list(array.shape), "strides": list(array.strides)}
            if not array.flags.writeable:
                view["read_only"] = True
            view_of[index] = len(self.views)
            self.views.append(view)
        return view_of


def _np_dtype(code):
    """The little-endian numpy dtype of a safetensors code (bfloat16 loads ml_dtypes)."""
    dtype = dtypes.from_name(_NAME_OF[code]).np
    return dtype if dtype.itemsize == 1 or dtype.name == "bfloat16" else dtype.newbyteorder("<")


def _check_dtype(array, path):
    if array.dtype.name not in _CODE_OF:
        raise TypeError(f"ember.save: cannot save an array of dtype {array.dtype} at {_describe_path(path)} "
                        f"(supported: {', '.join(_CODE_OF)})")


def _is_parameter(tensor):
    from .nn.parameter import Parameter  # nn imports much of the frontend: import on use
    return isinstance(tensor, Parameter)


def _address(array):
    return array.__array_interface__["data"][0]


def _byte_extent(shape, strides, itemsize):
    """(first, end) byte positions, relative to element [0, ..., 0], of the memory the array
    reaches (strides may be negative or zero); None for an empty array."""
    if 0 in shape:
        return None
    first = sum(step * (size - 1) for size, step in zip(shape, strides) if step < 0)
    last = sum(step * (size - 1) for size, step in zip(shape, strides) if step > 0)
    return first, last + itemsize


def _describe_path(path):
    return "obj" + "".join(f"[{key!r}]" for key in path)


def _little_endian(array):
    return array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)  # keeps 0-d arrays 0-d


def _layout(obj):
    """(header bytes padded to 8, list of arrays in file order) for `obj`."""
    encoder = _Encoder()
    structure = encoder.encode(obj)
    encoder.finish()
    entries = encoder.entries
    # most aligned first keeps every tensor aligned to its itemsize (as safetensors does)
    order = sorted(entries, key=lambda name: -encoder.alignment.get(name, entries[name].dtype.itemsize))
    metadata = {"format": FORMAT_NAME, "ember.version": FORMAT_VERSION,
                STRUCTURE_KEY: json.dumps(structure, separators=(",", ":"))}
    if encoder.views:
        metadata[VIEWS_KEY] = json.dumps(encoder.views, separators=(",", ":"))
    header = {"__metadata__": metadata}
    offset, arrays = 0, []
    for name in order:
        array = _little_endian(entries[name])
        header[name] = {"dtype": _CODE_OF[array.dtype.name], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # tensor data starts 8-byte aligned
    return encoded, arrays


def _write(stream, header, arrays):
    stream.write(len(header).to_bytes(8, "little"))
    stream.write(header)
    for array in arrays:
        if array.size:
            stream.write(memoryview(array.reshape(-1).view(np.uint8)))  # bytes of any dtype (bfloat16 too)


def save(obj, f):
    """Save `obj` (a tensor, state dict, optimizer state dict or nested checkpoint) to `f`, a
    path or a binary file object. A path is written atomically: a temporary file in the same
    directory is fsynced and then renamed over the target, so a failure leaves the old file."""
    header, arrays = _layout(obj)  # unsupported objects fail before anything is written
    if not isinstance(f, (str, os.PathLike)):
        _write(f, header, arrays)
        return
    path = os.fspath(f)
    directory = os.path.dirname(os.path.abspath(path))
    temporary, handle = _create_temporary(directory, os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as stream:
            _write(stream, header, arrays)
            stream.flush()
            os.fsync(stream.fileno())
        if os.path.exists(path):
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))  # overwriting keeps the permissions
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _create_temporary(directory, base_name):
    """A new file beside the target; created with mode 0o666 so the umask applies as it would
    to the target itself (tempfile.mkstemp would make it 0o600)."""
    while True:
        temporary = os.path.join(directory, f".{base_name}.{secrets.token_hex(6)}.tmp")
        try:
            return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); not possible on every platform."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# ----------------------------------------------------------------------------- reading
class _Reader:
    """Validates and decodes one file's header and structure; errors name the file."""

    def __init__(self, source_name):
        self.source = source_name
        self.arrays = {}  # header entry name -> numpy array (native byte order)
        self.views = []  # the views table (format 2)
        self.relocate = None  # map_location as a function of a tensor, if it is one
        self._loaded = {}  # ("tensor", name) or ("view", index) -> the loaded tensor: one object per saved one
        self._storages = {}  # entry name -> the array views of it are made from

    def fail(self, problem):
        raise RuntimeError(f"ember.load: {self.source} is not a valid ember checkpoint: {problem}")

    def parse_header(self, prefix, available):
        """`prefix` holds the 8-byte length; `available` is the file's remaining size (or None)."""
        if len(prefix) < 8:
            self.fail(f"the file is {len(prefix)} bytes long, shorter than the 8-byte header length "
                      f"(truncated or empty)")
        length = int.from_bytes(prefix[:8], "little")
        if length > MAX_HEADER_BYTES:
            self.fail(f"header length {length} is larger than the limit of {MAX_HEADER_BYTES} bytes "
                      f"(corrupted, or not a safetensors-layout file)")
        if available is not None and length > available - 8:
            self.fail(f"header length {length} exceeds the {available - 8} bytes after it (truncated)")
        return length

    def decode_header(self, raw):
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self.fail(f"header is not valid JSON ({error})")
        if not isinstance(header, dict):
            self.fail(f"header is a JSON {type(header).__name__}, expected an object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            self.fail("__metadata__ is not a JSON object")
        entries = {}
        for name, entry in header.items():
            entries[name] = self._check_entry(name, entry)
        return metadata, entries

    def _check_entry(self, name, entry):
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            self.fail(f"tensor {name!r} needs dtype, shape and data_offsets, got {entry!r}")
        code, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if code not in _NAME_OF:
            self.fail(f"tensor {name!r} has dtype {code!r}, which ember does not support "
                      f"(supported: {', '.join(_NAME_OF)})")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            self.fail(f"tensor {name!r} has an invalid shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            self.fail(f"tensor {name!r} has invalid data_offsets {offsets!r}")
        dtype = _np_dtype(code)
        needed = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != needed:
            self.fail(f"tensor {name!r}: data_offsets {offsets} hold {offsets[1] - offsets[0]} bytes, but "
                      f"{code} {shape} needs {needed}")
        return dtype, tuple(shape), offsets[0], offsets[1]

    def check_coverage(self, entries, data_length):
        """Tensor byte ranges must tile the data exactly: no overlaps, gaps or overrun."""
        position = 0
        for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: (item[1][2], item[1][3])):
            if begin != position:
                problem = "overlaps another tensor" if begin < position else f"leaves a gap at byte {position}"
                self.fail(f"tensor {name!r} at data_offsets [{begin}, {end}] {problem}")
            position = end
        if position > data_length:
            self.fail(f"the header describes {position} bytes of tensor data but only {data_length} "
                      f"are present (truncated)")
        return position

    def _tensor(self, tag, payload, node):
        if tag == "tensor" and (not isinstance(payload, str) or payload not in self.arrays):
            self.fail(f"the structure refers to tensor {payload!r}, which the header does not list")
        if tag == "view" and (not isinstance(payload, int) or isinstance(payload, bool)
                              or not 0 <= payload < len(self.views)):
            self.fail(f"the structure refers to view {payload!r}, but the views table has "
                      f"{len(self.views)} entries")
        key = (tag, payload)
        if key not in self._loaded:
            if tag == "tensor":
                tensor = Tensor._wrap(self.arrays[payload])
                if self.relocate:
                    tensor = self.relocate(tensor)
            else:
                tensor = Tensor._wrap(self._view(payload))
            requires_grad = node.get("requires_grad") is True
            if node.get("parameter") is True:
                from .nn.parameter import Parameter  # nn imports much of the frontend: import on use
                tensor = Parameter(tensor, requires_grad)
            elif requires_grad and not tensor.requires_grad:
                tensor.requires_grad_(True)
            self._loaded[key] = tensor
        return self._loaded[key]

    def _view(self, index):
        """The numpy view that views-table entry `index` describes, made from its storage's array,
        so tensors that shared memory when saved share it again."""
        view = self.views[index]
        where = f"view {index}"
        if not isinstance(view, dict) or not {"storage", "dtype", "offset", "shape", "strides"} <= view.keys():
            self.fail(f"{where} needs storage, dtype, offset, shape and strides, got {view!r}")
        name, code, offset, shape, strides = (view[key] for key in ("storage", "dtype", "offset", "shape", "strides"))
        if not isinstance(name, str) or name not in self.arrays:
            self.fail(f"{where} refers to storage {name!r}, which the header does not list")
        if code not in _NAME_OF:
            self.fail(f"{where} has dtype {code!r}, which ember does not support (supported: {', '.join(_NAME_OF)})")
        if not _is_int_list(shape) or any(size < 0 for size in shape):
            self.fail(f"{where} has an invalid shape {shape!r}")
        if not _is_int_list(strides) or len(strides) != len(shape):
            self.fail(f"{where} has strides {strides!r}, which do not match its shape {shape}")
        if not _is_int_list([offset]):
            self.fail(f"{where} has an invalid offset {offset!r}")
        storage = self._storage(name)
        dtype = _np_dtype(code)
        extent = _byte_extent(shape, strides, dtype.itemsize) or (0, 0)
        if offset + extent[0] < 0 or offset + extent[1] > storage.nbytes:
            self.fail(f"{where} ({code} {shape}, strides {strides} bytes, offset {offset}) reaches bytes "
                      f"[{offset + extent[0]}, {offset + extent[1]}) outside its storage {name!r} of "
                      f"{storage.nbytes} bytes")
        little_endian = dtype.newbyteorder("<")
        exact = little_endian == dtype or dtype.itemsize == 1 or storage.dtype == dtype
        array = np.ndarray(tuple(shape), dtype if exact else little_endian, buffer=storage, offset=offset,
                           strides=tuple(strides))
        if not exact:  # a big-endian host reading bytes of mixed dtypes: this view gets its own copy
            array = array.astype(dtype)
        if view.get("read_only") is True:
            array.flags.writeable = False
        return array

    def _storage(self, name):
        """Entry `name` as a C-contiguous array; map_location (a function) is applied once per
        storage, as torch applies it to storages."""
        if name not in self._storages:
            array = self.arrays[name]
            if self.relocate:
                moved = self.relocate(Tensor._wrap(array))
                if (not isinstance(moved, Tensor) or moved._data.dtype != array.dtype
                        or moved._data.shape != array.shape):
                    self.fail(f"map_location returned {_describe_value(moved)} for the storage {name!r} "
                              f"({array.dtype}, shape {list(array.shape)}), which tensors share; it must "
                              f"return a tensor of the same dtype and shape")
                array = moved._data
            self._storages[name] = np.ascontiguousarray(array)
        return self._storages[name]

    def decode_structure(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode_structure(item) for item in node]
        if not isinstance(node, dict) or not node:
            self.fail(f"corrupted structure node {node!r}")
        tag = next(iter(node))
        payload = node[tag]
        if tag not in _STRUCTURE_TAGS:
            self.fail(f"unknown structure tag {tag!r}")
        if tag in ("tensor", "view"):
            return self._tensor(tag, payload, node)
        if tag in ("ndarray", "numpy_scalar"):
            if not isinstance(payload, str) or payload not in self.arrays:
                self.fail(f"the structure refers to tensor {payload!r}, which the header does not list")
            array = self.arrays[payload]
            return array if tag == "ndarray" else array[()]
        if tag == "float":
            if payload not in ("nan", "inf", "-inf"):
                self.fail(f"corrupted float {payload!r}")
            return float(payload)
        if tag == "dtype":
            if payload not in _CODE_OF:
                self.fail(f"unknown dtype {payload!r}")
            return dtypes.from_name(payload)
        if tag == "device":
            try:
                return Device(payload)
            except (RuntimeError, TypeError, ValueError):
                self.fail(f"invalid device {payload!r}")
        if not isinstance(payload, list):
            self.fail(f"corrupted {tag} node: {payload!r}")
        if tag in ("tuple", "size"):
            items = tuple(self.decode_structure(item) for item in payload)
            if tag == "size":
                return Size(items)
            return items
        if tag in ("dict", "odict"):
            result = collections.OrderedDict() if tag == "odict" else {}
            for pair in payload:
                if not isinstance(pair, list) or len(pair) != 2:
                    self.fail(f"corrupted {tag} item {pair!r}")
                key = self.decode_structure(pair[0])
                try:
                    result[key] = self.decode_structure(pair[1])
                except TypeError:
                    self.fail(f"unhashable dict key {key!r}")
            return result


def _source_name(f):
    if isinstance(f, (str, os.PathLike)):
        return repr(os.fspath(f))
    name = getattr(f, "name", None)
    return repr(name) if isinstance(name, str) else f"the {type(f).__name__} stream"


def _read_head(stream, reader, use_mmap):
    """Read the header length and header. Returns (buffer, header length, where the data is):
    with mmap the buffer is the whole file (copy-on-write, so tensors stay writable) and the
    data follows the header in it; otherwise the data is still to be read from the stream."""
    if use_mmap:
        try:
            mapped = mmap_module.mmap(stream.fileno(), 0, access=mmap_module.ACCESS_COPY)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation) as error:
            raise RuntimeError(f"ember.load: mmap=True needs a file on disk ({reader.source}): {error}") from None
        return mapped, reader.parse_header(mapped[:8], len(mapped))
    prefix = stream.read(8)
    remaining = _remaining_size(stream)
    length = reader.parse_header(prefix, None if remaining is None else remaining + len(prefix))
    raw_header = stream.read(length)
    if len(raw_header) < length:
        reader.fail(f"header length {length} but only {len(raw_header)} header bytes follow (truncated)")
    return prefix + raw_header, length


def _remaining_size(stream):
    try:
        here = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(here)
        return end - here
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def _resolve_map_location(map_location):
    """torch's map_location forms as a function applied to every loaded tensor (None: keep it
    where it loads, the host). ember's files record no device, so a dict maps "cpu" keys."""
    if map_location is None:
        return None
    if isinstance(map_location, (str, Device, int)):
        device = Device(map_location)
        return None if device.type in ("cpu", "meta") else (lambda tensor: tensor.to(device))
    if isinstance(map_location, dict):
        for device_name in map_location.values():
            Device(device_name)
        target = map_location.get("cpu")
        return None if target is None else _resolve_map_location(target)
    if callable(map_location):
        return lambda tensor: map_location(tensor, "cpu")
    raise TypeError(f"ember.load: map_location should be a device, a dict or a function, "
                    f"got {type(map_location).__name__}")


def load(f, map_location=None, weights_only=None, mmap=None):
    """Load what `save` wrote (or any safetensors file: then a dict of tensors) from a path or
    binary file object. Nothing is unpickled, so `weights_only` is always satisfied; with
    `mmap=True` tensors are copy-on-write views of the memory-mapped file. Truncated or
    corrupted files raise RuntimeError naming the file and the problem."""
    if weights_only not in (None, True, False):
        raise TypeError(f"ember.load: weights_only should be True, False or None, got {weights_only!r}")
    relocate = _resolve_map_location(map_location)
    reader = _Reader(_source_name(f))
    if not isinstance(f, (str, os.PathLike)):
        return _load_stream(f, reader, bool(mmap), relocate, whole_file=False)
    if not os.path.exists(f):
        raise FileNotFoundError(f"ember.load: no such file: {os.fspath(f)!r}")
    with open(f, "rb") as stream:
        return _load_stream(stream, reader, bool(mmap), relocate, whole_file=True)


def _load_stream(stream, reader, use_mmap, relocate, whole_file):
    head, header_length = _read_head(stream, reader, use_mmap)
    metadata, entries = reader.decode_header(bytes(head[8:8 + header_length]))
    if use_mmap:
        data, base = head, 8 + header_length
        present = len(head) - base
        needed = reader.check_coverage(entries, present)
    else:
        present = _remaining_size(stream)
        needed = reader.check_coverage(entries, math.inf if present is None else present)
        data, base = bytearray(needed), 0
        got = (stream.readinto(data) or 0) if needed else 0
        if got < needed:
            reader.fail(f"the header describes {needed} bytes of tensor data but only {got} are present "
                        f"(truncated)")
    if (whole_file or use_mmap) and present is not None and present > needed:
        reader.fail(f"{present - needed} unexpected bytes follow the tensor data")
    for name, (dtype, shape, begin, _) in entries.items():
        array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=base + begin).reshape(shape)
        reader.arrays[name] = array if dtype.isnative else array.astype(dtype.newbyteorder("="))
    if metadata.get("format") != FORMAT_NAME or STRUCTURE_KEY not in metadata:
        # a plain safetensors file: its tensors by name
        return {name: relocate(Tensor._wrap(array)) if relocate else Tensor._wrap(array)
                for name, array in reader.arrays.items()}
    version = metadata.get("ember.version", "1")
    if version not in READABLE_VERSIONS:
        reader.fail(f"it has format version {version!r}, written by a newer ember; this ember reads "
                    f"versions {', '.join(READABLE_VERSIONS)}")
    structure = _parse_json(reader, metadata[STRUCTURE_KEY], "the object structure")
    if VIEWS_KEY in metadata:
        reader.views = _parse_json(reader, metadata[VIEWS_KEY], "the views table")
        if not isinstance(reader.views, list):
            reader.fail(f"the views table in __metadata__ is a JSON {type(reader.views).__name__}, expected a list")
    reader.relocate = relocate
    return reader.decode_structure(structure)


def _parse_json(reader, text, what):
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        reader.fail(f"{what} in __metadata__ is not valid JSON ({error})")


def _is_int_list(value):
    return isinstance(value, list) and all(isinstance(item, int) and not isinstance(item, bool) for item in value)


def _describe_value(value):
    if isinstance(value, Tensor):
        return f"a tensor of dtype {value.dtype.name}, shape {list(value.shape)}"
    return f"a {type(value).__name__}"
