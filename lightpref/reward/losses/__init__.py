"""Reward-model losses: the contract, the registry (``lightpref.reward_losses``) and the built-in losses."""

from lightpref.reward.losses.base import GroupScores, PairScores, RewardLoss, RewardLossOutput, check_reward_output
from lightpref.reward.losses.registry import (
    RewardLossRegistryError,
    build,
    loss_class,
    registered_losses,
    registered_names,
)

__all__ = [
    "GroupScores",
    "PairScores",
    "RewardLoss",
    "RewardLossOutput",
    "RewardLossRegistryError",
    "build",
    "check_reward_output",
    "loss_class",
    "registered_losses",
    "registered_names",
]
