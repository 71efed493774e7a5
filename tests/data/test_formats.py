"""Normalisation of every input format, format detection, and the errors bad rows raise."""

import json
from pathlib import Path

import pytest

from lightpref.data.formats import InvalidRecord, PreferenceExample, detect_format, normalise_record, normalise_rows
from lightpref.data.sources import read_file, read_records

USER = {"role": "user", "content": "What is 2+2?"}
GOOD = {"role": "assistant", "content": "4"}
BAD = {"role": "assistant", "content": "5"}
HH_PROMPT = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant:"


def test_explicit_record_is_kept_as_is():
    example = normalise_record({"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5", "score": 3})
    assert example == PreferenceExample(prompt="Q: 2+2?", chosen=" 4", rejected=" 5")
    assert not example.is_conversational


@pytest.mark.parametrize(
    "chosen, rejected",
    [([GOOD], [BAD]), (GOOD, BAD), ("4", "5")],
    ids=["message lists", "single message dicts", "plain strings"],
)
def test_conversational_with_prompt_gives_assistant_message_lists(chosen, rejected):
    example = normalise_record({"prompt": [USER], "chosen": chosen, "rejected": rejected})
    assert example == PreferenceExample(prompt=[USER], chosen=[GOOD], rejected=[BAD])
    assert example.is_conversational


def test_conversational_without_prompt_splits_at_the_longest_shared_prefix():
    system = {"role": "system", "content": "Be brief."}
    first = {"role": "assistant", "content": "Hello!"}
    follow_up = {"role": "user", "content": "And 3+3?"}
    record = {
        "chosen": [system, USER, first, follow_up, {"role": "assistant", "content": "6"}, USER, GOOD],
        "rejected": [system, USER, first, follow_up, {"role": "assistant", "content": "7"}],
    }
    example = normalise_record(record)
    assert example.prompt == [system, USER, first, follow_up]
    assert example.chosen == [{"role": "assistant", "content": "6"}, USER, GOOD]
    assert example.rejected == [{"role": "assistant", "content": "7"}]


def test_conversations_diverging_on_a_user_turn_are_rejected():
    record = {"chosen": [USER, GOOD], "rejected": [{"role": "user", "content": "other"}, GOOD]}
    with pytest.raises(InvalidRecord, match="share no leading messages"):
        normalise_record(record)
    record = {"chosen": [USER, GOOD, USER, GOOD], "rejected": [USER, GOOD, {"role": "user", "content": "x"}, BAD]}
    with pytest.raises(InvalidRecord, match="`chosen` completion starts with a 'user' turn, not an assistant turn"):
        normalise_record(record)


def test_hh_rlhf_prompt_ends_at_the_last_shared_assistant_turn():
    """The shared text ends inside the answers (" Sure, "), but the prompt stops at the last "\\n\\nAssistant:"."""
    record = {"chosen": HH_PROMPT + " Sure, it is 4.", "rejected": HH_PROMPT + " Sure, it is 5."}
    example = normalise_record(record)
    assert example == PreferenceExample(prompt=HH_PROMPT, chosen=" Sure, it is 4.", rejected=" Sure, it is 5.")


def test_hh_rlhf_completion_may_span_several_turns():
    record = {"chosen": HH_PROMPT + " 4.", "rejected": HH_PROMPT + " Why?\n\nHuman: Just say it.\n\nAssistant: 5."}
    example = normalise_record(record, format="hh_rlhf")
    assert example.prompt == HH_PROMPT
    assert example.rejected == " Why?\n\nHuman: Just say it.\n\nAssistant: 5."


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "explicit"),
        ({"prompt": [USER], "chosen": "a", "rejected": "b"}, "conversational"),
        ({"chosen": [USER, GOOD], "rejected": [USER, BAD]}, "conversational"),
        ({"chosen": HH_PROMPT + " a", "rejected": HH_PROMPT + " b"}, "hh_rlhf"),
    ],
)
def test_detect_format(record, expected):
    assert detect_format(record) == expected


def test_format_is_detected_from_the_first_valid_row_and_kept():
    rows = [
        ("records[0]", {"text": "no pair here"}),
        ("records[1]", {"prompt": "q", "chosen": "a", "rejected": "b"}),
        ("records[2]", {"prompt": [USER], "chosen": "a", "rejected": "b"}),  # not explicit: counted as invalid
    ]
    result = normalise_rows(rows, skip_invalid=True)
    assert result.format == "explicit"
    assert result.examples == [PreferenceExample("q", "a", "b")]
    assert result.locations == ["records[1]"]
    assert result.skipped == 2


def test_skip_invalid_counts_every_bad_row():
    records = [
        {"prompt": "q1", "chosen": "a", "rejected": "b"},
        {"prompt": "q2", "chosen": "same", "rejected": "same"},
        {"prompt": "q3", "chosen": "   ", "rejected": "b"},
        {"prompt": "q4", "rejected": "b"},
        {"prompt": "q5", "chosen": "c", "rejected": "d"},
    ]
    result = normalise_rows(read_records(records), skip_invalid=True)
    assert [example.prompt for example in result.examples] == ["q1", "q5"]
    assert result.skipped == 3
    with pytest.raises(ValueError, match=r"^records\[1\]: `chosen` is identical to `rejected`"):
        normalise_rows(read_records(records))


EXPLICIT = {"prompt": "q", "chosen": "a", "rejected": "b"}
CHAT = {"prompt": [USER], "chosen": [GOOD], "rejected": [BAD]}
HH = {"chosen": HH_PROMPT + " 4", "rejected": HH_PROMPT + " 5"}
BAD_ROWS = {  # case: (a valid first row fixing the format, the bad row, the problem named)
    "missing field": (EXPLICIT, {"prompt": "q", "chosen": "a"}, "field `rejected` is missing"),
    "non-string field": (EXPLICIT, {"prompt": "q", "chosen": 3, "rejected": "b"}, "field `chosen` must be a string"),
    "empty completion": (EXPLICIT, {"prompt": "q", "chosen": "", "rejected": "b"}, "field `chosen` is empty"),
    "identical": (EXPLICIT, {"prompt": "q", "chosen": "a", "rejected": "a"}, "`chosen` is identical to `rejected`"),
    "not an object": (EXPLICIT, ["q", "a", "b"], "the row is a list, not an object"),
    "role missing": (CHAT, {**CHAT, "prompt": [{"content": "hi"}]}, "message 1 of `prompt` is malformed"),
    "content not a string": (
        CHAT,
        {**CHAT, "chosen": [{"role": "assistant", "content": None}]},
        "message 1 of `chosen` has no string `content`",
    ),
    "messages not a list": (CHAT, {**CHAT, "rejected": 5}, "field `rejected` must be a list of chat messages"),
    "empty chat completion": (CHAT, {**CHAT, "chosen": []}, "the `chosen` completion is empty"),
    "empty hh completion": (
        HH,
        {"chosen": HH_PROMPT + " ", "rejected": HH_PROMPT + " 5"},
        "the `chosen` completion (after the last shared '\\n\\nAssistant:') is empty",
    ),
    "hh without shared turn": (HH, {"chosen": "\n\nHuman: a", "rejected": "\n\nHuman: b"}, "share no"),
    "undetectable": (None, {"question": "q", "answer": "a"}, "cannot tell the format of a row with fields"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_bad_row_error_names_file_line_problem_and_fix(tmp_path: Path, case: str):
    good, bad, problem = BAD_ROWS[case]
    path = tmp_path / "train.jsonl"
    path.write_text(f"{json.dumps(good) if good else ''}\n\n{json.dumps(bad)}\n")  # the bad row is on line 3
    with pytest.raises(ValueError) as error:
        normalise_rows(read_file(path))
    message = str(error.value)
    assert message.startswith(f"{path}, line 3: ")
    assert problem in message
    assert "skip_invalid" in message or "set `format`" in message  # the fix


def test_unknown_format_lists_the_known_ones():
    known = r"\['auto', 'explicit', 'conversational', 'hh_rlhf'\]"
    with pytest.raises(ValueError, match=rf"`format` must be one of {known}, got 'xml'"):
        normalise_rows(read_records([]), format="xml")


def test_a_conversational_row_in_explicit_format_says_how_to_fix_it():
    expected = "field `prompt` must be a string in the explicit format, got list"
    with pytest.raises(InvalidRecord, match=expected) as error:
        normalise_record({"prompt": [USER], "chosen": "a", "rejected": "b"}, format="explicit")
    assert "set `format`" in error.value.fix
