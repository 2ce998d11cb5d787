"""`ember.backends`: PyTorch's backend switches that scripts query or set (mps, cudnn, cuda)."""
from . import mps, cudnn, cuda  # noqa: F401
