"""Tokenising pairs: special tokens, chat templates, EOS, the prefix property, fallbacks, truncation and views."""

import pytest

from lightpref.data.formats import PreferenceExample
from lightpref.data.tokenize import TokenizeStats, check_lengths, tokenize_pair, truncate_pair
from lightpref.testing import CHATML_TEMPLATE, tiny_tokenizer
from lightpref.views import InstructionPrefix

USER = {"role": "user", "content": "What is the capital of France?"}
PARIS = {"role": "assistant", "content": "Paris."}
ROME = {"role": "assistant", "content": "Rome."}
CHAT_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def bos_tokenizer():
    return tiny_tokenizer(bos=True)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_string_pair_prompt_plain_completions_end_with_eos(tokenizer):
    pair = tokenize_pair(PreferenceExample("Human: hi? Assistant:", " Sure.", " No."), tokenizer, 64, 32)
    assert pair.prompt_ids == encode(tokenizer, "Human: hi? Assistant:")
    assert pair.chosen_ids == encode(tokenizer, " Sure.") + [tokenizer.eos_token_id]
    assert pair.rejected_ids == encode(tokenizer, " No.") + [tokenizer.eos_token_id]
    assert pair.view_prompt_ids == {}


def test_string_pair_gets_one_bos_on_the_prompt_only(bos_tokenizer):
    bos, eos = bos_tokenizer.bos_token_id, bos_tokenizer.eos_token_id
    pair = tokenize_pair(PreferenceExample("Hi", " yes", " no"), bos_tokenizer, 64, 32)
    assert pair.prompt_ids == [bos] + encode(bos_tokenizer, "Hi")
    assert pair.chosen_ids == encode(bos_tokenizer, " yes") + [eos]
    assert bos not in pair.chosen_ids + pair.rejected_ids


def test_completion_already_ending_with_eos_gets_no_second_one(tokenizer):
    pair = tokenize_pair(PreferenceExample("Hi", " yes<|im_end|>", " no"), tokenizer, 64, 32)
    assert pair.chosen_ids == encode(tokenizer, " yes") + [tokenizer.eos_token_id]


def test_chat_template_prompt_and_completions_cut_after_eos(tokenizer):
    """ChatML writes "<|im_end|>\\n" after each turn: the completion ends at <|im_end|>, without the newline."""
    stats = TokenizeStats()
    pair = tokenize_pair(PreferenceExample([USER], [PARIS], [ROME]), tokenizer, 128, 64, stats=stats)
    assert tokenizer.decode(pair.prompt_ids) == CHAT_PROMPT
    assert tokenizer.decode(pair.chosen_ids) == "Paris.<|im_end|>"
    assert tokenizer.decode(pair.rejected_ids) == "Rome.<|im_end|>"
    full = encode(tokenizer, tokenizer.apply_chat_template([USER, PARIS], tokenize=False))
    assert full[: len(pair.prompt_ids)] == pair.prompt_ids  # the prompt tokens are a prefix of the whole
    assert pair.prompt_ids + pair.chosen_ids == full[:-1]  # everything but the trailing "\n"
    assert stats.as_dict() == {**TokenizeStats().as_dict(), "pairs": 1}


def test_multi_turn_completion_ends_after_its_last_eos(tokenizer):
    follow_up = {"role": "user", "content": "Sure?"}
    pair = tokenize_pair(PreferenceExample([USER], [PARIS, follow_up, PARIS], [ROME]), tokenizer, 128, 64)
    expected = "Paris.<|im_end|>\n<|im_start|>user\nSure?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>"
    assert tokenizer.decode(pair.chosen_ids) == expected


def test_chat_template_without_bos_gets_the_tokenizer_bos_once(bos_tokenizer):
    pair = tokenize_pair(PreferenceExample([USER], [PARIS], [ROME]), bos_tokenizer, 128, 64)
    assert pair.prompt_ids[0] == bos_tokenizer.bos_token_id
    assert (pair.prompt_ids + pair.chosen_ids).count(bos_tokenizer.bos_token_id) == 1


def test_chat_template_that_writes_bos_is_not_given_a_second_one():
    tokenizer = tiny_tokenizer(bos=True)
    tokenizer.chat_template = "{{ bos_token }}" + CHATML_TEMPLATE
    pair = tokenize_pair(PreferenceExample([USER], [PARIS], [ROME]), tokenizer, 128, 64)
    assert tokenizer.decode(pair.prompt_ids) == "<s>" + CHAT_PROMPT
    assert pair.prompt_ids.count(tokenizer.bos_token_id) == 1


def test_template_breaking_the_prefix_property_falls_back_to_the_content(tokenizer):
    """A "thinking" template opens the generation prompt with "<think>\\n", which the rendered conversation lacks."""
    broken = tiny_tokenizer()
    broken.chat_template = CHATML_TEMPLATE.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")
    stats = TokenizeStats()
    pair = tokenize_pair(PreferenceExample([USER], [PARIS], [ROME]), broken, 128, 64, stats=stats)
    assert broken.decode(pair.prompt_ids) == CHAT_PROMPT + "<think>\n"
    assert broken.decode(pair.chosen_ids) == "Paris.<|im_end|>"
    assert broken.decode(pair.rejected_ids) == "Rome.<|im_end|>"
    assert stats.template_fallbacks == 2


def test_joint_tokens_not_starting_with_the_prompt_fall_back_to_separate_tokenisation(tokenizer):
    """Jointly, "cap" + "ital" merge into " capital", so the prompt's last token is not a prefix token."""
    stats = TokenizeStats()
    pair = tokenize_pair(PreferenceExample("What is the cap", "ital", "tain"), tokenizer, 64, 32, stats=stats)
    assert pair.chosen_ids == encode(tokenizer, "ital") + [tokenizer.eos_token_id]
    assert stats.split_fallbacks == 1  # "cap" + "tain" does not merge


def test_conversational_data_needs_a_chat_template():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="the tokenizer has no chat template.*explicit format"):
        tokenize_pair(PreferenceExample([USER], [PARIS], [ROME]), tokenizer, 128, 64)


def test_prompt_loses_its_start_and_completions_their_end(tokenizer):
    prompt, chosen, rejected = "one two three four five six", " seven eight nine", " ten"
    stats = TokenizeStats()
    pair = tokenize_pair(PreferenceExample(prompt, chosen, rejected), tokenizer, 10, 4, stats=stats)
    assert pair.prompt_ids == encode(tokenizer, prompt)[-4:]
    assert pair.chosen_ids == encode(tokenizer, chosen)[:6]  # 10 - 4 prompt tokens; the EOS is cut too
    assert pair.rejected_ids == encode(tokenizer, rejected) + [tokenizer.eos_token_id]  # fits, untouched
    assert (stats.prompts_truncated, stats.completions_truncated, stats.pairs) == (1, 1, 1)


def test_truncated_prompt_keeps_its_bos(bos_tokenizer):
    prompt = "one two three four five six"
    pair = tokenize_pair(PreferenceExample(prompt, " a", " b"), bos_tokenizer, 16, 4)
    assert pair.prompt_ids == [bos_tokenizer.bos_token_id] + encode(bos_tokenizer, prompt)[-3:]


def test_pair_with_nothing_left_to_compare_is_dropped_and_counted(tokenizer):
    """Both completions start " yes yes": cut to their first 4 tokens, they are identical."""
    stats = TokenizeStats()
    example = PreferenceExample("Hi", " yes yes yes", " yes yes no")
    assert encode(tokenizer, " yes yes")[:4] == encode(tokenizer, " yes yes no")[:4]
    assert tokenize_pair(example, tokenizer, max_length=5, max_prompt_length=1, stats=stats) is None
    assert stats.dropped_by_truncation == 1 and stats.pairs == 0


def test_truncate_pair_drops_an_empty_completion():
    assert truncate_pair([1, 2], [], [3], max_length=8, max_prompt_length=4, bos_token_id=None) is None
    assert truncate_pair([1, 2], [4], [3], max_length=8, max_prompt_length=4, bos_token_id=None) == ([1, 2], [4], [3])


@pytest.mark.parametrize(
    "max_length, max_prompt_length, message",
    [(8, 0, "`max_prompt_length` must be an integer >= 1"), (8, 8, r"`max_length` \(8\) must be greater than")],
)
def test_lengths_are_validated(max_length, max_prompt_length, message):
    with pytest.raises(ValueError, match=message):
        check_lengths(max_length, max_prompt_length)


def test_views_transform_the_prompt_before_the_template_and_share_completions(tokenizer):
    view = InstructionPrefix("Be brief.")
    pair = tokenize_pair(PreferenceExample([USER], [PARIS], [ROME]), tokenizer, 128, 64, views={"brief": view})
    expected = CHAT_PROMPT.replace("user\n", "user\nBe brief. ")
    assert tokenizer.decode(pair.view_prompt_ids["brief"]) == expected
    assert tokenizer.decode(pair.chosen_ids) == "Paris.<|im_end|>"


def test_view_prompt_on_a_transcript_goes_after_the_first_human_turn(tokenizer):
    prompt = "\n\nHuman: hi\n\nAssistant:"
    views = {"v": InstructionPrefix("Hey.")}
    pair = tokenize_pair(PreferenceExample(prompt, " a", " b"), tokenizer, 64, 32, views=views)
    assert tokenizer.decode(pair.view_prompt_ids["v"]) == "\n\nHuman: Hey. hi\n\nAssistant:"


def test_view_prompt_is_truncated_to_fit_next_to_the_completions(tokenizer):
    """The longer view prompt keeps its last tokens so that view prompt + longest completion fits max_length."""
    view = InstructionPrefix("Please answer this question with a lot of care and some thought.")
    example = PreferenceExample("one two", " three four five six seven", " eight")
    pair = tokenize_pair(example, tokenizer, max_length=20, max_prompt_length=8, views={"v": view})
    view_ids = encode(tokenizer, view.apply("one two"))
    assert len(view_ids) > 8
    budget = min(8, 20 - len(pair.chosen_ids))
    assert pair.view_prompt_ids["v"] == view_ids[-budget:]
    assert len(pair.view_prompt_ids["v"]) + max(len(pair.chosen_ids), len(pair.rejected_ids)) <= 20
