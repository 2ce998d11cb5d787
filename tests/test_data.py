"""ember.utils.data: datasets, samplers, collation, and the DataLoader with and without workers."""
import collections
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import ember
from ember.frontend.utils import data
from ember.frontend.utils.data import (DataLoader, Dataset, IterableDataset, TensorDataset, Subset, ConcatDataset,
                                       random_split, SequentialSampler, RandomSampler, SubsetRandomSampler,
                                       WeightedRandomSampler, BatchSampler, default_collate, default_convert,
                                       get_worker_info)


class Squares(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return ember.tensor([float(index), float(index) ** 2]), index


def batches_as_lists(loader):
    return [(x.tolist(), y.tolist()) for x, y in loader]


# ----------------------------------------------------------------------------- datasets and samplers
def test_tensor_dataset_rows_and_length_mismatch():
    ds = TensorDataset(ember.arange(6).reshape(3, 2), ember.tensor([1.0, 2.0, 3.0]))
    assert len(ds) == 3
    row, label = ds[1]
    assert row.tolist() == [2, 3] and label.item() == 2.0
    with pytest.raises(ValueError, match="size mismatch"):
        TensorDataset(ember.zeros(3), ember.zeros(4))


def test_subset_concat_and_add():
    ds = Squares(5)
    sub = Subset(ds, [4, 0])
    assert len(sub) == 2 and sub[0][1] == 4 and sub[1][1] == 0
    both = ds + Squares(3)
    assert isinstance(both, ConcatDataset) and len(both) == 8
    assert [both[i][1] for i in range(8)] == [0, 1, 2, 3, 4, 0, 1, 2]
    assert both[-1][1] == 2
    with pytest.raises(IndexError):
        both[8]


def test_random_split_counts_and_fractions_are_disjoint_and_cover():
    parts = random_split(range(10), [3, 7], generator=ember.Generator().manual_seed(1))
    assert [len(p) for p in parts] == [3, 7]
    seen = [p[i] for p in parts for i in range(len(p))]
    assert sorted(seen) == list(range(10))
    # fractions: floor then the remainder round-robin from the first split
    parts = random_split(range(11), [0.5, 0.3, 0.2])
    assert [len(p) for p in parts] == [6, 3, 2]
    assert sorted(i for p in parts for i in p.indices) == list(range(11))
    again = random_split(range(10), [3, 7], generator=ember.Generator().manual_seed(1))
    assert again[0].indices == random_split(range(10), [3, 7], generator=ember.Generator().manual_seed(1))[0].indices
    with pytest.raises(ValueError, match="sum of input lengths"):
        random_split(range(10), [3, 3])


def test_samplers():
    assert list(SequentialSampler(range(4))) == [0, 1, 2, 3]
    ember.manual_seed(3)
    first = list(RandomSampler(range(20)))
    ember.manual_seed(3)
    assert list(RandomSampler(range(20))) == first and sorted(first) == list(range(20))
    drawn = list(RandomSampler(range(3), replacement=True, num_samples=50))
    assert len(drawn) == 50 and set(drawn) <= {0, 1, 2}
    longer = list(RandomSampler(range(4), num_samples=10))
    assert sorted(longer[:4]) == sorted(longer[4:8]) == [0, 1, 2, 3] and len(longer) == 10
    assert sorted(SubsetRandomSampler([10, 20, 30])) == [10, 20, 30]
    weighted = list(WeightedRandomSampler([0.0, 1.0, 3.0], 200))
    assert len(weighted) == 200 and 0 not in weighted and weighted.count(2) > weighted.count(1)
    assert sorted(WeightedRandomSampler([1, 1, 1, 0], 3, replacement=False)) == [0, 1, 2]
    assert list(BatchSampler(range(7), 3, drop_last=False)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert len(BatchSampler(range(7), 3, drop_last=True)) == 2
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        BatchSampler(range(7), 0, False)


# ----------------------------------------------------------------------------- collation
def test_default_collate_types():
    Point = collections.namedtuple("Point", "x y")
    batch = [(np.full((2,), i, np.float32), i, i * 0.5, "s%d" % i, {"k": i, "t": ember.ones(3) * i}, Point(i, -i))
             for i in range(3)]
    arrays, ints, floats, strings, dicts, points = default_collate(batch)
    assert arrays.dtype is ember.float32 and arrays.shape == (3, 2)
    assert ints.dtype is ember.int64 and ints.tolist() == [0, 1, 2]
    assert floats.dtype is ember.float64 and floats.tolist() == [0.0, 0.5, 1.0]
    assert strings == ["s0", "s1", "s2"]
    assert dicts["k"].tolist() == [0, 1, 2] and dicts["t"].shape == (3, 3)
    assert isinstance(points, Point) and points.y.tolist() == [0, -1, -2]
    assert default_collate([True, False]).dtype is ember.bool
    assert default_collate([np.float32(1.5), np.float32(2)]).dtype is ember.float32
    ordered = default_collate([collections.OrderedDict(b=1, a=2)] * 2)
    assert isinstance(ordered, collections.OrderedDict) and list(ordered) == ["b", "a"]
    lists = default_collate([[1, 2], [3, 4]])
    assert isinstance(lists, list) and lists[0].tolist() == [1, 3]


def test_default_collate_errors_name_the_problem():
    with pytest.raises(RuntimeError, match=r"equal size.*\[2\] at entry 0 and \[3\] at entry 1"):
        default_collate([ember.zeros(2), ember.zeros(3)])
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="found <class 'object'>"):
        default_collate([object(), object()])


def test_default_collate_keeps_autograd_through_stack():
    w = ember.ones(2, requires_grad=True)
    batch = default_collate([w * 2, w * 3])
    batch.sum().backward()
    assert w.grad.tolist() == [5.0, 5.0]


def test_default_convert():
    converted = default_convert((np.arange(3), "a", {"x": np.float64(2.0)}))
    assert isinstance(converted, list) and converted[0].tolist() == [0, 1, 2] and converted[1] == "a"
    assert converted[2]["x"].dtype is ember.float64


# ----------------------------------------------------------------------------- single-process loading
def test_loader_order_len_and_drop_last():
    loader = DataLoader(Squares(10), batch_size=4)
    assert len(loader) == 3
    batches = batches_as_lists(loader)
    assert [b[1] for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[1][0][1] == [5.0, 25.0]
    dropped = DataLoader(Squares(10), batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [b[1] for b in batches_as_lists(dropped)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    single = list(DataLoader(Squares(3), batch_size=None))
    assert single[2][1] == 2 and single[2][0].shape == (2,)


def test_shuffle_is_reproducible_with_manual_seed_and_generator():
    loader = DataLoader(Squares(12), batch_size=5, shuffle=True)
    ember.manual_seed(7)
    epoch1, epoch2 = batches_as_lists(loader), batches_as_lists(loader)
    ember.manual_seed(7)
    assert batches_as_lists(loader) == epoch1 and batches_as_lists(loader) == epoch2
    assert epoch1 != epoch2 and sorted(i for b in epoch1 for i in b[1]) == list(range(12))
    own = DataLoader(Squares(12), batch_size=5, shuffle=True, generator=ember.Generator().manual_seed(5))
    other = DataLoader(Squares(12), batch_size=5, shuffle=True, generator=ember.Generator().manual_seed(5))
    assert batches_as_lists(own) == batches_as_lists(other)


def test_loader_argument_errors():
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(Squares(3), sampler=SequentialSampler(range(3)), shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        DataLoader(Squares(3), batch_size=2, batch_sampler=BatchSampler(range(3), 2, False))
    with pytest.raises(ValueError, match="prefetch_factor"):
        DataLoader(Squares(3), prefetch_factor=2)
    with pytest.raises(ValueError, match="expected unspecified shuffle option"):
        DataLoader(CountingStream(4), shuffle=True)


def test_custom_batch_sampler_and_collate_fn():
    loader = DataLoader(Squares(5), batch_sampler=[[4, 0], [2]], collate_fn=lambda samples: [s[1] for s in samples])
    assert list(loader) == [[4, 0], [2]] and len(loader) == 2


class CountingStream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return iter(range(start, self.n, step))


def test_iterable_dataset_batches_and_drop_last():
    assert [b.tolist() for b in DataLoader(CountingStream(7), batch_size=3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [b.tolist() for b in DataLoader(CountingStream(7), batch_size=3, drop_last=True)] == [[0, 1, 2], [3, 4, 5]]
    assert len(DataLoader(CountingStream(7), batch_size=3)) == 3


# ----------------------------------------------------------------------------- worker processes
def test_two_workers_yield_the_same_batches_as_none():
    loader0 = DataLoader(Squares(23), batch_size=4, shuffle=True)
    loader2 = DataLoader(Squares(23), batch_size=4, shuffle=True, num_workers=2)
    ember.manual_seed(11)
    expected = batches_as_lists(loader0) + batches_as_lists(loader0)
    ember.manual_seed(11)
    assert batches_as_lists(loader2) + batches_as_lists(loader2) == expected
    assert len(expected) == 12


class Faulty(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        if index == 5:
            raise ValueError(f"sample {index} is broken")
        return index


def test_worker_exception_carries_the_worker_traceback():
    loader = DataLoader(Faulty(), batch_size=2, num_workers=2)
    iterator = iter(loader)
    assert next(iterator).tolist() == [0, 1] and next(iterator).tolist() == [2, 3]
    with pytest.raises(ValueError) as caught:
        next(iterator)
    message = str(caught.value)
    assert "Caught ValueError in DataLoader worker process 0" in message
    assert "Original Traceback (most recent call last)" in message
    assert 'raise ValueError(f"sample {index} is broken")' in message and "sample 5 is broken" in message
    assert next(iterator).tolist() == [6, 7]  # the loader goes on after an error, as torch's does


INIT_CALLS = []


def record_worker_init(worker_id):
    INIT_CALLS.append(worker_id)  # in the worker's own copy of this module


class WorkerReport(Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, index):
        info = get_worker_info()
        return {"index": index, "worker": info.id, "workers": info.num_workers, "seed": info.seed,
                "init_calls": list(INIT_CALLS), "draw": float(ember.rand(1).item()),
                "numpy_draw": float(np.random.rand())}


def test_worker_init_fn_worker_info_and_seeding():
    assert get_worker_info() is None
    ember.manual_seed(2)
    loader = DataLoader(WorkerReport(), batch_size=1, num_workers=2, worker_init_fn=record_worker_init)
    reports = [{key: value[0] for key, value in batch.items()} for batch in loader]
    assert [int(r["index"]) for r in reports] == list(range(6))
    assert [int(r["worker"]) for r in reports] == [0, 1, 0, 1, 0, 1]  # round robin
    assert all(int(r["workers"]) == 2 for r in reports)
    for worker in (0, 1):
        mine = [r for r in reports if int(r["worker"]) == worker]
        assert all([int(c) for c in r["init_calls"]] == [worker] for r in mine)
        seeds = {int(r["seed"]) for r in mine}
        assert len(seeds) == 1
        # each worker's generators start from base_seed + worker_id
        generator = ember.Generator().manual_seed(seeds.pop())
        expected = [float(ember.rand(1, generator=generator).item()) for _ in mine]
        assert [float(r["draw"]) for r in mine] == pytest.approx(expected)
    assert int(reports[1]["seed"]) == int(reports[0]["seed"]) + 1
    assert float(reports[0]["numpy_draw"]) != float(reports[1]["numpy_draw"])
    assert INIT_CALLS == []  # never called in the main process


def test_iterable_dataset_sharded_across_workers():
    loader = DataLoader(CountingStream(9), batch_size=2, num_workers=2)
    batches = [b.tolist() for b in loader]
    # worker 0 reads 0,2,4,6,8 and worker 1 reads 1,3,5,7; batches alternate between them
    assert batches == [[0, 2], [1, 3], [4, 6], [5, 7], [8]]


def test_persistent_workers_serve_several_epochs():
    loader = DataLoader(Squares(9), batch_size=4, num_workers=2, persistent_workers=True)
    first = batches_as_lists(loader)
    iterator = loader._iterator
    abandoned = iter(loader)
    next(abandoned)  # an epoch left half-way must not leak batches into the next one
    assert batches_as_lists(loader) == first and loader._iterator is iterator
    assert all(worker.is_alive() for worker in iterator._workers)
    iterator._shutdown_workers()
    assert not any(worker.is_alive() for worker in iterator._workers)


def test_abandoned_iterator_shuts_its_workers_down():
    iterator = iter(DataLoader(Squares(100), batch_size=2, num_workers=2))
    next(iterator)
    workers = list(iterator._workers)
    del iterator
    deadline = time.monotonic() + 5
    while any(worker.is_alive() for worker in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(worker.is_alive() for worker in workers)


class Crashing(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        os._exit(3)


def test_dead_worker_is_reported_not_waited_for():
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid \d+ exit code 3.*exited unexpectedly"):
        list(DataLoader(Crashing(), batch_size=2, num_workers=1))


class Slow(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        time.sleep(3)
        return index


def test_timeout_raises():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="DataLoader timed out after 0.3 seconds"):
        list(DataLoader(Slow(), num_workers=1, timeout=0.3))
    assert time.monotonic() - start < 3


def test_interpreter_exits_with_a_live_iterator():
    script = textwrap.dedent("""
        import ember
        from ember.utils.data import DataLoader, TensorDataset
        loader = DataLoader(TensorDataset(ember.arange(1000)), batch_size=2, num_workers=2)
        iterator = iter(loader)
        next(iterator)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_data_module_is_the_public_namespace():
    assert ember.utils.data is data
    assert data.DataLoader is DataLoader and "random_split" in data.__all__
