"""bench/frontier.py's task choice: the sentiment task's records keep the settings of the command from before the
choice, the arithmetic tasks swap prompts, reward and Sr instruction, and the pair-term recorder keeps each training
pair's β·h and Δ (by hand, from the golden Sr-DPO records of tests/losses/test_self_refine.py)."""

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lightpref.evaluation.arithmetic import ArithmeticCorrectness
from lightpref.losses import LogProbs, build
from lightpref.losses.self_refine import PAPER_INSTRUCTION

BENCH = Path(__file__).resolve().parents[2] / "bench"
# The settings a sentiment record kept before the task became a choice.
SENTIMENT_SETTINGS = {"methods", "betas", "seeds", "train_prompts", "samples_per_prompt", "eval_prompts", "steps",
                      "eval_every", "batch_size", "lr", "max_new_tokens", "max_length", "val_pairs", "lora_rank",
                      "precompute_reference"}


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield SimpleNamespace(frontier=importlib.import_module("frontier"),
                              tasks=importlib.import_module("frontier_tasks"), claims=importlib.import_module("claims"))
    finally:
        sys.path.remove(str(BENCH))


def test_sentiment_records_keep_the_old_settings(bench):
    settings = bench.frontier.settings_of(bench.frontier.parse_args(["--out", "x", "--threads", "1"]))
    assert set(settings) == SENTIMENT_SETTINGS
    arithmetic = bench.frontier.settings_of(bench.frontier.parse_args(["--task", "arithmetic-sum", "--numbers", "1,5"]))
    assert set(arithmetic) == SENTIMENT_SETTINGS | {"task", "numbers"}
    assert (arithmetic["task"], arithmetic["numbers"]) == ("arithmetic-sum", "1,5")
    recorded = bench.frontier.settings_of(bench.frontier.parse_args(["--record-pairs"]))
    assert set(recorded) == SENTIMENT_SETTINGS | {"record_pairs"}


def test_arithmetic_task_swaps_prompts_reward_and_instruction(bench):
    task = bench.frontier.task_of(bench.frontier.parse_args(["--task", "arithmetic-larger", "--numbers", "1,5"]))
    train, held_out = task.prompts(16, "train"), task.prompts(4, "eval")
    assert all(prompt.startswith("Which number is larger,") for prompt in train + held_out)
    assert len(set(train)) == 16 and not set(train) & set(held_out)
    assert isinstance(task.reward(), ArithmeticCorrectness) and task.record_pairs
    assert "correctness rating of 100 out of 100" in task.instruction
    loss = build("sr_dpo", beta=0.1, instruction=task.instruction)
    assert loss.views["self_refine"].apply("What is 1 + 2?") == task.instruction + " What is 1 + 2?"
    sentiment = bench.tasks.TASKS["sentiment"](0, 14)
    assert sentiment.instruction is None and not sentiment.record_pairs  # Sr keeps the paper's p: PAPER_INSTRUCTION
    assert sentiment.prompts(2, "eval")[0].startswith("Write") and PAPER_INSTRUCTION.startswith("Please generate")


class Module(nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.loss = loss


def sr_records():
    """ρc = [1, 1, 0], ρr = [−1, 1, 0] (h = [2, 0, 0]); under p ⊕ x, ρc′ − ρr′ = [3, 1, 0]."""
    def record(chosen, rejected, view_chosen, view_rejected):
        view = LogProbs.from_sums(torch.tensor(view_chosen), torch.tensor(view_rejected))
        return LogProbs.from_sums(torch.tensor(chosen), torch.tensor(rejected), views={"self_refine": view})

    return (record([-5.0, -4.0, -6.0], [-9.0, -7.0, -8.0], [-4.0, -4.0, -6.0], [-9.0, -8.0, -8.0]),
            record([-6.0, -5.0, -6.0], [-8.0, -8.0, -8.0], [-6.0, -5.0, -6.0], [-8.0, -8.0, -8.0]))


def test_pair_terms_by_hand(bench):
    """β = 0.5: β·h = [1, 0, 0] and Δ = β·[3, 1, 0] = [1.5, 0.5, 0]; validation forwards are not kept."""
    module, trainer = Module(build("sr_dpo", beta=0.5)), SimpleNamespace(training=True, global_step=1)
    recorder = bench.tasks.PairTermRecorder()
    recorder.on_train_start(trainer, module)
    module.loss(*sr_records())
    recorder.on_train_batch_end(trainer)
    trainer.training = False
    module.loss(*sr_records())  # a validation batch
    trainer.training, trainer.global_step = True, 2
    module.loss(*sr_records())
    recorder.on_train_batch_end(trainer)
    recorder.on_train_end(trainer, module)
    module.loss(*sr_records())  # after training: the hook is gone
    assert recorder.steps == [{"step": 1, "margin": [1.0, 0.0, 0.0], "delta": [1.5, 0.5, 0.0]},
                              {"step": 2, "margin": [1.0, 0.0, 0.0], "delta": [1.5, 0.5, 0.0]}]
    dpo, plain = Module(build("dpo", beta=0.5)), bench.tasks.PairTermRecorder()
    plain.on_train_start(SimpleNamespace(training=True, global_step=1), dpo)
    dpo.loss(*sr_records())
    plain.on_train_batch_end(SimpleNamespace(training=True, global_step=1))
    assert plain.steps == [{"step": 1, "margin": [1.0, 0.0, 0.0]}]  # DPO has no Δ


def test_claims_report_the_distribution_of_delta(bench):
    """Δ = [0, 0.005, 0.02, −0.04] against β·h = [0, 1, 2, 3] over two seeds: two of the four are above 0.01
    in absolute value; quantiles 0, 0.1, 0.5, 0.9, 1 = −0.04, −0.028, 0.0025, 0.0155, 0.02."""
    def run(method, seed, pairs):
        return {"method": method, "beta": 0.1, "seed": seed, "val": [], "evals": [], "train": [], "pairs": pairs}

    records = [run("sr_dpo", 0, [{"step": 1, "margin": [0.0, 1.0], "delta": [0.0, 0.005]}]),
               run("sr_dpo", 1, [{"step": 1, "margin": [2.0, 3.0], "delta": [0.02, -0.04]}]),
               run("dpo", 0, [{"step": 1, "margin": [5.0, 6.0]}])]
    table = bench.claims.delta_distribution(bench.claims.runs_by(records))
    row = table.splitlines()[2]
    assert row.startswith("| sr_dpo | 0.1 | 2 | 4 | 0.50 | -0.0400, -0.0280, +0.0025, +0.0155, +0.0200 |")
    expected = bench.claims.correlation([0.0, 0.005, 0.02, -0.04], [0.0, 1.0, 2.0, 3.0])
    assert row.endswith(f"| {expected:+.2f} |") and expected < 0
    assert len(table.splitlines()) == 3  # DPO has no Δ row
    assert "The refinement term Δ" in bench.claims.report(records)
