"""Seconds per compile stage (simplify, fuse, plan, lower, llvm ir, optimize, emit, link,
load, ...): the driver times every stage with one `StageTimer`, targets time theirs with it."""
import time


class StageTimer:
    """`with timer("optimize"): ...` adds the block's seconds to `timer.seconds["optimize"]`."""

    def __init__(self):
        self.seconds = {}
        self.current = None  # the stage running now (compiler/compile_progress.py shows it)

    def __call__(self, stage):
        return _Span(self, stage)


class _Span:
    __slots__ = ("timer", "stage", "start")

    def __init__(self, timer, stage):
        self.timer, self.stage = timer, stage

    def __enter__(self):
        self.start = time.perf_counter()
        self.timer.current = self.stage

    def __exit__(self, *exc):
        seconds = self.timer.seconds
        seconds[self.stage] = seconds.get(self.stage, 0.0) + time.perf_counter() - self.start
        self.timer.current = None
        return False
