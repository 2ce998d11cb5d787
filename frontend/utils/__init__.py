"""`ember.utils`: utilities around training; `ember.utils.data` holds datasets and the DataLoader."""
from . import data
