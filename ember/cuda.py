"""`ember.cuda`: the queries PyTorch scripts make before choosing a device.

Eager ember tensors live in host memory: ember runs on an NVIDIA GPU only through compiled
programs (`ember.compile(fn, backend="ptx")`, which copies inputs to the device and results
back). Tensors cannot be moved to a device yet, so `is_available()` is False and scripts that
do `device = "cuda" if torch.cuda.is_available() else "cpu"` pick the CPU and keep working;
`ember.runtime.cuda_driver.cuda_available()` says whether the compiled path has a device.
"""


def is_available():
    return False


def device_count():
    return 0


def is_initialized():
    return False


def manual_seed(seed):
    """Accepted for compatibility: with no CUDA device there is nothing to seed."""


def manual_seed_all(seed):
    """Accepted for compatibility: with no CUDA device there is nothing to seed."""


def synchronize(device=None):
    """Nothing runs asynchronously on the CPU."""


def empty_cache():
    """No device memory is cached."""


def current_device():
    raise RuntimeError("ember.cuda.current_device(): no CUDA device is available (ember.cuda.is_available() is False)")


def get_device_name(device=None):
    raise RuntimeError("ember.cuda.get_device_name(): no CUDA device is available")
