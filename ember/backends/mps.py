"""`ember.backends.mps`: Apple's Metal backend is not part of ember."""


def is_available():
    return False


def is_built():
    return False
