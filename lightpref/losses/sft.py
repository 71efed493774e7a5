"""SFT: the negative log-likelihood of the chosen completion, as a loss or a term of a mixture."""

from __future__ import annotations

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss


class SFT(PreferenceLoss):
    """Negative log-likelihood of the chosen completion, averaged over its tokens, per pair.

    With ``n⁺`` the chosen completion's token count::

        L = −log π(y⁺|x) / n⁺

    The rejected completion is ignored. Each pair's NLL is its own token mean, so every pair weighs the same in the
    batch mean; trainers that pool all chosen tokens of a batch into one cross-entropy (TRL's ``sft`` loss type and
    ``rpo_alpha``) weigh long completions more. Rewards are the detached token-mean log-probs of y⁺ and y⁻. Combine
    it with a preference loss through ``mixture`` (``rpo`` is DPO + α·SFT).
    """

    summary = "SFT −log π(y⁺|x)/n⁺: chosen NLL, token mean per pair (no reference)"
    requires_reference = False
    length_normalized = True

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        return LossOutput(
            losses=-policy.chosen,  # (B,) token means, as requested by length_normalized
            chosen_rewards=policy.chosen.detach(),
            rejected_rewards=policy.rejected.detach(),
        )
