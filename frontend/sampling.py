"""`torch.multinomial`: indices drawn from rows of non-negative weights, with or without
replacement, composed of tensor ops (so it traces: the uniform draws become the `random`
primitive, fed a fresh seed per call, as ember.rand does).

With replacement each draw inverts the row's cumulative distribution; without replacement the
k smallest of the exponential races -log(u) / w win (the same distribution as drawing one by one
and removing what was drawn). The values of ember's draws are not torch's: the generators differ.
"""
import numpy as np

from ember import dtypes
from . import math_ops as M
from . import reductions as R
from . import shape_ops as S
from .creation import rand
from .tensor import Tensor


def multinomial(input, num_samples, replacement=False, *, generator=None):
    if not isinstance(input, Tensor):
        raise TypeError(f"multinomial(): argument 'input' must be Tensor, not {type(input).__name__}")
    if input.ndim not in (1, 2):
        raise RuntimeError("prob_dist must be 1 or 2 dim")
    if not input.is_floating_point():
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got: "
                           f"{dtypes.as_dtype(input.dtype).name.capitalize()}")
    if num_samples <= 0:
        raise RuntimeError("cannot sample n_sample <= 0 samples")
    categories = input.shape[-1]
    if not replacement and num_samples > categories:
        raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without replacement")
    values = np.asarray(input.detach()._data)  # checks on the values, as torch makes them
    if not np.isfinite(values).all() or (values < 0).any():
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    if (values.reshape(-1, categories).sum(-1) <= 0).any():
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
    rows = S.reshape(input.detach(), (-1, categories))
    count = rows.shape[0]
    if replacement:
        cdf = R.cumsum(M.div(rows, R.sum(rows, dim=-1, keepdim=True)), dim=-1)
        draws = rand(count, num_samples, generator=generator, dtype=rows.dtype)
        below = M.lt(S.unsqueeze(cdf, 1), S.unsqueeze(draws, -1))  # cdf[j] < u: j is not chosen yet
        chosen = M.clamp(R.sum(M.to_dtype(below, dtypes.int64), dim=-1), max=categories - 1)
        # (weight-0 categories whose cdf equals the previous one are never chosen: below counts them)
    else:
        draws = rand(count, categories, generator=generator, dtype=rows.dtype)
        races = M.div(M.neg(M.log(M.sub(1.0, draws))), rows)  # exponential, infinite where the weight is 0
        from .sorting import topk
        chosen = topk(races, num_samples, dim=-1, largest=False, sorted=True)[1]
    return S.reshape(chosen, tuple(input.shape[:-1]) + (num_samples,))
