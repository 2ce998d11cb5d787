"""Lookup tables of ember.nn: `Embedding`, `EmbeddingBag` and their functional forms.

A lookup is `weight[indices]`, which lowers to the `take` primitive (its VJP scatter-adds, so
repeated indices accumulate). padding_idx, scale_grad_by_freq and bag reductions are built
from Tensor operations too (where, scatter_add, comparisons), so autograd and the tracer
see through them; only the max_norm renormalisation mutates the weight, under no_grad.
"""
import numbers

from ember import dtypes
from ember.frontend.autograd import no_grad
from ember.frontend.creation import arange, empty, ones, zeros
from ember.frontend.dispatch import STATE
from ember.frontend.math_ops import add, clamp_min, div, eq, gt, le, logical_and, mul, ne, sub, to_dtype, where
from ember.frontend.reductions import amax, norm, sum as reduce_sum
from ember.frontend.shape_ops import _no_negative_indices, expand, reshape, scatter_add, unsqueeze
from ember.frontend.tensor import Tensor
from .module import Module
from .parameter import Parameter


def _short(t):
    return f"{t.dtype.short}[{','.join(str(d) for d in t.shape)}]"


def _check_indices(op, input, weight):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: indices must be a Tensor, got {type(input).__name__}")
    if input.dtype.category != 1:
        raise RuntimeError(f"{op}: indices must be an integer tensor (int64 or int32), got {_short(input)}")
    if weight.ndim != 2:
        raise RuntimeError(f"{op}: weight must be 2-D (num_embeddings, embedding_dim), got {_short(weight)}")
    data = input._data  # a bounds check on the index values only: nothing here is differentiated
    rows = weight.shape[0]
    if data.size and (data.min() < 0 or data.max() >= rows):
        bad = int(data.min()) if data.min() < 0 else int(data.max())
        raise IndexError(f"{op}: index {bad} is out of range for a table of {rows} rows (weight {_short(weight)})")


def _normalize_padding_idx(op, padding_idx, rows):
    if padding_idx is None:
        return None
    if not -rows <= padding_idx < rows:
        raise ValueError(f"{op}: padding_idx={padding_idx} must be within num_embeddings={rows}")
    return padding_idx % rows


def _renorm_rows(weight, indices, max_norm, norm_type):
    """torch's embedding_renorm_: rows that are looked up and longer than max_norm are scaled
    down to max_norm, in place (a parameter update, not part of the differentiated graph)."""
    with no_grad():
        flat = reshape(indices, (-1,))
        rows = weight[flat]
        norms = norm(rows, p=norm_type, dim=1, keepdim=True)
        scale = where(gt(norms, max_norm), div(max_norm, add(norms, 1e-7)), 1.0)
        weight[flat] = mul(rows, to_dtype(scale, weight.dtype))


def _occurrences(indices, rows, dtype):
    """How often each position's index occurs in `indices` (for scale_grad_by_freq)."""
    flat = reshape(indices, (-1,))
    counts = scatter_add(zeros(rows, dtype=dtype), 0, flat, ones(flat.shape[0], dtype=dtype))
    return counts[indices]


def _scale_gradient(x, scale):
    """x in the forward pass (exactly), scale * (incoming gradient) in the backward pass."""
    frozen = x.detach()
    return add(frozen, mul(sub(x, frozen), scale))


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
              sparse=False):
    """Rows of `weight` picked by the integer tensor `input`: output shape input.shape + (dim,).

    The row at padding_idx gets no gradient; scale_grad_by_freq divides each row's gradient by
    how often its index occurs in `input`. `sparse` is accepted for torch compatibility: ember's
    gradients are dense tensors holding the same values torch's sparse gradient would.
    """
    _check_indices("embedding", input, weight)
    rows = weight.shape[0]
    padding_idx = _normalize_padding_idx("embedding", padding_idx, rows)
    if max_norm is not None:
        _renorm_rows(weight, input, max_norm, norm_type)
    # negative indices are out of range for embedding (indexing would wrap them); the eager check
    # above refused them, and a compiled program refuses them too
    indices = to_dtype(input, dtypes.int64)
    out = weight[_no_negative_indices(indices, rows, "embedding", 0)]
    if not (weight.requires_grad and STATE.grad_enabled):
        return out
    if scale_grad_by_freq:
        out = _scale_gradient(out, unsqueeze(div(1.0, _occurrences(indices, rows, weight.dtype)), -1))
    if padding_idx is not None:
        out = where(unsqueeze(ne(indices, padding_idx), -1), out, out.detach())
    return out


def _bag_of_each_position(offsets, count):
    """bag[j] = (number of offsets <= j) - 1: which bag position j of a 1-D input falls in."""
    positions = arange(count, dtype=dtypes.int64)
    starts_before = le(unsqueeze(offsets, 0), unsqueeze(positions, 1))
    return sub(reduce_sum(to_dtype(starts_before, dtypes.int64), 1), 1)


def _check_offsets(input, offsets, include_last_offset):
    if input.ndim == 2:
        if offsets is not None:
            raise ValueError("embedding_bag: if input is 2D, then offsets has to be None, as input is treated "
                             f"as a mini-batch of fixed length sequences; got offsets {_short(offsets)}")
        bags, length = input.shape
        return reshape(input, (-1,)), mul(arange(bags, dtype=dtypes.int64), length)
    if input.ndim != 1:
        raise ValueError(f"embedding_bag: input has to be 1D or 2D, got {_short(input)}")
    if not isinstance(offsets, Tensor) or offsets.ndim != 1 or offsets.dtype.category != 1:
        shown = _short(offsets) if isinstance(offsets, Tensor) else offsets
        raise ValueError(f"embedding_bag: for 1D input {_short(input)}, offsets has to be a 1D integer tensor, "
                         f"got {shown}")
    data = offsets._data  # validation of the bag boundaries only: nothing here is differentiated
    if data.size and data[0] != 0:
        raise ValueError(f"embedding_bag: offsets[0] has to be 0, i.e. the first bag starts at position 0, "
                         f"got {int(data[0])}")
    if data.size and (data.max() > input.shape[0] or (data[1:] < data[:-1]).any()):
        raise ValueError(f"embedding_bag: offsets must be non-decreasing and at most the input length "
                         f"{input.shape[0]}, got {data.tolist()}")
    offsets = to_dtype(offsets, dtypes.int64)
    return input, (offsets[:-1] if include_last_offset else offsets)


def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                  mode="mean", sparse=False, per_sample_weights=None, include_last_offset=False, padding_idx=None):
    """Sums, means or maxima of bags of embeddings without materialising the lookups per bag.

    A 2-D input (B, N) holds B bags of N indices; a 1-D input is cut into bags at `offsets`.
    Entries equal to padding_idx are left out (and not counted by 'mean'); empty bags give
    zeros. per_sample_weights (mode 'sum' only) scale each looked-up row.
    """
    if mode not in ("sum", "mean", "max"):
        raise ValueError(f"embedding_bag: mode has to be one of sum, mean or max, got {mode!r}")
    if per_sample_weights is not None:
        if mode != "sum":
            raise NotImplementedError(f"embedding_bag: per_sample_weights is only supported for mode='sum' "
                                      f"(got mode={mode!r})")
        if tuple(per_sample_weights.shape) != tuple(input.shape):
            raise ValueError(f"embedding_bag: per_sample_weights {_short(per_sample_weights)} must have the "
                             f"shape of input {_short(input)}")
    _check_indices("embedding_bag", input, weight)
    padding_idx = _normalize_padding_idx("embedding_bag", padding_idx, weight.shape[0])
    flat, starts = _check_offsets(input, offsets, include_last_offset)
    rows = embedding(flat, weight, None, max_norm, norm_type, scale_grad_by_freq)  # (n, dim)
    count, bags, dim = flat.shape[0], starts.shape[0], weight.shape[1]
    present = ne(to_dtype(flat, dtypes.int64), padding_idx) if padding_idx is not None else None
    if mode == "max":
        return _bag_max(input, rows, starts, present)
    scale = ones(count, dtype=weight.dtype) if present is None else to_dtype(present, weight.dtype)
    if per_sample_weights is not None:
        scale = mul(scale, reshape(to_dtype(per_sample_weights, weight.dtype), (-1,)))
    bag = _bag_of_each_position(starts, count)
    index = expand(unsqueeze(bag, 1), (count, dim))
    out = scatter_add(zeros(bags, dim, dtype=weight.dtype), 0, index, mul(rows, unsqueeze(scale, 1)))
    if mode == "mean":
        members = ones(count, dtype=weight.dtype) if present is None else to_dtype(present, weight.dtype)
        sizes = scatter_add(zeros(bags, dtype=weight.dtype), 0, bag, members)
        out = div(out, unsqueeze(clamp_min(sizes, 1.0), 1))
    return out


def _bag_max(input, rows, starts, present):
    """Elementwise maximum per bag; empty bags (or bags of padding only) give zeros."""
    count, bags, dim = rows.shape[0], starts.shape[0], rows.shape[1]
    if input.ndim == 2:  # fixed-length bags: a plain reduction over the bag dim
        member = present if present is not None else ones(count, dtype=dtypes.bool_)
        member = reshape(member, tuple(input.shape))  # (bags, length)
        candidates = reshape(rows, tuple(input.shape) + (dim,))
    else:  # (bags, n) membership: each bag reduces over the positions it owns
        bag = _bag_of_each_position(starts, count)
        member = eq(unsqueeze(bag, 0), unsqueeze(arange(bags, dtype=dtypes.int64), 1))
        if present is not None:
            member = logical_and(member, unsqueeze(present, 0))
        candidates = unsqueeze(rows, 0)
    if member.shape[1] == 0:
        return zeros(bags, dim, dtype=rows.dtype)
    best = amax(where(unsqueeze(member, -1), candidates, float("-inf")), 1)
    return where(unsqueeze(gt(reduce_sum(to_dtype(member, dtypes.int64), 1), 0), -1), best, 0.0)


class _LookupTable(Module):
    """The weight table shared by Embedding and EmbeddingBag: (num_embeddings, embedding_dim),
    N(0, 1) initialised, the padding_idx row zeroed; `_weight` adopts a given tensor instead."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq,
                 sparse, _weight, _freeze, device, dtype):
        super().__init__()
        owner = type(self).__name__
        for name, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{owner}: {name} must be a non-negative int, got {value!r}")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = _normalize_padding_idx(owner, padding_idx, num_embeddings)
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        if _weight is None:
            dtype = dtype if dtype is not None else dtypes.defaults.floating
            self.weight = Parameter(empty(num_embeddings, embedding_dim, dtype=dtype, device=device),
                                    requires_grad=not _freeze)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(f"{owner}: _weight {_short(_weight)} does not match num_embeddings="
                                 f"{num_embeddings} and embedding_dim={embedding_dim}")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self):
        with no_grad():
            self.weight.normal_(0.0, 1.0)
        self._fill_padding_idx_with_zero()

    def _fill_padding_idx_with_zero(self):
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0.0


def _check_pretrained(owner, embeddings):
    if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
        shown = _short(embeddings) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        raise ValueError(f"{owner}.from_pretrained: embeddings are expected to be 2-dimensional, got {shown}")
    return embeddings.shape


class Embedding(_LookupTable):
    """A table of `num_embeddings` vectors of size `embedding_dim`, initialised N(0, 1), looked
    up by integer indices of any shape. The padding_idx row starts at zero and is never updated."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None, dtype=None):
        super().__init__(num_embeddings, embedding_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq,
                         sparse, _weight, _freeze, device, dtype)

    def forward(self, input):
        return embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                         self.scale_grad_by_freq, self.sparse)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq is not False:
            s += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        if self.sparse is not False:
            s += ", sparse=True"
        return s

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, sparse=False):
        """An Embedding whose weight is `embeddings` (shared, not copied); frozen unless freeze=False."""
        rows, cols = _check_pretrained("Embedding", embeddings)
        return cls(rows, cols, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=embeddings, _freeze=freeze)


class EmbeddingBag(_LookupTable):
    """Per-bag sums, means or maxima of embeddings: forward(input, offsets=None,
    per_sample_weights=None) -> (bags, embedding_dim); see `embedding_bag`."""

    def __init__(self, num_embeddings, embedding_dim, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                 mode="mean", sparse=False, _weight=None, include_last_offset=False, padding_idx=None,
                 device=None, dtype=None):
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"EmbeddingBag: mode has to be one of sum, mean or max, got {mode!r}")
        super().__init__(num_embeddings, embedding_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq,
                         sparse, _weight, False, device, dtype)
        self.mode = mode
        self.include_last_offset = include_last_offset

    def forward(self, input, offsets=None, per_sample_weights=None):
        return embedding_bag(input, self.weight, offsets, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                             self.mode, self.sparse, per_sample_weights, self.include_last_offset,
                             self.padding_idx)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq is not False:
            s += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        s += f", mode={self.mode!r}"  # (PyTorch formats EmbeddingBag's fields with repr)
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx!r}"
        return s

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                        mode="mean", sparse=False, include_last_offset=False, padding_idx=None):
        """An EmbeddingBag whose weight is `embeddings` (shared, not copied); frozen unless freeze=False."""
        rows, cols = _check_pretrained("EmbeddingBag", embeddings)
        bag = cls(rows, cols, max_norm=max_norm, norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq,
                  mode=mode, sparse=sparse, _weight=embeddings, include_last_offset=include_last_offset,
                  padding_idx=padding_idx)
        bag.weight.requires_grad_(not freeze)
        return bag
