"""TF32 tensor cores in the GPU target's tiled products (compiler/ptx/tensor_cores.py), used where
PyTorch allows TF32: matrix products when ember.backends.cuda.matmul.allow_tf32 (or
set_float32_matmul_precision("high")), convolutions while ember.backends.cudnn.allow_tf32.

The grid emulator runs `mma.sync.m16n8k8` from the PTX fragment layout (runtime/grid_emulator.py),
so the results are checked against a numpy reference that rounds the operands to TF32; ptxas
checks the PTX for sm_80 and sm_90.
"""
import shutil
import subprocess
import sys

import numpy as np
import pytest

import ember
from ember.compiler.driver import lower, plan
from test_device_tensors import training_step
from ember.compiler.ptx.target import PtxTarget


def to_tf32(x):
    """float32 values rounded to TF32 as cvt.rna.tf32.f32 does (ties away from zero)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)


@pytest.fixture
def switches():
    """PyTorch's defaults (matmul TF32 off, convolution TF32 on; tests/conftest.py turns the
    latter off for every other test)."""
    ember.backends.cuda.matmul.allow_tf32 = False
    ember.backends.cudnn.allow_tf32 = True
    return ember.backends


def run(fn, *arrays):
    compiled = ember.compile(fn, backend="ptx-emulated")
    tensors = [ember.tensor(a) for a in arrays]
    compiled(*tensors)  # (traced: computed eagerly)
    return compiled(*tensors).numpy(), compiled


def test_the_switches_follow_pytorch(switches):
    fresh = subprocess.run([sys.executable, "-c", "import ember; print(ember.backends.cuda.matmul.allow_tf32, "
                            "ember.backends.cudnn.allow_tf32, ember.get_float32_matmul_precision())"],
                           capture_output=True, text=True, check=True)
    assert fresh.stdout.split() == ["False", "True", "highest"]  # PyTorch's defaults
    ember.set_float32_matmul_precision("high")
    assert ember.backends.cuda.matmul.allow_tf32
    ember.backends.cuda.matmul.allow_tf32 = False
    assert ember.get_float32_matmul_precision() == "highest"
    ember.set_float32_matmul_precision("medium")
    assert ember.backends.cuda.matmul.allow_tf32 and ember.get_float32_matmul_precision() == "medium"


@pytest.mark.parametrize("shape", [(70, 90, 50), (64, 48, 64), (5, 200, 130)])
def test_tf32_products_round_their_operands_and_sum_in_float32(switches, shape):
    m, k, n = shape
    rng = np.random.default_rng(m)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    tf32 = to_tf32(a).astype(np.float64) @ to_tf32(b).astype(np.float64)
    out, _ = run(lambda x, y: (x @ y).relu() * 2, a, b)  # (an epilogue: the tiled kernel, not cuBLAS)
    np.testing.assert_allclose(out, np.maximum(exact, 0) * 2, rtol=1e-5, atol=1e-4)  # off by default
    ember.backends.cuda.matmul.allow_tf32 = True
    out, compiled = run(lambda x, y: (x @ y).relu() * 2, a, b)
    np.testing.assert_allclose(out, np.maximum(tf32, 0) * 2, rtol=1e-5, atol=1e-4)
    assert np.abs(out - np.maximum(exact, 0) * 2).max() > 1e-3  # (TF32 really ran: 10-bit mantissas)


def test_batched_products_and_epilogues_on_tensor_cores(switches):
    ember.backends.cuda.matmul.allow_tf32 = True
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 40, 70)).astype(np.float32), rng.standard_normal((3, 70, 33)).astype(np.float32)
    bias = rng.standard_normal(33).astype(np.float32)
    out, _ = run(lambda x, y, z: x @ y + z, a, b, bias)
    expected = np.matmul(to_tf32(a).astype(np.float64), to_tf32(b).astype(np.float64)) + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_convolutions_use_tf32_while_cudnn_allows_it(switches):
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 8, 12, 12)).astype(np.float32), rng.standard_normal((16, 8, 3, 3)).astype(np.float32)

    def conv(x, w):
        return ember.nn.functional.conv2d(x, w)
    reference = conv(ember.tensor(to_tf32(x).astype(np.float64)), ember.tensor(to_tf32(w).astype(np.float64))).numpy()
    exact = conv(ember.tensor(x.astype(np.float64)), ember.tensor(w.astype(np.float64))).numpy()
    out, _ = run(conv, x, w)  # cudnn.allow_tf32 is on by default
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-4)
    assert np.abs(out - exact).max() > 1e-4
    ember.backends.cudnn.allow_tf32 = False
    out, _ = run(conv, x, w)
    np.testing.assert_allclose(out, exact, rtol=1e-5, atol=1e-5)


def test_a_switch_change_recompiles_with_the_reason(switches):
    compiled = ember.compile(lambda x, y: x @ y, backend="ptx-emulated")
    x, y = ember.randn(40, 30), ember.randn(30, 20)
    compiled(x, y)
    ember.backends.cuda.matmul.allow_tf32 = True
    compiled(x, y)
    assert "TF32 switches (matmul, convolution): (False, True) -> (True, True)" in str(compiled.report)


def test_a_training_step_with_tf32_stays_within_its_error_of_eager(switches):
    """A conv + linear training step with both switches on: the losses and weights after three
    SGD steps stay within TF32's relative error (2^-11 per operand) of eager float32."""
    ember.backends.cuda.matmul.allow_tf32 = True
    ember.manual_seed(0)
    models = [ember.nn.Sequential(ember.nn.Conv2d(2, 8, 3), ember.nn.ReLU(), ember.nn.Flatten(),
                                  ember.nn.Linear(8 * 6 * 6, 10)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [ember.optim.SGD(m.parameters(), lr=0.05) for m in models]
    eager, compiled = training_step(models[0], optimizers[0]), ember.compile(training_step(models[1], optimizers[1]),
                                                                             backend="ptx-emulated")
    rng = np.random.default_rng(7)
    for _ in range(3):
        x = ember.tensor(rng.standard_normal((4, 2, 8, 8)).astype(np.float32))
        y = ember.tensor(rng.integers(0, 10, 4))
        np.testing.assert_allclose(compiled(x, y).item(), eager(x, y).item(), rtol=5e-3)
    assert compiled.report.compiled_calls >= 1
    for a, b in zip(models[1].parameters(), models[0].parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-2, atol=2e-3)


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas (CUDA toolkit) is not on PATH")
@pytest.mark.parametrize("compute_capability", ["sm_80", "sm_90"])
def test_ptxas_accepts_the_tensor_core_kernels(switches, compute_capability):
    ember.backends.cuda.matmul.allow_tf32 = True
    with ember.no_grad():
        graph = ember.trace(lambda x, y, w: (x @ y, ember.nn.functional.conv2d(x.reshape(1, 1, 64, 64), w)),
                            ember.randn(64, 64), ember.randn(64, 48), ember.randn(8, 1, 3, 3))
    target = PtxTarget(compute_capability)
    lowered = lower(plan(graph), target)
    assert target.render(lowered, "ptx").count("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32") >= 2
    report = target.render(lowered, "sass-check")
    assert "0/0" in report and "error" not in report.lower()


def test_a_wrong_fragment_layout_makes_the_emulation_fail(switches, monkeypatch, tmp_path):
    """The emulator follows the PTX fragment layout: a kernel that stores its sums at the
    positions of the other row half (rows group + 8 for group) gives wrong numbers."""
    from ember.compiler.ptx import tensor_cores
    ember.backends.cuda.matmul.allow_tf32 = True
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((64, 32)).astype(np.float32), rng.standard_normal((32, 64)).astype(np.float32)
    right = to_tf32(a).astype(np.float64) @ to_tf32(b).astype(np.float64)
    out, _ = run(lambda x, y: (x @ y) * 3, a, b)
    np.testing.assert_allclose(out, right * 3, rtol=1e-5, atol=1e-4)
    positions = tensor_cores.Fragments.positions
    monkeypatch.setattr(tensor_cores.Fragments, "positions", lambda self: positions(self)[::-1])
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))  # (compiled afresh)
    out, _ = run(lambda x, y: (x @ y) * 3, a, b)
    assert not np.allclose(out, right * 3, rtol=1e-3, atol=1e-3)


def test_cublas_multiplies_in_tf32_where_the_tiled_kernel_would(switches, monkeypatch):
    """Both paths of a plain product follow the switch: the call asks cuBLAS for TF32 math."""
    monkeypatch.setenv("EMBER_GPU_GEMM", "cublas")
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((70, 90)).astype(np.float32), rng.standard_normal((90, 50)).astype(np.float32)
    out, _ = run(lambda x, y: x @ y, a, b)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-5, atol=1e-4)
    ember.backends.cuda.matmul.allow_tf32 = True
    out, compiled = run(lambda x, y: x @ y, a, b)
    np.testing.assert_allclose(out, to_tf32(a).astype(np.float64) @ to_tf32(b), rtol=1e-5, atol=1e-4)

