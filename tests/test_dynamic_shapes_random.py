"""Property tests of dynamic shapes over random programs: a drawn function of a [batch, F]
tensor (elementwise ops, linear layers, reshapes, softmax, layer norm, concat, slices,
reductions over the features and over the batch, products that contract the batch) is
  - symbolized from two traces and run by the reference interpreter at other batch sizes,
  - compiled by the LLVM backend and called at many batch sizes through one dynamic program,
  - planned in memory, placed at drawn sizes without overlaps,
and every result is compared with eager mode (PyTorch's semantics)."""
import numpy as np
from hypothesis import given, settings, strategies as st, HealthCheck

import ember
from ember.ir import run_graph
from ember.frontend.dynamic_shapes import symbolize
from ember.frontend.tracer import Tracer, recording
from ember.passes.fusion import fuse
from ember.passes.memory import plan_memory

F = ember.nn.functional
STEPS = ("relu", "tanh", "bias", "scale", "linear", "split_heads", "softmax", "layer_norm", "center_features",
         "center_batch", "batch_gate", "concat", "slice", "gram", "fold_batch", "flip_batch")


@st.composite
def programs(draw):
    """(steps, params): a list of step names and the parameters they use (numpy, seeded)."""
    width = draw(st.sampled_from((4, 6, 8)))
    steps = draw(st.lists(st.sampled_from(STEPS), min_size=2, max_size=7))
    ending = draw(st.sampled_from(("rows", "sum", "mean_batch")))
    return width, steps, ending, draw(st.integers(0, 2 ** 16))


def build(program):
    """The drawn program as a function of x [batch, width] (weights fixed by the seed)."""
    width, steps, ending, seed = program
    rng = np.random.default_rng(seed)
    weights = {}

    def weight(key, *shape):
        if key not in weights:
            weights[key] = ember.tensor(rng.standard_normal(shape).astype(np.float32) * 0.5)
        return weights[key]

    def fn(x):
        for k, step in enumerate(steps):
            features = x.shape[1]
            if step == "relu":
                x = x.relu()
            elif step == "tanh":
                x = x.tanh()
            elif step == "bias":
                x = x + weight(k, features)
            elif step == "scale":
                x = x * weight(k, 1, features)
            elif step == "linear":
                x = x @ weight(k, features, width) + weight((k, "b"), width)
            elif step == "split_heads" and features % 2 == 0:  # [b, f] -> [b, 2, f/2] -> softmax -> back
                x = x.view(x.shape[0], 2, features // 2).softmax(-1).flatten(1)
            elif step == "softmax":
                x = x.softmax(-1)
            elif step == "layer_norm":
                x = F.layer_norm(x, (features,))
            elif step == "center_features":
                x = x - x.mean(-1, keepdim=True)
            elif step == "center_batch":  # (a mean over the dynamic dim: its count is a size)
                x = x - x.mean(0, keepdim=True)
            elif step == "batch_gate":
                x = x * x.sum(0).sigmoid()
            elif step == "concat":
                x = ember.cat([x, x.relu()], 1)[:, :width + 2]
            elif step == "slice" and features > 2:
                x = x[:, 1:]
            elif step == "gram":  # x^T x contracts the batch
                x = x @ (x.t() @ x).tanh()
            elif step == "fold_batch" and features % 2 == 0:  # the batch inside a flattened dim, and back
                half = features // 2
                folded = x.view(x.shape[0], 2, half).permute(1, 0, 2).reshape(2, -1).softmax(-1)
                x = folded.reshape(2, -1, half).permute(1, 0, 2).reshape(-1, features)
            elif step == "flip_batch":  # rows read in reverse, then every second row of a doubled batch
                x = ember.cat([x.flip(0), x], 0)[::2] * 1.5
        if ending == "sum":
            return x.sum()
        if ending == "mean_batch":
            return x.mean(0)
        return x * 1.5  # (never a view of the input: a function returning one keeps static shapes)
    fn(ember.randn(3, width))  # (creates the weights: traces then read them as closed-over tensors)
    rng = None  # noqa: F841  (weight() keeps its cell: a numpy Generator is state ember cannot guard)
    return fn


def _traced(fn, batch, width):
    tracer = Tracer("random")
    x = ember.randn(batch, width)
    tracer.add_input(x, "x")
    with recording(tracer):
        out = fn(x)
    graph = tracer.finish([out], [])
    return graph, {name: t.detach().numpy() for name, t in tracer.externals}


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(programs(), st.lists(st.integers(2, 40), min_size=1, max_size=4))
def test_the_interpreter_runs_a_symbolized_program_at_every_size(program, sizes):
    fn, width = build(program), program[0]
    (old, _), (new, params) = _traced(fn, 5, width), _traced(fn, 9, width)
    graph = symbolize(old, new)
    assert graph.symbols.sources == {"s0": [(graph.inputs[0], 0)]}
    for batch in sizes:
        x = np.random.default_rng(batch).standard_normal((batch, width)).astype(np.float32)
        got = run_graph(graph, [x], params)[graph.outputs[0]]
        _close(got, fn(ember.tensor(x)).numpy())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(programs(), st.lists(st.integers(2, 5000), min_size=1, max_size=5))
def test_the_symbolic_memory_plan_never_overlaps(program, sizes):
    fn, width = build(program), program[0]
    graph = symbolize(_traced(fn, 5, width)[0], _traced(fn, 9, width)[0])
    plan = plan_memory(graph, fuse(graph))
    for size in sizes:
        placed = plan.at({"s0": size}).check()  # (raises naming two buffers that overlap)
        assert placed.lower_bound_bytes <= placed.arena_bytes <= placed.naive_bytes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(programs())
def test_one_compiled_dynamic_program_serves_every_batch_size(program):
    fn, width = build(program), program[0]
    compiled = ember.compile(fn)
    for batch in (5, 9, 2, 17, 3, 64):
        x = ember.randn(batch, width)
        _close(compiled(x).numpy(), fn(x).numpy())
    report = compiled.report
    assert report.dynamic_dims == ["dim 0 of x: changed 5 -> 9 (automatic dynamic); the same program traced "
                                   "at a third size"], report.dynamic_dims
    assert len(report.traces) == 2 and report.compiled_calls == 3  # (2: traced again, to check)
    assert compiled.backend.stats.compiles == 2
