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


def gpt_class(lib):
    """A GPT-style language model as a Module subclass of `lib.nn`, written as PyTorch code is:
    token and position embeddings, pre-norm blocks with causal self-attention through
    F.scaled_dot_product_attention and a GELU (exact erf form) MLP, tied output weights;
    `optimizer()` is AdamW with decay and no-decay groups; `generate()` samples with top-k."""
    torch, nn, F = lib, lib.nn, lib.nn.functional

    class CausalSelfAttention(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.qkv, self.proj, self.heads = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), heads

        def forward(self, x):
            batch, length, dim = x.shape
            q, k, v = self.qkv(x).split(dim, dim=2)
            q, k, v = (t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).contiguous().view(batch, length, dim))

    class Block(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.ln1, self.attn, self.ln2 = nn.LayerNorm(dim), CausalSelfAttention(dim, heads), nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self, vocab=65, block=64, dim=128, heads=4, layers=4, library_blocks=False):
            super().__init__()
            self.block = block
            self.tokens, self.positions = nn.Embedding(vocab, dim), nn.Embedding(block, dim)
            if library_blocks:  # the same architecture from torch.nn's own layers
                self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0,
                                                                        activation="gelu", batch_first=True,
                                                                        norm_first=True) for _ in range(layers)])
            else:
                self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(layers)])
            self.library_blocks = library_blocks
            self.ln = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, vocab, bias=False)
            self.head.weight = self.tokens.weight  # tied output weights
            self.apply(self._init)

        @staticmethod
        def _init(module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

        def forward(self, idx, targets=None):
            batch, length = idx.shape
            x = self.tokens(idx) + self.positions(torch.arange(length, device=idx.device))
            mask = nn.Transformer.generate_square_subsequent_mask(length) if self.library_blocks else None
            for block in self.blocks:
                x = block(x, src_mask=mask, is_causal=True) if self.library_blocks else block(x)
            logits = self.head(self.ln(x))
            if targets is None:
                return logits
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

        def optimizer(self, lr=3e-3, weight_decay=0.1):
            decay = [p for _, p in self.named_parameters() if p.dim() >= 2]
            no_decay = [p for _, p in self.named_parameters() if p.dim() < 2]
            groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
            return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))

        @torch.no_grad()
        def generate(self, idx, new_tokens, temperature=1.0, top_k=None):
            for _ in range(new_tokens):
                logits = self(idx[:, -self.block:])[:, -1, :] / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("Inf")
                probs = F.softmax(logits, dim=-1)
                idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
            return idx

    return GPT
