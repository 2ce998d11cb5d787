"""benchmarks/numpy_lenet.py against ember eager: the hand-written numpy seed Net must give
the same loss, gradients and SGD-momentum updates as ember's SeedNet, CrossEntropyLoss and
optim.SGD. Agreement validates both: they share no code beyond numpy's BLAS."""
import sys
from pathlib import Path

import numpy as np
import pytest

import ember
import zoo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from numpy_lenet import NumpyLeNet, col2im, im2col, max_pool_2x2  # noqa: E402

LR, MOMENTUM, BATCH = 0.05, 0.9, 6


def _ember_setup():
    net = zoo.SeedNet()
    optimizer = ember.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    return net, optimizer, ember.nn.CrossEntropyLoss()


def _batch(seed):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32)
    targets = rng.integers(0, 10, BATCH)
    return images, targets


def _assert_close(numpy_value, ember_value, what):
    scale = float(np.abs(ember_value).max()) or 1.0
    np.testing.assert_allclose(numpy_value, ember_value, rtol=2e-4, atol=2e-5 * scale, err_msg=what)


def test_two_training_steps_match_ember_loss_grads_and_parameters():
    net, optimizer, criterion = _ember_setup()
    reference = NumpyLeNet(net.state_dict(), lr=LR, momentum=MOMENTUM)
    for step in range(2):  # the second step exercises the momentum buffers
        images, targets = _batch(step)
        optimizer.zero_grad()
        loss = criterion(net(ember.tensor(images)), ember.tensor(targets))
        loss.backward()
        numpy_loss, grads = reference.loss_and_grads(images, targets)
        assert numpy_loss == pytest.approx(loss.item(), rel=1e-5)
        for name, param in net.named_parameters():
            assert grads[name].dtype == np.float32 and grads[name].shape == tuple(param.shape)
            _assert_close(grads[name], param.grad.numpy(), f"step {step}: gradient of {name}")
        before = reference.state_dict()
        optimizer.step()
        reference.sgd_step(grads)
        after = net.state_dict()
        for name, updated in reference.state_dict().items():
            assert not np.array_equal(updated, before[name]), f"step {step}: {name} did not move"
            _assert_close(updated - before[name], after[name].numpy() - before[name], f"step {step}: update of {name}")


def test_train_step_returns_the_loss_before_the_update():
    net, _, criterion = _ember_setup()
    reference = NumpyLeNet(net.state_dict())
    images, targets = _batch(3)
    expected = criterion(net(ember.tensor(images)), ember.tensor(targets)).item()
    assert reference.train_step(images, targets) == pytest.approx(expected, rel=1e-5)
    assert reference.loss_and_grads(images, targets)[0] < expected  # one step downhill on the same batch


def test_im2col_and_col2im_are_transposes():
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)  # C,H,W,N
    columns = rng.standard_normal((2 * 25, 5 * 4 * 3)).astype(np.float32)
    lhs = float((im2col(image) * columns).sum())
    rhs = float((image * col2im(columns, 2, 9, 8)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_max_pool_matches_a_window_loop():
    rng = np.random.default_rng(1)
    activation = rng.standard_normal((2, 4, 6, 3)).astype(np.float32)  # C,H,W,N
    expected = np.empty((2, 2, 3, 3), np.float32)
    for i in range(2):
        for j in range(3):
            expected[:, i, j] = activation[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].max(axis=(1, 2))
    np.testing.assert_array_equal(max_pool_2x2(activation), expected)


def test_state_dict_without_the_seed_net_parameters_is_refused():
    with pytest.raises(KeyError, match="conv2.weight"):
        NumpyLeNet({"conv1.weight": np.zeros((6, 3, 5, 5), np.float32)})
