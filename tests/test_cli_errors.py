"""The CLI never shows ember's traceback for a user's mistake: each one below ends with one
line naming what went wrong (after the user's own traceback where the error is in their code)
and a non-zero exit status."""
import os
import subprocess
import sys

import pytest

MODELS = '''
import ember
from ember import nn


class Bad(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) @ ember.ones(3, 3)


class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(4, width)

    def forward(self, x):
        return self.fc(x)


class NotModule:
    def __init__(self):
        pass


def exits(x):
    import sys
    sys.exit(0)


class Good(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)
'''


GOOD_FORWARD = MODELS.splitlines().index("class Good(nn.Module):") + 7  # its `return self.fc(x)`


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli")
    (path / "models.py").write_text(MODELS)
    (path / "syntax.py").write_text("def f(:\n    pass\n")
    (path / "importerr.py").write_text("import os\nraise RuntimeError('config missing')\n")
    (path / "exitsonimport.py").write_text("print('setting up')\nimport sys\nsys.exit(3)\n")
    return path


def ember_cli(folder, *args):
    done = subprocess.run([sys.executable, "-m", "ember", *args], capture_output=True, text=True, cwd=folder,
                          timeout=120)
    assert "Traceback (most recent call last):" not in done.stderr, done.stderr  # (ember's own)
    assert not any(os.path.join("ember", "cli.py") in line for line in done.stderr.splitlines()), done.stderr
    return done.returncode, done.stderr.strip().splitlines()


@pytest.mark.parametrize("command", ["dump", "explain"])
def test_a_forward_that_raises_shows_the_users_frame_and_the_op(folder, command):
    code, lines = ember_cli(folder, command, "models.py:Bad", "--input", "2x4")
    assert code == 1
    assert lines[0] == "Traceback (most recent call last, ember's frames left out):"
    assert any("models.py\", line 12, in forward" in line for line in lines)
    assert lines[-1].startswith(f"ember {command}: models.py:Bad raised OpError at models.py:12 "
                                "(return self.fc(x) @ ember.ones(3, 3)): matmul (Bad): shapes f32[2,2] and f32[3,3]")


@pytest.mark.parametrize("args, code, message", [
    (["models.py:Good", "--input", "2x4x5x6"], 1,
     f"models.py:Good raised RuntimeError at models.py:{GOOD_FORWARD} (return self.fc(x)): linear (fc): input "
     "f32[2,4,5,6] has 6 "
     "features, weight f32[2,4] expects 4"),
    (["models.py:Good"], 2, "models.py:Good takes 1 input(s) (x), got 0 --input; give one --input SIZES per input"),
    (["models.py:Good", "--input", "2x4", "--input", "3"], 2, "models.py:Good takes 1 input(s) (x), got 2 --input"),
    (["models.py:Good", "--input", "2x-4"], 2, "--input 2x-4: sizes must be non-negative integers"),
    (["models.py:Good", "--input", "2xfour"], 2, "--input takes sizes like 1x3x32x32 (or 'scalar'), got '2xfour'"),
    (["models.py:Good", "--input", "2x4", "--dtype", "float99"], 2, "unknown --dtype 'float99'; choose one of"),
    (["models.py:NeedsArgs", "--input", "2x4"], 2, "models.py:NeedsArgs: NeedsArgs needs constructor arguments (width)"),
    (["syntax.py:f", "--input", "2"], 1, "importing syntax.py: syntax error at"),
    (["importerr.py:f", "--input", "2"], 1,
     "importing importerr.py raised RuntimeError at importerr.py:2 (raise RuntimeError('config missing')): "
     "config missing"),
    (["models.py:Good", "--input", "2x4", "-o", "/nonexistent/folder/out.txt"], 2,
     "cannot write -o /nonexistent/folder/out.txt: No such file or directory"),
    (["models.py:NotModule", "--input", "2x4"], 2,
     "models.py:NotModule: NotModule is a class that is not an nn.Module subclass; name an nn.Module subclass or a "
     "function"),
    (["models.py:exits", "--input", "2x4"], 2, "models.py:exits called sys.exit(0): ember cannot dump or compile"),
    (["exitsonimport.py:f", "--input", "2"], 2, "importing exitsonimport.py called sys.exit(3)"),
    (["models.py:Good", "--input", "1x"], 2, "--input takes sizes like 1x3x32x32 (or 'scalar'), got '1x'"),
    (["models.py:Good", "--input", "x4"], 2, "--input takes sizes like 1x3x32x32 (or 'scalar'), got 'x4'"),
    (["models.py:Good", "--input", "99999999x99999999"], 2,
     "--input 99999999x99999999: 35.5 PiB of float32 is more than this machine holds"),
    (["models.py:Missing", "--input", "2x4"], 2, "models.py has no 'Missing'; callables there: Bad, Good, NeedsArgs, NotModule, exits"),
    (["nowhere.py:Net", "--input", "2x4"], 2, "no such file: nowhere.py"),
    (["models.py", "--input", "2x4"], 2, "expected FILE.py:NAME, got 'models.py'"),
])
@pytest.mark.parametrize("command", ["dump", "explain"])
def test_each_mistake_gets_one_clear_line_and_a_failing_status(folder, command, args, code, message):
    got, lines = ember_cli(folder, command, *args)
    assert got == code, lines
    assert lines[-1].startswith(f"ember {command}: {message}"), lines


def test_output_piped_into_head_ends_quietly(folder):
    done = subprocess.run(f"{sys.executable} -m ember dump models.py:Good --input 2x4 --stage planned | head -1",
                          shell=True, capture_output=True, text=True, cwd=folder, timeout=120)
    assert done.stdout.startswith("graph Good") and done.stderr == "", done.stderr
    done = subprocess.run(f"{sys.executable} -m ember dump models.py:Good --input 2x4 --format json | head -c 10",
                          shell=True, capture_output=True, text=True, cwd=folder, timeout=120,
                          executable="/bin/bash")
    assert done.stderr == ""
