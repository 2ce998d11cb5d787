"""benchmarks/numpy_mlp.py against ember eager: the hand-written numpy MLP step (the
same-machine baseline of benchmarks/cpu.py (d)) must give ember's loss, gradients and
SGD-momentum updates for nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)."""
import sys
from pathlib import Path

import numpy as np
import pytest

import ember
from ember import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from numpy_mlp import NumpyMLP  # noqa: E402

LR, MOMENTUM = 0.05, 0.9


def test_two_training_steps_match_ember_loss_grads_and_parameters():
    net = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10))
    optimizer = ember.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    reference = NumpyMLP(net.state_dict(), lr=LR, momentum=MOMENTUM)
    rng = np.random.default_rng(0)
    for step in range(2):  # the second step exercises the momentum buffers
        inputs = rng.standard_normal((16, 784)).astype(np.float32)
        targets = rng.integers(0, 10, 16)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(ember.tensor(inputs)), ember.tensor(targets))
        loss.backward()
        numpy_loss, grads = reference.loss_and_grads(inputs, targets)
        assert numpy_loss == pytest.approx(loss.item(), rel=1e-5)
        for name, param in net.named_parameters():
            np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=2e-4, atol=1e-6, err_msg=name)
        optimizer.step()
        reference.sgd_step(grads)
        for name, value in net.state_dict().items():
            np.testing.assert_allclose(reference.params[name], value.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_state_dict_of_another_model_is_refused_by_name():
    with pytest.raises(KeyError, match="lacks 4.weight"):
        NumpyMLP({"0.weight": np.zeros((2, 2)), "0.bias": np.zeros(2), "2.weight": np.zeros((2, 2)),
                  "2.bias": np.zeros(2)})
