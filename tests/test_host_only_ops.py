"""Host fallbacks made explicit (issue 12 item 5): a primitive no target compiles is declared
host-only in its registry row (argsort); the CPU target runs it as a numpy callback and says
so (runner.host_only_ops, EMBER_DEBUG=1, `ember dump` code stages), a target without host
callbacks refuses the program naming the op, and such a program cannot be packaged. Normal
random numbers are loops now. No op the test zoo, the seed Net or a GPT-style model uses is
host-only."""
import numpy as np
import pytest

import ember
import zoo
from ember import nn
import ember.nn.functional as F
from ember.compiler import driver
from ember.compiler.cpu.target import CpuTarget
from ember.compiler.target import Capabilities, HostOnlyError
from ember.ir import Graph, interpret
from ember.ir.json_format import graph_from_json
from ember.ops import PRIMITIVES


def sorted_rows():
    graph = Graph("sorted_rows")
    x = graph.add_input((3, 5), "float32", "x")
    order = graph.add_node("argsort", [x], (3, 5), "int64", {"axis": 1, "descending": False}, name="order")
    graph.outputs = [graph.add_node("gather", [x, order], (3, 5), "float32", {"axis": 1}), order]
    return graph


class NoCallbackCpu(CpuTarget):
    """The CPU target as a GPU target is: no calls back into Python."""

    name = "no_callbacks"
    capabilities = Capabilities(threads=True, library_calls=CpuTarget.capabilities.library_calls)


def test_argsort_is_declared_host_only_and_runs_as_a_callback_on_the_cpu(tmp_path):
    assert PRIMITIVES["argsort"].host_only
    graph = sorted_rows()
    run = driver.Driver(CpuTarget(), cache_dir=str(tmp_path), debug=0).compile(graph)
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    results = run({graph.inputs[0]: x}, {})
    np.testing.assert_array_equal(results[graph.outputs[1]], np.argsort(x, axis=1, kind="stable"))
    np.testing.assert_array_equal(results[graph.outputs[0]], np.sort(x, axis=1))
    assert run.host_only_ops == ["argsort (%1 order)"]
    assert [k.kind for k in run.prepared.kernels].count("callback") == 1


def test_the_debug_output_and_the_code_dump_name_the_host_only_op(tmp_path, capsys):
    graph = sorted_rows()
    debug_driver = driver.Driver(CpuTarget(), cache_dir=str(tmp_path), debug=1)
    debug_driver.compile(graph)
    assert "host-only (a numpy callback): argsort (%1 order)" in capsys.readouterr().err
    assert debug_driver.render(graph, "llvm").startswith("; host-only (a numpy callback, CPU only): argsort (%1 order)")
    assert "argsort(%0, axis=1, descending=False) : i64[3,5]  # order (host-only)" in str(graph)
    kernel_text = "\n".join(k.describe() for k in debug_driver.prepare(graph).kernels)
    assert "host-only argsort: numpy callback for %1" in kernel_text


def test_a_target_without_host_callbacks_refuses_the_program_naming_the_op(tmp_path):
    graph = sorted_rows()
    with pytest.raises(HostOnlyError, match=r"argsort \(%1 order\) is host-only.*no_callbacks target cannot call back"):
        driver.Driver(NoCallbackCpu(), cache_dir=str(tmp_path)).compile(graph)
    with pytest.raises(HostOnlyError, match="argsort"):
        driver.lower(driver.plan(graph), NoCallbackCpu())


def sort_rows_and_scale(x):
    order = ember.argsort(x, dim=1)  # the host-only op, on this line
    return order.float() * 2


SORT_LINE = f"test_host_only_ops.py:{sort_rows_and_scale.__code__.co_firstlineno + 1}"


def test_a_traced_host_only_op_is_reported_with_its_source_line():
    compiled = ember.compile(sort_rows_and_scale)
    x = ember.randn(3, 4)
    for _ in range(2):
        np.testing.assert_array_equal(compiled(x).numpy(), 2 * np.argsort(x.numpy(), axis=1, kind="stable"))
    assert compiled.report.host_only_ops == [f"argsort (%1 argsort_1) at {SORT_LINE}"]
    assert f"host-only ops (numpy callbacks from the CPU code; no export or GPU):\n  argsort" in str(compiled.report)


def test_a_target_without_host_callbacks_names_the_source_line_of_the_host_only_op(tmp_path):
    compiled = ember.compile(sort_rows_and_scale, backend=driver.Driver(NoCallbackCpu(), cache_dir=str(tmp_path)))
    with pytest.raises(HostOnlyError, match=f"argsort \\(%1 argsort_1\\) at {SORT_LINE} is host-only"):
        compiled(ember.randn(3, 4))


def test_the_source_line_of_a_node_survives_json():
    graph = Graph("g")
    x = graph.add_input((3,), "float32", "x")
    graph.outputs = [graph.add_node("argsort", [x], (3,), "int64", {"axis": 0, "descending": False},
                                    source="model.py:7")]
    again = graph_from_json(graph.to_json())
    assert again.node(graph.outputs[0]).source == "model.py:7"
    assert "(host-only, model.py:7)" in str(again)


def test_a_program_with_a_host_only_op_cannot_be_packaged(tmp_path):
    target = CpuTarget()
    lowered = driver.lower(driver.plan(sorted_rows()), target)
    description = driver.describe(lowered)
    assert description["host_only"] == ["argsort (%1 order)"]
    with pytest.raises(HostOnlyError, match=r"cannot package sorted: it calls back into Python for host-only argsort"):
        target.package(b"", "so", description, str(tmp_path), "sorted")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal_random_numbers_are_loops_matching_numpy_to_float64_rounding(tmp_path, dtype):
    graph = Graph("normal")
    seed = graph.add_input((), "int64", "seed")
    graph.outputs = [graph.add_node("random", [seed], (64, 33), dtype, {"distribution": "normal", "shape": (64, 33),
                                                                         "dtype": dtype, "a": 0.5, "b": 2.0})]
    run = driver.Driver(CpuTarget(), cache_dir=str(tmp_path)).compile(graph)
    assert "callback" not in [k.kind for k in run.prepared.kernels] and run.host_only_ops == []
    inputs = {seed: np.array(2 ** 40 + 7)}
    actual, expected = run(inputs, {})[graph.outputs[0]], interpret(graph, inputs[seed])
    tolerance = 1e-6 if dtype == "float32" else 1e-13  # the float64 log1p and cos differ from numpy's by ulps
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance)
    assert abs(actual.mean() - 0.5) < 0.1 and abs(actual.std() - 2.0) < 0.1


def test_randn_and_dropout_in_traced_code_compile_without_host_callbacks(tmp_path):
    def noisy(x):
        return F.dropout(x + ember.randn(4, 8), 0.5, training=True)
    graph = ember.trace(noisy, ember.ones(4, 8))
    run = driver.Driver(NoCallbackCpu(), cache_dir=str(tmp_path)).compile(graph)
    assert run.host_only_ops == [] and "callback" not in [k.kind for k in run.prepared.kernels]


# ----------------------------------------------------------------------------- the models ember is measured on

class GPTBlock(nn.Module):
    def __init__(self, width, heads, block):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.drop = nn.Dropout(0.1)
        self.register_buffer("mask", ember.tril(ember.ones(block, block)))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (1.0 / (c // self.heads) ** 0.5)
        scores = scores.masked_fill(self.mask[:t, :t] == 0, float("-inf"))
        attention = self.drop(F.softmax(scores, dim=-1))
        x = x + self.proj((attention @ v).transpose(1, 2).contiguous().view(b, t, c))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    """A GPT-style model: token and position embeddings, pre-norm attention blocks, a head."""

    def __init__(self, vocabulary=17, width=16, heads=2, block=8, layers=2):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocabulary, width), nn.Embedding(block, width)
        self.blocks = nn.ModuleList([GPTBlock(width, heads, block) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocabulary)

    def forward(self, idx):
        x = self.tokens(idx) + self.positions(ember.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def gpt_training_step_graph():
    ember.manual_seed(0)
    model = GPT()
    optimizer = ember.optim.AdamW(model.parameters(), lr=1e-3)

    def step(idx, targets):
        optimizer.zero_grad()
        logits = model(idx)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        loss.backward()
        optimizer.step()
        return loss
    idx, targets = ember.randint(0, 17, (2, 8)), ember.randint(0, 17, (2, 8))
    step(idx, targets)
    return ember.trace(step, idx, targets)


def zoo_graphs():
    graphs = {}
    for name in zoo.NAMES:
        with ember.no_grad():
            fn, inputs = zoo.build(name)
            graphs[name] = ember.trace(fn, *inputs)
    graphs["seed Net training step"] = zoo.seed_net_training_step_graph(batch=4)
    graphs["GPT training step"] = gpt_training_step_graph()
    return graphs


def test_no_op_of_the_zoo_the_seed_net_or_a_gpt_style_model_is_host_only():
    for name, graph in zoo_graphs().items():
        planned = driver.plan(graph)
        assert driver.host_only_ops(graph) == [] and driver.host_only_ops(planned.graph) == [], name
        kinds = [k.kind for k in driver.lower(planned, NoCallbackCpu()).kernels]
        assert "callback" not in kinds, name
