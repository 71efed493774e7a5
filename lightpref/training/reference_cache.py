"""Precomputed reference log-probs on disk: every pair's per-token reference log-probs, read back by pair index.

The cache holds, for every pair of a split and every prompt view, the reference's log-prob of each completion
token (sums and token means derive from them exactly). It lives in ``<directory>/<key>/`` where the key covers the
reference's weights by content, the tokenised data and its split, the prompt views and the load settings (see
:class:`lightpref.training.reference.Precomputed`), so a change to any of them makes a new cache. Each file carries its
key and a checksum of every tensor it stores (counts, offsets and values): a stale, truncated or corrupt file is
detected, reported with its path and rebuilt, never used.

With several processes each computes its share of the pairs and writes a shard; after a barrier the first
process merges the shards and, after a second barrier, every process reads the merged file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from tqdm.auto import tqdm

from lightpref.batch import MAIN, GroupBatch, PairBatch, Sequences
from lightpref.io import atomic_path
from lightpref.training.forward import TokenLogProbs
from lightpref.training.records import group_positions

CACHE_VERSION = 2  # 2: the checksum covers counts, offsets and values
STORED = ("counts", "offsets", "values")


@dataclass
class SplitValues:
    """Per-token reference log-probs of one split under one view: completion c of record p (c = 0 chosen, 1 rejected
    for a pair; a ranked group's completions in order) has its tokens at
    ``values[offsets[p, c] : offsets[p, c] + counts[p, c]]``; a group with fewer completions than the widest has
    count 0 in the columns it lacks."""

    counts: Tensor  # (P, W) completion token counts
    offsets: Tensor  # (P, W)
    values: Tensor  # (total,)
    path: Path | None = None  # the file they were read from, for messages

    def tokens(self, index: Tensor, mask: Tensor, slots: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The (N, T) per-token log-probs laid out on the batch's ``mask``: row n is completion ``columns[n]`` of
        record ``index[records[n]]``, ``(records, columns) = slots`` (default: a pair batch's rows, chosen then
        rejected)."""
        records, columns = _pair_slots(len(index)) if slots is None else (slot.cpu() for slot in slots)
        records = index[records]
        counts = self.counts[records, columns]  # (N,)
        if not torch.equal(counts.to(mask.device), mask.sum(-1)):
            raise RuntimeError(
                f"the precomputed reference cache {self.path} does not match this batch's completions (stale "
                "cache); delete that file to rebuild it, or set `model.reference_cache_dir` to another directory"
            )
        starts = self.offsets[records, columns]
        flat = torch.cat([self.values[start : start + count] for start, count in zip(starts, counts, strict=True)])
        out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        out[mask] = flat.to(mask.device)
        return out


def _pair_slots(pairs: int) -> tuple[Tensor, Tensor]:
    """A pair batch's rows as (pair in the batch, column): chosen rows (column 0), then rejected rows (column 1)."""
    rows = torch.arange(2 * pairs)
    return rows % max(pairs, 1), rows // max(pairs, 1)


def batch_slots(batch: PairBatch | GroupBatch) -> tuple[Tensor, Tensor]:
    """Each row's record within the batch and its completion column (see :class:`SplitValues`)."""
    if isinstance(batch, GroupBatch):
        return batch.group_ids, group_positions(batch.group_ids)[0]
    return _pair_slots(batch.num_pairs)


def checksum(stored: Mapping[str, Tensor]) -> str:
    """SHA-256 over the dtype, shape and bytes of each stored tensor (counts, offsets, values)."""
    digest = hashlib.sha256()
    for name in STORED:
        tensor = stored[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _check_layout(stored: Mapping[str, Tensor]) -> None:
    """The offsets must tile the values exactly as the counts say (a second line of defence behind the checksum)."""
    counts, offsets, values = (stored[name] for name in STORED)
    if counts.ndim != 2 or counts.shape != offsets.shape or (counts < 0).any():
        raise ValueError("its counts and offsets do not have the shape (records, completions)")
    flat = counts.flatten()
    starts = torch.cumsum(flat, 0) - flat
    if not torch.equal(offsets.flatten(), starts) or int(flat.sum()) != values.numel():
        raise ValueError("its offsets do not match its counts and values")


def _load(path: Path, key: str) -> dict[str, SplitValues] | None:
    """The views stored at ``path``, or ``None`` (with a warning naming the path) when it is missing, stale or
    corrupt."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True)
        if payload["fingerprint"] != key:
            raise ValueError("its fingerprint does not match the current reference, data and settings")
        views = {}
        for name, stored in payload["views"].items():
            if checksum(stored) != stored["checksum"]:
                raise ValueError(f"the stored tensors of view {name or 'main'!r} do not match their checksum")
            _check_layout(stored)
            views[name] = SplitValues(stored["counts"], stored["offsets"], stored["values"], path)
        return views
    except Exception as error:  # any unreadable file is rebuilt, whatever broke it
        rank_zero_warn(f"lightpref: the reference cache {path} is unusable ({error}); rebuilding it")
        path.unlink(missing_ok=True)
        return None


def _collect(batches: Iterable[PairBatch | GroupBatch], compute: Callable[[Sequences], TokenLogProbs],
             view: str) -> dict[int, tuple[Tensor, ...]]:
    """Each record's per-token log-probs of each of its completions under one view, by record index."""
    found: dict[int, list[Tensor]] = {}
    for batch in batches:
        tokens = compute(batch.view(view))
        records, columns = batch_slots(batch)
        for row, (record, column) in enumerate(zip(records.tolist(), columns.tolist(), strict=True)):
            found.setdefault(int(batch.index[record]), []).append((column, tokens.logps[row][tokens.mask[row]]))
    return {index: tuple(values.float().cpu() for _, values in sorted(parts, key=lambda part: part[0]))
            for index, parts in found.items()}


def _pack(found: Mapping[int, tuple[Tensor, ...]], size: int) -> dict[str, Any]:
    if sorted(found) != list(range(size)):
        raise RuntimeError(f"reference cache: {len(found)} of {size} records computed; the shards are incomplete")
    width = max((len(found[i]) for i in range(size)), default=2)
    counts = torch.zeros(size, width, dtype=torch.long)
    for i in range(size):
        counts[i, : len(found[i])] = torch.tensor([len(values) for values in found[i]], dtype=torch.long)
    values = torch.cat([torch.cat(found[i]) for i in range(size)]) if size else torch.zeros(0)
    flat = counts.flatten()
    offsets = (torch.cumsum(flat, 0) - flat).reshape(size, width)
    stored = {"counts": counts, "offsets": offsets, "values": values}
    return {**stored, "checksum": checksum(stored)}


class ReferenceCache:
    """Reference log-probs of every pair of every split, computed once and read back by pair index.

    Args:
        key: the fingerprint every file must carry.
        directory: where the files live (``<cache root>/reference/<key>``).
        views: names of the prompt views to store besides the plain prompt.
    """

    def __init__(self, key: str, directory: Path, views: Iterable[str] = ()) -> None:
        self.key = key
        self.views = [MAIN, *views]
        self.directory = directory
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
                shard[view] = _collect(batches, compute, view)
        with atomic_path(self.directory / f"{split}.rank{rank}-of-{world_size}.part") as temporary:
            torch.save(shard, temporary)
        barrier()
        if rank == 0:
            parts = [torch.load(self.directory / f"{split}.rank{r}-of-{world_size}.part", weights_only=True)
                     for r in range(world_size)]
            merged = {view: _pack({k: v for part in parts for k, v in part[view].items()}, size) for view in self.views}
            with atomic_path(self.directory / f"{split}.pt") as temporary:
                torch.save({"fingerprint": self.key, "views": merged}, temporary)
            for r in range(world_size):
                (self.directory / f"{split}.rank{r}-of-{world_size}.part").unlink(missing_ok=True)
            rank_zero_info(f"lightpref: cached reference log-probs of {size} {split} pairs in {self.directory}")
        barrier()
        if not self.load(split):
            raise RuntimeError(f"the reference cache {self.directory / f'{split}.pt'} could not be read after writing")

    def tokens(self, batch: PairBatch | GroupBatch, view: str = MAIN) -> TokenLogProbs:
        """The reference's per-token log-probs for a batch, as if the reference had run on it."""
        if batch.index is None or batch.split not in self.splits:
            raise KeyError(
                "precomputed reference log-probs are looked up by each pair's split and position: the batch needs "
                "`index` and `split` (as lightpref's PreferenceDataModule gives them)"
            )
        mask = batch.view(view).completion_mask.bool()
        logps = self.splits[batch.split][view].tokens(batch.index.cpu(), mask, batch_slots(batch))
        return TokenLogProbs(logps=logps, mask=mask, logits_sum=torch.zeros(mask.shape[0], device=mask.device))
