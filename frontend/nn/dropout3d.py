"""nn.Dropout3d: zero whole channels of [N, C, D, H, W] (or [C, D, H, W]) in training, scaled
by 1/(1-p); identity in eval. A layer over functional_dropout.dropout3d, as Dropout2d is over
dropout2d (frontend/nn/dropout.py)."""
from .dropout import _DropoutNd
from .functional_dropout import dropout3d


class Dropout3d(_DropoutNd):
    """Zero whole channels of [N, C, D, H, W] or unbatched [C, D, H, W]."""
    function = staticmethod(dropout3d)
