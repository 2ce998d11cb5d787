"""The group executor runs fused, planned programs inside one arena and must equal the plain
interpreter: on random graphs, the zoo and the seed Net training step (outputs and mutation
values). Breaking a plan on purpose must break the results, so the arena is really used."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import ember
from ember.ir import run_graph
from ember.ops import PRIMITIVES
from ember.passes.fusion import fuse
from ember.passes.group_executor import execute_planned
from ember.passes.memory import plan_memory
import zoo
from graph_gen import random_graphs


@pytest.fixture(autouse=True)
def layout_independent_matmul(monkeypatch):
    """matmul on C-contiguous copies of its operands, in the arena and in the interpreter alike.

    The arena stores every kernel output C-contiguous, while the interpreter keeps numpy's
    layouts (a permuted weight, a batch-innermost conv2d result reshaped). OpenBLAS's AVX-512
    small-matrix sgemm kernels sum in an order that depends on whether an operand is transposed
    (the seed Net's (2, 400) @ (400, 120) differs in the last bit), so np.matmul of the same
    values in two layouts is not bit-exact there. Fixing the layout keeps these comparisons
    exact: the arena's bytes, not BLAS's choice of kernel, are what they test."""
    matmul = PRIMITIVES["matmul"].impl
    monkeypatch.setattr(PRIMITIVES["matmul"], "impl",
                        lambda a, b: matmul(np.ascontiguousarray(a), np.ascontiguousarray(b)))


def seed_net_training_step_case(batch):
    """The zoo SeedNet's training step graph, its inputs and its params' values by name."""
    step, inputs, net, opt = zoo.seed_net_training_step(batch)
    graph = ember.trace(step, *inputs)
    values = {f"net.{name}": t for name, t in net.named_parameters()}
    for i, p in enumerate(p for group in opt.param_groups for p in group["params"]):
        values.update({f"opt.state[{i}].{key}": t for key, t in opt.state[p].items()})
    return graph, [t.numpy() for t in inputs], {name: values[name].detach().numpy().copy() for name in graph.params}

def zoo_case(name):
    fn, inputs = zoo.build(name)
    with ember.no_grad():
        graph = ember.trace(fn, *inputs)
    state = list(fn.named_parameters()) + list(fn.named_buffers()) if hasattr(fn, "named_parameters") else []
    return graph, [t.numpy() for t in inputs], {name: t.detach().numpy() for name, t in state}


def interpreted(graph, inputs, params):
    env = run_graph(graph, inputs, params)
    return [env[o] for o in graph.outputs] + [env[m.node] for m in graph.mutations]


def run_planned(graph, inputs, params=None):
    fusion = fuse(graph)
    plan = plan_memory(graph, fusion)
    plan.check()
    return execute_planned(graph, fusion, plan, inputs, params)


def assert_same(got, expected):
    assert len(got) == len(expected)
    for a, e in zip(got, expected):
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_array_equal(a, e)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_random_graphs_run_in_the_planned_arena_equal_the_interpreter(case):
    graph, inputs = case
    expected = interpreted(graph, inputs, {})
    assert_same(run_planned(graph, inputs), expected)


@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_graphs_run_in_the_planned_arena_equal_the_interpreter(name):
    graph, inputs, params = zoo_case(name)
    expected = interpreted(graph, inputs, params)
    assert_same(run_planned(graph, inputs, params), expected)


def test_the_seed_net_training_step_in_the_arena_gives_the_interpreters_loss_and_updates():
    graph, inputs, params = seed_net_training_step_case(batch=8)
    expected = interpreted(graph, inputs, params)
    got = run_planned(graph, inputs, params)
    assert len(got) == 1 + 30  # the loss, 10 new weights, 10 new momentum buffers, 10 gradients
    assert_same(got, expected)
    first_update = next(m for m in graph.mutations if m.kind == "param")
    updated = got[1 + graph.mutations.index(first_update)]
    assert np.isfinite(got[0]) and not np.array_equal(updated, params[first_update.target])


def test_in_place_kernels_compute_the_same_values():
    w = ember.randn(8, 8)

    def fn(x):
        a = x.matmul(w)
        b = (a * 2 + a.exp() + a.sum()).tanh()
        return b.matmul(w)

    x = ember.randn(8, 8)
    graph = ember.trace(fn, x)
    fusion = fuse(graph)
    plan = plan_memory(graph, fusion)
    assert plan.in_place
    params = {"w": w.numpy()}  # a closed-over tensor is a param named after its variable
    assert_same(execute_planned(graph, fusion, plan, [x.numpy()], params), interpreted(graph, [x.numpy()], params))


def test_overlapping_two_live_buffers_on_purpose_breaks_the_results():
    graph, inputs, params = zoo_case("seed_net")
    fusion = fuse(graph)
    plan = plan_memory(graph, fusion)
    conv1, pool1 = fusion.groups[0].root, fusion.groups[1].root  # both live at step 1
    plan.buffers[pool1].offset = plan.buffers[conv1].offset
    with pytest.raises(AssertionError, match="overlap"):
        plan.check()
    got = execute_planned(graph, fusion, plan, inputs, params)
    assert not np.allclose(got[0], interpreted(graph, inputs, params)[0], equal_nan=True)


def test_a_buffer_read_after_its_planned_last_step_reads_poison():
    graph, inputs, params = zoo_case("mlp")
    fusion = fuse(graph)
    plan = plan_memory(graph, fusion)
    first = fusion.groups[0].root
    plan.buffers[first].last_step = plan.buffers[first].first_step  # dies before its reader runs
    got = execute_planned(graph, fusion, plan, inputs, params)
    assert np.isnan(got[0]).all()


def test_bad_calls_are_explained():
    graph, inputs, params = zoo_case("mlp")
    fusion = fuse(graph)
    plan = plan_memory(graph, fusion)
    with pytest.raises(TypeError, match="takes 1 inputs, got 0"):
        execute_planned(graph, fusion, plan, [], params)
    with pytest.raises(KeyError, match="net.0.weight"):
        execute_planned(graph, fusion, plan, inputs, {})
