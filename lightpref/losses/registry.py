"""Finding losses by name through the ``lightpref.losses`` entry-point group.

lightpref's own losses are registered in that group by its own ``pyproject.toml``, so built-in and third-party
losses take this one code path. The group is read once (again only when ``sys.path`` changes) and a loss's module
is imported only when that loss is asked for: naming ``dpo`` never imports a plugin. A plugin that fails to load —
an ImportError, any other exception, even ``sys.exit()`` during its import — is reported with its entry point,
distribution and cause, and never stops the other losses from loading or being listed.
"""

from __future__ import annotations

import functools
import sys
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


def distribution_of(entry_point: EntryPoint) -> str:
    """``"name version"`` of the distribution that ships ``entry_point``, for messages."""
    dist = entry_point.dist
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"



@functools.lru_cache(maxsize=8)
def _claims(search_path: tuple[str, ...], group: str = GROUP) -> dict[str, tuple[EntryPoint, ...]]:
    """Every name in ``group`` with the entry points claiming it, read from the distributions on ``search_path``."""
    by_name: dict[str, list[EntryPoint]] = {}
    for entry_point in entry_points(group=group):
        claims = by_name.setdefault(entry_point.name, [])
        if all(claim.value != entry_point.value for claim in claims):  # the same package seen twice is one claim
            claims.append(entry_point)
    return {name: tuple(by_name[name]) for name in sorted(by_name)}


def claims_in(group: str) -> dict[str, tuple[EntryPoint, ...]]:
    """Every name of an entry-point group with the entry points claiming it, without importing any of them (read
    once, again only when ``sys.path`` changes). The reward losses' registry reads its own group through it."""
    return _claims(tuple(sys.path), group)


def _discovered() -> dict[str, tuple[EntryPoint, ...]]:
    return claims_in(GROUP)


def load_plugin(entry_point: EntryPoint, base: type, base_name: str, kind: str) -> tuple[type | None, str | None]:
    """``(the class, None)`` that ``entry_point`` names, or ``(None, why not)`` — whatever its import raises,
    ``sys.exit()`` included, or a class that is not a subclass of ``base`` (public name ``base_name``) — naming the
    ``kind`` of plugin, the entry point and its distribution."""
    prefix = f"{kind} plugin {entry_point.name!r} ({entry_point.value}) from {distribution_of(entry_point)}"
    try:
        loaded = entry_point.load()
    except KeyboardInterrupt:
        raise
    except SystemExit as exit_:  # a plugin calling sys.exit() on import must not end the command
        return None, f"{prefix}: its import called sys.exit({exit_.code!r})"
    except BaseException as err:  # a broken plugin must not take the registry down with it
        return None, f"{prefix}: import failed with {type(err).__name__}: {err}"
    if not (isinstance(loaded, type) and issubclass(loaded, base)):
        return None, f"{prefix}: it names {loaded!r}, which is not a subclass of {base_name}"
    return loaded, None


@functools.cache
def _load(entry_point: EntryPoint) -> LossEntry:
    loaded, error = load_plugin(entry_point, PreferenceLoss, "lightpref.losses.PreferenceLoss", "loss")
    return LossEntry(entry_point.name, distribution_of(entry_point), entry_point.value, loaded, error)


def _entry(name: str, claims: tuple[EntryPoint, ...]) -> LossEntry:
    if len(claims) > 1:
        owners = " and ".join(f"{claim.value} from {distribution_of(claim)}" for claim in claims)
        message = f"loss name {name!r} is claimed by more than one plugin: {owners}; uninstall one of them"
        return LossEntry(name, ", ".join(distribution_of(claim) for claim in claims), "", None, message)
    return _load(claims[0])


def registered_names() -> list[str]:
    """Every name in the entry-point group, in name order, without importing any loss."""
    return list(_discovered())


def registered_losses() -> dict[str, LossEntry]:
    """Every name in the entry-point group, in name order, each loaded or carrying its load error.

    This imports every loss module (to list summaries); :func:`loss_class` imports only the one asked for. Two entry
    points claiming one name make that name an error naming both.
    """
    return {name: _entry(name, claims) for name, claims in _discovered().items()}


def _unknown(name: str) -> LossRegistryError:
    known = ", ".join(registered_names()) or "none (is lightpref installed, e.g. `pip install -e .`?)"
    return LossRegistryError(
        f"unknown loss {name!r}; the losses registered in {GROUP!r} are: {known}. "
        "Run `lightpref losses` to see them with their summaries."
    )


def loss_class(name: str) -> type[PreferenceLoss]:
    """The loss class registered under ``name``; a clear error when it is unknown or cannot be loaded."""
    claims = _discovered().get(name)
    if claims is None:
        raise _unknown(name)
    entry = _entry(name, claims)
    if entry.loss_class is None:
        raise LossRegistryError(entry.error)
    return entry.loss_class


def class_path(name: str) -> str | None:
    """The dotted class path a registered name points to (``dpo`` → ``lightpref.losses.dpo.DPO``), found without
    importing anything; ``None`` for an unknown name or one claimed twice."""
    claims = _discovered().get(name)
    if claims is None or len(claims) != 1:
        return None
    module, _, attribute = claims[0].value.partition(":")
    return f"{module.strip()}.{attribute.strip()}" if attribute else None


def loaded_class_path(name: str) -> str | None:
    """The dotted class path of a registered name, once its entry point has been imported through the registry;
    ``None`` for an unknown name, one claimed twice, or one whose plugin fails to load (even by ``sys.exit()``),
    which :func:`loss_class` then reports. What a command line resolves a chosen loss name with: the plugin is
    imported here, where its failure is caught, rather than by whoever imports the class path next."""
    path = class_path(name)
    if path is None or _entry(name, _discovered()[name]).loss_class is None:
        return None
    return path


def registered_name(loss_type: type) -> str | None:
    """The name under which ``loss_type`` is registered (the first, in name order), found without importing."""
    target = f"{loss_type.__module__}.{loss_type.__qualname__}"
    return next((name for name in registered_names() if class_path(name) == target), None)


def build(name: str, **kwargs: object) -> PreferenceLoss:
    """Build a registered loss by name: ``build("dpo", beta=0.1)``."""
    return loss_class(name)(**kwargs)
