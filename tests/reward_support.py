"""Tiny reward models and a tiny reward-model fit, for the reward tests (tests/reward, tests/scaling)."""

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


def fit_reward(checkpoint, pairs, root, *, steps=6, batch_size=4, peft=None, ckpt_path=None, callbacks=(),
               export_dir=None, lr=1e-2, val_fraction=0.0):
    """An in-process reward-model fit of the tiny model: seeded, AdamW with warm-up and cosine decay, no logger."""
    from lightning.pytorch import Trainer, seed_everything

    from lightpref.data import PreferenceDataModule
    from lightpref.reward.module import RewardModule
    from lightpref.training.schedules import WarmupCosineLR

    seed_everything(0, verbose=False)
    module = RewardModule(str(checkpoint), peft=peft, export_dir=export_dir,
                          optimizer=lambda params: torch.optim.AdamW(params, lr=lr),
                          lr_scheduler=lambda opt: WarmupCosineLR(opt, warmup_steps=2))
    data = PreferenceDataModule(tokenizer=str(checkpoint), train_files=str(pairs), batch_size=batch_size,
                                max_length=64, max_prompt_length=32, val_fraction=val_fraction)
    trainer = Trainer(max_steps=steps, default_root_dir=root, accelerator="cpu", devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0 if not val_fraction else None, enable_checkpointing=False,
                      callbacks=list(callbacks))
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, trainer
