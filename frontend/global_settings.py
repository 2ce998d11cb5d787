"""torch's process-wide switches: deterministic algorithms, float32 matmul precision and the
print options. ember's kernels are deterministic whatever the switch says and its float32
matmuls always compute in float32 (no TF32 or bfloat16 passes): the first two are recorded and
reported back as PyTorch does; the print options set frontend/printing.py's.
"""
import math
import warnings

from ember.backends import cuda as cuda_backend
from . import printing


class _Switches:
    """The recorded switches (one instance: these are process-wide in PyTorch too)."""

    def __init__(self):
        self.deterministic = False
        self.deterministic_warn_only = False


_SWITCHES = _Switches()
_DEBUG_MODES = ("default", "warn", "error")


def use_deterministic_algorithms(mode, *, warn_only=False):
    """Record whether only deterministic algorithms may run (ember's always are)."""
    if not isinstance(mode, bool):
        raise TypeError(f"_set_deterministic_algorithms(): argument 'mode' (position 1) must be bool, not "
                        f"{type(mode).__name__}")
    _SWITCHES.deterministic = mode
    _SWITCHES.deterministic_warn_only = bool(warn_only) and mode


def are_deterministic_algorithms_enabled():
    return _SWITCHES.deterministic


def is_deterministic_algorithms_warn_only_enabled():
    return _SWITCHES.deterministic_warn_only


def set_deterministic_debug_mode(debug_mode):
    """0 / "default": off; 1 / "warn": deterministic, warn only; 2 / "error": deterministic."""
    if isinstance(debug_mode, str):
        if debug_mode not in _DEBUG_MODES:
            raise RuntimeError(f"invalid value of debug_mode, expected one of `default`, `warn`, `error`, but got "
                               f"{debug_mode}")
        debug_mode = _DEBUG_MODES.index(debug_mode)
    elif debug_mode not in (0, 1, 2):
        raise RuntimeError(f"invalid value of debug_mode, expected 0, 1, or 2, but got {debug_mode}")
    use_deterministic_algorithms(debug_mode != 0, warn_only=debug_mode == 1)


def get_deterministic_debug_mode():
    if not _SWITCHES.deterministic:
        return 0
    return 1 if _SWITCHES.deterministic_warn_only else 2


def set_float32_matmul_precision(precision):
    """"highest", "high" or "medium". On the CPU ember's float32 matmuls compute in float32 at
    every setting; "high" and "medium" let GPU programs use TF32 tensor cores (the same switch
    as ember.backends.cuda.matmul.allow_tf32)."""
    if precision not in ("highest", "high", "medium"):
        warnings.warn(f"{precision} is not one of 'highest', 'high', or 'medium'; the current "
                      f"setFloat32MatmulPrecision call has no effect.", UserWarning, stacklevel=2)
        return
    cuda_backend._PRECISION[0] = precision


def get_float32_matmul_precision():
    return cuda_backend._PRECISION[0]


_PROFILES = {"default": dict(precision=4, threshold=1000, edgeitems=3, linewidth=80),
             "short": dict(precision=2, threshold=1000, edgeitems=2, linewidth=80),
             "full": dict(precision=4, threshold=math.inf, edgeitems=3, linewidth=80)}


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None, profile=None, sci_mode=None):
    """PyTorch's print options: a profile ("default", "short", "full") first, then each option
    given; options not given keep their values (sci_mode: None lets each tensor choose)."""
    options = dict(_PROFILES.get(profile, {}))
    options.update({name: value for name, value in (("precision", precision), ("threshold", threshold),
                                                    ("edgeitems", edgeitems), ("linewidth", linewidth))
                    if value is not None})
    for name, value in options.items():
        setattr(printing, name.upper(), value)
    printing.SCI_MODE = sci_mode
