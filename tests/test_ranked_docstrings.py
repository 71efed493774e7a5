"""The docstring examples of the ranked-group modules are true."""

import doctest
import importlib

import pytest

MODULES = ["lightpref.data.groups", "lightpref.data.ranked", "lightpref.training.group_pairs",
           "lightpref.training.records", "lightpref.losses.shapes", "lightpref.evaluation.pairing", "lightpref.batch",
           "lightpref.training.packed_layout",
           "lightpref.data.token_budget"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str):
    failures, attempted = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failures == 0
