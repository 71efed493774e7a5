"""The DataLoaders of the data module's splits: stored rows in batches, the training order (resumable, or by token
budget), and a streamed Hub split tokenised as it is read.

:class:`~lightpref.data.datamodule.PreferenceDataModule` builds every loader it hands out through these functions.

>>> from datasets import Dataset
>>> rows = Dataset.from_list([{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}] * 3)
>>> [len(batch.input_ids) for batch in rows_loader(rows, 2, "val", pad_token_id=0)]
[4, 2]
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from torch.utils.data import DataLoader, Dataset

from lightpref.data import sources as data_sources
from lightpref.data.collate import collate_rows
from lightpref.data.sampling import resumable
from lightpref.data.splits import IndexedRows
from lightpref.data.streaming import StreamingPairs
from lightpref.data.token_budget import token_budget, token_lengths

if TYPE_CHECKING:
    import datasets

    from lightpref.data.chunks import TokenizeJob
    from lightpref.data.inputs import DataInputs


def rows_loader(dataset: datasets.Dataset | Dataset, batch_size: int, split: str, pad_token_id: int,
                pad_to_multiple_of: int | None = None, num_workers: int = 0, indexed: bool = True) -> DataLoader:
    """Stored rows of a split in batches (:func:`~lightpref.data.collate.collate_rows`), each row with its position
    in the split (``"index"``) unless the dataset already gives it (``indexed=False``)."""
    collate = partial(collate_rows, pad_token_id=pad_token_id, pad_to_multiple_of=pad_to_multiple_of, split=split)
    return DataLoader(
        IndexedRows(dataset) if indexed else dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=collate,
    )


def training_order(loader: DataLoader, dataset: datasets.Dataset, max_tokens_per_batch: int | None, shuffle: bool,
                   seed: int, **replicas: int) -> DataLoader:
    """The training loader in its resumable order: batches by token budget when ``max_tokens_per_batch`` is set,
    else by ``(seed, epoch)``; either resumes mid-epoch."""
    if max_tokens_per_batch is not None:
        return token_budget(loader, token_lengths(dataset), max_tokens_per_batch, shuffle, seed, **replicas)
    return resumable(loader, shuffle, seed, **replicas)


def hub_stream(inputs: DataInputs, split: str, job: TokenizeJob, skip_invalid: bool, batch_size: int,
               pad_to_multiple_of: int | None, shuffle: bool, seed: int) -> StreamingPairs | None:
    """A split of the streamed Hub dataset, tokenised as it is read (``None`` when the split is not given)."""
    hub_split = inputs.hub_split(split)
    if hub_split is None:
        return None
    name = inputs.hub_dataset
    dataset = data_sources.load_hub(name, inputs.hub_config, hub_split, streaming=True)
    collate = partial(collate_rows, pad_token_id=job.tokenizer.pad_token_id, pad_to_multiple_of=pad_to_multiple_of,
                      split=split)
    return StreamingPairs(dataset, f"hub dataset {name!r} split {hub_split!r}", job, inputs.format, skip_invalid,
                          batch_size, collate, shuffle, seed)
