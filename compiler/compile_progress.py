"""A progress line on stderr while a compile runs long (as users of long compiles expect).

The driver wraps each compile that misses the cache in `showing_progress(name, timer)`: after
`DELAY` seconds, while stderr is a terminal and EMBER_PROGRESS is not 0, a background thread
rewrites one line every `INTERVAL` seconds with the stage the StageTimer is in and the time so
far (`ember: compiling step.0 (330 kernels): optimize 2.4 s`); the line is cleared when the
compile ends. Short compiles, pipes and logs see nothing.
"""
import contextlib
import sys
import threading
import time

from ember import config

DELAY = 1.0  # seconds before the line appears
INTERVAL = 0.25


class _Progress:
    def __init__(self, name, timer, stream):
        self.name, self.timer, self.stream = name, timer, stream
        self.start = time.perf_counter()
        self.done = threading.Event()
        self.shown = False
        self.kernels = None  # set by the driver once lowering knows them

    def line(self):
        kernels = f" ({self.kernels} kernels)" if self.kernels else ""
        stage = self.timer.current or "preparing"
        return f"ember: compiling {self.name}{kernels}: {stage} {time.perf_counter() - self.start:.1f} s"

    def run(self):
        if self.done.wait(DELAY):
            return
        width = 0
        while not self.done.is_set():
            text = self.line()
            self.stream.write("\r" + text.ljust(width))
            self.stream.flush()
            width, self.shown = len(text), True
            self.done.wait(INTERVAL)
        self.stream.write("\r" + " " * width + "\r")
        self.stream.flush()


@contextlib.contextmanager
def showing_progress(name, timer, stream=None):
    """Show the compile's progress on `stream` (stderr) if it runs long; yields the progress
    object (set `.kernels` when known) or None when nothing will be shown."""
    stream = sys.stderr if stream is None else stream
    if not config.PROGRESS or not getattr(stream, "isatty", lambda: False)():
        yield None
        return
    progress = _Progress(name, timer, stream)
    thread = threading.Thread(target=progress.run, name="ember-compile-progress", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        progress.done.set()
        thread.join()
