"""PreferenceDataModule: sources and file types, caching, splits, errors, views through a Trainer, real HH-RLHF data."""

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer

import lightpref.data.splits as splits
from lightpref.data import PreferenceDataModule
from lightpref.data.formats import normalise_rows
from lightpref.data.sources import read_file
from lightpref.testing import tiny_tokenizer
from lightpref.views import InstructionPrefix

HH_SAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "hh-rlhf-harmless-sample.jsonl"
RECORDS = [{"prompt": f"Question {i}?", "chosen": f" The answer is {i}.", "rejected": " No idea."} for i in range(10)]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def make(tokenizer, tmp_path: Path, **options) -> PreferenceDataModule:
    options = {"records": RECORDS, "cache_dir": str(tmp_path / "cache"), "max_length": 64, "max_prompt_length": 32,
               **options}
    return PreferenceDataModule(tokenizer, **options)


def ready(data: PreferenceDataModule) -> PreferenceDataModule:
    data.prepare_data()
    data.setup("fit")
    return data


def write(path: Path, records: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    elif path.suffix == ".json":
        path.write_text(json.dumps(records))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        with path.open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    return path


def prompts(data: PreferenceDataModule, dataset) -> list[str]:
    return [data.tokenizer.decode(row["prompt_ids"]) for row in dataset]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_every_file_type_gives_the_same_pairs(tokenizer, tmp_path: Path, suffix: str):
    from_records = ready(make(tokenizer, tmp_path / "records"))
    path = write(tmp_path / f"train{suffix}", RECORDS)
    from_file = ready(make(tokenizer, tmp_path, records=None, train_files=str(path)))
    assert list(from_file.train_dataset) == list(from_records.train_dataset)
    assert prompts(from_file, from_file.train_dataset) == [record["prompt"] for record in RECORDS]


def test_several_files_and_glob_patterns_are_read_in_order(tokenizer, tmp_path: Path):
    write(tmp_path / "a.jsonl", RECORDS[:4])
    write(tmp_path / "b.jsonl", RECORDS[4:])
    data = ready(make(tokenizer, tmp_path, records=None, train_files=str(tmp_path / "*.jsonl")))
    assert prompts(data, data.train_dataset) == [record["prompt"] for record in RECORDS]


def test_batches_follow_the_contract(tokenizer, tmp_path: Path):
    data = ready(make(tokenizer, tmp_path, batch_size=3, shuffle=False, pad_to_multiple_of=8))
    batch = next(iter(data.train_dataloader()))
    assert batch.views == {} and batch.split == "train"
    assert batch["index"].tolist() == [0, 1, 2]  # each pair's position in its split, unshuffled here
    assert batch["input_ids"].shape[0] == 6 and batch["input_ids"].shape[1] % 8 == 0
    first_chosen = batch["input_ids"][0][batch["completion_mask"][0]]
    first_rejected = batch["input_ids"][3][batch["completion_mask"][3]]
    assert tokenizer.decode(first_chosen) == " The answer is 0.<|im_end|>"
    assert tokenizer.decode(first_rejected) == " No idea.<|im_end|>"
    assert (batch["input_ids"][~batch["attention_mask"].bool()] == tokenizer.pad_token_id).all()
    assert data.val_dataloader() == []  # no validation data


def test_ordered_dataloader_gives_requested_positions(tokenizer, tmp_path: Path):
    data = ready(make(tokenizer, tmp_path, batch_size=3))
    batches = list(data.ordered_dataloader("train", batch_size=2, indices=[4, 1, 7]))
    assert [batch["index"].tolist() for batch in batches] == [[4, 1], [7]]
    expected = data.train_dataset[7]["chosen_ids"]
    assert batches[1]["input_ids"][0][batches[1]["completion_mask"][0]].tolist() == list(expected)
    assert data.split_fingerprint("train") != data.split_fingerprint("val")


def test_val_fraction_is_a_seeded_disjoint_split(tokenizer, tmp_path: Path):
    data = ready(make(tokenizer, tmp_path, val_fraction=0.2, seed=1))
    train, val = prompts(data, data.train_dataset), prompts(data, data.val_dataset)
    assert (len(train), len(val)) == (8, 2)
    assert sorted(train + val) == sorted(record["prompt"] for record in RECORDS)
    again = ready(make(tokenizer, tmp_path, val_fraction=0.2, seed=1))
    assert prompts(again, again.val_dataset) == val
    [batch] = list(data.val_dataloader())
    assert batch["input_ids"].shape[0] == 4  # 2 pairs, chosen and rejected


def test_val_files_are_the_validation_set(tokenizer, tmp_path: Path):
    path = write(tmp_path / "val.jsonl", RECORDS[:3])
    data = ready(make(tokenizer, tmp_path, val_files=str(path), val_batch_size=2))
    assert prompts(data, data.val_dataset) == [record["prompt"] for record in RECORDS[:3]]
    assert [len(batch["input_ids"]) for batch in data.val_dataloader()] == [4, 2]


def test_the_cache_is_reused_and_keyed_by_every_input(tokenizer, tmp_path: Path, monkeypatch):
    first = ready(make(tokenizer, tmp_path))

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr("lightpref.data.chunks.tokenize_pairs", no_tokenising)
    second = ready(make(tokenizer, tmp_path))
    assert second.cache_directory() == first.cache_directory()
    assert list(second.train_dataset) == list(first.train_dataset)
    assert not [path for path in (tmp_path / "cache").iterdir() if path.name.startswith(".")]  # no temporary left
    changed = [
        make(tokenizer, tmp_path, max_length=65),
        make(tokenizer, tmp_path, records=RECORDS[:9]),
        make(tiny_tokenizer(bos=True), tmp_path),
        make(tokenizer, tmp_path, prompt_views={"v": InstructionPrefix("Hi.")}),
        make(tokenizer, tmp_path, prompt_views={"v": InstructionPrefix("Hi!")}),
    ]
    directories = {data.cache_directory() for data in changed} | {first.cache_directory()}
    assert len(directories) == len(changed) + 1
    with pytest.raises(AssertionError, match="tokenised again"):
        changed[0].prepare_data()


def test_an_incomplete_cache_directory_is_never_used(tokenizer, tmp_path: Path):
    data = make(tokenizer, tmp_path)
    directory = data.cache_directory()
    (directory / "train").mkdir(parents=True)  # as if a writer died before finishing
    ready(data)
    assert len(data.train_dataset) == 10 and (directory / "stats.json").is_file()


def test_skip_invalid_counts_and_logs_skipped_rows(tokenizer, tmp_path: Path, monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(splits, "rank_zero_info", messages.append)
    bad = [{"prompt": "q", "chosen": "same", "rejected": "same"}, {"prompt": "q", "chosen": " a"}]
    data = ready(make(tokenizer, tmp_path, records=RECORDS + bad, skip_invalid=True))
    assert len(data.train_dataset) == 10
    assert data.stats["train"]["skipped_invalid"] == 2
    assert "lightpref data: skipped 2 invalid train records" in messages


def test_bad_row_error_names_the_file_and_line(tokenizer, tmp_path: Path):
    path = write(tmp_path / "train.jsonl", RECORDS[:2] + [{"prompt": "q", "chosen": "a", "rejected": "a"}])
    with pytest.raises(ValueError, match=rf"^{path}, line 3: `chosen` is identical to `rejected`.*skip_invalid"):
        make(tokenizer, tmp_path, records=None, train_files=str(path)).prepare_data()


def test_tokenisation_error_names_the_row(tokenizer, tmp_path: Path):
    no_template = tiny_tokenizer()
    no_template.chat_template = None
    records = [{"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"}]
    with pytest.raises(ValueError, match=r"^records\[0\]: the data is conversational .* no chat template"):
        make(no_template, tmp_path, records=records).prepare_data()


def test_missing_file_is_named(tokenizer, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"`train_files`: the file '.*nowhere\.jsonl' does not exist"):
        make(tokenizer, tmp_path, records=None, train_files=str(tmp_path / "nowhere.jsonl"))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"val_fraction": 1.0}, r"`val_fraction` must be in \[0, 1\), got 1.0"),
        ({"max_length": 32}, r"`max_length` \(32\) must be greater than `max_prompt_length` \(32\)"),
        ({"records": None}, "give exactly one training source"),
        ({"hub_dataset": "org/name"}, "give exactly one training source"),
        ({"val_split": "test"}, "`val_split` names a split of `hub_dataset`"),
        ({"batch_size": 0}, "`batch_size` must be an integer >= 1, got 0"),
        ({"format": "xml"}, "`format` must be one of"),
    ],
)
def test_parameters_are_validated(tokenizer, tmp_path: Path, options: dict, message: str):
    with pytest.raises(ValueError, match=message):
        make(tokenizer, tmp_path, **options)


def test_tokenizer_by_path_and_eos_as_missing_pad(tmp_path: Path):
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    data = ready(make(str(tmp_path / "tokenizer"), tmp_path))
    assert data.tokenizer.eos_token == "<|im_end|>" and len(data.train_dataset) == 10
    no_pad = tiny_tokenizer()
    no_pad.pad_token = None
    assert make(no_pad, tmp_path).load_tokenizer().pad_token_id == no_pad.eos_token_id


def test_the_signature_is_the_config(tmp_path: Path):
    from jsonargparse import ArgumentParser

    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    pairs_file = write(tmp_path / "pairs.jsonl", RECORDS)
    parser = ArgumentParser()
    parser.add_class_arguments(PreferenceDataModule, "data")
    views = {"kind": {"class_path": "lightpref.views.InstructionPrefix", "init_args": {"text": "Be kind."}}}
    arguments = ["--data.tokenizer", str(tmp_path / "tokenizer"), "--data.train_files", str(pairs_file)]
    config = parser.parse_args([*arguments, "--data.prompt_views", json.dumps(views), "--data.val_fraction", "0.25"])
    data = parser.instantiate(config).data
    assert data.prompt_views == {"kind": InstructionPrefix("Be kind.")} and data.val_fraction == 0.25


class ViewProbe(LightningModule):
    """A LightningModule that only records the batches it sees and exposes one prompt view."""

    prompt_views = {"kind": InstructionPrefix("Be kind.")}

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[dict] = []

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        self.seen.append(batch)
        return self.weight * batch["attention_mask"].float().mean()

    def validation_step(self, batch: dict, batch_index: int) -> None:
        raise AssertionError("there is no validation data")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_views_come_from_the_attached_module_and_no_validation_is_fine(tokenizer, tmp_path: Path):
    data, module = make(tokenizer, tmp_path, batch_size=2), ViewProbe()
    trainer = Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)
    trainer.fit(module, datamodule=data)
    assert data.resolve_prompt_views() == ViewProbe.prompt_views
    batch = module.seen[0]
    view = batch["views"]["kind"]
    for row in range(4):
        assert torch.equal(batch["input_ids"][row][batch["completion_mask"][row]],
                           view["input_ids"][row][view["completion_mask"][row]])
    view_prompt = view["input_ids"][0][view["attention_mask"][0].bool() & ~view["completion_mask"][0]]
    assert tokenizer.decode(view_prompt).startswith("Be kind. Question ")


@pytest.mark.slow
def test_real_hh_rlhf_sample(tokenizer, tmp_path: Path):
    """Every row of the HH-RLHF sample splits into prompt + completion exactly; 4 rows have a blank chosen answer."""
    if not HH_SAMPLE.is_file():
        pytest.skip(f"the HH-RLHF sample is not available at {HH_SAMPLE.resolve()}")
    raw = [json.loads(line) for line in HH_SAMPLE.open()]
    result = normalise_rows(read_file(HH_SAMPLE), skip_invalid=True)
    assert result.format == "hh_rlhf" and result.skipped == 4 and len(result.examples) == len(raw) - 4
    by_line = {int(location.rsplit(" ", 1)[1]): example for location, example in zip(result.locations,
                                                                                  result.examples, strict=True)}
    for line, record in enumerate(raw, 1):
        example = by_line.get(line)
        if example is None:
            continue
        assert example.prompt + example.chosen == record["chosen"]
        assert example.prompt + example.rejected == record["rejected"]
        assert example.prompt.endswith("\n\nAssistant:") and example.prompt.startswith("\n\nHuman:")
    with pytest.raises(ValueError, match=r"hh-rlhf-harmless-sample\.jsonl, line 71: the `chosen` completion .* empty"):
        normalise_rows(read_file(HH_SAMPLE))
    data = ready(make(tokenizer, tmp_path, records=None, train_files=str(HH_SAMPLE), skip_invalid=True,
                      max_length=1024, max_prompt_length=512))
    assert len(data.train_dataset) == len(raw) - 4
    assert data.stats["train"]["skipped_invalid"] == 4 and data.stats["train"]["dropped_by_truncation"] == 0
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8
    for row in range(8):
        completion = tokenizer.decode(batch["input_ids"][row][batch["completion_mask"][row]])
        prompt = tokenizer.decode(batch["input_ids"][row][batch["attention_mask"][row].bool()
                                                          & ~batch["completion_mask"][row]])
        assert completion.startswith(" ") and prompt.endswith("\n\nAssistant:")


def test_a_json_file_may_hold_json_lines(tokenizer, tmp_path: Path):
    path = tmp_path / "train.json"
    path.write_text("".join(json.dumps(record) + "\n" for record in RECORDS))
    data = ready(make(tokenizer, tmp_path, records=None, train_files=str(path)))
    assert prompts(data, data.train_dataset) == [record["prompt"] for record in RECORDS]


def test_hub_dataset_splits_are_read_and_rows_located(tokenizer, tmp_path: Path, monkeypatch):
    from datasets import Dataset

    loaded = []

    def load_hub(name: str, config: str | None, split: str) -> Dataset:
        loaded.append((name, config, split))
        return Dataset.from_list(RECORDS[:6] if split == "train" else RECORDS[6:])

    monkeypatch.setattr("lightpref.data.sources.load_hub", load_hub)
    options = {"records": None, "hub_dataset": "org/prefs", "hub_config": "main", "val_split": "test"}
    data = ready(make(tokenizer, tmp_path, **options))
    assert sorted(set(loaded)) == [("org/prefs", "main", "test"), ("org/prefs", "main", "train")]
    assert (len(data.train_dataset), len(data.val_dataset)) == (6, 4)

    monkeypatch.setattr("lightpref.data.sources.load_hub", lambda *args: Dataset.from_list(RECORDS[:1] + [{}]))
    with pytest.raises(ValueError, match=r"^hub dataset 'org/prefs' split 'train', row 2 \(1-based\): field `prompt`"):
        make(tokenizer, tmp_path / "other", **options).prepare_data()
