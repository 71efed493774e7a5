"""The reward functions: VADER's sign on clearly positive and negative text, the missing-extra error, lengths."""

import doctest
import importlib
import importlib.util
import sys

import pytest
import torch

from lightpref.evaluation import CompletionLength, RewardFunction, VaderSentiment, load_reward
from lightpref.evaluation.rewards import VADER_MISSING

needs_vader = pytest.mark.skipif(
    importlib.util.find_spec("vaderSentiment") is None,
    reason="vaderSentiment is not installed (the `sentiment` extra): pip install 'lightpref[sentiment]'",
)


@needs_vader
def test_vader_gives_the_expected_sign():
    reward = VaderSentiment()
    texts = [
        "I loved this film. The acting was wonderful and the story was beautiful, a real joy.",
        "Terrible. Boring, ugly and painful to watch; the worst product I have ever bought.",
        "The film is 96 minutes long.",
    ]
    scores = reward(["p"] * 3, texts)
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    assert scores[0] > 0.5 and scores[1] < -0.5
    assert scores[2] == 0.0  # no sentiment-bearing word: VADER's compound is exactly 0
    assert (scores.abs() <= 1).all()


@needs_vader
def test_vader_ignores_the_prompt():
    reward = VaderSentiment()
    text = ["It was fine."]
    torch.testing.assert_close(reward(["I hate everything"], text), reward(["I love everything"], text))


def test_missing_extra_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)  # makes `import vaderSentiment…` raise ImportError
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    with pytest.raises(ImportError, match=r"pip install 'lightpref\[sentiment\]'") as error:
        VaderSentiment()
    assert str(error.value) == VADER_MISSING


def test_completion_length_counts_characters_and_words():
    completions = ["", "one two  three", "abc"]
    torch.testing.assert_close(CompletionLength()(["p"] * 3, completions), torch.tensor([0.0, 14.0, 3.0]))
    torch.testing.assert_close(CompletionLength("words")(["p"] * 3, completions), torch.tensor([0.0, 3.0, 1.0]))
    with pytest.raises(ValueError, match="one prompt per completion"):
        CompletionLength()(["p"], ["a", "b"])
    with pytest.raises(ValueError, match="unit"):
        CompletionLength("tokens")


@needs_vader
def test_load_reward_by_import_path():
    assert isinstance(load_reward("lightpref.evaluation.VaderSentiment"), VaderSentiment)
    assert load_reward("lightpref.evaluation.rewards:CompletionLength", unit="words").unit == "words"
    with pytest.raises(ValueError, match="cannot import the reward"):
        load_reward("lightpref.evaluation.NoSuchReward")
    with pytest.raises(TypeError, match="not a lightpref RewardFunction"):
        load_reward("collections.OrderedDict")
    assert issubclass(VaderSentiment, RewardFunction)


@pytest.mark.parametrize("name", ["rewards", "generation", "prompts", "build_dataset"])
def test_docstring_examples(name):
    module = importlib.import_module(f"lightpref.evaluation.{name}")
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failures == 0
