"""Which cached pairs each split serves: a seeded validation hold-out, a mixture's seeded choice, and the counts.

>>> positions, val, mixed = training_positions(10, [{"pairs": 10}], [], val_fraction=0.2, seed=0)
>>> len(positions), len(val), mixed
(8, 2, None)
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset as TorchDataset

from lightpref.data import cache
from lightpref.data.mixture import DataSource, mixture_indices

if TYPE_CHECKING:
    from datasets import Dataset


def split_indices(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded random split of ``range(count)`` into (train, validation) indices, validation ~``fraction``.

    >>> train, val = split_indices(10, 0.2, seed=0)
    >>> len(train), len(val), sorted(train + val) == list(range(10))
    (8, 2, True)
    """
    if count < 2:
        raise ValueError(f"`val_fraction` needs at least 2 training pairs to split, got {count}")
    order = list(range(count))
    random.Random(seed).shuffle(order)
    size = min(max(1, round(count * fraction)), count - 1)
    return sorted(order[size:]), sorted(order[:size])


def training_positions(
    count: int,
    source_counts: Sequence[Mapping[str, Any]],
    sources: Sequence[DataSource],
    val_fraction: float,
    seed: int,
) -> tuple[Sequence[int], list[int] | None, list[int] | None]:
    """The positions of the ``count`` cached training pairs that training uses (in order), those held out for
    validation (``None`` without ``val_fraction``) and the pairs each mixture source contributes (``None`` unless a
    source is weighted or capped). ``source_counts`` are the cache's per-source counts: each source's pairs are a
    contiguous run of the cache, in order.

    >>> training_positions(4, [{"pairs": 2}, {"pairs": 2}], [DataSource(cap=1), DataSource()], 0.0, seed=0)
    ([1, 2, 3], None, [1, 2])
    """
    positions: Sequence[int] = range(count)
    val_positions = None
    if val_fraction:
        positions, val_positions = split_indices(count, val_fraction, seed)
    if not any(source.mixes for source in sources):
        return positions, val_positions, None
    ends = list(accumulate(counts["pairs"] for counts in source_counts))
    groups = [positions[bisect_left(positions, end - counts["pairs"]) : bisect_left(positions, end)]
              for end, counts in zip(ends, source_counts, strict=True)]
    chosen = mixture_indices(groups, sources, seed)
    return [i for group in chosen for i in group], val_positions, [len(group) for group in chosen]


def cached_splits(
    directory: Path, stats: Mapping[str, Mapping[str, Any]], records: str, sources: Sequence[DataSource],
    val_fraction: float, seed: int,
) -> tuple[Dataset, Dataset | None, list[int] | None]:
    """The training and validation datasets a run uses from the cache in ``directory`` (the validation hold-out and a
    mixture's choice applied, their positions kept in memory so the cache stays read-only), and the pairs each
    mixture source contributes (``None`` unless a source is weighted or capped). No training ``records`` left is an
    error saying why, from the cache's counts ``stats``."""
    train, val = cache.read_split(directory, "train"), cache.read_split(directory, "val")
    train_stats = stats["train"]
    if train is None:
        raise ValueError(
            f"no training {records} left: {train_stats['skipped_invalid']} invalid records skipped, "
            f"{train_stats['dropped_by_truncation']} {records} dropped by truncation; check the data, or raise "
            "`max_length`"
        )
    positions, val_positions, mixed = training_positions(len(train), train_stats["sources"], sources, val_fraction,
                                                         seed)
    if val_positions is not None:
        val = train.select(val_positions, keep_in_memory=True)
    if positions != range(len(train)):
        train = train.select(positions, keep_in_memory=True)
    return train, val, mixed


def log_counts(stats: Mapping[str, Mapping[str, Any]], mixed: Sequence[int] | None, from_cache: bool = False,
               records: str = "pairs") -> None:
    """Log each split's skipped records and each source's counts (with its share of a mixture, if any);
    ``from_cache``: the records were read from an earlier run's cache, not tokenised now; ``records``: what they
    are called (``"pairs"``, ``"ranked groups"``)."""
    done = "read from the cache" if from_cache else "tokenised"
    for split, counts in stats.items():
        if counts["skipped_invalid"]:
            rank_zero_info(f"lightpref data: skipped {counts['skipped_invalid']} invalid {split} records")
        for number, source in enumerate(counts["sources"]):
            if source["pairs"] or source["dropped_by_truncation"] or source["skipped_invalid"]:
                used = f" ({mixed[number]} in the mixture)" if split == "train" and mixed is not None else ""
                rank_zero_info(
                    f"lightpref data: {split} source {source['name']!r}: {source['pairs']} {records} {done}{used}, "
                    f"{source['skipped_invalid']} invalid rows skipped, {source['dropped_by_truncation']} {records} "
                    f"dropped by truncation, {source['prompts_truncated']} prompts and "
                    f"{source['completions_truncated']} completions truncated, {source['template_fallbacks']} "
                    f"chat-template fallbacks, {source['split_fallbacks']} tokenisation-split fallbacks"
                )


class Rows(Protocol):
    """What :class:`IndexedRows` reads: a split's stored rows by position (a ``datasets.Dataset``, or a list)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


class IndexedRows(TorchDataset):
    """A split whose rows carry their position in it, so batches know which pairs they hold.

    >>> IndexedRows([{"a": 1}, {"a": 2}])[1]
    {'a': 2, 'index': 1}
    """

    def __init__(self, dataset: Rows) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], "index": index}
