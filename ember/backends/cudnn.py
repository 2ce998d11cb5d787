"""`ember.backends.cudnn`: flags scripts set for reproducibility, which ember's kernels are
already (recorded, no effect), and `allow_tf32`: GPU convolutions may run on TF32 tensor cores
(default True, as in PyTorch; see ember.backends.cuda)."""

deterministic = False
benchmark = False
enabled = True
allow_tf32 = True


def is_available():
    return False
