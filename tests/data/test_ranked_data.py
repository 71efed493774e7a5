"""Ranked records (a prompt with K scored completions) through the pair data machinery: formats, files, errors with
file and line, truncation and its counts, the cache, token budgets, streaming, and mixtures of shapes refused."""

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset

from lightpref.batch import GroupBatch
from lightpref.data import PreferenceDataModule
from lightpref.data.formats import detect_format, normalise_record
from lightpref.data.groups import truncate_group
from lightpref.data.ranked import RankedExample
from lightpref.data.token_budget import token_lengths
from lightpref.testing import tiny_tokenizer

RANKED = [{"prompt": f"Question {i}?", "completions": [f" The answer is {i}.", " No idea.", " Maybe."][: 2 + i % 2],
           "scores": [3.0, 1.0, 2.0][: 2 + i % 2]} for i in range(10)]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def ready(tokenizer, tmp_path: Path, **options) -> PreferenceDataModule:
    options = {"records": RANKED, "cache_dir": str(tmp_path / "cache"), "max_length": 64, "max_prompt_length": 32,
               **options}
    data = PreferenceDataModule(tokenizer, **options)
    data.prepare_data()
    data.setup("fit")
    return data


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_formats_scores_ranks_messages_and_ultrafeedback():
    user = [{"role": "user", "content": "hi"}]
    assert normalise_record({"prompt": "q", "completions": ["a", "b"], "ranks": [2, 1]}).scores == [-2.0, -1.0]
    chat = normalise_record({"prompt": user, "completions": ["a", {"role": "assistant", "content": "b"}],
                             "scores": [1, 0]})
    assert chat.completions == [[{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": "b"}]]
    raw = {"instruction": "q", "completions": [{"response": "a", "overall_score": 7.5},
                                                {"response": "b", "overall_score": 4}]}
    assert detect_format(raw) == "ultrafeedback"
    assert normalise_record(raw) == RankedExample("q", ["a", "b"], [7.5, 4.0])
    assert detect_format(RANKED[0]) == "ranked"


@pytest.mark.parametrize(("record", "message"), [
    ({"prompt": "q", "completions": ["a"], "scores": [1]}, "1 completion.*at least 2"),
    ({"prompt": "q", "completions": ["a", "b"], "scores": [1, "high"]}, "score 2 is 'high', not a finite number"),
    ({"prompt": "q", "completions": ["a", "b", "c"], "scores": [1, 2]}, "3 completions but 2 scores"),
    ({"prompt": "q", "completions": ["a", "b"], "scores": [1, 1]}, "same score"),
    ({"prompt": "q", "completions": ["a", "a"], "scores": [1, 2]}, "completions 1 and 2 are identical"),
    ({"prompt": "q", "completions": ["a", "b"], "scores": [1, 2], "ranks": [1, 2]}, "exactly one of `scores`"),
])
def test_bad_ranked_row_error_names_the_file_and_line(tokenizer, tmp_path, record, message):
    path = write_jsonl(tmp_path / "ranked.jsonl", RANKED[:2] + [record])
    data = PreferenceDataModule(tokenizer, train_files=str(path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=rf"^{path}, line 3: .*{message}"):
        data.prepare_data()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_ranked_files_give_group_batches(tokenizer, tmp_path, suffix):
    path = tmp_path / f"ranked{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, RANKED)
    else:
        pq.write_table(pa.Table.from_pylist(RANKED), path)
    data = ready(tokenizer, tmp_path, records=None, train_files=str(path), batch_size=3, shuffle=False)
    assert data.shape == "ranked" and len(data.train_dataset) == 10
    batch = next(iter(data.train_dataloader()))
    assert isinstance(batch, GroupBatch)
    assert batch.group_ids.tolist() == [0, 0, 1, 1, 1, 2, 2]  # K = 2, 3, 2
    assert batch.scores.tolist() == [3.0, 1.0, 3.0, 1.0, 2.0, 3.0, 1.0]
    assert tokenizer.decode(batch.input_ids[3][batch.completion_mask[3]]) == " No idea.<|im_end|>"
    assert batch.index.tolist() == [0, 1, 2]


def test_truncation_extends_to_k_completions_and_is_counted(tokenizer, tmp_path):
    """max_length 8 leaves the completions 8 − prompt tokens; ' No idea.' and ' Maybe.' stay apart (kept), while
    two completions that share their first tokens and differ in score are dropped."""
    records = RANKED[:3] + [{"prompt": "Q?", "completions": [" aaaaaaaaaaaax", " aaaaaaaaaaaay"], "scores": [1, 0]}]
    data = ready(tokenizer, tmp_path, records=records, max_length=8, max_prompt_length=4)
    stats = data.stats["train"]
    assert stats["pairs"] == 3 and stats["dropped_by_truncation"] == 1
    assert stats["completions_truncated"] == 3 and stats["prompts_truncated"] == 3
    assert all(len(row["prompt_ids"]) + max(map(len, row["completion_ids"])) <= 8 for row in data.train_dataset)
    assert truncate_group([1, 2], [[3, 4, 5], [3, 4, 6]], [1, 1], 4, 2, None) == ([1, 2], [[3, 4], [3, 4]])  # a tie


def test_the_counts_call_groups_groups(tokenizer, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        ready(tokenizer, tmp_path, val_fraction=0.2)
    said = [record.getMessage() for record in caplog.records]
    assert any(": 10 ranked groups tokenised, 0 invalid rows skipped, 0 ranked groups dropped" in line for line in said)
    assert any("8 training and 2 validation ranked groups" in line for line in said)
    assert not any("pairs" in line for line in said)


def test_token_lengths_of_groups_count_the_prompt_once(tokenizer, tmp_path):
    data = ready(tokenizer, tmp_path)
    expected = [len(row["prompt_ids"]) + sum(map(len, row["completion_ids"])) for row in data.train_dataset]
    assert token_lengths(data.train_dataset) == expected


def test_cache_is_byte_identical_across_processes(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr("lightpref.data.pipeline.CHUNK_PAIRS", 3)  # several chunks, so the workers start
    one = ready(tokenizer, tmp_path / "one", num_proc=1)
    two = ready(tokenizer, tmp_path / "two", num_proc=2)
    files = [sorted(path.rglob("train*.arrow")) for path in (tmp_path / "one", tmp_path / "two")]
    assert files[0] and [path.read_bytes() for path in files[0]] == [path.read_bytes() for path in files[1]]
    assert one.train_dataset[:] == two.train_dataset[:]


def test_pairs_and_groups_in_one_run_are_refused_naming_the_row(tokenizer, tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    ranked = write_jsonl(tmp_path / "ranked.jsonl", RANKED[:2])
    data = PreferenceDataModule(tokenizer, train_files=[str(ranked), str(pairs)], cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=rf"^{pairs}, line 1: a pair among ranked groups"):
        data.prepare_data()


def test_streamed_hub_groups(tokenizer, tmp_path, monkeypatch):
    stream = Dataset.from_list(RANKED).to_iterable_dataset()
    monkeypatch.setattr("lightpref.data.sources.load_hub", lambda *args, **kwargs: stream)
    data = PreferenceDataModule(tokenizer, hub_dataset="org/ranked", streaming=True, batch_size=2, shuffle=False,
                                cache_dir=str(tmp_path))
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert data.shape == "ranked" and batch.group_ids.tolist() == [0, 0, 1, 1, 1]
