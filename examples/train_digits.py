"""Train the seed document's Net on scikit-learn's bundled 8x8 digits, upsampled to 3x32x32.

Written as a PyTorch script would be, with `import ember as torch`: a Dataset with
transforms.Normalize, DataLoader, CrossEntropyLoss, SGD with momentum and a OneCycleLR
schedule (lr and momentum change after every batch), a tqdm bar per epoch, test accuracy,
then the trained state dict saved with ember.save and reloaded.

With --compile the whole training step (forward, loss, backward, optimizer step) is one
ember.compile'd function. The learning rate and momentum become inputs of its program after
their first change, and when the partial last batch of the first epoch arrives the batch dim
becomes dynamic: one program serves the full and the partial batches. So the step compiles
at most 3 times over all epochs (2 on one process); the run prints the count and the
dynamic dims.

    python examples/train_digits.py [--epochs 12] [--batch-size 32] [--compile] [--min-accuracy 0.95]

With --device cuda the model, its optimizer state and every batch live on the GPU (eager ops
run as GPU programs; --compile compiles the step for the GPU). Without a GPU,
EMBER_EMULATE_CUDA=1 runs the same on the CPU's emulation of one (slowly: e.g. --epochs 1
--train-size 128 --test-size 64 --min-accuracy 0).

Data-parallel on N processes (DistributedDataParallel, a DistributedSampler; each rank takes
batch-size / N samples of every batch, so the global batch is the single-process one):

    python -m ember.distributed.run --nproc 2 examples/train_digits.py --distributed
    mpirun -n 2 python examples/train_digits.py --distributed
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
from ember.utils.data.distributed import DistributedSampler


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


def evaluate(net, loader, device="cpu"):
    net.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            predicted = net(images.to(device)).argmax(dim=1).cpu()
            correct += int((predicted == labels).sum())
            total += len(labels)
    net.train()
    return correct / total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.03, help="OneCycleLR's peak learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="train with ember.compile'd model")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (see ember.cuda.is_available())")
    parser.add_argument("--train-size", type=int, default=None, help="train on the first N images only")
    parser.add_argument("--test-size", type=int, default=None, help="test on the first N images only")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over the ranks of an MPI job (launch with mpirun or ember.distributed.run)")
    parser.add_argument("--min-accuracy", type=float, default=0.95,
                        help="exit with an error below this test accuracy (default 0.95)")
    args = parser.parse_args()

    start = time.perf_counter()
    rank, world = 0, 1
    if args.distributed:
        import ember.distributed as dist
        dist.init_process_group(backend="mpi")
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.batch_size % world:
            raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of the {world} ranks")
    torch.manual_seed(args.seed)
    digits = load_digits()
    order = np.random.default_rng(args.seed).permutation(len(digits.target))
    split = int(0.8 * len(order))
    train_idx, test_idx = order[:split][:args.train_size], order[split:][:args.test_size]
    mean, std = digits.data[train_idx].mean() / 16.0, digits.data[train_idx].std() / 16.0
    transform = transforms.Normalize((mean,) * 3, (std,) * 3)
    train_set = Digits(digits.data[train_idx], digits.target[train_idx], transform)
    test_set = Digits(digits.data[test_idx], digits.target[test_idx], transform)
    sampler = DistributedSampler(train_set, seed=args.seed) if args.distributed else None
    train_loader = DataLoader(train_set, batch_size=args.batch_size // world, shuffle=sampler is None,
                              sampler=sampler)
    test_loader = DataLoader(test_set, batch_size=256)

    net = Net().to(args.device)
    model = nn.parallel.DistributedDataParallel(net) if args.distributed else net
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                   steps_per_epoch=len(train_loader))

    def train_step(images, labels):
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    step = torch.compile(train_step) if args.compile else train_step

    for epoch in range(1, args.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        running = 0.0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", leave=False, disable=rank != 0)
        for images, labels in bar:
            loss = step(images.to(args.device), labels.to(args.device))
            schedule.step()
            running += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        accuracy = evaluate(net, test_loader, args.device)
        if rank == 0:  # (every rank holds the same weights)
            print(f"epoch {epoch}: loss {running / len(train_loader):.4f} (rank 0's batches), "
                  f"test accuracy {accuracy:.2%}")

    accuracy = evaluate(net, test_loader, args.device)
    elapsed = time.perf_counter() - start
    where = f" on {world} ranks" if args.distributed else ""
    if rank == 0:
        print(f"test accuracy: {accuracy:.2%} on {len(test_set)} images, trained{where} on {args.device} "
              f"in {elapsed:.1f} s")
        if args.compile:
            report = step.report
            print(f"compiled training step: {len(report.programs)} programs compiled for {report.calls} calls "
                  f"({report.compiled_calls} ran compiled, {report.eager_calls} eagerly"
                  + (f"; fell back to eager: {report.fallback}" if report.fallback else "") + ")")
            for line in report.dynamic_dims:
                print(f"  dynamic: {line}")

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "digits_net.safetensors")
        torch.save(net.state_dict(), path)
        restored = Net()
        restored.load_state_dict(torch.load(path, weights_only=True))
        same = all(torch.equal(a.cpu(), b) for a, b in zip(net.state_dict().values(), restored.state_dict().values()))
        reloaded_accuracy = evaluate(restored, test_loader)
        if rank == 0:
            print(f"saved and reloaded the state dict ({os.path.getsize(path)} bytes): "
                  f"weights identical: {same}, test accuracy {reloaded_accuracy:.2%}")
    if accuracy < args.min_accuracy or not same or reloaded_accuracy != accuracy:
        raise SystemExit(f"training did not reach {args.min_accuracy:.0%} test accuracy or the reload differs")


if __name__ == "__main__":
    main()
