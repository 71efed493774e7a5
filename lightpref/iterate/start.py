"""What ``lightpref iterate`` checks before it writes anything, and when a run in ``out_dir`` may be continued.

A run's ``config.json`` is written only once the start checks pass: the command (``--ckpt_path``, the
launch), the models (``model.pretrained``, ``model.reference``, every ``model`` argument of the reward, e.g. a reward
model, each an existing model directory or a Hub name that can be loaded), the ``iterate``, ``model`` and ``data``
sections (each built once, so the reward model is loaded and the extras it needs are imported). A start that fails
leaves nothing behind, and a ``config.json`` next to no results at all (a run stopped before it sampled or evaluated
anything) is replaced, so the corrected command is never refused.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.fabric.plugins.environments import TorchElasticEnvironment

from lightpref.io import atomic_write_text, fingerprint
from lightpref.models.paths import check_model

CONFIG_FILE = "config.json"
RESUME_FREE_KEYS = {"config", "ckpt_path", "trainer"}  # may differ when a run is continued (e.g. more devices)
# data settings that change how the pairs are read, not what is trained: they too may differ on resume
RESUME_FREE_DATA_KEYS = {"skip_invalid", "num_workers", "num_proc", "cache_dir"}


def check_command(config: Namespace) -> None:
    """``--ckpt_path`` and the launch: what the command itself can get wrong."""
    if config.ckpt_path not in (None, "last"):
        raise ValueError(f"--ckpt_path must be `last` (continue the run in iterate.out_dir), got {config.ckpt_path!r}")
    check_launch(config.trainer)


def check_launch(trainer: Namespace) -> None:
    """Several devices need ``torchrun``: Lightning's own launcher would restart the whole workflow in every process
    at the first ``fit``, after rank 0 had sampled alone."""
    if TorchElasticEnvironment.detect():  # torchrun (or SLURM through it) started every process
        return
    devices, accelerator = getattr(trainer, "devices", "auto"), str(getattr(trainer, "accelerator", "auto"))
    gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
    if devices in ("auto", -1, "-1"):
        count = max(gpus, 1)
    elif isinstance(devices, (list, tuple)):
        count = len(devices)
    else:
        count = int(str(devices).rstrip(","))
    if count * int(getattr(trainer, "num_nodes", 1) or 1) > 1:
        raise ValueError(f"`trainer.devices` gives {count} devices: start `lightpref iterate` with torchrun, one "
                         "process per device (`torchrun --nproc_per_node N -m lightpref iterate --config …`), so "
                         "that every process samples its share of the prompts; or set `--trainer.devices 1`")


def model_arguments(section: Any, key: str) -> Iterator[tuple[str, str]]:
    """Every ``model`` argument (a model name or directory) in a config section, with its key.

    >>> reward = Namespace(class_path="SequenceClassifierReward", init_args=Namespace(model="a/b", batch_size=8))
    >>> list(model_arguments(reward, "iterate.reward"))
    [('iterate.reward.init_args.model', 'a/b')]
    """
    items = vars(section).items() if isinstance(section, Namespace) else section.items() \
        if isinstance(section, dict) else ()
    for name, value in items:
        if name == "model" and isinstance(value, str):
            yield f"{key}.{name}", value
        elif isinstance(value, (Namespace, dict)):
            yield from model_arguments(value, f"{key}.{name}")


def check_models(config: Namespace) -> None:
    """Each model the run loads is an existing model directory or a Hub name that can be loaded (see
    :func:`~lightpref.models.paths.check_model`); a GGUF file is checked when the tokenizer is read from it."""
    model = config.model
    if model.gguf_file is None:
        check_model(model.pretrained, "`model.pretrained`")
    if model.reference is not None:
        check_model(model.reference, "`model.reference`")
    for key, name in model_arguments(config.iterate.reward, "iterate.reward"):
        check_model(name, f"`{key}`")


def has_results(out: Path) -> bool:
    """Whether any round (the initial evaluation included) has written a file under ``out``."""
    return any(path.is_file() for directory in out.glob("round_*") for path in directory.rglob("*"))


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that must match for a run to continue: those that change what is sampled or trained."""
    kept = copy.deepcopy({key: value for key, value in settings.items() if key not in RESUME_FREE_KEYS})
    if isinstance(kept.get("data"), dict):
        kept["data"] = {key: value for key, value in kept["data"].items() if key not in RESUME_FREE_DATA_KEYS}
    return kept


def differing(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two settings trees.

    >>> differing({"data": {"batch_size": 2, "seed": 0}, "iterate": 1}, {"data": {"batch_size": 3, "seed": 0}})
    ['data.batch_size', 'iterate']
    """
    changed = []
    for key in sorted(set(before) | set(now)):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += differing(old, new, f"{prefix}{key}.")
        elif fingerprint({"v": old}) != fingerprint({"v": new}):
            changed.append(f"{prefix}{key}")
    return changed


def check_out_dir(out: Path, settings: dict[str, Any], resume: bool) -> None:
    """Refuse to mix runs: a fresh run needs an ``out_dir`` without results; a resumed one the same settings (all but
    :data:`RESUME_FREE_KEYS` and :data:`RESUME_FREE_DATA_KEYS`). Writes ``config.json`` for a run that starts."""
    saved = out / CONFIG_FILE
    if saved.is_file() and has_results(out):
        if not resume:
            raise ValueError(f"{out} already holds a `lightpref iterate` run: pass `--ckpt_path last` to continue it, "
                             f"or choose another `--iterate.out_dir`")
        changed = differing(comparable(json.loads(saved.read_text())), comparable(settings))
        if changed:
            raise ValueError(f"cannot continue the run in {out}: its settings differ in {', '.join(changed)}; "
                             f"continue with the original config (see {saved}) or choose another `--iterate.out_dir`")
    else:  # nothing to continue (`--ckpt_path last` then starts the run)
        stored = {key: value for key, value in settings.items() if key not in RESUME_FREE_KEYS}
        atomic_write_text(saved, json.dumps(json.loads(json.dumps(stored, default=repr)), indent=1, sort_keys=True))
