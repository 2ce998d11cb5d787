"""The weights of an exported library: where each tensor lies in one blob, the blob as a
safetensors file (weights="file") or linked into the library (weights="embed": library.py
makes an object of the blob with `ld -r -b binary`), and the CRC-32 the library checks a
weights file against.

safetensors (https://huggingface.co/docs/safetensors): 8 bytes of little-endian header
length, a JSON header {name: {dtype, shape, data_offsets}}, then the tensors' bytes with no
holes. The tensors go largest element first, so each starts aligned to its element size in
the 64-byte aligned buffer the library reads the data into.
"""
import json
import zlib
from dataclasses import dataclass

import numpy as np

SAFETENSORS_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                      "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}
ALIGNMENT = 64


@dataclass
class WeightsLayout:
    arrays: dict  # name -> C-contiguous ndarray, in the order they lie in `data`
    offsets: dict  # name -> byte offset in `data`
    data: bytes
    crc32: int

    @property
    def nbytes(self):
        return len(self.data)

    @property
    def data_start(self):
        """Where the data begins in the safetensors file."""
        return len(safetensors_header(self))


def layout(arrays, packed):
    """The blob of `arrays` ({name: ndarray}): `packed` (a safetensors file: no holes, largest
    element size first) or each tensor at a 64-byte boundary (embedded)."""
    names = sorted(arrays, key=lambda n: -arrays[n].dtype.itemsize) if packed else list(arrays)
    offsets, parts, size = {}, [], 0
    for name in names:
        if not packed and size % ALIGNMENT:
            parts.append(bytes(ALIGNMENT - size % ALIGNMENT))
            size += len(parts[-1])
        offsets[name] = size
        data = np.ascontiguousarray(arrays[name]).tobytes()
        parts.append(data)
        size += len(data)
    data = b"".join(parts)
    return WeightsLayout({n: arrays[n] for n in names}, offsets, data, zlib.crc32(data))


def safetensors_header(weights):
    """The header bytes (length prefix and JSON, padded with spaces to a multiple of 8)."""
    header = {"__metadata__": {"format": "ember", "crc32": f"{weights.crc32:08x}"}}
    for name, array in weights.arrays.items():
        start = weights.offsets[name]
        header[name] = {"dtype": SAFETENSORS_DTYPES[array.dtype.name], "shape": list(array.shape),
                        "data_offsets": [start, start + array.nbytes]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return len(text).to_bytes(8, "little") + text


def safetensors_bytes(weights):
    return safetensors_header(weights) + weights.data


def read_safetensors(path):
    """{name: ndarray} of a safetensors file (for checks and for load_exported's users)."""
    with open(path, "rb") as f:
        data = f.read()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, stop = entry["data_offsets"]
        chunk = data[8 + size + start:8 + size + stop]
        arrays[name] = np.frombuffer(chunk, dtype=names[entry["dtype"]]).reshape(entry["shape"])
    return arrays
