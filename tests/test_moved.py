"""Old import paths of moved modules resolve to the new modules, with a DeprecationWarning naming the new path."""

import importlib
import sys

import pytest
from jsonargparse import ArgumentParser

from lightpref.moved import MOVED


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_module_path_is_the_new_module(old: str, new: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_an_old_class_path_in_a_config_builds_the_class_at_its_new_path() -> None:
    from lightpref.training.schedules import WarmupCosineLR

    sys.modules.pop("lightpref.schedules", None)
    parser = ArgumentParser()
    parser.add_argument("--scheduler", type=type)
    with pytest.warns(DeprecationWarning, match="lightpref.training.schedules"):
        config = parser.parse_args(["--scheduler", "lightpref.schedules.WarmupCosineLR"])
    assert config.scheduler is WarmupCosineLR


def test_an_unknown_name_is_still_an_import_error() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("lightpref.no_such_module")
