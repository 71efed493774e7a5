"""Sr-DPO and Sr-IPO: DPO/IPO with a per-pair margin the policy estimates itself under a quality instruction."""

from __future__ import annotations

from torch import Tensor, nn

from lightpref.losses.base import LogProbs, LossOutput, PreferenceLoss, check_beta, check_non_negative, log_ratios
from lightpref.views import InstructionPrefix

VIEW = "self_refine"

PAPER_INSTRUCTION = (
    "Please generate a response with a usefulness rating of 100 out of 100 for the following query. Note that the "
    "response should be harmless. The term 100 indicates the level of usefulness, where 100 is the maximum and 1 is "
    "the minimum. Query:"
)


class SelfRefineLoss(PreferenceLoss):
    """Shared part of Sr-DPO and Sr-IPO (Yu et al., 2024, https://arxiv.org/abs/2405.21040).

    Declares the ``self_refine`` view (the instruction p prefixed to the first user turn, see
    :class:`~lightpref.views.InstructionPrefix`), from whose records it computes the refinement (Eq. 12)::

        Δ = ⊥ β·[(log π(y⁺|p⊕x) − log π_ref(y⁺|p⊕x)) − (log π(y⁻|p⊕x) − log π_ref(y⁻|p⊕x))]

    Subclasses turn the margin ``h = ρc − ρr`` and Δ into per-pair losses. Metric: ``self_refine/delta`` (Δ).
    """

    def __init__(self, beta: float = 0.1, refine_weight: float = 0.5, instruction: str = PAPER_INSTRUCTION) -> None:
        super().__init__()
        check_beta(beta)
        check_non_negative("refine_weight", refine_weight,
                           "it is λ; the paper tries 0.1, 0.3, 0.5 and 1, and 0 turns the loss back into DPO/IPO")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(
                f"`instruction` must be a non-empty string, got {instruction!r}; the default is the paper's p"
            )
        self.beta = beta
        self.refine_weight = refine_weight
        self.instruction = instruction
        self.views = {VIEW: InstructionPrefix(instruction)}

    def refinement(self, policy: LogProbs, reference: LogProbs) -> Tensor:
        """Δ per pair, (B,), detached, from both records' ``self_refine`` views."""
        for role, record in (("policy", policy), ("reference", reference)):
            if VIEW not in record.views:
                raise ValueError(
                    f"{type(self).__name__} needs the {VIEW!r} prompt view, but the {role} record has no "
                    f"`views[{VIEW!r}]`; the module and DataModule must score the completions under the "
                    "instruction-prefixed prompt for every loss that declares `views`"
                )
        chosen_ratio, rejected_ratio = log_ratios(policy.views[VIEW], reference.views[VIEW])  # (B,), (B,)
        return (self.beta * (chosen_ratio - rejected_ratio)).detach()

    def pair_losses(self, margin: Tensor, delta: Tensor) -> Tensor:
        """Per-pair losses from ``h`` and ``Δ``, each (B,)."""
        raise NotImplementedError

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        delta = self.refinement(policy, reference)  # (B,)
        return LossOutput(
            losses=self.pair_losses(chosen_ratio - rejected_ratio, delta),
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
            metrics={"self_refine/delta": delta},
        )


class SrDPO(SelfRefineLoss):
    """Sr-DPO: DPO whose logit is shifted by the policy's own estimate Δ of how much better y⁺ is than y⁻.

    Yu, Wang, Jiao, Zhang, Kwok, 2024, https://arxiv.org/abs/2405.21040 (Eq. 13). With ``h = ρc − ρr`` and Δ the
    detached refinement of :class:`SelfRefineLoss` (0 while π = π_ref, so training starts as DPO)::

        L = −logσ(β·h − λ·Δ)

    Args:
        beta: temperature β, in the loss and in Δ.
        refine_weight: λ ≥ 0, the weight of Δ (the paper tries 0.1, 0.3, 0.5, 1; 0 is plain DPO).
        instruction: the instruction p put before the first user turn of each prompt; the paper's by default.
    """

    summary = "Sr-DPO −logσ(β·h − λ·Δ), Δ the policy's own margin under a quality instruction"

    def pair_losses(self, margin: Tensor, delta: Tensor) -> Tensor:
        return -nn.functional.logsigmoid(self.beta * margin - self.refine_weight * delta)


class SrIPO(SelfRefineLoss):
    """Sr-IPO: IPO whose target margin is shifted by the policy's own estimate Δ of how much better y⁺ is than y⁻.

    Yu, Wang, Jiao, Zhang, Kwok, 2024, https://arxiv.org/abs/2405.21040 (Eq. 15). With ``h = ρc − ρr`` on summed
    log-probs and Δ the detached refinement of :class:`SelfRefineLoss` (0 while π = π_ref)::

        L = (h − λ·Δ − 1/(2β))²

    Args:
        beta: regularisation β (τ in the IPO paper), in the target ``1/(2β)`` and in Δ.
        refine_weight: λ ≥ 0, the weight of Δ (the paper tries 0.1, 0.3, 0.5, 1; 0 is plain IPO).
        instruction: the instruction p put before the first user turn of each prompt; the paper's by default.
    """

    summary = "Sr-IPO (h − λ·Δ − 1/(2β))², Δ the policy's own margin under a quality instruction"

    def pair_losses(self, margin: Tensor, delta: Tensor) -> Tensor:
        return (margin - self.refine_weight * delta - 1 / (2 * self.beta)) ** 2
