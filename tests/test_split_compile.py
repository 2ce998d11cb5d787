"""A big program's LLVM module compiled by two processes (compiler/cpu/split_compile.py): the
halves parse, link and run as the whole module does; a failed child leaves the work to the
parent; modules it cannot split safely are compiled whole."""
import os

import numpy as np
import pytest

import ember
from ember import nn
from ember.compiler.cpu import split_compile
from ember.compiler.cpu.target import CpuTarget


def _wide_model():
    """Enough distinct kernels to be worth splitting (split_compile.MIN_FUNCTIONS)."""
    layers = []
    for width in range(8, 8 + 4 * 14, 4):
        layers += [nn.Linear(width, width + 4), nn.GELU(), nn.LayerNorm(width + 4)]
    return nn.Sequential(*layers)


def _fresh_backend(folder):
    """The CPU backend with a cache of its own (a cache hit writes no module)."""
    from ember.compiler.driver import Driver
    return Driver(CpuTarget(), "llvm", cache_dir=str(folder))


def _module_text(model, x, folder):
    texts = []
    original = CpuTarget.link

    def capture(self, module, lowered, build, timer):
        texts.append(str(module))
        return original(self, module, lowered, build, timer)
    CpuTarget.link = capture
    try:
        ember.compile(model, backend=_fresh_backend(folder))(x)
    finally:
        CpuTarget.link = original
    return max(texts, key=len)


@pytest.fixture(scope="module")
def program_text(tmp_path_factory):
    ember.manual_seed(0)
    return _module_text(_wide_model(), ember.randn(3, 8), tmp_path_factory.mktemp("cache"))


def test_the_halves_hold_every_kernel_once_and_declare_the_other_halfs(program_text):
    own, side = split_compile.split_module(program_text, "ember_program")
    defined = lambda text: {line.split("@", 1)[1].split("(")[0] for line in text.split("\n")
                            if line.startswith("define ")}
    moved = {name for name in defined(side) if f"define hidden void @{name}(" in side}
    assert moved and not moved & defined(own)  # each moved kernel is defined in the side half only
    assert all(f"declare hidden void @{name}(" in own for name in moved)
    assert defined(own) | defined(side) == defined(program_text)
    target = CpuTarget()
    for text in (own, side):
        split_compile._optimized(target, text)  # parses and verifies


def test_a_split_compile_runs_as_the_whole_module(monkeypatch, tmp_path):
    calls = []
    original = split_compile.compile_in_two
    monkeypatch.setattr(split_compile, "compile_in_two",
                        lambda *a: calls.append(original(*a)) or calls[-1])
    ember.manual_seed(1)
    model = _wide_model()
    x = ember.randn(5, 8)
    got = ember.compile(model, backend=_fresh_backend(tmp_path))(x).detach().numpy()
    assert any(result is not None for result in calls)  # the program was compiled in two
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_a_failed_child_leaves_its_half_to_this_process(monkeypatch, program_text):
    parent = os.getpid()
    original = split_compile._optimized

    def failing_in_the_child(target, text):
        if os.getpid() != parent:
            os._exit(3)
        return original(target, text)
    monkeypatch.setattr(split_compile, "_optimized", failing_in_the_child)
    monkeypatch.setattr(split_compile, "_can_fork", lambda: True)
    from ember.compiler.stage_timer import StageTimer
    objects, _ = split_compile.compile_in_two(CpuTarget(), program_text, "ember_program", StageTimer())
    assert len(objects) == 2 and all(objects)


def test_without_fork_this_process_compiles_both_halves_to_the_same_objects(monkeypatch, program_text):
    from ember.compiler.stage_timer import StageTimer
    forked, _ = split_compile.compile_in_two(CpuTarget(), program_text, "ember_program", StageTimer())
    monkeypatch.setattr(split_compile, "_can_fork", lambda: False)
    here, _ = split_compile.compile_in_two(CpuTarget(), program_text, "ember_program", StageTimer())
    assert forked == here  # (the library's bytes do not depend on the machine's load)


def test_modules_it_cannot_split_safely_are_compiled_whole(program_text):
    assert split_compile.split_module('@"table" = internal constant [1 x i8] zeroinitializer\n' + program_text,
                                      "ember_program") is None
    small = "\n".join(line for line in program_text.split("\n")[:0])
    assert split_compile.split_module(small, "ember_program") is None


def test_a_helper_the_entry_and_one_kernel_call_is_in_both_halves():
    kernels = [f"define internal void @k{i}(ptr %p) {{\nentry:\n" + "".join(
        f"  %v{j} = add i32 {j}, {i}\n" for j in range(40 if i == 0 else 5)) + (
        "  call void @helper(ptr %p)\n" if i == 0 else "") + "  ret void\n}" for i in range(30)]
    helper = "define internal void @helper(ptr %p) {\nentry:\n  ret void\n}"
    entry = ("define i32 @main_entry(ptr %p) {\nentry:\n" + "".join(f"  call void @k{i}(ptr %p)\n" for i in range(30))
             + "  call void @helper(ptr %p)\n  ret i32 0\n}")
    halves = split_compile.split_module("\n\n".join(kernels + [helper, entry]) + "\n", "main_entry")
    assert halves is not None
    target = CpuTarget()
    for text in halves:
        assert "define internal void @helper(" in text
        split_compile._optimized(target, text)  # parses and verifies


def test_the_entry_is_left_unoptimised_and_weighs_a_fifth_in_the_split(program_text):
    # the entry runs once per call: LLVM's optimiser and code generator spent most of a big
    # compile on it, so it is `optnone`, and the split counts it at what it costs
    _, functions = split_compile._parse(program_text)
    entry = next(f for f in functions if f.name == "ember_program")
    assert " optnone " in entry.header + " " and " noinline " in entry.header + " "
    assert entry.size == sum(len(line) for line in entry.lines) // 5
    kernel = next(f for f in functions if f.name != "ember_program")
    assert kernel.size == sum(len(line) for line in kernel.lines)
