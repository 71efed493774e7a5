"""Preference losses: the base contract, the registry, and lightpref's built-in losses."""

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss
from lightpref.losses.registry import (
    LossRegistryError,
    build,
    loss_class,
    registered_losses,
    registered_name,
    registered_names,
)
from lightpref.losses.shapes import RankedLogProbs

__all__ = [
    "LogProbs",
    "LossOutput",
    "LossRegistryError",
    "PreferenceLoss",
    "RankedLogProbs",
    "build",
    "loss_class",
    "registered_losses",
    "registered_name",
    "registered_names",
]
