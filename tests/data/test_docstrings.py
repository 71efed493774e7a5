"""The docstring examples of the data pipeline are true."""

import doctest
import importlib

import pytest

MODULES = ["example", "pair_formats", "formats", "sources", "tokenize", "collate", "cache", "inputs", "splits",
           "chunks", "pipeline", "padding", "loaders", "mixture", "streaming", "sampling", "token_budget", "precut"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    module = importlib.import_module(f"lightpref.data.{name}")
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failures == 0
