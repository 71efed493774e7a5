"""The entry-point registry: one path for built-in and third-party losses, and clear errors for broken plugins."""

import textwrap

import pytest

from lightpref.losses import LossRegistryError, PreferenceLoss, build, loss_class, registered_losses
from lightpref.losses.dpo import DPO


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
