"""Which PTX entries one lowered kernel (compiler/loop_ir.py) becomes, and how each launches.

A GPU has no barrier across the whole grid inside a launch, so a kernel whose top level does
several things in order (a column sum's scratch rows are zeroed, then filled, then copied
out) becomes one launch per step: launches on one stream run in order. A top-level loop
marked parallel whose iterations share no accumulator with the rest of the kernel is a
"grid" launch: its iterations spread over every thread of the grid (a grid-stride loop, see
kernels.py). Everything else runs on the grid's first thread alone ("thread"): correct
for the serial accumulations lowering writes (a sum over all elements), not yet fast.
"""
from dataclasses import dataclass

from .. import loop_ir as L
from ..llvm.kernels import accumulators_read

BLOCK_THREADS = 256  # threads per block of a grid launch (the entries' .maxntid)
MAX_BLOCKS = 65535  # a grid-stride loop covers any extent with at most this many blocks


@dataclass
class Launch:
    """One PTX entry of kernel number `kernel`: `statements` of its top level, run over the
    grid ("grid": one parallel loop of `extent` iterations) or by one thread ("thread")."""

    entry: str
    kernel: int
    mode: str
    statements: list
    extent: int = 1

    @property
    def blocks(self):
        """Blocks to launch: enough for one iteration per thread, at most MAX_BLOCKS."""
        if self.mode == "thread":
            return 1
        return max(1, min(MAX_BLOCKS, -(-self.extent // BLOCK_THREADS)))

    @property
    def threads(self):
        return BLOCK_THREADS if self.mode == "grid" else 1


def accumulators_of(stmt):
    """Accumulator names a statement declares, reads or updates."""
    names = accumulators_read([stmt])
    names |= {s.name for s in L.walk_statements([stmt]) if isinstance(s, L.Declare)}
    return names


def plan_launches(kernel, number):
    """The launches of `kernel` (number `number` in its program), in the order they run; none
    for a numpy fallback or an empty kernel (see module docstring)."""
    if kernel.kind == "callback" or not kernel.body:
        return []
    steps = [[stmt] for stmt in kernel.body]
    if _accumulator_crosses(steps):
        steps = [list(kernel.body)]
    modes = [_mode(step) for step in steps]
    # runs of single-thread steps share one launch
    merged = []
    for step, mode in zip(steps, modes):
        if merged and mode == "thread" and merged[-1][1] == "thread":
            merged[-1][0].extend(step)
        else:
            merged.append((list(step), mode))
    launches = []
    for k, (statements, mode) in enumerate(merged):
        entry = kernel.name if len(merged) == 1 else f"{kernel.name}_{k}"
        extent = statements[0].extent if mode == "grid" else 1
        launches.append(Launch(entry, number, mode, statements, extent))
    return launches


def _accumulator_crosses(steps):
    """Whether some accumulator is used by two top-level statements (one thread must run them)."""
    seen = set()
    for step in steps:
        names = set().union(*[accumulators_of(stmt) for stmt in step])
        if names & seen:
            return True
        seen |= names
    return False


def _mode(step):
    if len(step) == 1 and isinstance(step[0], L.Loop) and step[0].parallel:
        return "grid"
    return "thread"
