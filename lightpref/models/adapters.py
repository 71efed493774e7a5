"""PEFT adapters: train LoRA on a frozen base whose own weights, adapter switched off, serve as the reference.

One copy of the weights is in memory. Starting from an SFT adapter, that adapter is loaded twice: once as the
trainable ``policy`` adapter (initialised from it) and once, frozen, as the ``reference`` adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from lightpref.io import eval_mode

POLICY_ADAPTER = "policy"
REFERENCE_ADAPTER = "reference"


def attach_adapter(base: PreTrainedModel, config: PeftConfig | None, sft_adapter: str | None) -> PeftModel:
    """Wrap ``base`` in a trainable adapter: a new one from ``config``, or a copy of ``sft_adapter``."""
    if sft_adapter is None:
        if config is None:
            raise ValueError("an adapter needs `model.peft` (e.g. a peft.LoraConfig) or `model.sft_adapter`")
        return get_peft_model(base, config, adapter_name=POLICY_ADAPTER)
    if config is not None:
        raise ValueError(
            "set either `model.peft` (train a new adapter) or `model.sft_adapter` (continue from an SFT adapter, "
            "which also becomes the frozen reference), not both"
        )
    model = PeftModel.from_pretrained(base, sft_adapter, adapter_name=POLICY_ADAPTER, is_trainable=True)
    model.load_adapter(sft_adapter, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
    model.set_adapter(POLICY_ADAPTER)
    return model


@contextmanager
def as_reference(model: PeftModel) -> Iterator[nn.Module]:
    """The model as the reference: eval mode and the base weights alone (or the frozen SFT adapter)."""
    with eval_mode(model):
        if REFERENCE_ADAPTER in model.peft_config:
            model.set_adapter(REFERENCE_ADAPTER)
            try:
                yield model
            finally:
                model.set_adapter(POLICY_ADAPTER)
                _keep_reference_frozen(model)
        else:
            with model.disable_adapter():
                yield model


def _keep_reference_frozen(model: PeftModel) -> None:
    """``set_adapter`` marks the active adapter trainable; the reference adapter must stay frozen."""
    for name, parameter in model.named_parameters():
        if f".{REFERENCE_ADAPTER}." in name:
            parameter.requires_grad_(False)
