"""Unpaired records (a prompt, one completion, a boolean label) through the data machinery: the layout, errors with
file and line, the mismatched completion stored beside each example, the cache across processes, mixtures,
streaming, label counts, and shapes mixed in one run refused."""

import json
from pathlib import Path

import pytest
from datasets import Dataset

from lightpref.batch import UnpairedBatch
from lightpref.data import PreferenceDataModule
from lightpref.data.formats import detect_format, normalise_record
from lightpref.data.unpaired import UnpairedExample, with_mismatched
from lightpref.testing import tiny_tokenizer

UNPAIRED = [{"prompt": f"Question {i}?", "completion": f" The answer is {i}." + " Sure." * (i % 3),
             "label": i % 3 != 2} for i in range(10)]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def ready(tokenizer, tmp_path: Path, **options) -> PreferenceDataModule:
    options = {"records": UNPAIRED, "cache_dir": str(tmp_path / "cache"), "max_length": 64, "max_prompt_length": 32,
               **options}
    data = PreferenceDataModule(tokenizer, **options)
    data.prepare_data()
    data.setup("fit")
    return data


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_layout_strings_and_messages():
    user = [{"role": "user", "content": "hi"}]
    assert detect_format(UNPAIRED[0]) == "unpaired"
    assert normalise_record(UNPAIRED[2]) == UnpairedExample("Question 2?", " The answer is 2. Sure. Sure.", False)
    chat = normalise_record({"prompt": user, "completion": "hello", "label": True})
    assert chat == UnpairedExample(user, [{"role": "assistant", "content": "hello"}], True)
    assert normalise_record({"prompt": user, "completion": [{"role": "assistant", "content": "yo"}],
                             "label": False}).completion == [{"role": "assistant", "content": "yo"}]


def test_each_example_gets_the_previous_completion_of_its_kind():
    """Rotated by one, the first taking the last's; string and chat prompts rotate among their own kind; an example
    alone of its kind keeps its own completion."""
    user = [{"role": "user", "content": "hi"}]
    examples = [UnpairedExample("a", " 1", True), UnpairedExample(user, [{"role": "assistant", "content": "x"}], True),
                UnpairedExample("b", " 2", False), UnpairedExample("c", " 3", True)]
    groups = with_mismatched(examples)
    assert [group.completions[1] for group in groups] == [" 3", examples[1].completion, " 1", " 2"]
    assert [group.scores for group in groups] == [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]


@pytest.mark.parametrize(("record", "message"), [
    ({"prompt": "q", "completion": "a", "label": "yes"}, "field `label` must be true or false, got 'yes'"),
    ({"prompt": "q", "completion": "a", "label": 1}, "field `label` must be true or false, got 1"),
    ({"prompt": "q", "completion": "a"}, "field `label` is missing"),
    ({"prompt": "q", "label": True}, "field `completion` is missing"),
    ({"completion": "a", "label": True}, "field `prompt` is missing"),
    ({"prompt": "q", "completion": "  ", "label": True}, "field `completion` must be a non-empty string"),
    ({"prompt": [{"role": "user", "content": "q"}], "completion": "", "label": True}, "field `completion` is empty"),
])
def test_bad_unpaired_row_error_names_the_file_and_line(tokenizer, tmp_path, record, message):
    path = write_jsonl(tmp_path / "feedback.jsonl", UNPAIRED[:2] + [record])
    data = PreferenceDataModule(tokenizer, train_files=str(path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=rf"^{path}, line 3: {message}") as error:
        data.prepare_data()
    assert "\n" not in str(error.value)


def test_stored_examples_carry_their_mismatched_completion(tokenizer, tmp_path):
    """Stored row n holds example n's completion, then example n − 1's (row 0: the last's), and its label; a batch
    is an UnpairedBatch with two rows per example sharing its prompt."""
    data = ready(tokenizer, tmp_path, batch_size=3, shuffle=False)
    rows = [data.train_dataset[n] for n in range(10)]
    assert data.shape == "unpaired" and [row["label"] for row in rows] == [r["label"] for r in UNPAIRED]
    assert all(row["completion_ids"][1] == rows[n - 1]["completion_ids"][0] for n, row in enumerate(rows))
    assert tokenizer.decode(rows[4]["completion_ids"][1]) == " The answer is 3.<|im_end|>"
    batch = next(iter(data.train_dataloader()))
    assert isinstance(batch, UnpairedBatch) and batch.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert batch.labels().tolist() == [True, True, False] and batch.index.tolist() == [0, 1, 2]
    assert tokenizer.decode(batch.input_ids[3][batch.completion_mask[3]]) == " The answer is 0.<|im_end|>"
    assert (batch.input_ids[2][~batch.completion_mask[2].bool() & batch.attention_mask[2].bool()]).tolist() == \
        rows[1]["prompt_ids"]


def test_cache_is_byte_identical_across_processes(tokenizer, tmp_path, monkeypatch):
    """Examples are rotated within the chunk they are tokenised in, cut from the input alone: the same stored rows
    on one process or two."""
    monkeypatch.setattr("lightpref.data.pipeline.CHUNK_PAIRS", 3)
    one = ready(tokenizer, tmp_path / "one", num_proc=1)
    ready(tokenizer, tmp_path / "two", num_proc=2)
    files = [sorted(path.rglob("train*.arrow")) for path in (tmp_path / "one", tmp_path / "two")]
    assert files[0] and [path.read_bytes() for path in files[0]] == [path.read_bytes() for path in files[1]]
    assert one.train_dataset[3]["completion_ids"][1] == one.train_dataset[5]["completion_ids"][0]  # chunk 3..5


def test_mixture_of_unpaired_sources(tokenizer, tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", UNPAIRED[:6])
    second = write_jsonl(tmp_path / "b.jsonl", UNPAIRED[6:])
    data = ready(tokenizer, tmp_path, records=None, sources=[{"files": str(first), "weight": 2.0},
                                                             {"files": str(second)}])
    labels = data.train_dataset["label"]
    assert len(labels) == 16 and sum(labels) == 2 * 4 + 3  # a.jsonl: 4 desirable of 6, twice; b.jsonl: 3 of 4


def test_pairs_and_unpaired_in_one_run_are_refused_naming_the_row(tokenizer, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    unpaired = write_jsonl(tmp_path / "feedback.jsonl", UNPAIRED[:2])
    data = PreferenceDataModule(tokenizer, train_files=[str(unpaired), str(pairs)], cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=rf"^{pairs}, line 1: a pair among labelled single completions"):
        data.prepare_data()


def test_streamed_hub_unpaired(tokenizer, tmp_path, monkeypatch):
    stream = Dataset.from_list(UNPAIRED).to_iterable_dataset()
    monkeypatch.setattr("lightpref.data.sources.load_hub", lambda *args, **kwargs: stream)
    data = PreferenceDataModule(tokenizer, hub_dataset="org/feedback", streaming=True, batch_size=2, shuffle=False,
                                cache_dir=str(tmp_path))
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert data.shape == "unpaired" and isinstance(batch, UnpairedBatch)
    assert batch.group_ids.tolist() == [0, 0, 1, 1] and batch.labels().tolist() == [True, True]
    assert batch.input_ids.shape[0] == 4 and torch_equal(batch.input_ids[3][batch.completion_mask[3]],
                                                          batch.input_ids[0][batch.completion_mask[0]])


def torch_equal(first, second) -> bool:
    return first.tolist() == second.tolist()
