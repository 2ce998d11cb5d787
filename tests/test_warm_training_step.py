"""A training step compiled in an earlier process: the next process traces it once, not twice.

A traced step that updates state compiles only once the next call's trace repeats it
(frontend/jit.py `_attach`); the disk cache records that it did (compiler/driver.py
`mark_confirmed`), so a later process with the same cache loads the program after its first
trace and runs it from the second call. Results stay those of eager mode; a step whose graph
differs (another learning rate, another model) is confirmed anew.
"""
import json
import os
import subprocess
import sys

import numpy as np
import ember
from ember.compiler.backends import llvm_backend

SCRIPT = """
import json, sys
import numpy as np
import ember

def make(lr):
    ember.manual_seed(0)
    model = ember.nn.Sequential(ember.nn.Linear(6, 16), ember.nn.GELU(), ember.nn.Linear(16, 3))
    opt = ember.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    def step(x, y):
        loss = ember.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ember.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss
    return model, step

lr = float(sys.argv[1])
rng = np.random.default_rng(1)
batches = [(ember.from_numpy(rng.standard_normal((8, 6)).astype(np.float32)),
            ember.from_numpy(rng.integers(0, 3, 8))) for _ in range(5)]
model, step = make(lr)
compiled = ember.compile(step)
first_compiled = None
losses = []
for call, (x, y) in enumerate(batches, 1):
    losses.append(compiled(x, y).item())
    if first_compiled is None and compiled.report.compiled_calls:
        first_compiled = call
twin, eager_step = make(lr)
eager_losses = [eager_step(x, y).item() for x, y in batches]
weights = max(float(np.abs(a.detach().numpy() - b.detach().numpy()).max())
              for a, b in zip(model.parameters(), twin.parameters()))
print(json.dumps({"first_compiled": first_compiled, "traces": len(compiled.report.traces),
                  "losses": losses, "eager_losses": eager_losses, "weights": weights}))
"""


def _run(cache, lr):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(lr)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, EMBER_CACHE_DIR=str(cache)))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(report["losses"], report["eager_losses"], rtol=1e-5, atol=1e-6)
    assert report["weights"] < 1e-5, report
    return report


def test_a_step_confirmed_in_an_earlier_process_runs_compiled_from_the_second_call(tmp_path):
    cold = _run(tmp_path, 0.01)
    assert cold["first_compiled"] == 3, cold  # (traced at calls 1 and 2: the second confirms the first)
    warm = _run(tmp_path, 0.01)
    assert warm["first_compiled"] == 2 and warm["traces"] == 1, warm
    assert _markers(tmp_path)


def test_a_step_whose_graph_differs_is_confirmed_anew(tmp_path):
    _run(tmp_path, 0.01)
    other = _run(tmp_path, 0.02)  # (the learning rate is a constant of the graph)
    assert other["first_compiled"] == 3, other


def _markers(folder):
    return [name for _, _, names in os.walk(folder) for name in names if name.endswith(".confirmed")]


def test_a_program_found_after_the_passes_is_found_by_its_traced_graph_next_time(tmp_path):
    # a program cached under its planned graph, whose traced graph's entry is missing (the
    # passes changed since): the compile that runs the passes again writes that entry, so the
    # next one skips them
    def f(x):
        return ember.relu(x * 2 + 1).sum(1)
    graph = ember.trace(f, ember.randn(4, 5))
    llvm_backend(cache_dir=str(tmp_path)).compile(graph)
    aliases = [os.path.join(base, name) for base, _, names in os.walk(tmp_path) for name in names
               if name.endswith(".alias")]
    assert len(aliases) == 1
    os.remove(aliases[0])
    again = llvm_backend(cache_dir=str(tmp_path))
    again.compile(graph)
    assert "simplify" in again.stats.stage_seconds and os.path.exists(aliases[0])
    warm = llvm_backend(cache_dir=str(tmp_path))
    runner = warm.compile(graph)
    assert set(warm.stats.stage_seconds) == {"load"}, warm.stats.stage_seconds
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_allclose(runner({graph.inputs[0]: x}, {})[graph.outputs[0]],
                               np.maximum(x * 2 + 1, 0).sum(1), rtol=1e-6)


def _scaled(x):
    return x * 0.01


def _halved(x):
    return x * 0.5


def test_confirmed_before_and_mark_confirmed(tmp_path):
    graph = ember.trace(_scaled, ember.randn(3))
    backend = llvm_backend(cache_dir=str(tmp_path))
    assert not backend.confirmed_before(graph)
    backend.mark_confirmed(graph)
    assert backend.confirmed_before(graph)
    assert llvm_backend(cache_dir=str(tmp_path)).confirmed_before(ember.trace(_scaled, ember.randn(3)))
    assert not llvm_backend(cache_dir=str(tmp_path)).confirmed_before(ember.trace(_halved, ember.randn(3)))
