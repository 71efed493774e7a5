"""A start that fails leaves nothing that blocks the corrected command; a degenerate sampled pair is dropped and
counted, not fed to training; settings that do not change what is trained may change on resume."""

import json
import sys

import pytest

from lightpref.cli import main
from lightpref.iterate import BestVsWorst, stages
from lightpref.iterate.stages import chunk_paths, collect_pairs
from lightpref.iterate.start import check_out_dir


def one_message(capsys, argv, *fragments):
    code = main(argv)
    output = capsys.readouterr()
    text = output.out + output.err
    assert code == 1 and "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("lightpref: error: ")]
    assert len(errors) == 1, text[-3000:]
    for fragment in fragments:
        assert fragment in errors[0]


def test_a_failed_start_writes_nothing(iterate_config, tmp_path, capsys, monkeypatch):
    config, out = iterate_config()
    command = ["iterate", "--config", str(config)]
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = str(tmp_path / "no-such-reward-model")
    classifier = ["--iterate.reward", "lightpref.evaluation.SequenceClassifierReward"]
    one_message(capsys, [*command, *classifier, "--iterate.reward.model", missing],
                "`iterate.reward.init_args.model`", missing, "does not exist")
    one_message(capsys, [*command, "--ckpt_path", "last", *classifier, "--iterate.reward.model", str(empty)],
                "`iterate.reward.init_args.model`", "holds no model")
    one_message(capsys, [*command, "--model.pretrained", str(empty)], "`model.pretrained`", "holds no model")
    one_message(capsys, [*command, "--model.pretrained", str(tmp_path / "absent")], "`model.pretrained`",
                "does not exist")
    one_message(capsys, [*command, "--model.loss.init_args.beta", "0"], "`model.loss`",
                "`beta` must be a positive number")
    one_message(capsys, [*command, "--data.batch_size", "0"], "`batch_size` must be an integer >= 1")
    from huggingface_hub import constants

    with monkeypatch.context() as offline:
        offline.setattr(constants, "HF_HUB_OFFLINE", True)
        one_message(capsys, [*command, "--model.pretrained", "no-such-org/no-such-model"], "`model.pretrained`",
                    "'no-such-org/no-such-model' is neither a local directory nor", "HF_HUB_OFFLINE is set")
        one_message(capsys, [*command, *classifier, "--iterate.reward.model", "no-such-org/no-such-reward"],
                    "`iterate.reward.init_args.model`", "neither a local directory")
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)  # the `sentiment` extra not installed
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    one_message(capsys, [*command, "--iterate.reward", "lightpref.evaluation.VaderSentiment"],
                "`iterate.reward`", "pip install 'lightpref[sentiment]'")
    assert not out.exists()


def settings(batch_size=2, skip_invalid=False, devices=1):
    return {"iterate": {"rounds": 2}, "data": {"batch_size": batch_size, "skip_invalid": skip_invalid},
            "trainer": {"devices": devices}, "ckpt_path": None}


def test_a_config_next_to_no_results_is_replaced_and_free_settings_may_change(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "round_0").mkdir()  # a run that failed before it wrote any result
    check_out_dir(out, settings(batch_size=2), resume=False)
    check_out_dir(out, settings(batch_size=3), resume=False)  # the corrected command, without --ckpt_path last
    check_out_dir(out, settings(batch_size=4), resume=True)  # and with it
    assert json.loads((out / "config.json").read_text())["data"]["batch_size"] == 4
    (out / "round_0" / "eval.json").write_text("{}")  # now the run has a result
    with pytest.raises(ValueError, match="--ckpt_path last"):
        check_out_dir(out, settings(batch_size=4), resume=False)
    check_out_dir(out, settings(batch_size=4, skip_invalid=True, devices=2), resume=True)
    with pytest.raises(ValueError, match="differ in data.batch_size;"):
        check_out_dir(out, settings(batch_size=5), resume=True)


def write_chunk(directory, chunk, prompts, texts, rewards):
    samples, scores = chunk_paths(directory, chunk)
    samples.write_text(json.dumps({"prompts": prompts, "texts": texts, "completion_tokens": [1] * len(texts)}))
    scores.write_text(json.dumps({"rewards": rewards}))


@pytest.mark.parametrize("chat", [False, True])
def test_degenerate_pairs_are_dropped_and_counted(tmp_path, chat):
    write_chunk(tmp_path, 0, ["a", "b", "c"], [" good", "", " ok",  # the worst is empty
                                               " same", "same ", " x",  # identical once stripped
                                               " fine", " finest", " f"], [5.0, 0.0, 1.0, 5.0, 1.0, 3.0,
                                                                          4.0, 6.0, 1.0])
    records, stats = collect_pairs(tmp_path, 1, 3, BestVsWorst(), chat)
    assert len(records) == 1 and stats["pairs/count"] == 1.0 and stats["pairs/dropped_degenerate"] == 2.0
    chosen = records[0]["chosen"] if not chat else records[0]["chosen"][0]["content"]
    assert chosen.strip() == "finest"


@pytest.mark.slow
def test_after_a_failed_start_a_round_with_empty_samples_trains(iterate_config, tmp_path, capsys, monkeypatch):
    """The corrected command runs where a failed one stopped; a round whose samples include empty completions drops
    those pairs, counts them, and trains; ``data.skip_invalid`` may then change on resume."""
    config, out = iterate_config(rounds=1, pairing={"class_path": "lightpref.iterate.AllPairs"})
    command = ["iterate", "--config", str(config), "--trainer.max_steps", "2"]
    one_message(capsys, [*command, "--iterate.reward", "lightpref.evaluation.SequenceClassifierReward",
                         "--iterate.reward.model", str(tmp_path / "absent")], "does not exist")
    sample = stages.sample_completions

    def with_empty_completions(*args, **kwargs):
        samples = sample(*args, **kwargs)
        samples.texts[::3] = [""] * len(samples.texts[::3])  # the first of each prompt's 3 samples
        return samples

    monkeypatch.setattr(stages, "sample_completions", with_empty_completions)
    assert main([*command, "--ckpt_path", "last"]) == 0
    stats = json.loads((out / "round_1" / "pair_stats.json").read_text())
    assert stats["pairs/dropped_degenerate"] >= 6  # every prompt's empty sample against the 2 others (ties aside)
    pairs = [json.loads(line) for line in (out / "round_1" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(pair["chosen"][0]["content"] and pair["rejected"][0]["content"] for pair in pairs)
    assert (out / "round_1" / "policy").is_dir()
    assert main([*command, "--ckpt_path", "last", "--data.skip_invalid", "true", "--data.num_workers", "1"]) == 0
    one_message(capsys, [*command, "--ckpt_path", "last", "--data.batch_size", "3"], "differ in data.batch_size")
