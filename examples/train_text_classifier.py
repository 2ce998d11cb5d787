"""Train a small text classifier as a PyTorch user would (with torchtext's tokenizer and vocab
from ember.text): sentences generated here, a basic_english tokenizer, a vocabulary with <pad>
and <unk>, a DataLoader that pads each batch, and an embedding + packed bidirectional LSTM.

    python examples/train_text_classifier.py [--epochs 4] [--min-accuracy 0.9]
"""
import argparse
import random

import ember as torch
import ember.nn as nn
from ember.nn.utils.rnn import pack_padded_sequence
from ember.text import PadCollate, build_vocab_from_iterator, get_tokenizer
from ember.utils.data import DataLoader

POSITIVE = ["great", "wonderful", "loved", "excellent", "fun", "brilliant", "moving", "superb"]
NEGATIVE = ["boring", "awful", "hated", "terrible", "dull", "poor", "messy", "weak"]
FILLER = ["the", "film", "was", "really", "plot", "acting", "and", "i", "thought", "it", "quite", "story"]


def make_sentences(count, rng):
    """(sentence, label): label 1 when the sentence holds more positive than negative words."""
    data = []
    for _ in range(count):
        label = rng.random() < 0.5
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 10))]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        if rng.random() < 0.3:
            words.insert(rng.randint(0, len(words)), rng.choice(NEGATIVE if label else POSITIVE) + ",")
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        data.append((" ".join(words).capitalize() + rng.choice([".", "!", "?"]), int(label)))
    return data


class Classifier(nn.Module):
    def __init__(self, vocab_size, pad_index, dim=16, hidden=16):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=pad_index)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, 2)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.out(torch.cat([h[0], h[1]], dim=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--min-accuracy", type=float, default=0.0)
    args = parser.parse_args()
    rng = random.Random(0)
    torch.manual_seed(0)
    train, test = make_sentences(1200, rng), make_sentences(300, rng)
    tokenize = get_tokenizer("basic_english")
    vocab = build_vocab_from_iterator((tokenize(text) for text, _ in train), specials=["<pad>", "<unk>"])
    vocab.set_default_index(vocab["<unk>"])
    print(f"vocabulary: {len(vocab)} tokens, e.g. {vocab.get_itos()[:8]}")
    encode = lambda data: [(vocab(tokenize(text)), label) for text, label in data]  # noqa: E731
    collate = PadCollate(pad_index=vocab["<pad>"])
    train_loader = DataLoader(encode(train), batch_size=32, shuffle=True, collate_fn=collate)
    test_loader = DataLoader(encode(test), batch_size=100, collate_fn=collate)
    model = Classifier(len(vocab), vocab["<pad>"])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(args.epochs):
        model.train()
        total = 0.0
        for tokens, lengths, labels in train_loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(tokens, lengths), labels)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
        print(f"epoch {epoch + 1}: loss {total / len(train):.4f}")
    model.eval()
    correct = 0
    with torch.no_grad():
        for tokens, lengths, labels in test_loader:
            correct += int((model(tokens, lengths).argmax(1) == labels).sum())
    accuracy = correct / len(test)
    print(f"test accuracy: {accuracy:.3f}")
    if accuracy < args.min_accuracy:
        raise SystemExit(f"accuracy {accuracy:.3f} is below --min-accuracy {args.min_accuracy}")


if __name__ == "__main__":
    main()
