"""Length-normalised DPO: the DPO loss on token-mean log-probs."""

from __future__ import annotations

from lightpref.losses.dpo import DPO


class LengthNormalizedDPO(DPO):
    """DPO on token-mean log-probs: ``dpo`` with ``length_normalized`` on by default.

    Rafailov et al., 2023, https://arxiv.org/abs/2305.18290, with each of ``pc, pr, rc, rr`` divided by its
    completion's token count before forming ``h = ρc − ρr``::

        L = −(1−ε)·logσ(β·h̄) − ε·logσ(−β·h̄)

    Averaging removes the sum's bias towards longer completions; the margins are then per token, so a useful β is
    larger than for summed log-probs.

    Args:
        beta: temperature β of the implicit reward ``β·ρ̄``.
        label_smoothing: ε in ``[0, 0.5]`` (conservative DPO).
        length_normalized: token means (default); false gives plain ``dpo``.
    """

    summary = "DPO on token-mean log-probs (dpo with length_normalized: true)"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0, length_normalized: bool = True) -> None:
        super().__init__(beta=beta, label_smoothing=label_smoothing, length_normalized=length_normalized)
