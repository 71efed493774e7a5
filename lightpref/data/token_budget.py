"""Batches formed by a token budget instead of a fixed number of pairs.

With the shared-prompt, padding-free forward (:mod:`lightpref.training.packing`) a batch costs about as much as its
tokens, so a fixed token budget gives steps of even cost whatever the pairs' lengths: many short pairs or a few long
ones. A pair's tokens are counted as that forward runs them, ``prompt + chosen + rejected`` (:func:`pair_tokens`).

The batch sampler takes the pairs in the order of an index sampler (sequential, or seeded per epoch) and groups
them greedily up to the budget. With several processes every process forms the same global batches and takes every
``num_replicas``-th of them, so all processes step the same number of times.

>>> list(TokenBudgetBatchSampler(range(5), lengths=[4, 3, 5, 2, 6], max_tokens=8))
[[0, 1], [2, 3], [4]]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from torch.utils.data import BatchSampler, DataLoader, Sampler

from lightpref.data.sampling import PositionedDataLoader, ResumableSampler

if TYPE_CHECKING:
    from datasets import Dataset

COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def pair_tokens(row: dict[str, Any]) -> int:
    """The tokens of a stored pair once its prompt is shared: prompt + chosen + rejected; of a stored ranked group,
    its prompt + all its completions.

    >>> pair_tokens({"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]})
    5
    >>> pair_tokens({"prompt_ids": [1, 2], "completion_ids": [[3], [4, 5], [6]], "scores": [1.0, 0.0, 2.0]})
    6
    """
    if "completion_ids" in row:
        return len(row["prompt_ids"]) + sum(len(ids) for ids in row["completion_ids"])
    return sum(len(row[column]) for column in COLUMNS)


def token_lengths(dataset: Dataset) -> list[int]:
    """:func:`pair_tokens` of every pair (or group) of a split. An Arrow dataset's are read from its list offsets, a
    record batch at a time, without converting a token id to Python (1M pairs in well under a second).

    >>> from datasets import Dataset
    >>> token_lengths(Dataset.from_dict({"prompt_ids": [[1, 2], [3]], "chosen_ids": [[4], [5, 6]],
    ...                                  "rejected_ids": [[7], []]}))
    [4, 3]
    >>> token_lengths(Dataset.from_dict({"prompt_ids": [[1, 2], [3]], "completion_ids": [[[4], [5, 6]], [[7], [8]]],
    ...                                  "scores": [[1.0, 0.0], [0.0, 1.0]]}))
    [5, 3]
    """
    if hasattr(dataset, "with_format"):
        import numpy as np
        import pyarrow.compute as arrow_compute

        grouped = "completion_ids" in dataset.column_names
        columns = ["prompt_ids", "completion_ids"] if grouped else list(COLUMNS)
        lengths: list[int] = []
        selected = dataset.select_columns(columns).with_format("arrow")  # follows a selection's indices
        for batch in selected.iter(batch_size=65536):
            counts = [arrow_compute.list_value_length(batch[column]).to_numpy(zero_copy_only=False)
                      for column in columns if column != "completion_ids"]
            if grouped:  # each group's completion tokens: inner list lengths summed per group
                completions = batch["completion_ids"].combine_chunks()
                inner = arrow_compute.list_value_length(completions.flatten()).to_numpy(zero_copy_only=False)
                ends = np.cumsum(arrow_compute.list_value_length(completions).to_numpy(zero_copy_only=False))
                sums = np.add.reduceat(np.append(inner, 0), np.concatenate([[0], ends[:-1]])) if len(ends) else ends
                counts.append(np.where(np.diff(np.concatenate([[0], ends])) > 0, sums, 0))
            lengths += np.sum(counts, axis=0, dtype=np.int64).tolist()
        return lengths
    return [pair_tokens(dataset[index]) for index in range(len(dataset))]


class TokenBudgetBatchSampler(BatchSampler):
    """Group the indices ``sampler`` yields into batches of at most ``max_tokens`` tokens.

    A batch closes when the next pair would exceed the budget; on one process every index is in exactly one batch.
    With ``num_replicas`` processes, process ``rank`` takes global batches ``rank, rank + num_replicas, …``, the
    list first extended with its own first batches to a multiple of ``num_replicas`` (as ``DistributedSampler``
    pads). An epoch's batches are formed once (on ``len()`` or iteration), so ``len()`` is exact.

    Args:
        sampler: the pair indices, in the order batches are formed; its ``set_epoch`` (if any) is forwarded.
        lengths: each pair's token count (:func:`pair_tokens`), indexed by the sampler's indices.
        max_tokens: the budget; at least the longest pair.
        drop_last: must be ``False`` (no pair is dropped); accepted for the ``BatchSampler`` interface.
        num_replicas: processes sharing the batches.
        rank: this process.
    """

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        lengths: Sequence[int],
        max_tokens: int,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"`max_tokens_per_batch` must be a positive integer, got {max_tokens!r}")
        if drop_last:
            raise ValueError("a token-budget batch sampler keeps every pair; `drop_last` must be False")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"`rank` must be in [0, {num_replicas}), got {rank}")
        longest = max(range(len(lengths)), key=lengths.__getitem__, default=None)
        if longest is not None and lengths[longest] > max_tokens:
            raise ValueError(
                f"`max_tokens_per_batch` ({max_tokens}) is smaller than pair {longest}, which has "
                f"{lengths[longest]} tokens (its prompt and completions); raise it to at least {lengths[longest]}"
            )
        self.sampler, self.lengths, self.max_tokens, self.drop_last = sampler, lengths, max_tokens, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.start = 0  # batches of the coming epoch to skip (a resumed epoch)
        self._planned: tuple[int, list[list[int]]] | None = None  # (epoch, its batches)

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def _plan(self) -> list[list[int]]:
        """This process's batches of the epoch, formed once per epoch of the sampler (its ``epoch``, if any)."""
        epoch = getattr(self.sampler, "epoch", None)
        if self._planned is None or self._planned[0] != epoch:
            batches, batch, tokens = [], [], 0
            for index in self.sampler:
                length = self.lengths[index]
                if batch and tokens + length > self.max_tokens:
                    batches.append(batch)
                    batch, tokens = [], 0
                batch.append(index)
                tokens += length
            if batch:
                batches.append(batch)
            if self.num_replicas > 1 and batches:
                total = -(-len(batches) // self.num_replicas) * self.num_replicas
                batches = (batches * (total // len(batches) + 1))[:total][self.rank :: self.num_replicas]
            self._planned = (epoch, batches)
        return self._planned[1]

    def __iter__(self) -> Iterator[list[int]]:
        batches, start = self._plan(), self.start
        self._planned, self.start = None, 0  # the next epoch forms its batches anew
        yield from batches[start:]

    def __len__(self) -> int:
        return len(self._plan())


class TokenBudgetDataLoader(PositionedDataLoader):
    """A DataLoader over a :class:`TokenBudgetBatchSampler`, stateful like
    :class:`~lightpref.data.sampling.ResumableDataLoader` (``{"epoch", "batches"}``: a resumed run continues
    mid-epoch).

    Its ``sampler`` is the batch sampler's own order (a ``DistributedSampler``), so Lightning neither injects a
    distributed sampler of its own (the batch sampler already shards) nor forgets ``set_epoch``.
    """

    batch_sampler: TokenBudgetBatchSampler

    @property
    def sampler(self) -> Sampler[int]:
        return self.batch_sampler.sampler

    @sampler.setter
    def sampler(self, value: Sampler[int]) -> None:  # DataLoader.__init__ assigns its default; the order is ours
        pass

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.batch_sampler, TokenBudgetBatchSampler):
            raise TypeError(f"TokenBudgetDataLoader needs a TokenBudgetBatchSampler, got {type(self.batch_sampler)}")

    def _epoch(self) -> int:
        return getattr(self.batch_sampler.sampler, "epoch", 0)

    def _start_at(self, batches: int) -> None:
        self.batch_sampler.start = batches


def token_budget(
    loader: DataLoader,
    lengths: Sequence[int],
    max_tokens: int,
    shuffle: bool,
    seed: int,
    num_replicas: int = 1,
    rank: int = 0,
) -> TokenBudgetDataLoader:
    """The same loader (dataset, collation, workers) with batches of at most ``max_tokens`` tokens, in an order
    seeded per epoch (``seed + epoch``, as :func:`~lightpref.data.sampling.resumable`)."""
    order = ResumableSampler(loader.dataset, shuffle=shuffle, seed=seed)  # the global order, one replica
    return TokenBudgetDataLoader(
        loader.dataset,
        batch_sampler=TokenBudgetBatchSampler(order, lengths, max_tokens, num_replicas=num_replicas, rank=rank),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.persistent_workers,
    )
