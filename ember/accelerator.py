"""`ember.accelerator`: PyTorch 2.6's device-agnostic accelerator queries. ember's eager mode
runs on the CPU, which PyTorch does not count as an accelerator."""


def is_available():
    return False


def current_accelerator(check_available=False):
    return None


def device_count():
    return 0


def synchronize(device=None):
    """Nothing to wait for on the CPU."""
