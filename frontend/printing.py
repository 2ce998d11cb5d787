"""Printing tensors the way PyTorch does: `tensor([[ 0.1234, -1.5000]], grad_fn=<AddBackward0>)`.

Follows torch/_tensor_str.py rule for rule: one shared width and format per tensor, decided
by its nonzero finite values (fixed with 4 decimals, integer-valued floats as `1.`,
scientific when the range is wide), 80-column wrapping of rows and of the suffixes,
summarisation past 1000 elements with `...`, and the dtype/grad suffixes.
"""
import numpy as np

from ember import dtypes

PRECISION = 4
THRESHOLD = 1000
SCI_MODE = None  # set_printoptions(sci_mode=True/False); None lets each tensor choose
EDGEITEMS = 3
LINEWIDTH = 80

_TYPE_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
               "bfloat16": "BFloat16Tensor",
               "int64": "LongTensor", "int32": "IntTensor", "int16": "ShortTensor", "int8": "CharTensor",
               "uint8": "ByteTensor", "bool": "BoolTensor"}


def type_name(tensor):
    return "ember." + _TYPE_NAMES[tensor._data.dtype.name]


class _Formatter:
    """How every element of one tensor is written, and the width they share."""

    def __init__(self, values):
        self.floating = dtypes.is_floating_np(values.dtype)
        self.int_mode = True
        self.sci_mode = False
        self.width = 1
        flat = values.reshape(-1)
        if not self.floating:
            self.width = max((len(str(v)) for v in flat.tolist()), default=1)
            return
        # zeros, infinities and nans take no part in choosing the format
        shown = flat[np.isfinite(flat) & (flat != 0)].astype(np.float64)
        if not shown.size:
            return
        magnitudes = np.abs(shown)
        low, high = magnitudes.min(), magnitudes.max()
        self.int_mode = bool(np.all(shown == np.ceil(shown)))
        with np.errstate(over="ignore"):  # (a subnormal low: the ratio is inf, and wide)
            wide = high / low > 1000.0 or high > 1.0e8
        self.sci_mode = wide if self.int_mode else wide or low < 1.0e-4
        if SCI_MODE is not None:  # set_printoptions(sci_mode=...) decides for every tensor
            self.sci_mode = SCI_MODE
        if self.sci_mode:
            self.width = max(len(f"{v:.{PRECISION}e}") for v in shown.tolist())
        elif self.int_mode:
            self.width = max(len(f"{v:.0f}") + 1 for v in shown.tolist())
        else:
            self.width = max(len(f"{v:.{PRECISION}f}") for v in shown.tolist())

    def format(self, value):
        if not self.floating:
            text = str(value)
        elif self.sci_mode:
            text = f"{value:{self.width}.{PRECISION}e}"
        elif self.int_mode:
            text = f"{value:.0f}" + ("" if np.isinf(value) or np.isnan(value) else ".")
        else:
            text = f"{value:.{PRECISION}f}"
        return text.rjust(self.width)


def _summarized(data):
    """The values that will be shown (the edges of every dim of a big tensor), which alone
    decide the shared format."""
    if data.ndim == 0:
        return data
    if data.shape[0] > 2 * EDGEITEMS:
        rows = [data[i] for i in range(EDGEITEMS)] + [data[i] for i in range(len(data) - EDGEITEMS, len(data))]
    else:
        rows = list(data)
    if data.ndim == 1:
        return np.array(rows, dtype=data.dtype)
    return np.stack([_summarized(row) for row in rows])


def _vector(data, fmt, indent, summarize):
    if summarize and data.shape[0] > 2 * EDGEITEMS:
        items = [fmt.format(v) for v in data[:EDGEITEMS].tolist()] + [" ..."] + \
                [fmt.format(v) for v in data[-EDGEITEMS:].tolist()]
    else:
        items = [fmt.format(v) for v in data.tolist()]
    per_line = max(1, (LINEWIDTH - indent) // (fmt.width + 2))
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _nested(data, fmt, indent, summarize):
    if data.ndim == 0:
        return fmt.format(data.item())
    if data.ndim == 1:
        return _vector(data, fmt, indent, summarize)
    if summarize and data.shape[0] > 2 * EDGEITEMS:
        rows = [_nested(data[i], fmt, indent + 1, summarize) for i in range(EDGEITEMS)] + ["..."] + \
               [_nested(data[i], fmt, indent + 1, summarize) for i in range(len(data) - EDGEITEMS, len(data))]
    else:
        rows = [_nested(row, fmt, indent + 1, summarize) for row in data]
    return "[" + ("," + "\n" * (data.ndim - 1) + " " * (indent + 1)).join(rows) + "]"


def _with_suffixes(text, suffixes, indent):
    """Append `, suffix` pieces; one that would pass column 80 starts a new line."""
    parts = [text]
    last_line = len(text) - text.rfind("\n") + 1  # PyTorch's measure, kept for identical wrapping
    for suffix in suffixes:
        if last_line + len(suffix) + 2 > LINEWIDTH:
            parts.append(",\n" + " " * indent + suffix)
            last_line = indent + len(suffix)
        else:
            parts.append(", " + suffix)
            last_line += len(suffix) + 2
    return "".join(parts) + ")"


def tensor_repr(tensor, prefix="tensor("):
    data = tensor._data
    indent = len(prefix)
    dtype = tensor.dtype
    suffixes = ["device='cuda:0'"] if tensor.is_cuda else []
    if data.size == 0:
        body = "[]"
        if data.ndim != 1:
            suffixes.append(f"size={tuple(data.shape)}")
        if dtype is not dtypes.defaults.floating:  # nothing shows an empty tensor's type
            suffixes.append(f"dtype={dtype!r}")
    else:
        summarize = data.size > THRESHOLD
        values = data.astype(np.float32) if data.dtype in dtypes.LOW_PRECISION_NP else data
        fmt = _Formatter(_summarized(values) if summarize else values)
        body = _nested(values, fmt, indent, summarize)
        if dtype not in (dtypes.defaults.floating, dtypes.int64, dtypes.bool_):
            suffixes.append(f"dtype={dtype!r}")
    if tensor.grad_fn is not None:
        suffixes.append(f"grad_fn=<{tensor.grad_fn.name()}>")
    elif tensor.requires_grad:
        suffixes.append("requires_grad=True")
    return _with_suffixes(prefix + body, suffixes, indent)
