"""``PreferenceDataModule``: wires read → normalise → tokenise → cache → split → collate; holds no logic of its own."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from itertools import accumulate
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Subset
from torch.utils.data import Dataset as TorchDataset
from transformers import PreTrainedTokenizerBase

from lightpref.data import cache
from lightpref.data import sources as data_sources
from lightpref.data.collate import collate_rows
from lightpref.data.formats import FORMATS, Format
from lightpref.data.mixture import DataSource, mixture_indices
from lightpref.data.pipeline import ChunkTokenizer, SourceGroup, TokenizeJob, default_num_proc, write_split
from lightpref.data.sampling import resumable
from lightpref.data.streaming import StreamingPairs
from lightpref.data.token_budget import token_budget, token_lengths
from lightpref.data.tokenize import check_lengths
from lightpref.io import file_sha256
from lightpref.views import PromptView

Source = tuple[Any, Callable[[], Iterator[data_sources.Row]]]  # (what identifies its content, its rows)


class PreferenceDataModule(LightningDataModule):
    """Preference pairs from local files, a Hub dataset or in-memory records, tokenised once and cached.

    Exactly one training source is given: ``train_files``, ``hub_dataset``, ``records`` or a mixture of ``sources``.
    Validation data comes from ``val_files``, the Hub ``val_split``, or a seeded ``val_fraction`` of the training
    pairs (or there is none). With ``streaming`` a Hub dataset is read and tokenised on the fly instead of cached.

    Args:
        tokenizer: Hub name or local directory of the tokenizer, or a tokenizer object. Without a pad token, EOS pads.
        gguf_file: read the tokenizer from this GGUF file inside the ``tokenizer`` directory or installed package.
        train_files: ``.jsonl``, ``.json``, ``.parquet`` or ``.csv`` file(s) or glob pattern(s) of training records.
        val_files: file(s) of validation records.
        hub_dataset: a Hugging Face Hub dataset name (``datasets.load_dataset``), as the training source.
        hub_config: the Hub dataset's configuration (subset), if it has several.
        train_split: the Hub split to train on.
        val_split: the Hub split to validate on, if any.
        records: in-memory records, as the training source.
        sources: a mixture as the training source: several files or Hub splits, each with its own ``format`` and a
            ``weight`` or ``cap`` on the pairs it contributes (:class:`~lightpref.data.mixture.DataSource`).
        val_fraction: the fraction of training pairs held out for validation when no validation source is given,
            in ``[0, 1)``; 0 means no validation.
        format: the records' format, or ``"auto"`` to detect it per source from its first valid row.
        max_length: the most tokens of prompt + completion.
        max_prompt_length: the most prompt tokens (a longer prompt loses its start); less than ``max_length``.
        batch_size: training pairs per batch (each batch holds ``2 * batch_size`` sequences).
        val_batch_size: validation pairs per batch; ``batch_size`` if not given.
        num_workers: DataLoader worker processes.
        skip_invalid: skip (and count) records that cannot be normalised instead of raising an error.
        shuffle: shuffle the training pairs each epoch.
        seed: the seed of the ``val_fraction`` split and of the shuffling (epoch e's order is seeded with
            ``seed + e``, the same across process counts; a resumed run continues mid-epoch).
        pad_to_multiple_of: pad each batch's length up to a multiple of this.
        cache_dir: where tokenised datasets are cached; ``$LIGHTPREF_CACHE/data`` or ``~/.cache/lightpref/data``.
        prompt_views: extra prompt views to tokenise; by default those of the attached LightningModule's loss.
        trust_remote_code: allow a Hub tokenizer's own code to run.
        max_tokens_per_batch: form training batches by tokens instead: pairs (``prompt + chosen + rejected``
            tokens each, as the shared-prompt forward runs them) up to this many per batch; ``batch_size`` is then
            unused in training. See :mod:`lightpref.data.token_budget`.
        num_proc: processes that tokenise (a chunk of pairs each); by default the CPU cores available. The cache is
            byte-identical whatever the number.
        streaming: read ``hub_dataset`` as a stream (``datasets.load_dataset(..., streaming=True)``) and tokenise
            pairs as training consumes them, nothing cached; the position in the stream is saved in checkpoints, so
            resume is exact. One training process; no ``val_fraction`` or ``max_tokens_per_batch``.
    """

    def __init__(
        self,
        tokenizer: str | PreTrainedTokenizerBase,
        gguf_file: str | None = None,
        train_files: str | list[str] | None = None,
        val_files: str | list[str] | None = None,
        hub_dataset: str | None = None,
        hub_config: str | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        records: list[dict[str, Any]] | None = None,
        val_fraction: float = 0.0,
        format: Format = "auto",
        max_length: int = 512,
        max_prompt_length: int = 256,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        skip_invalid: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        pad_to_multiple_of: int | None = None,
        cache_dir: str | None = None,
        prompt_views: Mapping[str, PromptView] | None = None,
        trust_remote_code: bool = False,
        max_tokens_per_batch: int | None = None,
        sources: list[DataSource] | None = None,
        num_proc: int | None = None,
        streaming: bool = False,
    ) -> None:
        super().__init__()
        ignore = ["records", "prompt_views"] + ([] if isinstance(tokenizer, str) else ["tokenizer"])
        self.save_hyperparameters(ignore=ignore)
        if sum(source is not None for source in (train_files, hub_dataset, records, sources)) != 1:
            raise ValueError("give exactly one training source: `train_files`, `hub_dataset`, `records` or `sources`")
        self.sources = [DataSource(**entry) if isinstance(entry, Mapping) else entry for entry in sources or []]
        for number, entry in enumerate(self.sources):
            entry.check(f"sources[{number}]")
        if sources is not None and not self.sources:
            raise ValueError("`sources` is empty; give at least one source")
        if streaming and (hub_dataset is None or val_fraction or max_tokens_per_batch is not None):
            raise ValueError(
                "`streaming: true` streams `hub_dataset` and needs neither `val_fraction` nor `max_tokens_per_batch`; "
                "set `hub_dataset`, drop those options, or set `streaming: false`"
            )
        if val_split is not None and hub_dataset is None:
            raise ValueError("`val_split` names a split of `hub_dataset`; set `hub_dataset` or use `val_files`")
        if val_files is not None and val_split is not None:
            raise ValueError("give one validation source: `val_files` or `val_split`, not both")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"`val_fraction` must be in [0, 1), got {val_fraction!r}")
        if val_fraction and (val_files is not None or val_split is not None):
            raise ValueError("`val_fraction` splits the training data when there is no validation source; drop one")
        if format not in FORMATS:
            raise ValueError(f"`format` must be one of {list(FORMATS)}, got {format!r}")
        check_lengths(max_length, max_prompt_length)
        minimums = {"batch_size": (batch_size, 1), "val_batch_size": (val_batch_size, 1)}
        minimums.update(num_workers=(num_workers, 0), pad_to_multiple_of=(pad_to_multiple_of, 1))
        minimums.update(max_tokens_per_batch=(max_tokens_per_batch, 1), num_proc=(num_proc, 1))
        for name, (value, least) in minimums.items():
            if value is not None and (not isinstance(value, int) or value < least):
                raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}")
        self.tokenizer: PreTrainedTokenizerBase | None = None if isinstance(tokenizer, str) else tokenizer
        self.tokenizer_source = tokenizer if isinstance(tokenizer, str) else None
        self.gguf_file, self.trust_remote_code = gguf_file, trust_remote_code
        self.train_paths = data_sources.expand_files(train_files, "train_files")
        self.val_paths = data_sources.expand_files(val_files, "val_files")
        self.hub_dataset, self.hub_config = hub_dataset, hub_config
        self.train_split, self.val_split = train_split, val_split
        self.records, self.val_fraction, self.format = records, val_fraction, format
        self.max_length, self.max_prompt_length = max_length, max_prompt_length
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.skip_invalid, self.shuffle, self.seed = num_workers, skip_invalid, shuffle, seed
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_tokens_per_batch = max_tokens_per_batch
        self.num_proc = default_num_proc() if num_proc is None else num_proc
        self.streaming = streaming
        self.source_paths = [data_sources.expand_files(entry.files, f"sources[{number}].files")
                             for number, entry in enumerate(self.sources)]
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else cache.default_cache_dir()
        self.prompt_views = prompt_views
        self.train_dataset: Any = None
        self.val_dataset: Any = None
        self.stats: dict[str, dict[str, Any]] = {}
        self._hub: dict[tuple[str, str | None, str], Any] = {}
        self._digests: dict[tuple[Path, int, int], str] = {}

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer (loaded once), with EOS as pad token when it has none."""
        if self.tokenizer is None:
            from lightpref.pretrained import load_tokenizer

            self.tokenizer = load_tokenizer(self.tokenizer_source, self.gguf_file, self.trust_remote_code)
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token is None:
                raise ValueError("the tokenizer has neither a pad nor an EOS token; set `tokenizer.eos_token`")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        return self.tokenizer

    def resolve_prompt_views(self) -> dict[str, PromptView]:
        """``prompt_views`` if given, else the attached LightningModule's ``prompt_views`` (else none)."""
        if self.prompt_views is not None:
            return dict(self.prompt_views)
        module = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        return dict(getattr(module, "prompt_views", None) or {})

    def cache_directory(self) -> Path:
        """``cache_dir/<fingerprint>``: the fingerprint covers the sources' content and formats, the tokenizer, every
        tokenisation setting and the views."""
        tokenizer = self.load_tokenizer()
        parts = {
            split: [[group.format, [key for key, _ in found]] for group, found in self._groups(split)]
            for split in ("train", "val")
        }
        parts.update(
            tokenizer=cache.tokenizer_fingerprint(tokenizer),
            settings=[self.skip_invalid, self.max_length, self.max_prompt_length],
            views={name: repr(view) for name, view in sorted(self.resolve_prompt_views().items())},
        )
        return self.cache_dir / cache.fingerprint(parts)

    def prepare_data(self) -> None:
        """Stream every source through normalise → tokenise into the cache (Lightning runs this on one process)."""
        if self.streaming:
            return
        directory = self.cache_directory()
        if cache.is_complete(directory):
            rank_zero_info(f"lightpref data: reusing the tokenised data cached in {directory}")
            return
        job = TokenizeJob(self.load_tokenizer(), self.max_length, self.max_prompt_length, self.resolve_prompt_views())
        with cache.writing(directory) as temporary, ChunkTokenizer(job, self.num_proc) as tokenizer:
            stats = {}
            for split in ("train", "val"):
                groups = [group for group, _ in self._groups(split)]
                path = cache.split_path(temporary, split)
                stats[split] = write_split(path, groups, tokenizer, self.skip_invalid, split)
            cache.write_stats(temporary, stats)

    def setup(self, stage: str | None = None) -> None:
        """Load the cached pairs, hold out ``val_fraction`` of them if asked, and log the counts."""
        if self.train_dataset is not None:
            return
        if self.streaming:
            self.train_dataset, self.val_dataset = self._stream("train"), self._stream("val")
            return
        directory = self.cache_directory()
        if not cache.is_complete(directory):  # setup() called without prepare_data()
            self.prepare_data()
        self.stats = cache.read_stats(directory)
        train, val = cache.read_split(directory, "train"), cache.read_split(directory, "val")
        train_stats = self.stats["train"]
        if train is None:
            raise ValueError(
                f"no training pairs left: {train_stats['skipped_invalid']} invalid records skipped, "
                f"{train_stats['dropped_by_truncation']} pairs dropped by truncation; check the data, or raise "
                "`max_length`"
            )
        positions: Sequence[int] = range(len(train))
        if self.val_fraction:
            positions, val_indices = split_indices(len(train), self.val_fraction, self.seed)
            val = train.select(val_indices, keep_in_memory=True)  # the indices in memory: the cache stays read-only
        mixed = None
        if any(source.mixes for source in self.sources):
            ends = list(accumulate(counts["pairs"] for counts in train_stats["sources"]))
            groups = [positions[bisect_left(positions, end - counts["pairs"]) : bisect_left(positions, end)]
                      for end, counts in zip(ends, train_stats["sources"], strict=True)]
            chosen = mixture_indices(groups, self.sources, self.seed)
            positions, mixed = [i for group in chosen for i in group], [len(group) for group in chosen]
        if positions != range(len(train)):
            train = train.select(positions, keep_in_memory=True)
        self.train_dataset, self.val_dataset = train, val
        for split, counts in self.stats.items():
            if counts["skipped_invalid"]:
                rank_zero_info(f"lightpref data: skipped {counts['skipped_invalid']} invalid {split} records")
            for number, source in enumerate(counts["sources"]):
                if source["pairs"] or source["dropped_by_truncation"] or source["skipped_invalid"]:
                    used = f" ({mixed[number]} in the mixture)" if split == "train" and mixed is not None else ""
                    rank_zero_info(
                        f"lightpref data: {split} source {source['name']!r}: {source['pairs']} pairs tokenised{used}, "
                        f"{source['skipped_invalid']} invalid rows skipped, {source['dropped_by_truncation']} pairs "
                        f"dropped by truncation, {source['prompts_truncated']} prompts and "
                        f"{source['completions_truncated']} completions truncated, {source['template_fallbacks']} "
                        f"chat-template fallbacks, {source['split_fallbacks']} tokenisation-split fallbacks"
                    )
        val_size = 0 if val is None else len(val)
        rank_zero_info(f"lightpref data: {len(train)} training and {val_size} validation pairs; cache {directory}")

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise RuntimeError("call `setup()` before asking for the training DataLoader")
        replicas = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        if self.streaming:
            if replicas.get("num_replicas", 1) > 1:
                raise ValueError("`streaming: true` supports one training process; set `streaming: false` to cache")
            return self.train_dataset
        loader = self._loader(self.train_dataset, self.batch_size, "train")
        if self.max_tokens_per_batch is not None:
            lengths = token_lengths(self.train_dataset)
            return token_budget(loader, lengths, self.max_tokens_per_batch, self.shuffle, self.seed, **replicas)
        return resumable(loader, self.shuffle, self.seed, **replicas)  # order by (seed, epoch); resumes mid-epoch

    def val_dataloader(self) -> DataLoader | list:
        """The validation DataLoader, or ``[]`` (no validation) when there is no validation data."""
        if self.streaming:
            return [] if self.val_dataset is None else self.val_dataset
        if self.val_dataset is None or len(self.val_dataset) == 0:
            return []
        return self._loader(self.val_dataset, self.val_batch_size, "val")

    def test_dataloader(self) -> DataLoader | list:
        """``lightpref test`` evaluates the validation pairs (give them with ``val_files`` or ``val_fraction``)."""
        return self.val_dataloader()

    def split_dataset(self, split: str) -> Any:
        """The tokenised pairs of ``"train"`` or ``"val"`` after ``setup()`` (``None`` when there are none)."""
        return {"train": self.train_dataset, "val": self.val_dataset}[split]

    def split_fingerprint(self, split: str) -> str:
        """Identifies the exact pairs of a split, in order: the tokenised data and how it was split."""
        dataset = self.split_dataset(split)
        size = 0 if dataset is None else len(dataset)
        split_settings = [split, self.val_fraction, self.seed, size]
        return cache.fingerprint({"data": self.cache_directory().name, "split": split_settings})

    def ordered_dataloader(self, split: str, batch_size: int, indices: Sequence[int] | None = None) -> DataLoader:
        """The pairs of a split (or the given positions of it) in order, each batch with its ``"index"``."""
        dataset = _Indexed(self.split_dataset(split))
        if indices is not None:
            dataset = Subset(dataset, list(indices))
        return self._loader(dataset, batch_size, split, indexed=False)

    def _loader(self, dataset: Any, batch_size: int, split: str, indexed: bool = True) -> DataLoader:
        collate = partial(collate_rows, pad_token_id=self.load_tokenizer().pad_token_id,
                          pad_to_multiple_of=self.pad_to_multiple_of, split=split)
        return DataLoader(
            _Indexed(dataset) if indexed else dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate,
        )

    def _groups(self, split: str) -> list[tuple[SourceGroup, list[Source]]]:
        """The sources of a split as the user named them, each with its files' (content key, rows)."""
        if split == "train" and self.sources:
            groups = []
            for entry, paths in zip(self.sources, self.source_paths, strict=True):
                if entry.hub_dataset is not None:
                    found = [self._hub_source(entry.hub_dataset, entry.hub_config, entry.split)]
                else:
                    found = [self._file_source(path) for path in paths]
                groups.append((SourceGroup(entry.label(), entry.format, [rows for _, rows in found]), found))
            return groups
        paths = self.train_paths if split == "train" else self.val_paths
        found: list[Source] = [self._file_source(path) for path in paths]
        name = ", ".join(str(path) for path in paths)
        if split == "train" and self.records is not None:
            found.append((data_sources.records_digest(self.records), partial(data_sources.read_records, self.records)))
            name = "records"
        hub_split = self.train_split if split == "train" else self.val_split
        if self.hub_dataset is not None and hub_split is not None:
            found.append(self._hub_source(self.hub_dataset, self.hub_config, hub_split))
            name = f"{self.hub_dataset}:{hub_split}"
        return [(SourceGroup(name, self.format, [rows for _, rows in found]), found)] if found else []

    def _file_source(self, path: Path) -> Source:
        """A file's content key (its SHA-256, computed once per DataModule while its size and mtime hold) and rows."""
        status = path.stat()
        key = (path, status.st_size, status.st_mtime_ns)
        if key not in self._digests:
            self._digests[key] = file_sha256(path)
        return self._digests[key], partial(data_sources.read_file, path)

    def _hub_source(self, name: str, config: str | None, split: str) -> Source:
        if (name, config, split) not in self._hub:
            self._hub[name, config, split] = data_sources.load_hub(name, config, split)
        dataset = self._hub[name, config, split]
        key = [name, config, split, getattr(dataset, "_fingerprint", None)]
        return key, partial(data_sources.read_hub, dataset, name, split)

    def _stream(self, split: str) -> StreamingPairs | None:
        """A split of the streamed Hub dataset, tokenised as it is read (``None`` when the split is not given)."""
        hub_split = self.train_split if split == "train" else self.val_split
        if hub_split is None:
            return None
        dataset = data_sources.load_hub(self.hub_dataset, self.hub_config, hub_split, streaming=True)
        job = TokenizeJob(self.load_tokenizer(), self.max_length, self.max_prompt_length, self.resolve_prompt_views())
        collate = partial(collate_rows, pad_token_id=job.tokenizer.pad_token_id,
                          pad_to_multiple_of=self.pad_to_multiple_of, split=split)
        shuffle = self.shuffle and split == "train"
        batch_size = self.batch_size if split == "train" else self.val_batch_size
        return StreamingPairs(dataset, f"hub dataset {self.hub_dataset!r} split {hub_split!r}", job, self.format,
                              self.skip_invalid, batch_size, collate, shuffle, self.seed)


class _Indexed(TorchDataset):
    """A split whose rows carry their position in it, so batches know which pairs they hold."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], "index": index}


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
