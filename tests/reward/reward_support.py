"""Tiny reward models for the reward tests."""

import torch
from transformers import LlamaForSequenceClassification

from lightpref.testing import tiny_model


def tiny_reward_model(seed: int = 0) -> LlamaForSequenceClassification:
    """The tiny two-layer Llama with a one-label score head (larger than transformers' init, so scores differ)."""
    config = tiny_model().config
    config.num_labels = 1
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    return model
