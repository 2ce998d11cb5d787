"""ember.export_library: a model as a C library (NAME.so, NAME.h, manifest, README, weights),
checked against eager ember from Python (ember.load_exported) and from a C program, with a
dynamic batch where rows provably never mix and clear refusals everywhere else."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import ember
import ember.nn as nn
import ember.nn.functional as F
from ember.compiler.cpu import host
from ember.compiler.export.library import ExportError
from ember.runtime.exported_library import ExportedLibraryError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
from benchmark_models import seed_net_class  # noqa: E402

needs_cc = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                              reason="exporting links the library with the system C compiler (cc/gcc)")
pytestmark = needs_cc


def eager(model, *inputs):
    with ember.no_grad():
        out = model(*inputs)
    return out.detach().numpy() if not isinstance(out, tuple) else tuple(o.detach().numpy() for o in out)


def mlp():
    ember.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


class TinyGPT(nn.Module):
    """Token and position embeddings, causal attention, GELU MLP, layer norm: a GPT block."""

    def __init__(self, vocab=65, dim=32, heads=4, block=16):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab, dim), nn.Embedding(block, dim)
        self.ln = nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head, self.heads = nn.Linear(dim, vocab), heads

    def forward(self, idx):
        batch, length = idx.shape
        h = self.emb(idx) + self.pos(ember.arange(length))
        q, k, v = self.qkv(self.ln(h)).split(h.shape[-1], dim=-1)
        q, k, v = [t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v)]
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.proj(a.transpose(1, 2).reshape(batch, length, -1))
        return self.head(h + self.mlp(self.ln(h)))


# ----------------------------------------------------------------------------- static exports

def test_static_export_matches_eager_and_exports_only_the_c_api(tmp_path):
    model, x = mlp(), ember.randn(5, 4)
    paths = ember.export_library(model, x, tmp_path / "out")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["README", "example.c", "manifest.json", "sequential.h", "sequential.so"]
    lib = ember.load_exported(str(tmp_path / "out"))
    np.testing.assert_allclose(lib(x.numpy()), eager(model, x), rtol=1e-6, atol=1e-6)
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(tmp_path / "out" / "sequential.so")],
                             capture_output=True, text=True, check=True).stdout.split()
    exported = sorted(s for s in symbols if s.startswith("sequential"))
    assert "sequential_create" in exported and "sequential_run" in exported
    assert not [s for s in exported if "program" in s or "weights" in s or "sgemm" in s], exported
    needed = subprocess.run(["readelf", "-d", str(tmp_path / "out" / "sequential.so")], capture_output=True,
                            text=True, check=True).stdout
    libraries = {line.split("[")[1].split("]")[0] for line in needed.splitlines() if "NEEDED" in line}
    assert libraries <= {"libc.so.6", "libm.so.6", "libgomp.so.1", "ld-linux-x86-64.so.2"}, libraries
    if shutil.which("objcopy"):  # the embedded weights lie read-only at a 64-byte boundary
        table = subprocess.run(["readelf", "-sW", str(tmp_path / "out" / "sequential.so")], capture_output=True,
                               text=True, check=True).stdout
        (address,) = [line.split()[1] for line in table.splitlines() if line.endswith("_binary_weights_bin_start")]
        assert int(address, 16) % 64 == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "input", "dtype": "float32", "shape": [5, 4]}]
    assert manifest["outputs"] == [{"name": "output", "dtype": "float32", "shape": [5, 3]}]
    assert manifest["batch"] == {"dynamic": False, "size": 5, "chunks": [5]}
    assert manifest["programs"][0]["ir"].startswith("graph") and manifest["programs"][0]["memory_plan"]


def test_a_static_export_refuses_another_batch_or_another_kind_of_dtype(tmp_path):
    ember.export_library(mlp(), ember.randn(5, 4), tmp_path / "out")
    lib = ember.load_exported(str(tmp_path / "out"))
    with pytest.raises(ExportedLibraryError, match=r"input input has shape \[3, 4\], the library takes \[5, 4\]"):
        lib(np.zeros((3, 4), np.float32))
    with pytest.raises(ExportedLibraryError, match="input input is int64, the library takes float32"):
        lib(np.zeros((5, 4), np.int64))
    assert lib(np.zeros((5, 4), np.float64)).dtype == np.float32  # (float64 -> float32, as numpy casts)


def test_one_loaded_library_serves_calls_from_several_threads_one_at_a_time(tmp_path):
    import threading
    model = mlp()
    ember.export_library(model, ember.randn(8, 4), tmp_path / "out", dynamic_batch=True)
    lib = ember.load_exported(str(tmp_path / "out"))
    inputs = [ember.randn(13, 4) for _ in range(8)]
    expected = [eager(model, x) for x in inputs]
    wrong = []

    def work(k):
        for _ in range(50):
            if np.abs(lib(inputs[k]) - expected[k]).max() > 1e-5:
                wrong.append(k)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


def test_the_example_program_builds_with_the_readmes_command_and_prints_what_python_computes(tmp_path):
    model = mlp()
    ember.export_library(model, ember.randn(2, 4), tmp_path / "out", name="classifier")
    folder = tmp_path / "out"
    readme = (folder / "README").read_text()
    command = readme.split("Build and run the example here:\n\n", 1)[1].splitlines()[0].strip()
    run = subprocess.run(command, shell=True, cwd=folder, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert abs(float(run.stdout) - eager(model, ember.zeros(2, 4))[0, 0]) < 1e-5


# A C program against any exported library: sizes from the query API, inputs from a file, outputs
# to a file; exit 2 when create fails, 3 when run fails (the message on stderr).
HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "NAME.h"
static size_t itemsize(const char *dtype) {
    if (!strcmp(dtype, "float64") || !strcmp(dtype, "int64")) return 8;
    if (!strcmp(dtype, "float32") || !strcmp(dtype, "int32")) return 4;
    if (!strcmp(dtype, "float16") || !strcmp(dtype, "int16")) return 2;
    return 1;
}
static size_t bytes_of(int rank, int64_t (*dim)(int, int), int index, const char *dtype, long batch) {
    size_t count = 1;
    for (int d = 0; d < rank; d++) { int64_t n = dim(index, d); count *= n < 0 ? (size_t)batch : (size_t)n; }
    return count * itemsize(dtype);
}
int main(int argc, char **argv) {
    long batch = atol(argv[1]);
    NAME_t *model;
    if (NAME_create(argc > 4 ? argv[4] : NULL, &model)) { fprintf(stderr, "%s\n", NAME_last_error(NULL)); return 2; }
    void *inputs[16], *outputs[16];
    size_t output_bytes[16];
    FILE *in = fopen(argv[2], "rb");
    for (int i = 0; i < NAME_num_inputs(); i++) {
        size_t size = bytes_of(NAME_input_rank(i), NAME_input_dim, i, NAME_input_dtype(i), batch);
        inputs[i] = malloc(size);
        if (fread(inputs[i], 1, size, in) != size) { fprintf(stderr, "short input file\n"); return 4; }
    }
    fclose(in);
    for (int i = 0; i < NAME_num_outputs(); i++) {
        output_bytes[i] = bytes_of(NAME_output_rank(i), NAME_output_dim, i, NAME_output_dtype(i), batch);
        outputs[i] = malloc(output_bytes[i]);
    }
    if (NAME_run_buffers(model, (const void *const *)inputs, outputs, batch)) {
        fprintf(stderr, "%s\n", NAME_last_error(model));
        return 3;
    }
    FILE *out = fopen(argv[3], "wb");
    for (int i = 0; i < NAME_num_outputs(); i++) fwrite(outputs[i], 1, output_bytes[i], out);
    fclose(out);
    NAME_destroy(model);
    return 0;
}
"""


def build_harness(folder, name):
    (folder / "harness.c").write_text(HARNESS.replace("NAME", name))
    subprocess.run(["cc", "-O1", "harness.c", "-o", "harness", "-L.", f"-l:{name}.so", "-Wl,-rpath,$ORIGIN"],
                   cwd=folder, check=True, capture_output=True)
    return folder / "harness"


def run_harness(harness, inputs, batch, *weights):
    """The harness in a fresh process on `inputs` (numpy arrays): (exit code, output bytes, stderr)."""
    folder = harness.parent
    (folder / "in.bin").write_bytes(b"".join(np.ascontiguousarray(a).tobytes() for a in inputs))
    done = subprocess.run([str(harness), str(batch), "in.bin", "out.bin", *weights], cwd=folder,
                          capture_output=True, text=True)
    output = (folder / "out.bin").read_bytes() if done.returncode == 0 else b""
    return done.returncode, output, done.stderr


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_a_c_program_in_a_fresh_process_gets_eager_embers_outputs_for_the_seed_net_and_an_mlp(tmp_path, dynamic):
    ember.manual_seed(0)
    models = {"net": (seed_net_class(ember)().eval(), (3, 32, 32)), "mlp": (mlp(), (4,))}
    for label, (model, row) in models.items():
        folder = tmp_path / label
        ember.export_library(model, ember.randn(7, *row), folder, dynamic_batch=dynamic, name=label)
        harness = build_harness(folder, label)
        for batch in ((1, 7, 64) if dynamic else (7,)):
            x = ember.randn(batch, *row)
            code, output, errors = run_harness(harness, [x.numpy()], batch)
            assert code == 0, errors
            got = np.frombuffer(output, np.float32).reshape(batch, -1)
            np.testing.assert_allclose(got, eager(model, x), rtol=1e-5, atol=1e-6)
        if not dynamic:  # the wrong batch: an error code and a message
            code, _, errors = run_harness(harness, [np.zeros((7, *row), np.float32)], 5)
            assert code == 3 and f"{label}_run: batch 5; {label} was exported for batch 7" in errors


def test_corrupt_weights_give_an_error_code_and_message_in_c(tmp_path):
    ember.export_library(mlp(), ember.randn(2, 4), tmp_path, weights="file", name="mlp")
    harness = build_harness(tmp_path, "mlp")
    code, _, errors = run_harness(harness, [np.zeros((2, 4), np.float32)], 2, "mlp.safetensors")
    assert code == 0, errors
    data = bytearray((tmp_path / "mlp.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    code, _, errors = run_harness(harness, [np.zeros((2, 4), np.float32)], 2, "bad.safetensors")
    assert code == 2 and "bad.safetensors is not mlp's weights file" in errors


def test_a_cpu_without_a_needed_feature_is_refused_before_any_of_its_code_runs(tmp_path, monkeypatch):
    """Exported as if the code needed a feature this CPU lacks (AMD's sse4a on Intel, Intel's
    AVX-512 on older AMD...): create refuses, with a code and a message, in C and in Python."""
    from ember.compiler.export import library
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
    lacking = [f for f in ("sse4a", "xop", "fma4", "avx512f", "avx512vl") if f not in flags]
    if not lacking:
        pytest.skip("this CPU has every feature the test could pretend to need")
    real = library._checked_features
    monkeypatch.setattr(library, "_checked_features", lambda features: real(features) + lacking[:1])
    ember.export_library(mlp(), ember.randn(2, 4), tmp_path, name="mlp")
    with pytest.raises(ExportedLibraryError, match=f"mlp_create: this CPU lacks {lacking[0]}, which mlp's code"):
        ember.load_exported(str(tmp_path))
    code, _, errors = run_harness(build_harness(tmp_path, "mlp"), [np.zeros((2, 4), np.float32)], 2)
    assert code == 2 and f"this CPU lacks {lacking[0]}" in errors


def test_exporting_twice_from_fresh_processes_with_empty_caches_gives_identical_libraries(tmp_path):
    script = ("import sys, ember, ember.nn as nn; ember.manual_seed(0); "
              "m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval(); "
              "ember.export_library(m, ember.randn(2, 3, 8, 8), sys.argv[1], dynamic_batch=True, name='net')")
    for k in (1, 2):
        env = dict(os.environ, EMBER_CACHE_DIR=str(tmp_path / f"cache{k}"))
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"out{k}")], check=True, env=env, cwd=tmp_path)
    for file_name in ("net.so", "net.h", "manifest.json", "example.c", "README"):
        assert (tmp_path / "out1" / file_name).read_bytes() == (tmp_path / "out2" / file_name).read_bytes(), file_name


def test_several_inputs_and_outputs_int64_inputs_and_outputs_that_are_not_computed(tmp_path):
    def f(x, idx):
        y = x * 2
        return y, x, y, idx + 1
    x, idx = ember.randn(3, 4), ember.randint(0, 9, (3, 2))
    ember.export_library(f, (x, idx), tmp_path / "out", dynamic_batch=True)
    lib = ember.load_exported(str(tmp_path / "out"))
    for rows in (1, 6, 13):
        xb, ib = ember.randn(rows, 4), ember.randint(0, 9, (rows, 2))
        for got, want in zip(lib(xb, ib), eager(f, xb, ib)):
            assert got.dtype == want.dtype and np.array_equal(got, want)


# ----------------------------------------------------------------------------- dynamic batch

def test_dynamic_batch_seed_net_runs_every_batch_size_as_eager_does(tmp_path):
    ember.manual_seed(0)
    net = seed_net_class(ember)().eval()
    ember.export_library(net, ember.randn(4, 3, 32, 32), tmp_path / "out", dynamic_batch=True)
    lib = ember.load_exported(str(tmp_path / "out"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["batch"] == {"dynamic": True, "size": None, "chunks": [8, 4, 2, 1]}
    assert manifest["inputs"][0]["shape"] == ["batch", 3, 32, 32]
    for rows in (1, 7, 13, 31):
        x = ember.randn(rows, 3, 32, 32)
        np.testing.assert_allclose(lib(x), eager(net, x), rtol=1e-5, atol=1e-6)


def test_dynamic_batch_transformer_with_token_ids_and_weights_in_a_file(tmp_path):
    ember.manual_seed(0)
    gpt = TinyGPT().eval()
    paths = ember.export_library(gpt, ember.randint(0, 65, (2, 16)), tmp_path / "out", dynamic_batch=True,
                                 weights="file")
    assert any(p.endswith("/tiny_gpt.safetensors") for p in paths)
    lib = ember.load_exported(str(tmp_path / "out"))
    for rows in (1, 5, 11):
        idx = ember.randint(0, 65, (rows, 16))
        np.testing.assert_allclose(lib(idx), eager(gpt, idx), rtol=1e-4, atol=1e-5)


def test_the_exported_library_runs_parallel_loops_on_threads(tmp_path):
    def big(x):
        return (x * 2 + 1).relu() * x.sigmoid()
    ember.export_library(big, ember.randn(16, 1 << 17), tmp_path / "out", dynamic_batch=True)
    x = ember.randn(20, 1 << 17)
    for threads in (1, 2):
        lib = ember.load_exported(str(tmp_path / "out"), threads=threads)
        np.testing.assert_allclose(lib(x), eager(big, x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ExportedLibraryError, match="give at least 1"):
        lib.set_num_threads(0)


ROWS_MIX = {
    "mean_over_batch": (lambda x: x - x.mean(0), "depends on the batch size"),
    "sum_of_all": (lambda x: x.sum(), "reduces over the batch"),
    "flatten_everything": (lambda x: x.reshape(-1), "changes with the batch without being the batch"),
    "first_row": (lambda x: x[0:1] * 2, "slices the batch axis"),
    "softmax_over_batch": (lambda x: F.softmax(x, dim=0), "reduces over the batch"),
    "cumsum_over_batch": (lambda x: x.cumsum(0), "runs along the batch axis"),
    "gram_of_rows": (lambda x: x @ x.t(), "one batch axis per value"),
    "batch_dependent_branch": (lambda x: x * 2 if x.shape[0] > 4 else x * 3, "depends on the batch size"),
    "batch_moved_to_the_end": (lambda x: x.t() * 1, "does not carry the batch along its first dim"),
    "flip_rows": (lambda x: x.flip(0), "runs along the batch axis"),
    "table_cut_to_the_batch": (lambda x: x + POSITIONS[:x.shape[0], None], "batch-sized value from values without"),
    "tensor_chosen_by_batch_size": (lambda x: x * SCALES[x.shape[0]], "reads is another one at batch"),
    "one_row_more_than_the_batch": (lambda x: ember.ones(x.shape[0] + 1, 6) * 3, "without being the batch"),
    "weight_of_the_example_batch": (lambda x: x + ember.ones(4, 6), "the model fails at batch 8"),
}
POSITIONS = ember.arange(200.0)
SCALES = {b: ember.tensor(1.0 / b) for b in range(1, 200)}


@pytest.mark.parametrize("case", sorted(ROWS_MIX))
def test_dynamic_batch_is_refused_where_rows_mix_naming_the_op(tmp_path, case):
    function, message = ROWS_MIX[case]
    function.__name__ = case
    with pytest.raises(ExportError, match=message):
        ember.export_library(function, ember.randn(4, 6), tmp_path / "out", dynamic_batch=True)
    assert not (tmp_path / "out").exists()


def test_rows_that_stay_apart_are_accepted_through_reshapes_concat_and_filled_constants(tmp_path):
    def f(x):
        y = ember.cat([x, x * 2], dim=1).view(x.shape[0], 2, 2, 3).flatten(1)
        return F.softmax(y, dim=1).clamp(min=0.01) + F.elu(y) + ember.zeros(x.shape[0], 12)  # (NaN constants)
    ember.export_library(f, ember.randn(4, 6), tmp_path / "out", dynamic_batch=True)
    lib = ember.load_exported(str(tmp_path / "out"))
    x = ember.randn(21, 6)
    np.testing.assert_allclose(lib(x), eager(f, x), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- refusals

class WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.bn = nn.Linear(4, 4), nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(self.fc(x))


def test_refusals_say_what_cannot_be_exported_and_what_to_do(tmp_path):
    x = ember.randn(3, 4)

    def sorts(x):
        return x.argsort(1)

    def branches(x):
        return x * 2 if x.sum() > 0 else x

    with pytest.raises(ExportError, match=r"argsort \(%1 argsort_1\) at test_export.py:\d+ is host-only"):
        ember.export_library(sorts, x, tmp_path / "a")
    with pytest.raises(ExportError, match=r"writes to param 'bn.running_mean'.*call model.eval\(\)"):
        ember.export_library(WithBatchNorm().train(), x, tmp_path / "b")
    with pytest.raises(ExportError, match=r"reads tensor values \(guard at test_export.py:\d+"):
        ember.export_library(branches, x, tmp_path / "c")
    with pytest.raises(ExportError, match=r"draws random numbers.*call model.eval\(\)"):
        ember.export_library(nn.Dropout(0.5).train(), x, tmp_path / "d")
    with pytest.raises(ExportError, match="weights='paper'"):
        ember.export_library(mlp(), x, tmp_path / "e", weights="paper")
    with pytest.raises(ExportError, match="unknown CPU 'pentium'"):
        ember.export_library(mlp(), x, tmp_path / "f", cpu="pentium")
    assert not any((tmp_path / d).exists() for d in "abcdef")
    # the BatchNorm model in eval mode exports, and computes with its running statistics
    model = WithBatchNorm().eval()
    ember.export_library(model, x, tmp_path / "g")
    np.testing.assert_allclose(ember.load_exported(str(tmp_path / "g"))(x), eager(model, x), rtol=1e-6, atol=1e-6)


def test_a_wrong_weights_file_is_refused_with_a_message(tmp_path):
    model, x = mlp(), ember.randn(2, 4)
    ember.export_library(model, x, tmp_path / "out", weights="file")
    weights = tmp_path / "out" / "sequential.safetensors"
    from ember.compiler.export.weights_file import read_safetensors
    assert np.array_equal(read_safetensors(weights)["0.weight"], model[0].weight.detach().numpy())
    np.testing.assert_allclose(ember.load_exported(str(tmp_path / "out"))(x), eager(model, x), rtol=1e-6)
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40
    (tmp_path / "tampered.safetensors").write_bytes(bytes(data))
    with pytest.raises(ExportedLibraryError, match="is not sequential's weights file"):
        ember.load_exported(str(tmp_path / "out"), weights_path=str(tmp_path / "tampered.safetensors"))
    (tmp_path / "short.safetensors").write_bytes(bytes(data[:-8]))
    with pytest.raises(ExportedLibraryError, match=r"has \d+ bytes; sequential's weights file has \d+"):
        ember.load_exported(str(tmp_path / "out"), weights_path=str(tmp_path / "short.safetensors"))
    with pytest.raises(ExportedLibraryError, match="cannot open the weights file"):
        ember.load_exported(str(tmp_path / "out"), weights_path=str(tmp_path / "missing.safetensors"))
    ember.export_library(model, x, tmp_path / "embedded")
    with pytest.raises(ExportedLibraryError, match="holds its weights inside the library; pass NULL"):
        ember.load_exported(str(tmp_path / "embedded"), weights_path=str(weights))


# ----------------------------------------------------------------------------- CPUs, the CLI, names

def test_an_export_for_a_cpu_level_uses_only_that_levels_features(tmp_path):
    model, x = mlp(), ember.randn(3, 4)
    ember.export_library(model, x, tmp_path / "v2", cpu="generic-x86-64-v2")
    manifest = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    assert manifest["target"]["cpu"] == "x86-64-v2"
    assert "sse4.2" in manifest["target"]["features"] and "avx" not in manifest["target"]["features"]
    np.testing.assert_allclose(ember.load_exported(str(tmp_path / "v2"))(x), eager(model, x), rtol=1e-6)
    # x86-64-v4 needs AVX-512: it runs where the CPU has it, and is refused with a message where not
    ember.export_library(model, x, tmp_path / "v4", cpu="x86-64-v4")
    if all(host.host_has_feature(f) for f in ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")):
        np.testing.assert_allclose(ember.load_exported(str(tmp_path / "v4"))(x), eager(model, x), rtol=1e-6)
    else:
        with pytest.raises(ExportedLibraryError, match=r"this CPU lacks avx512\w+, which sequential's code"):
            ember.load_exported(str(tmp_path / "v4"))
    assert host.host_cpu_name() == host.this_machine()["cpu"]  # the level applied only inside the export


def test_cli_export_writes_a_library_and_explains_mistakes(tmp_path):
    model_file = tmp_path / "model.py"
    model_file.write_text("import ember.nn as nn\n\nclass Net(nn.Module):\n    def __init__(self):\n"
                          "        super().__init__()\n        self.fc = nn.Linear(6, 2)\n\n"
                          "    def forward(self, x):\n        return self.fc(x).relu()\n")
    command = [sys.executable, "-m", "ember", "export", f"{model_file}:Net", "--input", "2x6"]
    done = subprocess.run(command + ["--dynamic-batch", "-o", str(tmp_path / "lib")], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ember export: wrote" in done.stdout and (tmp_path / "lib" / "Net.so").exists()
    out = ember.load_exported(str(tmp_path / "lib"))(np.ones((3, 6), np.float32))
    assert out.shape == (3, 2)
    bad = subprocess.run(command + ["--cpu", "x86-64-v9", "-o", str(tmp_path / "lib2")], capture_output=True,
                         text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "unknown CPU 'x86-64-v9'" in bad.stderr and "Traceback" not in bad.stderr


def test_exporting_again_replaces_the_directory_whole(tmp_path):
    ember.export_library(mlp(), ember.randn(2, 4), tmp_path / "out", weights="file")
    ember.export_library(mlp(), ember.randn(2, 4), tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert not (tmp_path / "out" / "sequential.safetensors").exists()


def test_torch_export_names_point_to_export_library():
    with pytest.raises(NotImplementedError, match=r"ember.export_library\(model, example_inputs"):
        ember.export.export(mlp(), (ember.randn(1, 4),))


# ----------------------------------------------------------------------------- no C compiler, the CPU check

def test_without_a_c_compiler_the_library_is_linked_by_ld_alone(tmp_path, monkeypatch):
    from ember.compiler.cpu import linker
    if shutil.which("ld") is None:
        pytest.skip("no ld on this machine")
    monkeypatch.setattr(linker, "c_compiler", lambda: None)
    model = mlp()
    for weights in ("embed", "file"):
        ember.export_library(model, ember.randn(3, 4), tmp_path / weights, dynamic_batch=True, weights=weights)
        x = ember.randn(11, 4)
        np.testing.assert_allclose(ember.load_exported(str(tmp_path / weights))(x), eager(model, x), rtol=1e-6,
                                   atol=1e-6)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ExportError, match=r"no C compiler \(cc, gcc or clang; or set CC\) and no linker \(ld\)"):
        ember.export_library(model, ember.randn(3, 4), tmp_path / "none")


CPUINFO_FLAGS = {"sse3": "pni", "pclmul": "pclmulqdq", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "bmi": "bmi1",
                 "sha": "sha_ni", "avx512vbmi2": "avx512_vbmi2", "avx512vnni": "avx512_vnni",
                 "avx512bitalg": "avx512_bitalg", "avx512vpopcntdq": "avx512_vpopcntdq", "lzcnt": "abm"}


def test_the_libraries_cpu_check_reads_each_feature_as_the_kernel_reports_it():
    """missing_cpu_feature (cpuid + xgetbv in the wrapper) against /proc/cpuinfo, feature by feature."""
    import ctypes
    from types import SimpleNamespace
    from ember.compiler.export.wrapper import CPUID_BITS, WrapperWriter
    from ember.compiler.llvm.target import llvm_binding
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo")
    llvm = llvm_binding()
    for feature in CPUID_BITS:
        writer = WrapperWriter(SimpleNamespace(name="probe", features=[feature]), llvm.get_process_triple(), "")
        writer.write_cpu_check()
        writer.missing_feature.linkage = ""
        module = llvm.parse_assembly(str(writer.module))  # (MCJIT cannot allocate the thread-local error buffer)
        engine = llvm.create_mcjit_compiler(module, host.new_host_target_machine())
        engine.finalize_object()
        check = ctypes.CFUNCTYPE(ctypes.c_char_p)(engine.get_function_address("missing_cpu_feature"))
        has = CPUINFO_FLAGS.get(feature, feature) in flags
        assert check() == (None if has else feature.encode()), feature


# ----------------------------------------------------------------------------- found by adversarial rounds

def test_two_libraries_of_one_name_in_one_process_each_run_their_own_model(tmp_path):
    import ctypes
    first, second = mlp(), nn.Sequential(nn.Linear(4, 3), nn.Tanh()).eval()
    ember.export_library(first, ember.randn(2, 4), tmp_path / "a", name="same")
    ember.export_library(second, ember.randn(2, 4), tmp_path / "b", name="same")
    ctypes.CDLL(str(tmp_path / "a" / "same.so"), mode=ctypes.RTLD_GLOBAL)  # as if a C program linked it
    lib = ember.load_exported(str(tmp_path / "b"))
    x = np.ascontiguousarray(ember.randn(2, 4).numpy())
    out = np.empty((2, 3), np.float32)
    run = lib._library.same_run  # NAME_run calls NAME_run_buffers: it must be b's own
    run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    assert run(lib._handle, x.ctypes.data, out.ctypes.data, 2) == 0
    np.testing.assert_allclose(out, eager(second, ember.from_numpy(x)), rtol=1e-6, atol=1e-6)


def test_loading_again_after_exporting_again_to_the_same_directory_runs_the_new_model(tmp_path):
    first, second = mlp(), nn.Sequential(nn.Linear(4, 5), nn.Tanh()).eval()
    x = ember.randn(2, 4)
    ember.export_library(first, x, tmp_path / "out", name="model")
    old = ember.load_exported(str(tmp_path / "out"))
    ember.export_library(second, x, tmp_path / "out", name="model")
    new = ember.load_exported(str(tmp_path / "out"))
    np.testing.assert_allclose(old(x), eager(first, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new(x), eager(second, x), rtol=1e-6, atol=1e-6)


def test_odd_signatures_names_that_clash_with_libc_and_weights_paths_that_are_folders(tmp_path):
    import ctypes
    weight = nn.Parameter(ember.randn(3))

    def returns_a_weight(a, b):
        return a + 1, weight, b.sum()
    a, b = ember.randn(1, 1, 2, 1, 2, 1, 2, 1, 3), ember.randn(5, 6)
    ember.export_library(returns_a_weight, (a, b), tmp_path / "odd", name="odd")
    lib = ember.load_exported(str(tmp_path / "odd"))
    for got, want in zip(lib(a, b), eager(returns_a_weight, a, b)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    dim = lib._library.odd_input_dim
    dim.argtypes, dim.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int64
    assert [dim(0, d) for d in range(9)] == list(a.shape) and [dim(1, 0), dim(1, 1), dim(1, 2)] == [5, 6, 0]

    def scalar(x):
        return x * 2
    ember.export_library(scalar, ember.tensor(3.0), tmp_path / "scalar")
    assert ember.load_exported(str(tmp_path / "scalar"))(np.array(4.0, np.float32)) == 8.0
    with pytest.raises(ExportError, match="would define timer_create, which the C library"):
        ember.export_library(mlp(), ember.randn(2, 4), tmp_path / "timer", name="timer")
    ember.export_library(mlp(), ember.randn(2, 4), tmp_path / "file", weights="file")
    with pytest.raises(ExportedLibraryError, match=r"cannot read the weights file .* \(is it a directory\?\)"):
        ember.load_exported(str(tmp_path / "file"), weights_path=str(tmp_path))


def test_a_negative_embedding_index_is_refused_by_compiled_and_exported_programs_too(tmp_path):
    table = nn.Embedding(10, 3)

    def look_up(ids):
        return table(ids)
    ids = ember.tensor([[1, 2], [3, 4]])
    ember.export_library(look_up, ids, tmp_path / "out")
    lib = ember.load_exported(str(tmp_path / "out"))
    np.testing.assert_array_equal(lib(ids), eager(look_up, ids))
    with pytest.raises(ExportedLibraryError, match="index out of bounds for a dim of size 10"):
        lib(np.array([[1, -1], [3, 4]]))
    compiled = ember.compile(look_up)
    compiled(ids)
    with pytest.raises(IndexError, match="index out of bounds for a dim of size 10"):
        compiled(ember.tensor([[1, -1], [3, 4]]))
