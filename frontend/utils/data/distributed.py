"""`ember.utils.data.distributed.DistributedSampler`: each rank's share of a dataset.

As torch.utils.data.distributed: the indices (a permutation seeded by `seed + epoch` when
`shuffle`, so every rank draws the same one; call `set_epoch` each epoch) padded by repeating
from the start to a multiple of `num_replicas` (or, with `drop_last`, cut to one), and rank r
takes every num_replicas-th index from position r. Every rank gets the same number of samples,
so the ranks of a DistributedDataParallel job run the same number of steps.
"""
import math

import numpy as np

from ..samplers import Sampler


class DistributedSampler(Sampler):
    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            import ember.distributed as dist
            if not dist.is_initialized():
                raise ValueError("Default process group has not been initialized, please make sure to call "
                                 "init_process_group (DistributedSampler: or pass num_replicas and rank).")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be a positive integer, got {num_replicas!r}")
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.drop_last = drop_last
        if drop_last and len(dataset) % num_replicas != 0:
            self.num_samples = math.ceil((len(dataset) - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(len(dataset) / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.shuffle = shuffle
        self.seed = seed

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            indices = np.random.default_rng(self.seed + self.epoch).permutation(n).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:
            padding = self.total_size - len(indices)
            if padding <= len(indices):
                indices += indices[:padding]
            else:
                indices += (indices * math.ceil(padding / len(indices)))[:padding]
        else:
            indices = indices[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """The epoch the next iteration shuffles for (the same on every rank)."""
        self.epoch = epoch


__all__ = ["DistributedSampler"]
