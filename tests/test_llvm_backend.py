"""The llvm backend: compiled programs equal the interpreter within float32 tolerance on
fused chains, the zoo, random graphs and the seed Net training step; ember.compile(...,
backend="llvm") on guarded functions; the on-disk compile cache; debug output and the
`llvm`/`asm` dump stages."""
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import ember
import ember.nn.functional as F
from ember import config
from ember.compiler.backends import llvm_backend as LLVMBackend, render_code as render_stage
from ember.ir import run_graph
import zoo
from graph_gen import random_graphs
from test_group_executor import seed_net_training_step_case, zoo_case

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ember_cache"))


@pytest.fixture(autouse=True)
def private_cache(cache_dir, monkeypatch):
    """Every backend of these tests (also those ember.compile creates) caches in a temp dir."""
    monkeypatch.setattr(config, "CACHE_DIR", cache_dir)


@pytest.fixture(scope="module")
def backend(cache_dir):
    return LLVMBackend(cache_dir=cache_dir)


def compiled_outputs(backend, graph, inputs, params=None):
    run = backend.compile(graph)
    result = run(dict(zip(graph.inputs, inputs)), params or {})
    return [result[o] for o in graph.outputs] + [result[m.node] for m in graph.mutations]


def interpreted(graph, inputs, params=None):
    env = run_graph(graph, inputs, params or {})
    return [env[o] for o in graph.outputs] + [env[m.node] for m in graph.mutations]


def assert_close(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype, (a.shape, a.dtype, e.shape, e.dtype)
        if a.dtype.kind in "fc":
            np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)
        else:
            np.testing.assert_array_equal(a, e)


def chain(x):
    return ember.relu(x * 0.5 + 1) * ember.sigmoid(x)


# ----------------------------------------------------------------------------- elementwise and movement

def test_fused_chain_through_ember_compile_is_one_kernel_and_matches_numpy():
    x = ember.randn(1000)
    compiled = ember.compile(chain, backend="llvm")
    with ember.no_grad():
        out = compiled(x)
        out = compiled(x)  # the second call runs the compiled program
    data = x.numpy()
    expected = np.maximum(data * 0.5 + 1, 0) * (1 / (1 + np.exp(-data)))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert compiled.report.compiled_calls >= 1
    runner = next(iter(compiled._cache.values())).root.runner
    assert [k.kind for k in runner.prepared.kernels] == ["elementwise"]


def test_movement_ops_become_index_maps(backend):
    def moves(x, y):
        a = x.permute(1, 0).reshape(4, 6)[:, 1::2].flip(0)
        b = F.pad(y, (1, 2, 0, 1), value=-1.0)
        c = ember.cat([a, b[:4, :3]], dim=1)
        return c.exp() * 2, x.transpose(0, 1).sum(dim=1, keepdim=True) + x[:, :1].t()
    x, y = ember.randn(6, 4), ember.randn(3, 5)
    with ember.no_grad():
        graph = ember.trace(moves, x, y)
    inputs = [x.numpy(), y.numpy()]
    assert_close(compiled_outputs(backend, graph, inputs), interpreted(graph, inputs))


def test_take_with_an_out_of_range_index_raises_index_error(backend):
    def pick(x, idx):
        return x[idx] * 2
    x, idx = ember.randn(5, 3), ember.tensor([0, 4, -1])
    with ember.no_grad():
        graph = ember.trace(pick, x, idx)
    run = backend.compile(graph)
    inputs = {graph.inputs[0]: x.numpy(), graph.inputs[1]: idx.numpy()}
    out = run(inputs, {})[graph.outputs[0]]
    np.testing.assert_allclose(out, x.numpy()[[0, 4, -1]] * 2)
    inputs[graph.inputs[1]] = np.array([0, 5, 1])
    with pytest.raises(IndexError, match="out of bounds"):
        run(inputs, {})


# ----------------------------------------------------------------------------- reductions and contractions

def test_softmax_and_reductions(backend):
    def reductions(x):
        p = F.softmax(x, dim=1)
        return p, x.amax(dim=0), x.argmax(dim=1), x.prod(dim=1), x.sum(), x.amin(dim=(0, 1), keepdim=True)
    x = ember.randn(7, 33)
    with ember.no_grad():
        graph = ember.trace(reductions, x)
    inputs = [x.numpy()]
    assert_close(compiled_outputs(backend, graph, inputs), interpreted(graph, inputs))


def test_reductions_that_keep_the_innermost_axis(backend):
    # lowered as rows combined into a buffer (column sums, softmax over a leading axis)
    def reductions(x, mask):
        return (x.sum(dim=0), x.amax(dim=(0, 1), keepdim=True), x.amin(dim=1), x.prod(dim=0) * 2 + 1,
                F.softmax(x, dim=0), mask.sum(dim=0), x.sum(dim=0) + x.sum(dim=0).exp())
    x = ember.rand(9, 4, 37) * 0.5 + 0.75
    mask = ember.rand(20, 37) > 0.5
    with ember.no_grad():
        graph = ember.trace(reductions, x, mask)
    inputs = [x.numpy(), mask.numpy()]
    assert_close(compiled_outputs(backend, graph, inputs), interpreted(graph, inputs))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_and_conv_with_epilogues(backend, dtype):
    def layers(x, w, b, v):
        y = F.conv2d(x, w, b, stride=2, padding=1).relu()
        flat = y.reshape(y.shape[0], -1)
        return flat @ v + 1, (x.sum(dim=1) @ x.sum(dim=1).transpose(1, 2)).tanh()
    ember.manual_seed(0)
    x, w, b = ember.randn(2, 3, 9, 9), ember.randn(4, 3, 3, 3), ember.randn(4)
    v = ember.randn(4 * 5 * 5, 6)
    args = [t.to(getattr(ember, dtype)) for t in (x, w, b, v)]
    with ember.no_grad():
        graph = ember.trace(layers, *args)
    inputs = [t.numpy() for t in args]
    assert_close(compiled_outputs(backend, graph, inputs), interpreted(graph, inputs))


# ----------------------------------------------------------------------------- the zoo, random graphs, training

@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_forward_graphs_match_the_interpreter(backend, name):
    graph, inputs, params = zoo_case(name)
    assert_close(compiled_outputs(backend, graph, inputs, params), interpreted(graph, inputs, params))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_graphs())
def test_random_graphs_match_the_interpreter(case):
    graph, inputs = case
    backend = LLVMBackend(cache_dir=config.CACHE_DIR)
    assert_close(compiled_outputs(backend, graph, inputs), interpreted(graph, inputs))


def test_seed_net_training_step_matches_the_interpreter(backend):
    graph, inputs, params = seed_net_training_step_case(4)
    expected = interpreted(graph, inputs, {k: v.copy() for k, v in params.items()})
    assert_close(compiled_outputs(backend, graph, inputs, params), expected)


# ----------------------------------------------------------------------------- every scalar op, opaque ops

def _add(graph, op, inputs, **attrs):
    from ember.ops import PRIMITIVES
    spec = PRIMITIVES[op].infer(*[graph.spec(i) for i in inputs], **attrs)
    return graph.add_node(op, inputs, spec.shape, spec.dtype, attrs)


UNARY = ("neg", "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "tanh", "sigmoid",
         "erf", "relu", "abs", "sign", "floor", "ceil", "round", "logical_not")
BINARY = ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "remainder", "floor_divide", "eq", "ne", "lt",
          "le", "gt", "ge", "logical_and", "logical_or", "logical_xor")


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "bool"])
def test_every_elementwise_primitive_matches_numpy_including_nan_inf_and_signed_zero(backend, dtype):
    from ember.ir import Graph
    from ember.ops import PRIMITIVES, Spec
    from ember import dtypes
    rng = np.random.default_rng(0)

    def values(shape=(2, 19)):
        if dtype == "bool":
            return rng.random(shape) > 0.5
        if dtype.startswith("int"):
            return rng.integers(-20, 20, shape).astype(dtype)
        v = (rng.standard_normal(shape) * 3).astype(dtype)
        v.flat[:4] = [0.0, -0.0, np.nan, np.inf]
        return v

    graph = Graph(f"elementwise_{dtype}")
    x, y = graph.add_input((2, 19), dtype, "x"), graph.add_input((2, 19), dtype, "y")
    mask = graph.add_input((2, 19), "bool", "mask")
    exponent = graph.add_input((2, 19), dtype, "exponent")  # numpy refuses negative integer powers
    spec = Spec((2, 19), dtypes.from_name(dtype))
    outputs = []
    for op in UNARY + BINARY:
        operands = (x,) if op in UNARY else (x, exponent) if op == "pow" else (x, y)
        try:
            PRIMITIVES[op].infer(*[spec] * len(operands))
        except Exception:
            continue  # not defined for this dtype (e.g. exp of ints, sub of bools)
        outputs.append(_add(graph, op, operands))
    outputs.append(_add(graph, "where", [mask, x, y]))
    for target in ("float32", "int64", "bool"):
        outputs.append(_add(graph, "convert", [x], dtype=target))
    graph.outputs = outputs
    a, b, powers = values(), values(), values()
    if dtype.startswith("int"):
        b[b == 0] = 3  # integer division by zero raises (tested below)
        powers = np.abs(powers) % 6
    inputs = [a, b, rng.random((2, 19)) > 0.5, powers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = interpreted(graph, inputs)
    actual = compiled_outputs(backend, graph, inputs)
    for node, got, want in zip(graph.outputs, actual, expected):
        assert got.dtype == want.dtype, graph.node(node).op
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=RTOL, atol=ATOL,
                                   equal_nan=True, err_msg=graph.node(node).op)


def test_integer_division_by_zero_raises_zero_division_error(backend):
    divide = lambda a, b: a // b  # noqa: E731
    a, b = ember.tensor([7, -7, 3]), ember.tensor([2, 2, 5])
    with ember.no_grad():
        graph = ember.trace(divide, a, b)
    run = backend.compile(graph)
    inputs = {graph.inputs[0]: a.numpy(), graph.inputs[1]: b.numpy()}
    np.testing.assert_array_equal(run(inputs, {})[graph.outputs[0]], [3, -4, 0])
    inputs[graph.inputs[1]] = np.array([2, 0, 5])
    with pytest.raises(ZeroDivisionError, match="floor_divide"):
        run(inputs, {})


def test_opaque_ops_loops_and_numpy_fallbacks(backend):
    from ember.ir import Graph
    rng = np.random.default_rng(1)
    graph = Graph("opaque")
    x = graph.add_input((4, 6), "float32", "x")
    idx = graph.add_input((3, 6), "int64", "idx")
    rows = graph.add_input((5,), "int64", "rows")
    src = graph.add_input((5, 6), "float32", "src")
    seed = graph.add_input((), "int64", "seed")
    windows = graph.add_input((2, 3, 4, 4, 2, 2), "float32", "windows")
    graph.outputs = [
        _add(graph, "cumsum", [x], axis=1), _add(graph, "cumsum", [idx], axis=0),
        _add(graph, "index_add", [x, rows, src], axis=0), _add(graph, "index_put", [x, rows, src], axis=0),
        _add(graph, "scatter_add", [x, idx, _add(graph, "exp", [_add(graph, "slice", [src], starts=(0, 0),
                                    stops=(3, 6), steps=(1, 1))])], axis=0),
        _add(graph, "gather", [x, idx], axis=0), _add(graph, "argsort", [x], axis=1, descending=True),
        _add(graph, "random", [seed], distribution="uniform", shape=(5, 7), dtype="float32", a=-1.0, b=2.0),
        _add(graph, "random", [seed], distribution="normal", shape=(3, 3), dtype="float64", a=0.0, b=1.0),
        _add(graph, "fold_windows", [windows], size=(5, 5), stride=(1, 1), dilation=(1, 1)),
        _add(graph, "fold_windows", [windows], size=(8, 12), stride=(2, 3), dilation=(1, 2)),
        _add(graph, "argmax", [x], axis=None, keepdims=False),
    ]
    inputs = [rng.standard_normal((4, 6)).astype(np.float32), rng.integers(0, 4, (3, 6)),
              np.array([0, 3, 3, 1, 0]), rng.standard_normal((5, 6)).astype(np.float32), np.array(2 ** 40 + 5),
              rng.standard_normal((2, 3, 4, 4, 2, 2)).astype(np.float32)]
    actual, expected = compiled_outputs(backend, graph, inputs), interpreted(graph, inputs)
    assert_close(actual, expected)
    np.testing.assert_array_equal(actual[7], expected[7])  # the counter-based generator, bit for bit
    kinds = [k.kind for k in backend.compile(graph).prepared.kernels]
    assert kinds.count("callback") == 1  # argsort runs numpy; normal draws are loops


# ----------------------------------------------------------------------------- through ember.compile

def branchy(x):
    if x.sum() > 0:
        return x.relu() * 2
    return -x


def test_guarded_branches_each_compile_once_and_stay_right():
    compiled = ember.compile(branchy, backend="llvm")
    positive, negative = ember.randn(5).abs() + 0.1, -ember.randn(5).abs() - 0.1
    for i in range(6):
        x = positive if i % 2 == 0 else negative
        np.testing.assert_allclose(compiled(x).numpy(), branchy(x).numpy(), rtol=1e-6)
    assert len(compiled.report.traces) == 2 and compiled.report.compiled_calls == 4


def test_loop_trip_count_from_item_through_the_llvm_backend():
    def repeat(x, n):
        for _ in range(int(n.item())):
            x = x * 2 + 1
        return x

    compiled = ember.compile(repeat, backend="llvm")
    for n in [3, 1, 3, 0, 1]:
        x = ember.randn(3)
        np.testing.assert_allclose(compiled(x, ember.tensor(n)).numpy(), repeat(x, ember.tensor(n)).numpy(),
                                   rtol=1e-6)
    assert len(compiled.report.traces) == 3


def test_a_new_input_shape_recompiles_through_the_llvm_backend():
    compiled = ember.compile(lambda x: (x * 2).sum(dim=1), backend="llvm")
    for rows in (8, 16, 8):
        x = ember.randn(rows, 3)
        np.testing.assert_allclose(compiled(x).numpy(), (x.numpy() * 2).sum(axis=1), rtol=1e-5)
    assert compiled.report.recompiles == ["dim 0 of x: 8 -> 16 (dynamic from now on)"]
    assert compiled.report.compiled_calls == 1


def test_compiled_training_step_matches_eager_for_several_steps():
    def make():
        ember.manual_seed(1)
        net = zoo.MLP((6, 8, 3))
        return net, ember.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)

    (net, opt), (ref_net, ref_opt) = make(), make()

    def step(model, optimizer, x, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    compiled = ember.compile(lambda x, y: step(net, opt, x, y), backend="llvm")
    ember.manual_seed(2)
    for _ in range(6):
        x, y = ember.randn(10, 6), ember.randint(0, 3, (10,))
        np.testing.assert_allclose(compiled(x, y).item(), step(ref_net, ref_opt, x, y).item(), rtol=1e-4)
    for (name, p), (_, q) in zip(net.named_parameters(), ref_net.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    assert compiled.report.compiled_calls >= 3  # the first two calls trace (optimizer state appears)


# ----------------------------------------------------------------------------- the compile cache

def chain_graph():
    with ember.no_grad():
        return ember.trace(chain, ember.randn(300))


def test_a_second_compile_loads_object_code_from_the_cache_without_llvm_work(tmp_path):
    graph = chain_graph()
    first = LLVMBackend(cache_dir=str(tmp_path))
    expected = first.compile(graph)({graph.inputs[0]: np.linspace(-3, 3, 300, dtype=np.float32)}, {})
    assert first.stats.llvm_compiles == 1 and first.cache.misses == 2  # (the traced graph's alias, the program)
    second = LLVMBackend(cache_dir=str(tmp_path))
    run = second.compile(graph)
    assert second.stats.llvm_compiles == 0 and second.stats.cache_hits == 1
    assert "optimize" not in second.stats.stage_seconds and "simplify" not in second.stats.stage_seconds
    actual = run({graph.inputs[0]: np.linspace(-3, 3, 300, dtype=np.float32)}, {})
    np.testing.assert_array_equal(actual[graph.outputs[0]], expected[graph.outputs[0]])


def test_a_corrupted_cache_entry_is_rebuilt_with_a_warning(tmp_path):
    graph = chain_graph()
    LLVMBackend(cache_dir=str(tmp_path)).compile(graph)
    (entry,) = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files if not f.endswith(".alias")]
    data = bytearray(open(entry, "rb").read())
    data[-20] ^= 0xFF
    open(entry, "wb").write(bytes(data))
    backend = LLVMBackend(cache_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="corrupted"):
        run = backend.compile(graph)
    assert backend.stats.llvm_compiles == 1 and backend.cache.corrupted == 1
    x = np.linspace(-3, 3, 300, dtype=np.float32)
    np.testing.assert_allclose(run({graph.inputs[0]: x}, {})[graph.outputs[0]],
                               np.maximum(x * 0.5 + 1, 0) / (1 + np.exp(-x)), rtol=1e-6, atol=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LLVMBackend(cache_dir=str(tmp_path)).compile(graph)  # the rebuilt entry is whole again


def test_cache_writes_are_atomic(tmp_path, monkeypatch):
    from ember.compiler.compile_cache import CompileCache
    cache = CompileCache(str(tmp_path))

    def interrupted(source, target):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.warns(UserWarning, match="cannot write"):
        cache.store("ab" * 32, b"object code")
    assert not any(files for _, _, files in os.walk(tmp_path))  # neither the entry nor a temporary
    monkeypatch.undo()
    cache.store("ab" * 32, b"object code")
    assert cache.load("ab" * 32) == b"object code"
    assert [f for _, _, files in os.walk(tmp_path) for f in files] == ["ab" * 32 + ".o"]


# ----------------------------------------------------------------------------- debugging output

def test_debug_levels_print_compiles_kernel_times_ir_and_assembly(tmp_path, capsys):
    graph = chain_graph()
    x = {graph.inputs[0]: np.ones(300, np.float32)}
    LLVMBackend(cache_dir=str(tmp_path), debug=1).compile(graph)(x, {})
    err = capsys.readouterr().err
    assert "ember llvm: compiled chain: 1 kernels" in err and "elementwise" in err and "time: simplify" in err
    LLVMBackend(cache_dir=str(tmp_path), debug=2).compile(graph)(x, {})
    err = capsys.readouterr().err
    assert "kernel times of call 1" in err and " us  elementwise" in err
    LLVMBackend(cache_dir=str(tmp_path), debug=3).compile(graph)
    err = capsys.readouterr().err
    assert "kernels: 1" in err and "arena:" in err and "kernel elementwise" in err
    LLVMBackend(cache_dir=str(tmp_path), debug=4).compile(graph)
    err = capsys.readouterr().err
    assert "@ember_program(ptr" in err and ".type\telementwise" in err


def _function_bodies(asm):
    """{function name: its assembly} from an assembly listing."""
    import re
    bodies, current = {}, None
    for line in asm.splitlines():
        match = re.match(r"^([A-Za-z_][\w.$]*):", line)
        if match and not match.group(1).startswith(".L"):
            current = match.group(1)
            bodies[current] = []
        elif current:
            bodies[current].append(line)
    return {name: "\n".join(lines) for name, lines in bodies.items()}


PACKED_FLOAT_MATH = r"\bv(add|mul|max|fmadd\w*)ps\s.*%[yz]mm"


def _kernel_code(bodies, kernel):
    """A kernel's assembly with its outlined parallel loops (`kernel.loopN`, `kernel.parN`)."""
    return "\n".join(body for name, body in bodies.items() if name == kernel or name.startswith(kernel + "."))


@pytest.mark.parametrize("batch", [1, 64])
def test_seed_net_assembly_uses_vector_registers_in_elementwise_and_matmul_kernels(batch):
    """The conv and matmul kernels (their bias/relu epilogues, the dot products of batch 1's
    Linear layers) compute on ymm/zmm registers, as does a pure elementwise kernel."""
    import re
    net, _ = zoo.build("seed_net")
    with ember.no_grad():
        graph = ember.trace(net, ember.randn(batch, 3, 32, 32))
    bodies = _function_bodies(render_stage(graph, "asm"))
    kernels = LLVMBackend().prepare(graph).kernels
    assert kernels and all(k.name in bodies for k in kernels)
    contractions = [k.name for k in kernels if k.kind == "contraction"]
    assert len(contractions) == 5
    for kernel in contractions:
        assert re.search(PACKED_FLOAT_MATH, _kernel_code(bodies, kernel)), f"{kernel}: no packed math on ymm/zmm"
    # the support library's sgemm microkernel, which the conv and matmul kernels call, follows them
    microkernels = [name for name in bodies if name.startswith("ember_sgemm_kernel_")]
    assert microkernels and all(re.search(r"\bvfmadd\w*ps\s.*%[yz]mm", bodies[name]) for name in microkernels)
    elementwise = _function_bodies(render_stage(chain_graph(), "asm"))
    assert re.search(PACKED_FLOAT_MATH, _kernel_code(elementwise, "elementwise_mul_add_relu_sigmoid_300"))
    assert "@ember_program(ptr" in render_stage(graph, "llvm")


def test_an_elementwise_kernel_updating_a_buffer_in_place_vectorises_without_a_scalar_copy():
    # GELU's backward writes its result over the buffer it reads (the memory plan's in-place
    # reuse): the kernel must see one pointer, or LLVM guards the vector loop with an overlap
    # check that fails for exactly this case and runs a scalar copy of the erf polynomial
    import re
    model = ember.nn.Sequential(ember.nn.Linear(16, 64), ember.nn.GELU(), ember.nn.Linear(64, 16))

    def step(x):
        loss = model(x).sum()
        loss.backward()
        return loss

    llvm = render_stage(ember.trace(step, ember.randn(8, 16)), "llvm")
    # the forward computes erf (and stores it for the backward: passes/fusion.py's COSTLY_OPS),
    # the backward its derivative's exp
    kernels = re.findall(r"define internal fastcc void @(elementwise_\w*(?:erf|exp)\w*)\(", llvm)
    assert len(kernels) == 2 and "erf" in kernels[0] and "exp" in kernels[1], kernels
    for name in kernels:
        body = llvm.split(f"@{name}(")[1].split("\n}\n")[0]
        assert re.search(r"@llvm\.fmuladd\.v\d+f32\(", body), f"{name} did not vectorise"
        assert "@llvm.fmuladd.f32(" not in body, f"{name} keeps a scalar loop (512 elements: no remainder)"


@pytest.mark.parametrize("n", [3, 13, 16])
def test_argmax_over_short_rows_compiles_quickly_with_nan_first(n):
    # an unrolled argmax reads its running best twice per element: at 13-16 elements its
    # expression tree ran out of memory (found by an adversarial round)
    x = ember.randn(4, n)
    x[1, 2] = float("nan")
    for fn in (lambda t: t.argmax(1), lambda t: t.argmin(1)):
        np.testing.assert_array_equal(ember.compile(fn)(x).numpy(), fn(x).numpy())
