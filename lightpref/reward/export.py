"""Writing a reward model in Hugging Face format: at the end of ``fit``, or from a checkpoint later.

The directory holds a one-label ``*ForSequenceClassification`` model (a LoRA adapter merged into it) and the
tokenizer; ``AutoModelForSequenceClassification.from_pretrained`` loads it, and so does
:class:`lightpref.evaluation.SequenceClassifierReward`, which ``lightpref iterate`` scores with.
``lightpref reward export CHECKPOINT OUTPUT`` rebuilds the model from the source the checkpoint records (plain data),
loads the trained weights, and writes the same directory. Reading a checkpoint never runs code from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from lightpref.models.export import CHECKPOINT_KEY, read_checkpoint, save_policy
from lightpref.models.pretrained import ModelSource, pad_id

REWARD_MARKER = "lightpref_reward_model"  # in a checkpoint: the weights are a reward model's, under PREFIX
PREFIX = "reward_model."


def save_reward_model(model: nn.Module, directory: Path, tokenizer: Any, source: ModelSource) -> None:
    """Write ``model`` (merged, if it has an adapter) and ``tokenizer``; the tokenizer's pad token goes into the
    config, so that the model's own ``forward`` can find each row's last token."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.pad_token_id = pad_id(tokenizer)
    save_policy(model, directory, tokenizer, merge=True, source=source)


def export_reward_checkpoint(checkpoint: Path, output: Path, trust_remote_code: bool = False,
                             overwrite: bool = False) -> None:
    """Turn a checkpoint of ``lightpref reward fit`` into a Hugging Face sequence-classification model directory."""
    from lightpref.reward.model import load_reward_model

    checkpoint, output = Path(checkpoint), Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise FileExistsError(f"the export directory {output} is not empty; choose a new directory, or pass "
                              "--overwrite to replace the files in it")
    state = read_checkpoint(checkpoint)
    if not state.get(REWARD_MARKER):
        raise ValueError(f"{checkpoint} holds a policy, not a reward model; export it with `lightpref export`")
    source = ModelSource.from_dict(state[CHECKPOINT_KEY], trust_remote_code=trust_remote_code)
    model = load_reward_model(source)
    weights = {key[len(PREFIX):]: value for key, value in state["state_dict"].items() if key.startswith(PREFIX)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{checkpoint} does not fit the reward model it records: {len(unexpected)} unexpected and "
                         f"{len(missing)} missing weights (e.g. {(unexpected or missing)[:3]})")
    save_reward_model(model, output, source.load_tokenizer(), source)
