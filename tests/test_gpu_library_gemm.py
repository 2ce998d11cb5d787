"""cuBLAS as a library call of the GPU target (compiler/ptx/library_gemm.py, runtime/cublas.py,
runtime/cuda_program.py's per-launch choice): which products qualify, the call's arguments
(checked by running it: on the grid emulator with numpy standing in for cuBLAS, and through
the ctypes bindings against tests/fake_libcublas.c), and the choice reported per launch.
"""
import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ember
from ember.compiler.ptx.library_gemm import gemm_call
from ember.compiler.ptx.tiled_matmul import matmul_nest
from ember.compiler.driver import plan, lower
from ember.compiler.ptx.target import PtxTarget
from ember.runtime import cublas, cuda_driver

CASES = {
    "a @ b": (lambda a, b: a @ b, (37, 50), (50, 29)),
    "a @ b.T": (lambda a, b: a @ b.t(), (37, 50), (29, 50)),
    "a.T @ b": (lambda a, b: a.t() @ b, (50, 37), (50, 29)),
    "a.T @ b.T": (lambda a, b: a.t() @ b.t(), (50, 37), (29, 50)),
    "batched": (lambda a, b: a @ b, (3, 37, 50), (3, 50, 29)),
    "batched, both transposed": (lambda a, b: a.transpose(1, 2) @ b.transpose(1, 2), (3, 50, 37), (3, 29, 50)),
    "linear without bias": (lambda a, b: ember.nn.functional.linear(a, b), (64, 40), (30, 40)),
}


def gemm_calls(fn, *shapes, dtype=np.float32):
    """The cuBLAS call (or None) of each tiles launch of fn's program."""
    rng = np.random.default_rng(0)
    args = [ember.tensor(rng.standard_normal(s).astype(dtype)) for s in shapes]
    with ember.no_grad():
        graph = ember.trace(fn, *args)
    target = PtxTarget("sm_90", emulated=True)
    lowered = lower(plan(graph), target)
    return [gemm_call(matmul_nest(launch.statements[0])) for launch in target.launches(lowered)
            if launch.mode == "tiles"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_plain_products_of_strided_matrices_qualify(name):
    fn, *shapes = CASES[name]
    (call,) = gemm_calls(fn, *shapes)
    assert call is not None and call["k"] in (40, 50)
    assert call["batches"] == (3 if "batched" in name else 1)


def test_fused_epilogues_and_other_dtypes_keep_the_tiled_kernel():
    assert gemm_calls(lambda a, b: ember.nn.functional.linear(a, b, b[:, 0]), (64, 40), (30, 40)) == [None]
    assert gemm_calls(lambda a, b: (a @ b).relu(), (37, 50), (50, 29)) == [None]
    assert gemm_calls(lambda a, b: a @ b, (37, 50), (50, 29), dtype=np.float64) == [None]
    conv = gemm_calls(lambda x, w: ember.nn.functional.conv2d(x, w), (2, 3, 12, 12), (8, 3, 3, 3))
    assert conv and all(call is None for call in conv)  # (an implicit product over several column loops)


def run_compiled(fn, args, monkeypatch, choice):
    monkeypatch.setenv("EMBER_GPU_GEMM", choice)
    compiled = ember.compile(fn, backend="ptx-emulated")
    compiled(*args)  # (traced: computed eagerly)
    return compiled(*args), compiled


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_cublas_call_computes_the_product(name, monkeypatch):
    fn, *shapes = CASES[name]
    rng = np.random.default_rng(1)
    args = [ember.tensor(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    out, compiled = run_compiled(fn, args, monkeypatch, "cublas")
    np.testing.assert_allclose(out.numpy(), fn(*args).numpy(), rtol=1e-5, atol=1e-5)
    assert "cuBLAS (forced by EMBER_GPU_GEMM)" in str(compiled.report)


@settings(max_examples=12, deadline=None)
@given(m=st.integers(4, 40), n=st.integers(4, 40), k=st.integers(8, 40), batch=st.integers(0, 3),
       transpose_a=st.booleans(), transpose_b=st.booleans())
def test_random_products_through_cublas_equal_eager(m, n, k, batch, transpose_a, transpose_b):
    lead = (batch,) if batch else ()
    rng = np.random.default_rng(m * n * k)
    a = ember.tensor(rng.standard_normal(lead + ((k, m) if transpose_a else (m, k))).astype(np.float32))
    b = ember.tensor(rng.standard_normal(lead + ((n, k) if transpose_b else (k, n))).astype(np.float32))

    def fn(a, b):
        return (a.transpose(-1, -2) if transpose_a else a) @ (b.transpose(-1, -2) if transpose_b else b)
    previous = os.environ.get("EMBER_GPU_GEMM")
    os.environ["EMBER_GPU_GEMM"] = "cublas"
    try:
        compiled = ember.compile(fn, backend="ptx-emulated")
        compiled(a, b)
        out = compiled(a, b)
    finally:
        if previous is None:
            del os.environ["EMBER_GPU_GEMM"]
        else:
            os.environ["EMBER_GPU_GEMM"] = previous
    np.testing.assert_allclose(out.numpy(), fn(a, b).numpy(), rtol=1e-4, atol=1e-4)


def test_the_chosen_path_is_the_one_that_runs(monkeypatch):
    """Breaking the emulated cuBLAS changes the result only where cuBLAS was chosen."""
    monkeypatch.setattr(cublas.EmulatedBlas, "sgemm", lambda self, call, a, b, c: None)  # writes nothing
    fn, *shapes = CASES["a @ b.T"]
    args = [ember.randn(*s) for s in shapes]
    broken, _ = run_compiled(fn, args, monkeypatch, "cublas")
    tiles, compiled = run_compiled(fn, args, monkeypatch, "tiles")
    assert not np.allclose(broken.numpy(), fn(*args).numpy())
    np.testing.assert_allclose(tiles.numpy(), fn(*args).numpy(), rtol=1e-5, atol=1e-5)
    assert "tiles (forced by EMBER_GPU_GEMM)" in str(compiled.report)


def test_without_a_choice_the_emulator_keeps_the_tiled_kernel_and_says_why(monkeypatch):
    monkeypatch.delenv("EMBER_GPU_GEMM", raising=False)
    fn, *shapes = CASES["a @ b"]
    _, compiled = run_compiled(fn, [ember.randn(*s) for s in shapes], monkeypatch, "auto")
    assert "matmul_37x29: tiles (emulated device: not timed)" in str(compiled.report)
    monkeypatch.setenv("EMBER_GPU_GEMM", "fastest")
    with pytest.raises(ValueError, match="EMBER_GPU_GEMM must be cublas, tiles or auto"):
        run_compiled(fn, [ember.randn(*s) for s in shapes], monkeypatch, "fastest")


# ----------------------------------------------------------------------------- the ctypes bindings

def build(tmp_path, name):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the fake CUDA libraries")
    library = tmp_path / f"{name}.so"
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.c")
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", source, "-o", str(library)], check=True)
    return str(library)


@pytest.fixture
def fake_gpu(tmp_path, monkeypatch):
    """The CUDA driver and cuBLAS bindings over tests/fake_libcuda.c and tests/fake_libcublas.c
    (host memory; kernel launches are recorded, cuBLAS calls computed)."""
    monkeypatch.setattr(cuda_driver, "DRIVER_LIBRARY", build(tmp_path, "fake_libcuda"))
    monkeypatch.setattr(cuda_driver, "_DEVICES", {})
    library = build(tmp_path, "fake_libcublas")
    monkeypatch.setattr(cublas, "LIBRARIES", (library,))
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path / "cache"))
    return ctypes.CDLL(library)


@pytest.mark.parametrize("name", ["a @ b", "a.T @ b.T", "batched, both transposed"])
def test_the_cublas_bindings_pass_the_call_through(fake_gpu, monkeypatch, name):
    fn, *shapes = CASES[name]
    rng = np.random.default_rng(2)
    args = [ember.tensor(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    monkeypatch.setenv("EMBER_GPU_GEMM", "cublas")
    compiled = ember.compile(fn, backend="ptx")
    compiled(*args)
    out = compiled(*args)
    assert fake_gpu.fake_cublas_calls() == 1
    np.testing.assert_allclose(out.numpy(), fn(*args).numpy(), rtol=1e-5, atol=1e-5)


def test_on_a_device_the_first_run_times_both_and_reports_them(fake_gpu, monkeypatch):
    monkeypatch.delenv("EMBER_GPU_GEMM", raising=False)
    fn, *shapes = CASES["a @ b"]
    compiled = ember.compile(fn, backend="ptx")
    args = [ember.randn(*s) for s in shapes]
    compiled(*args)
    compiled(*args)
    (line,) = [line for line in str(compiled.report).splitlines() if line.startswith("  matmul_37x29")]
    assert "cuBLAS " in line and " ms, tiles " in line
