"""Reward models: a scalar score per completion, trained on preference pairs or ranked groups by ``lightpref fit``
with ``model: {class_path: RewardModule, …}`` (or ``lightpref reward fit``).

- :mod:`lightpref.reward.scoring`: the score of a sequence at its last token, with the shared-prompt packed forward;
- :mod:`lightpref.reward.model`: loading a one-label sequence-classification model (or a causal LM with a new head);
- :mod:`lightpref.reward.losses`: the reward-loss contract and registry (``lightpref.reward_losses``);
- :mod:`lightpref.reward.module`: the LightningModule; :mod:`lightpref.reward.cli`: the command.
"""
