"""Adversarial tests of three performance paths, each compiled result compared with eager ember
(PyTorch's semantics) or with a brute-force / float64 reference:

1. compiler/cpu/sgemm.py and compiler/lowering_contractions.py: an A of at most
   DIRECT_A_FLOATS elements read unpacked through its strides (rows past the last tile
   clamped), rows shared out in MR-row tiles, transposed B panels packed by in-register
   transposes, and batched products too small to thread run as a parallel loop over the batch.
2. compiler/loop_ir.py: `_coarse_part`, e = g*Q + R with R in [0, g) and g | c gives
   e // c == Q // (c/g) and e % c == g*(Q % (c/g)) + R (reshaped and transposed matmul
   operands become strided views).
3. passes/fusion.py: a shared value whose recompute tree holds a COSTLY_OPS op (erf, atan...)
   is stored once by its first consumer kernel (at that kernel's root index) and read by the
   others; lowering drops a store of a value already in place.

Written by an adversarial round against these changes; none of the cases below found a defect
when written, they guard the edges that were attacked (thresholds, strides, thread counts,
dynamic sizes, consumer orders, mutations, training steps)."""
import itertools
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import ember
import graph_gen
from ember import config
from ember.compiler import loop_ir as L
from ember.compiler.backends import llvm_backend as LLVMBackend
from ember.compiler.cpu import sgemm as llvm_matmul
from ember.ir import run_graph
from ember.passes.fusion import fuse
from ember.passes.group_executor import execute_planned
from ember.passes.memory import plan_memory
from test_llvm_matmul import Sgemm

F = ember.nn.functional
nn = ember.nn


@pytest.fixture(autouse=True)
def _restore_threads():
    before = ember.get_num_threads()
    yield
    ember.set_num_threads(before)


def _randn(rng, *shape):
    return ember.tensor(rng.standard_normal(shape).astype(np.float32))


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _assert_matmul_close(got, want, k, what=""):
    """float32 accumulation over k products of unit-variance operands."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=3e-5 * max(k, 1) ** 0.5, err_msg=what)


def _compiled_vs_eager(fn, args, k, calls=2, what=""):
    """Calls ember.compile(fn) `calls` times (the first traces), compares with eager."""
    compiled = ember.compile(fn)
    for _ in range(calls):
        got = compiled(*args)
    want = fn(*args)
    assert compiled.report.compiled_calls >= 1, what
    for g, w in zip(_as_tuple(got), _as_tuple(want)):
        _assert_matmul_close(g.detach().numpy(), w.detach().numpy(), k, what)
    return compiled


def _assert_same(got, want, rtol=1e-4, atol=1e-5, what=""):
    got, want = _as_tuple(got), _as_tuple(want)
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        assert tuple(g.shape) == tuple(w.shape), f"{what}: shape {tuple(g.shape)} != eager {tuple(w.shape)}"
        np.testing.assert_allclose(g.detach().numpy(), w.detach().numpy(), rtol=rtol, atol=atol, err_msg=what)


# ============================================================================ 1. sgemm and batched products

GEOMETRIES = {
    "host": None,
    "tiny_blocks_8_lanes": llvm_matmul.SgemmGeometry(lanes=8, mr=6, nr=16, mc=12, kc=16, nc=32),  # 8x8 transposes
    "avx2": llvm_matmul.SgemmGeometry(lanes=8, mr=6, nr=16, mc=6 * 24, kc=256, nc=4096),
    "sse_4_lanes": llvm_matmul.SgemmGeometry(lanes=4, mr=6, nr=8, mc=6 * 16, kc=256, nc=2048),  # 4x4 transposes
    "odd_mr": llvm_matmul.SgemmGeometry(lanes=16, mr=3, nr=16, mc=9, kc=33, nc=48),
}


@pytest.fixture(scope="module")
def sgemms():
    return {}


def _sgemm(sgemms, name):
    if name not in sgemms:
        sgemms[name] = Sgemm(GEOMETRIES[name])
    return sgemms[name]


def _layout(x, kind):
    """x (2-d float32) as a view with other strides: transposed storage, negative strides
    (a flip of a flipped copy), or every second/third element of a wider buffer."""
    if kind == "plain":
        return x
    if kind == "transposed":
        return np.ascontiguousarray(x.T).T
    if kind == "rows_reversed":
        return np.ascontiguousarray(x[::-1])[::-1]
    if kind == "cols_reversed":
        return np.ascontiguousarray(x[:, ::-1])[:, ::-1]
    step = 2 if kind == "step2" else 3
    buffer = np.zeros((x.shape[0], x.shape[1] * step), np.float32)
    buffer[:, ::step] = x
    return buffer[:, ::step]


LAYOUTS = ("plain", "transposed", "rows_reversed", "cols_reversed", "step2", "step3")


def _sgemm_case(sgemm, rng, m, n, k, threads):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    a_view, b_view = _layout(a, rng.choice(LAYOUTS)), _layout(b, rng.choice(LAYOUTS))
    beta = float(rng.choice([0.0, 1.0, -0.5]))
    c = rng.standard_normal((m, n)).astype(np.float32)
    got = sgemm(a_view, b_view, c.copy() if beta else np.full_like(c, np.nan), beta=beta, threads=threads)
    want = a.astype(np.float64) @ b.astype(np.float64) + (beta * c.astype(np.float64) if beta else 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1.6e-5 * max(k, 1) ** 0.5,
                               err_msg=f"m={m} n={n} k={k} threads={threads} a strides {a_view.strides} "
                                       f"b strides {b_view.strides} beta={beta}")


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_sgemm_around_the_direct_a_threshold_with_any_strides_and_threads(sgemms, geometry):
    # m*k just below, at and above DIRECT_A_FLOATS (read unpacked / packed), k > KC, negative
    # and non-unit strides on both operands, 1-4 threads, beta 0 (C garbage) or not
    sgemm = _sgemm(sgemms, geometry)
    rng = np.random.default_rng(sorted(GEOMETRIES).index(geometry))
    for _ in range(6):
        k = int(rng.integers(257, 700))
        m = llvm_matmul.DIRECT_A_FLOATS // k + int(rng.integers(-1, 2))
        _sgemm_case(sgemm, rng, m, int(rng.integers(1, 80)), k, int(rng.integers(1, 5)))
    for _ in range(10):
        m, n, k = (int(v) for v in rng.integers(1, 120, 3))
        _sgemm_case(sgemm, rng, m, n, k, int(rng.integers(1, 5)))


def test_sgemm_few_row_tiles_over_many_threads():
    # flops above PARALLEL_MIN_FLOPS with few MR-row tiles: threads split rows in tiles or
    # B's panels, more threads than tiles
    sgemm = Sgemm()
    rng = np.random.default_rng(11)
    for _ in range(8):
        m, n = int(rng.integers(1, 40)), int(rng.integers(1, 70))
        k = min(20000, llvm_matmul.PARALLEL_MIN_FLOPS // (2 * m * n) + int(rng.integers(1, 2000)))
        _sgemm_case(sgemm, rng, m, n, k, int(rng.integers(2, 8)))


MATMUL_SHAPES = [(512, 33, 512), (513, 33, 511), (511, 40, 513), (4097, 17, 64), (262144 // 300 + 1, 70, 300),
                 (6, 31, 43690), (9, 16, 29127), (8, 4096, 8), (37, 45, 700)]


@pytest.mark.parametrize("m,n,k", MATMUL_SHAPES)
def test_compiled_matmul_at_the_direct_a_threshold_in_every_layout(m, n, k):
    rng = np.random.default_rng(m * 7 + n)
    for transposed, threads in zip(range(4), (1, 2, 3, 2)):
        ember.set_num_threads(threads)
        a = _randn(rng, *((k, m) if transposed & 1 else (m, k)))
        b = _randn(rng, *((n, k) if transposed & 2 else (k, n)))

        def fn(a, b, transposed=transposed):
            return (a.t() if transposed & 1 else a) @ (b.t() if transposed & 2 else b)
        compiled = ember.compile(fn)
        compiled(a, b)
        got = compiled(a, b)
        assert compiled.report.compiled_calls == 1
        a64 = a.numpy().astype(np.float64)
        b64 = b.numpy().astype(np.float64)
        want = (a64.T if transposed & 1 else a64) @ (b64.T if transposed & 2 else b64)
        _assert_matmul_close(got.numpy(), want, k, f"transposed={transposed} threads={threads}")


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_compiled_matmul_of_stepped_flipped_and_broadcast_operands(threads):
    ember.set_num_threads(threads)
    rng = np.random.default_rng(threads)
    m, k, n = 300, 437, 45  # m*k above DIRECT_A_FLOATS/2, k over one KC block
    cases = [
        ("a rows broadcast", lambda a, b: a.expand(m, k) @ b, (1, k), (k, n)),
        ("a columns broadcast", lambda a, b: a.expand(m, k) @ b, (m, 1), (k, n)),
        ("b^T rows broadcast", lambda a, b: a @ b.expand(n, k).t(), (m, k), (1, k)),
        ("a flipped twice", lambda a, b: a.flip(0).flip(1) @ b, (m, k), (k, n)),
        ("b flipped and transposed", lambda a, b: a @ b.flip(0).t(), (m, k), (n, k)),
        ("a every second column", lambda a, b: a[:, ::2][:, :k] @ b, (m, 2 * k), (k, n)),
        ("b^T every third row", lambda a, b: a @ b[::3].t(), (m, k), (3 * n, k)),
        ("b^T at an offset", lambda a, b: a @ b[:, 5:5 + k].t(), (m, k), (n, k + 9)),
        ("stepped slices", lambda a, b: a[::2, 1::3] @ b[3:3 + 146, ::2], (600, 3 * 146), (150, 2 * n)),
    ]
    for what, fn, a_shape, b_shape in cases:
        _compiled_vs_eager(fn, (_randn(rng, *a_shape), _randn(rng, *b_shape)), k, what=what)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batched_products_with_broadcast_batch_dims(threads):
    # small per-product work: the batch loop runs in parallel, each sgemm on one thread
    ember.set_num_threads(threads)
    rng = np.random.default_rng(20 + threads)
    cases = [
        ("[1,H,T,D] @ [B,H,D,T]", lambda a, b: a @ b, (1, 3, 33, 17), (2, 3, 17, 33), 17),
        ("[B,1,m,k] @ [1,H,k,n]", lambda a, b: a @ b, (3, 1, 13, 65), (1, 4, 65, 31), 65),
        ("[B,T,H,D] permuted @ [1,H,N,D]^T", lambda a, b: a.permute(0, 2, 1, 3) @ b.transpose(-1, -2),
         (2, 40, 3, 300), (1, 3, 33, 300), 300),
        ("bmm", lambda a, b: ember.bmm(a, b), (5, 64, 257), (5, 257, 70), 257),
        ("einsum bqhd,bkhd->bhqk", lambda a, b: ember.einsum("bqhd,bkhd->bhqk", a, b), (2, 31, 3, 16),
         (2, 29, 3, 16), 16),
        ("batched A^T", lambda a, b: a.transpose(1, 2) @ b.transpose(1, 2), (2, 300, 870), (2, 50, 300), 300),
        ("stack @ vector", lambda a, b: a @ b, (4, 7, 300), (300,), 300),
    ]
    for what, fn, a_shape, b_shape, k in cases:
        _compiled_vs_eager(fn, (_randn(rng, *a_shape), _randn(rng, *b_shape)), k, what=what)


@pytest.mark.parametrize("threads", [1, 3])
def test_linear_on_permuted_and_transposed_inputs(threads):
    ember.set_num_threads(threads)
    rng = np.random.default_rng(30)
    x, w, bias = _randn(rng, 64, 4, 300), _randn(rng, 70, 300), _randn(rng, 70)
    _compiled_vs_eager(lambda x, w, b: F.linear(x.permute(1, 0, 2), w, b), (x, w, bias), 300)
    x2 = _randn(rng, 513, 96)
    _compiled_vs_eager(lambda x, w: F.linear(x.t(), w), (x2, _randn(rng, 33, 513)), 513)


def _attention(q, k, v):
    scale = 1.0 / q.shape[-1] ** 0.5
    return F.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1) @ v


def _split_heads_attention(x, heads, causal):
    batch, tokens, width = x.shape
    q, k, v = x.split(width // 3, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, width // 3 // heads).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=causal) if causal is not None else _attention(q, k, v)
    return y.transpose(1, 2).reshape(batch, tokens, width // 3)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("causal", [None, False, True], ids=["by_hand", "sdpa", "sdpa_causal"])
def test_attention_over_heads(threads, causal):
    ember.set_num_threads(threads)
    rng = np.random.default_rng(40 + threads)
    x = _randn(rng, 2, 33, 3 * 4 * 17)  # head size 17: neither the lanes nor NR
    _compiled_vs_eager(lambda x: _split_heads_attention(x, 4, causal), (x,), 33)


def test_attention_whose_dynamic_length_outgrows_the_batch_loops_estimate():
    # the batch loop over heads is parallel because the estimate (each size at HINT) is small;
    # at 600 tokens each product is big enough to want threads of its own inside that loop
    ember.set_num_threads(2)
    rng = np.random.default_rng(50)

    def fn(q, k):
        return F.softmax(q @ k.transpose(-2, -1), dim=-1)
    compiled = ember.compile(fn)
    for tokens in (5, 9, 17, 300, 600, 7):
        q, k = _randn(rng, 3, tokens, 64), _randn(rng, 3, tokens, 64)
        _assert_matmul_close(compiled(q, k).numpy(), fn(q, k).numpy(), 64, f"{tokens} tokens")
    assert compiled.report.compiled_calls >= 3 and compiled.report.dynamic_dims


class _Block(nn.Module):
    """A pre-norm transformer block: attention by hand or by sdpa, a GELU (exact erf) MLP."""

    def __init__(self, width, heads, causal):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        x = x + self.proj(_split_heads_attention(self.qkv(self.ln1(x)), self.heads, self.causal))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


def _train(compiled, causal, threads, shapes):
    ember.manual_seed(0)
    ember.set_num_threads(threads)
    model = nn.Sequential(_Block(32, 4, causal), _Block(32, 4, causal), nn.Linear(32, 5))
    optimizer = ember.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(x, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x).reshape(-1, 5), y.reshape(-1))
        loss.backward()
        optimizer.step()
        return loss
    run = ember.compile(step) if compiled else step
    rng = np.random.default_rng(1)
    losses = []
    for batch, tokens in shapes:
        x = _randn(rng, batch, tokens, 32)
        y = ember.tensor(rng.integers(0, 5, (batch, tokens)))
        losses.append(run(x, y).item())
    compiled_calls = run.report.compiled_calls if compiled else None
    return losses, [p.detach().numpy().copy() for p in model.parameters()], compiled_calls


@pytest.mark.parametrize("causal,threads,shapes", [
    (None, 2, [(2, 16)] * 4),  # (the first two calls trace: the optimizer's state appears)
    (True, 3, [(2, 16), (3, 16), (5, 16), (4, 16), (7, 16), (6, 16)]),  # a dynamic batch
    (False, 1, [(2, 9), (2, 13), (2, 21), (2, 33), (2, 16), (2, 25)]),  # a dynamic length
], ids=["by_hand", "sdpa_causal_dynamic_batch", "sdpa_dynamic_length"])
def test_transformer_training_steps_compiled_as_eagerly(causal, threads, shapes):
    eager_losses, eager_weights, _ = _train(False, causal, threads, shapes)
    losses, weights, compiled_calls = _train(True, causal, threads, shapes)
    assert compiled_calls >= 1
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-4)
    for got, want in zip(weights, eager_weights):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


# ============================================================================ 2. loop IR: coarse parts of divisions

def _evaluate(e, env):
    """An index Expr's value at `env` ({var name: int})."""
    if e.op == "const":
        return e.attr
    if e.op == "var":
        return env[e.attr[0]]
    if e.op == "affine":
        coefs, constant = e.attr
        return constant + sum(c * _evaluate(a, env) for a, c in zip(e.args, coefs))
    if e.op == "floordiv":
        return _evaluate(e.args[0], env) // e.attr
    if e.op == "mod":
        return _evaluate(e.args[0], env) % e.attr
    if e.op == "minimum":
        return min(_evaluate(a, env) for a in e.args)
    if e.op == "maximum":
        return max(_evaluate(a, env) for a in e.args)
    raise AssertionError(f"unexpected index op {e.op} in {e.text}")


def _assert_exact_and_bounded(e, want, variables, what):
    """e == want(env) at every point of the variables' ranges, and every subexpression
    stays inside the bounds it claims (simplifications rely on them)."""
    names = [name for name, _ in variables]
    for values in itertools.product(*[range(extent) for _, extent in variables]):
        env = dict(zip(names, values))
        assert _evaluate(e, env) == want(env), f"{what}: {e.text} at {env}"
        for sub in e.walk():
            if sub.dtype == L.INDEX:
                value = _evaluate(sub, env)
                assert (sub.lo is None or sub.lo <= value) and (sub.hi is None or value <= sub.hi), \
                    f"{what}: {sub.text} = {value} outside [{sub.lo}, {sub.hi}] at {env}"


def test_a_row_major_flatten_split_back_at_a_multiple_of_its_row():
    i, j = L.var("i", 512), L.var("j", 512)
    flat = L.iadd(i, L.imul(j, 512))
    quotient = L.ifloordiv(flat, 32768)
    assert quotient == L.ifloordiv(j, 64)  # i drops out: a strided view, not a copy
    remainder = L.imod(flat, 32768)
    assert "i" in remainder.text and remainder.lo == 0 and remainder.hi == 32767
    small_i, small_j = L.var("i", 8), L.var("j", 16)
    for divisor in (16, 32, 64, 128):
        _assert_exact_and_bounded(L.ifloordiv(L.iadd(small_i, L.imul(small_j, 8)), divisor),
                                  lambda env: (env["i"] + 8 * env["j"]) // divisor, [("i", 8), ("j", 16)],
                                  f"// {divisor}")
        _assert_exact_and_bounded(L.imod(L.iadd(small_i, L.imul(small_j, 8)), divisor),
                                  lambda env: (env["i"] + 8 * env["j"]) % divisor, [("i", 8), ("j", 16)],
                                  f"% {divisor}")


@pytest.mark.parametrize("coef_i,coef_j,constant,divisor", [
    (-1, 8, 7, 16),     # -i + 7 in [0, 8): still a coarse part
    (-1, 8, 0, 16),     # -i in [-7, 0]: not one, and the division stays exact
    (1, -8, 0, 16),     # a negative row coefficient
    (1, -8, -3, 32),
    (3, 8, 0, 16),      # 3*i overflows the row
    (1, 8, 9, 24),      # a constant past the row
    (2, 16, -1, 64),
    (-2, -16, 100, 48),
])
def test_coarse_parts_with_negative_coefficients_and_constants(coef_i, coef_j, constant, divisor):
    variables = [("i", 8), ("j", 9)]
    e = L.iadd(L.imul(L.var("i", 8), coef_i), L.imul(L.var("j", 9), coef_j), constant)

    def value(env):
        return coef_i * env["i"] + coef_j * env["j"] + constant
    _assert_exact_and_bounded(L.ifloordiv(e, divisor), lambda env: value(env) // divisor, variables, "//")
    _assert_exact_and_bounded(L.imod(e, divisor), lambda env: value(env) % divisor, variables, "%")
    _assert_exact_and_bounded(L.imod(L.ifloordiv(e, divisor // 2), 2), lambda env: value(env) // (divisor // 2) % 2,
                              variables, "// then %")


def test_random_affine_division_chains_equal_brute_force():
    rng = random.Random(5)
    for _ in range(400):
        variables = [(f"v{n}", rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 16])) for n in range(rng.randint(1, 4))]
        coefs = [rng.choice([1, -1, 2, -2, 3, 4, -4, 6, 8, -8, 12, 16, -16, 24, 32, 48, 64, -64, 96, 128])
                 for _ in variables]
        constant = rng.randint(-100, 100)
        e = L.iadd(*[L.imul(L.var(name, extent), c) for (name, extent), c in zip(variables, coefs)], constant)
        steps = []
        for _ in range(rng.randint(1, 3)):
            op = rng.choice(["//", "%", "*", "+"])
            c = rng.choice([2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256]) if op in ("//", "%") else \
                rng.choice([-3, -2, 2, 3, 4, 8]) if op == "*" else rng.randint(-50, 50)
            steps.append((op, c))
            e = {"//": L.ifloordiv, "%": L.imod, "*": L.imul, "+": L.iadd}[op](e, c)

        def want(env, coefs=coefs, constant=constant, variables=variables, steps=steps):
            value = constant + sum(c * env[name] for (name, _), c in zip(variables, coefs))
            for op, c in steps:
                value = value // c if op == "//" else value % c if op == "%" else value * c if op == "*" else value + c
            return value
        _assert_exact_and_bounded(e, want, variables, f"{coefs} + {constant} then {steps}")


def test_nested_div_mod_of_min_max_and_remainders_equal_brute_force():
    rng = random.Random(6)

    def build(variables, depth):
        if depth == 0 or rng.random() < 0.25:
            if rng.random() < 0.8:
                name, extent = rng.choice(variables)
                return L.var(name, extent), (lambda env, name=name: env[name])
            c = rng.randint(-40, 40)
            return L.index(c), (lambda env, c=c: c)
        op = rng.choice(["+", "-", "*", "//", "%", "//", "%", "min", "max"])
        a, fa = build(variables, depth - 1)
        if op in ("+", "-", "min", "max"):
            b, fb = build(variables, depth - 1)
            return {"+": (L.iadd(a, b), lambda env: fa(env) + fb(env)),
                    "-": (L.isub(a, b), lambda env: fa(env) - fb(env)),
                    "min": (L.imin(a, b), lambda env: min(fa(env), fb(env))),
                    "max": (L.imax(a, b), lambda env: max(fa(env), fb(env)))}[op]
        if op == "*":
            c = rng.choice([-64, -8, -3, -1, 2, 3, 4, 8, 16, 64, 512])
            return L.imul(a, c), (lambda env: fa(env) * c)
        c = rng.choice([2, 3, 4, 6, 8, 12, 16, 32, 64, 512, 32768])
        if op == "//":
            return L.ifloordiv(a, c), (lambda env: fa(env) // c)
        return L.imod(a, c), (lambda env: fa(env) % c)

    for _ in range(300):
        variables = [(f"v{n}", rng.choice([1, 2, 3, 5, 8, 12, 16, 31])) for n in range(rng.randint(1, 3))]
        e, want = build(variables, rng.randint(1, 5))
        _assert_exact_and_bounded(e, want, variables, "random tree")


MOVEMENT_CHAINS = [
    ("[8,64,512] -> [512,512] -> t", (8, 64, 512), lambda x: x.reshape(512, 512).t()),
    ("[8,64,512] permuted -> view(-1, 8)", (8, 64, 512), lambda x: x.permute(2, 1, 0).reshape(-1, 8)),
    ("unflatten then flatten other dims", (6, 96), lambda x: x.unflatten(1, (8, 12)).transpose(0, 2).flatten(1)),
    ("flip then reshape", (4, 6, 32), lambda x: x.flip(1).reshape(24, 32).t()),
    ("flip twice through a permute", (16, 8, 4), lambda x: x.flip(0).permute(2, 0, 1).flip(2).reshape(64, 8)),
    ("narrow then reshape", (10, 64), lambda x: x.narrow(0, 2, 6).reshape(12, 32).t()),
    ("stepped slice then flatten", (12, 64), lambda x: x[1::3, ::2].reshape(-1, 8)),
    ("transpose of a split row", (32, 48), lambda x: x.reshape(32, 3, 16).transpose(0, 1).reshape(96, 16)),
]


@pytest.mark.parametrize("what,shape,chain", MOVEMENT_CHAINS, ids=[c[0] for c in MOVEMENT_CHAINS])
def test_movement_chains_are_exact_and_feed_matmuls(what, shape, chain):
    rng = np.random.default_rng(len(what))
    x = _randn(rng, *shape)
    compiled = ember.compile(lambda x: chain(x) * 1.5)
    compiled(x)
    assert np.array_equal(compiled(x).numpy(), (chain(x) * 1.5).numpy()), what
    rows, width = chain(x).shape
    w_right, w_left = _randn(rng, width, 24), _randn(rng, 40, rows)
    _compiled_vs_eager(lambda x, w: chain(x) @ w, (x, w_right), width, what=what + " @ w")
    _compiled_vs_eager(lambda x, w: w @ chain(x), (x, w_left), rows, what="w @ " + what)


def _random_chain(rng, shape):
    """A random chain of movement ops (reshape into a random factorisation, permute,
    transpose, flip, stepped slice, narrow, flatten, unflatten)."""
    def factors(n, parts):
        out = []
        for _ in range(parts - 1):
            d = rng.choice([d for d in range(1, n + 1) if n % d == 0])
            out.append(d)
            n //= d
        return out + [n]

    ops, current = [], list(shape)
    for _ in range(rng.randint(2, 6)):
        kind = rng.choice(["reshape", "permute", "transpose", "flip", "slice", "narrow", "flatten", "unflatten"])
        if kind == "reshape":
            current = factors(int(np.prod(current)), rng.randint(1, 4))
            ops.append(("reshape", tuple(current)))
        elif kind == "permute" and len(current) > 1:
            perm = list(range(len(current)))
            rng.shuffle(perm)
            ops.append(("permute", tuple(perm)))
            current = [current[p] for p in perm]
        elif kind == "transpose" and len(current) > 1:
            a, b = rng.sample(range(len(current)), 2)
            ops.append(("transpose", (a, b)))
            current[a], current[b] = current[b], current[a]
        elif kind == "flip":
            ops.append(("flip", rng.randrange(len(current))))
        elif kind == "slice":
            d = rng.randrange(len(current))
            if current[d] >= 2:
                start, step = rng.randint(0, current[d] - 1), rng.choice([1, 2, 3])
                stop = rng.randint(start + 1, current[d])
                ops.append(("slice", (d, start, stop, step)))
                current[d] = len(range(start, stop, step))
        elif kind == "narrow":
            d = rng.randrange(len(current))
            if current[d] >= 2:
                start = rng.randint(0, current[d] - 1)
                length = rng.randint(1, current[d] - start)
                ops.append(("narrow", (d, start, length)))
                current[d] = length
        elif kind == "flatten" and len(current) > 1:
            a = rng.randrange(len(current) - 1)
            b = rng.randint(a + 1, len(current) - 1)
            ops.append(("flatten", (a, b)))
            current = current[:a] + [int(np.prod(current[a:b + 1]))] + current[b + 1:]
        elif kind == "unflatten":
            d = rng.randrange(len(current))
            split = factors(current[d], 2)
            ops.append(("unflatten", (d, tuple(split))))
            current = current[:d] + split + current[d + 1:]
    return ops


def _apply_chain(x, ops):
    for kind, arg in ops:
        if kind == "reshape":
            x = x.reshape(*arg)
        elif kind in ("permute", "transpose"):
            x = getattr(x, kind)(*arg)
        elif kind == "flip":
            x = x.flip(arg)
        elif kind == "slice":
            d, start, stop, step = arg
            index = [slice(None)] * x.dim()
            index[d] = slice(start, stop, step)
            x = x[tuple(index)]
        elif kind == "narrow":
            x = x.narrow(*arg)
        elif kind == "flatten":
            x = x.flatten(*arg)
        else:
            x = x.unflatten(arg[0], arg[1])
    return x


def test_random_movement_chains_then_a_matmul():
    rng = random.Random(7)
    np_rng = np.random.default_rng(7)
    for case in range(24):
        ember.set_num_threads(1 + case % 3)
        shape = [rng.choice([1, 2, 3, 4, 6, 8, 16, 32, 64]) for _ in range(rng.randint(2, 4))]
        ops = _random_chain(rng, shape)
        x = _randn(np_rng, *shape)
        moved = _apply_chain(x, ops)
        width = moved.shape[-1] if moved.dim() > 1 else moved.shape[0]

        def as_matrix(x, ops=ops, width=width):
            return _apply_chain(x, ops).reshape(-1, width)
        compiled = ember.compile(lambda x: as_matrix(x) + 0.5)
        compiled(x)
        assert np.array_equal(compiled(x).numpy(), (as_matrix(x) + 0.5).numpy()), (shape, ops)
        w = _randn(np_rng, width, rng.randint(1, 70))
        _compiled_vs_eager(lambda x, w: as_matrix(x) @ w, (x, w), width, what=f"{shape} {ops}")


# ============================================================================ 3. fusion: costly shared values

def _run_sizes(fn, shapes_per_call, mutated=(), seed=0):
    """ember.compile(fn) called with inputs of each shape list in turn, compared with eager
    on copies of the same inputs (outputs and the inputs it mutates)."""
    rng = np.random.default_rng(seed)
    compiled = ember.compile(fn)
    for shapes in shapes_per_call:
        arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        mine = [ember.tensor(a.copy()) for a in arrays]
        theirs = [ember.tensor(a.copy()) for a in arrays]
        _assert_same(compiled(*mine), fn(*theirs), what=f"shapes {shapes}")
        for i in mutated:
            np.testing.assert_allclose(mine[i].numpy(), theirs[i].numpy(), rtol=1e-5, atol=1e-6,
                                       err_msg=f"mutated input {i}, shapes {shapes}")
    assert compiled.report.compiled_calls >= 1
    return compiled


STATIC = [[(8, 16), (8, 16)]] * 3
DYNAMIC = [[(n, 16), (n, 16)] for n in (3, 5, 9, 17, 6)]  # the batch becomes dynamic


def _elementwise_first(x, y):  # an elementwise kernel, a reduction, a matmul's operand
    e = ember.erf(x * 0.7)
    return e * y, e.sum(0), e.t() @ y


def _atan2_normalised(x, y):
    a = ember.atan2(x, y) + 1
    return F.softmax(a, dim=-1), F.layer_norm(a, (16,)), a * 3


def _reduction_first(x, y):  # the reduction's kernel runs first and cannot store it
    e = ember.atan(x)
    s = e.sum(1, keepdim=True)
    return s, e / s.abs().clamp(min=0.5), (e * y).sum()


def _reshaped_roots(x, y):
    e = ember.erfc(x)
    return (e * 2).reshape(-1), e.t() + 1, e.amax(1)


def _returned_too(x, y):
    e = ember.asin(ember.tanh(x) * 0.5)
    return e, e * y, e.sum(1)


def _chained_consumers(x, y):
    e = ember.erf(x)
    u = e * y
    v = (e + u).exp()
    return u.sum(0), v.sum(1), v


def _broadcast_reader(x, y):
    e = ember.erf(x[:, :1])
    return e + y, e.sum(), (e * 2).expand(-1, 16) * y


def _cumsum_and_acos(x, y):
    e = ember.acos(ember.tanh(x) * 0.9)
    return e.cumsum(1), e * y, F.softmax(e, dim=0)


def _erfinv_shared(x, y):
    e = ember.erfinv(ember.tanh(x) * 0.9) + y
    return e.reshape(-1, 8) * 2, e.mean(), e.flip(1)


@pytest.mark.parametrize("fn", [_elementwise_first, _atan2_normalised, _reduction_first, _reshaped_roots,
                                _returned_too, _chained_consumers, _broadcast_reader, _cumsum_and_acos,
                                _erfinv_shared], ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("shapes", [STATIC, DYNAMIC], ids=["static", "dynamic"])
def test_costly_values_with_several_consumer_kernels(fn, shapes):
    _run_sizes(fn, shapes)


def _mutated_after(x, y):
    e = ember.erf(x)
    p = e * 2
    x.mul_(3.0)
    return p, e.sum(), x + e


def _mutates_another_input(x, y):
    e = ember.erf(x)
    y.add_(e)
    return e.sum(0), e * 2


def _mutated_by_it(x, y):
    e = ember.erfinv(ember.tanh(x) * 0.5)
    x.mul_(e)
    return e.sum(0), (e * y).amax(1)


@pytest.mark.parametrize("fn,mutated", [(_mutated_after, (0,)), (_mutates_another_input, (1,)),
                                        (_mutated_by_it, (0,))], ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("shapes", [STATIC, DYNAMIC], ids=["static", "dynamic"])
def test_costly_values_beside_in_place_updates(fn, mutated, shapes):
    _run_sizes(fn, shapes, mutated=mutated)


def _matmul_reshaped_spine(a, b, z):
    e = ember.erf(z)
    return (a @ b).reshape(4, 6, 8) + e, e.sum(1), e.permute(2, 0, 1) * 2


def _matmul_transposed_spine(a, b, z):
    e = ember.atan(z)
    return (a @ b).t().reshape(4, 6, 8) * e, e.amax(0), (e + 1).reshape(-1)


def _reduction_spine(x, z):
    e = ember.erf(z)
    return (x.sum(-1) * 2).reshape(4, 6) + e, e.t().sum(0), e * 3


def _reduction_permuted_spine(x, z):
    e = ember.erf(z)
    return x.sum(1).t() + e, F.softmax(e, dim=0), e[::2]


def _layer_norm_first(x, z):
    e = ember.erf(z)
    return F.layer_norm(x, (8,)) * e, e.mean(-1), e.flip(0)


@pytest.mark.parametrize("fn,shapes", [
    (_matmul_reshaped_spine, [(24, 30), (30, 8), (4, 6, 8)]),
    (_matmul_transposed_spine, [(8, 30), (30, 24), (4, 6, 8)]),
    (_reduction_spine, [(24, 16), (4, 6)]),
    (_reduction_permuted_spine, [(6, 5, 4), (4, 6)]),
    (_layer_norm_first, [(6, 8), (6, 8)]),
], ids=lambda v: getattr(v, "__name__", "").strip("_"))
def test_costly_values_stored_by_anchored_kernels_through_their_spines(fn, shapes):
    # the first consumer is a matmul's or a reduction's kernel: it stores the value where the
    # spine (reshape, permute) carries its root, at the root's flat index
    _run_sizes(fn, [shapes] * 3)


def _fused(fn, *inputs):
    graph = ember.trace(fn, *inputs)
    expected = run_graph(graph, [t.numpy() for t in inputs])
    fusion = fuse(graph)
    graph.verify()
    fusion.check()
    return graph, fusion, expected


def test_an_erf_read_by_three_kernels_is_computed_once_and_the_arena_keeps_it_alive():
    def fn(x, y):
        e = (x * 0.7).erf()
        first = e * y                        # an elementwise kernel: runs first, stores erf
        middle = (y * 2).softmax(-1).sum(0)  # kernels between the store and the reads
        return first, middle, e.sum(1), (e.t() * 3).exp()

    x, y = ember.randn(12, 20), ember.randn(12, 20)
    graph, fusion, expected = _fused(fn, x, y)
    erfs = [n for n in graph.nx.nodes if graph.node(n).op == "erf"]
    assert len(erfs) == 1  # no recomputed clone
    holder = fusion.groups[fusion.group_of[erfs[0]]]
    readers = [g for g in fusion.groups if erfs[0] in g.inputs]
    assert erfs[0] in holder.outputs and holder.root != erfs[0] and len(readers) == 2
    assert all(g.id > holder.id for g in readers)
    plan = plan_memory(graph, fusion)
    plan.check()
    # dead buffers are poisoned: a reader after the slot was reused would see NaN
    got = execute_planned(graph, fusion, plan, [x.numpy(), y.numpy()], poison=True)
    for out, value in zip(graph.outputs, got):
        np.testing.assert_allclose(value, expected[out], rtol=1e-6, atol=1e-7)
    _assert_same(ember.compile(fn)(x, y), fn(x, y))


@pytest.fixture
def costly_random_graphs(monkeypatch):
    """graph_gen's random graphs with erf, erfc and atan among the unary ops (shared values
    abound: each op reads a random earlier node)."""
    monkeypatch.setattr(graph_gen, "UNARY", ("erf", "atan", "erfc", "erf", "tanh", "exp", "relu", "neg"))
    monkeypatch.setattr(graph_gen, "OP_FAMILIES", ("unary", "unary", "unary", "binary", "binary", "reduce",
                                                   "movement", "movement", "matmul", "constant"))


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(graph_gen.random_graphs(min_ops=8, max_ops=30))
def test_random_graphs_with_costly_ops_compile_and_plan_as_the_interpreter(costly_random_graphs, case):
    graph, inputs = case
    env = run_graph(graph, inputs, {})
    expected = [env[o] for o in graph.outputs]
    run = LLVMBackend(cache_dir=config.CACHE_DIR).compile(graph)
    result = run(dict(zip(graph.inputs, inputs)), {})
    for out, want in zip(graph.outputs, expected):
        np.testing.assert_allclose(result[out], want, rtol=1e-4, atol=1e-5)
    fusion = fuse(graph)
    fusion.check()
    plan = plan_memory(graph, fusion)
    plan.check()
    for got, want in zip(execute_planned(graph, fusion, plan, inputs, poison=True), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _gelu_mlp_steps(compiled, batches, activation):
    ember.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), activation, nn.LayerNorm(32), nn.Linear(32, 32), activation,
                          nn.Linear(32, 3))
    optimizer = ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(x, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    run = ember.compile(step) if compiled else step
    rng = np.random.default_rng(3)
    losses = [run(_randn(rng, n, 12), ember.tensor(rng.integers(0, 3, n))).item() for n in batches]
    return losses, [p.detach().numpy().copy() for p in model.parameters()], run


class _AtanGate(nn.Module):
    def forward(self, x):
        return ember.atan(x) * x + ember.erf(x).sum(-1, keepdim=True) * 0.01


@pytest.mark.parametrize("activation", [nn.GELU(), _AtanGate()], ids=["gelu", "atan_gate"])
@pytest.mark.parametrize("batches", [[16] * 4, [4, 6, 10, 7, 12]], ids=["static", "dynamic"])
def test_training_steps_with_costly_activations_compiled_as_eagerly(activation, batches):
    ember.set_num_threads(2)
    eager_losses, eager_weights, _ = _gelu_mlp_steps(False, batches, activation)
    losses, weights, run = _gelu_mlp_steps(True, batches, activation)
    assert run.report.compiled_calls >= 1
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-5)
    for got, want in zip(weights, eager_weights):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fn", [
    lambda x, w: (F.gelu(x @ w) * x[:, :1]).sum(),
    lambda x, w: ember.erf(x @ w).sum(0).square().sum() + (ember.erf(x @ w) * (x @ w)).mean(),
    lambda x, w: F.layer_norm(ember.atan(x @ w) + x @ w, (24,)).square().sum(),
    lambda x, w: (F.softmax(ember.asin(ember.tanh(x @ w) * 0.9), -1) * ember.asin(ember.tanh(x @ w) * 0.9)).sum(),
    lambda x, w: (ember.erfc(x @ w)[:1] * ember.erfc(x @ w)).sum(),
], ids=["gelu", "erf_twice", "atan_layer_norm", "asin_softmax", "erfc_broadcast"])
def test_gradients_through_costly_values_compiled_as_eagerly(fn):
    rng = np.random.default_rng(4)
    compiled = ember.compile(fn)
    for rows in (4, 4, 6, 9, 5):
        xs = rng.standard_normal((rows, 20)).astype(np.float32)
        ws = (rng.standard_normal((20, 24)) * 0.3).astype(np.float32)
        x1, w1 = ember.tensor(xs, requires_grad=True), ember.tensor(ws, requires_grad=True)
        x2, w2 = ember.tensor(xs, requires_grad=True), ember.tensor(ws, requires_grad=True)
        got, want = compiled(x1, w1), fn(x2, w2)
        got.backward()
        want.backward()
        np.testing.assert_allclose(got.item(), want.item(), rtol=1e-5)
        np.testing.assert_allclose(x1.grad.numpy(), x2.grad.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(w1.grad.numpy(), w2.grad.numpy(), rtol=1e-4, atol=1e-5)
    assert compiled.report.compiled_calls >= 2


def test_a_weight_gradient_computed_transposed_needs_no_copy():
    # (x^T @ g)^T is computed as g^T @ x straight into the root's buffer: the store loop of
    # the value already in place is dropped, the result must still be there
    rng = np.random.default_rng(8)
    for m, n, k in [(40, 24, 33), (70, 130, 300), (5, 600, 17)]:
        x, g = _randn(rng, k, m), _randn(rng, k, n)
        _compiled_vs_eager(lambda x, g: (x.t() @ g).t(), (x, g), k)
        _compiled_vs_eager(lambda x, g: (x.t() @ g).t() * 2, (x, g), k)
        _compiled_vs_eager(_transposed_product_read_twice, (x, g), k)


def _transposed_product_read_twice(x, g):
    product = (x.t() @ g).t()
    return product, ember.erf(product * 0.1) + product, product.sum(0)
