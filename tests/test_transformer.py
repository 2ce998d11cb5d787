"""nn.MultiheadAttention and the Transformer layers against a numpy reference written from
PyTorch's documented algorithm (F.multi_head_attention_forward), gradients against float64 finite
differences, and eager against ember.compile (forward and a training step)."""
import math
import warnings

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F

RNG = np.random.default_rng(0)


def reference_mha(module, query, key, value, key_padding_mask=None, attn_mask=None):
    """(L, N, E) inputs; returns (output (L, N, E), weights averaged over heads (N, L, S))."""
    heads, embed = module.num_heads, module.embed_dim
    head = embed // heads
    w = module.in_proj_weight.detach().numpy().astype(np.float64)
    b = module.in_proj_bias.detach().numpy().astype(np.float64)
    q, k, v = (x @ w[i * embed:(i + 1) * embed].T + b[i * embed:(i + 1) * embed]
               for i, x in enumerate((query, key, value)))
    length, batch, _ = q.shape
    source = k.shape[0]
    split = lambda t, n: t.reshape(n, batch, heads, head).transpose(1, 2, 0, 3)  # (N, H, n, D)
    q, k, v = split(q, length), split(k, source), split(v, source)
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head)
    if attn_mask is not None:
        scores = scores + (np.where(attn_mask, -np.inf, 0.0) if attn_mask.dtype == bool else attn_mask)
    if key_padding_mask is not None:
        scores = scores + np.where(key_padding_mask, -np.inf, 0.0)[:, None, None, :]
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ v).transpose(2, 0, 1, 3).reshape(length, batch, embed)
    out = out @ module.out_proj.weight.detach().numpy().T + module.out_proj.bias.detach().numpy()
    return out, weights.mean(1)


@pytest.mark.parametrize("masks", ["none", "padding", "float_mask", "bool_mask_and_padding"])
def test_multihead_attention_matches_the_reference(masks):
    ember.manual_seed(0)
    module = nn.MultiheadAttention(8, 2).eval()
    nn.init.normal_(module.in_proj_bias)
    query, key = RNG.standard_normal((4, 3, 8)), RNG.standard_normal((6, 3, 8))
    padding = np.zeros((3, 6), bool)
    padding[1, -2:] = True
    mask = RNG.standard_normal((4, 6)) if masks == "float_mask" else RNG.random((4, 6)) > 0.7
    mask[:, 0] = False if mask.dtype == bool else mask[:, 0]
    kwargs = {}
    if masks in ("padding", "bool_mask_and_padding"):
        kwargs["key_padding_mask"] = padding
    if masks in ("float_mask", "bool_mask_and_padding"):
        kwargs["attn_mask"] = mask
    want_out, want_weights = reference_mha(module, query, key, key, **kwargs)
    tensors = {k: ember.from_numpy(v.astype(np.float32) if v.dtype != bool else v) for k, v in kwargs.items()}
    out, weights = module(ember.from_numpy(query.astype(np.float32)), ember.from_numpy(key.astype(np.float32)),
                          ember.from_numpy(key.astype(np.float32)), **tensors)
    np.testing.assert_allclose(out.detach().numpy(), want_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weights.detach().numpy(), want_weights, rtol=1e-4, atol=1e-6)


def test_multihead_attention_layouts_options_and_parameters_are_torchs():
    ember.manual_seed(0)
    module = nn.MultiheadAttention(8, 2, batch_first=True, kdim=5, vdim=7, add_bias_kv=True, add_zero_attn=True)
    names = sorted(name for name, _ in module.named_parameters())
    assert names == ["bias_k", "bias_v", "in_proj_bias", "k_proj_weight", "out_proj.bias", "out_proj.weight",
                     "q_proj_weight", "v_proj_weight"]
    assert module.k_proj_weight.shape == (8, 5) and module.in_proj_bias.abs().sum().item() == 0
    out, weights = module(ember.randn(3, 4, 8), ember.randn(3, 6, 5), ember.randn(3, 6, 7),
                          average_attn_weights=False)
    assert out.shape == (3, 4, 8) and weights.shape == (3, 2, 4, 8)  # 6 keys + bias_k + zero attention
    packed = nn.MultiheadAttention(16, 4)
    bound = math.sqrt(6 / (16 + 48))  # xavier_uniform_ on the packed (48, 16) weight
    assert packed.in_proj_weight.shape == (48, 16) and packed.in_proj_weight.abs().max().item() <= bound
    out, weights = packed(ember.randn(5, 16), ember.randn(5, 16), ember.randn(5, 16), need_weights=False)
    assert out.shape == (5, 16) and weights is None  # unbatched


def test_multihead_attention_refuses_what_torch_refuses():
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"):
        nn.MultiheadAttention(10, 3)
    module = nn.MultiheadAttention(8, 2)
    x = ember.randn(4, 2, 8)
    with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
        module(x, x, x, is_causal=True)
    with pytest.raises(RuntimeError, match=r"The shape of the 2D attn_mask is \[3, 4\], but should be \(4, 4\)"):
        module(x, x, x, attn_mask=ember.zeros(3, 4))
    with pytest.raises(AssertionError, match="only bool and floating types of attn_mask are supported"):
        module(x, x, x, attn_mask=ember.zeros(4, 4, dtype=ember.int64))


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(4, 2, add_bias_kv=True)
        self.padding = ember.tensor([[False, False, True]])

    def forward(self, x):
        return self.attention(x, x, x, key_padding_mask=self.padding)[0]


def test_multihead_attention_gradients_match_finite_differences():
    from gradcheck import check_module
    ember.manual_seed(0)
    check_module(SelfAttention(), [RNG.standard_normal((3, 1, 4))])


def test_encoder_and_decoder_stacks_compile_to_eager_results_forward_and_training_step():
    ember.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nn.Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True, activation="gelu")
    src, tgt = ember.randn(2, 6, 8), ember.randn(2, 5, 8)
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    padding = ember.tensor([[False] * 6, [False] * 4 + [True] * 2])

    def forward(src, tgt):
        return model(src, tgt, tgt_mask=mask, src_key_padding_mask=padding, memory_key_padding_mask=padding)
    compiled = ember.compile(forward)
    for _ in range(2):
        np.testing.assert_allclose(compiled(src, tgt).detach().numpy(), forward(src, tgt).detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1)

    def step(src, tgt):
        optimizer.zero_grad()
        loss = forward(src, tgt).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss
    state = {k: v.clone() for k, v in model.state_dict().items()}
    eager_losses = [step(src, tgt).item() for _ in range(2)]
    model.load_state_dict(state)
    compiled_step = ember.compile(step)
    compiled_losses = [compiled_step(src, tgt).item() for _ in range(2)]
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-4)


def test_encoder_in_inference_zeroes_padded_positions_as_torchs_nested_tensor_path_does():
    ember.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2).eval()
    x = ember.randn(2, 5, 8)
    padding = ember.tensor([[False] * 5, [False, False, False, True, True]])
    with ember.no_grad():
        inference = encoder(x, src_key_padding_mask=padding)
    tracked = encoder(x, src_key_padding_mask=padding)  # (gradients needed: the dense path, as torch)
    assert inference[1, 3:].abs().max().item() == 0 and tracked[1, 3:].abs().max().item() > 0
    np.testing.assert_allclose(inference[:, :3].numpy(), tracked[:, :3].detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match="use_nested_tensor is False because encoder_layer.self_attn.batch_first"):
        nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 1)


def test_square_subsequent_mask_and_functional_form():
    mask = nn.Transformer.generate_square_subsequent_mask(3)
    assert mask.tolist() == [[0.0, float("-inf"), float("-inf")], [0.0, 0.0, float("-inf")], [0.0, 0.0, 0.0]]
    module = nn.MultiheadAttention(8, 2).eval()
    x = ember.randn(3, 2, 8)
    out, weights = F.multi_head_attention_forward(
        x, x, x, 8, 2, module.in_proj_weight, module.in_proj_bias, None, None, False, 0.0, module.out_proj.weight,
        module.out_proj.bias, training=False, attn_mask=mask, is_causal=True)
    expected = module(x, x, x, attn_mask=mask)[0]
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-6)
    assert np.allclose(np.triu(weights.detach().numpy()[0], 1), 0)  # causal: nothing above the diagonal
