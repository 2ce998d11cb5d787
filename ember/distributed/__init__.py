"""ember.distributed: torch.distributed's process group and collectives, over MPI.

Launch with `mpirun -n N python script.py` (or `python -m ember.distributed.run --nproc N
script.py`), then `init_process_group(backend="mpi")`. Collectives work in place on tensors,
through mpi4py on their numpy buffers (runtime/communicator.py): blocking ones on the calling
thread, `async_op=True` ones on the collective worker thread, returning a `Work`. Inside
`ember.compile`, `all_reduce` is recorded as the collective primitives of ember/ops/collectives.py,
so the compiled program runs it; the other collectives make that call run eagerly.

After `init_process_group`, an uncaught exception on any rank prints its traceback and calls
MPI_Abort, so the other ranks stop with it instead of waiting forever at their next
collective. `barrier()` and the waits of asynchronous work (`Work.wait`, DDP's buckets,
compiled programs' collectives) raise after the group's `timeout` (and so abort too); a
blocking all_reduce/broadcast/all_gather/reduce_scatter cannot time out (MPI cannot cancel a
blocking collective): use `async_op=True` and `wait()` where that matters.
`import ember` does not import this module, nor mpi4py.
"""
import datetime
import os
import sys
import threading

import numpy as np

from ember.frontend.dispatch import STATE as _STATE
from ember.frontend.tensor import Tensor as _Tensor
from ember.frontend.views import bump_version as _bump_version
from ember.runtime import communicator as _comm

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
_NOT_INITIALIZED = ("Default process group has not been initialized, please make sure to call "
                    "init_process_group.")


class ReduceOp:
    """The reductions of all_reduce and reduce_scatter (`dist.ReduceOp.SUM`, ...)."""
    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"


class Backend:
    MPI = "mpi"
    GLOO = "gloo"
    NCCL = "nccl"


class GroupMember:
    WORLD = "WORLD"  # the default (and only) group
    NON_GROUP_MEMBER = None


group = GroupMember


def is_available():
    return True


def is_mpi_available():
    import importlib.util
    return importlib.util.find_spec("mpi4py") is not None


def is_gloo_available():
    return False


def is_nccl_available():
    return False


def is_torchelastic_launched():
    return False


def is_initialized():
    return _comm.is_open()


def _world():
    if not _comm.is_open():
        raise ValueError(_NOT_INITIALIZED)
    return _comm.world()


def _check_group(group, what):
    if group not in (None, GroupMember.WORLD):
        raise ValueError(f"ember.distributed.{what}: only the default group (group=None) is supported; "
                         f"got {group!r}")


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, store=None,
                       group_name="", pg_options=None, device_id=None):
    """Join the job's process group: MPI's world, as `mpirun` (or ember.distributed.run) started
    it. `backend` must be "mpi" (or None); `world_size` and `rank`, when given, must agree with
    what MPI says; `timeout` (a timedelta, default 30 minutes) bounds every wait."""
    if _comm.is_open():
        raise RuntimeError("trying to initialize the default process group twice!")
    name = "mpi" if backend is None else str(backend).lower()
    if name != "mpi":
        raise ValueError(f"ember.distributed: backend {backend!r} is not available; ember supports the 'mpi' "
                         f"backend (Open MPI or MPICH through mpi4py), on CPU tensors. Use "
                         f"init_process_group(backend='mpi') and launch with `mpirun -n N python script.py` or "
                         f"`python -m ember.distributed.run --nproc N script.py`")
    if init_method not in (None, "env://"):
        raise ValueError(f"ember.distributed: init_method {init_method!r} is not supported: MPI's launcher "
                         f"(mpirun) connects the processes; leave init_method unset")
    if store is not None:
        raise ValueError("ember.distributed: a store is not used with the MPI backend; leave store unset")
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)
    world = _comm.open_world(seconds)
    try:
        if world_size not in (-1, None) and int(world_size) != world.size:
            raise ValueError(f"ember.distributed: init_process_group(world_size={world_size}) but the MPI job "
                             f"has {world.size} process(es); start it with `mpirun -n {world_size}`")
        if rank not in (-1, None) and int(rank) != world.rank:
            raise ValueError(f"ember.distributed: init_process_group(rank={rank}) but MPI gave this process "
                             f"rank {world.rank}")
    except ValueError:
        _comm.close_world()
        raise
    for key, value in (("RANK", world.rank), ("WORLD_SIZE", world.size), ("LOCAL_RANK", _local_rank(world.rank))):
        os.environ.setdefault(key, str(value))
    _install_abort_on_error(world)


def _local_rank(rank):
    for key in ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MPI_LOCAL_RANK", "PMI_LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return rank


_previous_hooks = None


def _install_abort_on_error(world):
    """An uncaught exception (in the main thread or another) prints its traceback, tagged with
    the rank, and aborts the whole job: the other ranks must not wait for this one forever."""
    global _previous_hooks
    _previous_hooks = (sys.excepthook, threading.excepthook)
    previous_hook, previous_thread_hook = _previous_hooks

    def abort_on_error(kind, value, traceback):
        if issubclass(kind, KeyboardInterrupt) and not _comm.is_open():
            return previous_hook(kind, value, traceback)
        sys.stderr.write(f"ember.distributed: rank {world.rank} of {world.size} raised {kind.__name__}; "
                         f"aborting the job (MPI_Abort)\n")
        previous_hook(kind, value, traceback)
        world.abort(1)

    def abort_on_thread_error(args):
        previous_thread_hook(args)
        sys.stderr.write(f"ember.distributed: a thread of rank {world.rank} raised; aborting the job (MPI_Abort)\n")
        world.abort(1)

    sys.excepthook = abort_on_error
    threading.excepthook = abort_on_thread_error


def destroy_process_group(group=None):
    """Leave the process group (MPI itself is finalised when the process exits)."""
    global _previous_hooks
    _check_group(group, "destroy_process_group")
    if not _comm.is_open():
        raise ValueError(_NOT_INITIALIZED)
    _comm.close_world()
    if _previous_hooks is not None:
        sys.excepthook, threading.excepthook = _previous_hooks
        _previous_hooks = None


def get_rank(group=None):
    _check_group(group, "get_rank")
    return _world().rank


def get_world_size(group=None):
    _check_group(group, "get_world_size")
    return _world().size


def get_backend(group=None):
    _check_group(group, "get_backend")
    _world()
    return Backend.MPI


def new_group(ranks=None, timeout=None, backend=None, pg_options=None, use_local_synchronization=False,
              group_desc=None):
    """Only the whole world: ember's MPI backend has one group."""
    world = _world()
    if ranks is not None and sorted(ranks) != list(range(world.size)):
        raise ValueError(f"ember.distributed.new_group: subgroups are not supported (ranks={list(ranks)} of "
                         f"{world.size}); only the default group of every rank")
    return GroupMember.WORLD


class Work:
    """The handle of an `async_op=True` collective: `wait()` blocks until it has finished (then
    the tensor holds the result), `is_completed()` polls."""

    def __init__(self, request=None, finish=None, timeout=None):
        self._request, self._finish, self._timeout = request, finish, timeout
        self._finished = request is None

    def wait(self, timeout=None):
        if not self._finished:
            seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else timeout
            self._request.wait(self._timeout if seconds is None else seconds)
            self._finished = True
            if self._finish is not None:
                self._finish()
        return True

    def is_completed(self):
        return self._finished or self._request.done()

    def is_success(self):
        return self.is_completed() and (self._request is None or self._request.error is None)

    def exception(self):
        return None if self._request is None else self._request.error

    def result(self):
        self.wait()
        return []


def _buffer(tensor, what):
    """The tensor's numpy array when MPI can write it in place, else a contiguous copy (written
    back by `_written`)."""
    if not isinstance(tensor, _Tensor):
        raise TypeError(f"ember.distributed.{what}: expected a Tensor, got {type(tensor).__name__}")
    data = tensor._data
    if data.flags.c_contiguous and data.flags.writeable:
        return data
    if not data.flags.writeable or 0 in data.strides and data.size > 1:
        raise ValueError(f"ember.distributed.{what}: the {tensor.dtype}{list(tensor.shape)} tensor cannot be "
                         f"written in place (an expanded view whose elements share memory, or read-only); "
                         f"pass a contiguous tensor (.contiguous() or .clone())")
    return np.ascontiguousarray(data)


def _written(tensor, buffer):
    if buffer is not tensor._data:
        np.copyto(tensor._data, buffer)
    _bump_version(tensor)


def _run(what, tensors_and_buffers, collective, async_op):
    """Run `collective(comm)` now, or on the worker thread with a Work; then mark the tensors written."""
    world = _world()

    def finish():
        for tensor, buffer in tensors_and_buffers:
            _written(tensor, buffer)

    if not async_op:
        collective(None)
        finish()
        return None
    request = world.submit(what, collective)
    return Work(request, finish, world.timeout)


def _tracing():
    return _STATE.recorder is not None


def _eager_only(what):
    from ember.frontend.dispatch import run_eagerly
    run_eagerly(f"calls ember.distributed.{what} (only all_reduce is compiled)")


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce `tensor` over every rank, in place (op: ReduceOp.SUM, AVG, PRODUCT, MIN, MAX)."""
    if group is not None:
        _check_group(group, "all_reduce")
    world = _comm._world or _world()
    if op != "sum" or type(tensor) is not _Tensor:
        op = _reduce_op(op, tensor, "all_reduce")
    if _STATE.recorder is not None:
        return _traced_all_reduce(tensor, op)
    data = tensor._data
    if not async_op and data.flags.c_contiguous and data.flags.writeable:  # the common case, no copy
        world.all_reduce(data, op)
        _bump_version(tensor)
        return None
    buffer = _buffer(tensor, "all_reduce")
    return _run(f"all_reduce ({buffer.nbytes} bytes)", [(tensor, buffer)],
                lambda comm: world.all_reduce(buffer, op, comm), async_op)


_OP_NAMES = {op: op for op in _comm.REDUCE_OPS}


def _reduce_op(op, tensor, what):
    if not isinstance(tensor, _Tensor):
        raise TypeError(f"ember.distributed.{what}: expected a Tensor, got {type(tensor).__name__}")
    name = _OP_NAMES.get(op) or str(op).lower().rpartition(".")[2]
    if name not in _comm.REDUCE_OPS:
        raise ValueError(f"ember.distributed.{what}: unknown op {op!r}; use ReduceOp.SUM, AVG, PRODUCT, MIN or MAX")
    if name == "avg" and tensor._data.dtype.kind != "f":
        raise ValueError(f"ember.distributed.{what}: ReduceOp.AVG needs a floating-point tensor, got "
                         f"{tensor.dtype} of shape {list(tensor.shape)}")
    return name


def _traced_all_reduce(tensor, op):
    """all_reduce inside ember.compile: the reduced value comes from the collective primitives
    (recorded in the IR) and is written into the tensor."""
    from ember.frontend.autograd import no_grad
    reduced = collective_all_reduce(tensor, op)
    with no_grad():
        tensor.copy_(reduced)
    return Work()


def collective_all_reduce(tensor, op):
    """The reduced value of `tensor` as a new tensor, through all_reduce_start/all_reduce_wait
    (recorded while tracing; run now otherwise). DDP's compiled buckets use it too."""
    from ember.frontend.dispatch import STATE
    from ember.ops import PRIMITIVES
    recorder = STATE.recorder
    graph = getattr(recorder, "graph", None)
    tag = 0 if graph is None else sum(1 for n in graph.nodes() if n.op == "all_reduce_start")
    token = PRIMITIVES["all_reduce_start"].bind(tensor, op=op, tag=tag)
    return PRIMITIVES["all_reduce_wait"].bind(token, op=op, tag=tag, shape=tuple(tensor.shape),
                                              dtype=tensor.dtype.name)


def broadcast(tensor, src, group=None, async_op=False):
    """`tensor` of rank `src` copied into `tensor` on every rank."""
    _check_group(group, "broadcast")
    world = _world()
    _check_rank(src, world, "broadcast", "src")
    if _tracing():
        _eager_only("broadcast")
    buffer = _buffer(tensor, "broadcast")
    return _run(f"broadcast ({buffer.nbytes} bytes)", [(tensor, buffer)],
                lambda comm: world.broadcast(buffer, src, comm), async_op)


def _check_rank(rank, world, what, name):
    if not isinstance(rank, int) or not 0 <= rank < world.size:
        raise ValueError(f"ember.distributed.{what}: {name}={rank!r} is not a rank of this group "
                         f"(0..{world.size - 1})")


def _same_layout(tensors, reference, what):
    for t in tensors:
        if tuple(t.shape) != tuple(reference.shape) or t.dtype != reference.dtype:
            raise ValueError(f"ember.distributed.{what}: every tensor must have the shape and dtype of the input "
                             f"({reference.dtype}{list(reference.shape)}); got {t.dtype}{list(t.shape)}")


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """tensor_list[r] receives rank r's `tensor`."""
    _check_group(group, "all_gather")
    world = _world()
    if len(tensor_list) != world.size:
        raise ValueError(f"ember.distributed.all_gather: tensor_list has {len(tensor_list)} tensors; the group "
                         f"has {world.size} ranks")
    _same_layout(tensor_list, tensor, "all_gather")
    if _tracing():
        _eager_only("all_gather")
    send = np.ascontiguousarray(tensor._data)
    gathered = np.empty((world.size,) + send.shape, send.dtype)

    def collective(comm):
        world.all_gather(gathered, send, comm)

    def finish():
        from ember.frontend.views import bump_version
        for t, part in zip(tensor_list, gathered):
            np.copyto(t._data, part)
            bump_version(t)
    if not async_op:
        collective(None)
        finish()
        return None
    return Work(world.submit(f"all_gather ({send.nbytes} bytes)", collective), finish, world.timeout)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    """output_tensor (world_size * input's first dim, or world_size x input) holds every rank's input."""
    _check_group(group, "all_gather_into_tensor")
    world = _world()
    if output_tensor.numel() != world.size * input_tensor.numel() or output_tensor.dtype != input_tensor.dtype:
        raise ValueError(f"ember.distributed.all_gather_into_tensor: output {output_tensor.dtype}"
                         f"{list(output_tensor.shape)} must hold {world.size} x input {input_tensor.dtype}"
                         f"{list(input_tensor.shape)}")
    if _tracing():
        _eager_only("all_gather_into_tensor")
    out = _buffer(output_tensor, "all_gather_into_tensor")
    send = np.ascontiguousarray(input_tensor._data)
    return _run(f"all_gather_into_tensor ({send.nbytes} bytes)", [(output_tensor, out)],
                lambda comm: world.all_gather(out.reshape((world.size,) + send.shape), send, comm), async_op)


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
    """output receives the reduction over ranks of each rank's input_list[rank]."""
    _check_group(group, "reduce_scatter")
    world = _world()
    if len(input_list) != world.size:
        raise ValueError(f"ember.distributed.reduce_scatter: input_list has {len(input_list)} tensors; the group "
                         f"has {world.size} ranks")
    _same_layout(input_list, output, "reduce_scatter")
    op = _reduce_op(op, output, "reduce_scatter")
    if _tracing():
        _eager_only("reduce_scatter")
    send = np.ascontiguousarray(np.stack([t._data for t in input_list]))
    out = _buffer(output, "reduce_scatter")
    return _run(f"reduce_scatter ({send.nbytes} bytes)", [(output, out)],
                lambda comm: world.reduce_scatter(out, send, op, comm), async_op)


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
    """output receives its block (input split in world_size blocks along dim 0) of the reduction."""
    _check_group(group, "reduce_scatter_tensor")
    world = _world()
    if input.numel() != world.size * output.numel() or input.dtype != output.dtype:
        raise ValueError(f"ember.distributed.reduce_scatter_tensor: input {input.dtype}{list(input.shape)} must "
                         f"be {world.size} x output {output.dtype}{list(output.shape)}")
    op = _reduce_op(op, output, "reduce_scatter_tensor")
    if _tracing():
        _eager_only("reduce_scatter_tensor")
    send = np.ascontiguousarray(input._data)
    out = _buffer(output, "reduce_scatter_tensor")
    return _run(f"reduce_scatter_tensor ({send.nbytes} bytes)", [(output, out)],
                lambda comm: world.reduce_scatter(out, send, op, comm), async_op)


def barrier(group=None, async_op=False, device_ids=None):
    """Wait until every rank gets here (raises after the group's timeout)."""
    _check_group(group, "barrier")
    world = _world()
    if _tracing():
        _eager_only("barrier")
    if async_op:
        return Work(world.submit("barrier", lambda comm: comm.Barrier()), None, world.timeout)
    world.barrier()
    return None


def broadcast_object_list(object_list, src=0, group=None, device=None):
    """Each element of `object_list` replaced by rank `src`'s (pickled)."""
    _check_group(group, "broadcast_object_list")
    world = _world()
    _check_rank(src, world, "broadcast_object_list", "src")
    received = world.comm.bcast(list(object_list) if world.rank == src else None, root=src)
    object_list[:] = received


def all_gather_object(object_list, obj, group=None):
    """object_list[r] receives rank r's `obj` (pickled)."""
    _check_group(group, "all_gather_object")
    world = _world()
    if len(object_list) != world.size:
        raise ValueError(f"ember.distributed.all_gather_object: object_list has {len(object_list)} entries; the "
                         f"group has {world.size} ranks")
    object_list[:] = world.comm.allgather(obj)


__all__ = ["ReduceOp", "Backend", "GroupMember", "group", "Work", "is_available", "is_mpi_available",
           "is_gloo_available", "is_nccl_available", "is_initialized", "init_process_group",
           "destroy_process_group", "get_rank", "get_world_size", "get_backend", "new_group", "barrier",
           "all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter",
           "reduce_scatter_tensor", "broadcast_object_list", "all_gather_object"]
