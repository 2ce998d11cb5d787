"""The `ember` command line on the seed Net example: dump in every format and explain."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = os.path.join(ROOT, "examples", "seed_net.py")


def run(*args):
    return subprocess.run([sys.executable, "-m", "ember", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_dump_text_of_the_seed_net():
    result = run("dump", f"{SEED}:Net", "--input", "1x3x32x32")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("graph Net(%0) {")
    assert "= conv2d(%0, %1, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1) : f32[1,6,28,28]  # conv1" in out
    assert "param fc3.bias : f32[10]" in out and out.rstrip().endswith("}")
    assert "Net(" not in out.splitlines()[0][10:]  # the script's own prints are not in the dump


@pytest.mark.parametrize("fmt,marker", [("json", '"format": "ember-ir"'), ("dot", "digraph"),
                                        ("graphml", "<graphml")])
def test_dump_formats(fmt, marker, tmp_path):
    target = tmp_path / f"net.{fmt}"
    result = run("dump", f"{SEED}:Net", "--input", "1x3x32x32", "--format", fmt, "-o", str(target))
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert marker in text
    if fmt == "json":
        from ember.ir import Graph
        Graph.from_json(text).verify()
        assert len(json.loads(text)["nodes"]) > 20


def test_dump_svg_renders_or_says_how_to_install_graphviz():
    result = run("dump", f"{SEED}:Net", "--input", "1x3x32x32", "--format", "svg")
    if result.returncode == 0:
        assert "<svg" in result.stdout
    else:
        assert "graphviz" in result.stderr.lower() and "--format dot" in result.stderr


def test_dump_of_a_function_and_bad_target_errors(tmp_path):
    source = tmp_path / "fns.py"
    source.write_text("import ember\ndef double(x):\n    return x * 2\n")
    result = run("dump", f"{source}:double", "--input", "3")
    assert result.returncode == 0 and "mul(%0" in result.stdout
    result = run("dump", f"{source}:missing", "--input", "3")
    assert result.returncode != 0 and "no 'missing'" in result.stderr and "double" in result.stderr


def test_explain_prints_the_report():
    result = run("explain", f"{SEED}:Net", "--input", "1x3x32x32")
    assert result.returncode == 0, result.stderr
    assert "ember.compile report for Net" in result.stdout and "trace #1: first call" in result.stdout
    assert "signature: x: float32[1,3,32,32], training=False" in result.stdout


def test_explain_at_several_batch_sizes_says_which_dims_are_dynamic():
    result = run("explain", f"{SEED}:Net", "--input", "4x3x32x32", "--batch-sizes", "8,16,1")
    assert result.returncode == 0, result.stderr
    assert "dim 0 of x: changed 4 -> 8 (automatic dynamic)" in result.stdout
    assert "symbols: s0 = dim 0 of x" in result.stdout and "traces: 3" in result.stdout
    bad = run("explain", f"{SEED}:Net", "--input", "4x3x32x32", "--batch-sizes", "8,x")
    assert bad.returncode != 0 and "--batch-sizes takes sizes like 37,64,5" in bad.stderr


def test_dump_for_the_gpu_target_prints_ptx_and_ptxas_resource_usage():
    """`--target cuda`: the code stages are the PTX target's; sass-check runs ptxas -v."""
    from ember.compiler.ptx.ptxas_check import PtxasMissing, find_ptxas
    ptx = run("dump", f"{SEED}:Net", "--input", "4x3x32x32", "--target", "cuda", "--stage", "ptx")
    assert ptx.returncode == 0, ptx.stderr
    assert ".target sm_90" in ptx.stdout and ".visible .entry" in ptx.stdout
    assert "// kernel" in ptx.stdout and "launch, seed_net.py:" in ptx.stdout  # entries say where they came from
    check = run("dump", f"{SEED}:Net", "--input", "4x3x32x32", "--target", "cuda", "--stage", "sass-check")
    try:
        find_ptxas()
    except PtxasMissing:
        assert check.returncode == 2 and "ptxas" in check.stderr
        return
    assert check.returncode == 0, check.stderr
    lines = check.stdout.strip().splitlines()
    assert lines[0].startswith("// ptxas -v -arch=sm_90:") and "registers" in lines[1] and "spill" in lines[1]
    entries = ptx.stdout.count(".visible .entry")
    assert int(lines[0].split(": ")[1].split()[0]) == entries == len(lines) - 2
    assert all(int(line.split()[1]) > 0 for line in lines[2:])  # every entry uses registers


def test_dump_refuses_a_code_stage_of_the_other_target():
    result = run("dump", f"{SEED}:Net", "--input", "1x3x32x32", "--target", "cuda", "--stage", "asm")
    assert result.returncode == 2 and "--stage asm is not a code stage of --target cuda" in result.stderr
    assert "kernels, llvm, ptx, sass-check" in result.stderr
    result = run("dump", f"{SEED}:Net", "--input", "1x3x32x32", "--stage", "ptx")
    assert result.returncode == 2 and "its code stages are kernels, llvm, asm" in result.stderr
