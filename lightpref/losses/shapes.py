"""Which shape of data a loss consumes, the record it gets for each, and which data can feed which loss.

A loss declares ``consumes`` (a class attribute, :data:`~lightpref.batch.PAIRS` by default):

- ``PAIRS``: ``forward(policy: LogProbs, reference: LogProbs | None)``, one value per pair (every pairwise loss);
- ``RANKED``: ``forward(policy: RankedLogProbs, reference: RankedLogProbs | None)``, one value per group
  (listwise losses: ``plackett_luce``, ``info_nca``). ``length_normalized`` applies; per-token values, collision
  log-probs and prompt views are not provided for ranked records.
- ``UNPAIRED``: ``forward(policy: UnpairedLogProbs, reference: UnpairedLogProbs | None)``, one value per labelled
  completion (``kto``, ``apo_zero_unpaired``). A loss that sets ``needs_mismatched`` also gets the log-probs of each
  example's prompt with a mismatched completion (``record.mismatched``), from the same packed forward.

The data hold pairs or ranked groups (``PreferenceDataModule.shape``); :data:`FEEDS` says how each shape of data
reaches each shape of loss, and :func:`check_data_shape` stops a run, before any model loads, whose loss cannot
use its data. A new shape (e.g. single labelled completions with a mismatched extra forward) adds its constant, its
record type, its batch type and its rows in :data:`FEEDS`; nothing else in this contract changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightpref.batch import PAIRS, RANKED, UNPAIRED

FEEDS: dict[tuple[str, str], str] = {  # (data shape, loss shape) -> how the data reach the loss
    (PAIRS, PAIRS): "each pair as it is",
    (RANKED, PAIRS): "the pairs `model.group_pairs` forms inside each group, all sharing the group's forward",
    (PAIRS, RANKED): "each pair as a group of two, chosen scored above rejected",
    (RANKED, RANKED): "each group as it is",
    (UNPAIRED, UNPAIRED): "each labelled completion as it is, with its mismatched completion when the loss needs it",
}


@dataclass(frozen=True)
class UnpairedLogProbs:
    """Log-probabilities one model assigns to B labelled completions (summed over completion tokens, token means
    when the loss sets ``length_normalized``), and to each prompt with a mismatched completion when the loss sets
    ``needs_mismatched``.

    >>> record = UnpairedLogProbs.from_sums(torch.tensor([-3.0, -5.0]), torch.tensor([True, False]))
    >>> record.logps[record.labels].tolist(), record.lengths.tolist()
    ([-3.0], [1, 1])
    """

    logps: Tensor  # (B,)
    labels: Tensor  # (B,) bool, True on desirable completions
    lengths: Tensor  # (B,) completion token counts
    mismatched: Tensor | None = None  # (B,) log-probs of prompt b with a mismatched completion

    @classmethod
    def from_sums(cls, logps: Tensor, labels: Tensor, mismatched: Tensor | None = None) -> UnpairedLogProbs:
        """A record from per-example values alone (tests, plain tensors): 1 token per completion."""
        return cls(logps=logps, labels=labels.bool(), lengths=torch.ones_like(logps, dtype=torch.long),
                   mismatched=mismatched)


@dataclass(frozen=True)
class RankedLogProbs:
    """Log-probabilities one model assigns to the completions of G ranked groups, padded to (G, K), K the largest
    group. ``logps`` are summed over completion tokens (token means when the loss sets ``length_normalized``).

    >>> record = RankedLogProbs.from_sums(torch.tensor([[-3.0, -5.0, -4.0]]), torch.tensor([[2.0, 0.0, 1.0]]))
    >>> record.best().tolist(), record.worst().tolist()
    ([0], [1])
    """

    logps: Tensor  # (G, K) 0 where a group has fewer than K completions
    scores: Tensor  # (G, K) higher is better; ties allowed
    mask: Tensor  # (G, K) bool, True on real completions
    lengths: Tensor  # (G, K) completion token counts, 0 on padding

    @classmethod
    def from_sums(cls, logps: Tensor, scores: Tensor, mask: Tensor | None = None,
                  lengths: Tensor | None = None) -> RankedLogProbs:
        """A record from per-completion values alone (tests, plain tensors): all real, 1 token each by default."""
        mask = torch.ones_like(logps, dtype=torch.bool) if mask is None else mask
        lengths = mask.long() if lengths is None else lengths
        return cls(logps=logps, scores=scores, mask=mask, lengths=lengths)

    def best(self) -> Tensor:
        """(G,) the position of each group's highest-scored completion (the first, among ties)."""
        return self.scores.masked_fill(~self.mask, -torch.inf).argmax(-1)

    def worst(self) -> Tensor:
        """(G,) the position of each group's lowest-scored completion (the first, among ties)."""
        return self.scores.masked_fill(~self.mask, torch.inf).argmin(-1)

    def at(self, values: Tensor, positions: Tensor) -> Tensor:
        """(G,) ``values[g, positions[g]]`` of a (G, K) tensor."""
        return values.gather(-1, positions[:, None]).squeeze(-1)


def check_data_shape(loss: object, data_shape: str) -> None:
    """Stop with one message when ``loss`` cannot use data of ``data_shape``: no row of :data:`FEEDS` joins them, or
    the loss wants prompt views, which are tokenised for pairs only."""
    consumes = getattr(loss, "consumes", PAIRS)
    name = type(loss).__name__
    if (data_shape, consumes) not in FEEDS:
        usable = sorted(data for data, shape in FEEDS if shape == consumes)
        fix = (f"give it data of shape {' or '.join(usable)}" if usable else
               "no data lightpref reads has that shape") + ", or choose another loss (`lightpref losses`)"
        raise ValueError(f"the loss {name} consumes {consumes!r} records, which cannot be formed from the data's "
                         f"shape {data_shape!r}; {fix}")
    if data_shape != PAIRS and getattr(loss, "views", None):
        found = "ranked groups" if data_shape == RANKED else "labelled completions"
        raise ValueError(f"the loss {name} scores completions under extra prompt views ({sorted(loss.views)}), which "
                         f"are tokenised for pairs only, but the data are {found}; give pair data (prompt/chosen/"
                         "rejected) or choose a loss without views")
