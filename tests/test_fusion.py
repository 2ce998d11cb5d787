"""Fusion: kernel counts on the patterns that matter (elementwise chains, softmax, linear,
the seed Net), the loop-nest group shapes a backend relies on (`Fusion.check`), recompute vs
materialise, kernel names and dumps, and on random graphs that fusing keeps the
interpreter's results."""
import dataclasses

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import ember
import ember.nn.functional as F
from ember.ir import Graph, run_graph
from ember.passes.fusion import RECOMPUTE_MAX_OPS, fuse
from ember.passes.simplify import simplify
import zoo
from graph_gen import random_graphs


def traced_forward(name):
    fn, inputs = zoo.build(name)
    with ember.no_grad():
        return ember.trace(fn, *inputs)


seed_net_training_step_graph = zoo.seed_net_training_step_graph

def fused(graph):
    fusion = fuse(graph)
    graph.verify()
    fusion.check()
    return fusion


def ops_of(graph, group):
    return [graph.node(n).op for n in group.nodes]


# ----------------------------------------------------------------------------- kernel counts

@pytest.mark.parametrize("repeats", [1, 3, 10])
def test_an_elementwise_chain_of_any_length_fuses_into_one_kernel(repeats):
    def chain(x):
        for _ in range(repeats):
            x = ember.relu(x * 0.5 + 1) * ember.sigmoid(x)
        return x

    graph = ember.trace(chain, ember.randn(64, 120))
    fusion = fused(graph)
    assert fusion.kernel_count == 1
    assert fusion.groups[0].kind == "elementwise"
    assert fusion.groups[0].name == "elementwise_mul_add_relu_sigmoid_64x120"


def test_softmax_forward_fuses_into_at_most_3_kernels():
    graph = ember.trace(lambda x: F.softmax(x, dim=1), ember.randn(64, 10))
    fusion = fused(graph)
    assert fusion.kernel_count <= 3
    kinds = [g.kind for g in fusion.groups]
    assert kinds == ["reduce", "reduce", "elementwise"]
    # exp(x - max) feeds both the sum and the division: recomputed in both kernels
    assert [ops_of(graph, g) for g in fusion.groups] == [["amax"], ["sub", "exp", "sum"], ["sub", "exp", "div"]]


def test_linear_bias_relu_is_one_matmul_kernel_with_the_weight_transpose_as_its_load():
    layer = ember.nn.Linear(400, 120)
    with ember.no_grad():
        graph = ember.trace(lambda x: ember.relu(layer(x)), ember.randn(1, 400))
    fusion = fused(graph)
    assert fusion.kernel_count == 1
    group = fusion.groups[0]
    assert group.kind == "contraction" and graph.node(group.anchor).op == "matmul"
    assert [graph.node(n).op for n in group.prologue] == ["permute"]
    assert group.name == "matmul_bias_relu_1x120"


def test_seed_net_forward_fuses_into_at_most_7_kernels():
    graph = traced_forward("seed_net")
    fusion = fused(graph)
    assert fusion.kernel_count <= 7
    assert [g.name for g in fusion.groups] == [
        "conv2d_bias_relu_2x6x28x28", "pool_amax_2x6x14x14", "conv2d_bias_relu_2x16x10x10",
        "pool_amax_2x16x5x5", "matmul_bias_relu_2x120", "matmul_bias_relu_2x84", "matmul_bias_2x10"]


def test_seed_net_training_step_fuses_into_at_most_35_kernels_with_updates_beside_their_gradients():
    graph = seed_net_training_step_graph()
    fusion = fused(graph)
    assert fusion.kernel_count <= 35
    # the new momentum buffer and the new weight are extra outputs of the kernel that computes
    # the gradient (all three are written back: the weight's .grad too, as after an eager step)
    sources = {(m.kind, m.target): m.node for m in graph.mutations}
    group = fusion.groups[fusion.group_of[sources["param", "net.conv1.weight"]]]
    assert group.kind == "contraction" and graph.node(group.anchor).op == "conv2d_grad_weight"
    assert set(group.outputs) == {sources["param", "opt.state[0].momentum_buffer"], sources["param", "net.conv1.weight"],
                                  sources["param_grad", "net.conv1.weight"]}


# ----------------------------------------------------------------------------- group shapes

@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_graphs_fuse_into_checked_kernels_with_unchanged_results(name):
    fn, inputs = zoo.build(name)
    with ember.no_grad():
        graph = ember.trace(fn, *inputs)
    params = {k: v for k, v in (fn.state_dict().items() if hasattr(fn, "state_dict") else ())}
    expected = run_graph(graph, list(inputs), params)
    fusion = fused(graph)
    got = run_graph(graph, list(inputs), params)
    for out in graph.outputs:
        np.testing.assert_array_equal(got[out], expected[out])
    assert set(fusion.group_of) == {n.id for n in graph.nodes() if n.op not in ("input", "param", "constant")}


def test_the_seed_net_training_step_fuses_into_checked_kernels():
    graph = seed_net_training_step_graph(batch=4)
    fusion = fused(graph)
    for m in graph.mutations:
        assert m.node in fusion.groups[fusion.group_of[m.node]].outputs


def test_scalar_constants_are_inlined_and_array_constants_are_inputs():
    weights = ember.tensor([[1.0, 2.0, 3.0]])

    def fn(x):
        return (x * 2.0 + ember.tensor(weights.numpy())).exp()

    graph = ember.trace(fn, ember.randn(4, 3))
    fusion = fused(graph)
    (group,) = fusion.groups
    scalar = [n.id for n in graph.nodes() if n.op == "constant" and np.ndim(n.attrs["value"]) == 0]
    array = [n.id for n in graph.nodes() if n.op == "constant" and np.ndim(n.attrs["value"]) > 0]
    assert scalar and array
    assert group.constants == tuple(scalar) and set(array) <= set(group.inputs)
    assert not set(scalar + array) & set(fusion.group_of)


def test_a_cheap_shared_producer_is_recomputed_and_an_expensive_one_materialised():
    def fn(x, depth):
        y = x
        for _ in range(depth):
            y = (y * 1.5).tanh()  # 2 elementwise ops per round
        return y.sum(dim=1, keepdim=True), y + 1

    def run(depth):
        graph = ember.trace(lambda x: fn(x, depth), ember.randn(8, 5))
        before = set(graph.nx.nodes)
        fusion = fused(graph)
        return graph, fusion, [graph.node(n) for n in set(graph.nx.nodes) - before]

    graph, fusion, clones = run(depth=2)  # 4 ops: recomputed in both consumers
    assert fusion.kernel_count == 2 and len(clones) == 4
    assert all(c.name.endswith(".recompute") for c in clones)
    assert sorted(c.op for c in clones) == ["mul", "mul", "tanh", "tanh"]
    graph, fusion, clones = run(depth=RECOMPUTE_MAX_OPS)  # 16 ops: computed once, read twice
    assert fusion.kernel_count == 3 and not clones


def test_a_costly_shared_producer_is_computed_once_beside_a_consumer_that_others_read():
    # erf costs tens of vector ops: never recomputed (GELU's backward reads the forward's)
    def fn(x, first):
        e = (x * 0.7).erf()
        y = e * x if first else None
        total = e.sum(dim=1, keepdim=True)
        return (y, total) if first else (total, e * x)

    x = ember.randn(8, 5)
    for first, kernels in ((True, 2), (False, 3)):
        graph = ember.trace(lambda x: fn(x, first), x)
        expected = run_graph(graph, [x.numpy()])
        before = set(graph.nx.nodes)
        fusion = fused(graph)
        assert set(graph.nx.nodes) == before and fusion.kernel_count == kernels  # no clone
        (erf,) = [n for n in graph.nx.nodes if graph.node(n).op == "erf"]
        holder = fusion.groups[fusion.group_of[erf]]
        if first:  # stored by the elementwise kernel, which runs first; the reduction reads it
            assert erf in holder.outputs and ops_of(graph, holder)[-1] == "mul"
        else:  # the reduction runs first and cannot store it (another index): a kernel of its own
            assert holder.root == erf
        got = run_graph(graph, [x.numpy()])
        for out in graph.outputs:
            np.testing.assert_array_equal(got[out], expected[out])


def test_guard_nodes_and_mutation_sources_are_group_outputs():
    def fn(x, buf):
        y = (x * 2).exp()
        buf.add_(y.mean(dim=0))
        if y.sum() > 3:
            return y + 1
        return y - 1

    graph = ember.trace(fn, ember.randn(3, 4), ember.zeros(4))
    fusion = fused(graph)
    assert graph.guards and graph.mutations
    for node in [g.node for g in graph.guards] + [m.node for m in graph.mutations]:
        assert node in fusion.groups[fusion.group_of[node]].outputs


def test_opaque_ops_are_kernels_of_their_own():
    def fn(x):
        return (x.exp().cumsum(dim=1) * 2).argsort(dim=1)

    graph = ember.trace(fn, ember.randn(3, 4))
    fusion = fused(graph)
    assert [(g.kind, ops_of(graph, g)) for g in fusion.groups] == [
        ("elementwise", ["exp"]), ("opaque", ["cumsum"]), ("elementwise", ["mul"]), ("opaque", ["argsort"])]


def test_elementwise_producers_of_a_contraction_are_not_fused_into_its_loads():
    w = ember.randn(5, 6)
    graph = ember.trace(lambda x: ember.relu(x).matmul(w.t()).exp(), ember.randn(3, 6))
    fusion = fused(graph)
    assert [ops_of(graph, g) for g in fusion.groups] == [["relu"], ["permute", "matmul", "exp"]]


def test_check_rejects_arithmetic_inside_a_contractions_loads():
    w = ember.randn(5, 6)
    graph = ember.trace(lambda x: ember.relu(x).matmul(w.t()), ember.randn(3, 6))
    fusion = fused(graph)
    relu, matmul = fusion.groups
    merged = dataclasses.replace(matmul, id=0, nodes=relu.nodes + matmul.nodes,
                                 inputs=tuple(i for i in matmul.inputs if i != relu.root) + relu.inputs,
                                 prologue=relu.nodes + matmul.prologue)
    fusion.groups = [merged]
    fusion.group_of = {n: 0 for n in merged.nodes}
    with pytest.raises(AssertionError, match=r"\(relu\) computes inside a contraction's loads"):
        fusion.check()


def test_a_reduction_with_a_broadcast_consumer_ends_its_kernel_there():
    graph = ember.trace(lambda x: x - x.mean(dim=1, keepdim=True), ember.randn(4, 6))
    fusion = fused(graph)
    assert [g.kind for g in fusion.groups] == ["reduce", "elementwise"]
    assert ops_of(graph, fusion.groups[0])[-1] == "div"  # mean's division is the sum's epilogue


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_random_graphs_fuse_into_checked_kernels_and_keep_the_interpreters_results(case):
    graph, inputs = case
    expected = run_graph(graph, inputs)
    fusion = fused(graph)
    got = run_graph(graph, inputs)
    for out in graph.outputs:
        np.testing.assert_array_equal(got[out], expected[out])
    fusion.check()  # fusing twice finds the same kind of partition
    assert fuse(graph).kernel_count == fusion.kernel_count


def test_check_rejects_a_group_that_reads_a_later_kernels_output():
    graph = traced_forward("mlp")
    fusion = fused(graph)
    fusion.groups[0], fusion.groups[1] = fusion.groups[1], fusion.groups[0]
    fusion.groups[0].id, fusion.groups[1].id = 0, 1
    fusion.group_of = {n: g.id for g in fusion.groups for n in g.nodes}
    with pytest.raises(AssertionError, match="before any earlier group wrote it"):
        fusion.check()


# ----------------------------------------------------------------------------- names and dumps

def test_repeated_kernel_names_are_made_unique_in_schedule_order():
    names = [g.name for g in fused(traced_forward("residual_eval")).groups]
    assert names == ["conv2d_sub_add_rsqrt_2x4x8x8", "conv2d_sub_add_rsqrt_2x4x8x8_2"]
    # simplified first, as the pipeline does: it removes the gradient-steering identities
    # (stop_gradient, overwrite) that the traced training step holds
    names = [g.name for g in fused(simplify(seed_net_training_step_graph(batch=4))).groups]
    assert len(set(names)) == len(names)
    assert "reduce_sum_mul_add_1x10" in names and "fold_windows_ne_where_4x6x28x28" in names
    assert all(name.replace("_", "").isalnum() for name in names)  # usable as C symbols


def test_the_dump_shows_each_nodes_kernel_and_the_kernel_count():
    line = sys._getframe().f_lineno + 1
    graph = ember.trace(lambda x: F.softmax(x, dim=1), ember.randn(4, 5))
    fusion = fused(graph)
    text = fusion.format()
    # each node with its kernel and the model line it came from (a recomputed clone keeps it)
    assert f"amax(%0, axes=(1,), keepdims=True) : f32[4,1]  # amax_1 (test_fusion.py:{line})  [g0 reduce_amax_4x1]" in text
    assert "[g2 elementwise_sub_exp_div_4x5]" in text and f"sub_1.recompute (test_fusion.py:{line})" in text
    assert text.endswith("kernels: 3")
    lines = fusion.describe().splitlines()
    assert lines[0] == "g0 reduce_amax_4x1 (reduce): %1  reads %0  writes %1"
    assert lines[-1] == "kernels: 3"


def test_an_empty_program_has_no_kernels():
    graph = Graph("identity")
    x = graph.add_input((3,), "float32", "x")
    graph.outputs = [x]
    fusion = fused(graph)
    assert fusion.kernel_count == 0 and not hasattr(graph, "fusion")  # a result, not a graph attribute
