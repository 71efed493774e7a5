"""Exporting a trained policy in Hugging Face format: at the end of ``fit``, or from a checkpoint later.

``lightpref export CHECKPOINT OUTPUT`` rebuilds the policy from the :class:`~lightpref.models.pretrained.ModelSource`
the checkpoint records (model, GGUF file, load settings, adapter; plain data), loads the trained weights, and writes a
directory that ``AutoModelForCausalLM.from_pretrained`` loads. A LoRA policy is merged into its base weights unless
``--adapter-only`` asks for the adapter alone (loadable with peft on top of the same base).

Reading a checkpoint never runs code from it: it is loaded with ``torch.load(weights_only=True)``, and the model's
own code runs only with ``--trust-remote-code`` on the command line, whatever the checkpoint says.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the rest is imported where used: `lightpref export --help` needs neither Lightning nor peft
    from torch import nn
    from transformers import PreTrainedTokenizerBase

    from lightpref.models.pretrained import ModelSource

CHECKPOINT_KEY = "lightpref"


def save_policy(policy: nn.Module, directory: Path, tokenizer: PreTrainedTokenizerBase, merge: bool = True,
                source: ModelSource | None = None) -> None:
    """Write ``policy`` and ``tokenizer`` to ``directory``; a peft policy is merged (on a copy) unless not asked.

    An adapter saved alone records ``source`` (as the user named it) as its base model. Every file gets the usual
    permissions (``0o666`` less the umask).
    """
    from lightpref.models.pretrained import quiet_transformers_progress

    with quiet_transformers_progress():
        _save_policy(policy, directory, merge, source)
    tokenizer.save_pretrained(directory)
    _usual_permissions(directory)


def _save_policy(policy: nn.Module, directory: Path, merge: bool, source: ModelSource | None) -> None:
    from peft import PeftModel

    from lightpref.models.adapters import POLICY_ADAPTER

    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(policy, PeftModel):
        if merge:
            copy.deepcopy(policy).merge_and_unload().save_pretrained(directory)
        else:  # peft puts a named adapter in a subdirectory; the export holds it at its top level
            policy.save_pretrained(directory, selected_adapters=[POLICY_ADAPTER])
            for path in (directory / POLICY_ADAPTER).iterdir():
                path.replace(directory / path.name)
            (directory / POLICY_ADAPTER).rmdir()
            if source is not None:
                _record_base_model(directory / "adapter_config.json", source)
    else:
        policy.save_pretrained(directory)


def _record_base_model(config_path: Path, source: ModelSource) -> None:
    """Name the base model as the user gave it, not the machine-local path it was loaded from (a GGUF copy)."""
    from lightpref.io import atomic_write_text

    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = source.display_name()
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _usual_permissions(directory: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def frozen_entries(model: nn.Module, prefix: str = "") -> frozenset[str]:
    """State-dict keys (under ``prefix``) of ``model``'s frozen parameters, tied copies included: a LoRA policy's
    base weights, which checkpoints leave out because the model's source supplies them whenever it is built."""
    return frozenset(f"{prefix}{name}" for name, parameter in model.named_parameters(remove_duplicate=False)
                     if not parameter.requires_grad)


def is_frozen_entry(key: str, frozen: frozenset[str]) -> bool:
    """``key`` is in ``frozen``, or is stored under the name of one that is (a quantised weight's ``weight.absmax``).

    >>> is_frozen_entry("layer.weight.absmax", frozenset({"layer.weight"})), is_frozen_entry("layer.bias", frozenset())
    (True, False)
    """
    return any(key[:end] in frozen for end in range(len(key) + 1) if end == len(key) or key[end] == ".")


def read_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """A lightpref checkpoint's contents, loaded without unpickling arbitrary objects.

    Raises :class:`~lightpref.run.checkpointing.CorruptCheckpointError` for a truncated or damaged file, and
    ``ValueError`` for one that holds something other than tensors and plain data or was not written by lightpref.
    """
    import torch

    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    from lightpref.run.checkpointing import CorruptCheckpointError, validate_checkpoint  # imports Lightning: only here

    if checkpoint.is_dir():
        raise ValueError(f"{checkpoint} is a sharded (directory) checkpoint; export reads single-file checkpoints: "
                         "convert it with Lightning's `convert_zero_checkpoint`/DCP tools first")
    validate_checkpoint(checkpoint)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{checkpoint} holds objects other than tensors and plain data, which lightpref export does not "
            f"unpickle (they could run code): {str(error).splitlines()[0]}"
        ) from None
    except (zipfile.BadZipFile, EOFError, RuntimeError) as error:
        raise CorruptCheckpointError(f"the checkpoint {checkpoint} is unusable: {error}") from None
    if not isinstance(state, dict) or CHECKPOINT_KEY not in state:
        raise ValueError(f"{checkpoint} was not written by lightpref's PreferenceModule (no {CHECKPOINT_KEY!r} entry)")
    return state


def refuse_to_overwrite(directory: Path, overwrite: bool, name: str, how: str) -> None:
    """Raise ``ValueError`` when ``directory`` exists and is not an empty directory, unless ``overwrite``: an
    export never replaces files the user did not ask to replace. ``name`` and ``how`` (to allow it) go into the
    message."""
    if overwrite or not directory.exists():
        return
    if not directory.is_dir() or any(directory.iterdir()):
        raise ValueError(f"{name} {directory} is not empty; choose a new directory, or {how} to replace the files "
                         "in it")


def export_checkpoint(checkpoint: Path, output: Path, merge: bool = True, trust_remote_code: bool = False,
                      overwrite: bool = False) -> None:
    """Turn a lightpref Lightning checkpoint into a Hugging Face model directory.

    ``output`` must be empty or absent unless ``overwrite``; ``trust_remote_code`` is the caller's decision alone.
    """
    from lightpref.models.pretrained import ModelSource

    checkpoint, output = Path(checkpoint), Path(output)
    refuse_to_overwrite(output, overwrite, "the export directory", "pass --overwrite")
    state = read_checkpoint(checkpoint)
    if state.get("lightpref_reward_model"):  # lightpref.reward.export.REWARD_MARKER
        raise ValueError(f"{checkpoint} holds a reward model; export it with `lightpref reward export`")
    source = ModelSource.from_dict(state[CHECKPOINT_KEY], trust_remote_code=trust_remote_code)
    policy = source.load_model()
    prefix = "policy."
    weights = {key[len(prefix):]: value for key, value in state["state_dict"].items() if key.startswith(prefix)}
    missing, unexpected = policy.load_state_dict(weights, strict=False)
    frozen = frozen_entries(policy)  # a LoRA policy's base weights: loaded with it from its source, not saved
    missing = [key for key in missing if not is_frozen_entry(key, frozen)]
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint} does not fit the policy it records: {len(unexpected)} unexpected and {len(missing)} "
            f"missing weights (e.g. {(unexpected or missing)[:3]})"
        )
    save_policy(policy, output, source.load_tokenizer(), merge=merge, source=source)
