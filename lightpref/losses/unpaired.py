"""What the unpaired losses (``kto``, ``apo_zero_unpaired``) share: the KL reference point and the label balance.

>>> import torch
>>> kl_reference_point(torch.tensor([-2.0, -5.0]), torch.tensor([-3.0, -3.0]))  # log-ratios (1, −2): mean −0.5 → 0
tensor(0.)
>>> balance_warning(nd=100, nu=100, desirable_weight=1.0, undesirable_weight=1.0) is None
True
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

PAPER_RATIO = (1.0, 4.0 / 3.0)  # KTO eq. 8: λ_D·n_D / (λ_U·n_U) within [1, 4/3]


def mean_across_processes(value: Tensor) -> Tensor:
    """``value`` averaged over every process of the default process group (itself with one process, or none)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    total = value.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / dist.get_world_size()


def kl_reference_point(policy_mismatched: Tensor, reference_mismatched: Tensor) -> Tensor:
    """KTO's z₀ = max(0, mean_b(log π(y'_b|x_b) − log π_ref(y'_b|x_b))) over the batch's mismatched pairs, without
    gradient, averaged across processes before the clamp (as TRL does). A scalar."""
    with torch.no_grad():
        local = (policy_mismatched - reference_mismatched).mean().detach()
        return mean_across_processes(local).clamp(min=0)


def balance_warning(nd: int, nu: int, desirable_weight: float, undesirable_weight: float) -> str | None:
    """A warning when λ_D·n_D / (λ_U·n_U) is outside [1, 4/3] (KTO eq. 8) with both kinds present, naming the ranges
    of each weight that would bring it back (change one of them, not both); ``None`` otherwise.

    >>> print(balance_warning(nd=300, nu=100, desirable_weight=1.0, undesirable_weight=1.0))  # doctest: +ELLIPSIS
    lightpref data: 300 desirable and 100 undesirable examples give λ_D·n_D / (λ_U·n_U) = 3.00, outside ...
    """
    if nd == 0 or nu == 0 or undesirable_weight == 0:
        return None
    ratio = desirable_weight * nd / (undesirable_weight * nu)
    low, high = PAPER_RATIO
    if low <= ratio <= high:
        return None
    desirable = (low * undesirable_weight * nu / nd, high * undesirable_weight * nu / nd)
    undesirable = (desirable_weight * nd / (high * nu), desirable_weight * nd / (low * nu))
    return (f"lightpref data: {nd} desirable and {nu} undesirable examples give λ_D·n_D / (λ_U·n_U) = {ratio:.2f}, "
            f"outside [1, 4/3], the range KTO's paper recommends (its eq. 8); set `desirable_weight` within "
            f"[{desirable[0]:.3g}, {desirable[1]:.3g}] or `undesirable_weight` within "
            f"[{undesirable[0]:.3g}, {undesirable[1]:.3g}] (one of them, not both)")
