"""Precomputed reference log-probs: run the reference once over the data, keep its per-token log-probs on disk.

The cache holds, for every pair of a split and every prompt view, the reference's log-prob of each completion
token (sums and token means derive from them exactly). It lives in ``<cache>/reference/<fingerprint>/`` where the
fingerprint covers the reference's weight files, the tokenised data and its split, the prompt views and the load
settings, so a change to any of them makes a new cache. Each file carries its fingerprint and a checksum of its
values: a stale, truncated or corrupt file is detected, reported and rebuilt, never used.

With several processes each computes its share of the pairs and writes a shard; after a barrier the first
process merges the shards and, after a second barrier, every process reads the merged file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from tqdm.auto import tqdm

from lightpref.forward import TokenLogProbs
from lightpref.pretrained import cache_root, converted_gguf

CACHE_VERSION = 1
MAIN = ""  # the plain prompt's entry among the views


def files_fingerprint(directory: Path) -> list[tuple[str, int, int]]:
    """Name, size and modification time of every file under ``directory`` (a cheap identity of weights)."""
    return sorted(
        (str(path.relative_to(directory)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in directory.rglob("*")
        if path.is_file()
    )


def source_fingerprint(name_or_path: str | Path | None) -> Any:
    """The identity of a model source: its files when local, else its name (a Hub revision is fixed by name)."""
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    return files_fingerprint(path) if path.is_dir() else str(name_or_path)


def fingerprint(parts: Mapping[str, Any]) -> str:
    text = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class SplitValues:
    """Per-token reference log-probs of one split under one view: pair p's chosen tokens are
    ``values[offsets[p, 0] : offsets[p, 0] + counts[p, 0]]``, its rejected ones likewise with column 1."""

    counts: Tensor  # (P, 2) completion token counts
    offsets: Tensor  # (P, 2)
    values: Tensor  # (total,)

    def tokens(self, index: Tensor, mask: Tensor) -> Tensor:
        """The (2B, T) per-token log-probs of the pairs ``index`` (B,) laid out on the batch's ``mask``."""
        counts = torch.cat([self.counts[index, 0], self.counts[index, 1]])  # (2B,) rows: chosen then rejected
        if not torch.equal(counts.to(mask.device), mask.sum(-1)):
            raise RuntimeError(
                "the precomputed reference cache does not match this batch's completions (stale cache); delete "
                "the reference cache directory or change `model.reference_cache_dir`"
            )
        starts = torch.cat([self.offsets[index, 0], self.offsets[index, 1]])
        flat = torch.cat([self.values[start : start + count] for start, count in zip(starts, counts, strict=True)])
        out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        out[mask] = flat.to(mask.device)
        return out


def _checksum(values: Tensor) -> str:
    return hashlib.sha256(values.numpy().tobytes()).hexdigest()


def _save(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same directory, then a rename."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    torch.save(payload, temporary)
    os.replace(temporary, path)


def _load(path: Path, key: str) -> dict[str, SplitValues] | None:
    """The views stored at ``path``, or ``None`` (with a warning) when it is missing, stale or corrupt."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True)
        if payload["fingerprint"] != key:
            raise ValueError("its fingerprint does not match the current reference, data and settings")
        views = {}
        for name, stored in payload["views"].items():
            if _checksum(stored["values"]) != stored["checksum"]:
                raise ValueError("its values do not match their checksum")
            views[name] = SplitValues(stored["counts"], stored["offsets"], stored["values"])
        return views
    except Exception as error:  # any unreadable file is rebuilt, whatever broke it
        rank_zero_warn(f"reference cache {path} is unusable ({error}); rebuilding it")
        path.unlink(missing_ok=True)
        return None


def _collect(batches: Iterable[Mapping[str, Any]], compute: Callable[[Mapping[str, Any]], TokenLogProbs],
             view: str | None) -> dict[int, tuple[Tensor, Tensor]]:
    """Each pair's chosen and rejected per-token log-probs under one view, by pair index."""
    found = {}
    for batch in batches:
        sequences = batch if view is None else batch["views"][view]
        tokens = compute(sequences)
        pairs = tokens.logps.shape[0] // 2
        for row, index in enumerate(batch["index"].tolist()):
            chosen = tokens.logps[row][tokens.mask[row]].float().cpu()
            rejected = tokens.logps[row + pairs][tokens.mask[row + pairs]].float().cpu()
            found[index] = (chosen, rejected)
    return found


def _pack(found: Mapping[int, tuple[Tensor, Tensor]], size: int) -> dict[str, Tensor]:
    if sorted(found) != list(range(size)):
        raise RuntimeError(f"reference cache: {len(found)} of {size} pairs computed; the shards are incomplete")
    counts = torch.tensor([[len(found[i][0]), len(found[i][1])] for i in range(size)], dtype=torch.long)
    values = torch.cat([torch.cat(found[i]) for i in range(size)]) if size else torch.zeros(0)
    starts = torch.cumsum(counts.sum(-1), 0) - counts.sum(-1)
    offsets = torch.stack([starts, starts + counts[:, 0]], dim=-1)
    return {"counts": counts, "offsets": offsets, "values": values, "checksum": _checksum(values)}


class ReferenceCache:
    """Reference log-probs of every pair of every split, computed once and read back by pair index.

    Args:
        directory: where the files live (``<cache>/reference/<key>`` by default).
        key: the fingerprint every file must carry.
        views: names of the prompt views to store besides the plain prompt.
    """

    def __init__(self, key: str, views: Iterable[str] = (), directory: Path | None = None) -> None:
        self.key = key
        self.views = [MAIN, *views]
        self.directory = directory or cache_root() / "reference" / key
        self.splits: dict[str, dict[str, SplitValues]] = {}

    def load(self, split: str) -> bool:
        """Read a split's merged file if it is valid; ``True`` when it was."""
        views = _load(self.directory / f"{split}.pt", self.key)
        if views is not None and set(views) == set(self.views):
            self.splits[split] = views
            return True
        return False

    def build(self, split: str, size: int, loader: Callable[[list[int]], Iterable], compute: Callable,
              rank: int = 0, world_size: int = 1, barrier: Callable[[], None] = lambda: None) -> None:
        """Compute this process's share of ``split``, merge the shares, and load the result on every process."""
        self.directory.mkdir(parents=True, exist_ok=True)
        share = list(range(rank, size, world_size))
        shard = {}
        with torch.no_grad():
            for view in self.views:
                batches = tqdm(loader(share), desc=f"reference log-probs ({split}{'/' + view if view else ''})",
                               disable=rank != 0)
                shard[view] = _collect(batches, compute, view or None)
        torch.save(shard, self.directory / f"{split}.rank{rank}-of-{world_size}.part")
        barrier()
        if rank == 0:
            parts = [torch.load(self.directory / f"{split}.rank{r}-of-{world_size}.part", weights_only=True)
                     for r in range(world_size)]
            merged = {view: _pack({k: v for part in parts for k, v in part[view].items()}, size) for view in self.views}
            _save(self.directory / f"{split}.pt", {"fingerprint": self.key, "views": merged})
            for r in range(world_size):
                (self.directory / f"{split}.rank{r}-of-{world_size}.part").unlink(missing_ok=True)
            rank_zero_info(f"lightpref: cached reference log-probs of {size} {split} pairs in {self.directory}")
        barrier()
        if not self.load(split):
            raise RuntimeError(f"the reference cache {self.directory / f'{split}.pt'} could not be read after writing")

    def tokens(self, split: str, sequences: Mapping[str, Tensor], index: Tensor, view: str = MAIN) -> TokenLogProbs:
        """The reference's per-token log-probs for a batch, as if the reference had run on it."""
        mask = sequences["completion_mask"].bool()
        logps = self.splits[split][view].tokens(index.cpu(), mask)
        return TokenLogProbs(logps=logps, mask=mask, logits_sum=torch.zeros(mask.shape[0], device=mask.device))


def prepare_reference_cache(module: Any) -> ReferenceCache:
    """The reference cache of a :class:`~lightpref.module.PreferenceModule`'s run: read when valid, else computed
    (by a reference loaded from its source, or the adapter-free base) over every split of its DataModule."""
    datamodule = module.trainer.datamodule
    if not hasattr(datamodule, "ordered_dataloader"):
        raise TypeError("`model.precompute_reference` needs lightpref's PreferenceDataModule as the data")
    splits = [split for split in ("train", "val") if datamodule.split_dataset(split) is not None]
    source = module.reference_source or module.pretrained
    if module.gguf_file and module.reference_source is None:
        source = converted_gguf(module.pretrained, module.gguf_file)
    key = fingerprint({
        "reference": source_fingerprint(source),
        "sft_adapter": source_fingerprint(module.sft_adapter),
        "data": {split: datamodule.split_fingerprint(split) for split in splits},
        "views": {name: repr(view) for name, view in sorted(module.loss.views.items())},
        "load": module.load_kwargs,
    })
    cache = ReferenceCache(key, views=list(module.loss.views))
    missing = [split for split in splits if not cache.load(split)]
    if not missing:
        return cache
    separate = None if module.adapter_reference else module.load_reference().to(module.device)

    def compute(sequences: Mapping[str, Tensor]) -> TokenLogProbs:
        if separate is not None:
            return module._token_logprobs(separate, sequences)
        with module.reference_scope() as base:
            return module._token_logprobs(base, sequences)

    for split in missing:
        def loader(indices: list[int], split: str = split) -> Iterable[Mapping[str, Any]]:
            for batch in datamodule.ordered_dataloader(split, module.reference_batch_size, indices):
                yield module.transfer_batch_to_device(batch, module.device, 0)

        size = len(datamodule.split_dataset(split))
        strategy = module.trainer.strategy
        cache.build(split, size, loader, compute, module.global_rank, module.trainer.world_size, strategy.barrier)
    return cache
