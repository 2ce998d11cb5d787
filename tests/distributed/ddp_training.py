"""Run under `mpirun -n 2` by tests/test_distributed.py: DistributedDataParallel training of the
seed Net checked against one process training on the global batch, eagerly and compiled, plus
no_sync accumulation, unused parameters, buffer broadcast and the collectives' semantics.
Each check prints `OK <name>` on every rank; any failure raises (and aborts the job)."""
import os
import sys

import numpy as np

import ember as torch
import ember.distributed as dist
from ember import nn
from ember.nn.parallel import DistributedDataParallel as DDP
from ember.utils.data import DataLoader, TensorDataset
from ember.utils.data.distributed import DistributedSampler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for the zoo
from zoo import SeedNet as Net  # noqa: E402

STEPS, PER_RANK = 20, 4


def ok(name):
    print(f"OK {name} rank {dist.get_rank()}", flush=True)


def flat_params(module):
    return np.concatenate([p._data.ravel() for p in module.parameters()])


def check_identical_across_ranks(module, what):
    mine = torch.from_numpy(flat_params(module))
    gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    for r, other in enumerate(gathered):
        if not np.array_equal(other._data, mine._data):
            raise AssertionError(f"{what}: parameters of rank {r} differ from rank {dist.get_rank()}'s "
                                 f"(max diff {np.abs(other._data - mine._data).max()})")


def dataset():
    rng = np.random.default_rng(5)
    n = STEPS * PER_RANK * dist.get_world_size()
    images = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, n).astype(np.int64)
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))


def global_batches(data, epoch):
    """Each step's batch of every rank, concatenated in rank order (what one process trains on)."""
    world = dist.get_world_size()
    per_rank = []
    for r in range(world):
        sampler = DistributedSampler(data, num_replicas=world, rank=r, shuffle=True, seed=3)
        sampler.set_epoch(epoch)
        per_rank.append(list(DataLoader(data, batch_size=PER_RANK, sampler=sampler)))
    return [(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])) for batches in zip(*per_rank)]


def train_ddp_against_one_process(compiled):
    name = "compiled" if compiled else "eager"
    torch.manual_seed(100 + dist.get_rank())  # different initial weights: DDP must broadcast rank 0's
    net = Net()
    model = DDP(net)
    torch.manual_seed(100)  # rank 0's weights: the reference starts where DDP does
    reference = Net()
    check_identical_across_ranks(net, f"{name} after construction")
    assert np.array_equal(flat_params(net), flat_params(reference)), "DDP did not broadcast rank 0's parameters"
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)

    def step(images, labels):
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    train_step = torch.compile(step) if compiled else step
    data = dataset()
    sampler = DistributedSampler(data, shuffle=True, seed=3)
    sampler.set_epoch(1)
    loader = DataLoader(data, batch_size=PER_RANK, sampler=sampler)
    references = global_batches(data, 1)
    assert len(loader) == len(references) == STEPS
    for i, ((images, labels), (all_images, all_labels)) in enumerate(zip(loader, references)):
        loss = train_step(images, labels)
        ref_optimizer.zero_grad()
        ref_loss = criterion(reference(all_images), all_labels)
        ref_loss.backward()
        ref_optimizer.step()
        check_identical_across_ranks(net, f"{name} step {i}")
        np.testing.assert_allclose(flat_params(net), flat_params(reference), rtol=2e-4, atol=2e-5,
                                   err_msg=f"{name} DDP step {i} differs from one process on the global batch")
        losses = [torch.zeros(()) for _ in range(dist.get_world_size())]
        dist.all_gather(losses, loss.detach().reshape(()))
        np.testing.assert_allclose(np.mean([l.item() for l in losses]), ref_loss.item(), rtol=1e-4)
    if compiled:
        report = str(train_step.report)
        assert "all_reduce_start" in report and "all_reduce_wait" in report, report
        assert "recompiles: 1" in report, report  # (the momentum buffers appear after the first step)
    ok(f"ddp_{name}_matches_one_process")


def no_sync_accumulation():
    torch.manual_seed(7)
    net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    model = DDP(net)
    torch.manual_seed(7)
    reference = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    rng = np.random.default_rng(9)
    world, rank = dist.get_world_size(), dist.get_rank()
    micro = [torch.from_numpy(rng.standard_normal((world * 2, 6)).astype(np.float32)) for _ in range(3)]
    with model.no_sync():
        for x in micro[:2]:
            model(x[rank * 2:(rank + 1) * 2]).sum().backward()
    local = net[0].weight.grad.numpy().copy()
    gathered = [torch.zeros(local.shape) for _ in range(world)]
    dist.all_gather(gathered, torch.from_numpy(local))
    if world > 1:
        assert not np.allclose(gathered[0]._data, gathered[1]._data), "no_sync still averaged the gradients"
    model(micro[2][rank * 2:(rank + 1) * 2]).sum().backward()  # synchronised: reduces the accumulated sum
    for x in micro:
        (reference(x).sum() / world).backward()
    for p, q in zip(net.parameters(), reference.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)
    ok("no_sync_accumulation")


class TwoBranches(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(4, 2)
        self.unused = nn.Linear(4, 2)
        self.sometimes = nn.Linear(4, 2)

    def forward(self, x, use_sometimes):
        y = self.used(x)
        return y + self.sometimes(x) if use_sometimes else y


def unused_parameters():
    torch.manual_seed(1)
    net = TwoBranches()
    model = DDP(net, find_unused_parameters=True)
    rank = dist.get_rank()
    x = torch.ones(3, 4) * (rank + 1)
    model(x, use_sometimes=(rank == 0)).sum().backward()
    assert net.unused.weight.grad is None, "a parameter no rank used got a gradient"
    assert net.used.weight.grad is not None and net.sometimes.weight.grad is not None
    # `sometimes` was used on rank 0 only: the average is rank 0's gradient / world size
    expected = np.full((2, 4), 3.0 / dist.get_world_size(), np.float32)
    np.testing.assert_allclose(net.sometimes.weight.grad.numpy(), expected, rtol=1e-6)
    check_identical_across_ranks(net, "find_unused_parameters")
    strict = DDP(TwoBranches())
    try:
        strict(x, use_sometimes=True).sum().backward()
    except RuntimeError as error:
        assert "find_unused_parameters=True" in str(error) and "unused.weight" in str(error), error
    else:
        raise AssertionError("an unused parameter without find_unused_parameters did not raise")
    ok("find_unused_parameters")


def backward_with_inputs():
    """loss.backward(inputs=params) also averages (post-accumulate-grad hooks fire)."""
    torch.manual_seed(2)
    net = nn.Linear(3, 2)
    model = DDP(net)
    x = torch.ones(4, 3) * (dist.get_rank() + 1)
    model(x).sum().backward(inputs=list(net.parameters()))
    expected = np.full((2, 3), 4.0 * np.mean([r + 1 for r in range(dist.get_world_size())]), np.float32)
    np.testing.assert_allclose(net.weight.grad.numpy(), expected)
    ok("backward_with_inputs")


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.b = nn.Linear(2, 2)

    def forward(self, x):
        return self.a(x), self.b(x)


def unused_output():
    """find_unused_parameters: parameters reached only by an output the loss ignores."""
    torch.manual_seed(4)
    net = TwoOutputs()
    model = DDP(net, find_unused_parameters=True)
    for step in (1, 2):
        first, _ = model(torch.ones(1, 2))
        first.sum().backward()
        assert net.a.bias.grad.tolist() == [float(step)] * 2 and net.b.bias.grad is None
    ok("unused_output")


class TwoBranches4(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l2b, self.l3 = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.tanh(self.l1(x))
        return self.l3(torch.relu(self.l2(h)) + self.l2b(h))


def compiled_step_equals_eager(build, name, bucket_cap_mb):
    """A compiled DDP training step equals the eager DDP step (many tiny buckets: the compiled
    program must start them in traced order on every rank, whatever fusion recomputes)."""
    results = []
    for compiled in (False, True):
        torch.manual_seed(6)
        net = build()
        model = DDP(net, bucket_cap_mb=bucket_cap_mb)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

        def step(x, y):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss

        run = torch.compile(step) if compiled else step
        rng = np.random.default_rng(dist.get_rank())
        for _ in range(4):
            run(torch.from_numpy(rng.standard_normal((6, 4)).astype(np.float32)),
                torch.from_numpy(rng.integers(0, 3, 6).astype(np.int64)))
        results.append([t.detach().numpy().copy() for t in list(net.parameters()) + list(net.buffers())])
        check_identical_across_ranks(net, f"{name} DDP {'compiled' if compiled else 'eager'}")
    for eager, compiled in zip(*results):
        np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)
    ok(f"compiled_step_{name}")


def buffers_follow_rank_0(compiled):
    """Each forward starts from rank 0's buffers (BatchNorm's running statistics), then updates
    them with this rank's batch."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    model = DDP(net)
    forward = torch.compile(model) if compiled else model
    x = torch.randn(8, 4) * (dist.get_rank() + 1)
    with torch.no_grad():
        batch_mean = net[0](x).mean(0)
    for call in range(3):
        rank0_mean = net[1].running_mean.clone()
        dist.broadcast(rank0_mean, 0)
        forward(x)
        expected = 0.9 * rank0_mean + 0.1 * batch_mean
        np.testing.assert_allclose(net[1].running_mean.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=f"call {call}")
    if compiled:
        assert "all_reduce_start" in str(forward.report)
    ok(f"broadcast_buffers{'_compiled' if compiled else ''}")


def collectives():
    rank, world = dist.get_rank(), dist.get_world_size()
    t = torch.arange(4, dtype=torch.float32) + rank
    expected = sum(np.arange(4, dtype=np.float32) + r for r in range(world))
    dist.all_reduce(t)
    np.testing.assert_array_equal(t.numpy(), expected)
    for op, reduce in ((dist.ReduceOp.MAX, np.max), (dist.ReduceOp.MIN, np.min), (dist.ReduceOp.PRODUCT, np.prod),
                       (dist.ReduceOp.AVG, np.mean)):
        t = torch.tensor([1.0, 2.0]) * (rank + 2)
        dist.all_reduce(t, op=op)
        np.testing.assert_allclose(t.numpy(), reduce([[1.0 * (r + 2), 2.0 * (r + 2)] for r in range(world)], axis=0))
    version = t._version
    work = dist.all_reduce(t, async_op=True)
    assert work.wait() and work.is_completed() and work.is_success() and t._version > version
    view = torch.zeros(4, 4)[:, 1]  # a non-contiguous view: reduced through a copy, written back
    view += rank + 1
    dist.all_reduce(view)
    np.testing.assert_array_equal(view.numpy(), np.full(4, sum(range(1, world + 1)), np.float32))
    b = torch.full((3,), float(rank))
    dist.broadcast(b, src=world - 1)
    np.testing.assert_array_equal(b.numpy(), np.full(3, world - 1, np.float32))
    parts = [torch.zeros(2, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(parts, torch.tensor([rank, 10 * rank]))
    assert [p.tolist() for p in parts] == [[r, 10 * r] for r in range(world)]
    out = torch.zeros(world * 2)
    dist.all_gather_into_tensor(out, torch.tensor([rank, rank + 0.5]))
    assert out.tolist() == [v for r in range(world) for v in (r, r + 0.5)]
    scattered = torch.zeros(2)
    dist.reduce_scatter(scattered, [torch.full((2,), float(r + rank)) for r in range(world)])
    np.testing.assert_array_equal(scattered.numpy(), np.full(2, sum(rank + r for r in range(world)), np.float32))
    block = torch.zeros(2)
    dist.reduce_scatter_tensor(block, torch.arange(world * 2, dtype=torch.float32), op=dist.ReduceOp.SUM)
    np.testing.assert_array_equal(block.numpy(), world * np.arange(rank * 2, rank * 2 + 2, dtype=np.float32))
    flags = torch.tensor([rank == 0, False, True])  # bool: sum and max are or, min and product are and
    dist.all_reduce(flags)
    assert flags.tolist() == [True, False, True]
    flags = torch.tensor([rank == 0, True])
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    assert flags.tolist() == [world == 1, True]
    try:
        dist.all_reduce(torch.ones(1).expand(3))
    except ValueError as error:
        assert "cannot be written in place" in str(error), error
    else:
        raise AssertionError("all_reduce into an expanded view did not raise")
    objects = [None] * world
    dist.all_gather_object(objects, {"rank": rank})
    assert objects == [{"rank": r} for r in range(world)]
    message = ["from rank 0" if rank == 0 else None]
    dist.broadcast_object_list(message, src=0)
    assert message == ["from rank 0"]
    dist.barrier()
    assert dist.barrier(async_op=True).wait()
    for bad, text in ((lambda: dist.all_reduce(torch.tensor([1, 2]), op=dist.ReduceOp.AVG), "floating-point"),
                      (lambda: dist.broadcast(b, src=world), "not a rank"),
                      (lambda: dist.init_process_group("mpi"), "twice"),
                      (lambda: dist.all_gather([b], b), "tensor_list has 1")):
        try:
            bad()
        except (ValueError, RuntimeError) as error:
            assert text in str(error), str(error)
        else:
            raise AssertionError(f"expected an error containing {text!r}")
    ok("collectives")


def compiled_all_reduce():
    """dist.all_reduce inside ember.compile is recorded as collective ops and run by the program."""
    rank, world = dist.get_rank(), dist.get_world_size()

    def f(x):
        y = x * 2
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y + 1

    compiled = torch.compile(f)
    for k in range(3):
        x = torch.full((5,), float(rank + k))
        np.testing.assert_allclose(compiled(x).numpy(), 2 * sum(r + k for r in range(world)) + 1.0)
    assert "all_reduce_start" in str(compiled.report)
    ok("compiled_all_reduce")


def main():
    dist.init_process_group(backend="mpi")
    assert dist.is_initialized() and dist.get_world_size() == int(sys.argv[1])
    collectives()
    compiled_all_reduce()
    train_ddp_against_one_process(compiled=False)
    train_ddp_against_one_process(compiled=True)
    no_sync_accumulation()
    unused_parameters()
    buffers_follow_rank_0(compiled=False)
    buffers_follow_rank_0(compiled=True)
    backward_with_inputs()
    unused_output()
    compiled_step_equals_eager(lambda: nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)),
                               "with_buffers", 0.0001)
    compiled_step_equals_eager(TwoBranches4, "two_branches_tiny_buckets", 0.00005)
    rank = dist.get_rank()
    dist.destroy_process_group()
    print(f"ALL OK rank {rank}", flush=True)


if __name__ == "__main__":
    main()
