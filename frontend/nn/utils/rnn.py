"""`ember.nn.utils.rnn` (torch.nn.utils.rnn): batches of sequences of different lengths, padded
(pad_sequence, pad_packed_sequence) or packed (PackedSequence, pack_padded_sequence, pack_sequence),
as the recurrent layers (frontend/nn/recurrent.py) take them.

A PackedSequence holds the time steps one after another, each with only the sequences still
running at that step (longest first): `data` (sum of lengths, *), `batch_sizes` (one count per
step, an int64 tensor on the CPU), and the permutations between the caller's order and the
longest-first order. Everything is tensor ops, so autograd and ember.compile take it.
"""
from collections import namedtuple

import numpy as np

from ember import dtypes
from ember.frontend import shape_ops as S
from ember.frontend.creation import full, tensor
from ember.frontend.tensor import Tensor


class PackedSequence(namedtuple("PackedSequence", "data batch_sizes sorted_indices unsorted_indices")):
    """Sequences packed step by step (see the module docstring); built by pack_padded_sequence
    and pack_sequence, taken by RNN, LSTM and GRU."""

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if unsorted_indices is None and sorted_indices is not None:
            unsorted_indices = invert_permutation(sorted_indices)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    @property
    def is_cuda(self):
        return False

    def to(self, *args, **kwargs):
        data = self.data.to(*args, **kwargs)
        return self if data is self.data else type(self)(data, self.batch_sizes, self.sorted_indices,
                                                         self.unsorted_indices)

    def is_pinned(self):
        return False


def invert_permutation(permutation):
    if permutation is None:
        return None
    order = np.asarray(permutation._data)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return tensor(inverse, dtype=dtypes.int64)


def _lengths(lengths):
    values = np.asarray(lengths._data if isinstance(lengths, Tensor) else lengths).reshape(-1)
    if values.dtype.kind not in "iu":
        values = values.astype(np.int64)
    return [int(v) for v in values]


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """Stack sequences (L_i, *) into (max L, B, *) (or (B, max L, *)), padding the short ones."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"Expected padding_side to be one of left or right, but got {padding_side}.")
    sequences = list(sequences) if not isinstance(sequences, Tensor) else list(S.unbind(sequences, 0))
    if not sequences:
        raise RuntimeError("received an empty list of sequences")
    longest = max(s.shape[0] for s in sequences)
    trailing = tuple(sequences[0].shape[1:])
    rows = []
    for s in sequences:
        if tuple(s.shape[1:]) != trailing:
            raise RuntimeError(f"The size of tensor a ({trailing}) must match the size of tensor b "
                               f"({tuple(s.shape[1:])}): pad_sequence needs equal trailing dims")
        missing = longest - s.shape[0]
        if missing:
            filler = full((missing,) + trailing, padding_value, dtype=s.dtype)
            s = S.cat([s, filler] if padding_side == "right" else [filler, s], 0)
        rows.append(s)
    return S.stack(rows, 0 if batch_first else 1)


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """The sequences of a padded batch, each cut to its length."""
    padded = padded_sequences if batch_first else S.transpose(padded_sequences, 0, 1)
    return [padded[k, :length] for k, length in enumerate(_lengths(lengths))]


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """Pack a padded batch (T, B, *) (or (B, T, *)) of sequences of the given lengths."""
    counts = _lengths(lengths)
    if isinstance(lengths, Tensor) and lengths.ndim != 1:
        raise RuntimeError(f"'lengths' argument should be a 1D CPU int64 tensor, but got {lengths.ndim}D")
    if any(c <= 0 for c in counts):
        raise RuntimeError("Length of all samples has to be greater than 0, but found an element in 'lengths' that "
                           "is <= 0")
    x = S.transpose(input, 0, 1) if batch_first else input
    if len(counts) != x.shape[1]:
        raise RuntimeError(f"Expected `len(lengths)` to be equal to batch_size, but got {len(counts)} "
                           f"(batch_size={x.shape[1]})")
    if max(counts) > x.shape[0]:
        raise RuntimeError(f"Expected sequence length to be larger than or equal to the longest length "
                           f"({max(counts)}), but got {x.shape[0]}")
    if enforce_sorted:
        if any(a < b for a, b in zip(counts, counts[1:])):
            raise RuntimeError("`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You "
                               "can pass `enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to "
                               "sidestep this requirement if you do not need ONNX exportability.")
        sorted_indices = None
    else:
        order = sorted(range(len(counts)), key=lambda k: -counts[k])
        sorted_indices = tensor(order, dtype=dtypes.int64)
        x = S.index_select(x, 1, sorted_indices)
        counts = [counts[k] for k in order]
    batch_sizes = [sum(1 for c in counts if c > t) for t in range(counts[0])]
    data = S.cat([x[t, :size] for t, size in enumerate(batch_sizes)], 0)
    return PackedSequence(data, tensor(batch_sizes, dtype=dtypes.int64), sorted_indices)


def pack_sequence(sequences, enforce_sorted=True):
    """Pack a list of sequences (L_i, *)."""
    lengths = [s.shape[0] for s in sequences]
    return pack_padded_sequence(pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """(padded (T, B, *) or (B, T, *), lengths int64) of a PackedSequence, in the caller's order."""
    sizes = _lengths(sequence.batch_sizes)
    longest = len(sizes)
    if total_length is not None:
        if total_length < longest:
            raise ValueError(f"Expected total_length to be at least the length of the longest sequence in input, but "
                             f"got total_length={total_length} and max sequence length being {longest}")
        longest = total_length
    padded = padded_steps(sequence.data, sizes, longest, padding_value)
    lengths = [sum(1 for s in sizes if s > k) for k in range(sizes[0])]
    if sequence.unsorted_indices is not None:
        padded = S.index_select(padded, 1, sequence.unsorted_indices)
        order = _lengths(sequence.unsorted_indices)
        lengths = [lengths[k] for k in order]
    if batch_first:
        padded = S.transpose(padded, 0, 1)
    return padded, tensor(lengths, dtype=dtypes.int64)


def padded_steps(data, sizes, steps, padding_value=0.0):
    """(steps, B, *) from packed `data` with `sizes` sequences per step, longest first."""
    batch = sizes[0]
    trailing = tuple(data.shape[1:])
    rows, offset = [], 0
    for t in range(steps):
        size = sizes[t] if t < len(sizes) else 0
        part = data[offset:offset + size]
        offset += size
        if size < batch:
            filler = full((batch - size,) + trailing, padding_value, dtype=data.dtype)
            part = S.cat([part, filler], 0) if size else filler
        rows.append(part)
    return S.stack(rows, 0)


def packed_steps(padded, sizes):
    """Packed data from (T, B, *) steps with `sizes` sequences per step (the inverse of padded_steps)."""
    return S.cat([padded[t, :size] for t, size in enumerate(sizes)], 0)


def unpack_sequence(packed_sequences):
    """The sequences of a PackedSequence, each as long as it is, in the caller's order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)


__all__ = ["PackedSequence", "pad_sequence", "unpad_sequence", "pack_padded_sequence", "pack_sequence",
           "pad_packed_sequence", "unpack_sequence", "invert_permutation"]
