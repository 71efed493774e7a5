"""`iterate.pairing: WholeGroup`: a round keeps each prompt's K samples as one ranked group, which the DataModule reads
as groups for the group forward, instead of keeping best and worst only."""

import json

from lightpref.batch import GroupBatch
from lightpref.data import PreferenceDataModule
from lightpref.iterate import BestVsWorst, WholeGroup
from lightpref.iterate.stages import chunk_paths, collect_pairs, write_jsonl
from lightpref.testing import tiny_tokenizer


def write_round(directory, prompts, texts, rewards):
    directory.mkdir(parents=True, exist_ok=True)
    samples, scores = chunk_paths(directory, 0)
    samples.write_text(json.dumps({"prompts": prompts, "texts": texts, "completion_tokens": [3] * len(texts)}))
    scores.write_text(json.dumps({"rewards": rewards}))


def test_whole_group_keeps_every_distinct_sample_and_trains_as_groups(tmp_path):
    """Two prompts, K = 4 samples each. Prompt 0: four distinct texts, one group of 4 (best vs worst would keep 2);
    prompt 1: a repeated text kept once and rewards within the gap of each other except one, a group of 3."""
    texts = [" a", " b", " c", " d", " x", " x", " y", " z"]
    rewards = [0.5, 2.0, -1.0, 1.0, 0.3, 0.9, 0.3, 0.4]
    write_round(tmp_path / "samples", ["Q0?", "Q1?"], texts, rewards)
    records, stats = collect_pairs(tmp_path / "samples", 1, 4, WholeGroup(), chat=True)
    assert [len(record["completions"]) for record in records] == [4, 3]
    assert records[1]["scores"] == [0.3, 0.3, 0.4] and records[1]["completions"][0] == [
        {"role": "assistant", "content": "x"}]
    assert stats["pairs/count"] == 2 and stats["pairs/reward_gap"] == (3.0 + 0.1) / 2
    pairs, _ = collect_pairs(tmp_path / "samples", 1, 4, BestVsWorst(), chat=True)
    assert len(pairs) == 2 and all("completions" not in pair for pair in pairs)

    write_jsonl(tmp_path / "pairs.jsonl", records)
    data = PreferenceDataModule(tiny_tokenizer(), train_files=str(tmp_path / "pairs.jsonl"), batch_size=2,
                                cache_dir=str(tmp_path / "cache"), shuffle=False)
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert data.shape == "ranked" and isinstance(batch, GroupBatch)
    assert batch.group_ids.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert batch.scores.tolist() == [0.5, 2.0, -1.0, 1.0, 0.30000001192092896, 0.30000001192092896,
                                     0.4000000059604645]


def test_whole_group_gives_nothing_for_a_tied_prompt():
    assert WholeGroup(min_gap=0.5).group("Q", [" a", " b"], [1.0, 1.2]) is None
    assert WholeGroup().group("Q", [" a", " a"], [1.0, 2.0]) is None
