"""f-DPO: DPO under f-divergence constraints other than the reverse KL (forward KL, Jensen–Shannon, α)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightpref.losses.base import (
    LogProbs,
    LossOutput,
    PreferenceLoss,
    check_beta,
    check_label_smoothing,
    log_ratios,
    smoothed_sigmoid_loss,
)

MAX_EXPONENT = 50.0  # e^50 ≈ 5e21: far beyond any useful logit, far below float32 overflow even summed over a batch


def saturating_exp_difference(a: Tensor, b: Tensor) -> Tensor:
    """``e^a − e^b``, exact while ``max(a, b) ≤ MAX_EXPONENT``; beyond, its magnitude saturates, its sign stays.

    Written as ``e^min(m, MAX_EXPONENT)·(expm1(a − m) − expm1(b − m))`` with ``m = max(a, b)`` held constant for
    autograd (the value does not depend on it), so it never overflows, is accurate for ``a ≈ b`` and keeps a finite
    gradient of the right sign everywhere.
    """
    top = torch.maximum(a, b).detach()
    return torch.exp(top.clamp(max=MAX_EXPONENT)) * (torch.expm1(a - top) - torch.expm1(b - top))


class FDivergenceDPO(PreferenceLoss):
    """Shared part of the f-DPO losses (Wang et al., 2023, https://arxiv.org/abs/2309.16240).

    Under an f-divergence constraint the implicit reward of y is ``β·f'(π(y|x)/π_ref(y|x))`` and the loss is::

        L = −(1−ε)·logσ(β·g) − ε·logσ(−β·g),   g = f'(u⁺) − f'(u⁻),   u = e^ρ

    The reverse KL (``f'(u) = log u + 1``) gives ``g = h``, i.e. ``dpo``. Subclasses define ``g``. Rewards are the
    usual ``β·ρ``, as in TRL.
    """

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        check_beta(beta)
        check_label_smoothing(label_smoothing)
        self.beta = beta
        self.label_smoothing = label_smoothing

    def divergence_margin(self, chosen_ratio: Tensor, rejected_ratio: Tensor) -> Tensor:
        """``g = f'(e^ρc) − f'(e^ρr)`` per pair, (B,)."""
        raise NotImplementedError

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        chosen_ratio, rejected_ratio = log_ratios(policy, reference)  # (B,), (B,)
        logits = self.beta * self.divergence_margin(chosen_ratio, rejected_ratio)
        return LossOutput(
            losses=smoothed_sigmoid_loss(logits, self.label_smoothing),
            chosen_rewards=(self.beta * chosen_ratio).detach(),
            rejected_rewards=(self.beta * rejected_ratio).detach(),
        )


class AlphaDivergenceDPO(FDivergenceDPO):
    """f-DPO with the α-divergence: ``f'(u) = (1 − u^−α)/α``, between reverse KL (α → 0) and forward KL (α = 1).

    Wang et al., 2023, https://arxiv.org/abs/2309.16240 (TRL's ``f_divergence_type: alpha_divergence``)::

        g = (e^(−α·ρr) − e^(−α·ρc)) / α,   L = −(1−ε)·logσ(β·g) − ε·logσ(−β·g)

    The exponentials are formed stably: exact while ``−α·ρ ≤ 50``, saturating (never overflowing) beyond.

    Args:
        beta: temperature β.
        alpha: α in ``(0, 1]``; α → 0 approaches ``dpo``, α = 1 is ``fdpo_forward_kl``.
        label_smoothing: ε in ``[0, 0.5]``, as in conservative DPO.
    """

    summary = "f-DPO, α-divergence: −logσ(β·(e^−αρr − e^−αρc)/α), α in (0, 1]"

    def __init__(self, beta: float = 0.1, alpha: float = 0.5, label_smoothing: float = 0.0) -> None:
        super().__init__(beta=beta, label_smoothing=label_smoothing)
        if not (isinstance(alpha, (int, float)) and 0 < alpha <= 1):
            raise ValueError(
                f"`alpha` must be in (0, 1], got {alpha!r}: α → 0 is the reverse KL (use `dpo`), "
                "α = 1 the forward KL (`fdpo_forward_kl`)"
            )
        self.alpha = alpha

    def divergence_margin(self, chosen_ratio: Tensor, rejected_ratio: Tensor) -> Tensor:
        return saturating_exp_difference(-self.alpha * rejected_ratio, -self.alpha * chosen_ratio) / self.alpha


class ForwardKLDPO(AlphaDivergenceDPO):
    """f-DPO with the forward KL: ``f(u) = −log u``, ``f'(u) = −1/u`` (the α-divergence at α = 1).

    Wang et al., 2023, https://arxiv.org/abs/2309.16240 (TRL: ``alpha_divergence`` with its default coefficient 1)::

        g = e^(−ρr) − e^(−ρc),   L = −(1−ε)·logσ(β·g) − ε·logσ(−β·g)

    Mass-covering: a chosen completion the policy makes less likely than the reference (ρc < 0) is penalised
    exponentially. Exponentials are exact while ``−ρ ≤ 50`` and saturate beyond.

    Args:
        beta: temperature β.
        label_smoothing: ε in ``[0, 0.5]``, as in conservative DPO.
    """

    summary = "f-DPO, forward KL: −logσ(β·(e^−ρr − e^−ρc))"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__(beta=beta, alpha=1.0, label_smoothing=label_smoothing)


class JensenShannonDPO(FDivergenceDPO):
    """f-DPO with the Jensen–Shannon divergence: ``f'(u) = log(2u/(1 + u)) = log 2 + logσ(ρ)``.

    Wang et al., 2023, https://arxiv.org/abs/2309.16240 (TRL's ``f_divergence_type: js_divergence``)::

        g = logσ(ρc) − logσ(ρr) = h − softplus(ρc) + softplus(ρr),   L = −(1−ε)·logσ(β·g) − ε·logσ(−β·g)

    Each log-ratio's contribution saturates once it is well above 0 (``logσ(ρ) → 0``), so pushing y⁺ ever further
    above the reference earns nothing. Stable for all ρ.

    Args:
        beta: temperature β.
        label_smoothing: ε in ``[0, 0.5]``, as in conservative DPO.
    """

    summary = "f-DPO, Jensen–Shannon: −logσ(β·(logσ(ρc) − logσ(ρr)))"

    def divergence_margin(self, chosen_ratio: Tensor, rejected_ratio: Tensor) -> Tensor:
        return F.logsigmoid(chosen_ratio) - F.logsigmoid(rejected_ratio)
