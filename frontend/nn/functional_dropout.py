"""Channel-wise dropout: torch.nn.functional.dropout1d, dropout2d and dropout3d.

Each zeroes whole channels (one keep-draw per [n, c], scaled by 1/(1-p)) on every input rank
PyTorch accepts, with its errors and deprecation warnings; identity in eval. The draw is
functional's `_mask` (ember.rand: eager generator, or the `random` primitive while tracing).
"""
import warnings

from ember.frontend import math_ops as M
from ember.frontend import shape_ops as S
from .functional_conv import _shape_text, where_named


def _check_p(p, op):
    if p < 0.0 or p > 1.0:
        raise ValueError(f"{where_named(op)}: dropout probability has to be between 0 and 1, but got {p}")


def _feature_dropout(input, p, training, inplace, op, unbatched):
    """PyTorch's feature_dropout on `input` (or input.unsqueeze(0) when `unbatched`): one
    keep-draw per entry of the first two dims, broadcast over the rest."""
    x = S.unsqueeze(input, 0) if unbatched else input
    if p == 0.0 or not training or x.numel() == 0:
        return input if inplace or not unbatched else S.squeeze(x, 0)
    if x.ndim < 2:
        raise RuntimeError(f"{where_named(op)}: Feature dropout requires at least 2 dimensions in the input "
                           f"(input {_shape_text(input)})")
    from .functional import _mask  # (here: functional imports this module)
    out = M.mul(x, _mask(tuple(x.shape[:2]) + (1,) * (x.ndim - 2), p, x))
    if unbatched:
        out = S.squeeze(out, 0)
    return input._inplace(lambda current: out, op) if inplace else out


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of [N, C, L] (or unbatched [C, L]) with probability p."""
    _check_p(p, "dropout1d")
    if input.ndim not in (2, 3):
        raise RuntimeError(f"{where_named('dropout1d')}: Expected 2D or 3D input, but received a {input.ndim}D "
                           f"input. Note that dropout1d exists to provide channel-wise dropout on inputs with 1 "
                           f"spatial dimension, a channel dimension, and an optional batch dimension (i.e. 2D or 3D "
                           f"inputs). (input {_shape_text(input)})")
    return _feature_dropout(input, p, training, inplace, "dropout1d", unbatched=input.ndim == 2)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of [N, C, H, W]. As PyTorch 2.13: a 3-D input is taken as [N, C, L]
    (with a warning), and other ranks drop entries of their first two dims (with a warning)."""
    _check_p(p, "dropout2d")
    if input.ndim not in (3, 4):
        warnings.warn(f"dropout2d: Received a {input.ndim}-D input to dropout2d, which is deprecated and will result "
                      f"in an error in a future release. To retain the behavior and silence this warning, please use "
                      f"dropout instead. Note that dropout2d exists to provide channel-wise dropout on inputs with 2 "
                      f"spatial dimensions, a channel dimension, and an optional batch dimension (i.e. 3D or 4D "
                      f"inputs).", stacklevel=2)
    if input.ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout "
                      "behavior is desired - input is interpreted as shape (N, C, L), where C is the channel dim. "
                      "This behavior will change in a future release to interpret the input as one without a batch "
                      "dimension, i.e. shape (C, H, W). To maintain the 1D channel-wise dropout behavior, please "
                      "switch to using dropout1d instead.", stacklevel=2)
    return _feature_dropout(input, p, training, inplace, "dropout2d", unbatched=False)


def dropout3d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of [N, C, D, H, W] (or unbatched [C, D, H, W]); other ranks are
    taken as unbatched and drop entries of their first dim (with PyTorch's warning)."""
    _check_p(p, "dropout3d")
    if input.ndim not in (4, 5):
        warnings.warn(f"dropout3d: Received a {input.ndim}-D input to dropout3d, which is deprecated and will result "
                      f"in an error in a future release. To retain the behavior and silence this warning, please use "
                      f"dropout instead. Note that dropout3d exists to provide channel-wise dropout on inputs with 3 "
                      f"spatial dimensions, a channel dimension, and an optional batch dimension (i.e. 4D or 5D "
                      f"inputs).", stacklevel=2)
    return _feature_dropout(input, p, training, inplace, "dropout3d", unbatched=input.ndim != 5)
