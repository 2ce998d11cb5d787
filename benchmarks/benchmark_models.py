"""The models the benchmarks time, written once against a torch-like library (ember or torch),
so both frameworks run the same code: the seed Net (tests/zoo.py's SeedNet) and the MLP
784-512-512-10."""


def seed_net_class(lib):
    """The seed Net as a Module subclass of `lib.nn`."""
    nn, F = lib.nn, lib.nn.functional

    class SeedNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.view(-1, 16 * 5 * 5)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    return SeedNet


def mlp(lib):
    """The MLP 784-512-512-10 as `lib.nn.Sequential`."""
    nn = lib.nn
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
