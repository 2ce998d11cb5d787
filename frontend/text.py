"""`ember.text`: what torchtext offered small text projects, for DataLoader pipelines. A tokenizer
(`get_tokenizer("basic_english")`), a vocabulary built from an iterator of token lists
(`build_vocab_from_iterator`, with special tokens and a default index), numericalization
(`vocab(tokens)`), and `PadCollate`, a DataLoader collate_fn that pads token sequences into one
batch with their lengths (ready for nn.utils.rnn.pack_padded_sequence).
"""
import re
from collections import Counter, OrderedDict

from ember import dtypes
from .creation import tensor
from .tensor import Tensor

# torchtext's basic_english normalisation: these patterns, in order, then whitespace split
_BASIC_ENGLISH = [(re.compile(pattern), replacement) for pattern, replacement in (
    (r"\'", " '  "), (r"\"", ""), (r"\.", " . "), (r"<br \/>", " "), (r",", " , "), (r"\(", " ( "),
    (r"\)", " ) "), (r"\!", " ! "), (r"\?", " ? "), (r"\;", " "), (r"\:", " "), (r"\s+", " "))]


def _basic_english(line):
    line = line.lower()
    for pattern, replacement in _BASIC_ENGLISH:
        line = pattern.sub(replacement, line)
    return line.split()


def get_tokenizer(tokenizer, language="en"):
    """"basic_english" (lower case, punctuation split off), None (split on spaces), or a
    callable (returned as it is)."""
    if callable(tokenizer):
        return tokenizer
    if tokenizer is None:
        return str.split
    if tokenizer == "basic_english":
        if language != "en":
            raise ValueError("Basic normalization is only available for English(en)")
        return _basic_english
    raise ValueError(f"ember.text.get_tokenizer: unknown tokenizer {tokenizer!r}; ember provides 'basic_english', "
                     f"None (whitespace) or a callable of your own")


class Vocab:
    """Tokens <-> indices. `vocab[token]` and `vocab(tokens)` look indices up, falling back to the
    default index once `set_default_index` set one (else RuntimeError, as torchtext)."""

    def __init__(self, tokens=()):
        self._itos = []
        self._stoi = {}
        self._default = None
        for token in tokens:
            self.append_token(token)

    def __len__(self):
        return len(self._itos)

    def __contains__(self, token):
        return token in self._stoi

    def __getitem__(self, token):
        index = self._stoi.get(token, self._default)
        if index is None:
            raise RuntimeError(f"Token {token} not found and default index is not set")
        return index

    def __call__(self, tokens):
        return self.lookup_indices(tokens)

    def set_default_index(self, index):
        if index is not None and not 0 <= index < len(self):
            raise RuntimeError(f"Specified default index {index} is out of range [0, {len(self)})")
        self._default = index

    def get_default_index(self):
        return self._default

    def lookup_indices(self, tokens):
        return [self[token] for token in tokens]

    def lookup_token(self, index):
        if not 0 <= index < len(self):
            raise RuntimeError(f"Specified index {index} is out of bounds of the size of itos dictionary: "
                               f"{len(self)}.")
        return self._itos[index]

    def lookup_tokens(self, indices):
        return [self.lookup_token(i) for i in indices]

    def append_token(self, token):
        if token in self._stoi:
            raise RuntimeError(f"Token {token} already exists in the Vocab with index: {self._stoi[token]}")
        self._stoi[token] = len(self._itos)
        self._itos.append(token)

    def insert_token(self, token, index):
        if token in self._stoi:
            raise RuntimeError(f"Token {token} already exists in the Vocab with index: {self._stoi[token]}")
        if not 0 <= index <= len(self):
            raise RuntimeError(f"Specified index {index} is out of bounds of the size of stoi dictionary: "
                               f"{len(self)}.")
        self._itos.insert(index, token)
        self._stoi = {t: i for i, t in enumerate(self._itos)}

    def get_itos(self):
        return list(self._itos)

    def get_stoi(self):
        return dict(self._stoi)

    def __repr__(self):
        return f"Vocab({len(self)} tokens, default index {self._default})"


def vocab(ordered_dict, min_freq=1, specials=None, special_first=True):
    """A Vocab of the tokens of an (ordered) {token: count} with at least `min_freq` occurrences,
    in its order, with `specials` first (or last)."""
    specials = list(specials or [])
    tokens = [t for t, count in ordered_dict.items() if count >= min_freq and t not in specials]
    return Vocab(specials + tokens if special_first else tokens + specials)


def build_vocab_from_iterator(iterator, min_freq=1, specials=None, special_first=True, max_tokens=None):
    """A Vocab of the tokens an iterator of token lists yields: most frequent first (ties in
    lexicographic order), at least `min_freq` occurrences, at most `max_tokens` tokens in all."""
    counter = Counter()
    for tokens in iterator:
        counter.update(tokens)
    specials = list(specials or [])
    ordered = sorted(counter.items(), key=lambda item: item[0])
    ordered.sort(key=lambda item: item[1], reverse=True)
    if max_tokens is not None:
        if max_tokens <= len(specials):
            raise AssertionError("len(specials) >= max_tokens, so the vocab will be entirely special tokens.")
        ordered = [item for item in ordered if item[0] not in specials][:max_tokens - len(specials)]
    return vocab(OrderedDict(ordered), min_freq=min_freq, specials=specials, special_first=special_first)


class PadCollate:
    """A DataLoader collate_fn for (token indices, label) samples: returns (tokens (B, longest)
    padded with `pad_index` (or (longest, B) with batch_first=False), lengths int64 (B,), labels)."""

    def __init__(self, pad_index=0, batch_first=True, label_dtype=None):
        self.pad_index, self.batch_first = pad_index, batch_first
        self.label_dtype = label_dtype if label_dtype is not None else dtypes.int64

    def __call__(self, batch):
        sequences, labels = zip(*batch)
        lengths = [len(s) for s in sequences]
        longest = max(lengths)
        rows = [list(s.tolist() if isinstance(s, Tensor) else s) + [self.pad_index] * (longest - len(s))
                for s in sequences]
        tokens = tensor(rows, dtype=dtypes.int64)
        if not self.batch_first:
            tokens = tokens.t().contiguous()
        labels = tensor([int(label) if not isinstance(label, Tensor) else label.item() for label in labels],
                        dtype=self.label_dtype)
        return tokens, tensor(lengths, dtype=dtypes.int64), labels


__all__ = ["get_tokenizer", "Vocab", "vocab", "build_vocab_from_iterator", "PadCollate"]
