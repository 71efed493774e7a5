"""The docstring examples of the unpaired-feedback modules are true."""

import doctest
import importlib

import pytest

MODULES = ["lightpref.data.unpaired", "lightpref.losses.unpaired", "lightpref.batch", "lightpref.losses.shapes"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    failures, attempted = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failures == 0
