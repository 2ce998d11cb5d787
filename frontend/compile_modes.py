"""ember.compile(mode=...): torch.compile's modes, and what each does in ember (frontend/jit.py's
docstring of `compile` says it for users): "default" is ember's one way of compiling; the others
are accepted with a warning, as they change nothing here."""
import warnings


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_mode(mode, options):
    """A torch.compile mode accepted (warning once where it changes nothing) or refused."""
    if options is not None:
        raise RuntimeError("Either mode or options can be specified, but both can't be specified at the same time.")
    if mode not in COMPILE_MODES:
        raise RuntimeError(f"Unrecognized mode={mode}, should be one of: {', '.join(COMPILE_MODES)}")
    if mode != "default":
        what = ("ember already runs a compiled program's kernels in one call (what CUDA graphs buy PyTorch)"
                if mode == "reduce-overhead" else "ember's kernels have fixed tilings chosen for this machine")
        warnings.warn(f"ember.compile(mode={mode!r}) compiles as mode='default': {what}", UserWarning, stacklevel=3)
