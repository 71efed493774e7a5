"""The docstring examples of the resumable sampler and of the sharding helpers are true."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["lightpref.data.sampling", "lightpref.run.sharding"])
def test_docstring_examples(name: str):
    failures, attempted = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failures == 0
