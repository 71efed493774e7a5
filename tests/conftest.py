"""Shared fixtures: a tiny offline checkpoint, a small preference file, and an isolated cache."""

from pathlib import Path

import pytest
from pairs_support import write_pairs

from lightpref.testing import save_tiny_checkpoint


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Keep tokenisation and conversion caches out of the user's home directory."""
    cache = tmp_path_factory.mktemp("lightpref-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("LIGHTPREF_CACHE", str(cache))
    yield cache
    patch.undo()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A two-layer random Llama and its byte-level tokenizer, saved so ``from_pretrained`` loads them."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.jsonl")
