"""Registered loss names (``dpo``) as class paths, in every parser lightpref builds.

``--model.loss dpo --model.loss.init_args.beta 0.2``, or in YAML ``loss: {class_path: dpo, init_args: {beta: 0.2}}``,
work as a class path would. Neither jsonargparse (4.x) nor Lightning has a public way to do this: jsonargparse
resolves a short ``class_path`` only by the class names of subclasses already imported, and Lightning 2's
``LightningCLI`` has no registry of names for a parameter's classes (its optimiser and scheduler registries were
removed). So :func:`resolve_registered_loss_names` wraps two of jsonargparse's private functions, checks that they
exist (a clear error names the jsonargparse releases lightpref supports), and is called by
:class:`~lightpref.commands.usage_errors.OneLineErrors`, the base of every parser lightpref builds (Lightning's for
the commands that train, jsonargparse's for the others), so none has to remember it.
"""

from __future__ import annotations

import importlib.metadata
import typing
from typing import Any

from lightpref.losses import PreferenceLoss
from lightpref.losses.registry import loaded_class_path


def is_loss_type(typehint: Any, base: type = PreferenceLoss) -> bool:
    """Whether ``typehint`` takes a ``base`` (a preference loss by default), alone or in a union."""
    if isinstance(typehint, tuple):
        return any(is_loss_type(part, base) for part in typehint)
    if isinstance(typehint, type):
        return issubclass(typehint, base)
    return any(is_loss_type(part, base) for part in typing.get_args(typehint))


def _is_reward_loss(typehint: Any) -> bool:
    from lightpref.reward.losses import RewardLoss

    return is_loss_type(typehint, RewardLoss)


def _registered_class_path(typehint: Any, name: str) -> str | None:
    """The class a registered name stands for where ``typehint`` takes a preference loss or a reward loss."""
    from lightpref.reward.losses.registry import loaded_class_path as reward_class_path

    if is_loss_type(typehint):
        return loaded_class_path(name)  # a plugin failing to import is reported by the registry, by name
    return reward_class_path(name) if _is_reward_loss(typehint) else None


def resolve_registered_loss_names() -> None:
    """Teach jsonargparse that a registered loss name (``dpo``) names its class, as a class name (``DPO``) does, and
    that a new loss starts from its own defaults.

    jsonargparse resolves a short class path by the names of the subclasses already imported, which are class names,
    not registry names, and only after their plugin was imported. This wraps its resolver so that, for a parameter
    typed ``PreferenceLoss`` (or ``RewardLoss``), a registered name resolves to the class its entry point names,
    without importing any other plugin; every other name is resolved as before.

    When a later config or flag changes the class, jsonargparse keeps the earlier class's arguments that the new one
    also accepts — defaults included. For losses that is wrong: ``--model.loss simpo`` over a config's ``loss: dpo``
    would train SimPO with DPO's β = 0.1 instead of its own 2.0. So a loss given anew drops the old loss's arguments;
    arguments given after it (``--model.loss simpo --model.loss.init_args.beta 2.5``) apply as usual.
    """
    from jsonargparse import _typehints

    needed = ("resolve_class_path_by_name", "discard_init_args_on_class_path_change", "subclass_spec_as_namespace",
              "import_object")
    missing = [name for name in needed if not callable(getattr(_typehints, name, None))]
    if missing:  # private functions: a jsonargparse release may rename them
        version = importlib.metadata.version("jsonargparse")
        raise RuntimeError(
            f"lightpref cannot resolve loss names with jsonargparse {version} (it lacks {', '.join(missing)}); "
            "install a release lightpref supports: pip install 'jsonargparse[signatures]>=4.32,<5'"
        )
    resolve_original = _typehints.resolve_class_path_by_name
    if getattr(resolve_original, "resolves_loss_names", False):
        return
    discard_original = _typehints.discard_init_args_on_class_path_change

    def resolve(cls: Any, name: str) -> str:
        if isinstance(name, str) and "." not in name:
            path = _registered_class_path(cls, name)
            if path is not None:
                return path
        return resolve_original(cls, name)

    def discard(parser_or_action: Any, previous: Any, value: Any) -> None:
        if previous and "init_args" in previous and previous["class_path"] != value["class_path"]:
            new = _importable(value["class_path"])
            if is_loss_type(new) or _is_reward_loss(new):
                previous = _typehints.subclass_spec_as_namespace(previous)
                for key in list(previous.init_args.keys()):
                    previous.init_args.pop(key)
                return
        discard_original(parser_or_action, previous, value)

    resolve.resolves_loss_names = True  # type: ignore[attr-defined]
    _typehints.resolve_class_path_by_name = resolve
    _typehints.discard_init_args_on_class_path_change = discard


def _importable(path: Any) -> Any:
    from jsonargparse import _typehints

    try:
        return _typehints.import_object(path)
    except Exception:  # not a class path: jsonargparse reports it as it does any other
        return None
