"""ember.nn.utils: gradient clipping, flat parameter vectors (torch.nn.utils) and, in rnn.py, padded and packed sequences."""
import math

from ember.frontend.autograd import no_grad
from ember.frontend.optim.array_updates import clip_by_total_norm
from ember.frontend.tensor import Tensor
from ember.frontend import math_ops as M
from ember.frontend import reductions as R
from ember.frontend import shape_ops as S
from . import rnn  # noqa: F401  (ember.nn.utils.rnn)
from . import parametrize, parametrizations  # noqa: F401  (ember.nn.utils.parametrize, .parametrizations)
from .weight_norm import remove_spectral_norm, remove_weight_norm, spectral_norm, weight_norm  # noqa: F401


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    parameters = list(parameters)
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale all gradients together so that their joint norm is at most max_norm; returns the
    total norm (before clipping) as a tensor."""
    grads = _grads(parameters)
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not grads:
        from ember.frontend.creation import tensor
        return tensor(0.0)
    if norm_type == 2.0:
        total = clip_by_total_norm(grads, max_norm, error_if_nonfinite)
        if total is not None:  # (eager, plain arrays: the same ops on numpy directly)
            return total
    with no_grad():
        if norm_type == math.inf:
            norms = [R.amax(M.abs(g)) for g in grads]
            total = norms[0] if len(norms) == 1 else R.amax(S.stack(norms))
        else:
            norms = [R.norm(g, norm_type) for g in grads]
            total = R.norm(S.stack(norms), norm_type)
        if error_if_nonfinite and not bool(M.isfinite(total)):
            raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is "
                               f"non-finite, so it cannot be clipped. To disable this error and scale the "
                               f"gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
        coefficient = M.clamp_max(M.div(max_norm, M.add(total, 1e-6)), 1.0)
        for g in grads:
            g.mul_(M.to_dtype(coefficient, g.dtype))
    return total


def clip_grad_value_(parameters, clip_value, foreach=None):
    clip_value = float(clip_value)
    with no_grad():
        for g in _grads(parameters):
            g.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters):
    """Concatenate the parameters, flattened, into one 1-D tensor."""
    return S.cat([S.reshape(p, (-1,)) for p in parameters])


def vector_to_parameters(vec, parameters):
    """Copy consecutive slices of `vec` into the parameters (in place)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__name__}")
    offset = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            p.copy_(S.reshape(S.narrow(vec, 0, offset, n), tuple(p.shape)))
            offset += n
