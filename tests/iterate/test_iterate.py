"""``lightpref iterate`` end to end on the tiny model: each round samples from the policy the previous round trained,
the pairs follow the rule, the reference is where the config puts it, and the metrics reach TensorBoard."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lightpref.evaluation.generation import SamplingSettings, sample_completions
from lightpref.iterate import AllPairs, BestVsWorst
from lightpref.iterate.command import parse_config, run_iterate
from lightpref.iterate.settings import Iteration
from lightpref.iterate.workflow import IterativeRun, instantiate
from lightpref.models.pretrained import load_model, load_tokenizer

REPO = Path(__file__).resolve().parents[2]


def test_pairing_rules_drop_ties_small_gaps_and_identical_texts():
    texts, rewards = ["a", "b", "c", "d"], [1.0, 3.0, 1.0, 2.5]
    assert BestVsWorst()(texts, rewards) == [(1, 2)]  # the later of the tied lowest (a stable order)
    assert BestVsWorst(min_gap=2.0)(texts, rewards) == []  # a gap of exactly min_gap is dropped
    assert BestVsWorst()(["same", "same"], [1.0, 0.0]) == []
    assert BestVsWorst()(["x", "y"], [0.5, 0.5]) == []  # a tie
    assert AllPairs(min_gap=0.4)(texts, rewards) == [(1, 3), (1, 0), (1, 2), (3, 0), (3, 2)]
    with pytest.raises(ValueError, match="min_gap"):
        BestVsWorst(min_gap=-1)


@pytest.mark.skipif(importlib.util.find_spec("vaderSentiment") is None, reason="vaderSentiment is not installed")
def test_shipped_iterate_config_parses():
    config_path = REPO / "configs" / "iterative_dpo.yaml"
    assert config_path.read_text().startswith("# Run: lightpref iterate --config configs/iterative_dpo.yaml")
    config = parse_config(["--config", str(config_path)])
    iteration = instantiate("iterate", config.iterate)
    assert iteration.rounds == 2 and isinstance(iteration.pairing, BestVsWorst) and iteration.pairing.min_gap == 0.05
    assert instantiate("model", config.model).loss.beta == 0.1


def test_a_loss_name_takes_arguments_as_in_fit():
    """The config says `loss: sr_dpo`; its argument is given on the command line, as `lightpref fit` allows."""
    config_path = REPO / "configs" / "iterative_dpo.yaml"
    config = parse_config(["--config", str(config_path), "--model.loss", "sr_dpo",
                           "--model.loss.init_args.beta", "0.3"])
    loss = instantiate("model", config.model).loss
    assert type(loss).__name__ == "SrDPO" and loss.beta == 0.3


def test_a_mistyped_option_is_one_line_naming_the_nearest(iterate_config, capsys):
    """iterate's parser is fit's kind: a mistyped key is lightpref's one-line usage error, as for `lightpref fit`."""
    from lightpref.cli import main

    config, _ = iterate_config()
    with pytest.raises(SystemExit) as exit_info:
        main(["iterate", "--config", str(config), "--data.bath_size", "3"])
    output = capsys.readouterr()
    assert exit_info.value.code == 2 and "Traceback" not in output.err
    assert output.err.strip().splitlines()[-1] == (
        "error: unknown option `data.bath_size` (did you mean `data.batch_size` or `data.val_batch_size`?)")


def test_round_prompts_wrap_around():
    from lightpref.evaluation import CompletionLength

    iteration = Iteration("out", CompletionLength(), prompts=list("abcde"), prompts_per_round=3)
    assert [iteration.round_prompts(r) for r in (1, 2, 3)] == [list("abc"), list("dea"), list("bcd")]


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_dpo_rounds_sample_on_policy(iterate_config, tiny_checkpoint):
    config, out = iterate_config()
    history = run_iterate(["--config", str(config)])
    assert [round(h["heldout/kl"], 6) for h in history][0] == 0.0 and history[1]["heldout/kl"] != 0.0
    tokenizer = load_tokenizer(str(tiny_checkpoint))
    settings = SamplingSettings(max_new_tokens=8, batch_size=6, chat_template=True, seed=0 * 1009 + 2)
    chunk = json.loads((out / "round_2" / "samples" / "chunk_00000.samples.json").read_text())
    round_settings = SamplingSettings(**{**vars(settings), "seed": settings.seed * 1_000_003 + 0})
    # round 2 sampled from round 1's trained policy, not from the initial one
    from_round_1 = sample_completions(load_model(str(out / "round_1" / "policy")), tokenizer, chunk["prompts"],
                                      round_settings, num_samples=3).texts
    from_initial = sample_completions(load_model(str(tiny_checkpoint)), tokenizer, chunk["prompts"], round_settings,
                                      num_samples=3).texts
    assert chunk["texts"] == from_round_1 and chunk["texts"] != from_initial
    for round_ in (1, 2):
        pairs = read_pairs(out / f"round_{round_}" / "pairs.jsonl")
        assert pairs and all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
        assert all(p["prompt"][0]["role"] == "user" for p in pairs)  # the tokenizer's chat template: chat records
        scores = json.loads((out / f"round_{round_}" / "samples" / "chunk_00000.scores.json").read_text())["rewards"]
        samples = json.loads((out / f"round_{round_}" / "samples" / "chunk_00000.samples.json").read_text())
        assert scores == [float(len(text)) for text in samples["texts"]]  # CompletionLength(unit="chars")
        chunks = sorted((out / f"round_{round_}" / "samples").glob("chunk_*.samples.json"))
        texts = {text.strip() for chunk in chunks for text in json.loads(chunk.read_text())["texts"]}
        assert all(p["chosen"][-1]["content"] in texts and p["rejected"][-1]["content"] in texts for p in pairs)
    # the policy trained and every round's checkpoint was dropped once its policy was saved
    initial, final = load_file(tiny_checkpoint / "model.safetensors"), load_file(out / "round_2" / "policy" /
                                                                               "model.safetensors")
    assert any(not torch.equal(initial[key], final[key]) for key in initial)
    assert not (out / "round_1" / "checkpoints").exists()
    # per-round metrics in TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "rounds")).Reload()
    assert [event.step for event in events.Scalars("heldout/reward")] == [0, 1, 2]
    assert [event.value for event in events.Scalars("heldout/kl")][1] == pytest.approx(history[1]["heldout/kl"])
    assert "pairs/count" in events.Tags()["scalars"]
    # a second run into the same directory must be asked to continue
    with pytest.raises(ValueError, match="--ckpt_path last"):
        run_iterate(["--config", str(config)])
    with pytest.raises(ValueError, match="differ in iterate"):
        run_iterate(["--config", str(config), "--ckpt_path", "last", "--iterate.samples_per_prompt", "4"])
    assert run_iterate(["--config", str(config), "--ckpt_path", "last"]) == history  # all done: read back


def test_reference_is_the_initial_model_or_the_round_start(iterate_config, tiny_checkpoint):
    config, out = iterate_config()
    parsed = parse_config(["--config", str(config)])
    fixed = IterativeRun(parsed, instantiate("iterate", parsed.iterate))
    module = fixed.module(2)
    assert module.source.name == str(out / "round_1" / "policy") and module.export_dir is None
    assert module.reference.source.name == str(tiny_checkpoint) and not module.reference.copy_policy
    first = fixed.module(1).reference  # round 1: a copy of the initial policy
    assert first.source.name == str(tiny_checkpoint) and first.copy_policy
    parsed = parse_config(["--config", str(config), "--iterate.update_reference", "true"])
    moving = IterativeRun(parsed, instantiate("iterate", parsed.iterate))
    second = moving.module(2).reference  # a frozen copy of round 1's policy
    assert second.source.name == str(out / "round_1" / "policy") and second.copy_policy


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["sr_dpo", "minor_dpo"])
def test_paper_losses_run_rounds(iterate_config, tiny_checkpoint, loss):
    config, out = iterate_config(name=loss, loss=loss, rounds=2)
    history = run_iterate(["--config", str(config)])
    assert len(history) == 3 and all(h["pairs/count"] > 0 for h in history[1:])
    initial = load_file(tiny_checkpoint / "model.safetensors")
    final = load_file(out / "round_2" / "policy" / "model.safetensors")
    assert any(not torch.equal(initial[key], final[key]) for key in initial)


def test_ranks_share_the_chunks_and_write_what_one_process_writes(tiny_checkpoint, tmp_path, monkeypatch):
    """Under DDP rank r of W samples chunks r, r + W, …; the files equal a single process's, whatever W."""
    from lightpref.evaluation import CompletionLength
    from lightpref.iterate.stages import chunks_of, sample_and_score

    tokenizer = load_tokenizer(str(tiny_checkpoint))
    model = load_model(str(tiny_checkpoint))
    chunks = chunks_of(["a b", "c d", "e f", "g h", "i j"], 2)  # 3 chunks
    settings = SamplingSettings(max_new_tokens=6, batch_size=4, seed=5)

    def run(directory, rank, world):  # the environment torchrun gives each process (one node)
        for name, value in {"TORCHELASTIC_RUN_ID": "test", "RANK": rank, "LOCAL_RANK": rank, "GROUP_RANK": 0,
                            "WORLD_SIZE": world, "LOCAL_WORLD_SIZE": world}.items():
            monkeypatch.setenv(name, str(value))
        return sample_and_score(lambda: model, tokenizer, chunks, CompletionLength(), settings, 2, directory, "r1")

    assert run(tmp_path / "one", 0, 1) == 3
    assert run(tmp_path / "two", 1, 2) == 1  # chunk 1 only
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["chunk_00001.samples.json",
                                                                      "chunk_00001.scores.json"]
    assert run(tmp_path / "two", 0, 2) == 2  # chunks 0 and 2
    for path in (tmp_path / "one").iterdir():
        assert path.read_text() == (tmp_path / "two" / path.name).read_text()
    assert run(tmp_path / "one", 0, 1) == 0  # all done: nothing sampled again


def test_several_devices_need_torchrun(iterate_config, monkeypatch):
    config, _ = iterate_config()
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="torchrun --nproc_per_node"):
        run_iterate(["--config", str(config), "--trainer.devices", "2"])
