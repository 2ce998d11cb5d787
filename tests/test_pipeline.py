"""The pass pipeline and its dumps: EMBER_DUMP files per stage, `ember dump --stage`, --train."""
import os
import subprocess
import sys

import numpy as np

import ember
from ember.passes.pipeline import run_passes, render_stage, STAGES
import zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = os.path.join(ROOT, "examples", "seed_net.py")


def _seed_graph():
    net, (x,) = zoo.build("seed_net")
    with ember.no_grad():
        return ember.trace(net, x)


def test_every_stage_verifies_and_dumps_text_dot_and_diff(tmp_path):
    graph = _seed_graph()
    stages = run_passes(graph, differentiate=True, dump_dir=str(tmp_path))
    for name in STAGES:
        stages.graphs[name].verify()
    folder = tmp_path / graph.name
    files = sorted(os.listdir(folder))
    for index, stage in enumerate(STAGES):
        assert f"{index}_{stage}.txt" in files and f"{index}_{stage}.dot" in files
        if index:
            assert f"{index}_{stage}.diff" in files
    assert (folder / "4_fused.txt").read_text().rstrip().endswith(f"kernels: {stages.fusion.kernel_count}")
    assert (folder / "5_planned.txt").read_text().rstrip().splitlines()[-1].startswith("arena: ")
    diff = (folder / "1_autodiff.diff").read_text()
    assert diff.startswith("--- traced") and "+  %" in diff and "grad." in diff
    assert "cluster_" in (folder / "4_fused.dot").read_text()


def test_ember_dump_env_flag_writes_dumps_when_the_pipeline_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(ember.config, "DUMP_DIR", str(tmp_path))
    run_passes(_seed_graph())
    assert any(name.endswith("_planned.txt") for name in os.listdir(tmp_path / "SeedNet"))


def test_render_stage_fused_and_planned_end_lines():
    graph = _seed_graph()
    fused = render_stage(graph, "fused")
    assert fused.rstrip().splitlines()[-1] == "kernels: 7"
    assert "[g0 conv2d_bias_relu_2x6x28x28]" in fused
    planned = render_stage(graph, "planned").rstrip().splitlines()[-1]
    arena, naive, bound = (int(part.split(": ")[1].split()[0]) for part in planned.split(", "))
    assert bound <= arena <= 1.10 * bound and naive >= arena


def test_planned_graph_still_computes_the_same_values():
    from ember.ir import interpret
    net, (x,) = zoo.build("seed_net")
    with ember.no_grad():
        graph = ember.trace(net, x)
    stages = run_passes(graph)
    params = dict(net.named_parameters())
    np.testing.assert_allclose(interpret(stages.graphs["planned"], x, params=params),
                               interpret(graph, x, params=params), rtol=1e-5, atol=1e-6)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ember", *args], capture_output=True, text=True, timeout=180,
                          cwd=ROOT)


def test_cli_dump_stages_and_train():
    fused = _cli("dump", f"{SEED}:Net", "--input", "1x3x32x32", "--stage", "fused")
    assert fused.returncode == 0, fused.stderr
    assert fused.stdout.rstrip().endswith("kernels: 7")
    planned = _cli("dump", f"{SEED}:Net", "--input", "1x3x32x32", "--stage", "planned")
    assert planned.returncode == 0 and "arena: " in planned.stdout.splitlines()[-1]
    train = _cli("dump", f"{SEED}:Net", "--input", "4x3x32x32", "--train", "--stage", "fused")
    assert train.returncode == 0, train.stderr
    assert "conv2d_grad_weight" in train.stdout and "momentum_buffer" in train.stdout
    assert train.stdout.rstrip().splitlines()[-1].startswith("kernels: ")
