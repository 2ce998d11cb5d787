"""A hand-written numpy training step for the MLP 784-512-512-10 of benchmarks/cpu.py (d): the
same-machine baseline for ember's compiled step (PyTorch's figure in shared/PERF.md comes from
another CPU).

Written for speed: every product is one BLAS call on the arrays as they lie (x @ W.T, g.T @ x),
relu masks applied in place, the bias gradients as column sums, and SGD momentum updated in
place in PyTorch's order. Weights come from an ember state_dict of nn.Sequential(Linear, ReLU,
Linear, ReLU, Linear) (names 0.*, 2.*, 4.*).
"""
import numpy as np

from numpy_lenet import as_float32_array, sgd_momentum_step

LAYERS = ("0", "2", "4")


class NumpyMLP:
    """Parameters as float32 arrays with forward, backward and SGD momentum for the MLP."""

    def __init__(self, state_dict, lr=0.01, momentum=0.9):
        names = [f"{layer}.{kind}" for layer in LAYERS for kind in ("weight", "bias")]
        missing = [name for name in names if name not in state_dict]
        if missing:
            raise KeyError(f"NumpyMLP: state_dict lacks {', '.join(missing)} (expected Linear layers 0, 2 and 4)")
        self.params = {name: as_float32_array(state_dict[name]) for name in names}
        self.lr, self.momentum = lr, momentum
        self.momentum_buffers = {name: np.zeros_like(p) for name, p in self.params.items()}

    def state_dict(self):
        return {name: p.copy() for name, p in self.params.items()}

    def loss_and_grads(self, inputs, targets):
        """Mean cross-entropy of the logits for inputs f32[N,784] and int targets [N], and each
        parameter's gradient (keyed like the state_dict)."""
        p = self.params
        batch = inputs.shape[0]
        activations = [inputs]
        for layer in LAYERS[:-1]:
            hidden = activations[-1] @ p[f"{layer}.weight"].T
            hidden += p[f"{layer}.bias"]
            np.maximum(hidden, 0, out=hidden)
            activations.append(hidden)
        logits = activations[-1] @ p["4.weight"].T
        logits += p["4.bias"]

        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        rows = np.arange(batch)
        loss = float(np.log(total[:, 0]).mean() - shifted[rows, targets].mean())

        grad = exp / total
        grad[rows, targets] -= 1
        grad /= batch
        grads = {}
        for index in range(len(LAYERS) - 1, -1, -1):
            layer, below = LAYERS[index], activations[index]
            grads[f"{layer}.weight"] = grad.T @ below
            grads[f"{layer}.bias"] = grad.sum(axis=0)
            if index:
                grad = grad @ p[f"{layer}.weight"]
                grad *= below > 0
        return loss, grads

    def sgd_step(self, grads):
        sgd_momentum_step(self.params, self.momentum_buffers, grads, self.lr, self.momentum)

    def train_step(self, inputs, targets):
        loss, grads = self.loss_and_grads(inputs, targets)
        self.sgd_step(grads)
        return loss
