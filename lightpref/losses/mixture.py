"""Mixture: a weighted sum of preference losses, each with its own arguments (RPO, MPO and the like)."""

from __future__ import annotations

import math

from torch import Tensor, nn

from lightpref.batch import PAIRS
from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss
from lightpref.losses.registry import registered_name
from lightpref.views import PromptView


def default_names(losses: list[PreferenceLoss]) -> list[str]:
    """Each part's registered name (its class name, lower-cased, if unregistered), made unique with ``_2``, …."""
    names: list[str] = []
    for loss in losses:
        base = registered_name(type(loss)) or type(loss).__name__.lower()
        name, copy = base, 1
        while name in names:
            copy += 1
            name = f"{base}_{copy}"
        names.append(name)
    return names


def merged_views(losses: list[PreferenceLoss]) -> dict[str, PromptView]:
    """The union of the parts' prompt views; one name defined two ways is an error."""
    views: dict[str, PromptView] = {}
    for loss in losses:
        for name, view in loss.views.items():
            if name in views and views[name] != view:
                raise ValueError(
                    f"two losses of the mixture define the prompt view {name!r} differently ({views[name]!r} and "
                    f"{view!r}); give them the same settings or use losses whose views are named apart"
                )
            views[name] = view
    return views


def check_parts(losses: list[PreferenceLoss], weights: list[float]) -> None:
    """Reject an empty mixture, a part that is not a loss, and missing or non-finite weights."""
    if not losses:
        raise ValueError("`losses` of a mixture must list at least one loss")
    for index, loss in enumerate(losses):
        if not isinstance(loss, PreferenceLoss):
            raise TypeError(f"`losses[{index}]` of a mixture must be a PreferenceLoss, got {type(loss).__name__}")
        if loss.consumes != PAIRS:
            raise ValueError(f"`losses[{index}]` of a mixture ({type(loss).__name__}) consumes {loss.consumes!r} "
                             "records; a mixture combines pairwise losses only")
    if len(weights) != len(losses):
        raise ValueError(f"a mixture needs one weight per loss, got {len(losses)} losses and {len(weights)} weights")
    if not all(isinstance(weight, (int, float)) and math.isfinite(weight) for weight in weights):
        raise ValueError(f"`weights` of a mixture must be finite numbers, got {list(weights)!r}")


class Mixture(PreferenceLoss):
    """A weighted sum of losses: ``L = Σ_i w_i·L_i``, per pair.

    Each part is built with its own arguments and gets the record it asked for: the mixture asks the module for
    summed log-probs (its ``length_normalized`` is false) and hands a part that wants token means
    ``record.token_mean()`` (views included), and a reference-free part ``reference=None``. The mixture needs a
    reference if any part does, per-token or collision log-probs if any part does, and the union of the parts'
    prompt views. Rewards come from the first part that uses a reference (else the first part). Each part's
    per-pair loss is logged as ``<name>/loss`` and its metrics under ``<name>/`` (a metric already named
    ``<name>/…`` keeps its name). RPO is DPO + α·SFT (see ``rpo``); MPO is e.g. DPO + BCO + SFT.

    Args:
        losses: the parts, each a ``PreferenceLoss`` (``class_path``/``init_args`` in a config).
        weights: one finite weight per part.
        names: metric prefixes, one per part; by default each part's registered name (``dpo``, ``sft``, …).
    """

    summary = "weighted sum Σ wᵢ·Lᵢ of losses, each with its own arguments (RPO, MPO, …)"
    reference_note = "if any part does"  # what `lightpref losses` shows: the parts decide
    length_normalized = False

    def __init__(self, losses: list[PreferenceLoss], weights: list[float], names: list[str] | None = None) -> None:
        super().__init__()
        check_parts(losses, weights)
        names = default_names(losses) if names is None else list(names)
        if len(names) != len(losses) or len(set(names)) != len(names) or not all(n and "/" not in n for n in names):
            raise ValueError(f"`names` of a mixture must be {len(losses)} distinct names without '/', got {names!r}")
        self.parts = nn.ModuleList(losses)
        self.weights = [float(weight) for weight in weights]
        self.names = names
        self.requires_reference = any(loss.requires_reference for loss in losses)
        self.needs_token_logps = any(loss.needs_token_logps for loss in losses)
        self.needs_collision_logps = any(loss.needs_collision_logps for loss in losses)
        self.views = merged_views(losses)
        self.rewards_from = next((i for i, loss in enumerate(losses) if loss.requires_reference), 0)

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        losses: Tensor | float = 0.0
        outputs: list[LossOutput] = []
        metrics: dict[str, Tensor] = {}
        for name, weight, part in zip(self.names, self.weights, self.parts, strict=True):
            part_policy = policy.token_mean() if part.length_normalized else policy
            part_reference = None
            if part.requires_reference:
                part_reference = reference.token_mean() if part.length_normalized else reference
            output = part(part_policy, part_reference)
            outputs.append(output)
            losses = losses + weight * output.losses  # (B,)
            metrics[f"{name}/loss"] = output.losses.detach()
            for key, value in output.metrics.items():
                metrics[key if key.startswith(f"{name}/") else f"{name}/{key}"] = value
        return LossOutput(
            losses=losses,
            chosen_rewards=outputs[self.rewards_from].chosen_rewards,
            rejected_rewards=outputs[self.rewards_from].rejected_rewards,
            metrics=metrics,
        )
