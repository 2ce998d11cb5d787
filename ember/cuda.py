"""`ember.cuda`: the device queries PyTorch scripts make, for ember's one CUDA device.

`is_available()` is true when tensors can live on a GPU here: an NVIDIA GPU with its driver,
or, with EMBER_EMULATE_CUDA=1, the CPU's emulation of one (the same programs, slowly; for
machines without a GPU). Then `device = "cuda" if torch.cuda.is_available() else "cpu"`
scripts put their tensors there: eager ops run as one-op GPU programs and ember.compile uses
the GPU target (frontend/device_tensors.py). Random draws for cuda tensors come from the
default generator (`ember.manual_seed`), so the seeding functions here seed that one.
"""


def _device():
    from ember.frontend.device_tensors import cuda_runtime_device
    return cuda_runtime_device()


def is_available():
    from ember.frontend.device_tensors import cuda_is_available
    return cuda_is_available()


def device_count():
    return 1 if is_available() else 0


def is_initialized():
    from ember.frontend.device_tensors import opened
    return opened()


def manual_seed(seed):
    """Seeds the default generator, which draws the values of cuda tensors too."""
    from ember.frontend.random import manual_seed as seed_default
    seed_default(seed)


manual_seed_all = manual_seed


def synchronize(device=None):
    """Wait for the device's queued work (ember's programs already wait before returning)."""
    if is_available():
        _device().synchronize()


def empty_cache():
    """Device memory goes back to the driver when its last tensor goes: nothing is cached."""


def current_device():
    _device()
    return 0


def get_device_name(device=None):
    return _device().name


def get_device_capability(device=None):
    capability = _device().compute_capability
    return int(capability[3:-1]), int(capability[-1])
