"""`ember.export`: the name PyTorch gives `torch.export`, kept for a compatible module.

ember has no `torch.export.export` (an ExportedProgram) yet; scripts written for PyTorch that
call it get this error, which points at what ember has: `ember.export_library`, a compiled
model as a C library, and `ember.compile`.
"""


class ExportedProgramUnavailable(NotImplementedError):
    """torch.export's API is not part of ember yet."""


def _unavailable(name):
    def function(*args, **kwargs):
        raise ExportedProgramUnavailable(
            f"ember.export.{name}: ember has no torch.export (ExportedProgram) yet. To run a model without Python, "
            f"use ember.export_library(model, example_inputs, 'out_dir') (a C library); to run it faster from "
            f"Python, ember.compile(model)")
    function.__name__ = name
    return function


export = _unavailable("export")
load = _unavailable("load")
save = _unavailable("save")
Dim = _unavailable("Dim")

