"""Exporting a trained policy in Hugging Face format: at the end of ``fit``, or from a checkpoint later.

``lightpref export CHECKPOINT OUTPUT`` rebuilds the policy from what the checkpoint records about its source
(model, GGUF file, load settings, adapter), loads the trained weights, and writes a directory that
``AutoModelForCausalLM.from_pretrained`` loads. A LoRA policy is merged into its base weights unless
``--adapter-only`` asks for the adapter alone (loadable with peft on top of the same base).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: `lightpref export --help` needs neither torch's models nor peft
    from torch import nn

CHECKPOINT_KEY = "lightpref"


def save_policy(policy: nn.Module, directory: Path, tokenizer: Any, merge: bool = True) -> None:
    """Write ``policy`` and ``tokenizer`` to ``directory``; a peft policy is merged (on a copy) unless not asked."""
    from peft import PeftModel

    from lightpref.adapters import POLICY_ADAPTER

    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(policy, PeftModel):
        if merge:
            copy.deepcopy(policy).merge_and_unload().save_pretrained(directory)
        else:  # peft puts a named adapter in a subdirectory; the export holds it at its top level
            policy.save_pretrained(directory, selected_adapters=[POLICY_ADAPTER])
            for path in (directory / POLICY_ADAPTER).iterdir():
                path.replace(directory / path.name)
            (directory / POLICY_ADAPTER).rmdir()
    else:
        policy.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def policy_source(module: Any) -> dict[str, Any]:
    """What a checkpoint must record to rebuild the policy without the config that trained it."""
    return {
        "pretrained": module.pretrained,
        "gguf_file": module.gguf_file,
        "load_kwargs": module.load_kwargs,
        "peft": module.peft_config.to_dict() if module.peft_config is not None else None,
        "sft_adapter": module.sft_adapter,
    }


def rebuild_policy(source: dict[str, Any]) -> nn.Module:
    """The untrained policy described by :func:`policy_source`."""
    from peft import get_peft_config

    from lightpref.adapters import attach_adapter
    from lightpref.pretrained import load_model

    base = load_model(source["pretrained"], gguf_file=source["gguf_file"], **source["load_kwargs"])
    if source["peft"] is None and source["sft_adapter"] is None:
        return base
    config = get_peft_config(source["peft"]) if source["peft"] is not None else None
    return attach_adapter(base, config, source["sft_adapter"])


def export_checkpoint(checkpoint: Path, output: Path, merge: bool = True) -> None:
    """Turn a lightpref Lightning checkpoint into a Hugging Face model directory."""
    import torch

    from lightpref.pretrained import load_tokenizer

    if not checkpoint.exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if CHECKPOINT_KEY not in state:
        raise ValueError(f"{checkpoint} was not written by lightpref's PreferenceModule (no {CHECKPOINT_KEY!r} entry)")
    source = state[CHECKPOINT_KEY]
    policy = rebuild_policy(source)
    prefix = "policy."
    weights = {key[len(prefix):]: value for key, value in state["state_dict"].items() if key.startswith(prefix)}
    missing, unexpected = policy.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint} does not fit the policy it records: {len(unexpected)} unexpected and {len(missing)} "
            f"missing weights (e.g. {(unexpected or missing)[:3]})"
        )
    tokenizer = load_tokenizer(source["pretrained"], source["gguf_file"], source["load_kwargs"]["trust_remote_code"])
    save_policy(policy, output, tokenizer, merge=merge)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lightpref export", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by `lightpref fit`")
    parser.add_argument("output", type=Path, help="the directory to write")
    parser.add_argument("--adapter-only", action="store_true", help="save a LoRA adapter alone instead of merging")
    args = parser.parse_args(argv)
    try:
        export_checkpoint(args.checkpoint, args.output, merge=not args.adapter_only)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"lightpref export: error: {error}\n")
    print(f"exported {args.checkpoint} to {args.output}")
    return 0
