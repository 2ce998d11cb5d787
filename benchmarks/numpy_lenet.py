"""A hand-written numpy training step for the seed Net (tests/zoo.py SeedNet): the baseline
that benchmarks/eager.py measures ember's eager mode against.

Written for speed the way a numpy expert would: activations live channels-first and
batch-last, [C,H,W,N], so each im2col copy, pooling max and col2im add runs over long
contiguous rows and the fully connected layers need no flatten copy; one matmul per
convolution; relu after pooling (max commutes with relu, so it touches a quarter of the
data); no Python loop over the batch. Weights come from an ember state_dict (torch layouts).
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

PARAMETER_NAMES = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
                   "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias")
KERNEL = 5


def as_float32_array(value):
    """An ember Tensor (or anything array-like) -> a fresh float32 numpy array."""
    if hasattr(value, "detach"):
        value = value.detach().numpy()
    return np.array(value, dtype=np.float32, copy=True)


def sgd_momentum_step(params, buffers, grads, lr, momentum):
    """In place, in PyTorch's order, for every name: buf = momentum * buf + grad; p -= lr * buf."""
    for name, param in params.items():
        buffer = buffers[name]
        buffer *= momentum
        buffer += grads[name]
        param -= lr * buffer


def im2col(activation):
    """[C,H,W,N] -> [C*K*K, OH*OW*N]: one row per weight tap, in the weight's (C,KH,KW) order."""
    channels = activation.shape[0]
    windows = sliding_window_view(activation, (KERNEL, KERNEL), axis=(1, 2))  # C,OH,OW,N,KH,KW
    return windows.transpose(0, 4, 5, 1, 2, 3).reshape(channels * KERNEL * KERNEL, -1)


def col2im(columns, channels, height, width):
    """The transpose of im2col: add each tap's [OH,OW,N] block back where its window read it."""
    out_h, out_w = height - KERNEL + 1, width - KERNEL + 1
    taps = columns.reshape(channels, KERNEL, KERNEL, out_h, out_w, -1)
    image = np.zeros((channels, height, width, taps.shape[-1]), dtype=columns.dtype)
    for i in range(KERNEL):
        for j in range(KERNEL):
            image[:, i:i + out_h, j:j + out_w] += taps[:, i, j]
    return image


def max_pool_2x2(activation):
    """[C,H,W,N] -> [C,H/2,W/2,N] by two pairwise maxima over reshaped views."""
    channels, height, width, batch = activation.shape
    pairs = activation.reshape(channels, height // 2, 2, width // 2, 2, batch)
    rows = np.maximum(pairs[:, :, 0], pairs[:, :, 1])  # C,H/2,W/2,2,N
    return np.maximum(rows[:, :, :, 0], rows[:, :, :, 1])


def max_pool_2x2_backward(grad_pooled, activation, pooled):
    """Route each window's gradient to the element(s) equal to its max. Ties only happen in
    practice where the pooled value is <= 0, and there the relu that follows pooling has
    already zeroed the gradient."""
    channels, height, width, batch = activation.shape
    pairs = activation.reshape(channels, height // 2, 2, width // 2, 2, batch)
    grad = (pairs == pooled[:, :, None, :, None, :]).astype(activation.dtype)
    grad *= grad_pooled[:, :, None, :, None, :]
    return grad.reshape(channels, height * width * batch)


class NumpyLeNet:
    """The seed Net's parameters as float32 arrays, with a forward+backward and an SGD
    momentum step (PyTorch's formula: buf = momentum * buf + grad; p -= lr * buf)."""

    def __init__(self, state_dict, lr=0.01, momentum=0.9):
        missing = [name for name in PARAMETER_NAMES if name not in state_dict]
        if missing:
            raise KeyError(f"NumpyLeNet: state_dict lacks {', '.join(missing)} (expected the seed Net's)")
        self.params = {name: as_float32_array(state_dict[name]) for name in PARAMETER_NAMES}
        self.lr = lr
        self.momentum = momentum
        # a zero buffer gives PyTorch's first step exactly: 0 * momentum + grad == grad
        self.momentum_buffers = {name: np.zeros_like(p) for name, p in self.params.items()}

    def state_dict(self):
        return {name: p.copy() for name, p in self.params.items()}

    def loss_and_grads(self, images, targets):
        """Mean cross-entropy of images f32[N,3,32,32] against int targets [N], and the
        gradient of every parameter (a dict keyed like the state_dict)."""
        p = self.params
        batch = images.shape[0]
        conv1_w = p["conv1.weight"].reshape(6, -1)
        conv2_w = p["conv2.weight"].reshape(16, -1)

        x = np.ascontiguousarray(images.transpose(1, 2, 3, 0), dtype=np.float32)  # 3,32,32,N
        cols1 = im2col(x)  # 75, 28*28*N
        z1 = conv1_w @ cols1
        z1 += p["conv1.bias"][:, None]
        z1 = z1.reshape(6, 28, 28, batch)
        a1 = max_pool_2x2(z1)
        np.maximum(a1, 0, out=a1)  # 6,14,14,N

        cols2 = im2col(a1)  # 150, 10*10*N
        z2 = conv2_w @ cols2
        z2 += p["conv2.bias"][:, None]
        z2 = z2.reshape(16, 10, 10, batch)
        a2 = max_pool_2x2(z2)
        np.maximum(a2, 0, out=a2)  # 16,5,5,N
        flat = a2.reshape(400, batch)  # features x batch: torch's (C,H,W) flatten order

        h1 = p["fc1.weight"] @ flat
        h1 += p["fc1.bias"][:, None]
        np.maximum(h1, 0, out=h1)
        h2 = p["fc2.weight"] @ h1
        h2 += p["fc2.bias"][:, None]
        np.maximum(h2, 0, out=h2)
        logits = p["fc3.weight"] @ h2
        logits += p["fc3.bias"][:, None]  # 10,N

        shifted = logits - logits.max(axis=0, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=0, keepdims=True)
        columns = np.arange(batch)
        loss = float(np.log(total[0]).mean() - shifted[targets, columns].mean())

        d_logits = exp / total
        d_logits[targets, columns] -= 1
        d_logits /= batch
        grads = {"fc3.weight": d_logits @ h2.T, "fc3.bias": d_logits.sum(axis=1)}
        d_h2 = p["fc3.weight"].T @ d_logits
        d_h2 *= h2 > 0
        grads["fc2.weight"], grads["fc2.bias"] = d_h2 @ h1.T, d_h2.sum(axis=1)
        d_h1 = p["fc2.weight"].T @ d_h2
        d_h1 *= h1 > 0
        grads["fc1.weight"], grads["fc1.bias"] = d_h1 @ flat.T, d_h1.sum(axis=1)
        d_a2 = (p["fc1.weight"].T @ d_h1).reshape(a2.shape)

        d_a2 *= a2 > 0
        d_z2 = max_pool_2x2_backward(d_a2, z2, a2)  # 16, 10*10*N
        grads["conv2.weight"] = (d_z2 @ cols2.T).reshape(p["conv2.weight"].shape)
        grads["conv2.bias"] = d_z2.sum(axis=1)
        d_a1 = col2im(conv2_w.T @ d_z2, 6, 14, 14)

        d_a1 *= a1 > 0
        d_z1 = max_pool_2x2_backward(d_a1, z1, a1)  # 6, 28*28*N
        grads["conv1.weight"] = (d_z1 @ cols1.T).reshape(p["conv1.weight"].shape)
        grads["conv1.bias"] = d_z1.sum(axis=1)
        return loss, grads

    def sgd_step(self, grads):
        sgd_momentum_step(self.params, self.momentum_buffers, grads, self.lr, self.momentum)

    def train_step(self, images, targets):
        """One forward, backward and SGD momentum update; returns the loss before the update."""
        loss, grads = self.loss_and_grads(images, targets)
        self.sgd_step(grads)
        return loss
