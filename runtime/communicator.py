"""MPI collectives on numpy buffers: the engine under `ember.distributed`, DDP's gradient
buckets and the collective primitives of compiled programs (ember/ops/collectives.py).

The lowest layer of distributed training, over mpi4py (Open MPI or MPICH). A `Communicator`
wraps the world communicator:

- **blocking collectives** run on the calling thread, straight on the caller's buffers
  (mpi4py's buffer interface: no copies);
- **asynchronous collectives** (`submit`: `async_op=True`, DDP's buckets, compiled programs)
  run in submission order on one worker thread, over a duplicate of the world communicator
  so that their order never mixes with the blocking ones'. mpi4py releases the GIL inside
  MPI, and numpy and compiled programs release it while they compute, so a bucket's
  allreduce runs while the next bucket's gradients are computed. Each `Request` records when
  it was submitted, started and finished (`timeline`, for benchmarks/distributed.py).

Waits honour the process group's timeout (`CollectiveTimeout`); `abort` ends every process of
the job, which is how a rank that fails stops the others instead of leaving them hanging.
mpi4py is imported by `open_world`, never by `import ember`.
"""
import os
import queue
import sys
import threading
import time

import numpy as np

REDUCE_OPS = ("sum", "avg", "product", "min", "max")

_world = None  # the Communicator of the initialised process group


class CollectiveTimeout(RuntimeError):
    """A collective did not finish within the process group's timeout."""


def mpi_module():
    """mpi4py's MPI module (initialising MPI with thread support), or a clear ImportError."""
    try:
        import mpi4py
    except ImportError as error:
        raise ImportError("ember.distributed needs mpi4py and an MPI library: pip install 'ember[distributed]' "
                          "(mpi4py and Open MPI wheels from PyPI), or mpi4py built against the system's MPI") \
            from error
    mpi4py.rc.thread_level = "multiple"  # the worker thread and the caller both call MPI
    from mpi4py import MPI
    return MPI


def open_world(timeout):
    """Initialise MPI (if needed) and make the world communicator ember's process group."""
    global _world
    MPI = mpi_module()
    if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
        raise RuntimeError(f"ember.distributed: the MPI library gives thread level {MPI.Query_thread()}, "
                           f"ember needs MPI_THREAD_MULTIPLE ({MPI.THREAD_MULTIPLE}); {MPI.Get_library_version()}")
    _world = Communicator(MPI, MPI.COMM_WORLD, timeout)
    return _world


def world():
    """The process group's communicator; a clear error before init_process_group."""
    if _world is None:
        raise RuntimeError("ember.distributed: the default process group has not been initialized; "
                           "call ember.distributed.init_process_group(backend='mpi') first")
    return _world


def close_world():
    global _world
    if _world is not None:
        _world.close()
    _world = None


def is_open():
    return _world is not None


class Request:
    """An asynchronous collective: `wait(timeout)` blocks until it has run (raising its error or
    CollectiveTimeout), `done()` polls. `submitted`, `started`, `finished`: perf_counter times."""

    def __init__(self, label, run, rank):
        self.label, self.run, self.rank = label, run, rank
        self.submitted = time.perf_counter()
        self.started = self.finished = None
        self.error = None
        self.result = None
        self._event = threading.Event()

    def done(self):
        return self._event.is_set()

    def wait(self, timeout=None):
        if not self._event.wait(timeout):
            raise CollectiveTimeout(f"ember.distributed: {self.label} on rank {self.rank} did not finish within "
                                    f"{timeout:.1f} s (the process group's timeout): another rank may have "
                                    f"stopped, or be waiting at a different collective")
        if self.error is not None:
            raise RuntimeError(f"ember.distributed: {self.label} on rank {self.rank} failed: {self.error}") \
                from self.error
        return self.result


class Communicator:
    """One process group: `rank`, `size`, blocking collectives on numpy arrays, `submit` for
    asynchronous ones, `barrier`, `abort`."""

    def __init__(self, MPI, comm, timeout):
        self.MPI = MPI
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.timeout = timeout  # seconds, for waits
        self._ops = {"sum": MPI.SUM, "avg": MPI.SUM, "product": MPI.PROD, "min": MPI.MIN, "max": MPI.MAX}
        # bool tensors reduce logically, as torch.distributed's: sum/max are or, product/min are and
        self._bool_ops = {"sum": MPI.LOR, "max": MPI.LOR, "product": MPI.LAND, "min": MPI.LAND}
        self._async_comm = comm.Dup()  # (collective: every rank opens the group at the same point)
        self._queue = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, name="ember-collectives", daemon=True)
        self._worker.start()
        self._tagged = {}  # tag -> (Request, buffer): collectives a compiled program started
        self.timeline = None  # a list of finished Requests while recording (benchmarks)

    # ------------------------------------------------------------------ blocking collectives
    def all_reduce(self, array, op="sum", comm=None):
        """Reduce `array` (C-contiguous, writable) in place over every rank."""
        mpi_op = self._ops[op] if array.dtype.kind != "b" else self._bool_ops[op]
        (comm or self.comm).Allreduce(self.MPI.IN_PLACE, array, mpi_op)
        if op == "avg":
            np.divide(array, self.size, out=array, casting="unsafe")
        return array

    def broadcast(self, array, src, comm=None):
        (comm or self.comm).Bcast(array, root=src)
        return array

    def all_gather(self, out, array, comm=None):
        """`out` (size x array's shape, C-contiguous) receives every rank's `array`."""
        (comm or self.comm).Allgather(array, out)
        return out

    def reduce_scatter(self, out, array, op="sum", comm=None):
        """`out` receives this rank's block of the reduction of `array` (size blocks)."""
        mpi_op = self._ops[op] if array.dtype.kind != "b" else self._bool_ops[op]
        (comm or self.comm).Reduce_scatter_block(array, out, mpi_op)
        if op == "avg":
            np.divide(out, self.size, out=out, casting="unsafe")
        return out

    def barrier(self, timeout=None):
        """Every rank reaches this point; CollectiveTimeout after `timeout` seconds (MPI's
        blocking barrier cannot time out, so this polls a non-blocking one)."""
        timeout = self.timeout if timeout is None else timeout
        request = self.comm.Ibarrier()
        deadline = time.monotonic() + timeout
        pause = 1e-5
        while not request.Test():
            if time.monotonic() > deadline:
                raise CollectiveTimeout(f"ember.distributed: barrier on rank {self.rank} did not finish within "
                                        f"{timeout:.1f} s (the process group's timeout): another rank has not "
                                        f"reached it")
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)

    # ------------------------------------------------------------------ asynchronous collectives
    def submit(self, label, collective):
        """Run `collective(comm)` on the worker thread after those submitted before; a Request."""
        request = Request(label, collective, self.rank)
        self._queue.put(request)
        return request

    def start_tagged(self, tag, array, op):
        """A compiled program's allreduce: reduce a private copy of `array` asynchronously;
        `finish_tagged(tag)` waits for it and returns the reduced copy."""
        if tag in self._tagged:
            raise RuntimeError(f"ember.distributed: all_reduce #{tag} started twice without a wait")
        buffer = np.array(array, copy=True, order="C")
        request = self.submit(f"all_reduce #{tag} ({buffer.nbytes} bytes)",
                              lambda comm: self.all_reduce(buffer, op, comm))
        self._tagged[tag] = request
        return request

    def finish_tagged(self, tag):
        request = self._tagged.pop(tag, None)
        if request is None:
            raise RuntimeError(f"ember.distributed: all_reduce #{tag} was waited for but never started")
        return request.wait(self.timeout)

    def _serve(self):
        while True:
            request = self._queue.get()
            if request is None:
                return
            request.started = time.perf_counter()
            try:
                request.result = request.run(self._async_comm)
            except BaseException as error:  # handed to the waiter
                request.error = error
            request.finished = time.perf_counter()
            if self.timeline is not None:
                self.timeline.append(request)
            request._event.set()

    # ------------------------------------------------------------------ ending
    def abort(self, code=1):
        """End every process of the job (MPI_Abort): the way out when this rank cannot go on."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)
        os._exit(code)  # (MPI_Abort does not return)

    def close(self):
        self._queue.put(None)
        self._worker.join(timeout=self.timeout)
        self._tagged.clear()
        try:
            self._async_comm.Free()
        except Exception:  # (already finalised)
            pass
