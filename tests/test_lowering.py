"""Lowering fused groups to loop kernels: the index algebra that turns movement ops into
strided loads, kernel names and node lists, loop shapes (collapsed contiguous loops,
reductions innermost, small windows unrolled), contraction calls, checks and fallbacks."""
import numpy as np
import pytest

import ember
import ember.nn.functional as F
from ember.compiler import loop_ir as L
from ember.compiler.index_splitting import MAX_PIECES
from ember.compiler.lowering import lower_program
from ember.ir import Graph
from ember.ops import PRIMITIVES
from ember.passes.fusion import fuse
import zoo


def lowered(fn, *args, use_gemm=True):
    with ember.no_grad():
        graph = ember.trace(fn, *args)
    fusion = fuse(graph)
    return graph, fusion, lower_program(graph, fusion, use_gemm=use_gemm)


def loops_of(kernel):
    return [s for s in L.walk_statements(kernel.body) if isinstance(s, L.Loop)]


def stores_of(kernel):
    return [s for s in L.walk_statements(kernel.body) if isinstance(s, L.Store)]


def loads_in(expr):
    return [e for e in expr.walk() if e.op == "load"]


def add(graph, op, inputs, **attrs):
    spec = PRIMITIVES[op].infer(*[graph.spec(i) for i in inputs], **attrs)
    return graph.add_node(op, inputs, spec.shape, spec.dtype, attrs)


# ----------------------------------------------------------------------------- index algebra

def test_floor_division_and_modulo_simplify_by_range():
    i, j = L.var("i", 2), L.var("j", 12)
    flat = L.iadd(L.imul(i, 12), j)
    assert L.ifloordiv(flat, 12) == i
    assert L.imod(flat, 12) == j
    assert L.ifloordiv(flat, 4).text == "((j // 4) + 3*i)"
    assert L.imod(L.iadd(j, 24), 12) == j
    assert L.ifloordiv(L.ifloordiv(j, 2), 3) == L.ifloordiv(j, 6)


def test_split_then_merged_dims_come_back_to_the_original_index():
    i = L.var("i", 400)
    parts = [L.ifloordiv(i, 25), L.imod(L.ifloordiv(i, 5), 5), L.imod(i, 5)]  # reshape 400 -> 16x5x5
    assert L.iadd(L.imul(parts[0], 25), L.imul(parts[1], 5), parts[2]) == i


def test_comparisons_and_clamps_decided_by_bounds_disappear():
    k = L.var("k", 5)
    assert L.icompare("ge", k, 0).is_const and L.icompare("ge", k, 0).attr is True
    assert L.icompare("lt", L.iadd(k, 3), 8).attr is True
    assert L.clamp(k, 0, 4) == k
    assert not L.icompare("lt", L.iadd(k, 3), 5).is_const


# ----------------------------------------------------------------------------- kernels

def test_a_fused_chain_is_one_kernel_named_after_its_group_with_one_collapsed_loop():
    graph, fusion, kernels = lowered(lambda x: ember.relu(x * 0.5 + 1) * ember.sigmoid(x), ember.randn(64, 120))
    (kernel,) = kernels
    assert kernel.name == fusion.groups[0].name and kernel.nodes == fusion.groups[0].nodes
    (loop,) = loops_of(kernel)
    assert loop.extent == 64 * 120 and loop.parallel
    (store,) = stores_of(kernel)
    assert store.offset == loop.var
    assert {e.op for e in store.value.walk()} >= {"sigmoid", "select", "lt", "mul", "add", "load"}  # (relu: a select)


def test_a_broadcast_bias_keeps_two_loops_with_the_contiguous_one_innermost():
    graph, _, (kernel,) = lowered(lambda x, b: x + b, ember.randn(64, 120), ember.randn(120))
    outer, inner = loops_of(kernel)
    assert (outer.extent, inner.extent) == (64, 120)
    bias = [ld for ld in loads_in(stores_of(kernel)[0].value) if kernel.slots[ld.attr].key == graph.inputs[1]]
    assert bias[0].args[0] == inner.var


def test_movement_chains_become_one_strided_load_without_division():
    def moves(x):
        return (x.permute(0, 2, 1).reshape(2, 15)[:, ::3].flip(1) * 2).exp()
    _, _, (kernel,) = lowered(moves, ember.randn(2, 3, 5))
    (store,) = stores_of(kernel)
    (load,) = loads_in(store.value)
    assert not any(e.op in ("floordiv", "mod") for e in load.walk())


def test_pad_and_concat_select_between_clamped_loads():
    def padded(x, y):
        return ember.cat([F.pad(x, (1, 1), value=-1.0), y], dim=1)
    _, _, (kernel,) = lowered(padded, ember.randn(3, 4), ember.randn(3, 2))
    # one element of padding, x, one of padding, y: the row's loop is cut into 4 pieces
    # (compiler/index_splitting.py), each a plain store without a select
    values = [store.value for store in stores_of(kernel)]
    assert len(values) == 4 and not any(e.op == "select" for v in values for e in v.walk())
    assert [v.op == "const" and v.attr == -1.0 for v in values] == [True, False, True, False]

    def unsplit(x, y):  # (more pieces than index splitting takes: the first piece keeps its selects)
        return ember.cat([F.pad(x, (1, 1), value=-1.0), y, F.pad(y, (2, 0))], dim=1)
    _, _, (kernel,) = lowered(unsplit, ember.randn(3, 4), ember.randn(3, 2))
    assert len(stores_of(kernel)) <= MAX_PIECES
    value = stores_of(kernel)[0].value
    ops = [e.op for e in value.walk()]
    assert ops.count("select") >= 1 and ("minimum" in ops or "maximum" in ops)
    assert any(e.op == "const" and e.attr == -1.0 for e in value.walk())


def test_a_reduction_puts_its_axes_innermost_with_an_accumulator():
    _, _, (kernel,) = lowered(lambda x: x.sum(dim=1), ember.randn(30, 50))
    outer = loops_of(kernel)[0]
    declare = [s for s in outer.body if isinstance(s, L.Declare)]
    reduce_loop = [s for s in outer.body if isinstance(s, L.Loop)]
    assert outer.extent == 30 and declare and reduce_loop[0].extent == 50
    update = [s for s in L.walk_statements(kernel.body) if isinstance(s, L.Update)][0]
    assert update.combine == "add"


def test_a_reduction_that_keeps_the_innermost_axis_adds_whole_rows_into_a_buffer():
    # a column sum (a bias gradient): contiguous rows are added into a scratch row, so the
    # inner loop runs along memory and vectorises, instead of a strided accumulator per column
    _, _, (kernel,) = lowered(lambda x: x.sum(dim=0), ember.randn(50, 30))
    init, accumulate, store = [s for s in kernel.body if isinstance(s, L.Loop)]
    assert init.extent == 30 and accumulate.extent == 50 and store.extent == 30
    (row,) = [s for s in accumulate.body if isinstance(s, L.Loop)]
    (update,) = [s for s in row.body if isinstance(s, L.Store)]
    assert row.extent == 30 and update.value.op == "add"
    assert any(e.op == "load" and e.attr == update.slot for e in update.value.walk())
    assert not any(isinstance(s, (L.Declare, L.Update)) for s in L.walk_statements(kernel.body))


def test_pooling_windows_are_unrolled_into_one_expression():
    _, _, (kernel,) = lowered(lambda x: F.max_pool2d(x, 2), ember.randn(1, 2, 8, 8))
    assert not any(isinstance(s, (L.Declare, L.Update)) for s in L.walk_statements(kernel.body))
    (store,) = stores_of(kernel)
    assert [e.op for e in store.value.walk()].count("maximum") == 3


def test_the_seed_net_lowers_to_conv_and_dot_product_kernels_at_batch_one():
    net, _ = zoo.build("seed_net")
    graph, fusion, kernels = lowered(net, ember.randn(1, 3, 32, 32))
    assert [k.name for k in kernels] == [g.name for g in fusion.groups]
    conv = kernels[0]
    assert any(isinstance(s, L.ConvCall) and s.kind == "conv2d_direct" for s in conv.body)  # 5x5, stride 1
    fc1 = next(k for k in kernels if k.name.startswith("matmul_bias_relu_1x120"))
    assert not any(isinstance(s, L.Gemm) for s in L.walk_statements(fc1.body))  # dot products
    _, _, kernels64 = lowered(net, ember.randn(64, 3, 32, 32))
    fc1 = next(k for k in kernels64 if k.name.startswith("matmul_bias_relu_64x120"))
    gemm = next(s for s in L.walk_statements(fc1.body) if isinstance(s, L.Gemm))
    assert (gemm.m, gemm.n, gemm.k) == (64, 120, 400)
    assert gemm.b.rows == 1 and gemm.b.cols == 400  # the weight's transpose costs nothing


def test_contractions_without_gemm_are_sum_of_products_loops():
    _, _, (kernel,) = lowered(lambda a, b: a @ b, ember.randn(8, 40), ember.randn(40, 7), use_gemm=False)
    update = [s for s in L.walk_statements(kernel.body) if isinstance(s, L.Update)][0]
    assert update.combine == "add" and update.value.op == "mul"


def test_take_checks_its_indices_and_argsort_falls_back_to_numpy():
    _, _, kernels = lowered(lambda x, i: x[i].argsort(dim=1), ember.randn(5, 3), ember.tensor([0, 4]))
    take, argsort = kernels
    (check,) = [s for s in L.walk_statements(take.body) if isinstance(s, L.Check)]
    assert take.errors[check.error][0] == "IndexError"
    assert argsort.kind == "callback" and isinstance(argsort.body[0], L.Callback)


def test_opaque_scatter_ops_copy_then_loop_serially():
    graph = Graph("scatter")
    target = graph.add_input((4, 3), "float32", "t")
    index = graph.add_input((5,), "int64", "i")
    source = graph.add_input((5, 3), "float32", "s")
    graph.outputs = [add(graph, "index_add", [target, index, source], axis=0)]
    (kernel,) = lower_program(graph, fuse(graph))
    copy, scatter = kernel.body
    assert copy.parallel and not scatter.parallel
    assert any(isinstance(s, L.Store) and s.combine == "add" for s in L.walk_statements([scatter]))


def test_kernel_descriptions_are_readable():
    _, _, (kernel,) = lowered(lambda x: x.sum(dim=1).exp(), ember.randn(4, 100))
    text = kernel.describe()
    assert text.startswith(f"kernel {kernel.name} (reduce)")
    assert "for " in text and "acc" in text and "exp(" in text


@pytest.mark.parametrize("name", zoo.NAMES)
def test_every_zoo_group_lowers_and_records_its_nodes(name):
    fn, inputs = zoo.build(name)
    graph, fusion, kernels = lowered(fn, *inputs)
    assert len(kernels) == fusion.kernel_count
    for kernel, group in zip(kernels, fusion.groups):
        assert kernel.nodes == group.nodes
        written = {s.key for s in kernel.slots if s.writes}
        assert set(group.outputs) <= written
        if kernel.kind != "callback":
            assert kernel.body, kernel.name
    assert np.all([isinstance(k.describe(), str) for k in kernels])


def test_a_weight_gradient_is_computed_transposed_straight_into_its_buffer():
    """x^T @ g then transposed to the weight's [out, in] layout: one sgemm with swapped
    strides into the root's buffer, no scratch, and a contiguous epilogue."""
    def step(x, g, w):
        return w - (x.t() @ g).t() * 0.1
    graph, _, kernels = lowered(step, ember.randn(64, 400), ember.randn(64, 120), ember.randn(120, 400))
    (kernel,) = [k for k in kernels if k.kind == "contraction"]
    gemm = next(s for s in L.walk_statements(kernel.body) if isinstance(s, L.Gemm))
    assert (gemm.m, gemm.n, gemm.k) == (120, 400, 64)
    assert kernel.slots[gemm.c.slot].key == graph.outputs[0] and kernel.scratch_bytes == 0
    (loop,) = [s for s in loops_of(kernel)]
    assert loop.extent == 120 * 400  # the epilogue collapses into one contiguous loop
