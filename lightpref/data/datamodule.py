"""``PreferenceDataModule``: wires read → normalise → tokenise → cache → split → collate; holds no logic of its own."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Subset
from transformers import PreTrainedTokenizerBase

from lightpref.batch import RANKED, RECORD_NAMES, UNPAIRED
from lightpref.data import cache
from lightpref.data.chunk_pool import ChunkTokenizer, default_num_proc
from lightpref.data.chunks import TokenizeJob
from lightpref.data.example import Format
from lightpref.data.inputs import DataInputs
from lightpref.data.loaders import hub_stream, rows_loader, training_order
from lightpref.data.mixture import DataSource
from lightpref.data.pipeline import write_split
from lightpref.data.splits import IndexedRows, cached_splits, log_counts
from lightpref.data.streaming import StreamingPairs
from lightpref.data.tokenize import check_lengths
from lightpref.data.unpaired import label_counts
from lightpref.views import PromptView

if TYPE_CHECKING:
    import datasets
    from torch.utils.data import Dataset


class PreferenceDataModule(LightningDataModule):
    """Preference pairs, or ranked groups (a prompt with K scored completions), from local files, a Hub dataset or
    in-memory records, tokenised once and cached.

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
        batch_size: training pairs (or ranked groups) per batch (each batch holds ``2 * batch_size`` sequences, or
            the groups' completions).
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
            tokens each, as the shared-prompt forward runs them; a group's prompt + all its completions) up to this
            many per batch; ``batch_size`` is then
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
        if streaming and (hub_dataset is None or val_fraction or max_tokens_per_batch is not None):
            raise ValueError(
                "`streaming: true` streams `hub_dataset` and needs neither `val_fraction` nor `max_tokens_per_batch`; "
                "set `hub_dataset`, drop those options, or set `streaming: false`"
            )
        self.inputs = DataInputs(train_files, val_files, hub_dataset, hub_config, train_split, val_split, records,
                                 sources, format, val_fraction)
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
        self.train_paths = self.inputs.train_paths  # the training files (recorded in checkpoints)
        self.val_fraction = val_fraction
        self.max_length, self.max_prompt_length = max_length, max_prompt_length
        self.batch_size, self.val_batch_size = batch_size, val_batch_size or batch_size
        self.num_workers, self.skip_invalid, self.shuffle, self.seed = num_workers, skip_invalid, shuffle, seed
        self.pad_to_multiple_of = pad_to_multiple_of
        self.max_tokens_per_batch = max_tokens_per_batch
        self.num_proc = default_num_proc() if num_proc is None else num_proc
        self.streaming = streaming
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else cache.default_cache_dir()
        self.prompt_views = prompt_views
        self._shape: str | None = None
        self.train_dataset: datasets.Dataset | StreamingPairs | None = None
        self.val_dataset: datasets.Dataset | StreamingPairs | None = None
        self.stats: dict[str, dict[str, Any]] = {}

    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer (loaded once), with EOS as pad token when it has none."""
        if self.tokenizer is None:
            from lightpref.models.pretrained import load_tokenizer

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

    @property
    def shape(self) -> str:
        """``"pairs"`` or ``"ranked"`` (:data:`~lightpref.batch.PAIRS`, :data:`~lightpref.batch.RANKED`): what the
        sources hold, from their formats or (``auto``) their first record; batches are then a
        :class:`~lightpref.batch.PairBatch` or a :class:`~lightpref.batch.GroupBatch`."""
        if self._shape is None:
            self._shape = self.inputs.shape(self.streaming)
        return self._shape

    def check_loss(self) -> None:
        """Stop before anything is tokenised or loaded when the attached module cannot train on this data's shape."""
        check = getattr(getattr(self.trainer, "lightning_module", None) if self.trainer else None, "check_data_shape",
                        None)
        if callable(check):
            check(self.shape)

    def _check_label_balance(self, train: datasets.Dataset) -> None:
        """Log the training split's desirable and undesirable counts, and let the attached module warn when its loss's
        weights do not suit them."""
        desirable, undesirable = label_counts(train["label"])
        rank_zero_info(f"lightpref data: {desirable} desirable and {undesirable} undesirable training examples")
        module = getattr(self.trainer, "lightning_module", None) if self.trainer else None
        check = getattr(module, "check_label_balance", None)
        if callable(check):
            check(desirable, undesirable)

    def tokenize_job(self) -> TokenizeJob:
        """What tokenising this data needs (sent once to each worker process)."""
        return TokenizeJob(self.load_tokenizer(), self.max_length, self.max_prompt_length, self.resolve_prompt_views(),
                           ranked=self.shape == RANKED, unpaired=self.shape == UNPAIRED)

    def cache_directory(self) -> Path:
        """``cache_dir/<fingerprint>``: the fingerprint covers the sources' content and formats, the tokenizer, every
        tokenisation setting and the views."""
        tokenizer = self.load_tokenizer()
        parts = {
            split: [[group.format, [source.key for source in found]] for group, found in self.inputs.groups(split)]
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
        self.check_loss()
        if self.streaming:
            return
        directory = self.cache_directory()
        self._read_from_cache = cache.is_complete(directory)  # for the counts `setup` logs
        if self._read_from_cache:
            cache.remove_stale(directory.parent)  # a killed run's half-written folder goes even when nothing is written
            rank_zero_info(f"lightpref data: reusing the tokenised data cached in {directory}")
            return
        job = self.tokenize_job()
        with cache.writing(directory) as temporary, ChunkTokenizer(job, self.num_proc) as tokenizer:
            stats = {}
            for split in ("train", "val"):
                groups = [group for group, _ in self.inputs.groups(split)]
                path = cache.split_path(temporary, split)
                stats[split] = write_split(path, groups, tokenizer, self.skip_invalid, split)
            cache.write_stats(temporary, stats)

    def setup(self, stage: str | None = None) -> None:
        """Load the cached pairs, hold out ``val_fraction`` of them if asked, and log the counts."""
        if self.train_dataset is not None:
            return
        self.check_loss()
        if self.streaming:
            self.train_dataset, self.val_dataset = self._stream("train"), self._stream("val")
            return
        directory = self.cache_directory()
        if not cache.is_complete(directory):  # setup() called without prepare_data()
            self.prepare_data()
        self.stats = cache.read_stats(directory)
        records = RECORD_NAMES[self.shape]
        train, val, mixed = cached_splits(directory, self.stats, records, self.inputs.sources, self.val_fraction,
                                          self.seed)
        self.train_dataset, self.val_dataset = train, val
        log_counts(self.stats, mixed, from_cache=getattr(self, "_read_from_cache", True), records=records)
        if self.shape == UNPAIRED:
            self._check_label_balance(train)
        val_size = 0 if val is None else len(val)
        rank_zero_info(f"lightpref data: {len(train)} training and {val_size} validation {records}; cache {directory}")

    def train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise RuntimeError("call `setup()` before asking for the training DataLoader")
        replicas = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        if self.streaming:
            if replicas.get("num_replicas", 1) > 1:
                raise ValueError("`streaming: true` supports one training process; set `streaming: false` to cache")
            return self.train_dataset
        loader = self._loader(self.train_dataset, self.batch_size, "train")
        return training_order(loader, self.train_dataset, self.max_tokens_per_batch, self.shuffle, self.seed,
                              **replicas)

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

    def split_dataset(self, split: str) -> datasets.Dataset | StreamingPairs | None:
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
        dataset = IndexedRows(self.split_dataset(split))
        if indices is not None:
            dataset = Subset(dataset, list(indices))
        return self._loader(dataset, batch_size, split, indexed=False)

    def _loader(self, dataset: datasets.Dataset | Dataset, batch_size: int, split: str,
                indexed: bool = True) -> DataLoader:
        return rows_loader(dataset, batch_size, split, self.load_tokenizer().pad_token_id, self.pad_to_multiple_of,
                           self.num_workers, indexed)

    def _stream(self, split: str) -> StreamingPairs | None:
        """A split of the streamed Hub dataset, tokenised as it is read (``None`` when the split is not given)."""
        batch_size = self.batch_size if split == "train" else self.val_batch_size
        return hub_stream(self.inputs, split, self.tokenize_job(), self.skip_invalid, batch_size,
                          self.pad_to_multiple_of, self.shuffle and split == "train", self.seed)
