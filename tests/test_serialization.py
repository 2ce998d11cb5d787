"""ember.save / ember.load: exact round trips without pickle, the safetensors layout, clear
errors for damaged files, atomic writes."""
import ast
import base64
import collections
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

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


def test_parameters_load_as_parameters_with_requires_grad_as_saved():
    weight = ember.nn.Parameter(ember.ones(2))
    frozen = ember.nn.Parameter(ember.zeros(3), requires_grad=False)
    for saved, pick in [(weight, lambda x: x), ([weight], lambda x: x[0]), ({"w": weight}, lambda x: x["w"])]:
        loaded = pick(round_trip(saved))
        assert type(loaded) is ember.nn.Parameter and loaded.requires_grad and loaded.is_leaf
        assert loaded.tolist() == [1.0, 1.0]
    loaded = round_trip({"frozen": frozen, "plain": ember.ones(2)})
    assert type(loaded["frozen"]) is ember.nn.Parameter and not loaded["frozen"].requires_grad
    assert type(loaded["plain"]) is ember.Tensor and not loaded["plain"].requires_grad


def test_tensor_requiring_grad_loads_as_a_leaf_requiring_grad_without_its_grad():
    leaf = ember.tensor([1.0, 2.0], requires_grad=True)
    computed = leaf * 3  # not a leaf: torch.load gives a leaf that requires grad, as here
    (leaf * leaf).sum().backward()
    weight = ember.nn.Parameter(ember.ones(2))
    weight.sum().backward()
    loaded = round_trip({"leaf": leaf, "computed": computed, "weight": weight})
    assert leaf.grad is not None and weight.grad is not None
    for name in ("leaf", "computed", "weight"):
        assert loaded[name].requires_grad and loaded[name].is_leaf and loaded[name].grad is None, name
    assert type(loaded["leaf"]) is ember.Tensor and type(loaded["computed"]) is ember.Tensor
    assert loaded["computed"].tolist() == [3.0, 6.0]


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
    (lambda h: {**h, "weight": {**h["weight"], "dtype": "F8_E4M3"}}, "dtype 'F8_E4M3', which ember does not support"),
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


# ----------------------------------------------------------------------------- shared memory (views)
def _address(tensor):
    return tensor.data_ptr()


def test_views_of_one_base_share_memory_after_load():
    x = ember.arange(12.0).reshape(3, 4)
    loaded = round_trip({"a": x, "b": x[1:], "c": x.t(), "d": x[:, ::2]})
    a, b, c, d = (loaded[k] for k in "abcd")
    for name, view, expected in [("b", b, x[1:]), ("c", c, x.t()), ("d", d, x[:, ::2])]:
        assert view.stride() == expected.stride(), name
        assert _address(view) - _address(a) == _address(expected) - _address(x), name  # same storage offset
    a.mul_(10)  # one in-place write, seen through every view
    values = np.arange(12.0).reshape(3, 4) * 10
    assert np.array_equal(b.numpy(), values[1:]) and np.array_equal(c.numpy(), values.T)
    assert np.array_equal(d.numpy(), values[:, ::2])
    c.add_(1)  # and a write through a transposed view reaches the base
    values += 1
    assert np.array_equal(a.numpy(), values)
    b[0, 2] = -5.0  # an indexed assignment too
    values[1, 2] = -5.0
    assert np.array_equal(a.numpy(), values) and np.array_equal(c.numpy(), values.T)
    assert np.array_equal(d.numpy(), values[:, ::2])
    assert x.tolist() == np.arange(12.0).reshape(3, 4).tolist()  # the saved tensor is untouched


def test_list_of_a_tensor_and_its_slices_stays_one_storage():
    x = ember.arange(10, dtype=ember.int64)
    loaded = round_trip([x, x[2:5], x[::3], (x[7], x[1::2])])
    whole, middle, every_third, (seventh, odd) = loaded
    middle.fill_(-1)
    seventh.fill_(70)
    expected = np.arange(10)
    expected[2:5] = -1
    expected[7] = 70
    assert whole.tolist() == expected.tolist() and every_third.tolist() == expected[::3].tolist()
    assert odd.tolist() == expected[1::2].tolist() and seventh.shape == ()
    assert every_third.stride() == (3,) and odd.stride() == (2,) and whole.dtype is ember.int64


def test_tied_weights_in_a_state_dict_share_memory_after_load(tmp_path):
    def make():
        model = ember.nn.Sequential(ember.nn.Embedding(5, 3), ember.nn.Linear(3, 5, bias=False))
        model[1].weight = model[0].weight  # tied input and output embeddings
        return model

    ember.manual_seed(0)
    model = make()
    path = tmp_path / "tied.ember"
    save(model.state_dict(), path)
    state = load(path)
    assert list(state) == ["0.weight", "1.weight"]
    assert np.shares_memory(state["0.weight"].numpy(), state["1.weight"].numpy())
    state["0.weight"].add_(1)
    assert np.array_equal(state["1.weight"].numpy(), model[0].weight.detach().numpy() + 1)
    restored = make()
    restored.load_state_dict(state)
    assert np.array_equal(restored[1].weight.detach().numpy(), state["0.weight"].numpy())
    # the shared storage is one safetensors entry of the weight's own shape
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    entries = safetensors_numpy.load_file(str(path))
    assert list(entries) == ["0.weight"] and entries["0.weight"].shape == (5, 3)


def test_parameter_and_a_view_of_it_share_memory():
    weight = ember.nn.Parameter(ember.arange(6.0).reshape(2, 3))
    loaded = round_trip({"weight": weight, "row": weight[1], "frozen": weight.detach()})
    assert type(loaded["weight"]) is ember.nn.Parameter and type(loaded["row"]) is ember.Tensor
    assert loaded["row"].requires_grad and loaded["row"].is_leaf and not loaded["frozen"].requires_grad
    with ember.no_grad():
        loaded["weight"].mul_(2)
    assert loaded["row"].tolist() == [6.0, 8.0, 10.0] and loaded["frozen"].tolist() == [[0, 2, 4], [6, 8, 10]]


def test_expanded_and_zero_dim_views_keep_their_layout():
    base = ember.arange(3.0)
    scalar = ember.tensor(2.5, dtype=ember.float64)
    loaded = round_trip({"base": base, "wide": base.expand(4, 3), "scalar": scalar,
                         "scalar_alias": scalar.detach(), "lifted": scalar.unsqueeze(0)})
    wide = loaded["wide"]
    assert wide.stride() == (0, 1) and wide.shape == (4, 3)
    assert not wide.numpy().flags.writeable  # as an expanded tensor is before saving
    loaded["base"].add_(10)
    assert wide.tolist() == [[10.0, 11.0, 12.0]] * 4
    loaded["scalar"].fill_(-1)
    assert loaded["scalar_alias"].item() == -1 and loaded["lifted"].tolist() == [-1.0]
    assert loaded["scalar"].shape == () and loaded["scalar_alias"] is not loaded["scalar"]


def test_negative_strides_and_mixed_dtypes_over_one_buffer():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    base, reversed_rows = ember.from_numpy(array), ember.from_numpy(array[::-1, ::2])
    bits = ember.from_numpy(array.reshape(-1).view(np.int32)[4:8])  # the same memory as int32
    loaded = round_trip([base, reversed_rows, bits])
    assert loaded[1].stride() == (-4, 2) and loaded[2].dtype is ember.int32
    assert loaded[1].tolist() == array[::-1, ::2].tolist()
    assert loaded[2].tolist() == array.reshape(-1).view(np.int32)[4:8].tolist()
    loaded[0].fill_(1.0)
    assert loaded[1].tolist() == [[1.0, 1.0]] * 3
    assert loaded[2].tolist() == [np.float32(1.0).view(np.int32)] * 4


def test_a_view_saved_alone_stores_only_its_elements():
    big = ember.arange(1000.0).reshape(100, 10)
    view = big[3:5, ::4].t()
    buffer = io.BytesIO()
    save({"view": view}, buffer)
    assert len(buffer.getvalue()) < 1000  # not the 4000-byte base
    buffer.seek(0)
    loaded = load(buffer)["view"]
    assert loaded.shape == (3, 2) and loaded.is_contiguous()
    assert np.array_equal(loaded.numpy(), view.numpy())


def test_sharing_survives_mmap_and_a_map_location_function(tmp_path):
    x = ember.arange(6.0).reshape(2, 3)
    path = tmp_path / "views.ember"
    save({"x": x, "column": x[:, 1]}, path)
    mapped = load(path, mmap=True, map_location="cpu", weights_only=True)
    mapped["x"].add_(1)
    assert mapped["column"].tolist() == [2.0, 5.0] and load(path)["column"].tolist() == [1.0, 4.0]
    doubled = load(path, map_location=lambda storage, location: storage * 2)  # applied once per storage
    assert doubled["column"].tolist() == [2.0, 8.0]
    doubled["x"].fill_(0)
    assert doubled["column"].tolist() == [0.0, 0.0]
    with pytest.raises(RuntimeError, match=r"map_location returned a tensor of dtype float32, shape \[\] for the "
                                           r"storage 'x' \(float32, shape \[2, 3\]\), which tensors share"):
        load(path, map_location=lambda storage, location: storage.sum())


def test_reloaded_checkpoint_saves_its_tensors_separately_again():
    # tensors loaded from one file lie in one buffer; saving them again must not merge them
    state = {"a": ember.ones(3), "b": ember.zeros(2), "x": ember.arange(4.0), "head": None}
    state["head"] = state["x"][:2]
    buffer = io.BytesIO()
    save(round_trip(state), buffer)
    raw = buffer.getvalue()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert sorted(name for name in header if name != "__metadata__") == ["a", "b", "x"]
    assert header["a"]["shape"] == [3] and header["x"]["shape"] == [4]


# a checkpoint written by format version 1 (before storage sharing): a state dict with a Parameter,
# a tensor, its transpose (saved as a copy then), one tensor referenced twice, a tuple and an ndarray
VERSION_1_FILE = base64.b64decode(
    "YAIAAAAAAAB7Il9fbWV0YWRhdGFfXyI6eyJmb3JtYXQiOiJlbWJlciIsImVtYmVyLnZlcnNpb24iOiIxIiwiZW1iZXIuc3RydWN0dXJl"
    "Ijoie1wiZGljdFwiOltbXCJtb2RlbFwiLHtcIm9kaWN0XCI6W1tcIndcIix7XCJ0ZW5zb3JcIjpcIm1vZGVsLndcIixcInJlcXVpcmVz"
    "X2dyYWRcIjp0cnVlfV0sW1wieFwiLHtcInRlbnNvclwiOlwibW9kZWwueFwifV0sW1wieHRcIix7XCJ0ZW5zb3JcIjpcIm1vZGVsLnh0"
    "XCJ9XV19XSxbXCJ0d2ljZVwiLFt7XCJ0ZW5zb3JcIjpcIm1vZGVsLnhcIn0se1widGVuc29yXCI6XCJtb2RlbC54XCJ9XV0sW1wic3Rl"
    "cFwiLHtcInR1cGxlXCI6WzMsbnVsbF19XSxbXCJhcnJcIix7XCJuZGFycmF5XCI6XCJhcnJcIn1dXX0ifSwibW9kZWwudyI6eyJkdHlw"
    "ZSI6IkYzMiIsInNoYXBlIjpbMl0sImRhdGFfb2Zmc2V0cyI6WzAsOF19LCJtb2RlbC54Ijp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlsy"
    "LDNdLCJkYXRhX29mZnNldHMiOls4LDMyXX0sIm1vZGVsLnh0Ijp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOlszLDJdLCJkYXRhX29mZnNl"
    "dHMiOlszMiw1Nl19LCJhcnIiOnsiZHR5cGUiOiJJMTYiLCJzaGFwZSI6WzNdLCJkYXRhX29mZnNldHMiOls1Niw2Ml19fQAAwD8AAADA"
    "AAAAAAAAgD8AAABAAABAQAAAgEAAAKBAAAAAAAAAQEAAAIA/AACAQAAAAEAAAKBAAAABAAIA")


def test_files_written_by_format_version_1_still_load():
    loaded = load(io.BytesIO(VERSION_1_FILE))
    model = loaded["model"]
    assert isinstance(model, collections.OrderedDict) and list(model) == ["w", "x", "xt"]
    assert model["w"].tolist() == [1.5, -2.0] and model["w"].requires_grad  # version 1 kept no Parameter type
    assert model["x"].tolist() == [[0, 1, 2], [3, 4, 5]] and model["xt"].tolist() == [[0, 3], [1, 4], [2, 5]]
    assert loaded["twice"][0] is loaded["twice"][1] is model["x"]
    assert loaded["step"] == (3, None) and loaded["arr"].dtype == np.int16 and loaded["arr"].tolist() == [0, 1, 2]


@pytest.fixture
def shared_file(tmp_path):
    path = tmp_path / "shared.ember"
    x = ember.arange(8.0)
    save({"x": x, "tail": x[4:]}, path)
    return path


def _with_views(change):
    def rewrite(header):
        views = json.loads(header["__metadata__"]["ember.views"])
        header["__metadata__"]["ember.views"] = json.dumps(change(views))
        return header
    return rewrite


@pytest.mark.parametrize("change, message", [
    (_with_views(lambda v: [v[0], {**v[1], "offset": 20}]),
     r"view 1 \(F32 \[4\], strides \[4\] bytes, offset 20\) reaches bytes \[20, 36\) outside its storage 'x' "
     r"of 32 bytes"),
    (_with_views(lambda v: [v[0], {**v[1], "strides": [-8]}]), r"view 1 .* reaches bytes \[-8, 20\) outside"),
    (_with_views(lambda v: [v[0], {**v[1], "storage": "nowhere"}]),
     "view 1 refers to storage 'nowhere', which the header"),
    (_with_views(lambda v: [v[0], {**v[1], "strides": [4, 4]}]), r"view 1 has strides \[4, 4\], which do not match"),
    (_with_views(lambda v: [v[0], {**v[1], "dtype": "C64"}]), "view 1 has dtype 'C64', which ember does not support"),
    (_with_views(lambda v: v[:1]), "the structure refers to view 1, but the views table has 1 entries"),
    (lambda h: {**h, "__metadata__": {**h["__metadata__"], "ember.version": "3"}},
     "format version '3', written by a newer ember; this ember reads versions 1, 2"),
])
def test_inconsistent_views_tables_are_rejected(shared_file, change, message):
    _rewrite_header(shared_file, change)
    with pytest.raises(RuntimeError, match=r"shared.ember' is not a valid ember checkpoint: .*" + message):
        load(shared_file)


# ----------------------------------------------------------------------------- randomized sharing structure
VIEW_KINDS = ["slice", "permute", "reshape", "select", "unsqueeze", "expand", "detach", "reversed"]


@st.composite
def tensors_sharing_memory(draw):
    """A few base tensors and random chains of views of them (slices with steps, permutes,
    reshapes, selects, expands, negative steps through numpy), some picked (repeats allowed)."""
    pool = []
    for number in range(draw(st.integers(1, 3))):
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
        dtype = draw(st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.bool_]))
        values = np.arange(100 * number, 100 * number + int(np.prod(shape))).reshape(shape)
        pool.append(ember.from_numpy(values % 3 == 1 if dtype is np.bool_ else values.astype(dtype)))
    for _ in range(draw(st.integers(0, 6))):
        source = draw(st.sampled_from(pool))
        kind = draw(st.sampled_from(VIEW_KINDS))
        shape = tuple(source.shape)
        if kind == "slice" and shape:
            index = []
            for size in shape:
                start = draw(st.integers(0, size))
                index.append(slice(start, draw(st.integers(start, size)), draw(st.integers(1, 3))))
            pool.append(source[tuple(index)])
        elif kind == "permute" and len(shape) >= 2:
            pool.append(source.permute(*draw(st.permutations(range(len(shape))))))
        elif kind == "reshape":
            pool.append(source.reshape(-1) if draw(st.booleans()) else source.reshape(1, *shape))
        elif kind == "select" and shape and shape[0]:
            pool.append(source[draw(st.integers(0, shape[0] - 1))])
        elif kind == "unsqueeze":
            pool.append(source.unsqueeze(draw(st.integers(0, len(shape)))))
        elif kind == "expand":
            pool.append(source.unsqueeze(0).expand(2, *shape))
        elif kind == "detach":
            pool.append(source.detach())
        elif kind == "reversed" and shape:
            pool.append(ember.from_numpy(source.numpy()[::-draw(st.integers(1, 2))]))
    picked = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=8))
    return _arrange(draw, picked, depth=0)


def _arrange(draw, leaves, depth):
    """Nest `leaves`, in order, in random lists, tuples and dicts."""
    if len(leaves) == 1 and (depth == 2 or draw(st.booleans())):
        return leaves[0]
    cuts = sorted(set(draw(st.lists(st.integers(1, len(leaves) - 1), max_size=2)))) if len(leaves) > 1 else []
    chunks = [leaves[a:b] for a, b in zip([0] + cuts, cuts + [len(leaves)])]
    children = [_arrange(draw, chunk, depth + 1) if depth < 2 else chunk for chunk in chunks]
    kind = draw(st.sampled_from(["list", "tuple", "dict"]))
    if kind == "dict":
        return {f"part{i}": child for i, child in enumerate(children)}
    return tuple(children) if kind == "tuple" else children


def _leaves(obj):
    if isinstance(obj, ember.Tensor):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj
    return [leaf for item in items for leaf in _leaves(item)]


def _overlaps_itself(array):
    return any(step == 0 and size > 1 for step, size in zip(array.strides, array.shape))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensors_sharing_memory())
def test_random_views_load_with_the_same_values_strides_and_sharing(obj):
    loaded = round_trip(obj)
    assert_same(obj, loaded)  # container types, dtypes, shapes and values
    before, after = _leaves(obj), _leaves(loaded)
    for i in range(len(before)):
        shares_with_another = False
        for j in range(len(before)):
            if i == j:
                continue
            assert (before[i] is before[j]) == (after[i] is after[j])
            shared = np.shares_memory(before[i].numpy(), before[j].numpy())
            assert shared == np.shares_memory(after[i].numpy(), after[j].numpy()), (i, j)
            if shared:
                assert after[i].data_ptr() - after[j].data_ptr() == before[i].data_ptr() - before[j].data_ptr()
                shares_with_another |= before[i] is not before[j]
        if shares_with_another:
            assert after[i].stride() == before[i].stride(), i
        else:  # stored by value: the saved layout, or a contiguous one
            assert after[i].stride() == before[i].stride() or after[i].is_contiguous(), i
    writable = [i for i, t in enumerate(before) if t.numel() and t.numpy().flags.writeable
                and not _overlaps_itself(t.numpy())]
    if writable:  # one in-place write on both sides: every tensor must then agree again
        i = writable[0]
        flipped = not before[i].numpy().reshape(-1)[0]
        for tensor in (before[i], after[i]):
            if tensor.dtype is ember.bool:
                tensor.fill_(flipped)
            else:
                tensor.add_(100)
        for j, (expected, actual) in enumerate(zip(before, after)):
            assert np.array_equal(expected.numpy(), actual.numpy()), j
