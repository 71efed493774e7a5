"""Finding reward-model losses by name through the ``lightpref.reward_losses`` entry-point group.

The same rules as the preference losses' registry (:mod:`lightpref.losses.registry`): lightpref's own reward losses
are registered in the group by its own ``pyproject.toml``, a loss's module is imported only when it is asked for
(or listed), and a plugin that fails to load is reported with its entry point, distribution and cause without
stopping the others.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import EntryPoint

from lightpref.losses.registry import claims_in, distribution_of, load_plugin
from lightpref.reward.losses.base import RewardLoss

GROUP = "lightpref.reward_losses"


class RewardLossRegistryError(ValueError):
    """A reward-loss name that cannot be resolved to exactly one loss class."""


@dataclass(frozen=True)
class RewardLossEntry:
    """One name in the registry: the loss class, or why it cannot be used."""

    name: str
    distribution: str
    loss_class: type[RewardLoss] | None
    error: str | None = None


@functools.cache
def _load(name: str, claims: tuple[EntryPoint, ...]) -> RewardLossEntry:
    distribution = ", ".join(distribution_of(claim) for claim in claims)
    if len(claims) > 1:
        owners = " and ".join(f"{claim.value} from {distribution_of(claim)}" for claim in claims)
        return RewardLossEntry(name, distribution, None, f"reward loss name {name!r} is claimed by more than one "
                                                         f"plugin: {owners}; uninstall one of them")
    loaded, error = load_plugin(claims[0], RewardLoss, "lightpref.reward.losses.RewardLoss", "reward loss")
    return RewardLossEntry(name, distribution, loaded, error)


def registered_names() -> list[str]:
    """Every name in the group, in name order, without importing any loss."""
    return list(claims_in(GROUP))


def registered_losses() -> dict[str, RewardLossEntry]:
    """Every name in the group, each loaded or carrying its load error."""
    return {name: _load(name, claims) for name, claims in claims_in(GROUP).items()}


def loaded_class_path(name: str) -> str | None:
    """The dotted class path of a registered name once its plugin has loaded (``bradley_terry`` →
    ``lightpref.reward.losses.bradley_terry.BradleyTerry``); ``None`` for an unknown name, one claimed twice, or one
    whose plugin fails to load, which :func:`loss_class` then reports. How ``class_path: bradley_terry`` resolves."""
    claims = claims_in(GROUP).get(name)
    if claims is None:
        return None
    loaded = _load(name, claims).loss_class
    return None if loaded is None else f"{loaded.__module__}.{loaded.__qualname__}"


def loss_class(name: str) -> type[RewardLoss]:
    """The reward-loss class registered under ``name``; a clear error when it is unknown or cannot be loaded."""
    claims = claims_in(GROUP).get(name)
    if claims is None:
        known = ", ".join(registered_names()) or "none (is lightpref installed, e.g. `pip install -e .`?)"
        raise RewardLossRegistryError(f"unknown reward loss {name!r}; the reward losses registered in {GROUP!r} are: "
                                      f"{known}. Run `lightpref reward losses` to see them with their summaries.")
    entry = _load(name, claims)
    if entry.loss_class is None:
        raise RewardLossRegistryError(entry.error)
    return entry.loss_class


def build(name: str, **kwargs: object) -> RewardLoss:
    """Build a registered reward loss by name: ``build("bradley_terry", center_rewards_coefficient=0.01)``."""
    return loss_class(name)(**kwargs)
