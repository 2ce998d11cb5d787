"""ember.text against torchtext's documented behaviour: basic_english tokens, vocabularies in
frequency order with specials and a default index, numericalization, the padding collate."""
import pytest

import ember
from ember.text import PadCollate, Vocab, build_vocab_from_iterator, get_tokenizer
from ember.utils.data import DataLoader


def test_basic_english_lowercases_and_splits_off_punctuation():
    tokenize = get_tokenizer("basic_english")
    assert tokenize("You can now install TorchText using pip!") == ["you", "can", "now", "install", "torchtext",
                                                                     "using", "pip", "!"]
    assert tokenize('It\'s "great", (really): yes; no.<br />Next?') == \
        ["it", "'", "s", "great", ",", "(", "really", ")", "yes", "no", ".", "next", "?"]
    assert get_tokenizer(None)("a  b c") == ["a", "b", "c"]
    with pytest.raises(ValueError, match="unknown tokenizer 'spacy'"):
        get_tokenizer("spacy")


def test_vocabulary_orders_by_frequency_then_token_with_specials_and_a_default_index():
    corpus = [["b", "a", "c", "a"], ["c", "a", "d"], ["b", "e"]]
    vocab = build_vocab_from_iterator(corpus, specials=["<pad>", "<unk>"])
    assert vocab.get_itos() == ["<pad>", "<unk>", "a", "b", "c", "d", "e"]
    assert vocab(["a", "e"]) == [2, 6] and "d" in vocab and len(vocab) == 7
    with pytest.raises(RuntimeError, match="Token zebra not found and default index is not set"):
        vocab["zebra"]
    vocab.set_default_index(vocab["<unk>"])
    assert vocab(["zebra", "b"]) == [1, 3]
    assert build_vocab_from_iterator(corpus, min_freq=2).get_itos() == ["a", "b", "c"]
    assert build_vocab_from_iterator(corpus, specials=["<s>"], special_first=False, max_tokens=3).get_itos() == \
        ["a", "b", "<s>"]
    manual = Vocab(["x", "y"])
    manual.insert_token("w", 0)
    assert manual.get_stoi() == {"w": 0, "x": 1, "y": 2} and manual.lookup_tokens([2, 0]) == ["y", "w"]
    with pytest.raises(RuntimeError, match="Token x already exists in the Vocab with index: 1"):
        manual.append_token("x")


def test_pad_collate_batches_sequences_with_their_lengths_for_packing():
    samples = [([4, 5, 6], 1), ([7], 0), ([8, 9], 1)]
    tokens, lengths, labels = next(iter(DataLoader(samples, batch_size=3, collate_fn=PadCollate(pad_index=0))))
    assert tokens.tolist() == [[4, 5, 6], [7, 0, 0], [8, 9, 0]] and tokens.dtype == ember.int64
    assert lengths.tolist() == [3, 1, 2] and labels.tolist() == [1, 0, 1]
    time_major, _, _ = PadCollate(pad_index=-1, batch_first=False)(samples)
    assert time_major.shape == (3, 3) and time_major[:, 1].tolist() == [7, -1, -1]
