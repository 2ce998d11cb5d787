"""The examples run as a user runs them (short versions, so the suite stays fast)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_seed_net_example_prints_torch_style_summary_and_a_1x10_output():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "seed_net.py")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Net(\n  (conv1): Conv2d(3, 6, kernel_size=(5, 5), stride=(1, 1))\n")
    assert "grad_fn=<AddmmBackward0>)" in result.stdout and result.stdout.count(",") >= 9


def test_digits_demo_trains_saves_and_reloads():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_digits.py"), "--epochs", "1",
                             "--min-accuracy", "0.5"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "test accuracy:" in result.stdout and "weights identical: True" in result.stdout


def test_text_classifier_example_trains_on_packed_sequences():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "train_text_classifier.py"), "--epochs",
                             "2", "--min-accuracy", "0.8"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "vocabulary: " in result.stdout and "test accuracy:" in result.stdout


def _accuracy(stdout):
    line = [line for line in stdout.splitlines() if line.startswith("test accuracy:")][0]
    return float(line.split()[2].rstrip("%")) / 100


def test_digits_compiled_step_with_one_cycle_schedule_compiles_at_most_three_times():
    """lr and momentum change after every batch (OneCycleLR) and each epoch ends with a partial
    batch: the compiled step still compiles at most 3 programs, never falls back to eager, and
    trains as the eager run does."""
    runs = {}
    for mode in ("eager", "compiled"):
        command = [sys.executable, os.path.join(ROOT, "examples", "train_digits.py"), "--epochs", "3",
                   "--min-accuracy", "0.8"] + (["--compile"] if mode == "compiled" else [])
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        runs[mode] = result.stdout
    line = [line for line in runs["compiled"].splitlines() if line.startswith("compiled training step:")][0]
    programs, calls = int(line.split()[3]), int(line.split()[7])
    assert programs <= 3 and calls == 3 * 45, line
    assert " 0 eagerly" in line and "fell back" not in line, line
    assert abs(_accuracy(runs["compiled"]) - _accuracy(runs["eager"])) <= 0.02, (runs["compiled"], runs["eager"])
