"""The PTX target (compiler/ptx/): real ember programs taken through the driver's stages
(passes -> lowering -> PtxTarget.emit/link) for sm_80 and sm_90, and the PTX checked by
`ptxas`; the lowered kernels are the ones the CPU target runs correctly. No GPU needed:
the tests that run ptxas skip when it is not on PATH."""
import ctypes
import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

import ember
from ember import config
from ember.compiler import driver, loop_ir as L
from ember.compiler.cpu.target import CpuTarget
from ember.compiler.driver import Driver
from ember.compiler.ptx.launches import BLOCK_THREADS, block_roles, plan_launches
from ember.compiler.ptx.target import COMPUTE_CAPABILITIES, PtxTarget
from ember.compiler.stage_timer import StageTimer
from ember.compiler.target import Capabilities
from ember.ir import run_graph
from ember.runtime.program_spec import External
from ember.runtime.grid_emulator import WARP, EmulatedModule

PTXAS = shutil.which("ptxas")
needs_ptxas = pytest.mark.skipif(PTXAS is None, reason="ptxas (CUDA toolkit) is not on PATH")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "cache"))


def _chain(x, y):
    """add/mul/exp/tanh/where, a broadcast row, casts to float64 and int32 and back."""
    mixed = ember.where(x > 0, ember.tanh(x) * y, ember.exp(x) + 1)
    counts = (x * 4).to(ember.int32) // 3
    return mixed.to(ember.float64) * 0.5 + counts.to(ember.float64)


def _math(x):
    """Every inline polynomial and the NVPTX intrinsics the target keeps."""
    a = ember.sqrt(ember.abs(x)) + ember.log1p(ember.abs(x)) + ember.expm1(x) + ember.sigmoid(x)
    b = ember.erf(x) + ember.floor(x) + ember.ceil(x) + ember.round(x) + ember.rsqrt(ember.abs(x) + 1)
    c = ember.maximum(x, 0.25) - ember.minimum(x, -0.25) + ember.remainder(x, 0.7) + ember.log(ember.abs(x) + 2)
    return a * b + c + ember.exp(x.to(ember.float64)).to(ember.float32)


def _trig_pow(x, y):
    """sin, cos and pow, which the target computes without libm (float and double)."""
    powers = ember.pow(ember.abs(x) + 0.5, y) + ember.pow(x, 3.0)
    powers = powers + ember.pow(x.to(ember.float64), 2.0).to(ember.float32)
    return ember.sin(x * 3) * ember.cos(y) + powers + ember.sin(y.to(ember.float64)).to(ember.float32)


def _softmax_rows(x):
    shifted = x - x.amax(1, keepdim=True)
    e = ember.exp(shifted)
    return e / e.sum(1, keepdim=True)


PROGRAMS = {
    "chain": (_chain, ((32, 64), (64,))),
    "math": (_math, ((1000,),)),
    "row_sum": (lambda x: x.sum(1), ((32, 64),)),
    "row_amax": (lambda x: x.amax(1), ((32, 64),)),
    "row_mean": (lambda x: x.mean(1), ((32, 64),)),
    "column_sum": (lambda x: x.sum(0), ((40, 32),)),
    "sum_all": (lambda x: x.sum(), ((40, 32),)),
    "long_sum": (lambda x: ((x * x).mean() + 1, x.amax()), ((300, 300),)),  # split: many blocks, then one
    "mean_all": (lambda x: x.mean(), ((40, 32),)),
    "centered": (lambda x: x - x.mean(), ((40, 32),)),
    "softmax_rows": (_softmax_rows, ((16, 100),)),
    "layer_norm_rows": (lambda x: ember.nn.functional.layer_norm(x, (100,)) * 2, ((16, 100),)),
    "shifted_rows": (lambda x: ember.exp(x - x.amax(1, keepdim=True).roll(1, 0)), ((16, 100),)),
    "matmul_as_loops": (lambda x, w: ember.relu(x @ w), ((8, 5), (5, 6))),  # too short to tile
    "linear_tiles": (lambda x, w, b: ember.relu(x @ w.t() + b), ((70, 40), (66, 40), (66,))),
    "split_depth": (lambda x, w: ember.relu(x @ w * 0.05 + 1), ((6, 1600), (1600, 20))),  # few tiles, long depth
    "conv_tiles": (lambda x, w: ember.relu(ember.nn.functional.conv2d(x, w, padding=1, stride=(1, 2))),
                   ((2, 3, 9, 11), (20, 3, 3, 3))),
    "batched_tiles": (lambda x, y: ((x @ y).to(ember.float64), x.to(ember.float64) @ y.to(ember.float64)),
                      ((3, 20, 33), (3, 33, 130))),
    "trig_pow": (_trig_pow, ((500,), (500,))),
    "random_normal": (lambda x: x + ember.randn(*x.shape), ((1000,),)),  # Box-Muller: log, sqrt, cos
}


def trace(program):
    fn, shapes = PROGRAMS[program]
    with ember.no_grad():
        return ember.trace(fn, *[ember.randn(*shape) for shape in shapes])


def compile_ptx(graph, compute_capability):
    """(lowered program, PTX text, description) through the driver's stages."""
    target = PtxTarget(compute_capability)
    lowered = driver.lower(driver.plan(graph), target)
    artifact = target.link(target.emit(lowered), lowered, None, StageTimer())
    assert artifact.kind == "ptx"
    return lowered, artifact.payload.decode(), target.describe(lowered, artifact)


def entries(ptx):
    """{entry name: (parameter count, body text)} of the PTX's `.entry` functions."""
    found = {}
    for match in re.finditer(r"\.visible \.entry (\w+)\(\n(.*?)\n\)(.*?)\n}\n", ptx, re.S):
        name, params, body = match.groups()
        found[name] = (params.count(".param"), body)
    return found


def ptxas(ptx, compute_capability, tmp_path):
    source = tmp_path / "program.ptx"
    source.write_text(ptx)
    return subprocess.run([PTXAS, f"-arch={compute_capability}", str(source), "-o", str(tmp_path / "program.cubin")],
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- ptxas accepts the PTX

@needs_ptxas
@pytest.mark.parametrize("compute_capability", COMPUTE_CAPABILITIES)
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_ptxas_accepts_the_ptx_of_every_kernel_the_lowering_produced(program, compute_capability, tmp_path):
    lowered, ptx, description = compile_ptx(trace(program), compute_capability)
    assert f".target {compute_capability}" in ptx and ".address_size 64" in ptx
    result = ptxas(ptx, compute_capability, tmp_path)
    assert result.returncode == 0, result.stderr
    found = entries(ptx)
    launches = description["launches"]
    assert sorted(found) == sorted({launch["entry"] for launch in launches})
    assert {k for launch in launches for k in launch["kernels"]} == set(range(len(lowered.kernels)))
    for launch in launches:  # every entry takes its kernel's slots (a merged run's: theirs) and the status cell
        kernels = [lowered.kernels[k] for k in launch["kernels"]]
        keys = list(dict.fromkeys(slot.key for kernel in kernels for slot in kernel.slots))
        assert found[launch["entry"]][0] == len(keys) + 1 + bool(launch["partial_bytes"])
        assert launch["slots"] == [list(lowered.locations[key]) for key in keys]


@needs_ptxas
def test_ptxas_rejects_ptx_for_a_newer_machine_than_it_targets(tmp_path):
    """The check has teeth: sm_90 PTX is not valid for sm_80."""
    _, ptx, _ = compile_ptx(trace("chain"), "sm_90")
    result = ptxas(ptx, "sm_80", tmp_path)
    assert result.returncode != 0 and "SM version specified by .target is higher" in result.stderr


# ----------------------------------------------------------------------------- the grid

@pytest.mark.parametrize("program", ["math", "trig_pow", "matmul_as_loops"])
def test_parallel_loops_without_row_work_become_grid_stride_loops(program):
    lowered, ptx, description = compile_ptx(trace(program), "sm_80")
    found = entries(ptx)
    assert all(launch["mode"] == "grid" for launch in description["launches"])
    for launch in description["launches"]:
        _, body = found[launch["entry"]]
        for register in ("%ctaid.x", "%ntid.x", "%tid.x", "%nctaid.x"):
            assert register in body, (launch["entry"], register)
        assert ".maxntid 256" in ptx and launch["threads"] == BLOCK_THREADS
        extent = lowered.kernels[launch["kernel"]].body[0].extent
        assert launch["blocks"] == -(-extent // BLOCK_THREADS)
        assert "ld.global" in body and "st.global" in body  # kernel pointers are global memory
        assert "bar.sync" not in body and "shfl" not in body


@pytest.mark.parametrize("program", ["row_sum", "row_amax", "softmax_rows", "chain"])
def test_rows_that_reduce_or_loop_become_blocks_sharing_the_row(program):
    """A block per row (block-stride over rows): the threads stride over the row's elements,
    combine partial accumulators with warp shuffles and shared memory between barriers."""
    lowered, ptx, description = compile_ptx(trace(program), "sm_90")
    found = entries(ptx)
    assert {launch["mode"] for launch in description["launches"]} == {"rows"}
    for launch in description["launches"]:
        kernel = lowered.kernels[launch["kernel"]]
        assert (launch["blocks"], launch["threads"]) == (kernel.body[0].extent, BLOCK_THREADS)
        _, body = found[launch["entry"]]
        reduces = any(isinstance(s, L.Update) for s in L.walk_statements(kernel.body))
        assert ("shfl.sync.bfly.b32" in body) == reduces and ("bar.sync" in body) == reduces
        assert ("st.shared" in body and "ld.shared" in body) == reduces


@pytest.mark.parametrize("program", ["linear_tiles", "batched_tiles", "conv_tiles"])
def test_contractions_become_shared_memory_tiles(program):
    """A block per 64 x 64 output tile (of every batch), 16 x 16 threads of 4 x 4 outputs each,
    the operands staged through shared memory DEPTH at a time between barriers."""
    from ember.compiler.ptx.tiled_matmul import DEPTH, PER_THREAD, TILE, TILE_THREADS, matmul_nest
    lowered, ptx, description = compile_ptx(trace(program), "sm_90")
    found = entries(ptx)
    tiled = [launch for launch in description["launches"] if launch["mode"] == "tiles"]
    assert tiled
    for launch in tiled:
        nest = matmul_nest(lowered.kernels[launch["kernel"]].body[0])
        batches, M, N, K = nest.extents
        tiles = batches * -(-M // TILE) * -(-N // TILE)
        assert (launch["blocks"], launch["threads"]) == (tiles, TILE_THREADS)
        _, body = found[launch["entry"]]
        assert body.count("bar.sync") == 2 and "st.shared" in body
        # the step loop is unrolled: every step reads 2 x PER_THREAD shared values (some paired by LLVM)
        assert DEPTH * PER_THREAD <= body.count("ld.shared") <= DEPTH * 2 * PER_THREAD
        # every step's PER_THREAD x PER_THREAD multiply-adds, less those LLVM proves never stored
        # (a 20-row product leaves the rows 32 + ty and 48 + ty of its one tile unused)
        expected = DEPTH * min(PER_THREAD, -(-M // 16)) * min(PER_THREAD, -(-N // 16))
        assert body.count("fma.rn") == expected


@pytest.mark.parametrize("program", ["softmax_rows", "layer_norm_rows"])
def test_softmax_and_layer_norm_are_one_launch_per_row(program):
    """Their row max/sum (mean/variance) and normalisation kernels merge into one launch:
    a block computes a row's statistics, waits, and writes the row."""
    lowered, ptx, description = compile_ptx(trace(program), "sm_90")
    (launch,) = description["launches"]
    assert launch["mode"] == "rows" and launch["kernels"] == list(range(len(lowered.kernels)))
    assert len(lowered.kernels) == 3 and launch["entry"] == "__".join(k.name for k in lowered.kernels)
    _, body = entries(ptx)[launch["entry"]]
    assert body.count("bar.sync") >= 4  # two combines of two barriers each (and the row values handed over)


def test_row_kernels_reading_another_rows_values_are_not_merged():
    """x - (row max of the previous row): the second kernel reads a row value the first wrote
    for another row, which another block computes: two launches (and right on the emulator,
    test_the_ptx_targets_kernels_compute_the_program_on_an_emulated_grid[shifted_rows])."""
    from ember.compiler.ptx.row_fusion import merge
    target = PtxTarget()
    lowered = driver.lower(driver.plan(trace("shifted_rows")), target)
    assert len(target.launches(lowered)) == 2
    assert merge(*lowered.kernels, lowered.locations) is None
    softmax = driver.lower(driver.plan(trace("softmax_rows")), target)
    assert merge(softmax.kernels[0], softmax.kernels[1], softmax.locations) is not None
    # the max kernel would overwrite what the sum reads
    assert merge(softmax.kernels[1], softmax.kernels[0], softmax.locations) is None


def test_a_product_with_few_tiles_and_a_long_depth_splits_its_depth():
    """6 x 20 outputs over 1600 products: one tile would be one block; the depth is split into
    parts of at least SPLIT_DEPTH, each (tile, part) a block writing partial sums, then a
    thread per output adds the parts and runs the epilogue (relu(. * 0.05 + 1))."""
    from ember.compiler.ptx.tiled_matmul import SPLIT_DEPTH, TILE
    lowered, ptx, description = compile_ptx(trace("split_depth"), "sm_90")
    (split, total) = description["launches"]
    assert (split["mode"], total["mode"]) == ("tiles_split", "tiles_sum")
    splits = 1600 // SPLIT_DEPTH
    assert (split["blocks"], split["threads"]) == (splits, BLOCK_THREADS)
    assert split["partial_bytes"] == total["partial_bytes"] == splits * TILE * TILE * 4
    assert total["blocks"] == 1 and total["threads"] == BLOCK_THREADS  # 120 outputs
    assert "bar.sync" in entries(ptx)[split["entry"]][1] and "bar.sync" not in entries(ptx)[total["entry"]][1]


def test_a_long_reduction_is_split_over_many_blocks_then_one():
    from ember.compiler.ptx.split_reductions import MAX_PARTIALS, PARTIAL_BYTES, PER_THREAD
    lowered, ptx, description = compile_ptx(trace("long_sum"), "sm_90")
    modes = [launch["mode"] for launch in description["launches"]]
    assert modes.count("partials") == modes.count("finish") >= 1
    for first, second in zip(description["launches"], description["launches"][1:]):
        if first["mode"] == "partials":
            assert second["mode"] == "finish" and second["kernel"] == first["kernel"]
            blocks = min(MAX_PARTIALS, -(-90000 // (BLOCK_THREADS * PER_THREAD)))
            assert (first["blocks"], first["threads"], second["blocks"]) == (blocks, BLOCK_THREADS, 1)
            assert first["partial_bytes"] == second["partial_bytes"] and first["partial_bytes"] % (PARTIAL_BYTES * blocks) == 0
            for launch in (first, second):
                _, body = entries(ptx)[launch["entry"]]
                assert "shfl.sync.bfly" in body and "bar.sync" in body


def test_a_sum_over_all_elements_is_one_block_sharing_it():
    lowered, ptx, description = compile_ptx(trace("sum_all"), "sm_90")
    (launch,) = description["launches"]
    assert (launch["mode"], launch["blocks"], launch["threads"]) == ("block", 1, BLOCK_THREADS)
    _, body = entries(ptx)[launch["entry"]]
    assert "%tid.x" in body and "shfl.sync.bfly.b32" in body and "bar.sync" in body and "%nctaid.x" not in body


def test_block_roles_refuse_what_threads_cannot_share():
    """Only the shapes block_statements knows how to split become blocks."""
    i, r = L.var("i", 64), L.var("r", 64)
    load = L.load(1, r, "float32")
    total = [L.Declare("a", "float32", L.const(0.0, "float32")),
             L.Loop(r, [L.Update("a", "add", load)]), L.Store(0, L.index(0), L.acc("a", "float32"))]
    assert block_roles(total) == ["all", "reduce", "first"]
    argmax = [L.Declare("a", "float32", L.const(0.0, "float32")),
              L.Loop(r, [L.Update("a", "argmax", load, position=r, index_name="a_index")])]
    assert block_roles(argmax) is None  # a (value, position) pair: not a plain combine
    assert block_roles([L.Loop(r, [L.Store(0, L.index(0), load)])]) is None  # every iteration writes one element
    assert block_roles([L.Loop(r, [L.Store(0, r, L.load(0, L.iadd(r, L.index(1)), "float32"))])]) is None
    assert block_roles([L.Loop(r, [L.Store(0, r, load, combine="add")])]) is None
    assert block_roles([L.Loop(r, [L.Store(0, r, load)])]) == ["each"]
    del i


def test_a_kernel_with_steps_in_order_becomes_launches_in_that_order():
    """A column sum zeroes scratch, fills it (for each row: for each column: scratch[column]
    += x[row, column]) and copies it out; a grid cannot wait for itself, so each step is a
    launch. The fill runs with its loops interchanged: a thread per column, each running the
    rows of its own column in order."""
    lowered = driver.lower(driver.plan(trace("column_sum")), PtxTarget())
    (kernel,) = lowered.kernels
    launches = plan_launches(kernel, 0)
    assert [(launch.entry, launch.mode) for launch in launches] == [(f"{kernel.name}__step{k}", "grid") for k in range(3)]
    rows, columns = kernel.body[1], kernel.body[1].body[0]
    (fill,) = launches[1].statements
    assert fill.parallel and fill.var == columns.var and fill.body[0].var == rows.var
    assert fill.body[0].body == columns.body and launches[1].extent == columns.extent
    # a mean subtracted everywhere: a one-block sum, then a grid launch reading it
    lowered = driver.lower(driver.plan(trace("centered")), PtxTarget())
    modes = [[launch.mode for launch in plan_launches(k, n)] for n, k in enumerate(lowered.kernels)]
    assert modes == [["block"], ["grid"]]


def test_only_nests_whose_columns_own_their_elements_are_interchanged():
    from ember.compiler.ptx.launches import interchanged
    i, j = L.var("i", 8), L.var("j", 16)
    value = L.load(1, L.iadd(L.imul(i, 16), j), "float32")
    column_sum = L.Loop(i, [L.Loop(j, [L.Store(0, j, value, combine="add")])])
    assert interchanged(column_sum) is not None
    spread = L.Loop(i, [L.Loop(j, [L.Store(0, L.iadd(j, L.imul(L.load(2, i, "int64"), 16)), value, combine="add")])])
    assert interchanged(spread) is not None  # rows land 16 apart: column j owns elements j mod 16
    overlapping = L.Loop(i, [L.Loop(j, [L.Store(0, L.iadd(j, L.imul(L.load(2, i, "int64"), 8)), value, combine="add")])])
    assert interchanged(overlapping) is None  # rows 8 apart: columns j and j + 8 meet
    assert interchanged(L.Loop(i, [L.Loop(j, [L.Store(0, i, value, combine="add")])])) is None  # a row sum
    shifted_read = L.Loop(i, [L.Loop(j, [L.Store(0, j, L.load(0, L.iadd(j, L.index(1)), "float32"))])])
    assert interchanged(shifted_read) is None  # reads a neighbour's element


# ----------------------------------------------------------------------------- an emulated grid

class EmulatedGrid:
    """The PTX target's own LLVM module run on this host by runtime/grid_emulator.py (special
    registers from each emulated thread's context, real barriers and warp shuffles), every
    launch in launch order over its grid of blocks and threads. This checks what the
    GPU-specific code decides (grid-stride loops, blocks per row and their shared reductions,
    the first-thread guard, the split into ordered launches) with real numbers, no GPU needed."""

    def __init__(self, lowered):
        self.target, self.lowered = PtxTarget("sm_80"), lowered
        self.launches = self.target.describe(self.lowered, None)["launches"]
        self.module = EmulatedModule(str(self.target.emit(self.lowered)))

    def run(self, inputs, grid=None):
        """{planned output node: array}; `grid` (blocks, threads) replaces every launch's own."""
        lowered = self.lowered
        arena = np.zeros(max(lowered.arena_bytes, 1), dtype=np.uint8)
        arrays = []
        for external in lowered.externals:
            assert external.kind in ("input", "output"), external.kind
            array = (np.ascontiguousarray(inputs[external.key], dtype=external.dtype) if external.kind == "input"
                     else np.zeros(external.shape, dtype=external.dtype))
            arrays.append(array)
        status = np.full(max(len(self.launches), 1), -1, dtype=np.int32)  # a cell per launch, "no error"
        for number, launch in enumerate(self.launches):
            pointers = [arrays[where].ctypes.data if kind == "arg" else arena.ctypes.data + where
                        for kind, where in launch["slots"]] + [status.ctypes.data + 4 * number]
            if launch["mode"] in ("partials", "tiles_split"):  # a split's buffer, shared with the next launch
                partials = np.zeros(launch["partial_bytes"], np.uint8)
            if launch["partial_bytes"]:
                pointers.append(partials.ctypes.data)
            blocks, threads = grid or (launch["blocks"], launch["threads"])
            if launch["mode"] in ("rows", "block", "partials", "finish"):  # shared reductions need whole warps
                threads = max(WARP, threads - threads % WARP)
            if launch["mode"] in ("tiles", "tiles_split"):  # 16 x 16 threads, each 4 x 4 outputs
                threads = launch["threads"]
            self.module.launch(launch["entry"], pointers, blocks, threads)
        assert (status == -1).all()
        return {external.key: array for external, array in zip(lowered.externals, arrays)
                if external.kind == "output"}


@pytest.mark.parametrize("grid", [None, (3, 32), (1, 1)], ids=["described grid", "small grid", "one thread"])
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_the_ptx_targets_kernels_compute_the_program_on_an_emulated_grid(program, grid):
    graph = trace(program)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(graph.node(i).shape).astype(graph.node(i).dtype) for i in graph.inputs]
    emulated = EmulatedGrid(driver.lower(driver.plan(graph), PtxTarget("sm_80")))
    got = emulated.run(dict(zip(emulated.lowered.graph.inputs, inputs)), grid)
    expected = run_graph(graph, inputs, {})
    for original, planned in zip(graph.outputs, emulated.lowered.graph.outputs):
        np.testing.assert_allclose(got[planned], expected[original], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grid", [None, (3, 32), (2, 7), (1, 1)])
def test_every_iteration_runs_once_on_any_grid(grid):
    """Kernels that add 1 where they run: a grid-stride loop over 1000 counters, and a step
    for the first thread alone, whatever the grid (a duplicated or missed iteration shows)."""
    counts, total = L.Slot("counts", "float32", 1000, writes=True), L.Slot("total", "float32", 1, writes=True)
    i = L.var("i", 1000)
    once = L.Store(1, L.index(0), L.const(1.0, "float32"), combine="add")
    kernels = [L.Kernel("count_each", "elementwise", (), [counts, total],
                        [L.Loop(i, [L.Store(0, i, L.const(1.0, "float32"), combine="add")], parallel=True)]),
               L.Kernel("count_once", "elementwise", (), [counts, total], [once, once])]
    locations = {"counts": ("arg", 0), "total": ("arg", 1)}
    externals = [External(0, "output", "counts", (1000,), "float32"), External(1, "output", "total", (1,), "float32")]
    lowered = driver.Lowered(SimpleNamespace(name="counting"), None, None, kernels, locations, externals, 0,
                             [], [0, 0], set())
    emulated = EmulatedGrid(lowered)
    assert [launch["mode"] for launch in emulated.launches] == ["grid", "thread"]
    got = emulated.run({}, grid)
    np.testing.assert_array_equal(got["counts"], np.ones(1000, np.float32))
    np.testing.assert_array_equal(got["total"], [2.0])


# ----------------------------------------------------------------------------- shared with the CPU

@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_the_ptx_target_emits_the_kernels_the_cpu_target_runs_correctly(program, tmp_path):
    """Lowering is shared: the PTX target gets the very loop kernels the CPU target compiles,
    and those compute what the interpreter does (the CPU target calls its sgemm for a
    matmul; without library calls both get the same loops, checked the same way)."""
    graph = trace(program)
    planned = driver.plan(graph)
    ptx_kernels = driver.lower(planned, PtxTarget()).kernels

    class LoopsOnlyCpu(CpuTarget):
        capabilities = Capabilities(threads=True)

        def library(self):
            return None
    cpu_kernels = driver.lower(planned, LoopsOnlyCpu()).kernels
    assert [k.describe() for k in ptx_kernels] == [k.describe() for k in cpu_kernels]
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(graph.node(i).shape).astype(graph.node(i).dtype) for i in graph.inputs]
    got = Driver(LoopsOnlyCpu(), "loops", str(tmp_path)).compile(graph)(dict(zip(graph.inputs, inputs)), {})
    expected = run_graph(graph, inputs, {})
    for output in graph.outputs:
        np.testing.assert_allclose(got[output], expected[output], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the target's contract

def test_the_ptx_target_declares_a_grid_and_no_library():
    target = PtxTarget("sm_80")
    caps = target.capabilities
    assert caps.grid and not caps.threads and caps.shared_memory_bytes == 48 * 1024 and not caps.library_calls
    assert target.triple() == "nvptx64-nvidia-cuda" and target.payload_kind() == "ptx"
    assert target.library() is None and target.code_stages == ("llvm", "ptx", "sass-check")
    assert "exp" in target.math_functions() and "sqrt" in target.float_intrinsics
    assert {"sin", "cos"} <= set(target.math_functions()) and target.float_intrinsics["pow"] == "ember.pow"
    assert PtxTarget("sm_80").key() != PtxTarget("sm_90").key() == PtxTarget("sm_90").key()
    with pytest.raises(ValueError, match="sm_70.*sm_80, sm_90"):
        PtxTarget("sm_70")


def test_sin_cos_and_pow_compile_to_ptx_without_calls():
    """NVPTX cannot lower llvm.sin/cos/pow (libcalls, no libm on the GPU): the target's own
    inline code leaves no call in the PTX, nor the "ember.pow" function itself."""
    _, ptx, _ = compile_ptx(trace("trig_pow"), "sm_90")
    assert "call" not in ptx and "ember.pow" not in ptx and "sin.approx" not in ptx
    assert "fma.rn.f64" in ptx  # the reductions' exact FMAs


def test_an_op_missing_from_the_targets_tables_is_named_in_the_error():
    class NoSinPtx(PtxTarget):
        def math_functions(self):
            return {op: f for op, f in super().math_functions().items() if op != "sin"}
    with ember.no_grad():
        graph = ember.trace(lambda x: ember.sin(x) + 1, ember.randn(10))
    target = NoSinPtx()
    lowered = driver.lower(driver.plan(graph), target)
    with pytest.raises(NotImplementedError, match="no float lowering for sin"):
        target.emit(lowered)


def test_the_driver_compiles_and_caches_ptx_and_load_says_what_is_missing(tmp_path):
    graph = trace("softmax_rows")
    first = Driver(PtxTarget("sm_80"), "ptx", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"ember ptx target: cannot run .*(libcuda\.so\.1|no CUDA program loader)"):
        first.compile(graph)
    assert first.stats.llvm_compiles == 1
    second = Driver(PtxTarget("sm_80"), "ptx", str(tmp_path))
    with pytest.raises(RuntimeError, match="ember ptx target: cannot run"):
        second.compile(graph)
    assert second.stats.cache_hits == 1 and second.stats.llvm_compiles == 0


def test_driver_render_gives_llvm_ir_and_ptx():
    backend = Driver(PtxTarget("sm_90"), "ptx")
    graph = trace("chain")
    assert "define ptx_kernel void @" in backend.render(graph, "llvm")
    ptx = backend.render(graph, "ptx")
    assert ".target sm_90" in ptx and ".visible .entry" in ptx


def test_package_writes_the_ptx_and_its_description(tmp_path):
    target = PtxTarget("sm_90")
    lowered = driver.lower(driver.plan(trace("centered")), target)
    artifact = target.link(target.emit(lowered), lowered, None, StageTimer())
    description = {**driver.describe(lowered), **target.describe(lowered, artifact)}
    paths = target.package(artifact.payload, artifact.kind, description, str(tmp_path / "export"), "centered")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["centered.ptx", "centered.json"]
    assert open(paths[0], "rb").read() == artifact.payload
    written = json.load(open(paths[1]))
    assert written["compute_capability"] == "sm_90" and written["arena_bytes"] == lowered.arena_bytes
    assert [launch["mode"] for launch in written["launches"]] == ["block", "grid"]


# ----------------------------------------------------------------------------- the "ptx" backend

def test_the_ptx_backend_is_registered_and_compile_only_here():
    from ember.compiler import backends
    backend = backends.get_backend("ptx")
    assert isinstance(backend.target, PtxTarget) and backend.target.compute_capability == "sm_90"
    assert backends.ptx_backend(compute_capability="sm_80").target.compute_capability == "sm_80"
    assert "ptx" in backends.BACKENDS and "ptx" not in backends.RUNNABLE_BACKENDS
    assert set(backends.RUNNABLE_BACKENDS) == set(backends.BACKENDS) - {"ptx"}


def test_ember_compile_for_ptx_compiles_then_says_it_cannot_run_here():
    compiled = ember.compile(lambda x: ember.sin(x) * ember.pow(x, 2.0), backend="ptx")
    with pytest.raises(RuntimeError, match=r"ember ptx target: cannot run .*(libcuda\.so\.1|no CUDA program loader)"):
        compiled(ember.randn(16))


def test_ember_compile_for_ptx_refuses_a_host_only_op_naming_it():
    from ember.compiler.target import HostOnlyError
    compiled = ember.compile(lambda x: ember.argsort(x) + 1, backend="ptx")
    with pytest.raises(HostOnlyError, match=r"cannot compile for the ptx target: argsort \(%\d+ argsort_\d+\)"):
        compiled(ember.randn(16))


# ----------------------------------------------------------------------------- ptxas's report

@needs_ptxas
def test_sass_check_reports_each_entrys_registers_and_shared_memory():
    from ember.compiler.ptx.ptxas_check import assemble, resource_usage
    lowered, ptx, description = compile_ptx(trace("softmax_rows"), "sm_80")
    ok, report = assemble(ptx, "sm_80")
    assert ok, report
    usage = resource_usage(report)
    assert sorted(usage) == sorted({launch["entry"] for launch in description["launches"]})
    for launch in description["launches"]:
        use = usage[launch["entry"]]
        assert use["registers"] > 0 and use["spill_stores"] == 0
        reduces = any(isinstance(s, L.Update) for s in L.walk_statements(lowered.kernels[launch["kernel"]].body))
        assert (use["shared_bytes"] > 0) == reduces and (use["barriers"] > 0) == reduces


def test_sass_check_says_what_is_missing_or_wrong(monkeypatch):
    from ember.compiler.ptx import ptxas_check
    if PTXAS is not None:
        with pytest.raises(RuntimeError, match="ptxas rejected the PTX for sm_90"):
            ptxas_check.sass_check(".version 7.8\n.target sm_90\n.address_size 64\nnot ptx at all\n", "sm_90")
    monkeypatch.setattr(ptxas_check.shutil, "which", lambda name: None)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    with pytest.raises(ptxas_check.PtxasMissing, match="neither on PATH nor in \\$CUDA_HOME/bin"):
        ptxas_check.sass_check("", "sm_90")
