"""compiler/llvm_matmul.py and llvm_conv.py: ember_sgemm against numpy for many shapes
(edge tiles, primes, transposed strides, beta, threads, another register blocking) and the
conv2d kernels against ember.ops' numpy implementations (stride, padding, dilation, groups)."""
import ctypes

import numpy as np
import pytest

pytest.importorskip("llvmlite")

from ember.compiler.cpu import host as llvm_target, sgemm as llvm_matmul  # noqa: E402

_P, _I64, _F32, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int32
SGEMM_THREADS_TYPE = ctypes.CFUNCTYPE(None, _I64, _I64, _I64, _P, _I64, _I64, _P, _I64, _I64, _P, _I64, _F32, _I32)


class Sgemm:
    """ember_sgemm_threads JIT-compiled with one geometry; call with numpy views."""

    def __init__(self, geometry=None, parallel=None):
        llvm = llvm_target.llvm_binding()
        module = llvm_target.new_module("sgemm_tests")
        llvm_matmul.define_sgemm(module, geometry, parallel)
        parsed = llvm.parse_assembly(str(module))
        parsed.verify()
        llvm_target.optimize_module(parsed)
        self.engine = llvm.create_mcjit_compiler(parsed, llvm_target.new_host_target_machine())
        self.engine.finalize_object()
        self.function = SGEMM_THREADS_TYPE(self.engine.get_function_address(llvm_matmul.SGEMM_THREADS_NAME))

    def __call__(self, a, b, c, beta=0.0, threads=1):
        """c = beta * c + a @ b for float32 views with any strides (c rows contiguous)."""
        (m, k), (k2, n) = a.shape, b.shape
        assert k == k2 and c.shape == (m, n) and (c.strides[1] == 4 or c.size == 0)
        self.function(m, n, k, a.ctypes.data, a.strides[0] // 4, a.strides[1] // 4,
                      b.ctypes.data, b.strides[0] // 4, b.strides[1] // 4, c.ctypes.data, c.strides[0] // 4,
                      beta, threads)
        return c


@pytest.fixture(scope="module")
def sgemm():
    return Sgemm()


def operands(rng, m, n, k):
    return rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)


def expected(a, b, c=None, beta=0.0):
    product = a.astype(np.float64) @ b.astype(np.float64)
    return product if c is None or beta == 0 else beta * c.astype(np.float64) + product


def assert_close(got, want, k):
    # float32 accumulation over k terms of unit-variance products
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6 * max(k, 1) ** 0.5 * 8)


SHAPES = [(1, 1, 1), (1, 1, 7), (2, 3, 1), (5, 7, 11), (6, 16, 8), (7, 17, 9), (13, 31, 3), (17, 33, 65),
          (31, 1, 257), (1, 97, 300), (64, 10, 84), (64, 120, 400), (97, 101, 103), (150, 40, 520),
          (145, 300, 260)]


@pytest.mark.parametrize("m,n,k", SHAPES)
def test_sgemm_matches_numpy(sgemm, m, n, k):
    a, b = operands(np.random.default_rng(m * 1000 + n), m, n, k)
    c = np.full((m, n), np.nan, np.float32)  # beta = 0 must not read C
    assert_close(sgemm(a, b, c), expected(a, b), k)


@pytest.mark.parametrize("transpose_a,transpose_b", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,n,k", [(7, 17, 9), (17, 33, 65), (64, 120, 400), (150, 40, 520)])
def test_sgemm_transposed_operands_are_strides(sgemm, m, n, k, transpose_a, transpose_b):
    a, b = operands(np.random.default_rng(1), m, n, k)
    a_view = np.ascontiguousarray(a.T).T if transpose_a else a
    b_view = np.ascontiguousarray(b.T).T if transpose_b else b
    assert_close(sgemm(a_view, b_view, np.empty((m, n), np.float32)), expected(a, b), k)


def test_sgemm_general_strides_and_row_stride_of_c(sgemm):
    rng = np.random.default_rng(2)
    big_a = rng.standard_normal((40, 90)).astype(np.float32)
    big_b = rng.standard_normal((70, 50)).astype(np.float32)
    a, b = big_a[1::2, 3::3], big_b[::2, 1::2]  # 20x29 and 35x25: no unit strides at all
    a, b = a[:, :29], b[:29, :]
    big_c = np.zeros((20, 40), np.float32)
    c = big_c[:, 5:30]
    sgemm(a, b, c)
    assert_close(c, expected(a, b), 29)
    assert (big_c[:, :5] == 0).all() and (big_c[:, 30:] == 0).all()


@pytest.mark.parametrize("beta", [1.0, 0.5, -2.0])
@pytest.mark.parametrize("m,n,k", [(7, 17, 9), (97, 101, 300), (150, 40, 520)])
def test_sgemm_beta_accumulates(sgemm, m, n, k, beta):
    rng = np.random.default_rng(3)
    a, b = operands(rng, m, n, k)
    c = rng.standard_normal((m, n)).astype(np.float32)
    assert_close(sgemm(a, b, c.copy(), beta=beta), expected(a, b, c, beta), k)


def test_sgemm_k_zero_scales_c(sgemm):
    c = np.arange(12, dtype=np.float32).reshape(3, 4)
    a, b = np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32)
    np.testing.assert_array_equal(sgemm(a, b, c.copy(), beta=0.5), c * 0.5)
    np.testing.assert_array_equal(sgemm(a, b, np.full_like(c, np.nan), beta=0.0), np.zeros_like(c))


def test_sgemm_empty_m_or_n_writes_nothing(sgemm):
    buffer = np.full((4, 6), 7.0, np.float32)
    sgemm(np.ones((0, 5), np.float32), np.ones((5, 3), np.float32), buffer[:0, :3])
    sgemm(np.ones((2, 5), np.float32), np.ones((5, 0), np.float32), buffer[:2, :0])
    assert (buffer == 7.0).all()


@pytest.mark.parametrize("threads", [2, 3, 4])
@pytest.mark.parametrize("m,n,k", [(300, 260, 280), (20, 700, 300), (500, 30, 290), (64, 1100, 600)])
def test_sgemm_threads_agree_with_numpy(sgemm, m, n, k, threads):
    if llvm_matmul.load_libgomp() is None:
        pytest.skip("libgomp is not installed: sgemm is single-threaded")
    a, b = operands(np.random.default_rng(4), m, n, k)
    c = np.random.default_rng(5).standard_normal((m, n)).astype(np.float32)
    assert_close(sgemm(a, b, c.copy(), beta=1.0, threads=threads), expected(a, b, c, 1.0), k)


@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_sgemm_packs_a_large_a_and_reads_a_small_one_in_place(sgemm, transpose_a, transpose_b, threads):
    # A of more than DIRECT_A_FLOATS elements is packed in blocks; a smaller one is read
    # through its strides (rows past the last tile's clamped): both, with every layout
    rng = np.random.default_rng(8)
    large = llvm_matmul.DIRECT_A_FLOATS // 400 + 13
    for m, n, k in [(large, 70, 400), (large, 33, 401), (37, 70, 400), (9, 129, 17)]:
        a, b = operands(rng, m, n, k)
        a_view = np.ascontiguousarray(a.T).T if transpose_a else a
        b_view = np.ascontiguousarray(b.T).T if transpose_b else b
        c = rng.standard_normal((m, n)).astype(np.float32)
        got = sgemm(a_view, b_view, c.copy(), beta=0.5, threads=threads)
        assert_close(got, expected(a, b, c, 0.5), k)


def test_sgemm_random_shapes_strides_and_threads(sgemm):
    # transposed B panels are packed through in-register transposes of 16 x 16 blocks (whole
    # panels, whole blocks of k) and element by element elsewhere: random edges of both
    rng = np.random.default_rng(9)
    for _ in range(60):
        m, n, k = (int(v) for v in rng.integers(1, 90, size=3))
        a, b = operands(rng, m, n, k)
        a_view, b_view = _strided_copy(a, rng), _strided_copy(b, rng)
        beta = float(rng.choice([0.0, 1.0, -0.5]))
        c = rng.standard_normal((m, n)).astype(np.float32)
        got = sgemm(a_view, b_view, c.copy() if beta else np.full_like(c, np.nan), beta=beta,
                    threads=int(rng.integers(1, 4)))
        assert_close(got, expected(a, b, c, beta), k)


def _strided_copy(x, rng):
    """x as a view of a larger buffer: row- or column-major storage, elements 1 or 2 apart."""
    step = int(rng.integers(1, 3))
    transposed = rng.random() < 0.5
    stored = x.T if transposed else x
    buffer = np.zeros((stored.shape[0], stored.shape[1] * step), np.float32)
    buffer[:, ::step] = stored
    view = buffer[:, ::step]
    return view.T if transposed else view


def test_sgemm_blocks_larger_than_kc_and_nc():
    # small cache blocks so several jc/pc/ic blocks and edge blocks appear on small shapes
    geometry = llvm_matmul.SgemmGeometry(lanes=8, mr=6, nr=16, mc=12, kc=16, nc=32)
    small_blocks = Sgemm(geometry)
    rng = np.random.default_rng(6)
    for m, n, k in [(29, 70, 50), (12, 32, 16), (13, 33, 17)]:
        a, b = operands(rng, m, n, k)
        c = rng.standard_normal((m, n)).astype(np.float32)
        assert_close(small_blocks(a, b, c.copy(), beta=0.5), expected(a, b, c, 0.5), k)
        assert_close(small_blocks(a, b, c.copy(), beta=0.5, threads=2), expected(a, b, c, 0.5), k)


@pytest.mark.parametrize("mr", [8, 14])
def test_sgemm_avx512_blockings_are_correct_on_any_host(mr):
    # 16-lane geometries (8x32 is chosen on AVX-512 hosts); LLVM splits the vectors where lanes are fewer
    geometry = llvm_matmul.SgemmGeometry(lanes=16, mr=mr, nr=32, mc=2 * mr, kc=24, nc=64)
    wide = Sgemm(geometry, parallel=False)
    rng = np.random.default_rng(7)
    for m, n, k in [(1, 1, 1), (mr, 32, 24), (29, 70, 50), (mr + 1, 33, 25)]:
        a, b = operands(rng, m, n, k)
        assert_close(wide(a, b, np.empty((m, n), np.float32)), expected(a, b), k)


def test_geometry_must_tile():
    with pytest.raises(ValueError, match="NR must be a multiple of the lanes"):
        llvm_matmul.SgemmGeometry(lanes=8, mr=6, nr=12, mc=12, kc=16, nc=48)


def test_define_sgemm_is_idempotent():
    module = llvm_target.new_module("twice")
    assert llvm_matmul.define_sgemm(module) is llvm_matmul.define_sgemm(module)


def test_num_threads_from_environment(monkeypatch):
    monkeypatch.setenv("EMBER_NUM_THREADS", "3")
    assert llvm_matmul.default_num_threads() == 3
    monkeypatch.setenv("EMBER_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="EMBER_NUM_THREADS must be a positive integer, got 'zero'"):
        llvm_matmul.default_num_threads()


# ----------------------------------------------------------------------------- conv2d

from ember.compiler.cpu import conv as llvm_conv  # noqa: E402
from ember.ops import PRIMITIVES  # noqa: E402

CANARY = np.arange(0x7F7A0000, 0x7F7A0040, dtype=np.uint32).view(np.float32)
_CONV_TYPE = ctypes.CFUNCTYPE(None, _P, _P, _P, *([_I64] * 14), _P, _I64, _I32)


class Conv:
    """The three conv entry points JIT-compiled in one module (with one sgemm blocking)."""

    def __init__(self, geometry=None):
        llvm = llvm_target.llvm_binding()
        module = llvm_target.new_module("conv_tests")
        self.geometry = geometry
        for kind in llvm_conv.KINDS:
            llvm_conv.define_conv2d(module, kind, geometry=geometry)
        parsed = llvm.parse_assembly(str(module))
        parsed.verify()
        llvm_target.optimize_module(parsed)
        self.engine = llvm.create_mcjit_compiler(parsed, llvm_target.new_host_target_machine())
        self.engine.finalize_object()
        self.functions = {kind: _CONV_TYPE(self.engine.get_function_address(llvm_conv.ENTRY_NAMES[kind]))
                          for kind in llvm_conv.KINDS}

    def __call__(self, kind, in0, in1, out_shape, x_shape, w_shape, attrs, threads=1, slots=None):
        stride, padding, dilation, groups = (attrs[a] for a in ("stride", "padding", "dilation", "groups"))
        if slots is None:
            slots = max(1, min(threads, x_shape[0]))
        size = llvm_conv.conv2d_workspace_bytes(kind, x_shape, w_shape, stride, padding, dilation, groups, slots,
                                                self.geometry)
        # workspace and output start as nan garbage and end in canaries: a kernel must not
        # read the garbage, nor write past what conv2d_workspace_bytes and the shape allow
        workspace = np.concatenate([np.full(size // 4, np.nan, np.float32), CANARY])
        out_size = int(np.prod(out_shape))
        out_buffer = np.concatenate([np.full(out_size, np.nan, np.float32), CANARY])
        o, _, kh, kw = w_shape
        self.functions[kind](in0.ctypes.data, in1.ctypes.data, out_buffer.ctypes.data, *x_shape, o, kh, kw,
                             *stride, *padding, *dilation, groups, workspace.ctypes.data, slots, threads)
        assert (workspace[size // 4:].view(np.uint32) == CANARY.view(np.uint32)).all(), f"{kind}: workspace overrun"
        assert (out_buffer[out_size:].view(np.uint32) == CANARY.view(np.uint32)).all(), f"{kind}: output overrun"
        return out_buffer[:out_size].reshape(out_shape)


@pytest.fixture(scope="module")
def conv():
    return Conv()


CONV_CASES = [  # x shape, weight shape, stride, padding, dilation, groups
    ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (0, 0), (1, 1), 1),
    ((1, 4, 9, 7), (6, 2, 3, 2), (2, 1), (1, 2), (1, 2), 2),
    ((3, 6, 5, 5), (6, 1, 1, 1), (1, 1), (0, 0), (1, 1), 6),
    ((4, 4, 6, 6), (8, 4, 1, 1), (1, 1), (0, 0), (1, 1), 1),
    ((2, 2, 7, 9), (3, 2, 3, 3), (3, 2), (2, 1), (2, 1), 1),
    ((3, 3, 32, 32), (6, 3, 5, 5), (1, 1), (0, 0), (1, 1), 1),
    ((2, 6, 14, 14), (16, 6, 5, 5), (1, 1), (2, 2), (1, 1), 1),
    ((2, 4, 11, 10), (6, 4, 1, 1), (2, 2), (0, 0), (1, 1), 1),
    ((1, 8, 12, 12), (8, 2, 3, 3), (1, 1), (1, 1), (2, 2), 4),
    ((2, 3, 6, 6), (4, 3, 1, 1), (1, 1), (1, 1), (1, 1), 1),  # grad_input's direct pad is -1: a crop
    ((2, 5, 9, 40), (14, 5, 3, 4), (2, 1), (0, 3), (1, 1), 1),  # several 16-wide tiles per output row
    ((1, 2, 6, 6), (3, 2, 2, 2), (1, 3), (1, 0), (1, 1), 1),  # strided columns: im2col path
]


def _random_conv_case(rng):
    groups = int(rng.choice([1, 1, 2, 3]))
    cg, og = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    stride = tuple(int(s) for s in rng.integers(1, 4, 2))
    dilation = tuple(int(d) for d in rng.integers(1, 3, 2))
    padding = tuple(int(p) for p in rng.integers(0, 3, 2))
    h = int(dilation[0] * (kh - 1) + 1 + rng.integers(0, 9))
    w = int(dilation[1] * (kw - 1) + 1 + rng.integers(0, 9))
    return (int(rng.integers(1, 4)), cg * groups, h, w), (og * groups, cg, kh, kw), stride, padding, dilation, groups


CONV_CASES += [_random_conv_case(np.random.default_rng(seed)) for seed in range(12)]


def check_conv_case(conv, case, threads):
    x_shape, w_shape, stride, padding, dilation, groups = case
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    rng = np.random.default_rng(sum(x_shape) + sum(w_shape))
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    y = PRIMITIVES["conv2d"].impl(x, w, **attrs)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = PRIMITIVES["conv2d_grad_input"].impl(dy, w, input_shape=x_shape, **attrs)
    dw = PRIMITIVES["conv2d_grad_weight"].impl(x, dy, weight_shape=w_shape, **attrs)
    tolerance = dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv("conv2d", x, w, y.shape, x_shape, w_shape, attrs, threads), y, **tolerance)
    np.testing.assert_allclose(conv("conv2d_grad_input", dy, w, x_shape, x_shape, w_shape, attrs, threads), dx,
                               **tolerance)
    np.testing.assert_allclose(conv("conv2d_grad_weight", x, dy, w_shape, x_shape, w_shape, attrs, threads), dw,
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda case: "x{}-w{}-s{}-p{}-d{}-g{}".format(*case))
def test_conv2d_and_gradients_match_ember_ops(conv, case, threads):
    check_conv_case(conv, case, threads)


def test_conv2d_with_the_avx512_blocking_is_correct_on_any_host():
    # 16 lanes, 8x32 tiles, 4x6 weight-gradient tiles: what AVX-512 hosts compile (vectors split here)
    wide = Conv(llvm_matmul.SgemmGeometry(lanes=16, mr=8, nr=32, mc=16, kc=40, nc=64))
    for case in CONV_CASES[:12]:
        check_conv_case(wide, case, threads=2)


def test_conv2d_grad_weight_of_an_empty_batch_is_zero(conv):
    attrs = dict(stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1)
    x = np.zeros((0, 2, 5, 5), np.float32)
    dy = np.zeros((0, 3, 3, 3), np.float32)
    dw = conv("conv2d_grad_weight", x, dy, (3, 2, 3, 3), x.shape, (3, 2, 3, 3), attrs)
    np.testing.assert_array_equal(dw, np.zeros((3, 2, 3, 3), np.float32))


def test_conv2d_workspace_bytes():
    from ember.compiler.cpu.conv_direct import grad_weight_workspace_floats, workspace_floats
    args = ((8, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0), (1, 1), 1)
    direct = workspace_floats(6, 16, 10, 10, 5, 5, 1, 1, 1)
    assert llvm_conv.conv2d_workspace_bytes("conv2d", *args, slots=2) == 4 * 2 * direct
    direct_weight = grad_weight_workspace_floats(6, 16, 10, 10, 5, 5, 1, 1)
    assert llvm_conv.conv2d_workspace_bytes("conv2d_grad_weight", *args, slots=1) == 4 * (direct_weight + 16 * 150)
    strided = ((8, 6, 14, 14), (16, 6, 5, 5), (2, 2), (0, 0), (1, 1), 1)  # im2col: 150 x 5*5
    assert llvm_conv.conv2d_workspace_bytes("conv2d", *strided, slots=1) == 4 * 150 * 25
    assert llvm_conv.conv2d_workspace_bytes("conv2d_grad_weight", *strided, slots=1) == 4 * (150 * 25 + 16 * 150)
    pointwise = ((8, 6, 14, 14), (16, 6, 1, 1), (1, 1), (0, 0), (1, 1), 1)
    assert llvm_conv.conv2d_workspace_bytes("conv2d", *pointwise, slots=2) == 0
    with pytest.raises(ValueError, match="unknown kind 'conv3d'"):
        llvm_conv.conv2d_workspace_bytes("conv3d", *args)


def test_a_linear_layer_on_a_stack_of_rows_is_one_product_forward_and_backward():
    # [batch, tokens, features] @ [features, out]: one sgemm over batch * tokens rows (as PyTorch
    # folds it), not one per batch entry; its weight gradient one sgemm with k = batch * tokens
    import ember
    from ember.compiler.stage_rendering import render
    weight = ember.randn(128, 32, requires_grad=True)

    def step(x):
        out = x @ weight
        out.sum().backward()
        return out

    x = ember.randn(8, 64, 128)
    text = render(ember.trace(step, x), "kernels", "text")
    products = sorted(line.split(":")[0].strip() for line in text.splitlines() if "sgemm" in line)
    assert products == ["sgemm 128x32x512", "sgemm 512x32x128"], text
    compiled = ember.compile(step)
    for _ in range(3):
        weight.grad = None
        out = compiled(x)
        np.testing.assert_allclose(out.detach().numpy(), x.numpy() @ weight.detach().numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(weight.grad.numpy(), x.numpy().reshape(-1, 128).sum(0)[:, None].repeat(32, 1),
                                   rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("case", ["expanded", "sliced_rows", "unsqueezed_slice", "reshaped", "transposed_then_reshaped"])
def test_stacks_of_rows_that_are_not_evenly_spaced_are_not_merged(case):
    # a size-1 axis between the batch and the rows says nothing about the spacing of the rest:
    # merging such stacks into one sgemm read past the operand (found by an adversarial round)
    import ember
    a, b = ember.randn(64, 64), ember.randn(64, 48)
    forms = {"expanded": lambda a, b: a.expand(2, 1, 64, 64) @ b,
             "sliced_rows": lambda a, b: a[:, :32][:, None] @ b[:32],
             "unsqueezed_slice": lambda a, b: a[:, :32].unsqueeze(1) @ b[:32],
             "reshaped": lambda a, b: a.reshape(4, 16, 64) @ b,
             "transposed_then_reshaped": lambda a, b: a.t().reshape(4, 16, 64) @ b}
    compiled = ember.compile(forms[case])
    for _ in range(2):
        np.testing.assert_allclose(compiled(a, b).numpy(), forms[case](a, b).numpy(), rtol=1e-4, atol=1e-4)


def test_a_stack_of_empty_rows_times_a_matrix_is_zeros():
    import ember
    assert (ember.zeros(2, 3, 0) @ ember.zeros(0, 5)).tolist() == [[[0.0] * 5] * 3] * 2
