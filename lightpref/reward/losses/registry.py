"""Finding reward-model losses by name through the ``lightpref.reward_losses`` entry-point group.

The same rules as the preference losses' registry (:mod:`lightpref.losses.registry`): lightpref's own reward losses
are registered in the group by its own ``pyproject.toml``, a loss's module is imported only when it is asked for
(or listed), and a plugin that fails to load is reported with its entry point, distribution and cause without
stopping the others.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

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


@functools.lru_cache(maxsize=8)
def _claims(search_path: tuple[str, ...]) -> dict[str, tuple[EntryPoint, ...]]:
    by_name: dict[str, list[EntryPoint]] = {}
    for entry_point in entry_points(group=GROUP):
        claims = by_name.setdefault(entry_point.name, [])
        if all(claim.value != entry_point.value for claim in claims):  # the same package seen twice is one claim
            claims.append(entry_point)
    return {name: tuple(by_name[name]) for name in sorted(by_name)}


def _distribution(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


@functools.cache
def _load(name: str, claims: tuple[EntryPoint, ...]) -> RewardLossEntry:
    distribution = ", ".join(_distribution(claim) for claim in claims)
    if len(claims) > 1:
        owners = " and ".join(f"{claim.value} from {_distribution(claim)}" for claim in claims)
        return RewardLossEntry(name, distribution, None, f"reward loss name {name!r} is claimed by more than one "
                                                         f"plugin: {owners}; uninstall one of them")
    entry_point = claims[0]
    prefix = f"reward loss plugin {name!r} ({entry_point.value}) from {distribution}"
    try:
        loaded = entry_point.load()
    except KeyboardInterrupt:
        raise
    except SystemExit as exit_:  # a plugin calling sys.exit() on import must not end the command
        return RewardLossEntry(name, distribution, None, f"{prefix}: its import called sys.exit({exit_.code!r})")
    except BaseException as err:  # a broken plugin must not take the registry down with it
        return RewardLossEntry(name, distribution, None, f"{prefix}: import failed with {type(err).__name__}: {err}")
    if not (isinstance(loaded, type) and issubclass(loaded, RewardLoss)):
        return RewardLossEntry(name, distribution, None, f"{prefix}: it names {loaded!r}, which is not a subclass "
                                                         "of lightpref.reward.losses.RewardLoss")
    return RewardLossEntry(name, distribution, loaded)


def registered_names() -> list[str]:
    """Every name in the group, in name order, without importing any loss."""
    return list(_claims(tuple(sys.path)))


def registered_losses() -> dict[str, RewardLossEntry]:
    """Every name in the group, each loaded or carrying its load error."""
    return {name: _load(name, claims) for name, claims in _claims(tuple(sys.path)).items()}


def loss_class(name: str) -> type[RewardLoss]:
    """The reward-loss class registered under ``name``; a clear error when it is unknown or cannot be loaded."""
    claims = _claims(tuple(sys.path)).get(name)
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
