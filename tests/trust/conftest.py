"""Shared pieces of the trust suite: the scaling tests' in-process tiny fit, one saved checkpoint, a payload."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scaling"))  # scaling_probe: fit_tiny, Probe

from scaling_probe import fit_tiny  # noqa: E402


@pytest.fixture(scope="session")
def saved_run(tiny_checkpoint, pairs_file, tmp_path_factory) -> Path:
    """A 2-step DPO run with a checkpoint after every step: ``checkpoints/step=1.ckpt``, ``step=2.ckpt``."""
    root = tmp_path_factory.mktemp("saved-run")
    fit_tiny(tiny_checkpoint, pairs_file, root, loss="dpo", steps=2, every_n_train_steps=1)
    return root
