"""A training DataLoader whose order depends only on (seed, epoch) and whose position is saved in checkpoints.

Lightning 2.6 restores the epoch of a resumed run, but a plain map-style DataLoader restarts that epoch from its
first batch (and a ``RandomSampler`` with a seeded generator replays epoch 0's order in every resumed epoch).
Here each epoch's order is ``randperm(n)`` seeded with ``seed + epoch`` — the permutation ``DistributedSampler``
uses, so one process with batch ``k·b`` sees the same global batches as ``k`` processes with batch ``b`` — and the
DataLoader reports how many batches of the epoch it has handed out: Lightning saves that (``state_dict``) in every
checkpoint and gives it back (``load_state_dict``) on resume, and the resumed epoch starts at the next batch.

>>> loader = ResumableDataLoader(list(range(6)), batch_size=2, sampler=ResumableSampler(range(6), seed=0))
>>> first = [batch.tolist() for batch in loader]
>>> resumed = ResumableDataLoader(list(range(6)), batch_size=2, sampler=ResumableSampler(range(6), seed=0))
>>> resumed.load_state_dict({"epoch": 0, "batches": 1})
>>> [batch.tolist() for batch in resumed] == first[1:]
True
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from itertools import islice
from typing import Any

from torch.utils.data import DataLoader, DistributedSampler


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` (one process by default) that can start its next pass ``start`` samples in.

    Being a ``DistributedSampler``, Lightning neither replaces it under DDP/FSDP nor forgets to call ``set_epoch``.
    """

    def __init__(
        self, dataset: Sized, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return islice(super().__iter__(), self.start, None)  # no copy of the epoch's order (1M pairs: 8 MB)


class PositionedDataLoader(DataLoader):
    """A DataLoader that is stateful in Lightning's sense (``state_dict`` / ``load_state_dict``): its state is
    ``{"epoch": e, "batches": batches of epoch e handed out}``, and a restored one starts at the next batch.

    Lightning fetches a sized DataLoader's batches one at a time, so when a checkpoint is written after a batch the
    count is exactly the batches trained on. Subclasses say where the epoch is read and how to skip batches.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._position = {"epoch": 0, "batches": 0}
        self._resume: dict[str, int] | None = None

    def _epoch(self) -> int:
        raise NotImplementedError

    def _start_at(self, batches: int) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Any]:  # a generator: the epoch is read at the first batch, after set_epoch()
        epoch, start = self._epoch(), 0
        if self._resume is not None:
            if self._resume["epoch"] == epoch and self._resume["batches"] < len(self):
                start = self._resume["batches"]
            self._resume = None
        self._start_at(start)
        self._position = {"epoch": epoch, "batches": start}
        for batch in super().__iter__():
            self._position["batches"] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return dict(self._position)

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = {"epoch": int(state_dict["epoch"]), "batches": int(state_dict["batches"])}
        self._position = dict(self._resume)


class ResumableDataLoader(PositionedDataLoader):
    """A :class:`PositionedDataLoader` over a :class:`ResumableSampler`."""

    sampler: ResumableSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError(f"ResumableDataLoader needs a ResumableSampler, got {type(self.sampler).__name__}")

    def _epoch(self) -> int:
        return self.sampler.epoch

    def _start_at(self, batches: int) -> None:
        self.sampler.start = batches * (self.batch_size or 1)


def resumable(loader: DataLoader, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0) -> DataLoader:
    """The same loader (dataset, batch size, collation, workers) with a resumable, per-epoch-seeded order."""
    sampler = ResumableSampler(loader.dataset, shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank)
    return ResumableDataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        persistent_workers=loader.persistent_workers,
    )
