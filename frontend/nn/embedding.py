"""Lookup tables of ember.nn: `Embedding`, `EmbeddingBag` and their functional forms.

A lookup is `weight[indices]`, which lowers to the `take` primitive (its VJP scatter-adds, so
repeated indices accumulate). padding_idx, scale_grad_by_freq and bag reductions are built
from Tensor operations too (where, scatter_add, comparisons), so autograd and the tracer
see through them; only the max_norm renormalisation mutates the weight, under no_grad.
"""
import numbers

from ember import dtypes
from ember.frontend.autograd import no_grad
from ember.frontend.creation import empty, ones, zeros
from ember.frontend.dispatch import STATE
from ember.frontend.math_ops import add, div, gt, mul, ne, sub, to_dtype, where
from ember.frontend.reductions import norm
from ember.frontend.shape_ops import reshape, scatter_add, unsqueeze
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
    indices = to_dtype(input, dtypes.int64)
    out = weight[indices]
    if not (weight.requires_grad and STATE.grad_enabled):
        return out
    if scale_grad_by_freq:
        out = _scale_gradient(out, unsqueeze(div(1.0, _occurrences(indices, rows, weight.dtype)), -1))
    if padding_idx is not None:
        out = where(unsqueeze(ne(indices, padding_idx), -1), out, out.detach())
    return out


class Embedding(Module):
    """A table of `num_embeddings` vectors of size `embedding_dim`, initialised N(0, 1), looked
    up by integer indices of any shape. The padding_idx row starts at zero and is never updated."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, _weight=None, _freeze=False, device=None, dtype=None):
        super().__init__()
        for name, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Embedding: {name} must be a non-negative int, got {value!r}")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = _normalize_padding_idx("Embedding", padding_idx, num_embeddings)
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
                raise ValueError(f"Embedding: _weight {_short(_weight)} does not match num_embeddings="
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
        if not isinstance(embeddings, Tensor) or embeddings.ndim != 2:
            shown = _short(embeddings) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise ValueError(f"Embedding.from_pretrained: embeddings are expected to be 2-dimensional, got {shown}")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, _weight=embeddings, _freeze=freeze)
