"""ember.save / ember.load: exact round trips without pickle, the safetensors layout, clear
errors for damaged files, atomic writes."""
import ast
import collections
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember
from ember.frontend import serialization
from ember.frontend.serialization import save, load


def round_trip(obj, **load_options):
    buffer = io.BytesIO()
    save(obj, buffer)
    buffer.seek(0)
    return load(buffer, **load_options)


def assert_same(expected, actual, where="obj"):
    """Equal values AND equal types all the way down; tensors bit for bit."""
    assert type(actual) is type(expected) or (isinstance(expected, ember.Tensor) and type(actual) is ember.Tensor), \
        f"{where}: {type(expected).__name__} loaded as {type(actual).__name__}"
    if isinstance(expected, ember.Tensor):
        assert actual.dtype is expected.dtype and tuple(actual.shape) == tuple(expected.shape), where
        assert actual._data.tobytes() == np.ascontiguousarray(expected._data).tobytes(), where
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.tobytes() == expected.tobytes(), where
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_same(expected[key], actual[key], f"{where}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (e, a) in enumerate(zip(expected, actual)):
            assert_same(e, a, f"{where}[{i}]")
    elif isinstance(expected, float) and expected != expected:
        assert actual != actual, where
    else:
        assert actual == expected, where


ALL_DTYPES = [ember.bool, ember.uint8, ember.int8, ember.int16, ember.int32, ember.int64, ember.float16,
              ember.float32, ember.float64]


def test_every_dtype_round_trips_bit_identical():
    rng = np.random.default_rng(0)
    tensors = {}
    for dtype in ALL_DTYPES:
        raw = rng.integers(0, 256, size=24, dtype=np.uint8)
        array = raw % 2 == 1 if dtype is ember.bool else raw.view(dtype.np)  # any bits: NaN payloads too
        tensors[dtype.name] = ember.from_numpy(array)
    tensors["negative_zero"] = ember.tensor([-0.0, float("inf"), float("-inf"), float("nan")])
    tensors["scalar"] = ember.tensor(3.5, dtype=ember.float64)
    tensors["empty"] = ember.zeros(0, 3)
    tensors["transposed"] = ember.arange(6).reshape(2, 3).t()
    loaded = round_trip(tensors)
    assert_same(tensors, loaded)
    assert loaded["transposed"].tolist() == [[0, 3], [1, 4], [2, 5]]


def test_nested_structures_keep_exact_types():
    shared = ember.randn(3)
    obj = {
        "none": None, "flag": True, "int": 7, "big": 2 ** 80, "float": 7.0, "nan": float("nan"), "inf": float("-inf"),
        "text": "héllo", "tuple": (1, (2.0, "x")), "list": [1, [2, None]], "empty": ([], (), {}),
        0: "int key", 1.5: "float key", (1, "a"): "tuple key", None: "None key", True: "bool key",
        "ordered": collections.OrderedDict([("b", 1), ("a", shared)]),
        "size": ember.Size([2, 3]), "dtype": ember.float16, "device": ember.device("cpu"),
        "array": np.arange(4, dtype=np.int16), "numpy_scalar": np.float32(2.5), "twice": [shared, shared],
    }
    loaded = round_trip(obj)
    assert_same(obj, loaded)
    assert loaded["dtype"] is ember.float16 and loaded["device"] == ember.device("cpu")
    assert loaded["twice"][0] is loaded["twice"][1] is loaded["ordered"]["a"]  # one tensor, referenced 3 times
    assert isinstance(loaded["numpy_scalar"], np.float32)


def test_parameters_load_as_tensors_and_requires_grad_survives():
    weight = ember.nn.Parameter(ember.ones(2))
    loaded = round_trip({"w": weight, "plain": ember.ones(2)})
    assert type(loaded["w"]) is ember.Tensor and loaded["w"].requires_grad and loaded["w"].is_leaf
    assert not loaded["plain"].requires_grad


def test_model_and_optimizer_like_state_dicts():
    model = collections.OrderedDict([("conv1.weight", ember.randn(4, 3, 3, 3)), ("conv1.bias", ember.zeros(4)),
                                     ("bn.running_mean", ember.zeros(4)), ("bn.num_batches_tracked", ember.tensor(5))])
    optimizer = {"state": {0: {"step": ember.tensor(3.0), "exp_avg": ember.randn(4, 3, 3, 3)}, 1: {}},
                 "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False,
                                   "foreach": None, "params": [0, 1, 2]}]}
    checkpoint = {"epoch": 12, "model": model, "optimizer": optimizer, "losses": [0.5, 0.25]}
    assert_same(checkpoint, round_trip(checkpoint))


def test_linear_and_sgd_momentum_resume_bit_identically(tmp_path):
    def make():
        model = ember.nn.Linear(4, 3)
        return model, ember.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)

    def train(model, optimizer, steps):
        for step in range(steps):
            x = ember.arange(8.0 * (step + 1), 8.0 * (step + 2)).reshape(2, 4) / 10
            optimizer.zero_grad()
            (model(x) ** 2).mean().backward()
            optimizer.step()

    ember.manual_seed(4)
    model, optimizer = make()
    train(model, optimizer, 3)
    path = tmp_path / "checkpoint.ember"
    save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    train(model, optimizer, 3)

    restored, restored_optimizer = make()
    checkpoint = load(path)
    restored.load_state_dict(checkpoint["model"])
    restored_optimizer.load_state_dict(checkpoint["optimizer"])
    train(restored, restored_optimizer, 3)
    for (name, expected), actual in zip(model.state_dict().items(), restored.state_dict().values()):
        assert expected._data.tobytes() == actual._data.tobytes(), name


def test_file_layout_is_safetensors():
    state = {"fc.weight": ember.randn(2, 3), "fc.bias": ember.zeros(2, dtype=ember.float64),
             "steps": ember.tensor([1, 2], dtype=ember.int32)}
    buffer = io.BytesIO()
    save(state, buffer)
    raw = buffer.getvalue()
    header_length = int.from_bytes(raw[:8], "little")
    assert (8 + header_length) % 8 == 0
    header = json.loads(raw[8:8 + header_length])
    assert header["fc.weight"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": header["fc.weight"]["data_offsets"]}
    assert header["__metadata__"]["format"] == "ember"
    begin, end = header["fc.bias"]["data_offsets"]
    data = raw[8 + header_length:]
    assert np.frombuffer(data[begin:end], "<f8").tolist() == [0.0, 0.0]
    for entry in (v for k, v in header.items() if k != "__metadata__"):  # every tensor aligned to its itemsize
        assert entry["data_offsets"][0] % {"F64": 8, "F32": 4, "I32": 4}[entry["dtype"]] == 0


def test_safetensors_reads_our_files_and_we_read_theirs(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    state = {"a": ember.randn(3, 2), "b": ember.tensor([True, False]), "c": ember.arange(5).to(ember.int16),
             "h": ember.ones(4, dtype=ember.float16)}
    ours = tmp_path / "ours.safetensors"
    save(state, ours)
    theirs = safetensors_numpy.load_file(str(ours))
    assert sorted(theirs) == ["a", "b", "c", "h"]
    for name, tensor in state.items():
        assert theirs[name].dtype == tensor._data.dtype and np.array_equal(theirs[name], tensor._data)
    foreign = tmp_path / "foreign.safetensors"
    safetensors_numpy.save_file({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(foreign))
    loaded = load(foreign)
    assert list(loaded) == ["x"] and loaded["x"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_paths_file_objects_mmap_and_sequential_saves(tmp_path):
    path = tmp_path / "t.ember"
    save([ember.arange(3)], str(path))
    assert load(path)[0].tolist() == [0, 1, 2]
    mapped = load(path, mmap=True, map_location="cpu", weights_only=True)[0]
    mapped.add_(1)  # copy-on-write: writable, the file is untouched
    assert mapped.tolist() == [1, 2, 3] and load(path)[0].tolist() == [0, 1, 2]
    with open(path, "rb") as stream:
        assert load(stream)[0].tolist() == [0, 1, 2]
    stream = io.BytesIO()
    save({"first": 1}, stream)
    save({"second": ember.ones(1)}, stream)
    stream.seek(0)
    assert load(stream) == {"first": 1} and load(stream)["second"].tolist() == [1.0]
    loaded = load(io.BytesIO(path.read_bytes()), map_location=lambda tensor, where: tensor * 2)
    assert loaded[0].tolist() == [0, 2, 4]


# ----------------------------------------------------------------------------- damaged files
@pytest.fixture
def saved_file(tmp_path):
    path = tmp_path / "model.ember"
    save({"weight": ember.randn(4, 4), "step": 3}, path)
    return path


@pytest.mark.parametrize("keep", [0, 5, 8, 30, -1])
def test_truncated_file_raises_a_clear_error(saved_file, keep):
    raw = saved_file.read_bytes()
    saved_file.write_bytes(raw[:keep] if keep >= 0 else raw[:-1])
    with pytest.raises(RuntimeError, match=r"ember.load: '.*model.ember' is not a valid ember checkpoint: .*truncated"):
        load(saved_file)


def _rewrite_header(path, change):
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = change(json.loads(raw[8:8 + length]))
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + length:])


def test_corrupted_headers_raise_clear_errors(saved_file):
    raw = saved_file.read_bytes()
    saved_file.write_bytes(raw[:8] + b"#" + raw[9:])
    with pytest.raises(RuntimeError, match="model.ember' is not a valid ember checkpoint: header is not valid JSON"):
        load(saved_file)
    saved_file.write_bytes((2 ** 40).to_bytes(8, "little") + raw[8:])
    with pytest.raises(RuntimeError, match="header length 1099511627776 is larger than the limit"):
        load(saved_file)
    saved_file.write_bytes(raw + b"extra")
    with pytest.raises(RuntimeError, match="5 unexpected bytes follow the tensor data"):
        load(saved_file)


@pytest.mark.parametrize("change, message", [
    (lambda h: {**h, "weight": {**h["weight"], "shape": [4, 5]}},
     r"'weight': data_offsets \[0, 64\] hold 64 bytes, but F32 \[4, 5\] needs 80"),
    (lambda h: {**h, "weight": {**h["weight"], "dtype": "BF16"}}, "dtype 'BF16', which ember does not support"),
    (lambda h: {**h, "weight": {**h["weight"], "data_offsets": [8, 72]}}, "leaves a gap at byte 0"),
    (lambda h: {**h, "weight": {**h["weight"], "shape": [4, -4]}}, r"invalid shape \[4, -4\]"),
    (lambda h: {**h, "other": h["weight"]}, "overlaps another tensor"),
    (lambda h: {**h, "__metadata__": {**h["__metadata__"], "ember.structure": '{"tensor": "missing"}'}},
     "refers to tensor 'missing', which the header does not list"),
    (lambda h: {**h, "__metadata__": {**h["__metadata__"], "ember.structure": '{"mystery": 1}'}},
     "unknown structure tag 'mystery'"),
])
def test_inconsistent_headers_are_rejected(saved_file, change, message):
    _rewrite_header(saved_file, change)
    with pytest.raises(RuntimeError, match=message):
        load(saved_file)


def test_unsupported_objects_fail_before_writing(tmp_path):
    path = tmp_path / "x.ember"
    with pytest.raises(TypeError, match=r"cannot save builtins.set at obj\['config'\]\['tags'\]"):
        save({"config": {"tags": {1, 2}}}, path)
    Point = collections.namedtuple("Point", "x y")
    with pytest.raises(TypeError, match="cannot save .*Point at obj\\[0\\]"):
        save([Point(1, 2)], path)
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"contains itself at obj\[0\]"):
        save(loop, path)
    assert not path.exists() and os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- atomic writes
def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.ember"
    save({"version": 1, "w": ember.ones(3)}, path)
    before = path.read_bytes()

    def failing_write(stream, header, arrays):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(serialization, "_write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save({"version": 2, "w": ember.zeros(3)}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.ember"]
    monkeypatch.undo()
    os.chmod(path, 0o640)
    save({"version": 2}, path)
    assert load(path) == {"version": 2} and os.listdir(tmp_path) == ["model.ember"]
    assert os.stat(path).st_mode & 0o777 == 0o640  # replacing the file keeps its permissions


# ----------------------------------------------------------------------------- no pickle
def test_serialization_module_does_not_import_pickle():
    tree = ast.parse(open(serialization.__file__).read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"pickle", "_pickle", "cPickle", "dill", "marshal", "shelve", "copyreg"}


def test_save_and_load_never_touch_pickle():
    # numpy itself imports pickle (numpy._core._methods), so "pickle is absent" can't be tested;
    # instead every entry point of pickle raises while we save and load.
    script = textwrap.dedent("""
        import io, sys, collections
        import ember
        from ember.frontend.serialization import save, load

        class Trap:
            def __getattr__(self, name):
                raise AssertionError(f"pickle.{name} used during save/load")

        def trapped(*args, **kwargs):
            raise AssertionError("pickle used during save/load")

        import pickle, _pickle, copyreg
        for module in (pickle, _pickle):
            for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
                setattr(module, name, trapped)
        for name in ("pickle", "_pickle", "cPickle", "dill", "marshal", "shelve"):
            sys.modules[name] = Trap()
        obj = {"model": collections.OrderedDict(w=ember.randn(2, 2)), "opt": {0: {"step": 1}, "t": (1.5, None)}}
        buffer = io.BytesIO()
        save(obj, buffer)
        buffer.seek(0)
        back = load(buffer)
        assert back["opt"] == obj["opt"] and back["model"]["w"].tolist() == obj["model"]["w"].tolist()
        print("no pickle")
    """)
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no pickle"
