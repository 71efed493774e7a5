"""Loading a reward model: a sequence-classification checkpoint with one label, or a causal LM given a fresh head.

``AutoModelForSequenceClassification.from_pretrained`` with ``num_labels=1`` does both: a reward model's own head
is loaded as it is, and a causal LM's decoder weights (a Hub name, a local directory, or the converted copy of a
GGUF file, as :class:`~lightpref.models.pretrained.ModelSource` locates it) get a new linear ``score`` head, initialised
from the seeded random state. With ``peft`` the head is trained in full beside the adapter (peft's
``modules_to_save``).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

from lightpref.models.pretrained import DTYPES, ModelSource
from lightpref.reward.scoring import HEAD


def _check_labels(source: ModelSource, location: str) -> None:
    config = AutoConfig.from_pretrained(location, trust_remote_code=source.trust_remote_code,
                                        revision=source.revision)
    classifier = any(name.endswith("ForSequenceClassification") for name in getattr(config, "architectures", None)
                     or ())
    if classifier and config.num_labels != 1:
        raise ValueError(f"`{source.key}`: {source.display_name()} is a classifier with {config.num_labels} labels; "
                         "a reward model has one (a scalar score): start from a causal LM or a one-label reward model")


def with_trained_head(config: Any) -> Any:
    """A peft config whose ``modules_to_save`` holds the score head, so the head trains in full."""
    saved = set(getattr(config, "modules_to_save", None) or ())
    config.modules_to_save = sorted(saved | {HEAD})
    return config


def load_reward_model(source: ModelSource, pad_token_id: int | None = None) -> nn.Module:
    """The reward model of ``source`` (with a new trainable adapter if ``source.peft`` is set).

    ``pad_token_id`` is written into the config when it has none, so that the model's own ``forward`` (used by
    other libraries on the exported model) finds each row's last token.
    """
    if source.quantization_bits is not None or source.adapter is not None:
        raise ValueError("a reward model trains all weights or a new adapter (`model.peft`); quantised weights and "
                         "SFT adapters are not supported for it")
    location = source.location()
    _check_labels(source, location)
    model = AutoModelForSequenceClassification.from_pretrained(
        location, num_labels=1, dtype=DTYPES[source.dtype], attn_implementation=source.attn_implementation,
        trust_remote_code=source.trust_remote_code, revision=source.revision,
    )
    if getattr(model.config, "pad_token_id", None) is None and pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    if source.peft is not None:
        from peft import get_peft_config

        from lightpref.models.adapters import attach_adapter

        model = attach_adapter(model, with_trained_head(get_peft_config(dict(source.peft))), None)
    return model
