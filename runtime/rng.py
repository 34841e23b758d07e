"""Every random number dslc draws is a function of the run's seed and where it is drawn.

A dropout mask depends on (seed, step, node), the data order of an epoch on (seed, epoch) and
a parameter's initial value on (seed, name). Nothing carries hidden generator state from one
step to the next, so the same seed gives the same run bit for bit, and a run resumed from a
checkpoint (which records seed and step) continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import numpy as np

DATA = 0  # stream tags keep the (seed, ...) tuples of different uses apart
STEP = 1


def _key(seed: int) -> int:
    return int(seed) & 0xFFFFFFFFFFFFFFFF


def step_rng(xp, seed: int, step: int, node: int):
    """The generator a random op (`dropout_mask`) at graph node `node` uses at `step`."""
    words = [_key(seed), STEP, int(step), int(node)]
    if xp is np:
        return np.random.default_rng(words)
    state = np.random.SeedSequence(words).generate_state(1, np.uint64)[0]
    return xp.random.default_rng(int(state))


def data_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator that shuffles the training data in `epoch` (on the host)."""
    return np.random.default_rng([_key(seed), DATA, int(epoch)])


def split_seed(seed: int) -> int:
    """The seed of the train/validation split: fixed for the whole run."""
    return int(np.random.SeedSequence([_key(seed), DATA]).generate_state(1)[0])
