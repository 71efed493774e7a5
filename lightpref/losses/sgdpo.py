"""SGDPO: Self-Guided DPO, where sampled pilot terms give the chosen and rejected rewards separate weights."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import torch
from torch import Tensor

from lightpref.losses.base import (
    LogProbs,
    LossOutput,
    PreferenceLoss,
    check_beta,
    check_label_smoothing,
    log_ratios,
    smoothed_sigmoid_loss,
)


def sample_positions(mask: Tensor, counts: Tensor, generator: torch.Generator) -> Tensor:
    """``counts[b]`` distinct positions drawn uniformly at random among the ``True`` entries of each row ``mask[b]``.

    Vectorised over rows: every position gets an i.i.d. uniform key (drawn on the CPU from ``generator``, then moved
    to ``mask``'s device), positions outside the mask get ``+inf``, and the ``counts[b]`` smallest keys of row b win,
    which is a uniformly random subset of that size. A row with fewer ``True`` entries than asked gets all of them.

    >>> mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    >>> subset = sample_positions(mask, torch.tensor([2, 1]), torch.Generator().manual_seed(0))
    >>> subset.sum(-1).tolist(), bool((subset & ~mask).any())
    ([2, 1], False)

    Args:
        mask: (B, T) bool, the positions that may be drawn (a completion's tokens).
        counts: (B,) integers, how many positions to draw in each row.
        generator: the CPU generator the draw comes from.

    Returns:
        (B, T) bool, ``True`` at the drawn positions.
    """
    mask = mask.bool()
    keys = torch.rand(mask.shape, generator=generator).to(mask.device)  # (B, T)
    keys = keys.masked_fill(~mask, float("inf"))  # positions outside the mask rank last
    ranks = keys.argsort(dim=-1).argsort(dim=-1)  # (B, T) rank of each key within its row
    return (ranks < counts.to(mask.device).unsqueeze(-1)) & mask


def _check_ratio(name: str, ratio: float) -> Fraction:
    """Validate a sampling ratio in ``(0, 1]`` and return it as an exact fraction (``0.7`` is 7/10, not 0.6999…)."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ValueError(
            f"`{name}` must be in (0, 1], got {ratio!r}; it is the fraction of the shorter completion's tokens "
            "sampled for the pilot (the paper searches 0.6, 0.7, …, 1.0)"
        )
    return Fraction(repr(float(ratio))).limit_denominator(10**6)


def _check_token_record(record: LogProbs | None, role: str) -> None:
    fields = ("chosen_tokens", "rejected_tokens", "chosen_mask", "rejected_mask")
    if record is None or any(getattr(record, name) is None for name in fields):
        raise ValueError(
            f"SGDPO needs per-token log-probs and completion masks in the {role} record (it sets "
            "`needs_token_logps = True`); the module must fill `chosen_tokens`, `rejected_tokens`, `chosen_mask` and "
            "`rejected_mask`, also when reference log-probs are precomputed"
        )


class SGDPO(PreferenceLoss):
    """Self-Guided DPO: each reward is contrasted with a detached pilot sampled from the other response.

    Zhu et al., ACL Findings 2025, https://arxiv.org/abs/2505.12435. Per pair, with ``m = min(n⁺, n⁻)`` completion
    tokens, ``S₁`` = ``max(⌊m·r₁⌋, 1)`` random positions of y⁺ and ``S₂`` = ``max(⌊m·r₂⌋, 1)`` of y⁻ (drawn afresh
    at every call), pilots ``Y₁ = ⊥Σ_{t∈S₁}(log π − log π_ref)(y⁺_t)``, ``Y₂`` likewise on ``S₂``, and
    ``f(z) = −(1−ε)·logσ(z) − ε·logσ(−z)``::

        L = ½·f(β·(ρc − Y₂)) + ½·f(β·(Y₁ − ρr))

    The chosen log-prob is trained only through the first term, with weight ``σ(−β·(ρc − Y₂))``, the rejected only
    through the second, with ``σ(−β·(Y₁ − ρr))``. Draws come from a generator owned by the loss, seeded from
    ``seed`` or else from ``torch.initial_seed()`` (the run's seed) at the first call, and saved in the state dict so
    a resumed run continues the same draws.

    Metrics (per pair): ``sgdpo/pilot_chosen`` (Y₁), ``sgdpo/pilot_rejected`` (Y₂), ``sgdpo/logits_chosen``
    (β·(ρc − Y₂)), ``sgdpo/logits_rejected`` (β·(Y₁ − ρr)).

    Args:
        beta: temperature β of the implicit reward ``β·ρ``.
        chosen_ratio: r₁ in ``(0, 1]``, the share of the shorter completion sampled for the chosen pilot Y₁.
        rejected_ratio: r₂ in ``(0, 1]``, the same for the rejected pilot Y₂.
        label_smoothing: ε in ``[0, 0.5]``, applied to both terms as in conservative DPO.
        seed: seed of the position sampler; ``None`` takes ``torch.initial_seed()`` at the first call.
    """

    summary = "SGDPO ½f(β(ρc − Y₂)) + ½f(β(Y₁ − ρr)) with detached, randomly sampled token pilots"
    needs_token_logps = True

    def __init__(
        self,
        beta: float = 0.1,
        chosen_ratio: float = 0.6,
        rejected_ratio: float = 0.9,
        label_smoothing: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        check_beta(beta)
        self._chosen_fraction = _check_ratio("chosen_ratio", chosen_ratio)
        self._rejected_fraction = _check_ratio("rejected_ratio", rejected_ratio)
        check_label_smoothing(label_smoothing)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"`seed` must be an integer or None (the run's seed), got {seed!r}")
        self.beta = beta
        self.chosen_ratio = chosen_ratio
        self.rejected_ratio = rejected_ratio
        self.label_smoothing = label_smoothing
        self.seed = seed
        self._generator: torch.Generator | None = None  # created at the first draw or when a state is loaded

    @property
    def generator(self) -> torch.Generator:
        """The CPU generator of the position draws, seeded on first use."""
        if self._generator is None:
            self._generator = torch.Generator()
            self._generator.manual_seed(torch.initial_seed() if self.seed is None else self.seed)
        return self._generator

    def subset_sizes(self, chosen_mask: Tensor, rejected_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(k₁, k₂)``, each (B,): ``max(⌊m·r⌋, 1)`` with ``m = min(n⁺, n⁻)``, in exact integer arithmetic."""
        shortest = torch.minimum(chosen_mask.sum(-1), rejected_mask.sum(-1)).long()  # (B,) m

        def size(ratio: Fraction) -> Tensor:
            return (shortest * ratio.numerator).div(ratio.denominator, rounding_mode="floor").clamp(min=1)

        return size(self._chosen_fraction), size(self._rejected_fraction)

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        _check_token_record(policy, "policy")
        chosen_counts, rejected_counts = self.subset_sizes(policy.chosen_mask, policy.rejected_mask)
        chosen_subset = sample_positions(policy.chosen_mask, chosen_counts, self.generator)  # (B, T) S₁
        rejected_subset = sample_positions(policy.rejected_mask, rejected_counts, self.generator)  # (B, T) S₂
        return self.pilot_losses(policy, reference, chosen_subset, rejected_subset)

    def pilot_losses(
        self, policy: LogProbs, reference: LogProbs | None, chosen_subset: Tensor, rejected_subset: Tensor
    ) -> LossOutput:
        """The loss for given position subsets ``S₁`` (of y⁺) and ``S₂`` (of y⁻), each (B, T) bool.

        :meth:`forward` draws the subsets at random and calls this; tests call it with fixed ones.
        """
        _check_token_record(policy, "policy")
        _check_token_record(reference, "reference")
        if chosen_subset.shape != policy.chosen_tokens.shape or rejected_subset.shape != policy.rejected_tokens.shape:
            raise ValueError(
                f"position subsets must be shaped like the per-token log-probs: got {tuple(chosen_subset.shape)} and "
                f"{tuple(rejected_subset.shape)} for {tuple(policy.chosen_tokens.shape)} and "
                f"{tuple(policy.rejected_tokens.shape)}"
            )
        chosen_token_ratios = (policy.chosen_tokens - reference.chosen_tokens).detach()  # (B, T)
        rejected_token_ratios = (policy.rejected_tokens - reference.rejected_tokens).detach()  # (B, T)
        chosen_pilot = torch.where(chosen_subset.bool(), chosen_token_ratios, 0.0).sum(-1)  # (B,) Y₁
        rejected_pilot = torch.where(rejected_subset.bool(), rejected_token_ratios, 0.0).sum(-1)  # (B,) Y₂
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        chosen_logits = self.beta * (chosen_ratio - rejected_pilot)  # β·z₁
        rejected_logits = self.beta * (chosen_pilot - rejected_ratio)  # β·z₂
        chosen_term = smoothed_sigmoid_loss(chosen_logits, self.label_smoothing)  # the only path to pc
        rejected_term = smoothed_sigmoid_loss(rejected_logits, self.label_smoothing)  # the only path to pr
        return LossOutput(
            losses=0.5 * (chosen_term + rejected_term),
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
            metrics={
                "sgdpo/pilot_chosen": chosen_pilot,
                "sgdpo/pilot_rejected": rejected_pilot,
                "sgdpo/logits_chosen": chosen_logits.detach(),
                "sgdpo/logits_rejected": rejected_logits.detach(),
            },
        )

    def get_extra_state(self) -> dict[str, Any]:
        """The sampler's generator state (``None`` before the first draw, so a later run still seeds lazily)."""
        return {"generator_state": None if self._generator is None else self._generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        generator_state = state.get("generator_state")
        if generator_state is None:
            self._generator = None
            return
        self._generator = torch.Generator()
        self._generator.set_state(generator_state.cpu())
