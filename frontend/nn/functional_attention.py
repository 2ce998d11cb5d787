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
    weights = softmax(weights, dim=-1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, training=True)
    return matmul(weights, value)
