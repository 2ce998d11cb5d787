"""Random number generation: `Generator` and the default generator behind `ember.manual_seed`.

Every random op (rand, randn, dropout masks, init, shuffling) draws from a Generator, so one
`manual_seed` makes a whole program reproducible.
"""
import json

import numpy as np


class Generator:
    """A seeded stream of random numbers (numpy's PCG64 underneath)."""

    def __init__(self, device="cpu"):
        self.device = device
        self._seed = 67280421310721  # PyTorch's default seed
        self.np = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed):
        self._seed = int(seed)
        self.np = np.random.Generator(np.random.PCG64(self._seed & 0xFFFFFFFFFFFFFFFF))
        return self

    def seed(self):
        new = int(np.random.SeedSequence().entropy) & 0x7FFFFFFFFFFFFFFF
        self.manual_seed(new)
        return new

    def initial_seed(self):
        return self._seed

    def get_state(self):
        from .creation import tensor
        from ember import dtypes
        raw = json.dumps(self.np.bit_generator.state).encode()
        return tensor(np.frombuffer(raw, dtype=np.uint8).copy(), dtype=dtypes.uint8)

    def set_state(self, state):
        self.np.bit_generator.state = json.loads(bytes(np.asarray(state._data, dtype=np.uint8)).decode())
        return self


default_generator = Generator()


def generator_or_default(generator):
    return (generator or default_generator).np


def manual_seed(seed):
    """Seed the default generator: every random op and initialisation draws from it."""
    default_generator.manual_seed(seed)
    return default_generator


def seed():
    return default_generator.seed()


def initial_seed():
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(state):
    default_generator.set_state(state)
