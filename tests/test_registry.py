"""The entry-point registry: one path for built-in and third-party losses, and clear errors for broken plugins."""

import sys
import textwrap
from importlib.metadata import entry_points

import pytest

from lightpref.cli import main
from lightpref.losses import (
    LossRegistryError,
    PreferenceLoss,
    build,
    loss_class,
    registered_losses,
    registered_name,
    registered_names,
    registry,
)
from lightpref.losses.dpo import DPO
from lightpref.losses.registry import class_path


def fake_distribution(root, name, entry_points, modules):
    """Install a distribution by writing its dist-info and modules into ``root`` (which goes on sys.path)."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "\n".join(f"{key} = {value}" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lightpref.losses]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
from lightpref.losses import PreferenceLoss

class Good(PreferenceLoss):
    '''A loss that is fine.'''
    requires_reference = False
"""


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtin_losses_come_through_entry_points():
    registry = registered_losses()
    assert registry["dpo"].loss_class is DPO
    assert registry["dpo"].distribution.startswith("lightpref ")
    assert isinstance(build("dpo", beta=0.3), DPO) and build("dpo", beta=0.3).beta == 0.3


def test_unknown_name_lists_names_found_at_run_time(plugins):
    fake_distribution(plugins, "good-plugin", {"good": "good_loss:Good"}, {"good_loss": GOOD})
    with pytest.raises(LossRegistryError) as error:
        loss_class("no_such_loss")
    message = str(error.value)
    assert "no_such_loss" in message and "dpo" in message and "good" in message


def test_broken_plugin_is_reported_and_others_still_load(plugins):
    fake_distribution(
        plugins, "broken-plugin", {"broken": "broken_loss:Broken"}, {"broken_loss": "import does_not_exist\n"}
    )
    fake_distribution(plugins, "good-plugin", {"good": "good_loss:Good"}, {"good_loss": GOOD})
    registry = registered_losses()
    assert registry["good"].loss_class.__name__ == "Good"
    assert registry["dpo"].loss_class is DPO
    error = registry["broken"].error
    assert "'broken'" in error and "broken_loss:Broken" in error and "broken-plugin 1.0" in error
    assert "ModuleNotFoundError" in error and "does_not_exist" in error
    with pytest.raises(LossRegistryError, match="broken-plugin 1.0"):
        build("broken")


def test_entry_point_that_is_not_a_loss_class(plugins):
    fake_distribution(plugins, "odd-plugin", {"odd": "odd_loss:not_a_loss"}, {"odd_loss": "def not_a_loss(): pass\n"})
    with pytest.raises(LossRegistryError, match="not a subclass of lightpref.losses.PreferenceLoss"):
        build("odd")


def test_two_plugins_claiming_one_name_names_both(plugins):
    fake_distribution(plugins, "first-plugin", {"twin": "first_loss:Good"}, {"first_loss": GOOD})
    fake_distribution(plugins, "second-plugin", {"twin": "second_loss:Good"}, {"second_loss": GOOD})
    with pytest.raises(LossRegistryError) as error:
        build("twin")
    message = str(error.value)
    assert "first_loss:Good from first-plugin 1.0" in message and "second_loss:Good from second-plugin 1.0" in message


def test_summary_falls_back_to_docstring(plugins):
    fake_distribution(plugins, "good-plugin", {"good": "good_loss:Good"}, {"good_loss": GOOD})
    assert loss_class("good").one_line_summary() == "A loss that is fine."
    assert issubclass(loss_class("good"), PreferenceLoss)


def test_plugin_that_exits_on_import_stops_neither_other_losses_nor_the_cli(plugins, capsys):
    """A plugin calling sys.exit() (or raising any BaseException) while imported is one listed error, no more."""
    fake_distribution(plugins, "exiting-plugin", {"exiting": "exiting_loss:Exiting"},
                      {"exiting_loss": "import sys\nsys.exit(3)\n"})
    fake_distribution(plugins, "odd-base-plugin", {"odd_base": "odd_base_loss:Odd"},
                      {"odd_base_loss": "class Stop(BaseException):\n    pass\n\nraise Stop('no')\n"})
    fake_distribution(plugins, "good-plugin", {"good": "good_loss:Good"}, {"good_loss": GOOD})
    assert isinstance(build("dpo"), DPO)
    registry = registered_losses()
    assert registry["good"].loss_class.__name__ == "Good"
    assert "sys.exit(3)" in registry["exiting"].error and "exiting-plugin 1.0" in registry["exiting"].error
    assert "Stop: no" in registry["odd_base"].error
    assert main(["losses"]) == 1  # listed, and the failures reported
    out, err = capsys.readouterr()
    assert {"dpo", "good"} <= {line.split()[0] for line in out.splitlines()[1:]}
    assert "'exiting'" in err and "'odd_base'" in err
    with pytest.raises(LossRegistryError, match="sys.exit"):
        build("exiting")


def test_naming_a_loss_imports_only_its_own_module(plugins):
    fake_distribution(plugins, "lazy-plugin", {"lazy": "lazy_loss:Good"}, {"lazy_loss": GOOD})
    assert "lazy" in registered_names() and "lazy_loss" not in sys.modules
    build("dpo")
    assert "lazy_loss" not in sys.modules
    assert loss_class("lazy").__name__ == "Good" and "lazy_loss" in sys.modules


def test_the_entry_point_group_is_read_once(monkeypatch):
    reads = []

    def counting_entry_points(**kwargs):
        reads.append(kwargs)
        return entry_points(**kwargs)

    registry._claims.cache_clear()
    monkeypatch.setattr(registry, "entry_points", counting_entry_points)
    for name in ("dpo", "ipo", "dpo"):
        loss_class(name)
    registered_losses()
    assert len(reads) == 1
    registry._claims.cache_clear()


def test_names_and_class_paths_without_importing():
    assert class_path("dpo") == "lightpref.losses.dpo.DPO" and class_path("no_such_loss") is None
    assert registered_name(DPO) == "dpo" and registered_name(PreferenceLoss) is None
