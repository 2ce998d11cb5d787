"""What keeps compiling cheap (issue 16): identical kernels are one LLVM function, and a
training step whose first call creates optimizer state compiles one program, only once a second
trace has confirmed it. Checked by counting functions and programs, never by timing.
"""
import re

import numpy as np

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.compiler.backends import render_code
from ember.compiler.stage_rendering import render


class Blocks(nn.Module):
    """Four identical residual MLP blocks: the same kernels four times."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
                                    for _ in range(4))

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x


def test_identical_kernels_of_repeated_blocks_are_one_function():
    model = Blocks()

    def step(x):
        loss = model(x).square().mean()
        loss.backward()
        return loss

    graph = ember.trace(step, ember.randn(4, 8, 16))
    llvm = render_code(graph, "llvm")
    kernels = re.findall(r"^kernel (\w+) \(", render(graph, "kernels", "text"), re.M)
    functions = set(re.findall(r"define internal fastcc void @([\w.]+)\(", llvm))
    kernel_functions = {name for name in functions if "." not in name}  # (outlined parallel loops have dots)
    assert len(kernels) > 40
    # each block's layer norm, GELU and their backward kernels appear once, not four times
    assert len(kernel_functions) < len(kernels) / 2, (len(kernel_functions), len(kernels))


def test_the_shared_kernels_still_report_each_kernels_own_error():
    table = ember.arange(10.0)

    def lookups(i, j):
        return table[i] + table[j]  # two gather kernels of one structure, each with its own bounds check

    compiled = ember.compile(lookups)
    ok = compiled(ember.tensor([1, 2]), ember.tensor([3, 4]))
    np.testing.assert_array_equal(ok.numpy(), [4.0, 6.0])
    names = []
    for bad_first, bad_second in ((True, False), (False, True)):
        i = ember.tensor([1, 99] if bad_first else [1, 2])
        j = ember.tensor([3, 77] if bad_second else [3, 4])
        try:
            compiled(i, j)
        except IndexError as error:
            names.append(re.search(r"take \((\w+)\)", str(error)).group(1))
        else:
            raise AssertionError("an out-of-range index must raise")
    assert len(set(names)) == 2, names  # the first lookup's kernel, then the second's


def test_a_step_creating_optimizer_state_compiles_once_after_confirming():
    torch = ember
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # its state appears on the first step
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))

    def step(x, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    compiled = torch.compile(step)
    losses = [compiled(x, y).item() for _ in range(6)]
    report = compiled.report
    # call 1 (no state yet) traces, call 2 traces the step with state, call 3 confirms that trace
    # and compiles it; calls 4-6 run the one program
    assert len(report.programs) == 1 and report.compiled_calls == 3, str(report)
    assert report.fallback is None and losses[-1] < losses[0]


class _Terminal:
    """A stderr stand-in that says it is a terminal and keeps what was written."""

    def __init__(self):
        self.parts = []

    def isatty(self):
        return True

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass


def test_a_long_compile_shows_its_stage_on_a_terminal_and_clears_the_line(monkeypatch):
    import time
    from ember.compiler import compile_progress
    from ember.compiler.stage_timer import StageTimer
    monkeypatch.setattr(compile_progress, "DELAY", 0.05)
    monkeypatch.setattr(compile_progress, "INTERVAL", 0.02)
    timer, terminal = StageTimer(), _Terminal()
    with compile_progress.showing_progress("step.0", timer, terminal) as progress:
        progress.kernels = 12
        with timer("optimize"):
            time.sleep(0.2)
    text = "".join(terminal.parts)
    assert "ember: compiling step.0 (12 kernels): optimize" in text
    assert text.endswith("\r") and text.rstrip("\r").split("\r")[-1].strip() == ""  # the line is cleared
    quiet = _Terminal()
    with compile_progress.showing_progress("step.0", timer, quiet):
        pass  # a compile shorter than the delay shows nothing
    assert quiet.parts == []


def test_no_progress_line_off_a_terminal_or_with_ember_progress_0(monkeypatch):
    import io
    import time
    from ember import config
    from ember.compiler import compile_progress
    from ember.compiler.stage_timer import StageTimer
    monkeypatch.setattr(compile_progress, "DELAY", 0.0)
    pipe = io.StringIO()
    with compile_progress.showing_progress("step.0", StageTimer(), pipe) as progress:
        time.sleep(0.05)
    assert progress is None and pipe.getvalue() == ""
    monkeypatch.setattr(config, "PROGRESS", False)
    terminal = _Terminal()
    with compile_progress.showing_progress("step.0", StageTimer(), terminal):
        time.sleep(0.05)
    assert terminal.parts == []
