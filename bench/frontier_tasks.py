"""The tasks of ``bench/frontier.py`` and the per-pair record of the terms a pairwise loss compares.

A :class:`Task` is what a frontier run takes from its task: the prompts (train and held-out eval), the ground-truth
reward, the quality instruction of Sr-DPO / Sr-IPO (``None``: the paper's) and whether its runs keep each pair's
terms. ``--task`` picks one from
:data:`TASKS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lightpref.evaluation import RewardFunction, VaderSentiment, review_prompts
from lightpref.evaluation.arithmetic import ArithmeticCorrectness, arithmetic_prompts
from lightpref.evaluation.rewards import Prompt
from lightpref.losses.base import LossOutput

# The paper's instruction (lightpref.losses.self_refine.PAPER_INSTRUCTION) with correctness in place of usefulness.
CORRECTNESS_INSTRUCTION = (
    "Please generate a response with a correctness rating of 100 out of 100 for the following question. The term 100 "
    "indicates the level of correctness, where 100 is the maximum and 1 is the minimum. Query:"
)


@dataclass(frozen=True)
class Task:
    """Prompts, reward and Sr instruction of one frontier task."""

    prompts: Callable[[int, str], list[Prompt]]  # (count, "train" | "eval") -> prompts
    reward: Callable[[], RewardFunction]
    instruction: str | None = None
    record_pairs: bool = False  # keep each training pair's β·h and Δ in the records (``--record-pairs``)


def sentiment(low: int, high: int) -> Task:
    """Review prompts scored by VADER; the Sr methods keep the paper's instruction (the number range is unused)."""
    return Task(lambda count, split: review_prompts(count, split=split), VaderSentiment)


def arithmetic(kind: str) -> Callable[[int, int], Task]:
    def make(low: int, high: int) -> Task:
        def prompts(count: int, split: str) -> list[Prompt]:
            return arithmetic_prompts(count, kind=kind, split=split, low=low, high=high)  # type: ignore[arg-type]

        return Task(prompts, ArithmeticCorrectness, CORRECTNESS_INSTRUCTION, record_pairs=True)

    return make


TASKS: dict[str, Callable[[int, int], Task]] = {
    "sentiment": sentiment, "arithmetic-sum": arithmetic("sum"), "arithmetic-larger": arithmetic("larger"),
}


class PairTermRecorder(Callback):
    """Keeps, for every training step, each pair's β·h (``margin``: the chosen minus the rejected implicit reward)
    and, when the loss reports it, Sr-DPO / Sr-IPO's refinement Δ (``delta``), read from the loss's output."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self._pending: list[LossOutput] = []
        self._handle: Any = None
        self._trainer: Any = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._trainer = trainer
        self._handle = pl_module.loss.register_forward_hook(self._keep)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()

    def _keep(self, loss: Any, inputs: Any, output: LossOutput) -> None:
        if self._trainer.training:  # not the validation batches in between
            self._pending.append(output)

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        entry: dict[str, Any] = {"step": trainer.global_step, "margin": [], "delta": []}
        for output in self._pending:
            entry["margin"] += _rounded(output.chosen_rewards - output.rejected_rewards)
            if "self_refine/delta" in output.metrics:
                entry["delta"] += _rounded(output.metrics["self_refine/delta"])
        self._pending = []
        self.steps.append({key: value for key, value in entry.items() if value != [] or key == "margin"})


def _rounded(values: Any) -> list[float]:
    return [round(float(value), 6) for value in values.detach().reshape(-1).tolist()]
