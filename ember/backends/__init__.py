"""`ember.backends`: PyTorch's backend switches that scripts query or set (mps, cudnn)."""
from . import mps, cudnn  # noqa: F401
