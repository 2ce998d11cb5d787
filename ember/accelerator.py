"""`ember.accelerator`: PyTorch 2.6's device-agnostic accelerator queries. The CPU does not
count as an accelerator; a CUDA device does when ember.cuda.is_available()."""


def is_available():
    from . import cuda
    return cuda.is_available()


def current_accelerator(check_available=False):
    from ember.frontend.tensor import Device
    return Device("cuda") if is_available() else None


def device_count():
    return 1 if is_available() else 0


def synchronize(device=None):
    """Wait for the accelerator's queued work (nothing queued on the CPU)."""
    from . import cuda
    cuda.synchronize(device)
