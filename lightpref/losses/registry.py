"""Finding losses by name through the ``lightpref.losses`` entry-point group.

lightpref's own losses are registered in that group by its own ``pyproject.toml``, so built-in and third-party
losses take this one code path. A plugin that fails to load is reported with its entry point, distribution and
cause, and never stops the other losses from loading or being listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from lightpref.losses.base import PreferenceLoss

GROUP = "lightpref.losses"


class LossRegistryError(ValueError):
    """A loss name that cannot be resolved to exactly one loss class."""


@dataclass(frozen=True)
class LossEntry:
    """One name in the registry: the loss class, or why it cannot be used."""

    name: str
    distribution: str
    target: str  # "module:attribute" as written in the entry point
    loss_class: type[PreferenceLoss] | None
    error: str | None = None


def _distribution(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"


def _load(entry_point: EntryPoint) -> LossEntry:
    distribution = _distribution(entry_point)

    def failed(cause: str) -> LossEntry:
        message = f"loss plugin {entry_point.name!r} ({entry_point.value}) from {distribution}: {cause}"
        return LossEntry(entry_point.name, distribution, entry_point.value, None, message)

    try:
        loaded = entry_point.load()
    except Exception as err:  # a broken plugin must not take the registry down with it
        return failed(f"import failed with {type(err).__name__}: {err}")
    if not (isinstance(loaded, type) and issubclass(loaded, PreferenceLoss)):
        return failed(f"it names {loaded!r}, which is not a subclass of lightpref.losses.PreferenceLoss")
    return LossEntry(entry_point.name, distribution, entry_point.value, loaded)


def registered_losses() -> dict[str, LossEntry]:
    """Every name in the entry-point group, in name order, each loaded or carrying its load error.

    Two entry points claiming one name make that name an error naming both.
    """
    by_name: dict[str, list[EntryPoint]] = {}
    for entry_point in entry_points(group=GROUP):
        claims = by_name.setdefault(entry_point.name, [])
        if all(claim.value != entry_point.value for claim in claims):  # the same package seen twice is one claim
            claims.append(entry_point)
    registry: dict[str, LossEntry] = {}
    for name in sorted(by_name):
        claims = by_name[name]
        if len(claims) > 1:
            owners = " and ".join(f"{claim.value} from {_distribution(claim)}" for claim in claims)
            message = f"loss name {name!r} is claimed by more than one plugin: {owners}; uninstall one of them"
            registry[name] = LossEntry(name, ", ".join(_distribution(c) for c in claims), "", None, message)
        else:
            registry[name] = _load(claims[0])
    return registry


def loss_class(name: str) -> type[PreferenceLoss]:
    """The loss class registered under ``name``; a clear error when it is unknown or cannot be loaded."""
    registry = registered_losses()
    entry = registry.get(name)
    if entry is None:
        known = ", ".join(registry) or "none (is lightpref installed, e.g. `pip install -e .`?)"
        raise LossRegistryError(
            f"unknown loss {name!r}; the losses registered in {GROUP!r} are: {known}. "
            "Run `lightpref losses` to see them with their summaries."
        )
    if entry.loss_class is None:
        raise LossRegistryError(entry.error)
    return entry.loss_class


def build(name: str, **kwargs: object) -> PreferenceLoss:
    """Build a registered loss by name: ``build("dpo", beta=0.1)``."""
    return loss_class(name)(**kwargs)
