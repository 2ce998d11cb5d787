"""Dynamic shapes: symbolic sizes in the IR (ember/ir/symbols.py), dynamic programs built from
two traces (frontend/dynamic_shapes.py), and compiled code that reads its sizes when it runs.
Every compiled result is compared with eager mode, which is PyTorch's semantics."""
import os
import sys

import numpy as np
import pytest

import ember
from ember.ir import Graph, run_graph
from ember.ir.symbols import SymDim, SymbolicDecision, evaluate, parse, render
from ember.frontend.dynamic_shapes import NotDynamic, instantiate, symbolize
from ember.frontend.tracer import Tracer, recording
from ember.passes.fusion import fuse
from ember.passes.memory import SymbolicMemoryPlan, plan_memory
from zoo import SeedNet
from test_device_tensors import training_step

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from benchmark_models import gpt_class  # noqa: E402


def gpt_model(layers=2):
    """The benchmarks' GPT, small: vocabulary 65, block 64, 32 wide, 4 heads."""
    return gpt_class(ember)(65, 64, 32, 4, layers)

s0, s1 = SymDim.symbol("s0"), SymDim.symbol("s1")


# ----------------------------------------------------------------------------- symbolic sizes

def test_symbolic_sizes_simplify_and_print_as_polynomials():
    assert str(s0 * 400) == "400*s0"
    assert (s0 * 400) // 400 == s0
    assert (s0 * s1 * 64) // (s1 * 64) == s0
    assert str(3 * s0 * s1 - s0 + 2) == "3*s0*s1 - s0 + 2"
    assert parse(render(3 * s0 * s1 - s0 + 2)) == 3 * s0 * s1 - s0 + 2
    assert (s0 + 1) * 2 - 2 * s0 == 2  # constants come back as ints
    assert evaluate((s0 * 3, 4, s0 * s1), {"s0": 5, "s1": 7}) == (15, 4, 35)


def test_comparisons_are_decided_by_the_ranges_or_refused():
    # every symbol is at least 2: sizes 0 and 1 are specialised
    assert s0 != 1 and not (s0 == 1) and s0 > 1 and 4 * s0 > 7
    assert not (s0 == 120)  # equal only when provably so
    assert not (s0 == s1)
    with pytest.raises(SymbolicDecision, match="depends on the sizes"):
        _ = s0 > 50
    with pytest.raises(SymbolicDecision, match="an int was needed"):
        int(s0)
    with pytest.raises(SymbolicDecision, match="not exact"):
        _ = (s0 + 1) // 2


def test_a_symbolic_graph_round_trips_through_json():
    graph = _traced_pair(lambda x: (x.reshape(-1, 6) * 2).sum(1), (8, 3, 2), (12, 3, 2))
    again = Graph.from_json(graph.to_json())
    assert again.to_json() == graph.to_json()
    assert again.symbols.sources == graph.symbols.sources
    assert "f32[s0,6]" in str(graph)


# ----------------------------------------------------------------------------- symbolize

def _traced(fn, *shapes):
    tracer = Tracer("fn")
    tensors = [ember.randn(*shape) for shape in shapes]
    for k, t in enumerate(tensors):
        tracer.add_input(t, f"x{k}")
    with recording(tracer):
        out = fn(*tensors)
    return tracer.finish([out], [])


def _traced_pair(fn, old_shape, new_shape):
    return symbolize(_traced(fn, old_shape), _traced(fn, new_shape))


def test_view_flatten_broadcast_and_reductions_give_expressions():
    graph = _traced_pair(lambda x: (x.view(-1, 12) + x.flatten(1).mean(0)).softmax(-1).sum(), (5, 3, 4), (9, 3, 4))
    shapes = {str(graph.node(n).shape) for n in graph.nx.nodes}
    assert "(s0, 3, 4)" in shapes and "(s0, 12)" in shapes
    reshape = next(n for n in graph.nodes() if n.op == "reshape")
    assert reshape.attrs["shape"] == (s0, 12)
    x = np.random.default_rng(0).standard_normal((7, 3, 4)).astype(np.float32)
    got = run_graph(graph, [x])[graph.outputs[0]]
    want = (ember.tensor(x).view(-1, 12) + ember.tensor(x).flatten(1).mean(0)).softmax(-1).sum()
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5)


def test_python_code_that_takes_another_path_at_the_new_size_is_not_dynamic():
    def fn(x):
        return x.relu() if x.shape[0] < 10 else x.exp()
    with pytest.raises(NotDynamic, match="another path"):
        _traced_pair(fn, (4, 3), (16, 3))


def test_a_float_computed_from_the_size_is_not_dynamic():
    with pytest.raises(NotDynamic, match="value computed from the size"):
        _traced_pair(lambda x: x * (1.0 / x.shape[0]), (4, 3), (16, 3))


def test_instantiating_a_symbolic_graph_gives_the_static_trace():
    fn = lambda x: (x.view(-1, 2) @ ember.ones(2, 5)).relu()  # noqa: E731
    graph = _traced_pair(fn, (6, 4), (10, 4))
    static = _traced(fn, (6, 4))
    at_six = instantiate(graph, {"s0": 6})
    assert [(n.op, n.shape, n.attrs.get("shape")) for n in at_six.nodes()] == \
        [(n.op, n.shape, n.attrs.get("shape")) for n in static.nodes()]


# ----------------------------------------------------------------------------- the memory plan

def test_the_symbolic_memory_plan_is_placed_per_size_without_overlaps():
    graph = _traced_pair(lambda x: ((x.exp() + 1).log() * x).tanh().sum(1) * 3, (6, 50), (10, 50))
    plan = plan_memory(graph, fuse(graph))
    assert isinstance(plan, SymbolicMemoryPlan)
    for size in (2, 3, 17, 640, 4096):
        placed = plan.at({"s0": size}).check()
        assert placed.arena_bytes >= placed.lower_bound_bytes
    assert "placed per size" in plan.describe()


# ----------------------------------------------------------------------------- compiled programs

def _llvm_compiles(compiled):
    return compiled.backend.stats.compiles


SEED_NET_SIZES = [37, 64, 1, 2, 5, 128, 99, 17]


def test_the_seed_net_at_28_batch_sizes_compiles_3_programs_and_equals_eager():
    ember.manual_seed(0)
    net = SeedNet()
    compiled = ember.compile(net)
    sizes = SEED_NET_SIZES + [int(b) for b in np.random.default_rng(1).integers(1, 130, 20)]
    for batch in sizes:
        x = ember.randn(batch, 3, 32, 32)
        with ember.no_grad():
            np.testing.assert_allclose(compiled(x).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-5)
    report = compiled.report
    assert _llvm_compiles(compiled._compiled) <= 3  # the first static one, the dynamic one, size 1
    assert len(report.traces) == 3
    # (37 and 64 trace, 1 traces its own program, and 2, the first new size, traces once more to check
    # that the dynamic program is the one the code makes there too: it runs eagerly)
    assert report.compiled_calls == len(sizes) - 4
    assert report.dynamic_dims == ["dim 0 of x: changed 37 -> 64 (automatic dynamic); the same program "
                                   "traced at a third size"]
    assert "dynamic dims" in str(report) and "s0 = dim 0 of x" in str(report)


def test_a_gpt_at_sequence_lengths_8_to_32_compiles_2_programs():
    ember.manual_seed(0)
    model = gpt_model(layers=2)
    compiled = ember.compile(model)
    for length in (8, 16, 24, 32):
        idx, targets = ember.randint(0, 65, (2, length)), ember.randint(0, 65, (2, length))
        with ember.no_grad():
            np.testing.assert_allclose(compiled(idx, targets).item(), model(idx, targets).item(), rtol=1e-5)
    assert _llvm_compiles(compiled._compiled) <= 2, compiled.report
    assert compiled.report.compiled_calls == 1  # (24: traced once more to check the dynamic program; 32 ran it)
    assert not any("static" in line for line in compiled.report.dynamic_dims)


def _sgd_step(model):
    return training_step(model, ember.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4))


def test_a_training_step_over_changing_batch_sizes_matches_eager():
    ember.manual_seed(0)
    net, twin = SeedNet(), SeedNet()
    twin.load_state_dict(net.state_dict())
    compiled, eager = ember.compile(_sgd_step(net)), _sgd_step(twin)
    for batch in (16, 16, 24, 9, 2, 1, 31):
        x, y = ember.randn(batch, 3, 32, 32), ember.randint(0, 10, (batch,))
        np.testing.assert_allclose(compiled(x, y).item(), eager(x, y).item(), rtol=1e-5)
    for (name, p), (_, q) in zip(net.named_parameters(), twin.named_parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    report = compiled.report
    assert len(report.traces) == 4  # 16 (state created), 16 again, 24 (dynamic), 1
    assert report.compiled_calls == 2  # (9: traced to check the dynamic program at a third size)


def test_a_dynamic_forward_called_with_autograd_gets_a_compiled_dynamic_backward():
    ember.manual_seed(0)
    net = SeedNet()
    compiled = ember.compile(net)
    for batch in (6, 11, 4, 9, 23):
        x = ember.randn(batch, 3, 32, 32, requires_grad=True)
        compiled(x).mean().backward()  # (mean: its backward needs the batch, which no saved value shows)
        got, got_x = net.fc1.weight.grad.numpy().copy(), x.grad.numpy().copy()
        net.zero_grad()
        x.grad = None
        net(x).mean().backward()
        np.testing.assert_allclose(got, net.fc1.weight.grad.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got_x, x.grad.numpy(), rtol=1e-4, atol=1e-7)
        net.zero_grad()
    report = compiled.report
    assert len(report.traces) == 2 and report.compiled_calls == 2  # (4: traced again to check)
    assert report.dynamic_dims[0].startswith("dim 0 of x: changed 6 -> 11")
    from ember.frontend.segments import walk_segments
    dynamic = [s for tree in compiled._compiled._cache.values() for s in walk_segments(tree.root)
               if s.graph.symbols is not None]
    assert dynamic and not any(s.replays_autograd for s in dynamic)  # compiled, not replayed


def test_dynamic_false_and_mark_static_keep_shapes_static():
    fn = lambda x: (x * 2).sum(1)  # noqa: E731
    static = ember.compile(fn, dynamic=False)
    for batch in (4, 8, 12):
        static(ember.randn(batch, 3))
    assert len(static.report.traces) == 3 and not static.report.dynamic_dims
    marked = ember.compile(fn)
    for batch in (4, 8, 12):
        x = ember.randn(batch, 3)
        ember.mark_static(x, 0)
        marked(x)
    assert len(marked.report.traces) == 3


def test_mark_dynamic_lets_a_dim_become_dynamic_under_dynamic_false():
    compiled = ember.compile(lambda x: (x * 2).sum(1), dynamic=False)
    for batch in (4, 8, 12, 16):
        x = ember.randn(batch, 3)
        ember.mark_dynamic(x, 0)
        np.testing.assert_allclose(compiled(x).numpy(), (x * 2).sum(1).numpy(), rtol=1e-6)
    assert len(compiled.report.traces) == 2
    assert "mark_dynamic" in compiled.report.dynamic_dims[0]


def test_a_dim_whose_value_the_code_uses_stays_static_and_the_report_says_why():
    compiled = ember.compile(lambda x: x * (1.0 / x.shape[0]))
    for batch in (4, 8, 12):
        x = ember.randn(batch, 3)
        np.testing.assert_allclose(compiled(x).numpy(), (x / batch).numpy(), rtol=1e-6)
    assert any("stays static" in line and "computed from the size" in line for line in compiled.report.dynamic_dims)


def test_two_inputs_of_one_size_symbol_given_different_sizes_run_eagerly():
    compiled = ember.compile(lambda x, y: x.sum(1) + y.sum(1))
    for batch in (4, 8):
        compiled(ember.randn(batch, 3), ember.randn(batch, 5))
    x, y = ember.randn(6, 3), ember.randn(1, 5)  # (y broadcasts: a size the program does not take)
    np.testing.assert_allclose(compiled(x, y).numpy(), (x.sum(1) + y.sum(1)).numpy(), rtol=1e-6)
    x, y = ember.randn(6, 3), ember.randn(7, 5)
    with pytest.raises(Exception):
        compiled(x, y)  # as eagerly: the shapes do not broadcast


def test_dynamic_programs_keep_working_with_the_interpreter_backend():
    compiled = ember.compile(lambda x: (x.view(x.shape[0], -1) ** 2).sum(1), backend="interpret")
    for batch in (3, 5, 9, 4):
        x = ember.randn(batch, 2, 2)
        np.testing.assert_allclose(compiled(x).numpy(), (x.view(batch, -1) ** 2).sum(1).numpy(), rtol=1e-6)
    assert compiled.report.compiled_calls == 1


@pytest.mark.parametrize("branch", [
    lambda x: x * 2 if x.shape[0] > 50 else x + 1,  # both traced sizes (8, 16) take the same side
    lambda x: x * 2 if x.shape[0] % 2 == 0 else x + 1,  # (5 and 9: odd)
    lambda x: x * 2 if x.size(0) / 2 > 20 else x + 1,
    lambda x: x[: max(2, x.shape[0] - 40)] * 3,  # (Python's max compares the size)
])
def test_python_code_branching_on_a_size_keeps_the_dim_static_and_stays_exact(branch):
    compiled = ember.compile(branch)
    for batch in (5, 9, 8, 16, 64, 6, 100, 5):
        x = ember.randn(batch, 3)
        np.testing.assert_allclose(compiled(x).numpy(), branch(x).numpy(), rtol=1e-6)
    assert any("stays static" in line and "test_dynamic_shapes.py" in line
               for line in compiled.report.dynamic_dims), compiled.report.dynamic_dims


def test_sizes_used_in_arithmetic_and_shapes_stay_symbolic():
    def fn(x):
        batch, features = x.shape
        return x.reshape(batch * 2, features // 2).sum(1).view(batch, 2) + ember.zeros(batch, 1)
    compiled = ember.compile(fn)
    for batch in (5, 9, 2, 31):
        x = ember.randn(batch, 4)
        np.testing.assert_allclose(compiled(x).numpy(), fn(x).numpy(), rtol=1e-6)
    assert compiled.report.dynamic_dims == ["dim 0 of x: changed 5 -> 9 (automatic dynamic); the same program "
                                            "traced at a third size"]
    assert compiled.report.compiled_calls == 1


@pytest.mark.parametrize("branch", [
    lambda x: x * 2 if int(x.shape[0]) < 6 else x * 3,
    lambda x: x * 2 if len(x) < 6 else x * 3,
    lambda x: x * 2 if float(x.shape[0]) < 6 else x * 3,
    lambda x: x * 2 if x.shape[0] - 5 else x * 3,
    lambda x: x + x.shape[0] ** 2,
    lambda x: x * (x.shape[0] % 3),
    lambda x: x[: (x.shape[0] // 2) * 2] * 1.0,
])
def test_sizes_leaving_what_ember_follows_keep_the_dim_static(branch):
    compiled = ember.compile(branch)
    for batch in (3, 4, 9, 5, 7, 6):
        x = ember.randn(batch, 2)
        np.testing.assert_allclose(compiled(x).numpy(), branch(x).numpy(), rtol=1e-6)
