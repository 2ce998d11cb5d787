"""The compile cache's artifacts: programs cached as shared libraries (or object code without a
C compiler), each with the description that loads it without lowering; support-library pieces
compiled only when a program calls them; the host description; corrupted or truncated entries
rebuilt with a warning, never loaded; a cached program loads in a new process without llvmlite."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import ember
from ember import config
from ember.compiler import compile_cache
from ember.compiler.cpu import host as llvm_target, linker, support_library, target as llvm_backend
from ember.compiler.compile_cache import CompileCache
from ember.compiler.backends import llvm_backend as LLVMBackend

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "default"))
    monkeypatch.setattr(llvm_backend, "_LINKING", {})  # a link failure in one test stays there


def chain(x):
    return ember.relu(x * 0.5 + 1) * ember.sigmoid(x)


def chain_graph():
    with ember.no_grad():
        return ember.trace(chain, ember.randn(300))


def run_chain(runner, graph):
    x = np.linspace(-3, 3, 300, dtype=np.float32)
    actual = runner({graph.inputs[0]: x}, {})[graph.outputs[0]]
    np.testing.assert_allclose(actual, np.maximum(x * 0.5 + 1, 0) / (1 + np.exp(-x)), rtol=1e-6, atol=1e-7)


def entries(folder, kind):
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.endswith("." + kind)]


# ----------------------------------------------------------------------------- entries

def test_an_entry_keeps_its_payload_and_description_and_a_truncated_one_is_removed(tmp_path):
    cache = CompileCache(str(tmp_path))
    cache.store("cd" * 32, b"\x7fELF library bytes", {"entry": "ember_program", "sizes": [1, 2]}, "so")
    entry = cache.load_entry("cd" * 32, "so")
    assert entry.payload == b"\x7fELF library bytes" and entry.description == {"entry": "ember_program",
                                                                                "sizes": [1, 2]}
    path = cache.path("cd" * 32, "so")
    data = open(path, "rb").read()
    assert data.startswith(b"\x7fELF library bytes")  # the library first: tools read the entry as ELF
    open(path, "wb").write(data[:-7])
    with pytest.warns(UserWarning, match="corrupted"):
        assert cache.load_entry("cd" * 32, "so") is None
    assert not os.path.exists(path) and cache.corrupted == 1


# ----------------------------------------------------------------------------- programs as shared libraries

def test_a_program_is_cached_as_a_shared_library_that_a_second_backend_loads(tmp_path):
    if linker.c_compiler() is None:
        pytest.skip("no C compiler")
    graph = chain_graph()
    first = LLVMBackend(cache_dir=str(tmp_path))
    run_chain(first.compile(graph), graph)
    (library,) = entries(tmp_path, "so")
    assert open(library, "rb").read(4) == b"\x7fELF"
    second = LLVMBackend(cache_dir=str(tmp_path))
    runner = second.compile(graph)
    assert second.stats.cache_hits == 1 and second.stats.llvm_compiles == 0
    # found from the traced graph: no passes, no lowering (the planned graph is made when asked)
    assert set(second.stats.stage_seconds) == {"load"}
    run_chain(runner, graph)
    assert [k.kind for k in runner.prepared.kernels] == ["elementwise"]  # lowered again when asked


def test_changed_passes_are_never_skipped_by_the_traced_graph_entry(tmp_path, monkeypatch):
    # the traced-graph entry skips the passes: their source is in its key, so a program the
    # old passes planned is not found from the traced graph once they change
    graph = chain_graph()
    LLVMBackend(cache_dir=str(tmp_path)).compile(graph)
    monkeypatch.setattr(compile_cache, "graph_rewriter_sources", lambda: "other passes")
    second = LLVMBackend(cache_dir=str(tmp_path))
    run_chain(second.compile(graph), graph)
    assert "simplify" in second.stats.stage_seconds  # the passes ran


def test_graph_rewriter_sources_hash_the_passes_package_too():
    key = compile_cache.graph_rewriter_sources()
    assert len(key) == 64 and compile_cache.graph_rewriter_sources.__wrapped__(("ember.ir", "ember.ops")) != key


def test_a_truncated_shared_library_is_rebuilt_not_loaded(tmp_path):
    if linker.c_compiler() is None:
        pytest.skip("no C compiler")
    graph = chain_graph()
    LLVMBackend(cache_dir=str(tmp_path)).compile(graph)
    (library,) = entries(tmp_path, "so")
    data = open(library, "rb").read()
    with open(library + ".new", "wb") as f:
        f.write(data[:len(data) // 2])
    os.replace(library + ".new", library)
    backend = LLVMBackend(cache_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="corrupted"):
        runner = backend.compile(graph)
    assert backend.stats.llvm_compiles == 1 and backend.cache.corrupted == 1
    run_chain(runner, graph)
    assert open(library, "rb").read() == data  # whole again


def test_an_entry_with_an_unknown_description_is_rebuilt(tmp_path):
    graph = chain_graph()
    LLVMBackend(cache_dir=str(tmp_path)).compile(graph)
    (path,) = entries(tmp_path, "so") or entries(tmp_path, "o")
    key, kind = os.path.basename(path).split(".")
    cache = CompileCache(str(tmp_path))
    cache.store(key, cache.load(key, kind), {"version": -1}, kind)
    backend = LLVMBackend(cache_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="no valid program description"):
        runner = backend.compile(graph)
    assert backend.stats.llvm_compiles == 1
    run_chain(runner, graph)


def test_without_a_c_compiler_programs_are_cached_as_object_code_and_loaded_by_mcjit(tmp_path, monkeypatch):
    monkeypatch.setattr(linker, "c_compiler", lambda: None)
    graph = chain_graph()
    run_chain(LLVMBackend(cache_dir=str(tmp_path)).compile(graph), graph)
    assert entries(tmp_path, "o") and not entries(tmp_path, "so")
    second = LLVMBackend(cache_dir=str(tmp_path))
    run_chain(second.compile(graph), graph)
    assert second.stats.cache_hits == 1


def test_a_failing_link_warns_and_falls_back_to_mcjit(tmp_path, monkeypatch):
    monkeypatch.setattr(linker, "c_compiler", lambda: [sys.executable, "-c", "import sys; sys.exit('no linking')"])
    graph = chain_graph()
    backend = LLVMBackend(cache_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="cannot link a shared library.*no linking"):
        runner = backend.compile(graph)
    run_chain(runner, graph)
    assert entries(tmp_path, "o") and not entries(tmp_path, "so")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # linking is not tried again in this process
        LLVMBackend(cache_dir=str(tmp_path)).compile(graph)


def test_a_cached_program_loads_in_a_new_process_without_importing_llvmlite(tmp_path):
    script = (
        "import json, sys\n"
        "import numpy as np\n"
        "import ember\n"
        "from ember.compiler.backends import llvm_backend as LLVMBackend\n"
        f"sys.path.insert(0, {HERE!r})\n"
        "from test_compile_cache import chain_graph\n"
        "graph = chain_graph()\n"
        "backend = LLVMBackend()\n"
        "x = np.linspace(-3, 3, 300, dtype=np.float32)\n"
        "y = backend.compile(graph)({graph.inputs[0]: x}, {})[graph.outputs[0]]\n"
        "expected = np.maximum(x * 0.5 + 1, 0) / (1 + np.exp(-x))\n"
        "print(json.dumps({'hits': backend.stats.cache_hits, 'llvmlite': 'llvmlite' in sys.modules,\n"
        "                  'error': float(np.abs(y - expected).max())}))\n")
    environment = dict(os.environ, EMBER_CACHE_DIR=str(tmp_path))
    reports = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert reports[0]["hits"] == 0 and reports[0]["llvmlite"] and reports[0]["error"] < 1e-6
    assert reports[1]["hits"] == 1 and reports[1]["error"] < 1e-6
    if linker.c_compiler() is not None:
        assert not reports[1]["llvmlite"]


# ----------------------------------------------------------------------------- the support library

@pytest.mark.parametrize("stride, pieces", [(1, ["conv2d_direct"]), (2, ["sgemm", "conv2d"])])
def test_an_inference_program_compiles_only_the_support_pieces_it_calls(tmp_path, stride, pieces):
    # a unit-stride 3x3 convolution takes the direct path alone (no sgemm); stride 2 needs im2col and sgemm
    weight = ember.randn(4, 3, 3, 3)

    def net(x):
        return ember.relu(ember.nn.functional.conv2d(x, weight, stride=stride))
    with ember.no_grad():
        graph = ember.trace(net, ember.randn(2, 3, 8, 8))
    backend = LLVMBackend(cache_dir=str(tmp_path))
    runner = backend.compile(graph)
    assert support_library.pieces_for(runner.prepared.kernels) == pieces
    assert support_library.pieces_expected(runner.prepared.graph, runner.prepared.fusion) == pieces
    objects = entries(tmp_path, "o")
    if linker.c_compiler() is not None:
        assert len(objects) == len(pieces)  # the pieces; the program itself is a shared library
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with ember.no_grad():
        expected = net(ember.from_numpy(x)).numpy()
    actual = runner({graph.inputs[0]: x}, {"weight": weight.numpy()})[graph.outputs[0]]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_a_direct_piece_keeps_only_the_direct_path():
    for piece in support_library.DIRECT_PIECES:
        optimised = str(support_library.optimized_piece(piece, parallel=True))
        assert f"@ember_{piece}(" in optimised and "ember_sgemm_threads" not in optimised and "im2col" not in optimised


def test_a_convolution_piece_calls_the_sgemm_piece_instead_of_carrying_a_copy():
    module = support_library.piece_module("conv2d", parallel=False)
    functions = {f.name: f for f in module.functions}
    assert not functions["ember_sgemm_threads"].blocks  # declared only
    assert not any(name.startswith("ember_sgemm_kernel") and not name.endswith("indirect") for name in functions)
    assert functions["ember_conv2d"].blocks
    with pytest.raises(ValueError, match="unknown support library piece"):
        support_library.piece_module("conv3d", parallel=False)


# ----------------------------------------------------------------------------- the host description

def test_the_host_description_is_cached_and_a_bad_entry_is_asked_again(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    llvm_target.this_machine.cache_clear()
    try:
        asked = llvm_target.this_machine()
        if not entries(tmp_path, "json"):
            pytest.skip("no /proc/cpuinfo: LLVM is asked in every process")
        assert set(asked) == {"triple", "cpu", "features", "llvmlite"}
        (path,) = entries(tmp_path, "json")
        key = os.path.basename(path).split(".")[0]
        CompileCache(str(tmp_path)).store(key, b"", {"triple": "nonsense"}, "json")
        llvm_target.this_machine.cache_clear()
        with pytest.warns(UserWarning, match="does not describe a host"):
            assert llvm_target.this_machine() == asked
        llvm_target.this_machine.cache_clear()
        assert llvm_target.this_machine() == asked  # from the rewritten entry
        assert compile_cache.CompileCache(str(tmp_path)).load_entry(key, "json").description == asked
    finally:
        llvm_target.this_machine.cache_clear()


def test_missing_pieces_are_shared_out_to_idle_cpus_by_weight(monkeypatch):
    monkeypatch.setattr(support_library, "_busy_cpus", lambda: 1)  # only this process runs
    monkeypatch.setattr(support_library.threading, "active_count", lambda: 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert support_library._share_out(["sgemm", "conv2d"], kernels=7) == [["conv2d"]]  # sgemm stays here
    assert support_library._share_out([], kernels=7) == []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert support_library._share_out(["sgemm", "conv2d"], kernels=7) == [["conv2d"], ["sgemm"]]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert support_library._share_out(["sgemm", "conv2d"], kernels=7) == []  # no spare CPU
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(support_library, "_busy_cpus", lambda: 2)
    assert support_library._share_out(["sgemm", "conv2d"], kernels=7) == []  # the other CPU is busy
    monkeypatch.setattr(support_library, "_busy_cpus", lambda: 1)
    monkeypatch.setattr(support_library.threading, "active_count", lambda: 2)
    assert support_library._share_out(["sgemm", "conv2d"], kernels=7) == []  # no fork beside other threads


def test_busy_cpus_counts_the_tasks_running_now():
    busy = support_library._busy_cpus()
    assert busy >= 1  # this process at least
    if os.path.exists("/proc/loadavg"):
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        assert abs(busy - running) <= 2  # a snapshot a moment later


def test_pieces_compiled_by_children_are_used_and_a_failed_child_is_made_up_for(tmp_path, monkeypatch):
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    monkeypatch.setattr(support_library, "_share_out", lambda missing, kernels: [[p] for p in missing])
    cache = CompileCache(str(tmp_path))
    with support_library.compiled_alongside(["sgemm"], cache, False, kernels=1) as helpers:
        assert helpers.pieces == ["sgemm"]
        helpers.wait()
    assert cache.load(support_library.piece_key("sgemm", False)) is not None  # the child stored it
    real, parent = support_library.piece_object, os.getpid()

    def fails_in_a_child(piece, cache, parallel):
        if os.getpid() != parent:
            raise RuntimeError("a child that fails")
        return real(piece, cache, parallel)
    monkeypatch.setattr(support_library, "piece_object", fails_in_a_child)
    other = CompileCache(str(tmp_path / "other"))
    with support_library.compiled_alongside(["sgemm"], other, False, kernels=1) as helpers:
        helpers.wait()
    assert helpers.children == [] and other.load(support_library.piece_key("sgemm", False)) is None
    assert support_library.piece_object("sgemm", other, False)  # compiled here instead


def test_a_shared_library_that_cannot_be_loaded_falls_back_to_mcjit(tmp_path, monkeypatch):
    if linker.c_compiler() is None:
        pytest.skip("no C compiler")
    graph = chain_graph()
    LLVMBackend(cache_dir=str(tmp_path)).compile(graph)

    def refused(data, entry_name, folders=()):
        raise OSError("cannot map the library (noexec)")
    monkeypatch.setattr(llvm_backend, "load_shared_library", refused)
    backend = LLVMBackend(cache_dir=str(tmp_path))
    with pytest.warns(UserWarning, match="noexec.*MCJIT"):
        runner = backend.compile(graph)
    run_chain(runner, graph)
    assert entries(tmp_path, "o")
