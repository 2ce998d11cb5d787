"""What one DataLoader epoch runs: fetchers (indices -> collated batch, or the next items of an
IterableDataset) and the single-process iterator; the worker-process iterator builds on the same
base in `worker_pool.py`.

Every iterator draws a base seed from the loader's generator when it starts, whether or not it
uses workers, so the sampler sees the same random stream (and yields the same batches) either way.
"""
from ..random import generator_or_default


class MapDatasetFetcher:
    """Fetch the samples at a batch of indices (or one index without auto-collation)."""

    def __init__(self, dataset, auto_collation, collate_fn, drop_last):
        self.dataset = dataset
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn

    def fetch(self, indices):
        if not self.auto_collation:
            return self.collate_fn(self.dataset[indices])
        if callable(getattr(self.dataset, "__getitems__", None)):
            samples = self.dataset.__getitems__(indices)
        else:
            samples = [self.dataset[index] for index in indices]
        return self.collate_fn(samples)


class IterableDatasetFetcher:
    """Take the next `len(batch)` items of an IterableDataset's iterator; raises StopIteration
    when it is exhausted (or when only a short batch is left and `drop_last` is set)."""

    def __init__(self, dataset, auto_collation, collate_fn, drop_last):
        self.iterator = iter(dataset)
        self.auto_collation = auto_collation
        self.collate_fn = collate_fn
        self.drop_last = drop_last
        self.ended = False

    def fetch(self, batch):
        if self.ended:
            raise StopIteration
        if not self.auto_collation:
            return self.collate_fn(next(self.iterator))
        samples = []
        for _ in batch:
            try:
                samples.append(next(self.iterator))
            except StopIteration:
                self.ended = True
                break
        if not samples or (self.drop_last and len(samples) < len(batch)):
            raise StopIteration
        return self.collate_fn(samples)


def create_fetcher(is_iterable, dataset, auto_collation, collate_fn, drop_last):
    fetcher_class = IterableDatasetFetcher if is_iterable else MapDatasetFetcher
    return fetcher_class(dataset, auto_collation, collate_fn, drop_last)


class InfiniteConstantSampler:
    """The index stream for an IterableDataset: None forever (the dataset decides when to stop)."""

    def __iter__(self):
        while True:
            yield None


class LoaderIterator:
    """One pass over a DataLoader. Subclasses define `_next_data()`."""

    def __init__(self, loader):
        self._dataset = loader.dataset
        self._is_iterable = loader._is_iterable
        self._auto_collation = loader._auto_collation
        self._drop_last = loader.drop_last
        self._index_sampler = loader._index_sampler
        self._collate_fn = loader.collate_fn
        self._timeout = loader.timeout
        self._sampler_iter = iter(self._index_sampler)
        # drawn in every mode, so workers or not, the sampler sees the same random stream after it
        self._base_seed = int(generator_or_default(loader.generator).integers(0, 2 ** 62))
        self._num_yielded = 0
        self._loader_length = loader.__len__

    def _reset(self, loader):
        """Start a new epoch (persistent workers reuse the iterator)."""
        self._sampler_iter = iter(self._index_sampler)
        self._num_yielded = 0

    def __iter__(self):
        return self

    def __next__(self):
        data = self._next_data()
        self._num_yielded += 1
        return data

    def __len__(self):
        return self._loader_length()

    def _next_data(self):
        raise NotImplementedError


class SingleProcessIterator(LoaderIterator):
    """Load every batch in the calling process (num_workers=0)."""

    def __init__(self, loader):
        super().__init__(loader)
        self._fetcher = create_fetcher(self._is_iterable, self._dataset, self._auto_collation,
                                       self._collate_fn, self._drop_last)

    def _next_data(self):
        return self._fetcher.fetch(next(self._sampler_iter))
