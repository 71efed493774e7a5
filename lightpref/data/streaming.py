"""Batches tokenised on the fly from a streamed dataset, with a position saved in checkpoints so resume is exact.

For a set too large to download whole (``datasets.load_dataset(..., streaming=True)``): rows are read, normalised and
tokenised as training consumes them, nothing is cached. The state Lightning saves is ``{"epoch": e, "rows": r}``,
the rows of epoch ``e`` read up to the last pair trained on; a restored stream replays epoch ``e`` in the same order
(shuffled with a seeded buffer, ``set_epoch(e)``) and skips its first ``r`` rows without tokenising them, so the next
batch is the one the interrupted run would have trained on.

A stream has no length, so Lightning fetches one batch ahead of the one it trains on (its ``_PrefetchDataFetcher``
with ``prefetch_batches=1``): the state therefore counts the rows up to the batch *before* the last one handed out,
and, once the stream is exhausted, up to the last one. (Iterated by hand, it lags by that one batch until the end.)

>>> from functools import partial
>>> from datasets import Dataset
>>> from lightpref.data.collate import collate_rows
>>> from lightpref.data.chunks import TokenizeJob
>>> from lightpref.testing import tiny_tokenizer
>>> rows = Dataset.from_list([{"prompt": f"q{i}", "chosen": " a", "rejected": " b"} for i in range(5)])
>>> job = TokenizeJob(tiny_tokenizer(), max_length=16, max_prompt_length=8)
>>> collate = partial(collate_rows, pad_token_id=0)
>>> stream = StreamingPairs(rows.to_iterable_dataset(), "rows", job, "auto", False, 2, collate, shuffle=False)
>>> [len(batch.input_ids) for batch in stream], stream.state_dict()
([4, 4, 2], {'epoch': 0, 'rows': 5})
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from lightpref.data.chunks import TokenizeJob, checked_shape
from lightpref.data.collate import pair_to_row
from lightpref.data.formats import NormaliseResult, iter_normalised
from lightpref.data.groups import group_to_row, tokenize_groups
from lightpref.data.tokenize import PairError, tokenize_pairs
from lightpref.data.unpaired import tokenize_unpaired

if TYPE_CHECKING:
    from datasets import IterableDataset

    from lightpref.batch import GroupBatch, PairBatch

SHUFFLE_BUFFER = 10_000  # rows in the streamed shuffle buffer


class StreamingPairs:
    """An iterable of collated batches of ``batch_size`` pairs read from ``dataset`` (an ``IterableDataset``) as it
    streams; stateful in Lightning's sense (``state_dict`` / ``load_state_dict``).

    Args:
        dataset: the streamed rows (``datasets.IterableDataset``).
        name: how errors name the source, e.g. ``"hub dataset 'org/set' split 'train'"``.
        job: the tokenizer and lengths.
        format: the rows' format, or ``"auto"``.
        skip_invalid: skip rows that cannot be normalised instead of raising.
        batch_size: pairs per batch.
        collate: turns a list of stored rows into a batch (:func:`lightpref.data.collate.collate_rows`).
        shuffle: shuffle with a seeded buffer of ``SHUFFLE_BUFFER`` rows, reseeded each epoch.
        seed: the shuffling seed.
    """

    def __init__(
        self,
        dataset: IterableDataset,
        name: str,
        job: TokenizeJob,
        format: str,
        skip_invalid: bool,
        batch_size: int,
        collate: Callable[[list[dict[str, Any]]], PairBatch | GroupBatch],
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.dataset, self.name, self.job, self.format, self.skip_invalid = dataset, name, job, format, skip_invalid
        self.batch_size, self.collate, self.shuffle, self.seed = batch_size, collate, shuffle, seed
        self._trained = {"epoch": 0, "rows": 0}
        self._resume: dict[str, int] | None = None
        self._next_epoch = 0

    def __iter__(self) -> Iterator[PairBatch | GroupBatch]:
        epoch, start = (self._next_epoch, 0) if self._resume is None else (self._resume["epoch"], self._resume["rows"])
        self._resume = None
        self._trained = {"epoch": epoch, "rows": start}
        read = previous = start
        pending: list[tuple[int, dict[str, Any]]] = []  # (rows read up to this pair, its stored row)

        def rows() -> Iterator[tuple[str, Any]]:
            nonlocal read
            for record in islice(self._epoch_rows(epoch), start, None):
                read += 1
                yield f"{self.name}, row {read} (1-based)", record

        examples = iter_normalised(rows(), self.format, self.skip_invalid, NormaliseResult())
        while True:
            group = []
            for location, example in islice(examples, self.batch_size):
                group.append((read, location, example))
            if group:
                pending += self._tokenize(group)
            while len(pending) >= self.batch_size or (pending and not group):
                batch, pending = pending[: self.batch_size], pending[self.batch_size :]
                self._trained = {"epoch": epoch, "rows": previous}  # the batch before this one is being trained on
                previous = batch[-1][0]
                yield self.collate([row for _, row in batch])
            if not group:
                break
        self._trained = {"epoch": epoch, "rows": previous}
        self._next_epoch = epoch + 1

    def _epoch_rows(self, epoch: int) -> IterableDataset:
        if not self.shuffle:
            return self.dataset
        shuffled = self.dataset.shuffle(seed=self.seed, buffer_size=SHUFFLE_BUFFER)
        shuffled.set_epoch(epoch)
        return shuffled

    def _tokenize(self, group: list[tuple[int, str, Any]]) -> list[tuple[int, dict[str, Any]]]:
        job = self.job
        examples = checked_shape([(location, example) for _, location, example in group], job.ranked, job.unpaired)
        try:
            if job.unpaired:
                rows = tokenize_unpaired(examples, job.tokenizer, job.max_length, job.max_prompt_length)
            elif job.ranked:
                groups = tokenize_groups(examples, job.tokenizer, job.max_length, job.max_prompt_length)
                rows = [None if kept is None else group_to_row(kept) for kept in groups]
            else:
                pairs = tokenize_pairs(examples, job.tokenizer, job.max_length, job.max_prompt_length, job.views)
                rows = [None if pair is None else pair_to_row(pair) for pair in pairs]
        except PairError as error:
            raise ValueError(f"{group[error.index][1]}: {error}") from None
        return [(read, row) for (read, _, _), row in zip(group, rows, strict=True) if row is not None]

    def state_dict(self) -> dict[str, int]:
        return dict(self._resume or self._trained)

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = {"epoch": int(state_dict["epoch"]), "rows": int(state_dict["rows"])}
