"""Old import paths of moved modules resolve to the new modules, with a DeprecationWarning naming the new path."""

import importlib
import sys

import pytest
import torch
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


def test_a_config_written_with_the_old_class_paths_still_builds_its_run(tiny_checkpoint, pairs_file, tmp_path):
    """A config from before the move (schedule, strategy and callbacks by their old paths) builds the same objects,
    warning once per old path with the new one."""
    import yaml

    from lightpref.cli import build_cli
    from lightpref.run.checkpointing import SafeCheckpoints
    from lightpref.run.guards import NonFiniteGuard
    from lightpref.run.strategies import FSDP2Strategy
    from lightpref.training.schedules import WarmupCosineLR

    for old in ("lightpref.schedules", "lightpref.strategies", "lightpref.checkpointing", "lightpref.guards"):
        sys.modules.pop(old, None)
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump({
        "trainer": {
            "accelerator": "cpu", "max_steps": 1, "default_root_dir": str(tmp_path / "run"),
            "strategy": {"class_path": "lightpref.strategies.FSDP2Strategy"},
            "callbacks": [{"class_path": "lightpref.checkpointing.SafeCheckpoints"},
                          {"class_path": "lightpref.guards.NonFiniteGuard", "init_args": {"max_skipped_share": 0.5}}],
        },
        "model": {
            "pretrained": str(tiny_checkpoint),
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}},
            "lr_scheduler": {"class_path": "lightpref.schedules.WarmupCosineLR", "init_args": {"warmup_steps": 2}},
        },
        "data": {"train_files": str(pairs_file), "batch_size": 4, "max_length": 64, "max_prompt_length": 32},
    }))
    with pytest.warns(DeprecationWarning) as warned:
        cli = build_cli(["fit", "--config", str(config)], run=False)
    messages = {str(warning.message) for warning in warned if warning.category is DeprecationWarning}
    for old, new in [("schedules", "training.schedules"), ("strategies", "run.strategies"),
                     ("checkpointing", "run.checkpointing"), ("guards", "run.guards")]:
        assert any(message.startswith(f"lightpref.{old} moved to lightpref.{new};") for message in messages), old
    assert isinstance(cli.trainer.strategy, FSDP2Strategy)
    guards = [callback for callback in cli.trainer.callbacks if isinstance(callback, NonFiniteGuard)]
    assert [guard.max_skipped_share for guard in guards] == [0.5]
    assert any(isinstance(callback, SafeCheckpoints) for callback in cli.trainer.callbacks)
    optimizer = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
    scheduler = cli.model.scheduler_factory(optimizer)
    assert type(scheduler) is WarmupCosineLR and scheduler.warmup_steps == 2


def test_a_name_that_left_its_old_module_is_found_where_it_went() -> None:
    from lightpref.run.last import SameCheckpointEverywhere, newest_checkpoint

    sys.modules.pop("lightpref.checkpointing", None)
    sys.modules.pop("lightpref.resume", None)
    with pytest.warns(DeprecationWarning, match="lightpref.run.checkpointing.SameCheckpointEverywhere moved to "
                                                "lightpref.run.last.SameCheckpointEverywhere"):
        from lightpref.checkpointing import SameCheckpointEverywhere as old
    assert old is SameCheckpointEverywhere
    with pytest.warns(DeprecationWarning, match="lightpref.run.last.newest_checkpoint"):
        from lightpref.resume import newest_checkpoint as old_newest
    assert old_newest is newest_checkpoint
    with pytest.raises(ImportError):
        from lightpref.checkpointing import NoSuchName  # noqa: F401
