"""Mixtures: several training sources, each with its own format and a weight or a cap on the pairs it contributes.

Every source is tokenised whole into the cache once; the mixture is a seeded choice of cached pairs made when the
data is set up, so changing a weight or a cap does not tokenise again. A source of ``n`` pairs contributes
``round(weight * n)`` of them, at most ``cap``: every pair ``k`` times for the whole part ``k`` of that count, and a
seeded sample without repetition for the rest.

>>> mixture_indices([range(0, 4), range(4, 6)], [DataSource(weight=0.5), DataSource(weight=2.0)], seed=0)
[[1, 2], [4, 4, 5, 5]]
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from lightpref.data.example import FORMATS, Format


@dataclass
class DataSource:
    """One source of a mixture (``data.sources`` in a config): local files or a Hub dataset split.

    Args:
        files: ``.jsonl``, ``.json``, ``.parquet`` or ``.csv`` file(s) or glob pattern(s).
        hub_dataset: a Hugging Face Hub dataset name (instead of ``files``).
        hub_config: the Hub dataset's configuration (subset).
        split: the Hub split to read.
        format: this source's format, or ``"auto"`` to detect it (per file) from the first valid row.
        weight: the source contributes ``round(weight * its pairs)`` pairs (2.0 repeats each pair twice; 0.5 keeps
            a seeded half).
        cap: the most pairs the source contributes (a seeded sample when it has more).
        name: how logs and ``stats`` name the source; by default its files or Hub name.
    """

    files: str | list[str] | None = None
    hub_dataset: str | None = None
    hub_config: str | None = None
    split: str = "train"
    format: Format = "auto"
    weight: float = 1.0
    cap: int | None = None
    name: str | None = None

    def check(self, key: str) -> None:
        """Reject an entry that names no single source or has a bad weight, cap or format; ``key`` names it."""
        if (self.files is None) == (self.hub_dataset is None):
            raise ValueError(f"`{key}` must give exactly one of `files` or `hub_dataset`")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not self.weight > 0:
            raise ValueError(f"`{key}.weight` must be a number > 0, got {self.weight!r}")
        if self.cap is not None and (isinstance(self.cap, bool) or not isinstance(self.cap, int) or self.cap < 1):
            raise ValueError(f"`{key}.cap` must be an integer >= 1, got {self.cap!r}")
        if self.format not in FORMATS:
            raise ValueError(f"`{key}.format` must be one of {list(FORMATS)}, got {self.format!r}")

    @property
    def mixes(self) -> bool:
        """Whether the source's weight or cap changes its pairs."""
        return self.weight != 1 or self.cap is not None

    def label(self) -> str:
        if self.name:
            return self.name
        if self.hub_dataset is not None:
            return f"{self.hub_dataset}:{self.split}"
        return self.files if isinstance(self.files, str) else ", ".join(self.files or [])


def source_count(available: int, source: DataSource) -> int:
    """How many pairs a source of ``available`` pairs contributes.

    >>> source_count(10, DataSource(weight=1.5)), source_count(10, DataSource(weight=1.5, cap=12))
    (15, 12)
    """
    count = round(source.weight * available)
    return count if source.cap is None else min(count, source.cap)


def mixture_indices(groups: Sequence[Sequence[int]], sources: Sequence[DataSource], seed: int) -> list[list[int]]:
    """The positions of each source's pairs in the mixture: for source ``i`` (``groups[i]`` are its pairs'
    positions), its :func:`source_count` of them, repeated whole and sampled (seeded by ``seed`` and ``i``) for the
    rest; sorted."""
    chosen: list[list[int]] = []
    for index, (positions, source) in enumerate(zip(groups, sources, strict=True)):
        positions = list(positions)
        if not positions:
            chosen.append([])
            continue
        count = source_count(len(positions), source)
        repeats, rest = divmod(count, len(positions))
        sample = random.Random(f"{seed}/{index}").sample(positions, rest)
        chosen.append(sorted(positions * repeats + sample))
    return chosen
