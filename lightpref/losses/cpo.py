"""CPO: a reference-free DPO loss on summed log-probs plus the chosen completion's NLL."""

from __future__ import annotations

from lightpref.losses.base import (
    LogProbs,
    LossOutput,
    PreferenceLoss,
    check_beta,
    check_label_smoothing,
    check_non_negative,
    smoothed_sigmoid_loss,
)


class CPO(PreferenceLoss):
    """Contrastive Preference Optimisation: DPO with the reference dropped, plus a likelihood term on y⁺.

    Xu et al., 2024, https://arxiv.org/abs/2401.08417. With summed log-probs ``pc``, ``pr`` and ``n⁺`` the chosen
    completion's token count::

        L = −(1−ε)·logσ(β·(pc − pr)) − ε·logσ(−β·(pc − pr)) + α·(−pc/n⁺)

    The preference term uses summed log-probs, as in the paper and TRL's CPOTrainer (``loss_type: sigmoid``). The
    NLL is each pair's token mean; TRL pools all chosen tokens of the batch into one cross-entropy, which weighs
    long completions more. Rewards are ``β·pc`` and ``β·pr``. Metric: ``cpo/nll_loss``.

    Args:
        beta: temperature β.
        alpha: α ≥ 0, the weight of the NLL term (the paper's and TRL's 1.0); 0 leaves reference-free DPO.
        label_smoothing: ε in ``[0, 0.5]``, as in conservative DPO.
    """

    summary = "CPO −logσ(β·(pc − pr)) + α·NLL(y⁺): reference-free DPO plus chosen NLL"
    requires_reference = False

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_beta(beta)
        check_label_smoothing(label_smoothing)
        check_non_negative("alpha", alpha, "it weights the NLL term; CPO uses 1.0")
        self.beta = beta
        self.alpha = alpha
        self.label_smoothing = label_smoothing

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_rewards, rejected_rewards = self.beta * policy.chosen, self.beta * policy.rejected  # (B,) sums
        nll = -policy.chosen / policy.chosen_lengths.clamp(min=1)  # (B,) token mean per pair
        return LossOutput(
            losses=smoothed_sigmoid_loss(chosen_rewards - rejected_rewards, self.label_smoothing) + self.alpha * nll,
            chosen_rewards=chosen_rewards.detach(),
            rejected_rewards=rejected_rewards.detach(),
            metrics={"cpo/nll_loss": nll.detach()},
        )
