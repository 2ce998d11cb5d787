"""DistributedDataParallel: data-parallel training over ember.distributed's process group.

Each rank holds a replica of the module and trains on its share of the data; gradients are
averaged over the ranks during backward, so the replicas stay identical. As in PyTorch:

- construction broadcasts the parameters and buffers from rank 0 and assigns the parameters
  that require grad to buckets (reverse order of `parameters()`, the order backward produces
  their gradients; the first bucket ~1 MB, the others `bucket_cap_mb`, one dtype each);
- each parameter's post-accumulate-grad hook copies its gradient into its bucket; a full
  bucket is all-reduced (average) asynchronously on the collective worker thread while
  backward goes on, buckets always in index order (the same order on every rank);
- at the end of backward (an autograd final callback) the reducer waits for every bucket and
  writes the averages back into `.grad`;
- `no_sync()` skips the reduction (gradients accumulate locally; the next synchronised
  backward reduces the sum); `find_unused_parameters=True` marks parameters the forward did
  not reach as ready (zero contribution) and leaves `.grad` alone for parameters no rank used.

Differences from PyTorch: every synchronised backward pass is averaged, also a second
backward over one forward (`retain_graph=True`; PyTorch averages only the first);
`gradient_as_bucket_view` changes nothing (the values are the same; gradients are copied into
the buckets); an unused parameter without `find_unused_parameters` raises at the end of that
backward (PyTorch raises at the next forward).

Inside `ember.compile` the same hooks run on traced gradients: a full bucket becomes a
`cat` of its gradients and an `all_reduce_start`, the final callback an `all_reduce_wait`
and the slices written into `.grad` (ember/ops/collectives.py), so a compiled training step
launches its own collectives, overlapped with its backward by the collective-schedule pass.
"""
import contextlib

import numpy as np

from ember.runtime import communicator
from ...autograd import Node, current_backward, no_grad, queue_callback
from ...dispatch import STATE
from ...tensor import Tensor
from ...views import bump_version
from ..module import Module

FIRST_BUCKET_BYTES = 1024 * 1024  # torch.distributed's _DEFAULT_FIRST_BUCKET_BYTES


class _Bucket:
    """Parameters whose gradients are reduced together: (param, name, offset, numel) entries and
    a flat buffer of their dtype."""

    def __init__(self, index, dtype):
        self.index = index
        self.dtype = dtype
        self.entries = []
        self.numel = 0
        self.buffer = None
        self.reset()

    def add(self, param, name):
        self.entries.append((param, name, self.numel, param.numel()))
        self.numel += param.numel()

    @property
    def nbytes(self):
        return self.numel * np.dtype(self.dtype).itemsize

    def reset(self):
        self.ready = [False] * len(self.entries)
        self.pending = len(self.entries)
        self.request = None  # eager: the collective worker's Request
        self.traced = [None] * len(self.entries)  # traced: each gradient tensor
        self.reduced = None  # traced: the reduced flat tensor


def assign_buckets(named_params, first_cap, cap):
    """Buckets of parameters, in reverse order of `named_params`, one dtype each, as PyTorch
    assigns them: a parameter joins its dtype's open bucket, which closes once it holds at least
    its cap in bytes (the first `first_cap`, then `cap`)."""
    buckets, open_by_dtype, closed_by_dtype = [], {}, {}
    for name, param in reversed(named_params):
        dtype = param._data.dtype
        bucket = open_by_dtype.get(dtype)
        if bucket is None:
            bucket = open_by_dtype[dtype] = _Bucket(len(buckets), dtype)
            buckets.append(bucket)
        bucket.add(param, name)
        limit = first_cap if closed_by_dtype.get(dtype, 0) == 0 else cap
        if bucket.nbytes >= limit:
            del open_by_dtype[dtype]
            closed_by_dtype[dtype] = closed_by_dtype.get(dtype, 0) + 1
    for bucket in buckets:
        bucket.buffer = np.zeros(bucket.numel, bucket.dtype)
        bucket.reset()
    return buckets


class DistributedDataParallel(Module):
    """`ember.nn.parallel.DistributedDataParallel(module)`: see the module docstring."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=None, find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False, delay_all_reduce_named_params=None,
                 param_to_hook_all_reduce=None, mixed_precision=None, device_mesh=None):
        super().__init__()
        if process_group not in (None, "WORLD"):
            raise ValueError("DistributedDataParallel: only the default process group is supported "
                             "(process_group=None)")
        if device_ids not in (None, [], ["cpu"]) or output_device not in (None, "cpu"):
            raise ValueError(f"DistributedDataParallel: ember's tensors live on the CPU; leave device_ids and "
                             f"output_device unset (got device_ids={device_ids!r}, output_device={output_device!r})")
        if not communicator.is_open():
            raise ValueError("Default process group has not been initialized, please make sure to call "
                             "init_process_group.")
        world = communicator.world()
        self.module = module
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.require_backward_grad_sync = True
        self.gradient_as_bucket_view = gradient_as_bucket_view  # (values are the same either way)
        self.static_graph = static_graph
        self.bucket_cap_mb = 25 if bucket_cap_mb is None else bucket_cap_mb
        self.dim = dim
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if any(p._data.dtype == np.float16 for _, p in named):
            raise ValueError("DistributedDataParallel: float16 parameters are not supported by the MPI backend")
        with no_grad():
            for _, tensor in list(module.named_parameters()) + list(module.named_buffers()):
                _broadcast_in_place(world, tensor)
        cap = int(self.bucket_cap_mb * 1024 * 1024)
        object.__setattr__(self, "_reducer", _Reducer(world, named, min(FIRST_BUCKET_BYTES, cap), cap, self))

    def forward(self, *inputs, **kwargs):
        reducer = self._reducer
        if self.broadcast_buffers and reducer.world.size > 1:
            _broadcast_buffers(reducer.world, self.module)
        output = self.module(*inputs, **kwargs)
        if STATE.grad_enabled and self.require_backward_grad_sync and self.find_unused_parameters:
            reducer.prepare(output)
        return output

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate gradients locally, without allreduce."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def bucket_sizes(self):
        """The buckets as (bytes, parameter names), in reduction order."""
        return [(b.nbytes, [name for _, name, _, _ in b.entries]) for b in self._reducer.buckets]

    def record_timeline(self, timeline):
        """Append each finished bucket allreduce's Request (submitted/started/finished times) to
        `timeline` (a list), or stop recording with None (benchmarks/distributed.py)."""
        self._reducer.world.timeline = timeline


class _Reducer:
    """The gradient buckets of one DistributedDataParallel and what happens to them in backward."""

    def __init__(self, world, named_params, first_cap, cap, owner):
        self.world = world
        self.owner = owner
        self.buckets = assign_buckets(named_params, first_cap, cap)
        self.location = {id(p): (b, k) for b in self.buckets for k, (p, _, _, _) in enumerate(b.entries)}
        self.unused = set()  # id(param) the last forward did not reach (find_unused_parameters)
        self.next_bucket = 0
        self.backward = None  # the backward pass the buckets are filled in (autograd.current_backward)
        for bucket in self.buckets:
            for param, _, _, _ in bucket.entries:
                param.register_post_accumulate_grad_hook(self.grad_ready)

    def prepare(self, output):
        """After a forward with find_unused_parameters: the parameters `output`'s history does
        not reach will be marked ready at the next backward."""
        reached = _leaves_reached(output)
        self.unused = {key for key in self.location if key not in reached}

    def grad_ready(self, param):
        """A parameter's post-accumulate-grad hook."""
        if not self.owner.require_backward_grad_sync:
            return
        current = current_backward()
        if current is not self.backward:  # the first gradient of a backward pass
            self.backward = current
            for bucket in self.buckets:
                bucket.reset()
            self.next_bucket = 0
            queue_callback(self.finish)
            for key in self.unused:
                bucket, k = self.location[key]
                self._mark_ready(bucket, k, None)
        bucket, k = self.location[id(param)]
        if not bucket.ready[k]:
            self._mark_ready(bucket, k, param.grad)

    def _mark_ready(self, bucket, k, grad):
        param, name, offset, numel = bucket.entries[k]
        bucket.ready[k] = True
        bucket.pending -= 1
        if grad is not None and _is_traced(grad):
            bucket.traced[k] = grad
        elif grad is not None:
            bucket.buffer[offset:offset + numel] = grad._data.reshape(-1)
        else:
            bucket.buffer[offset:offset + numel] = 0
        while self.next_bucket < len(self.buckets) and self.buckets[self.next_bucket].pending == 0:
            self._launch(self.buckets[self.next_bucket])
            self.next_bucket += 1

    def _launch(self, bucket):
        if any(g is not None for g in bucket.traced):  # a traced step: record the collective
            from ember.distributed import collective_all_reduce
            from ... import shape_ops
            parts = [g.reshape(-1) if g is not None else Tensor._wrap(np.zeros(numel, bucket.dtype))
                     for g, (_, _, _, numel) in zip(bucket.traced, bucket.entries)]
            flat = shape_ops.cat(parts) if len(parts) > 1 else parts[0]
            bucket.reduced = collective_all_reduce(flat, "avg")
            return
        buffer = bucket.buffer
        bucket.request = self.world.submit(f"bucket {bucket.index} all_reduce ({buffer.nbytes} bytes)",
                                           lambda comm: self.world.all_reduce(buffer, "avg", comm))

    def finish(self):
        """The final callback of a synchronised backward: every bucket reduced, `.grad` = average."""
        self.backward = None
        unused_now = set()
        if self.owner.find_unused_parameters:  # reached from the output, yet no gradient came (an
            for bucket in self.buckets:       # output the loss does not use): unused this time too
                for k, ready in enumerate(bucket.ready):
                    if not ready:
                        unused_now.add(id(bucket.entries[k][0]))
                        self._mark_ready(bucket, k, None)
        missing = [name for b in self.buckets for (_, name, _, _), ready in zip(b.entries, b.ready) if not ready]
        if missing:
            raise RuntimeError(
                f"DistributedDataParallel: parameters that require grad received no gradient in this backward "
                f"pass: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. They were not used to "
                f"compute the loss; pass find_unused_parameters=True to DistributedDataParallel, or make them "
                f"not require grad. (Every rank must reduce the same buckets, so training cannot go on.)")
        unused = self.unused | unused_now
        globally_unused = self._globally_unused(unused) if self.owner.find_unused_parameters else set()
        for bucket in self.buckets:
            if bucket.reduced is not None:
                self._write_traced(bucket, globally_unused)
                continue
            bucket.request.wait(self.world.timeout)
            for param, _, offset, numel in bucket.entries:
                if id(param) in globally_unused:
                    continue
                value = bucket.buffer[offset:offset + numel].reshape(param._data.shape)
                if param.grad is None:
                    param.grad = Tensor._wrap(value.copy())
                else:
                    np.copyto(param.grad._data, value)
                    bump_version(param.grad)

    def _write_traced(self, bucket, globally_unused):
        reduced = bucket.reduced
        bucket.reduced = None
        for param, _, offset, numel in bucket.entries:
            if id(param) not in globally_unused:
                param.grad = reduced[offset:offset + numel].reshape(tuple(param.shape))

    def _globally_unused(self, unused):
        """Parameters no rank used (their .grad stays as it is): an allreduce of the usage map."""
        keys = list(self.location)
        used = np.array([0 if key in unused else 1 for key in keys], np.int32)
        self.world.submit("unused-parameter map all_reduce",
                          lambda comm: self.world.all_reduce(used, "sum", comm)).wait(self.world.timeout)
        return {key for key, count in zip(keys, used) if count == 0}


def _is_traced(tensor):
    return tensor._node is not None and STATE.recorder is not None and tensor._node[0] is STATE.recorder


def _leaves_reached(output):
    """ids of the leaf tensors the autograd history of `output` (tensors, nested) reaches."""
    from ember.frontend.value_trees import flatten_tensors
    stack = [t.grad_fn for _, t in flatten_tensors(output) if t.grad_fn is not None]
    reached, seen = set(), set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if not isinstance(node, Node):
            continue
        for t, (_, fn, requires_grad, _) in zip(node.inputs, node.saved):
            if fn is not None:
                stack.append(fn)
            elif requires_grad:
                reached.add(id(t))
    return reached


def _broadcast_in_place(world, tensor):
    """rank 0's value of `tensor` on every rank (construction: straight on the numpy buffer)."""
    data = tensor._data
    buffer = data if data.flags.c_contiguous and data.flags.writeable else np.ascontiguousarray(data)
    world.broadcast(buffer, 0)
    if buffer is not data:
        np.copyto(data, buffer)
    bump_version(tensor)


def _broadcast_buffers(world, module):
    """Each forward: the buffers (BatchNorm's running statistics) from rank 0. While tracing, as
    an allreduce of rank 0's value and zeros elsewhere, so a compiled step records it."""
    buffers = [b for _, b in module.named_buffers()]
    if not buffers:
        return
    with no_grad():
        if STATE.recorder is None:
            for b in buffers:
                _broadcast_in_place(world, b)
            return
        from ember.distributed import collective_all_reduce
        for b in buffers:
            share = b if world.rank == 0 else b * 0
            b.copy_(collective_all_reduce(share, "sum"))
