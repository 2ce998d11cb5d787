"""The wheel, not the editable install, is complete (issue 12): it is built from a copy of the
checkout (pip, no build isolation, no index), installed into a fresh venv that borrows numpy,
llvmlite and networkx from this interpreter's site-packages, and every subpackage is imported
from the venv; a compiled call runs there too. A folder missing from pyproject.toml fails here.
"""
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def package_roots():
    """The checkout's top-level package folders: ember/ itself, and the pipeline's folders
    that install as ember.<folder> (frontend/ is ember.frontend: pyproject.toml's package-dir)."""
    roots = sorted(p for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    assert [p.name for p in roots if p.name == "ember"] == ["ember"], roots
    return {root: ("ember" if root.name == "ember" else f"ember.{root.name}") for root in roots}


def source_files():
    """Each .py file of the checkout's packages, by the path it must have inside the wheel."""
    files = {}
    for root, package in package_roots().items():
        for path in root.rglob("*.py"):
            if "__pycache__" not in path.parts:
                files["/".join((*package.split("."), *path.relative_to(root).parts))] = path
    return files


def source_packages():
    """Every package (folder with __init__.py) of the checkout, by its import name."""
    return sorted(name[:-len("/__init__.py")].replace("/", ".") for name in source_files()
                  if name.endswith("/__init__.py"))


def run(command, cwd, **kwargs):
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    environment.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONNOUSERSITE="1", **kwargs)
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the wheel from a copy of the checkout, so no build/ or egg-info lands in it."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for root in package_roots():
        shutil.copytree(root, source / root.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    try:
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
             "--wheel-dir", work / "dist", source], cwd=work)
    except AssertionError as failure:  # say what to install, not only pip's traceback
        raise AssertionError(f"building the wheel needs setuptools and wheel (`pip install -e .[test]`): "
                             f"{failure}") from None
    built = sorted((work / "dist").glob("ember-*.whl"))
    assert len(built) == 1, built
    return built[0]


@pytest.fixture(scope="module")
def venv(wheel):
    """A fresh venv with the wheel installed; this interpreter's site-packages (numpy,
    llvmlite, networkx, pip) are on its path after its own, through a .pth file."""
    directory = wheel.parent.parent / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", directory], cwd=wheel.parent)
    python = directory / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                       cwd=wheel.parent).strip())
    outer = [p for p in (*site.getsitepackages(), sysconfig.get_paths()["purelib"]) if os.path.isdir(p)]
    (purelib / "_outer_site_packages.pth").write_text("\n".join(dict.fromkeys(outer)) + "\n")
    # --ignore-installed: this interpreter's own (editable) ember is on the venv's path too
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed", wheel],
        cwd=wheel.parent)
    return directory, python, purelib


def test_the_wheel_holds_every_source_file(wheel):
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(name for name in source_files() if name not in in_wheel)
    assert not missing, ("the wheel lacks these files; list their folders in pyproject.toml's "
                         f"[tool.setuptools] packages: {missing}")


def test_every_subpackage_imports_from_the_installed_wheel_and_compiles(venv, tmp_path):
    directory, python, purelib = venv
    packages = source_packages()
    assert {"ember", "ember.ir", "ember.frontend.nn", "ember.compiler", "ember.runtime"} <= set(packages)
    code = ("import importlib, json, sys\n"
            f"where = {{name: importlib.import_module(name).__file__ for name in {packages!r}}}\n"
            "import ember\n"
            "y = ember.compile(lambda x: x * 2 + 1)(ember.ones(4)).tolist()\n"
            "print(json.dumps({'where': where, 'y': y}))\n")
    # run outside the checkout, with a cache of its own: the wheel's code compiles the program
    report = json.loads(run([python, "-c", code], cwd=tmp_path, EMBER_CACHE_DIR=str(tmp_path / "cache"))
                        .strip().splitlines()[-1])
    outside = {name: path for name, path in report["where"].items()
               if not Path(path).resolve().is_relative_to(purelib.resolve())}
    assert not outside, f"imported from outside the venv's site-packages {purelib}: {outside}"
    assert purelib.resolve().is_relative_to(directory.resolve())
    assert report["y"] == [3.0] * 4


def test_the_ember_command_is_installed(venv, tmp_path):
    directory, _, _ = venv
    assert "dump" in run([directory / "bin" / "ember", "--help"], cwd=tmp_path)
