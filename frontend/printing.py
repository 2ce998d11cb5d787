"""Printing tensors the way PyTorch does: `tensor([[ 0.1234, -1.5000]], grad_fn=<AddBackward0>)`.

Follows torch/_tensor_str.py: one shared width and format per tensor (fixed with 4 decimals,
integer-valued floats as `1.`, scientific when the range is wide), 80-column wrapping,
summarisation past 1000 elements with `...`, and the dtype/grad suffixes.
"""
import numpy as np

from ember import dtypes

PRECISION = 4
THRESHOLD = 1000
EDGEITEMS = 3
LINEWIDTH = 80

_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
               "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor", "int8": "CharTensor",
               "uint8": "ByteTensor", "bool": "BoolTensor"}


def type_name(tensor):
    return "ember." + _TYPE_NAMES[tensor._data.dtype.name]


class _Formatter:
    def __init__(self, values):
        self.kind = values.dtype.kind
        self.sci = False
        self.int_mode = True
        if self.kind == "f":
            finite = values[np.isfinite(values)]
            nonzero = np.abs(finite[finite != 0]).astype(np.float64)
            self.int_mode = bool(np.all(finite == np.ceil(finite)))
            if nonzero.size:
                hi, lo = nonzero.max(), nonzero.min()
                if self.int_mode:
                    self.sci = hi / lo > 1000.0 or hi > 1e8
                else:
                    self.sci = hi / lo > 1000.0 or hi > 1e8 or lo < 1e-4
        self.width = max((len(self.plain(v)) for v in values.reshape(-1)), default=1)

    def plain(self, value):
        if self.kind == "b":
            return str(bool(value))
        if self.kind != "f":
            return str(int(value))
        if not np.isfinite(value):
            return str(float(value)).replace("inf", "inf")
        if self.sci:
            return f"{value:.{PRECISION}e}"
        if self.int_mode:
            return f"{value:.0f}."
        return f"{value:.{PRECISION}f}"

    def format(self, value):
        return self.plain(value).rjust(self.width)


def _summarized(data):
    """The values that will be shown (edges only for big tensors), for the shared format."""
    if data.ndim == 0 or data.size <= THRESHOLD:
        return data
    parts = []

    def walk(a):
        if a.ndim == 0:
            parts.append(a.reshape(1))
        elif a.shape[0] > 2 * EDGEITEMS:
            for sub in list(a[:EDGEITEMS]) + list(a[-EDGEITEMS:]):
                walk(sub)
        else:
            for sub in a:
                walk(sub)
    walk(data)
    return np.concatenate(parts)


def _format_array(data, fmt, indent, summarize):
    if data.ndim == 0:
        return fmt.format(data.item())
    if data.ndim == 1:
        items = [fmt.format(v) for v in data.tolist()]
        if summarize and data.shape[0] > 2 * EDGEITEMS:
            items = items[:EDGEITEMS] + ["..."] + items[-EDGEITEMS:]
        per_line = max(1, (LINEWIDTH - indent) // (fmt.width + 2))
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    rows = range(data.shape[0])
    if summarize and data.shape[0] > 2 * EDGEITEMS:
        rows = list(range(EDGEITEMS)) + [None] + list(range(data.shape[0] - EDGEITEMS, data.shape[0]))
    parts = ["..." if i is None else _format_array(data[i], fmt, indent + 1, summarize) for i in rows]
    separator = "," + "\n" * (data.ndim - 1) + " " * (indent + 1)
    return "[" + separator.join(parts) + "]"


def tensor_repr(tensor, prefix="tensor("):
    data = tensor._data
    indent = len(prefix)
    suffixes = []
    if data.size == 0 and data.ndim != 1:
        body = "[]"
        suffixes.append(f"size={tuple(data.shape)}")
    elif data.size == 0:
        body = "[]"
    else:
        summarize = data.size > THRESHOLD
        values = data.astype(np.float64) if data.dtype == np.float16 else data
        fmt = _Formatter(_summarized(values))
        body = _format_array(values, fmt, indent, summarize)
    dtype = tensor.dtype
    if dtype not in (dtypes.defaults.floating, dtypes.int64, dtypes.bool_):
        suffixes.append(f"dtype={dtype!r}")
    if tensor.grad_fn is not None:
        suffixes.append(f"grad_fn=<{tensor.grad_fn.name()}>")
    elif tensor.requires_grad:
        suffixes.append("requires_grad=True")
    return prefix + body + "".join(", " + s for s in suffixes) + ")"
