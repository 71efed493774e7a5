"""The frozen reference π_ref: one object, one implementation per way of holding it.

- :class:`FrozenCopy`: a separate frozen model (a copy of the initial policy, or another model).
- :class:`AdapterBase`: the policy itself with its adapter switched off (or its frozen SFT adapter switched on),
  so the weights are in memory once.
- :class:`Precomputed`: the log-probs of one of the above, computed once over the data before training, kept on
  disk (:mod:`lightpref.training.reference_cache`), after which the model is freed.
- :class:`NoReference`: for losses that need none; nothing is ever loaded.

:func:`build_reference` picks the implementation once; the module holds the result and never asks which it is.
Each implementation scores a batch with the module's :class:`~lightpref.training.packing.Scorer`, the training forward.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightpref.batch import MAIN, PairBatch, Sequences
from lightpref.io import cache_root, fingerprint
from lightpref.models.adapters import as_reference
from lightpref.models.pretrained import ModelSource
from lightpref.training.forward import TokenLogProbs
from lightpref.training.packing import Scorer
from lightpref.training.reference_cache import CACHE_VERSION, ReferenceCache

if TYPE_CHECKING:
    from collections.abc import Sequence, Sized

    from torch.utils.data import DataLoader

PolicyGetter = Callable[[], nn.Module]


class OrderedSplits(Protocol):
    """The splits of a run's data, in a fixed order (lightpref's :class:`~lightpref.data.PreferenceDataModule`)."""

    def split_dataset(self, split: str) -> Sized | None: ...

    def split_fingerprint(self, split: str) -> str: ...

    def ordered_dataloader(self, split: str, batch_size: int, indices: Sequence[int] | None = None) -> DataLoader: ...


@dataclass
class PrecomputeContext:
    """What precomputing the reference over a run's data needs from the run, given by the module."""

    datamodule: OrderedSplits
    device: torch.device
    to_device: Callable[[PairBatch], PairBatch]
    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = lambda: None


class Reference(nn.Module):
    """The reference's per-token log-probs for a batch and, where it has one, the reference as a model.

    Args:
        source: where the reference's weights come from.
        scorer: the training forward.
    """

    def __init__(self, source: ModelSource, scorer: Scorer) -> None:
        super().__init__()
        self.source = source
        self.scorer = scorer
        self.model: nn.Module | None = None  # a separate reference model held in memory (TR-DPO updates it)
        self.train(False)  # in eval mode from the start, as every model it holds (the model summary shows it)

    def setup(self, policy: PolicyGetter) -> None:
        """Called once the policy is built (``policy()`` returns it); loads what this reference holds."""

    def prepare(self, context: PrecomputeContext) -> None:
        """Called before training, validation or testing starts (the precomputed reference computes its cache)."""

    def token_logprobs(self, batch: PairBatch, view: str = MAIN) -> TokenLogProbs:
        """(2B, T) per-token reference log-probs of ``batch.view(view)``, without gradient."""
        with torch.no_grad():
            return self.score(batch.view(view))

    def score(self, sequences: Sequences) -> TokenLogProbs:
        """Run the reference model on ``sequences`` (references that hold or borrow a model)."""
        raise NotImplementedError

    def release(self) -> None:
        """Free what :meth:`setup` loaded, once it is no longer needed."""

    @contextmanager
    def scope(self) -> Iterator[nn.Module | None]:
        """The reference as a model (in eval mode) while the block runs, or ``None`` when none is held."""
        yield None

    def load_model(self) -> nn.Module:
        """A fresh frozen reference model from its source, for callers that need one while none is held."""
        return self.source.load_model().requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Reference:
        return super().train(False)  # the reference never trains, not even its dropout


class NoReference(Reference):
    """For losses that need no reference: nothing is loaded, and asking for log-probs is an error."""

    def score(self, sequences: Sequences) -> TokenLogProbs:
        raise RuntimeError("this loss declared `requires_reference = False`, so the run holds no reference")


class FrozenCopy(Reference):
    """A separate frozen model: a copy of the untouched policy, or loaded from ``source``.

    Args:
        copy_policy: copy the policy's weights at :meth:`setup` instead of loading ``source`` again.
    """

    def __init__(self, source: ModelSource, scorer: Scorer, copy_policy: bool = True) -> None:
        super().__init__(source, scorer)
        self.copy_policy = copy_policy

    def setup(self, policy: PolicyGetter) -> None:
        if self.model is None:
            self.model = copy.deepcopy(policy()) if self.copy_policy else self.source.load_model()
            self.model.requires_grad_(False).eval()

    def release(self) -> None:
        self.model = None
        gc.collect()

    def score(self, sequences: Sequences) -> TokenLogProbs:
        return self.scorer(self.model, sequences)

    @contextmanager
    def scope(self) -> Iterator[nn.Module | None]:
        yield self.model


class AdapterBase(Reference):
    """The policy's own base weights, its trainable adapter switched off (or its frozen SFT adapter switched on)."""

    def __init__(self, source: ModelSource, scorer: Scorer) -> None:
        super().__init__(replace(source, peft=None), scorer)  # the reference is the base (+ the SFT adapter)
        self.policy: PolicyGetter | None = None

    def setup(self, policy: PolicyGetter) -> None:
        self.policy = policy

    def score(self, sequences: Sequences) -> TokenLogProbs:
        with self.scope() as base:
            return self.scorer(base, sequences)

    @contextmanager
    def scope(self) -> Iterator[nn.Module | None]:
        with as_reference(self.policy()) as base:
            yield base


class Precomputed(Reference):
    """The log-probs of ``reference`` (a :class:`FrozenCopy` or :class:`AdapterBase`), computed once per split and
    prompt view before training and read from disk at every step; a separate model is then freed.

    Args:
        reference: what computes the log-probs when they are not cached yet.
        views: the prompt views the loss declared.
        batch_size: pairs per batch while computing (no gradients: can be larger than training's).
        directory: where caches live (``<cache root>/reference`` by default); each in a subdirectory named by
            its key.
    """

    def __init__(self, reference: FrozenCopy | AdapterBase, views: Iterable[str], batch_size: int = 16,
                 directory: str | Path | None = None) -> None:
        super().__init__(reference.source, reference.scorer)
        self.inner = reference
        self.views = sorted(views)
        self.batch_size = batch_size
        self.directory = Path(directory).expanduser() if directory is not None else cache_root("reference")
        self.cache: ReferenceCache | None = None
        self.policy: PolicyGetter | None = None

    def setup(self, policy: PolicyGetter) -> None:
        self.policy = policy  # the model itself is loaded only if the cache must be computed
        if isinstance(self.inner, AdapterBase):
            self.inner.setup(policy)

    def key(self, context: PrecomputeContext, splits: list[str]) -> str:
        """The cache key: the reference's weights by content, the data of each split, the views, the version."""
        return fingerprint({
            "version": CACHE_VERSION,
            "reference": self.source.fingerprint(),
            "data": {split: context.datamodule.split_fingerprint(split) for split in splits},
            "views": self.views,
        })

    def prepare(self, context: PrecomputeContext) -> None:
        if self.cache is not None:
            return
        datamodule = context.datamodule
        if not hasattr(datamodule, "ordered_dataloader"):
            raise TypeError("`model.precompute_reference` needs lightpref's PreferenceDataModule as the data")
        splits = [split for split in ("train", "val") if datamodule.split_dataset(split) is not None]
        key = self.key(context, splits)
        cache = ReferenceCache(key, self.directory / key, views=self.views)
        missing = [split for split in splits if not cache.load(split)]
        if not missing:
            rank_zero_info(f"lightpref: reusing the reference log-probs cached in {cache.directory} (same reference "
                           "weights, data and settings); delete that directory to compute them again")
        else:
            if isinstance(self.inner, FrozenCopy):
                self.inner.copy_policy = False  # the policy may be sharded or trained by now: load from the source
                self.inner.setup(self.policy)
                self.inner.model.to(context.device)
            for split in missing:
                self._compute(cache, split, context)
            self.inner.release()
        self.cache = cache

    def _compute(self, cache: ReferenceCache, split: str, context: PrecomputeContext) -> None:
        def loader(indices: list[int]) -> Iterable[PairBatch]:
            for batch in context.datamodule.ordered_dataloader(split, self.batch_size, indices):
                yield context.to_device(batch)

        size = len(context.datamodule.split_dataset(split))
        cache.build(split, size, loader, self.inner.score, context.rank, context.world_size, context.barrier)

    def token_logprobs(self, batch: PairBatch, view: str = MAIN) -> TokenLogProbs:
        if self.cache is None:
            raise RuntimeError("the precomputed reference is used before `prepare()` computed or loaded its cache")
        return self.cache.tokens(batch, view)

    @contextmanager
    def scope(self) -> Iterator[nn.Module | None]:
        with self.inner.scope() as model:  # the adapter-free base stays available; a freed copy yields None
            yield model


def build_reference(
    requires_reference: bool,
    policy_source: ModelSource,
    reference_source: ModelSource | None,
    scorer: Scorer,
    views: Iterable[str] = (),
    precompute: bool = False,
    batch_size: int = 16,
    cache_dir: str | None = None,
) -> Reference:
    """The reference a run needs: none (``requires_reference`` false), the adapter-free base (the policy has an
    adapter), else a frozen copy (of the policy, or of ``reference_source``); precomputed when asked."""
    if policy_source.has_adapter and reference_source is not None:
        raise ValueError("`model.reference` cannot be combined with `model.peft`/`model.sft_adapter`: with an "
                         "adapter the reference is the base model itself; remove one of them")
    if not requires_reference:  # its source, the initial policy, is what a KL estimate would compare against
        return NoReference(replace(policy_source, peft=None), scorer)
    if policy_source.has_adapter:
        reference: FrozenCopy | AdapterBase = AdapterBase(policy_source, scorer)
    else:
        reference = FrozenCopy(reference_source or policy_source, scorer, copy_policy=reference_source is None)
    if precompute:
        return Precomputed(reference, views, batch_size, cache_dir)
    return reference
