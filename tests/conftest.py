"""Shared fixtures: a tiny offline checkpoint, a small preference file, and an isolated cache."""

import json
from pathlib import Path

import pytest

from lightpref.testing import save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
HH_SAMPLE = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"


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


def write_pairs(path: Path, count: int = 24) -> Path:
    """Explicit-format pairs whose chosen and rejected answers differ in a learnable way."""
    with path.open("w") as file:
        for index in range(count):
            file.write(json.dumps({
                "prompt": f"Human: question {index}? Assistant:",
                "chosen": f" The answer is {index}.",
                "rejected": " I don't know.",
            }) + "\n")
    return path


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.jsonl")
