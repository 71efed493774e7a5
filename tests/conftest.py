"""Shared fixtures: a tiny offline checkpoint, a small preference file, and an isolated cache."""

import os
import subprocess
import sys
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


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """The example plugin (plugins/lightpref-margin-dpo) installed into a private directory, leaving the test
    environment untouched; put it on ``sys.path`` or ``PYTHONPATH`` to use it."""
    target = tmp_path_factory.mktemp("plugin-site")
    plugin = Path(__file__).resolve().parents[1] / "plugins" / "lightpref-margin-dpo"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                             "--target", str(target), str(plugin)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"installing the example plugin failed:\n{result.stdout}\n{result.stderr}"
    return target


@pytest.fixture(scope="session")
def installed_plugin(plugin_site: Path) -> dict[str, str]:
    """The environment of a subprocess that has the example plugin installed."""
    return {"PYTHONPATH": os.pathsep.join([str(plugin_site), os.environ.get("PYTHONPATH", "")])}
