"""IR analysis for people: EMBER_DUMP from every path, every stage in every format, training
steps and memory plans drawn to be read, provenance from model lines to kernels and code,
and the HTML compile report checked in a real (headless) Chromium."""
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from contextlib import redirect_stderr

import numpy as np
import pytest

import ember
from ember.compiler import stage_rendering
from ember.compiler.stage_rendering import CODE_STAGES, FORMATS, StageFormatError, render
from ember.passes.pipeline import run_passes, stage_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_NET = os.path.join(ROOT, "examples", "seed_net.py")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo import SeedNet  # noqa: E402

CONV1_LINE = next(i for i, line in enumerate(open(os.path.join(os.path.dirname(__file__), "zoo.py")), 1)
                  if "self.pool(ember.relu(self.conv1(x)))" in line)


def training_step_graph(batch=2):
    ember.manual_seed(0)
    net = SeedNet()
    optimizer = ember.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = ember.randn(batch, 3, 32, 32), ember.randint(0, 10, (batch,))

    def train_step(x, y):
        optimizer.zero_grad()
        loss = ember.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss
    train_step(x, y)
    return ember.trace(train_step, x, y)


@pytest.fixture(scope="module")
def step_graph():
    return training_step_graph()


def run_cli(*args, env=None, cwd=None):
    done = subprocess.run([sys.executable, "-m", "ember", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)
    return done


# ----------------------------------------------------------------------------- EMBER_DUMP

def _dumped(folder):
    return sorted(os.listdir(folder))


EXPECTED_FILES = {f"{k}_{stage}.{ext}" for k, stage in enumerate(stage_names()) for ext in ("txt", "dot")} | {
    f"{k}_{stage}.diff" for k, stage in enumerate(stage_names()) if k} | {
    f"{len(stage_names())}_kernels.txt", f"{len(stage_names())}_memory_plan.txt",
    f"{len(stage_names())}_memory_plan.svg",
    f"{len(stage_names()) + 1}_llvm.ll", f"{len(stage_names()) + 2}_asm.s"}


@pytest.mark.parametrize("command", ["dump", "explain", "report"])
def test_ember_dump_writes_every_stage_kernels_plan_and_code_from_the_cli(tmp_path, command):
    env = dict(os.environ, EMBER_DUMP=str(tmp_path / "dumps"), EMBER_CACHE_DIR=str(tmp_path / "cache"))
    extra = ["-o", str(tmp_path / "report.html")] if command == "report" else []
    done = run_cli(command, f"{SEED_NET}:Net", "--input", "1x3x32x32", *extra, env=env)
    assert done.returncode == 0, done.stderr
    folders = os.listdir(tmp_path / "dumps")
    assert folders, "nothing dumped"
    files = set(_dumped(tmp_path / "dumps" / folders[0]))
    assert EXPECTED_FILES <= files, EXPECTED_FILES - files
    assert not [f for f in files if ".tmp" in f]  # (written atomically)
    folder = tmp_path / "dumps" / folders[0]
    assert "seed_net.py:15 (conv1" in (folder / f"{len(stage_names())}_kernels.txt").read_text()
    assert "; kernel conv2d_bias_relu_1x6x28x28 from: seed_net.py:15 (conv1" in (
        folder / f"{len(stage_names()) + 1}_llvm.ll").read_text()


def test_ember_dump_from_compile_keeps_each_traced_program(tmp_path, monkeypatch):
    from ember import config
    monkeypatch.setattr(config, "DUMP_DIR", str(tmp_path))
    compiled = ember.compile(SeedNet())
    with ember.no_grad():
        compiled(ember.randn(1, 3, 32, 32))
        compiled(ember.randn(2, 3, 32, 32))  # another batch: another program, another folder
    assert sorted(os.listdir(tmp_path)) == ["SeedNet.0", "SeedNet.0-2"]
    for folder in os.listdir(tmp_path):
        assert EXPECTED_FILES <= set(os.listdir(tmp_path / folder))
    assert "f32[2,3,32,32]" in (tmp_path / "SeedNet.0-2" / "0_traced.txt").read_text()


def test_an_unwritable_ember_dump_warns_and_compiling_goes_on(tmp_path, monkeypatch):
    from ember import config
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setattr(config, "DUMP_DIR", str(not_a_folder))
    compiled = ember.compile(lambda x: x * 2)
    with pytest.warns(UserWarning, match=r"EMBER_DUMP=.*file: cannot write the dumps there"):
        for _ in range(2):
            assert compiled(ember.ones(2)).tolist() == [2.0, 2.0]


# ----------------------------------------------------------------------------- every stage x format

@pytest.mark.parametrize("stage", stage_names() + CODE_STAGES)
def test_every_stage_in_every_format(step_graph, stage):
    backend = "ptx" if stage in ("ptx", "sass-check") else "llvm"  # (the GPU target's code stages)
    if stage == "sass-check" and shutil.which("ptxas") is None:
        pytest.skip("ptxas (CUDA toolkit) is not on PATH")
    for fmt in FORMATS:
        if stage in ("llvm", "asm", "ptx", "sass-check") and fmt in ("dot", "graphml", "svg"):
            with pytest.raises(StageFormatError, match=f"--stage {stage} is code"):
                render(step_graph, stage, fmt, backend=backend)
            continue
        text = render(step_graph, stage, fmt, backend=backend)
        if fmt == "json":
            data = json.loads(text)
            assert data["stage"] == stage
            if stage not in CODE_STAGES:
                from ember.ir import Graph
                Graph.from_json(text).verify()
        elif fmt == "dot":
            assert text.startswith("digraph") and text.rstrip().endswith("}")
        elif fmt == "graphml":
            assert "<graphml" in text
        elif fmt == "svg":
            assert "<svg" in text and text.rstrip().endswith("</svg>")
        else:
            assert text.strip()
    if stage in ("fused", "planned"):
        data = json.loads(render(step_graph, stage, "json"))
        assert data["kernels"] and all("model_lines" in k for k in data["kernels"])
        assert ("memory_plan" in data) == (stage == "planned")


def test_svg_without_graphviz_says_how_to_install_it_and_the_memory_chart_needs_nothing(step_graph, monkeypatch):
    monkeypatch.setattr(stage_rendering.shutil, "which", lambda name: None)
    with pytest.raises(StageFormatError, match=r"needs Graphviz's `dot` program.*apt-get install graphviz"):
        render(step_graph, "fused", "svg")
    assert render(step_graph, "planned", "svg").startswith("<svg")


def test_a_training_step_is_drawn_in_phase_clusters_with_one_box_per_kernel(step_graph):
    dot = render(step_graph, "fused", "dot")
    for cluster in ("cluster_parameters", "cluster_forward", "cluster_backward", "cluster_update", "cluster_written"):
        assert f"subgraph {cluster}" in dot, cluster
    assert "concentrate=true" in dot and "rankdir=LR" in dot
    stages = run_passes(step_graph, stop_after="fused")
    boxes = re.findall(r"^\s+k(\d+) \[label=", dot, re.M)
    assert len(boxes) == stages.fusion.kernel_count  # one box per kernel, no per-op nodes inside them
    assert re.search(rf'k0 \[label="g0 conv2d_bias_relu_2x6x28x28\\nzoo.py:{CONV1_LINE} \(conv1', dot)
    assert "net.fc1.weight <-" in dot and "net.fc1.weight.grad <-" in dot  # what is written back, on the right
    forward = render(ember.trace(lambda x: ember.relu(x) * 2, ember.randn(3)), "fused", "dot")
    assert "cluster_forward" not in forward  # (a forward graph keeps its kernel clusters)


def test_the_memory_chart_has_one_rectangle_per_buffer_and_marks_the_lower_bound(step_graph):
    stages = run_passes(step_graph)
    svg = render(step_graph, "planned", "svg")
    assert svg.count('class="buffer"') == len(stages.plan.buffers) > 10
    assert 'class="lower-bound"' in svg and f"lower bound {stages.plan.lower_bound_bytes} bytes" in svg
    node, buffer = next(iter(stages.plan.buffers.items()))
    assert f'data-node="{node}"' in svg and f"{buffer.nbytes} bytes at offset {buffer.offset}" in svg


# ----------------------------------------------------------------------------- provenance

def test_a_kernel_points_at_the_model_line_it_came_from(step_graph):
    where = f"zoo.py:{CONV1_LINE} (conv1"
    assert f"# conv1 (zoo.py:{CONV1_LINE})" in str(step_graph)
    kernels = render(step_graph, "kernels", "text")
    assert re.search(rf"kernel conv2d_bias_relu_2x6x28x28 \(contraction\).*\n  # from: {re.escape(where)}", kernels)
    assert f"; kernel conv2d_bias_relu_2x6x28x28 from: {where}" in render(step_graph, "llvm", "text")
    asm = render(step_graph, "asm", "text")
    assert f"# kernel conv2d_bias_relu_2x6x28x28 from: {where}" in asm
    # every instruction carries a debug location: the kernel's model line (file base name, line)
    llvm = render(step_graph, "llvm", "text")
    zoo_file = re.search(r'!(\d+) = !DIFile\(filename: "zoo.py"', llvm).group(1)
    assert re.search(rf'DISubprogram\(name: "conv2d_bias_relu_2x6x28x28".*file: !{zoo_file}, line: {CONV1_LINE},',
                     llvm)
    body = llvm.split('@conv2d_bias_relu_2x6x28x28(')[1].split("\n}\n")[0]
    instructions = [line for line in body.splitlines()[1:] if line.startswith("  ") and "=" in line]
    # (every instruction as emitted; LLVM's optimiser gives some instructions it creates none)
    carrying = sum("!dbg" in line for line in instructions) / len(instructions)
    assert carrying > 0.6, carrying
    assert re.search(rf"\.loc\s+\d+ {CONV1_LINE} 0", asm)
    grads = [line for line in kernels.splitlines() if "# from:" in line and "grad." in line]
    # gradients point at the forward line of what they differentiate (the model's, or the loss's)
    assert grads and all(re.search(r"(zoo|test_ir_analysis)\.py:\d+ \(", line) for line in grads)
    assert any(f"zoo.py:{CONV1_LINE} (" in line for line in grads)


def test_ember_debug_2_kernel_times_name_the_model_lines(tmp_path):
    from ember.compiler.backends import llvm_backend
    backend = llvm_backend(cache_dir=str(tmp_path), debug=2)
    compiled = ember.compile(SeedNet(), backend=backend)
    err = io.StringIO()
    with redirect_stderr(err), ember.no_grad():
        compiled(ember.randn(1, 3, 32, 32))  # (traced)
        compiled(ember.randn(1, 3, 32, 32))  # the program, timed
    assert re.search(rf"us  conv2d_bias_relu_1x6x28x28\s+zoo.py:{CONV1_LINE} \(conv1", err.getvalue()), err.getvalue()


def test_explain_says_how_to_avoid_each_recompile():
    compiled = ember.compile(SeedNet())
    with ember.no_grad():
        compiled(ember.randn(1, 3, 32, 32))
        compiled(ember.randn(2, 3, 32, 32))
    text = str(compiled.report)
    assert "dim 0 of x: 1 -> 2" in text
    assert "to avoid it: each new size is traced and compiled again: the dim stays static" in text
    with ember.no_grad():
        compiled(ember.randn(5, 3, 32, 32))  # 2 -> 5: dim 0 becomes dynamic
    assert "to avoid it: expected once per dim: from now on one program serves every size" in str(compiled.report)


# ----------------------------------------------------------------------------- the HTML report in Chromium

def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _headless(tmp_path, *args):
    browser = _chromium()
    assert browser, "Chromium is needed for this test: .ci/run installs Debian's chromium package"
    line = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(line, capture_output=True, text=True, timeout=180)


def _png_pixels(path):
    """(width, height, raw scanline bytes) of a PNG, decoded with zlib alone."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    position, idat = 8, b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        if kind == b"IDAT":
            idat += data[position + 8:position + 8 + length]
        position += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.fixture(scope="module")
def html_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    ember.manual_seed(0)
    net = SeedNet()
    optimizer = ember.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def train_step(x, y):
        optimizer.zero_grad()
        loss = ember.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss
    compiled = ember.compile(train_step)
    for batch in (4, 4, 4, 2, 2):  # (a trace that writes state compiles when the next call confirms it)
        compiled(ember.randn(batch, 3, 32, 32), ember.randint(0, 10, (batch,)))
    path = compiled.report.to_html(str(folder / "report.html"))
    return folder, path, compiled.report


def test_the_html_report_renders_in_chromium_with_every_stage_and_the_memory_chart(html_report, tmp_path):
    folder, path, report = html_report
    text = open(path).read()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org", "")  # self-contained
    done = _headless(tmp_path, "--dump-dom", f"file://{path}")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert not re.search(r"CONSOLE.*(Uncaught|Error)|ERROR:CONSOLE", done.stderr), done.stderr[-2000:]
    programs = report.programs
    assert len(programs) >= 2  # (batch 4, then batch 2)
    for number, graph in enumerate(programs):
        stages = run_passes(graph, dump_dir="")
        section = dom.split(f'id="program{number}"')[1].split('id="program')[0]
        for stage in stage_names():
            block = section.split(f'data-stage="{stage}"')[1].split('data-stage="')[0]
            assert "<svg" in block, f"program {number}: no SVG for stage {stage}"
        chart = section.split('class="memory-chart"')[1]
        assert chart.count('class="buffer"') == len(stages.plan.buffers)
        assert section.count('class="kernel"') == stages.fusion.kernel_count
    assert "dim 0 of x: 4 -&gt; 2" in dom and "to avoid it:" in dom
    assert re.search(rf"zoo.py:{CONV1_LINE} \(conv1", dom)
    shot = tmp_path / "report.png"
    done = _headless(tmp_path, "--window-size=1200,1400", f"--screenshot={shot}", f"file://{path}")
    assert shot.exists(), done.stderr[-2000:]
    width, height, pixels = _png_pixels(shot)
    assert (width, height) == (1200, 1400)
    values = np.frombuffer(pixels, np.uint8)
    assert len(np.unique(values)) > 50 and (values < 128).mean() > 0.001  # not blank: text and drawings


def test_ember_report_command_writes_the_page(tmp_path):
    out = tmp_path / "seed.html"
    done = run_cli("report", f"{SEED_NET}:Net", "--input", "1x3x32x32", "--train", "-o", str(out),
                   env=dict(os.environ, EMBER_CACHE_DIR=str(tmp_path / "cache")))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "ember.compile report for train_step" in text and "seed_net.py:15 (conv1" in text
    assert 'class="memory-plan"' in text and text.count("data-stage=") == len(stage_names())
    done = run_cli("report", f"{SEED_NET}:Net", "--input", "1x3x32x32", "-o", "/nonexistent/r.html")
    assert done.returncode == 2 and "cannot write -o /nonexistent/r.html" in done.stderr
