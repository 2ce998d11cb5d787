"""Adversarial round 3 against the GPU target's matrix products: cuBLAS as a library call
(compiler/ptx/library_gemm.py, runtime/cublas.py, runtime/cuda_program.py), TF32 tensor cores
(compiler/ptx/tensor_cores.py and the switches of ember/backends/cuda.py), eager ops on cuda
tensors (frontend/device_ops.py) and what the compile report says about GPU products.

Oracles: eager ember on the CPU (PyTorch semantics), numpy float64, and for TF32 a numpy
reference that rounds the operands to TF32 (cvt.rna) and sums in float64. The GPU is the grid
emulator ("ptx-emulated", EMBER_EMULATE_CUDA=1) unless a real one is here. Shapes stay small.

Sections: the defects found (each test fails until fixed; its docstring says expected vs
actual), then the areas checked that hold. Notes: /work/notes/adversarial_gpu_3.md.
"""
import os
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ember
from ember.compiler.driver import lower, plan
from ember.compiler.ptx.target import PtxTarget
from ember.frontend import device_ops
from ember.frontend.device_tensors import cuda_runtime_device
from ember.runtime import cublas
from ember.runtime.cuda_driver import cuda_available

F = ember.nn.functional
FORCED = "cuBLAS (forced by EMBER_GPU_GEMM)"


def to_tf32(x):
    """float32 values rounded to TF32 as cvt.rna.tf32.f32 does (ties away from zero)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x1000) & 0xFFFFE000).astype(np.uint32).view(np.float32)


def tf32_64(x):
    return to_tf32(x).astype(np.float64)


def relative(out, reference):
    out, reference = np.asarray(out, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(out - reference).max() / max(np.abs(reference).max(), 1e-30))


def assert_tf32(out, tf32_reference, exact):
    """`out` is the TF32 product (within float32 summation of the TF32 reference, visibly off exact)."""
    assert relative(out, tf32_reference) < 1e-5, f"not the TF32 product: {relative(out, tf32_reference):.1e}"
    assert relative(out, exact) > 1e-5


def assert_exact(out, exact):
    """`out` is the float32 product (no TF32: off the exact product only by float32 sums)."""
    assert relative(out, exact) < 1e-5, f"off the float32 product by {relative(out, exact):.1e} (TF32?)"


@pytest.fixture
def switches(monkeypatch):
    """PyTorch's defaults (matmul TF32 off, cuDNN TF32 on), restored after the test; products
    on the tiled kernels (on a GPU, "auto" may give a launch to cuBLAS, which ember runs without
    TF32)."""
    monkeypatch.setenv("EMBER_GPU_GEMM", "tiles")
    precision, cudnn = ember.get_float32_matmul_precision(), ember.backends.cudnn.allow_tf32
    ember.backends.cuda.matmul.allow_tf32 = False
    ember.backends.cudnn.allow_tf32 = True
    yield ember.backends
    ember.set_float32_matmul_precision(precision)
    ember.backends.cudnn.allow_tf32 = cudnn


@pytest.fixture
def cuda(monkeypatch):
    """The cuda device (the grid emulator without a GPU) and a fresh cache of eager one-op programs."""
    if not cuda_available():
        monkeypatch.setenv("EMBER_EMULATE_CUDA", "1")
    monkeypatch.setattr(device_ops, "_PROGRAMS", OrderedDict())
    return cuda_runtime_device()


@pytest.fixture
def forced_cublas(monkeypatch):
    """EMBER_GPU_GEMM=cublas, and a count of the emulated cuBLAS calls."""
    monkeypatch.setenv("EMBER_GPU_GEMM", "cublas")
    calls = []
    original = cublas.EmulatedBlas.sgemm

    def counted(self, call, a, b, c):
        calls.append((call["m"], call["n"], call["k"], call["batches"]))
        return original(self, call, a, b, c)
    monkeypatch.setattr(cublas.EmulatedBlas, "sgemm", counted)
    return calls


def compiled_run(fn, *arrays):
    """(fn's compiled result on the emulated GPU, the compiled function); the arguments of the
    compiled call and the eager oracle are fresh copies (fn may write into them)."""
    compiled = ember.compile(fn, backend="ptx-emulated")
    for _ in range(2):  # (the trace and its confirmation)
        compiled(*[ember.tensor(np.array(a)) for a in arrays])
    args = [ember.tensor(np.array(a)) for a in arrays]
    out = compiled(*args)
    assert compiled.report.compiled_calls >= 1
    return out, compiled, args


def tiles_launches(fn, *arrays):
    """[(entry, mode, tf32)] of the tiled launches of fn's GPU program (no run)."""
    tensors = [ember.tensor(a) for a in arrays]
    with ember.no_grad():
        graph = ember.trace(fn, *tensors)
    target = PtxTarget("sm_90", emulated=True)
    lowered = lower(plan(graph), target)
    return [(launch.entry, launch.mode, launch.tf32) for launch in target.launches(lowered)
            if launch.mode in ("tiles", "tiles_split")]


RNG = np.random.default_rng(3)
A = RNG.standard_normal((70, 90)).astype(np.float32)
B = RNG.standard_normal((90, 50)).astype(np.float32)
EXACT = A.astype(np.float64) @ B.astype(np.float64)
TF32 = tf32_64(A) @ tf32_64(B)
MASK = RNG.random((70, 50)) > 0.3
INTS = RNG.integers(0, 3, (70, 50))


# ============================================================================ defects found

FUSED_CONVERSIONS = {
    "(a @ b) * bool mask": (lambda a, b, m: (a @ b) * m, MASK, lambda p: p * MASK),
    "(a @ b) + int64 tensor": (lambda a, b, m: (a @ b) + m, INTS, lambda p: p + INTS),
    "(a @ b).double()": (lambda a, b, m: (a @ b).double() + m, np.zeros((70, 50)), lambda p: p),
}


@pytest.mark.parametrize("name", sorted(FUSED_CONVERSIONS))
def test_matmul_with_a_fused_dtype_conversion_follows_the_matmul_switch_not_cudnns(switches, name):
    """Expected: a float32 matmul under PyTorch's defaults (matmul.allow_tf32 False) is computed
    in float32 whatever its epilogue; actual: a kernel whose epilogue converts a dtype ("convert"
    starts with "conv") follows cudnn.allow_tf32 (True) and multiplies in TF32 (~1e-2 off)."""
    fn, other, epilogue = FUSED_CONVERSIONS[name]
    out, _, _ = compiled_run(fn, A, B, other)
    assert_exact(out.numpy(), epilogue(EXACT))


def test_matmul_with_a_fused_conversion_uses_tf32_when_only_the_matmul_switch_allows_it(switches):
    """Expected: matmul.allow_tf32 True, cudnn.allow_tf32 False: `(a @ b).double()` is a TF32
    product as `a @ b` is; actual: it follows the convolution switch and stays float32."""
    switches.cuda.matmul.allow_tf32, switches.cudnn.allow_tf32 = True, False
    out, _, _ = compiled_run(lambda a, b: (a @ b).double(), A, B)
    assert_tf32(out.numpy(), TF32, EXACT)


def test_eager_cuda_matmul_stops_using_tf32_when_the_switch_is_turned_off(switches, cuda):
    """Expected: after matmul.allow_tf32 = False an eager cuda matmul is float32; actual: the
    one-op program compiled while the switch was on is reused (device_ops caches programs by op,
    shapes and attributes, not the TF32 switches), so it stays TF32."""
    a, b = ember.tensor(A).cuda(), ember.tensor(B).cuda()
    switches.cuda.matmul.allow_tf32 = True
    assert_tf32((a @ b).cpu().numpy(), TF32, EXACT)
    switches.cuda.matmul.allow_tf32 = False
    assert_exact((a @ b).cpu().numpy(), EXACT)


def test_eager_cuda_matmul_uses_tf32_once_the_switch_is_turned_on(switches, cuda):
    """Expected: after matmul.allow_tf32 = True an eager cuda matmul is a TF32 product (as the
    compiled one is); actual: the float32 program compiled before the change is reused."""
    a, b = ember.tensor(A).cuda(), ember.tensor(B).cuda()
    assert_exact((a @ b).cpu().numpy(), EXACT)
    switches.cuda.matmul.allow_tf32 = True
    assert_tf32((a @ b).cpu().numpy(), TF32, EXACT)


def test_eager_cuda_conv2d_stops_using_tf32_when_cudnn_switch_is_turned_off(switches, cuda):
    """Expected: after cudnn.allow_tf32 = False an eager cuda conv2d is float32; actual: the
    TF32 program compiled under the default (True) is reused."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 8, 12, 12)).astype(np.float32), rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    exact = F.conv2d(ember.tensor(x.astype(np.float64)), ember.tensor(w.astype(np.float64))).numpy()
    tf32 = F.conv2d(ember.tensor(tf32_64(x)), ember.tensor(tf32_64(w))).numpy()
    xc, wc = ember.tensor(x).cuda(), ember.tensor(w).cuda()
    assert_tf32(F.conv2d(xc, wc).cpu().numpy(), tf32, exact)
    switches.cudnn.allow_tf32 = False
    assert_exact(F.conv2d(xc, wc).cpu().numpy(), exact)


def test_report_lists_the_gpu_products_of_programs_run_with_autograd(forced_cublas):
    """Expected: the report's "GPU matrix products" names the launches cuBLAS computed; actual:
    a compiled model called with grad enabled runs compiled_autograd's forward/backward programs,
    which never reach report.runners, so cuBLAS runs (4 calls) and the report says nothing."""
    ember.manual_seed(0)
    compiled = ember.compile(ember.nn.Linear(40, 36, bias=False), backend="ptx-emulated")
    x = ember.randn(48, 40)
    for _ in range(3):
        y = compiled(x)
        (y * y).sum().backward()
    assert compiled.report.compiled_calls >= 1 and forced_cublas  # (cuBLAS ran)
    assert FORCED in str(compiled.report)


# ============================================================================ what holds

LAYOUTS = {  # name: (fn, shape of a, shape of b, whether the product qualifies for cuBLAS)
    "a[:, ::2] @ b": (lambda a, b: a[:, ::2] @ b, (20, 80), (40, 24), False),  # (no unit stride: tiles)
    "a @ b[::2]": (lambda a, b: a @ b[::2], (20, 40), (80, 24), True),
    "a.t()[1:] @ b": (lambda a, b: a.t()[1:] @ b, (40, 33), (40, 24), True),
    "a[1:, 2:] @ b[3:, 1:]": (lambda a, b: a[1:, 2:] @ b[3:, 1:], (21, 42), (43, 25), True),
    "(3,m,k) @ (k,n)": (lambda a, b: a @ b, (3, 20, 40), (40, 24), True),
    "(1,m,k) @ (4,k,n)": (lambda a, b: a @ b, (1, 20, 40), (4, 40, 24), False),
    "(4,m,k) @ (1,k,n): batch stride 0": (lambda a, b: a @ b, (4, 20, 40), (1, 40, 24), True),
    "expanded batch": (lambda a, b: a.expand(3, 20, 40) @ b, (1, 20, 40), (3, 40, 24), False),
    "linear on 3-D input": (lambda x, w: F.linear(x, w), (3, 10, 40), (24, 40), True),
    "bmm of a batch-transposed operand": (lambda a, b: ember.bmm(a.transpose(0, 1), b), (20, 3, 40), (3, 40, 24),
                                          True),
    "einsum ij,jk->ki": (lambda a, b: ember.einsum("ij,jk->ki", a, b), (20, 40), (40, 24), True),
    "baddbmm beta=0": (lambda a, b: ember.baddbmm(ember.zeros(3, 20, 24), a, b, beta=0), (3, 20, 40), (3, 40, 24),
                       True),
    "4-D batch": (lambda a, b: a @ b, (2, 3, 20, 40), (2, 3, 40, 24), True),
    "(a @ b).t()": (lambda a, b: (a @ b).t(), (20, 40), (40, 24), True),
    "cat of two products": (lambda a, b: ember.cat([a @ b, a @ b[:, :20]], dim=1), (20, 40), (40, 24), True),
    "attention": (lambda q, k: (q @ k.transpose(-1, -2)).softmax(-1) @ k, (2, 20, 40), (2, 24, 40), True),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_cublas_computes_strided_transposed_and_broadcast_layouts(forced_cublas, name):
    fn, shape_a, shape_b, qualifies = LAYOUTS[name]
    rng = np.random.default_rng(len(name))
    arrays = [rng.standard_normal(s).astype(np.float32) for s in (shape_a, shape_b)]
    out, compiled, _ = compiled_run(fn, *arrays)
    np.testing.assert_allclose(out.numpy(), fn(*[ember.tensor(a) for a in arrays]).numpy(), rtol=1e-4, atol=1e-4)
    assert (FORCED in str(compiled.report)) == qualifies and bool(forced_cublas) == qualifies


def _write_slice(x, a, b):
    x[:, :24] = a @ b
    return x


def _copy_into_operand(a, b):
    a.copy_(a @ b)
    return a


def _out_is_operand(a, b):
    ember.matmul(a, b, out=a)
    return a


def _matmul_assign(a, b):
    a @= b  # (Python's a = a @ b: a new tensor, as in PyTorch)
    return a


def _operand_then_written(a, b):
    y = a @ b
    b.zero_()
    return y


WRITES = {"x[:, :24] = a @ b": (_write_slice, (20, 30), (20, 40), (40, 24)),
          "a.copy_(a @ b)": (_copy_into_operand, (40, 40), (40, 40)),
          "matmul(a, b, out=a)": (_out_is_operand, (40, 40), (40, 40)),
          "y = a @ b; b.zero_()": (_operand_then_written, (40, 40), (40, 40)),
          "a @= b": (_matmul_assign, (40, 40), (40, 40))}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_cublas_products_written_into_inputs_and_slices(forced_cublas, name):
    fn, *shapes = WRITES[name]
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    out, compiled, args = compiled_run(fn, *arrays)
    eager_args = [ember.tensor(np.array(a)) for a in arrays]
    expected = fn(*eager_args)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
    for written, oracle in zip(args, eager_args):
        np.testing.assert_allclose(written.numpy(), oracle.numpy(), rtol=1e-4, atol=1e-4)
    assert FORCED in str(compiled.report)


@settings(max_examples=8, deadline=None)
@given(m=st.integers(4, 30), n=st.integers(4, 30), k=st.integers(33, 50), batch=st.sampled_from([0, 1, 3]),
       broadcast=st.sampled_from(["none", "left", "right"]), transpose_a=st.booleans(), transpose_b=st.booleans(),
       offset=st.integers(0, 2))
def test_random_cublas_layouts_equal_eager(m, n, k, batch, broadcast, transpose_a, transpose_b, offset):
    """Sliced (offset rows/columns), transposed and batch-broadcast operands through cuBLAS."""
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    lead_a = (batch,) if batch and broadcast != "left" else ((1,) if batch else ())
    lead_b = (batch,) if batch and broadcast != "right" else ()
    shape_a = lead_a + ((k + offset, m + offset) if transpose_a else (m + offset, k + offset))
    shape_b = lead_b + ((n, k + offset) if transpose_b else (k + offset, n))
    a = rng.standard_normal(shape_a).astype(np.float32)
    b = rng.standard_normal(shape_b).astype(np.float32)

    def fn(a, b):
        a = a.transpose(-1, -2) if transpose_a else a
        b = b.transpose(-1, -2) if transpose_b else b
        return a[..., offset:, offset:] @ b[..., offset:, :]
    previous = os.environ.get("EMBER_GPU_GEMM")
    os.environ["EMBER_GPU_GEMM"] = "cublas"
    try:
        out, _, _ = compiled_run(fn, a, b)
    finally:
        if previous is None:
            del os.environ["EMBER_GPU_GEMM"]
        else:
            os.environ["EMBER_GPU_GEMM"] = previous
    np.testing.assert_allclose(out.numpy(), fn(ember.tensor(a), ember.tensor(b)).numpy(), rtol=1e-4, atol=1e-4)


def _clipped_step(model, optimizer):
    def step(x, t):
        optimizer.zero_grad()
        loss = F.mse_loss(model(x), t)
        loss.backward()
        ember.nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # (the weight gradients are plain products)
        optimizer.step()
        return loss
    return step


@pytest.mark.parametrize("where", ["host", "cuda"])
def test_weight_gradients_through_cublas_in_a_training_step(forced_cublas, cuda, where):
    """The backward's a.t() @ g products run on cuBLAS; weights after 4 steps equal eager CPU."""
    def build():
        ember.manual_seed(0)
        return ember.nn.Sequential(ember.nn.Linear(40, 36), ember.nn.Tanh(), ember.nn.Linear(36, 20))
    models = [build(), build()]
    if where == "cuda":
        models[1].to("cuda")
    optimizers = [ember.optim.SGD(m.parameters(), lr=0.1) for m in models]
    eager = _clipped_step(models[0], optimizers[0])
    compiled = ember.compile(_clipped_step(models[1], optimizers[1]),
                             **({"backend": "ptx-emulated"} if where == "host" else {}))
    rng = np.random.default_rng(0)
    for _ in range(4):
        x, t = rng.standard_normal((48, 40)).astype(np.float32), rng.standard_normal((48, 20)).astype(np.float32)
        expected = eager(ember.tensor(x), ember.tensor(t)).item()
        xs, ts = ember.tensor(x), ember.tensor(t)
        if where == "cuda":
            xs, ts = xs.cuda(), ts.cuda()
        np.testing.assert_allclose(compiled(xs, ts).item(), expected, rtol=1e-5)
    assert compiled.report.compiled_calls >= 2 and FORCED in str(compiled.report)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_allclose(q.detach().cpu().numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_device_resident_cublas_launches_follow_moving_buffers(forced_cublas, cuda):
    """Each call's inputs and outputs are new device arrays: the cuBLAS launches rebind to them."""
    compiled = ember.compile(lambda a, b, c: ((a @ b) @ c, a.t() @ a))
    rng = np.random.default_rng(2)
    for _ in range(4):
        a, b, c = [ember.tensor(rng.standard_normal(s).astype(np.float32)) for s in [(30, 40), (40, 36), (36, 20)]]
        y, z = compiled(a.cuda(), b.cuda(), c.cuda())
        assert y.is_cuda and z.is_cuda
        np.testing.assert_allclose(y.cpu().numpy(), ((a @ b) @ c).numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(z.cpu().numpy(), (a.t() @ a).numpy(), rtol=1e-4, atol=1e-4)
    assert FORCED in str(compiled.report)


@pytest.mark.parametrize("shape", [(4, 16, 40), (17, 9, 33), (37, 45, 29), (65, 70, 41)])
def test_tf32_products_with_sides_off_the_fragment_grid(switches, shape):
    """M, N not multiples of 16 / 8 / 64, with a bias and relu epilogue."""
    switches.cuda.matmul.allow_tf32 = True
    m, n, k = shape
    rng = np.random.default_rng(m)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    out, _, _ = compiled_run(lambda x, y, z: (x @ y + z).relu(), a, b, bias)
    assert_tf32(out.numpy(), np.maximum(tf32_64(a) @ tf32_64(b) + bias, 0),
                np.maximum(a.astype(np.float64) @ b + bias, 0))


def test_tf32_broadcast_batch_and_linear_on_3d_input(switches):
    switches.cuda.matmul.allow_tf32 = True
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((1, 37, 45)).astype(np.float32), rng.standard_normal((4, 45, 29)).astype(np.float32)
    out, _, _ = compiled_run(lambda x, y: x @ y, a, b)
    assert_tf32(out.numpy(), tf32_64(a) @ tf32_64(b), a.astype(np.float64) @ b)
    x, w = rng.standard_normal((3, 17, 45)).astype(np.float32), rng.standard_normal((29, 45)).astype(np.float32)
    out, _, _ = compiled_run(lambda x, w: F.linear(x, w), x, w)
    assert_tf32(out.numpy(), tf32_64(x) @ tf32_64(w).T, x.astype(np.float64) @ w.T)


def test_tf32_split_depth_product(switches):
    """Few output tiles and a long depth: "tiles_split" on tensor cores, then "tiles_sum"."""
    switches.cuda.matmul.allow_tf32 = True
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((8, 1024)).astype(np.float32), rng.standard_normal((1024, 8)).astype(np.float32)
    assert [mode for _, mode, tf32 in tiles_launches(lambda x, y: x @ y, a, b) if tf32] == ["tiles_split"]
    out, _, _ = compiled_run(lambda x, y: x @ y, a, b)
    assert_tf32(out.numpy(), tf32_64(a) @ tf32_64(b), a.astype(np.float64) @ b)


def test_float64_never_uses_tf32(switches):
    switches.cuda.matmul.allow_tf32, switches.cudnn.allow_tf32 = True, True
    a, b = A.astype(np.float64), B.astype(np.float64)
    out, _, _ = compiled_run(lambda x, y: (x @ y).relu(), a, b)
    np.testing.assert_allclose(out.numpy(), np.maximum(a @ b, 0), rtol=1e-12, atol=1e-12)


def test_compiled_products_follow_every_switch_change(switches):
    compiled = ember.compile(lambda x, y: (x @ y).relu(), backend="ptx-emulated")
    a, b = ember.tensor(A), ember.tensor(B)
    for setting, tf32 in [(False, False), (True, True), (False, False), ("medium", True), ("highest", False),
                          ("high", True)]:
        if isinstance(setting, str):
            ember.set_float32_matmul_precision(setting)
        else:
            switches.cuda.matmul.allow_tf32 = setting
        for _ in range(3):
            out = compiled(a, b).numpy()
        if tf32:
            assert_tf32(out, np.maximum(TF32, 0), np.maximum(EXACT, 0))
        else:
            assert_exact(out, np.maximum(EXACT, 0))


def test_convolutions_follow_cudnn_and_products_the_matmul_switch_in_a_training_step(switches):
    """Forward and backward kernels of a conv + linear step: conv2d, conv2d_grad_weight follow
    cudnn.allow_tf32, the linear's products matmul.allow_tf32."""
    ember.manual_seed(0)
    model = ember.nn.Sequential(ember.nn.Conv2d(2, 8, 3), ember.nn.ReLU(), ember.nn.Flatten(),
                                ember.nn.Linear(8 * 6 * 6, 16))
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1)

    def step(x, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        return loss
    x, y = ember.randn(32, 2, 8, 8), ember.randint(0, 16, (32,))
    for matmul, conv in [(True, False), (False, True)]:
        switches.cuda.matmul.allow_tf32, switches.cudnn.allow_tf32 = matmul, conv
        graph = ember.trace(step, x, y)
        target = PtxTarget("sm_90", emulated=True)
        launches = [(launch.entry, launch.tf32) for launch in target.launches(lower(plan(graph), target))
                    if launch.mode in ("tiles", "tiles_split")]
        assert len(launches) == 4
        for entry, tf32 in launches:
            assert tf32 == (conv if entry.startswith("conv2d") else matmul), entry


def test_eager_cuda_products_follow_the_switch_on_first_use(switches, cuda):
    switches.cuda.matmul.allow_tf32, switches.cudnn.allow_tf32 = True, False
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((3, 37, 45)).astype(np.float32), rng.standard_normal((3, 45, 29)).astype(np.float32)
    c = rng.standard_normal((3, 37, 29)).astype(np.float32)
    ac, bc, cc = (ember.tensor(v).cuda() for v in (a, b, c))
    tf32, exact = tf32_64(a) @ tf32_64(b), a.astype(np.float64) @ b
    assert_tf32(ember.bmm(ac, bc).cpu().numpy(), tf32, exact)
    assert_tf32(F.linear(ac, bc[0].t()).cpu().numpy(), tf32_64(a) @ tf32_64(b[0]), a.astype(np.float64) @ b[0])
    assert_tf32(ember.baddbmm(cc, ac, bc).cpu().numpy(), tf32 + c, exact + c)


def test_report_names_the_cublas_launches_of_a_no_grad_call(forced_cublas):
    ember.manual_seed(0)
    compiled = ember.compile(ember.nn.Linear(40, 36, bias=False), backend="ptx-emulated")
    x = ember.randn(48, 40)
    with ember.no_grad():
        for _ in range(3):
            compiled(x)
    assert "GPU matrix products (cuBLAS or the tiled kernel, per launch):\n  matmul_48x36: " + FORCED \
        in str(compiled.report)


@pytest.mark.parametrize("where", ["cpu", "cuda"])
def test_cublas_product_written_back_into_the_tensor_it_reads(forced_cublas, cuda, where):
    """`w.copy_(w @ m)` on a closed-over tensor (on the device: used in place by the program)."""
    rng = np.random.default_rng(8)
    start = rng.standard_normal((40, 40)).astype(np.float32)
    w, oracle = ember.tensor(start.copy()).to(where), ember.tensor(start.copy())

    def update(m):
        w.copy_(w @ m)
        return w.sum()
    compiled = ember.compile(update, **({"backend": "ptx-emulated"} if where == "cpu" else {}))
    for _ in range(4):
        m = ember.tensor((rng.standard_normal((40, 40)) * 0.2).astype(np.float32))
        total = compiled(m.to(where))
        oracle.copy_(oracle @ m)
        np.testing.assert_allclose(total.item(), oracle.sum().item(), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(w.cpu().numpy(), oracle.numpy(), rtol=1e-4, atol=1e-4)
    assert compiled.report.compiled_calls >= 2 and FORCED in str(compiled.report)


def test_tf32_products_keep_infinities_and_nans_where_float32_has_them(switches):
    switches.cuda.matmul.allow_tf32 = True
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((70, 40)).astype(np.float32), rng.standard_normal((40, 50)).astype(np.float32)
    a[3, 5], a[10, 7], b[2, 9], a[21, 0] = np.inf, np.nan, -np.inf, 1e-40
    out, _, _ = compiled_run(lambda x, y: (x @ y) * 1.0, a, b)
    with np.errstate(invalid="ignore", over="ignore"):
        exact = a.astype(np.float64) @ b.astype(np.float64)
    out = out.numpy()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(exact))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(exact))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(exact))
    finite = np.isfinite(exact)
    assert relative(out[finite], exact[finite]) < 1e-3
