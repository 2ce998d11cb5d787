"""Train the seed document's Net on scikit-learn's bundled 8x8 digits, upsampled to 3x32x32.

Written as a PyTorch script would be, with `import ember as torch`: a Dataset with
transforms.Normalize, DataLoader, CrossEntropyLoss, SGD with momentum, a tqdm bar per
epoch, test accuracy, then the trained state dict saved with ember.save and reloaded.

    python examples/train_digits.py [--epochs 12] [--batch-size 32] [--compile] [--min-accuracy 0.95]
"""
import argparse
import os
import tempfile
import time

import numpy as np
from sklearn.datasets import load_digits
from tqdm import tqdm

import ember as torch
from ember import nn
from ember import transforms
from ember.utils.data import DataLoader, Dataset


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        x = self.fc3(x)
        return x


class Digits(Dataset):
    """8x8 digit images (values 0..16) as 3x32x32 float tensors in [0, 1], transformed."""

    def __init__(self, images, labels, transform=None):
        upsampled = np.kron(images.reshape(-1, 8, 8) / 16.0, np.ones((4, 4)))  # nearest-neighbour x4
        self.images = np.repeat(upsampled[:, None], 3, axis=1).astype(np.float32)
        self.labels = labels.astype(np.int64)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = torch.from_numpy(self.images[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def evaluate(net, loader):
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            predicted = net(images).argmax(dim=1)
            correct += int((predicted == labels).sum())
            total += len(labels)
    net.train()
    return correct / total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="train with ember.compile'd model")
    parser.add_argument("--min-accuracy", type=float, default=0.95,
                        help="exit with an error below this test accuracy (default 0.95)")
    args = parser.parse_args()

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    digits = load_digits()
    order = np.random.default_rng(args.seed).permutation(len(digits.target))
    split = int(0.8 * len(order))
    train_idx, test_idx = order[:split], order[split:]
    mean, std = digits.data[train_idx].mean() / 16.0, digits.data[train_idx].std() / 16.0
    transform = transforms.Normalize((mean,) * 3, (std,) * 3)
    train_set = Digits(digits.data[train_idx], digits.target[train_idx], transform)
    test_set = Digits(digits.data[test_idx], digits.target[test_idx], transform)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=256)

    net = Net()
    model = torch.compile(net) if args.compile else net
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)

    for epoch in range(1, args.epochs + 1):
        running = 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", leave=False)
        for images, labels in bar:
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            running += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        accuracy = evaluate(net, test_loader)
        print(f"epoch {epoch}: loss {running / len(train_loader):.4f}, test accuracy {accuracy:.2%}")

    accuracy = evaluate(net, test_loader)
    elapsed = time.perf_counter() - start
    print(f"test accuracy: {accuracy:.2%} on {len(test_set)} images, trained in {elapsed:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "digits_net.safetensors")
        torch.save(net.state_dict(), path)
        restored = Net()
        restored.load_state_dict(torch.load(path, weights_only=True))
        same = all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), restored.state_dict().values()))
        reloaded_accuracy = evaluate(restored, test_loader)
        print(f"saved and reloaded the state dict ({os.path.getsize(path)} bytes): "
              f"weights identical: {same}, test accuracy {reloaded_accuracy:.2%}")
    if accuracy < args.min_accuracy or not same or reloaded_accuracy != accuracy:
        raise SystemExit(f"training did not reach {args.min_accuracy:.0%} test accuracy or the reload differs")


if __name__ == "__main__":
    main()
