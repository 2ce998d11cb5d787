"""`ember.backends.cudnn`: flags scripts set for reproducibility; ember's kernels are
deterministic already, so they are recorded and have no effect."""

deterministic = False
benchmark = False
enabled = True


def is_available():
    return False
