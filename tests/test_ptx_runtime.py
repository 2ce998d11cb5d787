"""GPU programs run end to end: the PTX target's kernels through the driver, the compile
cache and the GPU runner (runtime/cuda_program.py) on the CPU's grid emulator
(runtime/grid_emulator.py: the target's own LLVM module, real threads per block, barriers
and warp shuffles), against the interpreter on the zoo, random graphs and a training step;
and the emulation has teeth (a wrong thread mapping or shuffle fails it). The same tests run
on a real device through the "ptx" backend where one is present (marked `gpu`)."""
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import ember
from ember import config
from ember.compiler import backends, driver
from ember.compiler.ptx import block_statements, kernels
from ember.compiler.ptx.target import PtxTarget
from ember.runtime import cuda_driver
from ember.runtime.cuda_driver import CudaUnavailable, cuda_available
import zoo
from graph_gen import random_graphs
from test_group_executor import seed_net_training_step_case, zoo_case
from test_llvm_backend import assert_close, compiled_outputs, interpreted

HAS_GPU = cuda_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device here (libcuda.so.1 and a GPU are needed)")
RUNNERS = ["ptx-emulated", pytest.param("ptx", marks=gpu)]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ember_gpu_cache"))


@pytest.fixture(autouse=True)
def private_cache(cache_dir, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", cache_dir)


def backend_named(name, cache_dir):
    return backends.BACKENDS[name](cache_dir=cache_dir)


# ----------------------------------------------------------------------------- programs equal the interpreter

ZOO = [name for name in zoo.NAMES if name not in ("conv", "lenet")]  # convolutions as loops: slow to emulate


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("name", ZOO)
def test_zoo_forward_graphs_run_on_the_gpu_target_as_the_interpreter(runner, name, cache_dir):
    graph, inputs, params = zoo_case(name)
    assert_close(compiled_outputs(backend_named(runner, cache_dir), graph, inputs, params),
                 interpreted(graph, inputs, params))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(case=random_graphs())
def test_random_graphs_run_on_the_emulated_gpu_as_the_interpreter(cache_dir, case):
    graph, inputs = case
    assert_close(compiled_outputs(backend_named("ptx-emulated", cache_dir), graph, inputs),
                 interpreted(graph, inputs))


@pytest.mark.parametrize("runner", RUNNERS)
def test_the_seed_net_training_step_runs_on_the_gpu_target_as_the_interpreter(runner, cache_dir):
    graph, inputs, params = seed_net_training_step_case(2)
    expected = interpreted(graph, inputs, {k: v.copy() for k, v in params.items()})
    assert_close(compiled_outputs(backend_named(runner, cache_dir), graph, inputs, params), expected)


@pytest.mark.parametrize("runner", RUNNERS)
def test_ember_compile_trains_a_model_on_the_gpu_target_as_eager(runner):
    """A whole compiled training step (forward, loss, backward, SGD with momentum) for 4 steps."""
    def make():
        ember.manual_seed(0)
        model = ember.nn.Sequential(ember.nn.Linear(20, 32), ember.nn.GELU(), ember.nn.LayerNorm(32),
                                    ember.nn.Linear(32, 5))
        return model, ember.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step(model, optimizer, x, y):
        optimizer.zero_grad()
        loss = ember.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    rng = np.random.default_rng(0)
    batches = [(ember.tensor(rng.standard_normal((16, 20)).astype(np.float32)), ember.tensor(rng.integers(0, 5, 16)))
               for _ in range(4)]
    eager_model, eager_optimizer = make()
    model, optimizer = make()
    compiled = ember.compile(step, backend=runner)
    for x, y in batches:
        expected = step(eager_model, eager_optimizer, x, y)
        np.testing.assert_allclose(compiled(model, optimizer, x, y).item(), expected.item(), rtol=1e-5, atol=1e-6)
    for p, q in zip(model.parameters(), eager_model.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-4, atol=1e-5)


def test_a_failed_check_on_the_gpu_raises_as_on_the_cpu():
    def gather(x, index):
        return x[index] * 2
    x, index = ember.randn(10), ember.tensor([1, 12])
    with pytest.raises(IndexError) as on_cpu:
        ember.compile(gather, backend="llvm")(x, index)
    with pytest.raises(IndexError) as on_gpu:
        ember.compile(gather, backend="ptx-emulated")(x, index)
    assert str(on_gpu.value) == str(on_cpu.value)
    assert "index 12 is out of bounds for dimension 0 with size 10" in str(on_gpu.value)


# ----------------------------------------------------------------------------- the emulation has teeth

def _row_and_map_program():
    def f(x):
        return ember.softmax(x, 1) + ember.sigmoid(x).sum(), ember.tanh(x) * 3
    with ember.no_grad():
        return ember.trace(f, ember.randn(40, 300))


def _emulated_error(cache_dir):
    graph = _row_and_map_program()
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((40, 300)).astype(np.float32)]
    got = compiled_outputs(backend_named("ptx-emulated", cache_dir), graph, inputs)
    return max(float(np.max(np.abs(a - e) / (1 + np.abs(e)))) for a, e in zip(got, interpreted(graph, inputs)))


def test_the_emulated_program_is_right_before_any_perturbation(cache_dir):
    lowered = driver.lower(driver.plan(_row_and_map_program()), PtxTarget())
    modes = {launch.mode for launch in PtxTarget().launches(lowered)}
    assert {"rows", "block", "grid"} <= modes
    assert _emulated_error(cache_dir) < 1e-5


@pytest.mark.parametrize("perturbation", ["block and thread index swapped", "thread index without the block's",
                                          "shuffle reads its own lane"])
def test_a_perturbed_thread_mapping_fails_the_emulation(perturbation, monkeypatch, tmp_path):
    """The emulator runs the emitted code, not a second reading of the kernels: break how the
    emitter maps iterations to threads, or the warp exchange, and the results go wrong."""
    special_register = kernels.special_register
    if perturbation == "block and thread index swapped":
        swap = {"tid": "ctaid", "ctaid": "tid"}
        monkeypatch.setattr(kernels, "special_register", lambda b, name: special_register(b, swap.get(name, name)))
    elif perturbation == "thread index without the block's":
        monkeypatch.setattr(kernels, "special_register",
                            lambda b, name: special_register(b, "tid" if name == "ctaid" else name))
    else:
        monkeypatch.setattr(block_statements, "shuffle_xor", lambda builder, value, lanes: value)
    assert _emulated_error(str(tmp_path)) > 1e-3


@pytest.mark.parametrize("driver_kind", ["fibers", "threads"])
def test_fibers_and_threads_run_blocks_alike(driver_kind, monkeypatch, tmp_path):
    """The emulator's two ways of running a block's GPU threads (runtime/grid_fibers.c, or an OS
    thread each) give the same numbers on barriers, shuffles and tensor-core products, and a
    broken warp exchange fails both."""
    from ember.runtime import grid_emulator
    if driver_kind == "threads":
        monkeypatch.setattr(grid_emulator, "_FIBERS", None)
    elif grid_emulator._FIBERS is None:
        pytest.skip("no C compiler built runtime/grid_fibers.c here (the emulator uses threads)")
    monkeypatch.setattr(ember.backends.cuda.matmul, "allow_tf32", True)
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((70, 40)).astype(np.float32), rng.standard_normal((40, 30)).astype(np.float32)
    with ember.no_grad():
        graph = ember.trace(lambda x, y: (ember.softmax(x @ y, 1) * 2, (x @ y).relu()), ember.tensor(a),
                            ember.tensor(b))
    got = compiled_outputs(backend_named("ptx-emulated", str(tmp_path / "right")), graph, [a, b])
    from test_gpu_tensor_cores import to_tf32
    product = to_tf32(a).astype(np.float64) @ to_tf32(b).astype(np.float64)
    softmax = np.exp(product - product.max(1, keepdims=True))
    np.testing.assert_allclose(got[0], softmax / softmax.sum(1, keepdims=True) * 2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[1], np.maximum(product, 0), rtol=1e-5, atol=1e-4)
    monkeypatch.setattr(block_statements, "shuffle_xor", lambda builder, value, lanes: value)
    broken = compiled_outputs(backend_named("ptx-emulated", str(tmp_path / "broken")), graph, [a, b])
    assert not np.allclose(broken[0], got[0], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- the runtime's contract

def test_without_a_driver_the_error_names_the_library_and_the_way_out(monkeypatch):
    monkeypatch.setattr(cuda_driver, "DRIVER_LIBRARY", "libcuda-that-is-not-here.so.1")
    monkeypatch.setattr(cuda_driver, "_DEVICES", {})
    with pytest.raises(CudaUnavailable, match="libcuda-that-is-not-here.so.1 does not load"):
        cuda_driver.open_device()
    assert not cuda_driver.cuda_available()
    compiled = ember.compile(lambda x: x * 2, backend="ptx")
    with pytest.raises(CudaUnavailable, match=r"cannot run .* here: .*does not load.*ptx-emulated"):
        compiled(ember.randn(4))


def test_the_runner_keeps_device_memory_and_copies_params_every_call(cache_dir):
    """A program owns its device buffers for its life; params are read afresh each call."""
    with ember.no_grad():
        linear = ember.nn.Linear(8, 4)
        compiled = ember.compile(linear, backend="ptx-emulated")
        x = ember.randn(3, 8)
        first = compiled(x).numpy()
        np.testing.assert_allclose(first, linear(x).numpy(), rtol=1e-5, atol=1e-6)
        linear.weight.mul_(2)
        np.testing.assert_allclose(compiled(x).numpy(), linear(x).numpy(), rtol=1e-5, atol=1e-6)
    device = cuda_driver.open_device(emulated=True)
    before = len(device._memory)
    graph = _row_and_map_program()
    runner = backend_named("ptx-emulated", cache_dir).compile(graph)
    assert len(device._memory) == before + 2 + len(runner.buffers)  # arena, status, one per external
    runner.close()
    assert len(device._memory) == before


@gpu
def test_the_device_reports_a_supported_compute_capability():
    device = cuda_driver.open_device()
    assert device.compute_capability >= "sm_80" and device.name
    assert PtxTarget(None).compute_capability in ("sm_80", "sm_90")


# ----------------------------------------------------------------------------- training steps: ptxas and the emulator

def _gpt(lib):
    import sys
    import os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from benchmark_models import gpt_class
    lib.manual_seed(0)
    model = gpt_class(lib)(vocab=17, block=8, dim=32, heads=2, layers=1)
    return model, model.optimizer()


def _gpt_step(model, optimizer, idx, targets):
    optimizer.zero_grad()
    loss = model(idx, targets)
    loss.backward()
    ember.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss


def _gpt_batch(seed):
    rng = np.random.default_rng(seed)
    return ember.tensor(rng.integers(0, 17, (2, 8))), ember.tensor(rng.integers(0, 17, (2, 8)))


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas (CUDA toolkit) is not on PATH")
@pytest.mark.parametrize("compute_capability", ["sm_80", "sm_90"])
def test_training_steps_of_the_seed_net_and_a_gpt_give_ptx_that_ptxas_accepts(compute_capability):
    from ember.compiler.ptx.ptxas_check import assemble, resource_usage
    from ember.compiler.stage_timer import StageTimer
    model, optimizer = _gpt(ember)
    idx, targets = _gpt_batch(0)
    _gpt_step(model, optimizer, idx, targets)  # (the optimizer's state exists)
    gpt_step = ember.trace(lambda i, t: _gpt_step(model, optimizer, i, t), idx, targets)
    seed_step = seed_net_training_step_case(2)[0]
    for graph in (seed_step, gpt_step):
        target = PtxTarget(compute_capability)
        lowered = driver.lower(driver.plan(graph), target)
        ptx = target.link(target.emit(lowered), lowered, None, StageTimer()).payload.decode()
        ok, report = assemble(ptx, compute_capability)
        assert ok, report[-2000:]
        launches = target.launches(lowered)
        assert sorted(resource_usage(report)) == sorted({launch.entry for launch in launches})
        modes = {launch.mode for launch in launches}
        assert {"grid", "rows", "tiles"} <= modes, modes
        # every convolution, its gradients and the weight update fused after them are tiles
        assert all(launch.mode in ("tiles", "tiles_split", "tiles_sum") for launch in launches
                   if launch.entry.startswith("conv2d")), \
            [(launch.entry, launch.mode) for launch in launches]


def test_a_gpt_training_step_runs_on_the_emulated_gpu_as_eager():
    """Embeddings, causal attention, layer norm, GELU, cross-entropy, their backward, gradient
    clipping and AdamW: the compiled step on the emulated GPU follows eager step by step."""
    compiled_model, compiled_optimizer = _gpt(ember)
    eager_model, eager_optimizer = _gpt(ember)
    compiled = ember.compile(_gpt_step, backend="ptx-emulated")
    steps = 5
    for seed in range(steps):  # (call 2 confirms call 1's trace and compiles it)
        idx, targets = _gpt_batch(seed)
        got = compiled(compiled_model, compiled_optimizer, idx, targets).item()
        np.testing.assert_allclose(got, _gpt_step(eager_model, eager_optimizer, idx, targets).item(), rtol=1e-5)
    assert compiled.report.compiled_calls == steps - 2, str(compiled.report)
    for (name, p), q in zip(compiled_model.named_parameters(), eager_model.parameters()):
        p, q = p.detach().numpy(), q.detach().numpy()
        if name.endswith("attn.qkv.bias"):
            # the key bias's gradient is zero in exact arithmetic (softmax ignores a shift of every
            # score in a row): it is rounding noise, of either sign, which AdamW scales up to steps
            # of about lr; it may differ by up to lr per step, the rest of the bias must agree
            third = len(p) // 3
            assert np.all(np.abs(p[third:2 * third] - q[third:2 * third]) <= 2 * steps * 3e-3)
            p, q = np.concatenate([p[:third], p[2 * third:]]), np.concatenate([q[:third], q[2 * third:]])
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-5, err_msg=name)


def test_the_gpu_benchmark_runs_on_the_emulator(tmp_path):
    """benchmarks/gpu.py's code path (compile, run, check against numpy, time the launches
    with device events) works before any GPU sees it; its emulated times mean nothing."""
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "gpu.py"), "--emulated", "--quick",
                           "--section", "fused", "--section", "sgemm", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "EMBER_CACHE_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())
    assert figures["backend"] == "ptx-emulated" and figures["fused"]["max_abs_error"] < 1e-5
    assert figures["fused"]["ember fused kernel"] > 0 and figures["sgemm"]["ember tiled sgemm"] > 0
    assert "device copy (cuMemcpyDtoD)" in done.stdout


def test_kernels_of_one_structure_share_an_entry_and_report_their_own_errors():
    """Identical layers launch one entry with their own buffers (one compile, as on the CPU);
    each launch has its own status cell, so an error names the right kernel's message."""
    layers = ember.nn.Sequential(*[ember.nn.Sequential(ember.nn.Linear(32, 32), ember.nn.Tanh()) for _ in range(3)])
    with ember.no_grad():
        graph = ember.trace(layers, ember.randn(40, 32))
    target = PtxTarget()
    launches = target.launches(driver.lower(driver.plan(graph), target))
    assert len(launches) == 3 and len({launch.entry for launch in launches}) == 1
    assert [launch.writes_entry for launch in launches] == [True, False, False]
    with ember.no_grad():
        compiled = ember.compile(layers, backend="ptx-emulated")
        x = ember.randn(40, 32)
        np.testing.assert_allclose(compiled(x).numpy(), layers(x).numpy(), rtol=1e-5, atol=1e-6)

    def two_gathers(x, i, y, j):
        return x[i] * 2, y[j] + 1
    args = ember.randn(10), ember.tensor([1, 2]), ember.randn(7), ember.tensor([3, 9])
    with pytest.raises(IndexError, match="index 9 is out of bounds for dimension 0 with size 7"):
        ember.compile(two_gathers, backend="ptx-emulated")(*args)


# ----------------------------------------------------------------------------- the driver bindings, against a fake driver

@pytest.fixture
def fake_driver(tmp_path, monkeypatch):
    """runtime/cuda_driver.py bound to tests/fake_libcuda.c (host memory, launches recorded)."""
    import ctypes
    import os
    import subprocess
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the fake CUDA driver")
    library = tmp_path / "libcuda_fake.so"
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_libcuda.c")
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", source, "-o", str(library)], check=True)
    monkeypatch.setattr(cuda_driver, "DRIVER_LIBRARY", str(library))
    monkeypatch.setattr(cuda_driver, "_DEVICES", {})
    fake = ctypes.CDLL(str(library))
    fake.fake_last_name.restype = ctypes.c_char_p
    fake.fake_argument.restype = ctypes.c_uint64
    return fake


def test_the_driver_bindings_pass_memory_launch_arguments_and_errors_through(fake_driver):
    device = cuda_driver.open_device()
    assert (device.name, device.compute_capability, device.multiprocessors) == ("Fake GPU", "sm_90", 132)
    assert cuda_driver.cuda_available() and PtxTarget(None).compute_capability == "sm_90"
    data = np.arange(1000, dtype=np.float32)
    address = device.allocate(data.nbytes)
    device.copy_in(address, data)
    other = device.allocate(data.nbytes)
    device.copy_on_device(other, address, data.nbytes)
    back = np.zeros_like(data)
    device.copy_out(back, other)
    np.testing.assert_array_equal(back, data)
    device.fill(other, 8, 0)
    device.copy_out(back, other)
    assert back[:2].tolist() == [0.0, 0.0] and back[2] == 2.0
    module = device.load_module(".version 7.8\n.target sm_90\n.visible .entry scale(\n.param .u64 a\n)\n{\n}\n")
    function = device.function(module, "scale")
    fake_driver.fake_set_argument_count(3)
    launch = device.launcher(function, [address, other, 77], 40, 256, "scale")
    launch()
    launch()
    assert fake_driver.fake_launches() == 2 and fake_driver.fake_last_name() == b"scale"
    assert (fake_driver.fake_grid(), fake_driver.fake_block()) == (40, 256)
    assert [fake_driver.fake_argument(k) for k in range(3)] == [address, other, 77]
    assert device.elapsed_ms(launch) == 0.5
    with pytest.raises(cuda_driver.CudaError, match=r"cuModuleGetFunction\(missing\) failed with "
                                                    r"CUDA_ERROR_NOT_FOUND: named symbol not found"):
        device.function(module, "missing")
    with pytest.raises(cuda_driver.CudaError, match=r"cuMemAlloc_v2\(2147483648 bytes\) failed with "
                                                    r"CUDA_ERROR_OUT_OF_MEMORY: out of memory"):
        device.allocate(1 << 31)
    with pytest.raises(cuda_driver.CudaError, match=r"cuLaunchKernel\(scale, 1 blocks of 2048 threads\) failed"):
        device.launch(function, [address], 1, 2048, "scale")
    device.free(address)
    device.free(other)


def test_a_compiled_program_is_loaded_and_launched_through_the_driver(fake_driver):
    """ember.compile(backend="ptx") with the fake driver: the PTX module loads, every launch
    gets its slots' device addresses and its own status cell (the fake runs nothing, so the
    outputs are the zeroed device memory)."""
    compiled = ember.compile(lambda x: ember.softmax(x, 1) * 2, backend="ptx")
    x = ember.randn(16, 100)
    compiled(x)  # (traced: computed eagerly)
    out = compiled(x)
    assert compiled.report.compiled_calls == 1
    assert out.shape == (16, 100) and not out.numpy().any() and fake_driver.fake_launches() == 1
    assert fake_driver.fake_last_name().startswith(b"reduce_amax") and fake_driver.fake_block() == 256
    assert fake_driver.fake_grid() == 16  # a block per row


def test_device_tensors_use_managed_memory_and_launches_read_them_in_place(fake_driver):
    """Device arrays through the driver's cuMemAllocManaged; a device-resident call hands the
    kernel the input's and the new output's own addresses (no copy in or out)."""
    from ember.runtime import device_arrays
    device = cuda_driver.open_device()
    x = device_arrays.to_device(device, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert device_arrays.device_of(x[:, 1:]) is device and x.tolist() == [[0, 1, 2], [3, 4, 5]]
    with ember.no_grad():
        graph = ember.trace(lambda t: t * 2, ember.randn(2, 3))
    runner = backends.BACKENDS["ptx"]().compile(graph)
    fake_driver.fake_set_argument_count(2)
    out = runner({graph.inputs[0]: x}, {})[graph.outputs[0]]
    assert device_arrays.device_of(out) is device and fake_driver.fake_launches() == 1
    assert sorted(fake_driver.fake_argument(k) for k in range(2)) == sorted([x.ctypes.data, out.ctypes.data])


def test_a_long_reduction_runs_split_with_a_buffer_of_partial_values(cache_dir):
    """A mean of squares over 90000 elements: many blocks write partial sums into a buffer the
    runner allocates for the pair of launches, then one block finishes."""
    with ember.no_grad():
        graph = ember.trace(lambda x: ((x * x).mean(), x.amin()), ember.randn(300, 300))
    runner = backend_named("ptx-emulated", cache_dir).compile(graph)
    assert len(runner.partials) == 2  # one buffer per split reduction
    x = np.random.default_rng(3).standard_normal((300, 300)).astype(np.float32)
    got = runner({graph.inputs[0]: x}, {})
    mean, least = (got[o] for o in graph.outputs)
    np.testing.assert_allclose(mean, np.mean(x.astype(np.float64) ** 2), rtol=1e-5)
    assert least == x.min()
    device = cuda_driver.open_device(emulated=True)
    before = len(device._memory)
    runner.close()
    assert len(device._memory) == before - 2 - len(runner.spec.externals) - 2


def test_ember_debug_lists_each_launch_with_its_mode_and_grid(cache_dir, capsys):
    from ember.compiler.driver import Driver
    with ember.no_grad():
        graph = ember.trace(lambda x: ember.softmax(x @ x.t(), 1), ember.randn(70, 40))
    Driver(PtxTarget("sm_90", emulated=True), "ptx-emulated", cache_dir, debug=1).compile(graph)
    err = capsys.readouterr().err
    assert "2 launches (2 entries):" in err
    assert "matmul_70x70" in err and "tiles    4 x 256 threads" in err
    assert "reduce_amax_70x1__reduce_exp_sum_70x1__elementwise" in err and "rows     70 x 256 threads" in err
