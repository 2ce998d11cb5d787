"""Today's model code after `import ember as torch`: a GPT-style language model (written by hand
with F.scaled_dot_product_attention, and again with nn.TransformerEncoderLayer) and a small
U-Net, each trained for several steps eagerly and compiled with equal losses; generation with
top-k and multinomial."""
import math
import os
import sys

import numpy as np
import pytest

import ember as torch
import ember.nn as nn
import ember.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from benchmark_models import gpt_class  # noqa: E402

GPT_CLASS = gpt_class(torch)


def GPT(vocab=32, block=16, dim=32, heads=4, layers=2, library_blocks=False):
    """The benchmarks' GPT (benchmarks/benchmark_models.py), small."""
    return GPT_CLASS(vocab, block, dim, heads, layers, library_blocks)


def train(model, step_fn, batches):
    return [step_fn(x, y).item() for x, y in batches]


def gpt_batches(count=4, batch=4, block=16, vocab=32, seed=0):
    rng = np.random.default_rng(seed)
    text = rng.integers(0, vocab, 2000)
    out = []
    for _ in range(count):
        starts = rng.integers(0, len(text) - block - 1, batch)
        x = np.stack([text[s:s + block] for s in starts])
        y = np.stack([text[s + 1:s + block + 1] for s in starts])
        out.append((torch.from_numpy(x), torch.from_numpy(y)))
    return out


@pytest.mark.parametrize("library_blocks", [False, True], ids=["hand_written", "transformer_encoder_layer"])
def test_gpt_trains_with_equal_losses_eagerly_and_compiled(library_blocks):
    batches = gpt_batches(count=1) * 5  # one batch, learnt by heart: the loss must fall
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = GPT(library_blocks=library_blocks)
        optimizer = model.optimizer()

        def step(x, y):
            loss = model(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            return loss
        losses[compiled] = train(model, torch.compile(step) if compiled else step, batches)
    assert abs(losses[False][0] - math.log(32)) < 0.1  # an untrained model predicts uniformly
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    assert losses[False][-1] < losses[False][0]


def test_the_benchmark_gpt_trains_20_steps_compiled_as_eagerly():
    # benchmarks/transformer.py's small GPT (4 layers, 4 heads, 128 wide, block 64, batch 8;
    # AdamW with decay groups, clipping): losses and final weights, compiled against eager
    from transformer import build
    results = {}
    for compiled in (False, True):
        model, _, step = build(torch, "small")
        run = torch.compile(step) if compiled else step
        batches = gpt_batches(count=2, batch=8, block=64, vocab=65, seed=1) * 10  # (two batches, learnt)
        losses = [run(x, y).item() for x, y in batches]
        results[compiled] = losses, [p.detach().numpy().copy() for p in model.parameters()]
    (eager_losses, eager_weights), (compiled_losses, compiled_weights) = results[False], results[True]
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=2e-4)
    assert eager_losses[-1] < eager_losses[0] - 0.1
    # (AdamW moves a weight whose gradient is rounding noise by up to lr = 3e-3 a step, in a
    # direction that noise picks: such weights may differ by a fraction of one step)
    for got, want in zip(compiled_weights, eager_weights):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=3e-4)


def test_gpt_generates_tokens_with_top_k_and_multinomial():
    torch.manual_seed(0)
    model = GPT().eval()
    start = torch.zeros((2, 1), dtype=torch.long)
    out = model.generate(start, 20, top_k=5)
    assert out.shape == (2, 21) and out.dtype == torch.int64
    assert int(out.min()) >= 0 and int(out.max()) < 32
    torch.manual_seed(1)
    greedy_like = model.generate(start, 5, temperature=1e-4, top_k=1)
    with torch.no_grad():
        first = model(start)[:, -1].argmax(-1)
    assert torch.equal(greedy_like[:, 1], first)


class UNet(nn.Module):
    """Two levels: conv blocks with InstanceNorm, a ConvTranspose2d and an Upsample path, skips."""

    def __init__(self, channels=3, width=8):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True),
                                 nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
        self.down1, self.down2 = block(channels, width), block(width, 2 * width)
        self.bottom = block(2 * width, 4 * width)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = block(4 * width, 2 * width)
        self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                 nn.Conv2d(2 * width, width, 1))
        self.dec1 = block(2 * width, width)
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        d1 = self.down1(x)
        d2 = self.down2(self.pool(d1))
        b = self.bottom(self.pool(d2))
        u2 = self.dec2(torch.cat([self.up2(b), d2], dim=1))
        u1 = self.dec1(torch.cat([self.up1(u2), d1], dim=1))
        return self.out(u1)


def test_unet_trains_with_equal_losses_eagerly_and_compiled():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    masks = torch.from_numpy((rng.random((4, 1, 16, 16)) > 0.5).astype(np.float32))
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = UNet()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

        def step(x, y):
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            optimizer.step()
            return loss
        run = torch.compile(step) if compiled else step
        losses[compiled] = [run(images, masks).item() for _ in range(4)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    assert losses[False][-1] < losses[False][0]
