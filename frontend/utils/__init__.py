"""`ember.utils`: utilities around training; `ember.utils.data` holds datasets and the DataLoader,
`ember.utils.checkpoint` activation checkpointing."""
from . import checkpoint, data  # noqa: F401
