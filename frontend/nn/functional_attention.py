"""`F.scaled_dot_product_attention`, as PyTorch documents it, in ember's primitives (so eager
autograd and ember.compile both take it as it is): softmax(q @ k^T * scale + bias) @ v, with a
boolean or additive `attn_mask`, `is_causal` (a lower-triangular mask), dropout on the weights,
and `enable_gqa` (each key/value head serves query_heads / kv_heads query heads). Part of
ember.nn.functional."""
import math

from ember.frontend import math_ops as M
from ember.frontend import shape_ops as S
from ember.frontend.creation import ones
from ember.frontend.indexing import masked_fill
from ember.frontend.linalg import matmul
from ..low_precision import computes_in_float32
from .eager_attention import eager_attention


@computes_in_float32
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    from .functional import dropout, softmax
    if query.ndim < 2 or key.ndim < 2 or value.ndim < 2:
        raise RuntimeError(f"scaled_dot_product_attention: query, key and value need at least 2 dims (..., L, E); "
                           f"got {list(query.shape)}, {list(key.shape)}, {list(value.shape)}")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise RuntimeError(f"scaled_dot_product_attention: query {list(query.shape)} and key {list(key.shape)} "
                           f"must share the last dim, key and value {list(value.shape)} the sequence dim")
    if is_causal and attn_mask is not None:
        raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True")
    if enable_gqa and query.ndim >= 3:
        heads, kv_heads = query.shape[-3], key.shape[-3]
        if heads % kv_heads or heads % value.shape[-3]:
            raise RuntimeError(f"scaled_dot_product_attention: with enable_gqa the query's {heads} heads must be a "
                               f"multiple of the key's {kv_heads} and the value's {value.shape[-3]}")
        key = S.repeat_interleave(key, heads // kv_heads, dim=-3)
        value = S.repeat_interleave(value, heads // value.shape[-3], dim=-3)
    scale_factor = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if attn_mask is None and dropout_p == 0.0:
        fast = eager_attention(query, key, value, is_causal, scale_factor)  # (eager: one autograd node)
        if fast is not None:
            return fast
    weights = M.mul(matmul(query, S.transpose(key, -2, -1)), scale_factor)
    length, source = query.shape[-2], key.shape[-2]
    if is_causal:
        above_diagonal = M.logical_not(S.tril(ones(length, source)).bool())
        weights = masked_fill(weights, above_diagonal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype.name == "bool":
            weights = masked_fill(weights, M.logical_not(attn_mask), float("-inf"))
        else:
            weights = M.add(weights, attn_mask)
    if attn_mask is not None:
        # rows that may attend to nothing (every score -inf) give 0, not nan, as torch's safe
        # softmax: their scores become 0 before softmax, so no nan reaches the gradients either
        # (a causal mask alone always leaves each row its first key)
        masked = M.eq(weights.amax(dim=-1, keepdim=True), float("-inf"))
        weights = M.where(masked, 0.0, softmax(M.where(masked, 0.0, weights), dim=-1))
    else:
        weights = softmax(weights, dim=-1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, training=True)
    return matmul(weights, value)


def canonical_mask(mask, name, query_dtype, other=None, other_name=""):
    """A boolean mask (True: not allowed to attend) as an additive float mask (-inf there), or a
    float mask as it is; None stays None (torch's F._canonical_mask)."""
    if mask is None:
        return None
    if mask.dtype.name != "bool" and not mask.is_floating_point():
        raise AssertionError(f"only bool and floating types of {name} are supported")
    if other is not None and other.dtype != mask.dtype:
        import warnings
        warnings.warn(f"Support for mismatched {name} and {other_name} is deprecated. Use same type for both "
                      f"instead.")
    if mask.dtype.name == "bool":
        from ember.frontend.creation import zeros_like
        return masked_fill(zeros_like(mask, dtype=query_dtype), mask, float("-inf"))
    return mask


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
                                 bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
                                 training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
                                 v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                                 is_causal=False):
    """torch.nn.functional.multi_head_attention_forward: query (L, N, E) or unbatched (L, E), key
    and value (S, N, kdim/vdim); returns (output (L, N, E), weights (N, L, S) averaged over heads,
    (N, H, L, S) with average_attn_weights=False, or None without need_weights)."""
    from .functional import dropout, linear, pad, softmax
    batched = _check_attention_shapes(query, key, value, key_padding_mask, attn_mask, num_heads)
    if not batched:
        query, key, value = (S.unsqueeze(t, 1) for t in (query, key, value))
        if key_padding_mask is not None:
            key_padding_mask = S.unsqueeze(key_padding_mask, 0)
    length, batch, embed_dim = query.shape
    source = key.shape[0]
    if tuple(key.shape[:-1]) != tuple(value.shape[:-1]):
        raise AssertionError(f"key shape {tuple(key.shape)} does not match value shape {tuple(value.shape)}")
    if embed_dim != embed_dim_to_check:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim_to_check}, but got {embed_dim}")
    head_dim = embed_dim // num_heads
    if head_dim * num_heads != embed_dim:
        raise AssertionError(f"embed_dim {embed_dim} not divisible by num_heads {num_heads}")
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer module "
                           "method `generate_square_subsequent_mask` to create this mask.")
    key_padding_mask = canonical_mask(key_padding_mask, "key_padding_mask", query.dtype, attn_mask, "attn_mask")
    attn_mask = canonical_mask(attn_mask, "attn_mask", query.dtype)
    # the projections (one packed weight, or three when kdim/vdim differ from embed_dim)
    if use_separate_proj_weight:
        if q_proj_weight is None or k_proj_weight is None or v_proj_weight is None:
            raise AssertionError("use_separate_proj_weight is True but q_proj_weight, k_proj_weight or "
                                 "v_proj_weight is None")
        weights = (q_proj_weight, k_proj_weight, v_proj_weight)
    else:
        if in_proj_weight is None:
            raise AssertionError("use_separate_proj_weight is False but in_proj_weight is None")
        weights = S.chunk(in_proj_weight, 3)
    biases = S.chunk(in_proj_bias, 3) if in_proj_bias is not None else (None, None, None)
    q = linear(query, weights[0], biases[0])
    k = linear(key, weights[1], biases[1])
    v = linear(value, weights[2], biases[2])
    if attn_mask is not None:
        expected = [(length, source), (batch * num_heads, length, source)][attn_mask.ndim - 2] \
            if attn_mask.ndim in (2, 3) else None
        if expected is None:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.ndim} is not supported")
        if tuple(attn_mask.shape) != expected:
            raise RuntimeError(f"The shape of the {attn_mask.ndim}D attn_mask is {list(attn_mask.shape)}, but should "
                               f"be {expected}.")
        if attn_mask.ndim == 2:
            attn_mask = S.unsqueeze(attn_mask, 0)
    if bias_k is not None and bias_v is not None:
        if static_k is not None or static_v is not None:
            raise AssertionError("bias cannot be added to static key or value.")
        k = S.cat([k, S.repeat(bias_k, 1, batch, 1)])
        v = S.cat([v, S.repeat(bias_v, 1, batch, 1)])
        attn_mask = pad(attn_mask, (0, 1)) if attn_mask is not None else None
        key_padding_mask = pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
    elif (bias_k is None) != (bias_v is None):
        raise AssertionError("bias_k and bias_v must both be given or both be None")
    # heads: (N * H, L, D) as torch lays them out
    q = S.transpose(S.reshape(q, (length, batch * num_heads, head_dim)), 0, 1)
    k = S.transpose(S.reshape(k, (k.shape[0], batch * num_heads, head_dim)), 0, 1) if static_k is None else static_k
    v = S.transpose(S.reshape(v, (v.shape[0], batch * num_heads, head_dim)), 0, 1) if static_v is None else static_v
    if add_zero_attn:
        from ember.frontend.creation import zeros
        k = S.cat([k, zeros(batch * num_heads, 1, head_dim, dtype=k.dtype)], dim=1)
        v = S.cat([v, zeros(batch * num_heads, 1, head_dim, dtype=v.dtype)], dim=1)
        attn_mask = pad(attn_mask, (0, 1)) if attn_mask is not None else None
        key_padding_mask = pad(key_padding_mask, (0, 1)) if key_padding_mask is not None else None
    source = k.shape[1]
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (batch, source):
            raise AssertionError(f"expecting key_padding_mask shape of {(batch, source)}, but got "
                                 f"{tuple(key_padding_mask.shape)}")
        padding = S.reshape(S.expand(S.reshape(key_padding_mask, (batch, 1, 1, source)), batch, num_heads, 1, source),
                            (batch * num_heads, 1, source))
        attn_mask = padding if attn_mask is None else M.add(attn_mask, padding)
    if not training:
        dropout_p = 0.0
    scores = matmul(M.mul(q, math.sqrt(1.0 / head_dim)), S.transpose(k, -2, -1))
    if attn_mask is not None:
        scores = M.add(scores, attn_mask)
    weights = softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = dropout(weights, p=dropout_p)
    output = matmul(weights, v)  # (N * H, L, D)
    output = S.reshape(S.transpose(output, 0, 1), (length * batch, embed_dim))
    output = S.reshape(linear(output, out_proj_weight, out_proj_bias), (length, batch, embed_dim))
    if not need_weights:
        return (output if batched else S.squeeze(output, 1)), None
    weights = S.reshape(weights, (batch, num_heads, length, source))
    if average_attn_weights:
        weights = M.div(weights.sum(dim=1), num_heads)
    if not batched:
        return S.squeeze(output, 1), S.squeeze(weights, 0)
    return output, weights


def _check_attention_shapes(query, key, value, key_padding_mask, attn_mask, num_heads):
    """True for batched inputs (3-D), False for unbatched (2-D), as torch's _mha_shape_check."""
    if query.ndim == 3:
        if key.ndim != 3 or value.ndim != 3:
            raise AssertionError(f"For batched (3-D) `query`, expected `key` and `value` to be 3-D but found "
                                 f"{key.ndim}-D and {value.ndim}-D tensors respectively")
        if key_padding_mask is not None and key_padding_mask.ndim != 2:
            raise AssertionError(f"For batched (3-D) `query`, expected `key_padding_mask` to be `None` or 2-D but "
                                 f"found {key_padding_mask.ndim}-D tensor instead")
        if attn_mask is not None and attn_mask.ndim not in (2, 3):
            raise AssertionError(f"For batched (3-D) `query`, expected `attn_mask` to be `None`, 2-D or 3-D but "
                                 f"found {attn_mask.ndim}-D tensor instead")
        return True
    if query.ndim == 2:
        if key.ndim != 2 or value.ndim != 2:
            raise AssertionError(f"For unbatched (2-D) `query`, expected `key` and `value` to be 2-D but found "
                                 f"{key.ndim}-D and {value.ndim}-D tensors respectively")
        if key_padding_mask is not None and key_padding_mask.ndim != 1:
            raise AssertionError(f"For unbatched (2-D) `query`, expected `key_padding_mask` to be `None` or 1-D but "
                                 f"found {key_padding_mask.ndim}-D tensor instead")
        if attn_mask is not None:
            if attn_mask.ndim not in (2, 3):
                raise AssertionError(f"For unbatched (2-D) `query`, expected `attn_mask` to be `None`, 2-D or 3-D "
                                     f"but found {attn_mask.ndim}-D tensor instead")
            if attn_mask.ndim == 3 and tuple(attn_mask.shape) != (num_heads, query.shape[0], key.shape[0]):
                raise AssertionError(f"Expected `attn_mask` shape to be {(num_heads, query.shape[0], key.shape[0])} "
                                     f"but got {tuple(attn_mask.shape)}")
        return False
    raise AssertionError(f"query should be unbatched 2D or batched 3D tensor but received {query.ndim}-D query "
                         f"tensor")
