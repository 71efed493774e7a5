"""RPO: DPO plus a weighted NLL term on the chosen completion."""

from __future__ import annotations

from lightpref.losses.base import check_non_negative
from lightpref.losses.dpo import DPO
from lightpref.losses.mixture import Mixture
from lightpref.losses.sft import SFT


class RPO(Mixture):
    """DPO + α·NLL of the chosen completion: a ready-made ``mixture`` of ``dpo`` and ``sft``.

    Pang et al., 2024 (Iterative Reasoning Preference Optimization), https://arxiv.org/abs/2404.19733; the same NLL
    term as a regulariser against over-optimisation: Liu et al., 2024 (Regularized Preference Optimization),
    https://arxiv.org/abs/2405.16436. With ``n⁺`` the chosen completion's token count::

        L = −(1−ε)·logσ(β·h) − ε·logσ(−β·h) + α·(−log π(y⁺|x)/n⁺)

    The NLL is each pair's token mean (Pang et al. also normalise it by length per example); TRL's ``rpo_alpha``
    adds one cross-entropy pooled over all chosen tokens of the batch, which weighs long completions more.
    Metrics: ``dpo/loss`` and ``sft/loss``.

    Args:
        beta: temperature β of the DPO term.
        alpha: α ≥ 0, the weight of the NLL term (1.0 in Pang et al.).
        label_smoothing: ε in ``[0, 0.5]`` of the DPO term.
    """

    summary = "RPO: DPO + α·NLL(y⁺), the NLL a token mean per pair"

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, label_smoothing: float = 0.0) -> None:
        check_non_negative("alpha", alpha, "it weights rpo's NLL term; RPO uses 1.0")
        super().__init__(
            losses=[DPO(beta=beta, label_smoothing=label_smoothing), SFT()], weights=[1.0, alpha], names=["dpo", "sft"]
        )
        self.beta = beta
        self.alpha = alpha
        self.label_smoothing = label_smoothing
