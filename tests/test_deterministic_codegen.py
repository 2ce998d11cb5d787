"""Deterministic, fully keyed code: the same program compiles to the same LLVM IR text and
object bytes twice in one process and in fresh processes (whatever PYTHONHASHSEED), and the
compile cache key covers the source of every module the code generator imports, a list
derived from their import statements (compile_cache.code_generator_modules), kept by no one."""
import ast
import hashlib
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import ember
import zoo
from ember import config
from ember.compiler import compile_cache, driver
from ember.compiler.backends import llvm_backend as LLVMBackend
from ember.compiler.cpu import host as llvm_target, support_library
from ember.compiler.cpu.target import CpuTarget

HERE = os.path.dirname(os.path.abspath(__file__))


def seed_net_graph():
    with ember.no_grad():
        net, inputs = zoo.build("seed_net")
        return ember.trace(net, *inputs)


def training_step_graph():
    # batch 8: the fc1 weight update is big enough for a loop outlined onto threads
    return zoo.seed_net_training_step_graph(batch=8)


def generated_code(graph):
    """{artifact: text or bytes} of one program: its LLVM IR as written, optimised, its object
    code, and the LLVM IR of the support-library pieces it calls. Built for threads (outlined
    parallel loops) whether or not this host has libgomp."""
    target = CpuTarget(threads=4, parallel=True)
    lowered = driver.lower(driver.plan(graph), target)
    optimized = target.optimize(target.emit(lowered))
    code = {"llvm ir": str(target.emit(lowered)), "optimized llvm ir": str(optimized),
            "object code": llvm_target.host_target_machine().emit_object(optimized)}
    for piece in support_library.pieces_for(lowered.kernels):
        code[f"{piece} llvm ir"] = str(support_library.piece_module(piece, True))
    return code


def digest(data):
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def report_of_this_process():
    """What a fresh process generates, for the tests below (run through `python -c`): the
    sha256 of every artifact of the seed Net and its training step, their cache keys and the
    support pieces', the ember modules that generating code loaded, and the keyed modules."""
    graphs = {"seed Net": seed_net_graph(), "training step": training_step_graph()}
    before = set(sys.modules)
    code = {}
    for name, graph in graphs.items():
        for artifact, data in generated_code(graph).items():
            code[f"{name}: {artifact}"] = digest(data)
        code[f"{name}: cache key"] = driver.program_key(driver.plan(graph), CpuTarget(threads=4, parallel=True))
    for piece in support_library.PIECES:
        code[f"{piece}: cache key"] = support_library.piece_key(piece, True)
    loaded = {m for m in sys.modules if m.startswith(("ember.compiler.", "ember.ops."))}
    loaded |= {m for m in set(sys.modules) - before if m.startswith("ember.")}
    # the passes' results (planned graph, fusion, memory plan) reach the key as data instead
    loaded = {m for m in loaded if not m.startswith(tuple(p + "." for p in compile_cache.KEYED_AS_DATA))
              and m not in compile_cache.KEYED_AS_DATA}
    return {"code": code, "loaded": sorted(loaded), "keyed": sorted(compile_cache.code_generator_modules())}


@pytest.fixture(scope="module")
def fresh_processes(tmp_path_factory):
    """report_of_this_process() from two new processes with different string hashing, run side by side."""
    runs = []
    for seed in ("1", "2"):
        environment = dict(os.environ, PYTHONHASHSEED=seed,
                           EMBER_CACHE_DIR=str(tmp_path_factory.mktemp(f"cache_{seed}")))
        script = (f"import json, sys; sys.path.insert(0, {HERE!r}); import test_deterministic_codegen as t; "
                  f"print(json.dumps(t.report_of_this_process()))")
        runs.append(subprocess.Popen([sys.executable, "-c", script], env=environment, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True))
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, stderr) in zip(runs, outputs):
        assert run.returncode == 0, stderr
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]


@pytest.fixture
def key_memo_cleared(monkeypatch):
    """code_generator_sources reads the sources once per process (and once per change of their
    stats, kept on disk): forget that before and after, and read them on every call between."""
    monkeypatch.setattr(compile_cache, "MEMOIZE_DIGESTS", False)
    compile_cache.code_generator_sources.cache_clear()
    compile_cache.code_generator_modules.cache_clear()
    yield
    compile_cache.code_generator_sources.cache_clear()
    compile_cache.code_generator_modules.cache_clear()


# ----------------------------------------------------------------------------- deterministic code

@pytest.mark.parametrize("build", [seed_net_graph, training_step_graph], ids=["seed_net", "training_step"])
def test_compiling_a_program_twice_in_one_process_gives_identical_ir_and_object_code(build):
    first, second = generated_code(build()), generated_code(build())
    assert list(first) == list(second)
    for artifact in first:
        assert first[artifact] == second[artifact], f"{artifact} differs between two compiles"
    if build is training_step_graph:  # the outlined parallel loops are named from the loop, not id()
        assert '.par"' in first["llvm ir"] and '.loop"' in first["llvm ir"]


def test_two_backends_with_fresh_caches_write_identical_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "default"))
    graph = seed_net_graph()
    entries = []
    for folder in ("a", "b"):
        backend = LLVMBackend(cache_dir=str(tmp_path / folder))
        backend.compile(graph)
        assert backend.stats.llvm_compiles == 1
        root = tmp_path / folder
        entries.append({str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()})
    assert sorted(entries[0]) == sorted(entries[1])  # the same keys
    for name in entries[0]:
        assert entries[0][name] == entries[1][name], f"cache entry {name} differs"


def test_fresh_processes_with_different_hash_seeds_generate_identical_code_and_keys(fresh_processes):
    first, second = (report["code"] for report in fresh_processes)
    assert sorted(first) == sorted(second)
    assert any("training step: sgemm llvm ir" == name for name in first)
    different = [name for name in first if first[name] != second[name]]
    assert not different, f"differ between processes: {different}"


# ----------------------------------------------------------------------------- the cache key covers the code generator

def test_the_cache_keys_change_when_any_code_generator_module_changes(monkeypatch, key_memo_cleared):
    planned = driver.plan(training_step_graph())
    program_key = lambda: driver.program_key(planned, CpuTarget(threads=4, parallel=True))  # noqa: E731
    piece_key = lambda: support_library.piece_key("sgemm", True)  # noqa: E731
    keys = program_key(), piece_key()
    modules = compile_cache.code_generator_modules()
    assert "ember.compiler.loop_nests" in modules  # once missing from a hand-kept glob
    compile_cache.code_generator_sources.cache_clear()
    assert (program_key(), piece_key()) == keys  # stable while nothing changes
    read = compile_cache._read_source
    for name, path in modules.items():
        monkeypatch.setattr(compile_cache, "_read_source",
                            lambda p, edited=path: read(p) + (b"\n# edited\n" if p == edited else b""))
        compile_cache.code_generator_sources.cache_clear()
        assert program_key() != keys[0], f"editing {name} ({path}) leaves the program key unchanged"
        assert piece_key() != keys[1], f"editing {name} ({path}) leaves the support piece key unchanged"


def test_every_module_a_fresh_process_loads_to_generate_code_is_keyed(fresh_processes):
    for report in fresh_processes:
        keyed, loaded = set(report["keyed"]), set(report["loaded"])
        assert {"ember.compiler.lowering", "ember.compiler.cpu.program", "ember.compiler.cpu.sgemm",
                "ember.compiler.cpu.conv_direct", "ember.compiler.llvm.kernels"} <= loaded  # it did generate code
        assert not loaded - keyed, f"loaded to generate code but not in the cache key: {sorted(loaded - keyed)}"
        assert {"ember.compiler.loop_nests", "ember.runtime.cpu_program", "ember.ops.registry"} <= keyed


def _imports_by_ast(root):
    """The keyed modules derived independently: Python's own parser and import machinery."""
    top = root.split(".")[0]
    found, pending = set(), [root]
    while pending:
        name = pending.pop()
        if name in found or not name.startswith(top + ".") \
                or any(name == p or name.startswith(p + ".") for p in compile_cache.KEYED_AS_DATA):
            continue
        try:
            spec = importlib.util.find_spec(name)
        except ImportError:  # `from module import attribute`
            spec = None
        if spec is None:
            continue
        found.add(name)
        pending.append(name.rpartition(".")[0])
        package = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
        for statement in ast.walk(ast.parse(open(spec.origin, "rb").read())):
            if isinstance(statement, ast.Import):
                pending.extend(alias.name for alias in statement.names)
            elif isinstance(statement, ast.ImportFrom):
                source = importlib.util.resolve_name("." * statement.level + (statement.module or ""), package)
                pending.append(source)
                pending.extend(f"{source}.{alias.name}" for alias in statement.names)
    return found


def test_the_keyed_modules_are_every_module_the_code_generator_imports():
    keyed = set(compile_cache.code_generator_modules())
    imported = _imports_by_ast(compile_cache.CODE_GENERATOR_ROOT)
    assert not imported - keyed, f"imported by the code generator but not keyed: {sorted(imported - keyed)}"
    assert not keyed - imported, f"keyed but not imported by the code generator: {sorted(keyed - imported)}"


def test_the_keyed_modules_follow_the_import_statements_without_importing(tmp_path, monkeypatch):
    package = tmp_path / "fakegen"
    (package / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "",
        "root.py": "import fakegen.helper as helper\nfrom . import (sub,\n    late as _late)  # two\n\n\n"
                   "def build():\n    from .sub.deep import thing  # imported when called\n    return thing\n",
        "helper.py": "import os\nVALUE = 1\n",
        "late.py": "from fakegen.chain import \\\n    LINK\n",
        "chain.py": "LINK = 2\n",
        "unused.py": "UNUSED = 3\n",
        "sub/__init__.py": "",
        "sub/deep.py": "thing = 4\n",
    }
    for name, text in sources.items():
        (package / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    derive = compile_cache.code_generator_modules.__wrapped__
    found = derive("fakegen.root")
    assert sorted(found) == ["fakegen.chain", "fakegen.helper", "fakegen.late", "fakegen.root", "fakegen.sub",
                             "fakegen.sub.deep"]
    assert found["fakegen.sub.deep"] == str(package / "sub" / "deep.py")
    assert not any(name.startswith("fakegen") for name in sys.modules)  # read, not imported
    before = compile_cache.code_generator_sources.__wrapped__("fakegen.root")
    (package / "root.py").write_text(sources["root.py"] + "\n\ndef more():\n    from . import unused\n")
    assert "fakegen.unused" in derive("fakegen.root")
    assert compile_cache.code_generator_sources.__wrapped__("fakegen.root") != before


def _fake_package(tmp_path, monkeypatch, sources):
    package = tmp_path / "fakepkg"
    package.mkdir()
    for name, text in sources.items():
        (package / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "cache"))
    return package


def test_the_source_digest_is_kept_on_disk_and_read_again_only_when_a_file_changes(tmp_path, monkeypatch):
    package = _fake_package(tmp_path, monkeypatch, {"__init__.py": "", "root.py": "from . import helper\n",
                                                     "helper.py": "VALUE = 1\n"})
    digest = compile_cache.code_generator_sources.__wrapped__("fakepkg.root")
    assert os.listdir(tmp_path / "cache" / compile_cache.SOURCE_DIGESTS)
    read = compile_cache._read_source

    def unread(path):
        raise AssertionError(f"{path} read again although no file changed")
    monkeypatch.setattr(compile_cache, "_read_source", unread)
    assert compile_cache.code_generator_sources.__wrapped__("fakepkg.root") == digest  # from the memo
    monkeypatch.setattr(compile_cache, "_read_source", read)
    helper = package / "helper.py"
    helper.write_text("VALUE = 2\n")  # the same size: its modification time tells
    os.utime(helper, ns=(helper.stat().st_atime_ns, helper.stat().st_mtime_ns + 1_000_000))
    edited = compile_cache.code_generator_sources.__wrapped__("fakepkg.root")
    assert edited != digest
    monkeypatch.setattr(compile_cache, "MEMOIZE_DIGESTS", False)
    assert compile_cache.code_generator_sources.__wrapped__("fakepkg.root") == edited  # what reading gives


def test_a_module_file_added_beside_the_sources_changes_the_digest(tmp_path, monkeypatch):
    # `late` is a name of the package's __init__ until late.py appears: no file read changes, the folder does
    package = _fake_package(tmp_path, monkeypatch, {"__init__.py": "late = 1\n", "root.py": "from . import late\n"})
    digest = compile_cache.code_generator_sources.__wrapped__("fakepkg.root")
    folder_time = package.stat().st_mtime_ns
    (package / "late.py").write_text("LATE = 2\n")
    os.utime(package, ns=(folder_time, folder_time + 1_000_000))  # (coarse file system clocks)
    assert compile_cache.code_generator_sources.__wrapped__("fakepkg.root") != digest
