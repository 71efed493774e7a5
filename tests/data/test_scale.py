"""Data at scale: non-UTF-8 bytes located, chunked multi-process tokenisation byte-identical to one process, errors
located from worker processes, mixtures, and streamed datasets resuming exactly."""

import json
import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer

import lightpref.data.chunk_pool as chunk_pool
import lightpref.data.pipeline as pipeline
import lightpref.data.splits as splits
from lightpref.batch import PairBatch
from lightpref.data import PreferenceDataModule
from lightpref.data.cache import split_path
from lightpref.data.sources import read_file
from lightpref.testing import tiny_tokenizer
from lightpref.views import PromptView

HH_TURN = "\n\nHuman: Question {i}?\n\nAssistant:"


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def explicit(count: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"Question {i}?", "chosen": f" The answer is {i}.", "rejected": " No idea."}
            for i in range(start, start + count)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def make(tokenizer, tmp_path: Path, **options) -> PreferenceDataModule:
    options = {"cache_dir": str(tmp_path / "cache"), "max_length": 64, "max_prompt_length": 32, **options}
    return PreferenceDataModule(tokenizer, **options)


def ready(data: PreferenceDataModule) -> PreferenceDataModule:
    data.prepare_data()
    data.setup("fit")
    return data


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_non_utf8_bytes_name_the_file_and_line(tmp_path: Path, suffix: str):
    lines = {
        ".jsonl": [json.dumps(record) for record in explicit(3)],
        ".json": ["["] + [json.dumps(record) + "," for record in explicit(2)] + [json.dumps(explicit(1)[0]), "]"],
        ".csv": ["prompt,chosen,rejected"] + [f"q{i},a{i},b{i}" for i in range(3)],
    }[suffix]
    data = "\n".join(lines).encode("utf-8").split(b"\n")
    data[2] = data[2][:1] + b"\xe9" + data[2][1:]  # a Latin-1 "é" in the file's third line
    path = tmp_path / f"train{suffix}"
    path.write_bytes(b"\n".join(data) + b"\n")
    with pytest.raises(ValueError, match=rf"^{path}, line 3: not UTF-8 text .*b'\\xe9'.*re-encode the file as UTF-8"):
        list(read_file(path))


@pytest.mark.parametrize("indent", [None, 2])
def test_a_json_list_is_read_a_block_at_a_time_with_the_same_records(tmp_path: Path, monkeypatch, indent):
    """Blocks of 7 bytes cut records, numbers and multi-byte characters; the file is never read whole."""
    import lightpref.data.sources as sources

    records = [{"prompt": f"Q{i} é ✓ " + "x" * (i % 5), "chosen": f" {i * 1.5}", "rejected": " no", "n": i * 1001}
               for i in range(40)] + [1.5e10, 2.5e-3, -17, True, None]  # numbers a block may cut (`1.5e` is 1.5)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records, indent=indent, ensure_ascii=False), encoding="utf-8")
    monkeypatch.setattr(sources, "JSON_BLOCK_BYTES", 7)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the .json list was read whole"))
    rows = list(read_file(path))
    assert [record for _, record in rows] == records
    assert rows[44][0] == f"{path}, row 45 (1-based)"


@pytest.mark.parametrize(("text", "message"), [
    ('[\n  {"prompt": "q"},\n  {"prompt": tru}\n]', r"line 3: not valid JSON \(Expecting value\)"),
    ('[{"prompt": "q"}\n {"prompt": "r"}]', r"line 2: expected ',' or ']' after row 1, found '\{'"),
    ('[{"prompt": "q"}]\n[]', r"line 2: text after the list of records"),
    ('[{"prompt": "q"},\n', r"line 2: not valid JSON"),
])
def test_a_broken_json_list_names_the_line(tmp_path: Path, monkeypatch, text: str, message: str):
    import lightpref.data.sources as sources

    monkeypatch.setattr(sources, "JSON_BLOCK_BYTES", 5)
    path = tmp_path / "train.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"^{path}, {message}.*fix the file"):
        list(read_file(path))


def recording_worker(chunk):
    """The worker function, noting the process it ran in (in the file ``$PIDS_FILE``)."""
    with open(os.environ["PIDS_FILE"], "a") as stream:
        stream.write(f"{os.getpid()}\n")
    return TOKENIZE_IN_WORKER(chunk)


TOKENIZE_IN_WORKER = chunk_pool._tokenize_in_worker


def test_a_non_utf8_training_file_stops_prepare_data_naming_the_line(tokenizer, tmp_path: Path):
    path = tmp_path / "train.jsonl"
    valid = write_jsonl(tmp_path / "valid.jsonl", explicit(3)).read_bytes()
    path.write_bytes(valid.replace(b"answer is 1", b"r\xe9ponse"))  # Latin-1 bytes in the second line
    with pytest.raises(ValueError, match=rf"^{path}, line 2: not UTF-8 text"):
        make(tokenizer, tmp_path, train_files=str(path)).prepare_data()


def test_two_processes_write_a_cache_byte_identical_to_one(tokenizer, tmp_path: Path, monkeypatch):
    """50 pairs in chunks of 7 (so 8 chunks and a pool of workers), some dropped by truncation mid-chunk."""
    monkeypatch.setattr(pipeline, "CHUNK_PAIRS", 7)
    records = explicit(50)
    for record in records[4::9]:
        record["prompt"] = "word " * 40 + record["prompt"]  # truncated prompts
    for record in records[::9]:
        record["chosen"], record["rejected"] = " same" * 40 + " a", " same" * 40 + " b"  # dropped: nothing left
    path = write_jsonl(tmp_path / "train.jsonl", records)
    pids = tmp_path / "pids"
    monkeypatch.setattr(chunk_pool, "_tokenize_in_worker", recording_worker)
    monkeypatch.setenv("PIDS_FILE", str(pids))
    one, two = (ready(make(tokenizer, tmp_path / f"p{n}", train_files=str(path), num_proc=n)) for n in (1, 2))
    workers = set(pids.read_text().split())
    assert len(workers) >= 1 and str(os.getpid()) not in workers  # the two-process run tokenised in workers
    files = [split_path(data.cache_directory(), "train").read_bytes() for data in (one, two)]
    assert files[0] == files[1]
    assert one.stats == two.stats and one.stats["train"]["dropped_by_truncation"] == 6
    assert len(one.train_dataset) == 44 and one.stats["train"]["prompts_truncated"] > 0


def test_the_parent_collects_no_shared_objects_while_workers_run(tokenizer, monkeypatch):
    """A full collection in the parent writes to every page of objects the forked workers share (measured: +107 MiB
    PSS at 200k pairs), so the objects stay frozen while the workers live, and are unfrozen when they stop."""
    import gc

    from lightpref.data.formats import PreferenceExample

    monkeypatch.setattr(pipeline, "CHUNK_PAIRS", 2)
    chunks = [[(f"r{i}", PreferenceExample(f"Q{i}?", " yes", " no"))] for i in range(4)]
    job = pipeline.TokenizeJob(tokenizer, max_length=16, max_prompt_length=8)
    frozen = []
    with pipeline.ChunkTokenizer(job, num_proc=2) as chunk_tokenizer:
        for _ in chunk_tokenizer.map(chunks):
            frozen.append(gc.get_freeze_count())
        assert chunk_tokenizer._pool is not None  # the chunks went to workers
    assert len(frozen) == 4 and min(frozen) > 0
    assert gc.get_freeze_count() == 0


class RecordingBar:
    """Stands in for tqdm: keeps each bar's total and count."""

    made: list["RecordingBar"] = []

    def __init__(self, **options) -> None:
        self.total, self.n = options.get("total"), 0
        RecordingBar.made.append(self)

    def update(self, count: int) -> None:
        self.n += count

    def close(self) -> None:
        pass


@pytest.mark.parametrize("num_proc", [1, 2])
def test_the_progress_bar_counts_every_record_against_the_rows_counted_first(tokenizer, tmp_path, monkeypatch,
                                                                             num_proc):
    """36 records in a JSON-lines file with blank lines (some of Unicode spaces), one invalid (skipped) and five
    dropped by truncation: the bar's total is counted before tokenising, and it ends at it."""
    monkeypatch.setattr(pipeline, "CHUNK_PAIRS", 7)
    monkeypatch.setattr(pipeline, "tqdm", RecordingBar)
    monkeypatch.setattr(RecordingBar, "made", [])
    records = explicit(30)
    for record in records[::6]:
        record["chosen"], record["rejected"] = " same" * 40 + " a", " same" * 40 + " b"
    records += [{"prompt": "q", "chosen": " a"}] + explicit(5, start=30)
    blanks = ["\n", " \t\n", "\u00a0\u3000\n"]  # blank as text, Unicode spaces too: the reader skips them
    lines = [json.dumps(record) + "\n" + (blanks[index % 3] if index % 10 == 3 else "")
             for index, record in enumerate(records)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    data = ready(make(tokenizer, tmp_path, train_files=str(path), skip_invalid=True, num_proc=num_proc))
    train_bar = RecordingBar.made[0]
    assert (train_bar.total, train_bar.n) == (36, 36)
    counts = data.stats["train"]
    assert (counts["pairs"], counts["dropped_by_truncation"], counts["skipped_invalid"]) == (30, 5, 1)


def test_records_and_parquet_files_are_counted_and_csv_is_not(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lightpref.data.inputs import DataInputs
    from lightpref.data.pipeline import total_rows

    pq.write_table(pa.Table.from_pylist(explicit(4)), tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text("prompt,chosen,rejected\nq,a,b\n")
    assert total_rows([group for group, _ in DataInputs(records=explicit(3)).groups("train")]) == 3
    assert total_rows([group for group, _ in DataInputs(train_files=str(tmp_path / "a.parquet")).groups("train")]) == 4
    files = [str(tmp_path / "a.parquet"), str(tmp_path / "b.csv")]
    assert total_rows([group for group, _ in DataInputs(train_files=files).groups("train")]) is None


def dying_worker(chunk):
    """A worker killed mid-task (as the out-of-memory killer would)."""
    os._exit(1)


def test_a_worker_that_dies_is_an_error_not_a_hang(tokenizer, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK_PAIRS", 5)
    monkeypatch.setattr(chunk_pool, "_tokenize_in_worker", dying_worker)
    path = write_jsonl(tmp_path / "train.jsonl", explicit(20))
    data = make(tokenizer, tmp_path, train_files=str(path), num_proc=2)
    with pytest.raises(RuntimeError, match="a tokenising worker process ended unexpectedly.*lower `num_proc`"):
        data.prepare_data()
    assert not data.cache_directory().exists()  # nothing half-written is left as a cache


def test_a_bad_row_in_the_middle_of_a_large_file_names_its_line(tokenizer, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK_PAIRS", 500)
    records = explicit(6000)
    records[3456] = {"prompt": "q", "chosen": " same", "rejected": " same"}
    path = write_jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(ValueError, match=rf"^{path}, line 3457: `chosen` is identical to `rejected`"):
        make(tokenizer, tmp_path, train_files=str(path), num_proc=2).prepare_data()


class FailsOn(PromptView):
    """A view that cannot apply to one prompt: its error is raised in a worker process."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def apply(self, prompt):
        if self.marker in prompt:
            raise ValueError(f"cannot apply to a prompt with {self.marker!r}")
        return prompt


def test_a_tokenisation_error_in_a_worker_names_the_file_and_line(tokenizer, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(pipeline, "CHUNK_PAIRS", 100)
    records = explicit(1000)
    records[777]["prompt"] = "BAD question?"
    path = write_jsonl(tmp_path / "train.jsonl", records)
    data = make(tokenizer, tmp_path, train_files=str(path), num_proc=2, prompt_views={"v": FailsOn("BAD")})
    with pytest.raises(ValueError, match=rf"^{path}, line 778: cannot apply to a prompt with 'BAD'"):
        data.prepare_data()


def test_a_mixture_weights_and_caps_each_source_in_its_own_format(tokenizer, tmp_path: Path, monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(splits, "rank_zero_info", messages.append)
    plain = write_jsonl(tmp_path / "plain.jsonl", explicit(10))
    transcripts = [{"chosen": HH_TURN.format(i=i) + " Yes.", "rejected": HH_TURN.format(i=i) + " No."}
                   for i in range(100, 108)]
    hh = write_jsonl(tmp_path / "hh.jsonl", transcripts)
    sources = [
        {"files": str(plain), "format": "explicit", "weight": 0.5, "name": "plain"},
        {"files": str(hh), "format": "hh_rlhf", "weight": 3.0, "cap": 20},
    ]
    data = ready(make(tokenizer, tmp_path, sources=sources, seed=1))
    texts = [tokenizer.decode(row["prompt_ids"]) for row in data.train_dataset]
    plain_rows = [text for text in texts if text.startswith("Question")]
    hh_rows = [text for text in texts if text.startswith("\n\nHuman:")]
    assert len(plain_rows) == 5 and len(set(plain_rows)) == 5  # half of 10, no repeats
    assert len(hh_rows) == 20 and {hh_rows.count(text) for text in set(hh_rows)} == {2, 3}  # 3 x 8 capped at 20
    assert [source["name"] for source in data.stats["train"]["sources"]] == ["plain", str(hh)]
    assert data.stats["train"]["formats"] == ["explicit", "hh_rlhf"]
    assert any("train source 'plain': 10 pairs tokenised (5 in the mixture)" in message for message in messages)
    assert any(f"train source '{hh}': 8 pairs tokenised (20 in the mixture)" in message for message in messages)
    again = ready(make(tokenizer, tmp_path, sources=sources, seed=1))
    assert [row["prompt_ids"] for row in again.train_dataset] == [row["prompt_ids"] for row in data.train_dataset]
    reweighted = make(tokenizer, tmp_path, sources=[{**sources[0], "weight": 1.0}, sources[1]], seed=1)
    assert reweighted.cache_directory() == data.cache_directory()  # weights choose from the cache, not re-tokenise


@pytest.mark.parametrize(
    "entry, message",
    [({"files": "x.jsonl", "hub_dataset": "a/b"}, r"`sources\[0\]` must give exactly one of `files` or `hub_dataset`"),
     ({"files": "{path}", "weight": 0}, r"`sources\[0\].weight` must be a number > 0"),
     ({"files": "{path}", "cap": 0}, r"`sources\[0\].cap` must be an integer >= 1"),
     ({"files": "{path}", "format": "csv"}, r"`sources\[0\].format` must be one of")],
)
def test_mixture_entries_are_checked(tokenizer, tmp_path: Path, entry: dict, message: str):
    path = write_jsonl(tmp_path / "plain.jsonl", explicit(2))
    entry = {key: value.format(path=path) if isinstance(value, str) else value for key, value in entry.items()}
    with pytest.raises(ValueError, match=message):
        make(tokenizer, tmp_path, sources=[entry])


class Recorder(LightningModule):
    """Records the prompts of the batches it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def training_step(self, batch: PairBatch, batch_index: int) -> torch.Tensor:
        self.seen.append(batch.input_ids.tolist())
        return self.weight * batch.attention_mask.float().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def streamed(tokenizer, tmp_path: Path, monkeypatch, records: list[dict], **options) -> PreferenceDataModule:
    """A DataModule over a local JSON-lines file read through datasets' streaming (IterableDataset) code path."""
    from datasets import load_dataset

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_jsonl(tmp_path / "stream.jsonl", records)

    def load_hub(name, config, split, streaming=False):
        assert streaming
        return load_dataset("json", data_files=str(path), split="train", streaming=True)

    monkeypatch.setattr("lightpref.data.sources.load_hub", load_hub)
    return make(tokenizer, tmp_path, hub_dataset="local/stream", streaming=True, **options)


def fit(data: PreferenceDataModule, max_steps: int, tmp_path: Path, ckpt_path: str | None = None) -> Recorder:
    module = Recorder()
    trainer = Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
                      default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    trainer.save_checkpoint(str(tmp_path / f"step{max_steps}.ckpt"))
    return module


def test_a_streamed_dataset_is_tokenised_on_the_fly_like_the_cache(tokenizer, tmp_path: Path, monkeypatch):
    records = explicit(9) + [{"prompt": "q", "chosen": " a", "rejected": " a"}]
    data = streamed(tokenizer, tmp_path, monkeypatch, records, batch_size=4, shuffle=False, skip_invalid=True)
    data.prepare_data()
    data.setup("fit")
    options = {"batch_size": 4, "shuffle": False, "skip_invalid": True}
    cached = ready(make(tokenizer, tmp_path / "cached", records=records, **options))
    expected = [row["prompt_ids"] for row in cached.train_dataset]
    batches = list(data.train_dataloader())
    assert [len(batch.input_ids) for batch in batches] == [8, 8, 2]
    got = []
    for batch in batches:
        chosen = len(batch.input_ids) // 2  # rows 0..B-1: prompt + chosen
        for row in range(chosen):
            prompt = batch.attention_mask[row].bool() & ~batch.completion_mask[row]
            got.append(batch.input_ids[row][prompt].tolist())
    assert got == expected
    assert not (tmp_path / "cache").exists()  # nothing cached


def test_a_streamed_dataset_resumes_exactly_mid_epoch_and_across_epochs(tokenizer, tmp_path: Path, monkeypatch):
    """23 pairs in batches of 3: 8 batches per epoch. Stop at step 5 (mid-epoch) and at step 8 (the end of the
    epoch), resume to step 11; each resumed run sees exactly the batches of the uninterrupted one."""
    records = explicit(23)
    whole = fit(streamed(tokenizer, tmp_path / "whole", monkeypatch, records, batch_size=3), 11, tmp_path / "whole")
    assert len(whole.seen) == 11 and whole.seen[8:] != whole.seen[:3]  # epoch 1 is shuffled differently
    for stop in (5, 8):
        directory = tmp_path / f"stop{stop}"
        first = fit(streamed(tokenizer, directory, monkeypatch, records, batch_size=3), stop, directory)
        resumed = fit(streamed(tokenizer, directory, monkeypatch, records, batch_size=3), 11, directory,
                      ckpt_path=str(directory / f"step{stop}.ckpt"))
        assert first.seen == whole.seen[:stop]
        assert resumed.seen == whole.seen[stop:]


def test_streaming_needs_a_hub_dataset(tokenizer, tmp_path: Path):
    with pytest.raises(ValueError, match="`streaming: true` streams `hub_dataset`"):
        make(tokenizer, tmp_path, records=explicit(2), streaming=True)


def test_a_mixture_is_given_in_a_config(tmp_path: Path):
    from jsonargparse import ArgumentParser

    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    plain = write_jsonl(tmp_path / "plain.jsonl", explicit(4))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data:\n  tokenizer: {tmp_path / 'tokenizer'}\n  num_proc: 1\n  sources:\n"
        f"    - {{files: {plain}, format: explicit, weight: 0.5, name: plain}}\n"
        f"    - {{files: [{plain}], cap: 3}}\n"
    )
    parser = ArgumentParser()
    parser.add_class_arguments(PreferenceDataModule, "data")
    parser.add_argument("--config", action="config")
    data = parser.instantiate(parser.parse_args(["--config", str(config)])).data
    assert [(source.name, source.weight, source.cap, source.format) for source in data.inputs.sources] == [
        ("plain", 0.5, None, "explicit"), (None, 1.0, 3, "auto")]
    assert data.num_proc == 1


def test_a_mixture_source_may_be_a_hub_split(tokenizer, tmp_path: Path, monkeypatch):
    from datasets import Dataset

    loaded = []

    def load_hub(name: str, config: str | None, split: str) -> Dataset:
        loaded.append((name, config, split))
        return Dataset.from_list(explicit(6, start=50))

    monkeypatch.setattr("lightpref.data.sources.load_hub", load_hub)
    plain = write_jsonl(tmp_path / "plain.jsonl", explicit(4))
    sources = [{"files": str(plain)}, {"hub_dataset": "org/prefs", "hub_config": "main", "split": "test", "cap": 2}]
    data = ready(make(tokenizer, tmp_path, sources=sources))
    assert loaded == [("org/prefs", "main", "test")]  # loaded once for the fingerprint and the rows
    assert [source["name"] for source in data.stats["train"]["sources"]] == [str(plain), "org/prefs:test"]
    assert len(data.train_dataset) == 4 + 2
