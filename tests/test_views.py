"""Prompt views: where an instruction lands in each prompt form."""

import pytest

from lightpref.views import InstructionPrefix


def test_hh_transcript_instruction_after_first_human():
    prompt = "\n\nHuman: How are you?\n\nAssistant: Fine.\n\nHuman: And now?\n\nAssistant:"
    assert InstructionPrefix("Rate 100.").apply(prompt) == (
        "\n\nHuman: Rate 100. How are you?\n\nAssistant: Fine.\n\nHuman: And now?\n\nAssistant:"
    )


def test_plain_string_prefixed():
    assert InstructionPrefix("Query:", separator="\n").apply("What is 2+2?") == "Query:\nWhat is 2+2?"


def test_messages_first_user_turn_only_and_input_untouched():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    viewed = InstructionPrefix("P").apply(messages)
    assert [m["content"] for m in viewed] == ["Be brief.", "P Hi", "Hello", "Bye"]
    assert messages[1]["content"] == "Hi"


def test_messages_without_user_turn_is_an_error():
    with pytest.raises(ValueError, match="user turn"):
        InstructionPrefix("P").apply([{"role": "system", "content": "x"}])


def test_repr_identifies_settings_for_the_cache():
    assert repr(InstructionPrefix("A")) != repr(InstructionPrefix("B"))
    assert InstructionPrefix("A") == InstructionPrefix("A")
