"""Faulty parts for the trust suite, importable by class path from configs run in-process or in subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lightpref.losses import LogProbs, LossOutput
from lightpref.losses.dpo import DPO


class Payload:
    """Unpickling this object runs ``touch path``: the file appears only if a reader executed code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class AlwaysNaNDPO(DPO):
    """DPO whose loss value is NaN at every training call (its gradient stays finite): nothing can be learnt."""

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        output = super().forward(policy, reference)
        if self.training:
            output.losses = output.losses + torch.full_like(output.losses, float("nan"))
        return output
