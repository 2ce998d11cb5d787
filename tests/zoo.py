"""The test zoo: small models and functions every stage is checked on (eager, interpreter,
passes, backends). Each entry builds (callable, example inputs) with fixed seeds."""
import ember
from ember import nn
import ember.nn.functional as F


class SeedNet(nn.Module):
    """The seed document's LeNet-style Net."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(ember.relu(self.conv1(x)))
        x = self.pool(ember.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = ember.relu(self.fc1(x))
        x = ember.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    def __init__(self, sizes=(20, 32, 16, 5)):
        super().__init__()
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, x):
        return self.net(x)


class ResidualBlock(nn.Module):
    def __init__(self, channels=4):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + x)


class SequenceModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(6, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.head(out[:, -1])


def softmax_cross_entropy(logits, target):
    probs = F.softmax(logits, dim=1)
    return F.cross_entropy(logits, target), probs


def inplace_slicing(x, y):
    z = x.clone()
    z[:, 1:3] = y[:, :2] * 2
    z[0] = z[0] + 1
    z.mul_(0.5)
    z += x.sum(dim=1, keepdim=True)
    w = z[:, ::2].relu().clone()  # relu saves its output: PyTorch refuses to backward through a write into it
    w[w > 0.5] = 0.5
    return w, z[1:, -1]


def build(name):
    """(callable, inputs) for a zoo entry; modules are in eval mode unless the name says train."""
    ember.manual_seed(0)
    if name == "mlp":
        return MLP(), (ember.randn(8, 20),)
    if name == "seed_net":
        return SeedNet(), (ember.randn(2, 3, 32, 32),)
    if name == "residual_train":
        return ResidualBlock().train(), (ember.randn(2, 4, 8, 8),)
    if name == "residual_eval":
        block = ResidualBlock()
        block.train()
        with ember.no_grad():
            block(ember.randn(4, 4, 8, 8))  # give the running statistics non-trivial values
        return block.eval(), (ember.randn(2, 4, 8, 8),)
    if name == "lstm":
        return SequenceModel(), (ember.randn(3, 5, 6),)
    if name == "softmax_cross_entropy":
        return softmax_cross_entropy, (ember.randn(6, 5), ember.tensor([0, 1, 4, 2, 3, 1]))
    if name == "inplace_slicing":
        return inplace_slicing, (ember.randn(4, 6), ember.randn(4, 5))
    raise KeyError(name)


NAMES = ["mlp", "seed_net", "residual_train", "residual_eval", "lstm", "softmax_cross_entropy", "inplace_slicing"]


def seed_net_training_step(batch=64):
    """The SeedNet's training step (zero_grad, forward, cross-entropy, backward, SGD with
    momentum), run once eagerly so the momentum buffers exist: (step, inputs, net, opt)."""
    ember.manual_seed(0)
    net = SeedNet()
    opt = ember.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss

    inputs = (ember.randn(batch, 3, 32, 32), ember.randint(0, 10, (batch,)))
    step(*inputs)
    return step, inputs, net, opt


def seed_net_training_step_graph(batch=64):
    """The traced graph of `seed_net_training_step`."""
    step, inputs, _, _ = seed_net_training_step(batch)
    return ember.trace(step, *inputs)
