"""Shared helpers of the evaluation tests (not a conftest.py: that name would shadow tests/conftest.py for the
`from conftest import …` of other test modules)."""

from functools import partial

from fit_support import fit as shared_fit

PROMPTS = ["Human: hello", "The quick brown fox", "Human: How do I bake bread? Assistant:", "yes", "Paris is"]


fit = partial(shared_fit, export_dir=None, checkpoints=False, sanity_steps=1)
"""The shared `fit` helper without export or checkpoints, one sanity validation batch."""
