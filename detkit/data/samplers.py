"""A training sampler whose order is a function of (seed, epoch), resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import RandomSampler


class EpochSeededSampler(RandomSampler):
    """Shuffles like ``RandomSampler`` but draws epoch ``e``'s permutation from its own generator
    seeded with ``(seed, e)``, never from torch's global RNG, so the order of any epoch can be
    rebuilt after a restart; :meth:`resume_at` then resumes in the middle of it.

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
        self._resume: tuple[int, int] | None = None  # (epoch, indices to skip) for the next pass

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches: int, batch_size: int) -> None:
        """Make the next iteration (only) epoch ``epoch``'s order without its first ``batches``
        batches of ``batch_size`` (those a resumed run already trained on); this wins over a
        :meth:`set_epoch` in between."""
        if epoch < 0 or batches < 0 or batch_size < 1:
            raise ValueError(f"need epoch >= 0, batches >= 0 and batch_size >= 1, got {epoch}, "
                             f"{batches}, {batch_size}")
        self._resume = (epoch, batches * batch_size)

    def permutation(self, epoch: int) -> list[int]:
        """Epoch ``epoch``'s full order of dataset indices."""
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return torch.randperm(len(self.data_source), generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        (epoch, skip), self._resume = self._resume or (self.epoch, 0), None
        yield from self.permutation(epoch)[skip:]

    def __len__(self) -> int:
        return len(self.data_source)
