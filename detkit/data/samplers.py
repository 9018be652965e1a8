"""A training sampler whose order is a function of (seed, epoch), resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import RandomSampler


class EpochSeededSampler(RandomSampler):
    """Shuffles like ``RandomSampler`` but draws epoch ``e``'s permutation from its own generator
    seeded with ``(seed, e)``, never from torch's global RNG, so the order of any epoch can be
    rebuilt after a restart; :meth:`skip_batches` then resumes in the middle of it.

    Lightning calls :meth:`set_epoch` before each training epoch. Under DDP Lightning swaps a
    ``RandomSampler`` (this subclass included) for its ``DistributedSampler``, which is also
    seeded per epoch but cannot skip: there a mid-epoch resume restarts the epoch's order.

    Args:
        data_source: the dataset (only its length is used).
        seed: base seed (e.g. ``torch.initial_seed()`` after ``seed_everything``).
    """

    def __init__(self, data_source: Sized, seed: int) -> None:
        super().__init__(data_source)
        self.seed = seed
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_batches(self, batches: int, batch_size: int) -> None:
        """Leave out the first ``batches * batch_size`` indices of the next iteration only (the
        batches a resumed run already trained on in this epoch)."""
        if batches < 0 or batch_size < 1:
            raise ValueError(f"need batches >= 0 and batch_size >= 1, got {batches}, {batch_size}")
        self._skip = batches * batch_size

    def permutation(self, epoch: int) -> list[int]:
        """Epoch ``epoch``'s full order of dataset indices."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.data_source), generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        yield from self.permutation(self.epoch)[skip:]

    def __len__(self) -> int:
        return len(self.data_source)
