"""A pair record's optional numeric `margin` reaches the reward loss: read and checked with the other fields (a bad
value is one error naming the file and line), stored in the tokenisation cache, collated into the batch's
`margin`, and subtracted inside Bradley–Terry's −logσ(r⁺ − r⁻ − m)."""

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional

from lightpref.data import PreferenceDataModule
from lightpref.data.formats import normalise_record
from lightpref.testing import tiny_tokenizer

PAIRS = [{"prompt": f"Question {i}?", "chosen": f" The answer is {i}.", "rejected": " No idea."} for i in range(6)]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def batches(path: Path, cache: Path, batch_size: int = 3) -> list:
    data = PreferenceDataModule(tiny_tokenizer(), train_files=str(path), cache_dir=str(cache), max_length=64,
                                max_prompt_length=32, batch_size=batch_size, shuffle=False)
    data.prepare_data()
    data.setup("fit")
    return list(data.train_dataloader())


def test_margin_is_read_from_any_pair_format():
    assert normalise_record({**PAIRS[0], "margin": 2}).margin == 2.0
    assert normalise_record({**PAIRS[0], "margin": None}).margin is None
    turn = "\n\nHuman: hi\n\nAssistant:"
    assert normalise_record({"chosen": turn + " hello", "rejected": turn + " go", "margin": 0.5}).margin == 0.5
    assert normalise_record(PAIRS[0]).margin is None


@pytest.mark.parametrize(("value", "shown"), [("high", "'high'"), (True, "True"), ([1], r"\[1\]")])
def test_a_bad_margin_is_one_error_naming_the_file_and_line(tmp_path, value, shown):
    path = write_jsonl(tmp_path / "pairs.jsonl", [PAIRS[0], {**PAIRS[1], "margin": value}])
    data = PreferenceDataModule(tiny_tokenizer(), train_files=str(path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=rf"^{path}, line 2: field `margin` is {shown}, not a finite number"):
        data.prepare_data()


def test_non_finite_margin_is_refused(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps(PAIRS[1])[:-1] + ', "margin": NaN}\n')
    data = PreferenceDataModule(tiny_tokenizer(), train_files=str(path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=rf"^{path}, line 2: field `margin` is nan, not a finite number"):
        data.prepare_data()


def test_margins_travel_through_the_cache_into_the_batch(tmp_path):
    records = [{**pair, "margin": float(index)} if index % 2 else pair for index, pair in enumerate(PAIRS)]
    path = write_jsonl(tmp_path / "pairs.jsonl", records)
    for _ in range(2):  # tokenised, then read back from the cache
        first, second = batches(path, tmp_path / "cache")
        assert first.margin.tolist() == [0.0, 1.0, 0.0] and second.margin.tolist() == [3.0, 0.0, 5.0]
    plain = batches(write_jsonl(tmp_path / "plain.jsonl", PAIRS), tmp_path / "cache")
    assert all(batch.margin is None for batch in plain)


def test_the_data_margin_reaches_the_bradley_terry_loss(tiny_checkpoint, tmp_path):
    from lightpref.reward.module import RewardModule
    from lightpref.reward.scoring import plain_scores

    records = [{**pair, "margin": 2.0 * index - 3.0} for index, pair in enumerate(PAIRS[:4])]
    path = write_jsonl(tmp_path / "pairs.jsonl", records)
    data = PreferenceDataModule(str(tiny_checkpoint), train_files=str(path), cache_dir=str(tmp_path / "cache"),
                                max_length=64, max_prompt_length=32, batch_size=4, shuffle=False)
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    module = RewardModule(str(tiny_checkpoint))
    module.configure_model()
    with torch.no_grad():
        metrics, loss = module(batch)
        scores = plain_scores(module.reward_model, batch.input_ids, batch.attention_mask)
    margin = torch.tensor([-3.0, -1.0, 1.0, 3.0])
    expected = -functional.logsigmoid(scores[:4] - scores[4:] - margin).mean()
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, -functional.logsigmoid(scores[:4] - scores[4:]).mean())
