"""Dropout layers: masks from ember's default generator, scaled by 1/(1-p); identity in eval."""
from . import functional as F
from .module import Module


class _DropoutNd(Module):
    function = None

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if p < 0 or p > 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input):
        return type(self).function(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Zero each element with probability p."""
    function = staticmethod(F.dropout)


class Dropout1d(_DropoutNd):
    """Zero whole channels of [N, C, L]."""
    function = staticmethod(F.dropout1d)


class Dropout2d(_DropoutNd):
    """Zero whole channels of [N, C, H, W]."""
    function = staticmethod(F.dropout2d)


class Dropout3d(_DropoutNd):
    """Zero whole channels of [N, C, D, H, W] or unbatched [C, D, H, W]."""
    function = staticmethod(F.dropout3d)


class AlphaDropout(_DropoutNd):
    function = staticmethod(F.alpha_dropout)
