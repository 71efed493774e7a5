"""Old import paths of modules that moved into sub-packages keep working, with a ``DeprecationWarning``.

Configs name classes by import path (``class_path: lightpref.module.PreferenceModule``), so a config written for an
older lightpref keeps running: importing an old path gives the module at its new one, and the warning names that
new path. :func:`install` adds the finder once, from ``lightpref/__init__.py``; it answers only for the names in
:data:`MOVED` and leaves every other import to Python.

>>> import warnings
>>> with warnings.catch_warnings(record=True):
...     warnings.simplefilter("always")
...     from lightpref.schedules import WarmupCosineLR
>>> WarmupCosineLR.__module__
'lightpref.training.schedules'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType

MOVED = {
    "lightpref.module": "lightpref.training.module",
    "lightpref.reference": "lightpref.training.reference",
    "lightpref.reference_cache": "lightpref.training.reference_cache",
    "lightpref.packing": "lightpref.training.packing",
    "lightpref.forward": "lightpref.training.forward",
    "lightpref.records": "lightpref.training.records",
    "lightpref.group_pairs": "lightpref.training.group_pairs",
    "lightpref.metrics": "lightpref.training.metrics",
    "lightpref.schedules": "lightpref.training.schedules",
    "lightpref.callbacks": "lightpref.training.callbacks",
    "lightpref.checkpointing": "lightpref.run.checkpointing",
    "lightpref.resume": "lightpref.run.resume",
    "lightpref.safe_load": "lightpref.run.safe_load",
    "lightpref.guards": "lightpref.run.guards",
    "lightpref.strategies": "lightpref.run.strategies",
    "lightpref.sharding": "lightpref.run.sharding",
    "lightpref.run_directory": "lightpref.run.directory",
    "lightpref.run_callbacks": "lightpref.run.callbacks",
    "lightpref.run_summary": "lightpref.run.summary",
    "lightpref.pretrained": "lightpref.models.pretrained",
    "lightpref.model_paths": "lightpref.models.paths",
    "lightpref.adapters": "lightpref.models.adapters",
    "lightpref.export": "lightpref.models.export",
    "lightpref.trainer_cli": "lightpref.commands.trainer_cli",
    "lightpref.usage_errors": "lightpref.commands.usage_errors",
    "lightpref.iterate.pairing": "lightpref.evaluation.pairing",
}
"""Each old module path and the path it moved to."""

MOVED_NAMES = {
    "lightpref.run.checkpointing": {"SameCheckpointEverywhere": "lightpref.run.last"},
    "lightpref.run.resume": {name: "lightpref.run.last" for name in (
        "CheckpointPathCLI", "SPECIAL_PATHS", "checkpoint_directories", "newest_checkpoint", "saved_record")},
    "lightpref.commands.trainer_cli": {"resolve_registered_loss_names": "lightpref.commands.loss_names"},
}
"""Names that left a moved module for another one: reached through the old module path, they still resolve."""


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of :data:`MOVED` and loads it as the module at its new path."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old path will be removed)",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        if new in MOVED_NAMES and "__getattr__" not in vars(module):
            module.__getattr__ = _forwarder(new)  # type: ignore[attr-defined]  # PEP 562: names not found here
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new path has already been imported."""


def _forwarder(module_name: str) -> Callable[[str], object]:
    """A module ``__getattr__`` that finds the names :data:`MOVED_NAMES` lists for ``module_name`` where they went."""

    def forward(name: str) -> object:
        target = MOVED_NAMES[module_name].get(name)
        if target is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        warnings.warn(f"{module_name}.{name} moved to {target}.{name}; import it from there", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(target), name)

    return forward


def install() -> None:
    """Adds the finder to ``sys.meta_path`` unless it is there already."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
