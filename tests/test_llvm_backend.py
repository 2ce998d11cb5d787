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
from ember.compiler.llvm_backend import LLVMBackend, prepare, render_stage
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
