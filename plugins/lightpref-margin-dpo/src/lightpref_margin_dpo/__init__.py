"""An example third-party lightpref loss: DPO that asks for a fixed log-ratio margin."""

from __future__ import annotations

from torch.nn import functional

from lightpref.losses import LogProbs, LossOutput, PreferenceLoss


class MarginDPO(PreferenceLoss):
    """DPO with a target margin δ: the chosen reward must beat the rejected one by δ before the loss relaxes.

    With ``h = ρc − ρr`` (policy-to-reference log-ratios)::

        L = −logσ(β·h − δ)

    δ = 0 is plain DPO. A fixed offset like this is the simplest member of the offset-DPO family
    (Amini et al., 2024, https://arxiv.org/abs/2402.10571, which makes δ depend on the pair).

    Args:
        beta: temperature β of the implicit reward.
        margin: δ ≥ 0, the reward margin asked for.
    """

    summary = "DPO with a fixed reward margin: −logσ(β·h − δ) (example plugin)"

    def __init__(self, beta: float = 0.1, margin: float = 0.5) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"`beta` must be positive, got {beta}")
        if margin < 0:
            raise ValueError(f"`margin` must be ≥ 0, got {margin}")
        self.beta = beta
        self.margin = margin

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio = policy.chosen - reference.chosen  # (B,)
        rejected_ratio = policy.rejected - reference.rejected  # (B,)
        logits = self.beta * (chosen_ratio - rejected_ratio) - self.margin
        return LossOutput(
            losses=-functional.logsigmoid(logits),
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
            metrics={"margin_dpo/logits": logits.detach()},
        )
