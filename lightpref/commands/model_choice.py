"""Which LightningModule the ``model`` section of ``lightpref fit | validate | test`` builds.

By default the section holds a :class:`~lightpref.training.module.PreferenceModule`'s arguments, as every policy
config does.
A config (or ``--model.class_path``) that names another module trains that one instead, its arguments under
``init_args``::

    model:
      class_path: lightpref.reward.module.RewardModule   # or RewardModule
      init_args:
        pretrained: HuggingFaceTB/SmolLM2-135M-Instruct

The class is read from the YAML before the command line is built (``yaml.safe_load``: nothing in the file runs),
so the parser is built for that class, with its own options, help and checks.

>>> chosen_model(["--model.class_path", "RewardModule"], default=object).__name__
'RewardModule'
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

MODULES = {  # short names of lightpref's own LightningModules
    "PreferenceModule": "lightpref.training.module.PreferenceModule",
    "RewardModule": "lightpref.reward.module.RewardModule",
}


def named_class_path(args: Sequence[str]) -> str | None:
    """The ``model`` class path the arguments give, the last one winning as in the parser: a ``class_path`` in the
    ``model`` section of a ``--config`` file, or ``--model.class_path``. ``None`` when none names one.

    >>> named_class_path(["--model.class_path=RewardModule", "--trainer.max_steps", "3"])
    'RewardModule'
    """
    found = None
    for position, argument in enumerate(args):
        name, _, value = argument.partition("=")
        if not value and position + 1 < len(args):
            value = args[position + 1]
        if name == "--model.class_path":
            found = value
        elif name == "--config" and value and Path(value).is_file():
            section = _model_section(Path(value))
            if isinstance(section, dict) and isinstance(section.get("class_path"), str):
                found = section["class_path"]
    return found


def _model_section(path: Path) -> Any:
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # the parser reads the file again and reports what is wrong with it
    return settings.get("model") if isinstance(settings, dict) else None


def chosen_model(args: Sequence[str], default: type | None) -> type | None:
    """The LightningModule class the ``model`` section builds: the one its ``class_path`` names, else ``default``."""
    from lightning.pytorch import LightningModule

    path = named_class_path(args)
    if path is None:
        return default
    full = MODULES.get(path, path)
    module_name, _, class_name = full.rpartition(".")
    fix = f"give a LightningModule's import path, or one of {sorted(MODULES)}"
    if not module_name:
        raise ValueError(f"`model.class_path`: {path!r} is not a module lightpref knows; {fix}")
    try:
        found = getattr(importlib.import_module(module_name), class_name, None)
    except ImportError as error:
        raise ValueError(f"`model.class_path`: cannot import {module_name!r} ({error}); {fix}") from None
    if not (isinstance(found, type) and issubclass(found, LightningModule)):
        raise ValueError(f"`model.class_path`: {full!r} is not a LightningModule; {fix}")
    return found
