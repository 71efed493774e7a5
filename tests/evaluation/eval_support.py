"""Shared helpers of the evaluation tests (not a conftest.py: that name would shadow tests/conftest.py for the
`from conftest import …` of other test modules)."""

import torch
from lightning.pytorch import Trainer

from lightpref.data import PreferenceDataModule
from lightpref.training.module import PreferenceModule

PROMPTS = ["Human: hello", "The quick brown fox", "Human: How do I bake bread? Assistant:", "yes", "Paris is"]


def fit(checkpoint, pairs_file, root, callbacks=(), loss="dpo", steps=4, lr=1e-2, logger=True, module=None):
    """A few steps of a tiny model with a high learning rate, validating every 2 steps."""
    module = module or PreferenceModule(
        str(checkpoint), loss=loss, export_dir=None, optimizer=lambda params: torch.optim.AdamW(params, lr=lr)
    )
    data = PreferenceDataModule(
        tokenizer=str(checkpoint), train_files=str(pairs_file), val_fraction=0.25, batch_size=4,
        max_length=64, max_prompt_length=32,
    )
    trainer = Trainer(
        max_steps=steps, default_root_dir=root, accelerator="cpu", enable_progress_bar=False,
        enable_model_summary=False, val_check_interval=2, check_val_every_n_epoch=None, log_every_n_steps=1,
        enable_checkpointing=False, callbacks=list(callbacks), logger=logger, num_sanity_val_steps=1,
    )
    trainer.fit(module, data)
    return module, trainer
