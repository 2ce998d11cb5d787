"""DataLoader worker processes (num_workers > 0): the worker loop, `get_worker_info`, and the
iterator that hands batches of indices to workers and yields their results in sampler order.

Protocol: each worker has an index queue of tasks `(epoch, task_index, indices)`; all workers
answer on one result queue with `(epoch, task_index, pickled batch)`. The main process keeps
`prefetch_factor * num_workers` tasks in flight and reorders the answers, so the batches equal
those of num_workers=0. A worker's exception travels back with its formatted traceback and is
raised in the main process. Shutdown: a done event plus a None sentinel per worker, joins with
a timeout, then terminate (straight away from the garbage collector); workers are daemons and
also leave when their parent dies.
"""
import itertools
import os
import queue
import random
import sys
import time
import traceback

import numpy as np

from ..random import default_generator
from .loader_iterator import LoaderIterator, create_fetcher

# how often a blocked queue read wakes up to check that the other side is still alive (seconds)
STATUS_CHECK_INTERVAL = 1.0

_worker_info = None  # set once in each worker process


class WorkerInfo:
    """What a worker knows about itself: `id`, `num_workers`, `seed` and its copy of `dataset`."""

    def __init__(self, id, num_workers, seed, dataset):  # noqa: A002 (torch's field name)
        self.id = id
        self.num_workers = num_workers
        self.seed = seed
        self.dataset = dataset

    def __repr__(self):
        return (f"WorkerInfo(id={self.id}, num_workers={self.num_workers}, seed={self.seed}, "
                f"dataset={self.dataset!r})")


def get_worker_info():
    """The WorkerInfo of the current DataLoader worker process, or None in the main process."""
    return _worker_info


class _KeyErrorMessage(str):
    """KeyError shows repr() of its message; this keeps a multi-line traceback readable."""

    def __repr__(self):
        return self


class ExceptionWrapper:
    """An exception caught in a worker, carried to the main process with its traceback."""

    def __init__(self, exc_info, where):
        self.exc_type = exc_info[0]
        self.exc_msg = "".join(traceback.format_exception(*exc_info))
        self.where = where

    def reraise(self):
        message = f"Caught {self.exc_type.__name__} {self.where}.\nOriginal {self.exc_msg}"
        if self.exc_type is KeyError:
            message = _KeyErrorMessage(message)
        try:
            exception = self.exc_type(message)
        except Exception:  # an exception type whose constructor takes other arguments
            raise RuntimeError(message) from None
        raise exception


class IterableDatasetStopIteration:
    """A worker's IterableDataset copy is exhausted."""

    def __init__(self, worker_id):
        self.worker_id = worker_id


class ResumeIteration:
    """Start a new epoch in a persistent worker (restarts an IterableDataset's iterator)."""


def _send_result(result_queue, epoch, task_index, data, worker_id):
    """Pickle in the worker, so a batch that can't be pickled becomes an error the main process
    sees instead of a lost message (multiprocessing would pickle it in a background thread)."""
    from multiprocessing.reduction import ForkingPickler
    try:
        payload = bytes(ForkingPickler.dumps(data))
    except Exception:
        if isinstance(data, ExceptionWrapper):
            data.exc_type = RuntimeError  # e.g. an exception class defined inside a function
        else:
            data = ExceptionWrapper(sys.exc_info(), f"in DataLoader worker process {worker_id} while "
                                                    f"sending a batch (batches must be picklable)")
        payload = bytes(ForkingPickler.dumps(data))
    result_queue.put((epoch, task_index, payload))


def _unpickle(payload):
    from multiprocessing.reduction import ForkingPickler
    return ForkingPickler.loads(payload)


def _seed_worker(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    default_generator.manual_seed(seed)


def worker_loop(is_iterable, dataset, index_queue, result_queue, done_event, auto_collation, collate_fn,
                drop_last, base_seed, worker_init_fn, worker_id, num_workers):
    """The body of one worker process."""
    global _worker_info
    parent_pid = os.getppid()
    try:
        seed = base_seed + worker_id
        _seed_worker(seed)
        _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
        where = f"in DataLoader worker process {worker_id}"
        init_error = None
        try:
            if worker_init_fn is not None:
                worker_init_fn(worker_id)
            fetcher = create_fetcher(is_iterable, dataset, auto_collation, collate_fn, drop_last)
        except Exception:
            init_error = ExceptionWrapper(sys.exc_info(), where)
        exhausted = False
        while True:
            try:
                task = index_queue.get(timeout=STATUS_CHECK_INTERVAL)
            except queue.Empty:
                if done_event.is_set() or os.getppid() != parent_pid:
                    break  # shut down without a sentinel, or the main process is gone
                continue
            if task is None:
                break
            if isinstance(task, ResumeIteration):
                exhausted = False
                try:
                    fetcher = create_fetcher(is_iterable, dataset, auto_collation, collate_fn, drop_last)
                except Exception:
                    init_error = ExceptionWrapper(sys.exc_info(), where)
                continue
            if done_event.is_set() or exhausted:
                continue  # drain the queue until the sentinel
            epoch, task_index, indices = task
            if init_error is not None:
                data, init_error = init_error, None
            else:
                try:
                    data = fetcher.fetch(indices)
                except StopIteration:
                    if not is_iterable:
                        data = ExceptionWrapper(sys.exc_info(), where)
                    else:
                        data, exhausted = IterableDatasetStopIteration(worker_id), True
                except Exception:
                    data = ExceptionWrapper(sys.exc_info(), where)
            _send_result(result_queue, epoch, task_index, data, worker_id)
            del data, indices, task
    except KeyboardInterrupt:
        pass  # the main process handles Ctrl-C and shuts workers down
    if done_event.is_set():
        result_queue.cancel_join_thread()  # nobody reads any more: don't block exit on a full pipe
        result_queue.close()


def default_context():
    """'fork' on Linux (workers start instantly and share the dataset copy-on-write)."""
    import multiprocessing  # imported on first use: it adds ~8 ms to `import ember`
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


class MultiProcessIterator(LoaderIterator):
    """Load batches in `num_workers` worker processes, yielding them in sampler order."""

    def __init__(self, loader):
        super().__init__(loader)
        context = loader.multiprocessing_context
        if context is None:
            context = default_context()
        elif isinstance(context, str):
            import multiprocessing
            context = multiprocessing.get_context(context)
        self._num_workers = loader.num_workers
        self._prefetch = loader.prefetch_factor * loader.num_workers
        self._persistent = loader.persistent_workers
        self._shutdown = True  # until the workers exist
        self._result_queue = context.Queue()
        self._done_event = context.Event()
        self._index_queues, self._workers = [], []
        for worker_id in range(self._num_workers):
            index_queue = context.Queue()
            index_queue.cancel_join_thread()  # exiting must not wait to flush tasks nobody will run
            worker = context.Process(
                target=worker_loop, name=f"ember DataLoader worker {worker_id}", daemon=True,
                args=(self._is_iterable, self._dataset, index_queue, self._result_queue, self._done_event,
                      self._auto_collation, self._collate_fn, self._drop_last, self._base_seed,
                      loader.worker_init_fn, worker_id, self._num_workers))
            worker.start()
            self._index_queues.append(index_queue)
            self._workers.append(worker)
        self._shutdown = False
        self._epoch = 0
        self._start_epoch()

    def _start_epoch(self):
        self._send_index = 0  # next task to hand out
        self._receive_index = 0  # next task to yield
        self._task_info = {}  # task index -> (worker_id,) while pending, (worker_id, data) when early
        self._worker_active = [True] * self._num_workers
        self._worker_cycle = itertools.cycle(range(self._num_workers))
        for _ in range(self._prefetch):
            self._put_task()

    def _reset(self, loader):
        super()._reset(loader)
        self._epoch += 1  # answers still in flight from the previous epoch are dropped
        for index_queue in self._index_queues:
            index_queue.put(ResumeIteration())
        self._start_epoch()

    def _put_task(self):
        try:
            indices = next(self._sampler_iter)
        except StopIteration:
            return
        for _ in range(self._num_workers):
            worker_id = next(self._worker_cycle)
            if self._worker_active[worker_id]:
                break
        else:
            return  # every worker's IterableDataset copy is exhausted
        self._index_queues[worker_id].put((self._epoch, self._send_index, indices))
        self._task_info[self._send_index] = (worker_id,)
        self._send_index += 1

    def _next_data(self):
        while True:
            # skip tasks given to workers that ran out of data (IterableDataset)
            while self._receive_index < self._send_index:
                info = self._task_info[self._receive_index]
                if len(info) == 2 or self._worker_active[info[0]]:
                    break
                del self._task_info[self._receive_index]
                self._receive_index += 1
            else:
                if not self._persistent:
                    self._shutdown_workers()
                raise StopIteration
            info = self._task_info[self._receive_index]
            if len(info) == 2:
                del self._task_info[self._receive_index]
                return self._process(info[1])
            epoch, task_index, payload = self._get_result()
            if epoch != self._epoch:
                continue
            data = _unpickle(payload)
            if isinstance(data, IterableDatasetStopIteration):
                self._worker_active[data.worker_id] = False
                self._put_task()
                continue
            if task_index != self._receive_index:
                self._task_info[task_index] += (data,)
                continue
            del self._task_info[task_index]
            return self._process(data)

    def _process(self, data):
        self._receive_index += 1
        self._put_task()
        if isinstance(data, ExceptionWrapper):
            data.reraise()
        return data

    def _get_result(self):
        """The next answer from any worker; fails (instead of hanging) when a worker died or
        the loader's timeout passed."""
        deadline = time.monotonic() + self._timeout if self._timeout > 0 else None
        while True:
            wait = STATUS_CHECK_INTERVAL
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds")
            try:
                return self._result_queue.get(timeout=wait)
            except queue.Empty:
                dead = [worker for worker in self._workers if not worker.is_alive()]
                if dead:
                    details = ", ".join(f"pid {worker.pid} exit code {worker.exitcode}" for worker in dead)
                    self._shutdown_workers()
                    raise RuntimeError(f"DataLoader worker ({details}) exited unexpectedly") from None

    def _shutdown_workers(self, graceful=True):
        """Stop the workers: a done event and a None sentinel each, then join (terminating any
        that don't leave in time). From the garbage collector (`graceful=False`) the queues'
        pipes may already be closed, so the sentinels can't be trusted: terminate at once;
        the queues belong to this iterator alone, so nothing shared is left half-written."""
        if self._shutdown:
            return
        self._shutdown = True
        self._done_event.set()
        if graceful:
            for index_queue in self._index_queues:
                index_queue.put(None)
        for worker in self._workers:
            if graceful:
                worker.join(timeout=STATUS_CHECK_INTERVAL)
            if worker.is_alive():
                worker.terminate()
                worker.join()
        for index_queue in self._index_queues:
            index_queue.close()
        self._result_queue.cancel_join_thread()
        self._result_queue.close()

    def __del__(self):
        try:
            self._shutdown_workers(graceful=False)
        except Exception:  # at interpreter exit modules may already be torn down
            pass
