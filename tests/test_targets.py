"""One compiler, several targets: the Target contract and the CPU target, the driver that runs
passes -> lowering -> codegen -> cache -> load for any target, and the pass manager's list
(adding a pass is one entry; passes return results rather than set graph attributes)."""
import json
import os

import numpy as np
import pytest

import ember
import zoo
from ember import config
from ember.compiler import driver, loop_ir as L
from ember.compiler.backends import get_backend
from ember.compiler.cpu import linker, support_library
from ember.compiler.cpu.target import CpuTarget
from ember.compiler.driver import Driver
from ember.compiler.llvm import kernels as llvm_kernels
from ember.compiler.llvm.target import LLVMTarget
from ember.compiler.stage_timer import StageTimer
from ember.compiler.target import Capabilities, Target
from ember.ir import run_graph
from ember.passes import pipeline
from ember.passes.fusion import fuse
from ember.passes.memory import plan_memory


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "cache"))


def chain(x):
    return ember.relu(x * 0.5 + 1) * ember.sigmoid(x) + ember.exp(-x)


def chain_graph():
    with ember.no_grad():
        return ember.trace(chain, ember.randn(300))


def conv_graph():
    weight, projection = ember.randn(4, 3, 3, 3), ember.randn(144, 20)

    def net(x):
        return ember.relu(ember.nn.functional.conv2d(x, weight)).reshape(2, -1) @ projection
    with ember.no_grad():
        return ember.trace(net, ember.randn(2, 3, 8, 8)), {"weight": weight.numpy(), "projection": projection.numpy()}


def run_both(backend, graph, params=None):
    """(compiled outputs, interpreted outputs) on random inputs."""
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(graph.node(i).shape).astype(graph.node(i).dtype) for i in graph.inputs]
    params = params if params is not None else {}
    runner = backend.compile(graph)
    got = runner(dict(zip(graph.inputs, inputs)), params)
    env = run_graph(graph, inputs, params)
    return [got[o] for o in graph.outputs], [env[o] for o in graph.outputs], runner


# ----------------------------------------------------------------------------- the Target contract

def test_the_llvm_backend_is_the_driver_with_the_cpu_target():
    backend = get_backend("llvm")
    assert isinstance(backend, Driver) and backend.name == "llvm"
    target = backend.target
    assert isinstance(target, CpuTarget) and isinstance(target, LLVMTarget) and isinstance(target, Target)
    assert target.name == "cpu" and target.code_stages == ("llvm", "asm")
    assert target.capabilities.threads and not target.capabilities.grid
    assert {"matmul", "conv2d", "conv2d_grad_input", "conv2d_grad_weight"} == set(target.capabilities.library_calls)
    assert "sqrt" in target.float_intrinsics and "exp" in target.math_functions()


def test_the_target_key_names_what_changes_its_code():
    keys = {CpuTarget(threads=2, parallel=True).key(), CpuTarget(threads=4, parallel=True).key(),
            CpuTarget(threads=2, parallel=False).key(), CpuTarget(threads=2, parallel=True, instrument=True).key()}
    assert len(keys) == 4
    assert CpuTarget(threads=2, parallel=True).key() == CpuTarget(threads=2, parallel=True).key()


def test_the_base_target_says_which_method_a_new_target_lacks():
    class Bare(Target):
        name = "bare"
    with pytest.raises(NotImplementedError, match="Bare.emit"):
        Bare().emit(None)
    with pytest.raises(NotImplementedError, match="cannot package"):
        Bare().package(b"", "o", {}, "folder", "program")
    assert Bare().library() is None and Bare().capabilities == Capabilities()


# ----------------------------------------------------------------------------- the driver

def test_the_driver_compiles_caches_and_loads_for_the_cpu_target(tmp_path):
    graph = chain_graph()
    first = Driver(CpuTarget(), "llvm", str(tmp_path))
    got, expected, runner = run_both(first, graph)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
    assert first.stats.llvm_compiles == 1 and {"simplify", "fuse", "plan", "lower", "optimize"} <= set(
        first.stats.stage_seconds)
    second = Driver(CpuTarget(), "llvm", str(tmp_path))
    got_again, _, _ = run_both(second, graph)
    assert second.stats.cache_hits == 1 and second.stats.llvm_compiles == 0
    assert set(second.stats.stage_seconds) == {"load"}  # (found from the traced graph: no passes)
    np.testing.assert_array_equal(got_again[0], got[0])
    assert [k.kind for k in runner.prepared.kernels] == ["elementwise"]


def test_a_target_without_library_calls_runs_contractions_as_loops(tmp_path):
    class LoopsOnly(CpuTarget):
        capabilities = Capabilities(threads=True)

        def library(self):
            return None
    graph, params = conv_graph()
    backend = Driver(LoopsOnly(), "loops", str(tmp_path))
    got, expected, runner = run_both(backend, graph, params)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-4, atol=1e-4)
    statements = [s for k in runner.prepared.kernels for s in L.walk_statements(k.body)]
    assert not any(isinstance(s, (L.Gemm, L.ConvCall)) for s in statements)
    assert support_library.pieces_for(runner.prepared.kernels) == []
    # the CPU target itself calls its library for the same graph
    library_kernels = Driver(CpuTarget(), "llvm", str(tmp_path)).prepare(graph).kernels
    assert any(isinstance(s, L.ConvCall) for k in library_kernels for s in L.walk_statements(k.body))


def test_scalar_math_comes_from_the_targets_table(tmp_path):
    used = []

    class CountingExp(CpuTarget):
        def math_functions(self):
            table = super().math_functions()
            plain_exp = table["exp"]

            def exp(builder, x):
                used.append(str(x.type))
                return plain_exp(builder, x)
            return {**table, "exp": exp}
    graph = chain_graph()
    got, expected, _ = run_both(Driver(CountingExp(), "counting", str(tmp_path)), graph)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
    assert used == ["float"]


def test_a_target_refusing_a_payload_is_compiled_again_in_the_form_it_asks_for(tmp_path):
    from ember.compiler.target import LoadRefused

    class RefusesOnce(CpuTarget):
        def __init__(self):
            super().__init__()
            self.refused = []

        def payload_kind(self):
            return "o" if self.refused else "so"

        def load(self, payload, kind, *args):
            if kind == "so":
                self.refused.append(kind)
                raise LoadRefused("not this time")
            return super().load(payload, kind, *args)
    if linker.c_compiler() is None:
        pytest.skip("no C compiler: every payload is object code")
    target = RefusesOnce()
    graph = chain_graph()
    got, expected, _ = run_both(Driver(target, "refusing", str(tmp_path)), graph)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
    assert target.refused == ["so"]


def test_the_cpu_target_packages_a_program_that_loads_from_the_folder_alone(tmp_path):
    if linker.c_compiler() is None:
        pytest.skip("no C compiler: programs are not linked into shared libraries")
    graph, params = conv_graph()
    target = CpuTarget()
    backend = Driver(target, "llvm", str(tmp_path / "cache"))
    planned = driver.plan(graph)
    lowered = driver.lower(planned, target)
    with target.building(planned, backend.cache) as build:
        artifact = target.link(target.emit(lowered), lowered, build, StageTimer())
    description = {**driver.describe(lowered), **target.describe(lowered, artifact)}
    paths = target.package(artifact.payload, artifact.kind, description, str(tmp_path / "export"), "net")
    assert sorted(os.path.basename(p) for p in paths) == ["net.json", "net.so"]
    assert open(paths[0], "rb").read(4) == b"\x7fELF"
    payload = open(str(tmp_path / "export" / "net.so"), "rb").read()
    described = json.load(open(str(tmp_path / "export" / "net.json")))
    runner = target.load(payload, "so", described, backend.cache, graph, planned, lambda: lowered)
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    env = run_graph(graph, [x], params)
    np.testing.assert_allclose(runner({graph.inputs[0]: x}, params)[graph.outputs[0]], env[graph.outputs[0]],
                               rtol=1e-4, atol=1e-4)


def test_the_shared_kernel_writer_emits_for_another_llvm_triple():
    """What a GPU target reuses: lowering and compiler/llvm's kernel writer, for nvptx64."""
    llvm = pytest.importorskip("llvmlite.binding")

    class Nvptx(LLVMTarget):
        name = "nvptx-probe"
        all_llvm_targets = True
        float_intrinsics = {k: v for k, v in LLVMTarget.float_intrinsics.items() if k not in ("sin", "cos", "pow")}

        def triple(self):
            return "nvptx64-nvidia-cuda"

        def data_layout(self):
            return str(self.target_machine().target_data)

        def target_machine(self):
            self.binding()
            return llvm.Target.from_triple(self.triple()).create_target_machine(cpu="sm_80")

    class Writer(llvm_kernels.KernelWriter):
        body_writer = llvm_kernels.BodyWriter
    target = Nvptx()
    lowered = driver.lower(driver.plan(chain_graph()), target)
    (kernel,) = lowered.kernels
    program = llvm_kernels.Program("chain", lowered.kernels, lowered.locations, lowered.aliasing)
    module = target.new_module("chain")
    Writer(target, module, program, kernel, 0).write()
    ptx = target.assembly(target.optimize(module))
    assert f".func {kernel.name}" in ptx and "ex2.approx" not in ptx  # exp is the inlined polynomial
    assert ".target sm_80" in ptx


# ----------------------------------------------------------------------------- the pass manager

def test_passes_return_their_results_instead_of_setting_graph_attributes():
    net, (x,) = zoo.build("seed_net")
    with ember.no_grad():
        graph = ember.trace(net, x)
    fusion = fuse(graph)
    plan = plan_memory(graph, fusion)
    assert not hasattr(graph, "fusion") and not hasattr(graph, "plan")
    stages = pipeline.run_passes(graph, dump_dir="")
    assert [each.name for each in stages.ran] == ["simplify", "schedule", "fuse", "plan"]
    assert stages.results["fuse"].kernel_count == fusion.kernel_count == 7
    assert stages.results["plan"].arena_bytes == plan.arena_bytes
    assert not hasattr(stages.graphs["planned"], "fusion")


def test_adding_a_pass_is_one_entry_that_the_driver_dumps_and_stages_pick_up(tmp_path, monkeypatch, capsys):
    def count_kernels(graph, stages):
        return graph, len(stages.results["fuse"].groups)
    counting = pipeline.Pass("count", "counted", count_kernels,
                             lambda graph, stages: f"{stages.results['count']} kernels counted")
    monkeypatch.setattr(pipeline, "PASSES", pipeline.PASSES + (counting,))
    graph = chain_graph()
    assert pipeline.render_stage(graph, "counted") == "1 kernels counted"
    pipeline.run_passes(graph, dump_dir=str(tmp_path / "dumps"))
    assert (tmp_path / "dumps" / "chain" / "6_counted.txt").read_text() == "1 kernels counted\n"
    backend = Driver(CpuTarget(), "llvm", str(tmp_path / "cache"), debug=3)
    got, expected, _ = run_both(backend, graph)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-6)
    assert "count" in backend.stats.stage_seconds
    err = capsys.readouterr().err
    for name in ("simplify", "fuse", "plan", "count"):
        assert f"ember llvm: chain after {name}:" in err
    assert "1 kernels counted" in err


def test_ember_dump_writes_every_stage_when_the_driver_compiles(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DUMP_DIR", str(tmp_path / "dumps"))
    graph = chain_graph()
    Driver(CpuTarget(), "llvm", str(tmp_path / "cache")).compile(graph)
    files = sorted(os.listdir(tmp_path / "dumps" / "chain"))
    assert "5_planned.txt" in files and "4_fused.dot" in files and "2_simplified.diff" in files


def test_driver_render_gives_the_targets_code_stages():
    backend = get_backend("llvm")
    assert "@ember_program(ptr" in backend.render(chain_graph(), "llvm")
    with pytest.raises(ValueError, match="stages: llvm, asm"):
        backend.render(chain_graph(), "ptx")

