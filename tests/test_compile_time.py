"""What keeps compiling cheap (issue 16): identical kernels are one LLVM function, and a
training step whose first call creates optimizer state compiles one program at its second
call, once a second trace has confirmed the first. Checked by counting functions and programs, never by timing.
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


def _training_run(make_optimizer, compiled, calls=6, optimizer_inside=False):
    """Losses and final weights of `calls` training steps of one seeded model, and the report."""
    torch = ember
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))

    def step(x, y):
        opt = make_optimizer(model.parameters()) if optimizer_inside else optimizer
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    run = torch.compile(step) if compiled else step
    losses = [run(x, y).item() for _ in range(calls)]
    return losses, [p.detach().numpy().copy() for p in model.parameters()], getattr(run, "report", None)


def _check_same_as_eager(make_optimizer, **options):
    eager_losses, eager_weights, _ = _training_run(make_optimizer, False, **options)
    losses, weights, report = _training_run(make_optimizer, True, **options)
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-5, atol=1e-6)
    for got, want in zip(weights, eager_weights):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return report


def test_a_step_creating_optimizer_state_traces_once_and_compiles_at_the_second_call(fresh_compile_cache):
    # the first step's AdamW state is made outside the traced program (as Dynamo runs PyTorch's
    # _init_group), so call 1's trace is already the steady program: call 2 confirms it and
    # compiles, calls 3-6 run it
    report = _check_same_as_eager(lambda params: ember.optim.AdamW(params, lr=1e-2))
    assert len(report.traces) == 1 and len(report.programs) == 1 and report.compiled_calls == 4, str(report)
    assert [name for name in report.programs[0].params if ".state[" in name], "state is read as named params"
    assert report.fallback is None


class _TorchStyleAdam(ember.optim.Optimizer):
    """An optimizer written PyTorch's way: its own step makes the state on the first call."""

    def __init__(self, params, lr=1e-2):
        super().__init__(params, dict(lr=lr))

    def step(self, closure=None):
        with ember.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    state = self.state[p]
                    if len(state) == 0:
                        state["m"] = ember.zeros_like(p)
                    state["m"].mul_(0.9).add_(p.grad, alpha=0.1)
                    p.add_(state["m"], alpha=-group["lr"])


def test_state_made_inside_a_traced_step_is_confirmed_before_it_compiles(fresh_compile_cache):
    # a step that makes its state in the program: call 2's trace differs (it reads that state),
    # call 3 confirms call 2's; compiling call 1's would remake zero state on every call
    report = _check_same_as_eager(_TorchStyleAdam)
    assert len(report.programs) == 1 and report.compiled_calls == 3, str(report)


def test_an_optimizer_made_inside_the_traced_call_keeps_its_state_in_the_program():
    # a new AdamW on every call: its state (fresh zeros) belongs to the program, not to an
    # optimizer that is gone by the next call
    report = _check_same_as_eager(lambda params: ember.optim.AdamW(params, lr=1e-2), optimizer_inside=True)
    assert report.compiled_calls >= 4 and report.fallback is None, str(report)


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
