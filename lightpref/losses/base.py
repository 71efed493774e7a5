"""The contract between a preference loss and the module that trains with it.

A loss never sees a model, a batch dict or the trainer. The module runs the models and hands the loss one
:class:`LogProbs` record per model; the loss returns a :class:`LossOutput`. What a loss needs beyond per-pair sums
(a reference model, token means, per-token values, extra prompt views) it declares as attributes, and the module
computes exactly that.

Build and call a loss on plain tensors, with no model at all::

    >>> import torch
    >>> from lightpref.losses import LogProbs, build
    >>> dpo = build("dpo", beta=0.1)
    >>> policy = LogProbs.from_sums(chosen=torch.tensor([-5.0]), rejected=torch.tensor([-9.0]))
    >>> reference = LogProbs.from_sums(chosen=torch.tensor([-6.0]), rejected=torch.tensor([-8.0]))
    >>> round(dpo(policy, reference).losses.item(), 4)  # -logsigmoid(0.1 * ((-5 + 6) - (-9 + 8)))
    0.5981
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from lightpref.batch import PAIRS, UNPAIRED

if TYPE_CHECKING:
    from lightpref.views import PromptView


@dataclass(frozen=True)
class LogProbs:
    """Log-probabilities one model assigns to the chosen and rejected completions of a batch of B pairs.

    ``chosen``/``rejected`` are summed over completion tokens, or averaged when the loss sets
    ``length_normalized``. The per-token fields are filled only for losses that set ``needs_token_logps`` (and
    ``*_log_collision`` only with ``needs_collision_logps``); the views only for losses that declare ``views``.
    """

    chosen: Tensor  # (B,)
    rejected: Tensor  # (B,)
    chosen_lengths: Tensor  # (B,) completion token counts
    rejected_lengths: Tensor  # (B,)
    chosen_tokens: Tensor | None = None  # (B, T) per-token log-probs, 0 outside the completion
    rejected_tokens: Tensor | None = None  # (B, T)
    chosen_mask: Tensor | None = None  # (B, T) bool, True on completion tokens
    rejected_mask: Tensor | None = None  # (B, T)
    chosen_log_collision: Tensor | None = None  # (B, T) log Σ_v π(v|·)² per token, 0 outside the completion
    rejected_log_collision: Tensor | None = None  # (B, T)
    views: Mapping[str, LogProbs] = field(default_factory=dict)  # the same completions under other prompts

    @classmethod
    def from_sums(
        cls,
        chosen: Tensor,
        rejected: Tensor,
        chosen_lengths: Tensor | None = None,
        rejected_lengths: Tensor | None = None,
        **fields: object,
    ) -> LogProbs:
        """A record from per-pair values alone, for tests and for losses that need nothing else.

        Missing lengths default to 1 token per completion.
        """
        ones = torch.ones_like(chosen, dtype=torch.long)
        return cls(
            chosen=chosen,
            rejected=rejected,
            chosen_lengths=ones if chosen_lengths is None else chosen_lengths,
            rejected_lengths=ones if rejected_lengths is None else rejected_lengths,
            **fields,
        )

    @classmethod
    def from_tokens(
        cls,
        chosen_tokens: Tensor,
        rejected_tokens: Tensor,
        chosen_mask: Tensor,
        rejected_mask: Tensor,
        length_normalized: bool = False,
        **fields: object,
    ) -> LogProbs:
        """A record from per-token log-probs and completion masks, reducing them as a loss asked.

        >>> tokens = torch.tensor([[-1.0, -2.0, 0.0]])
        >>> mask = torch.tensor([[True, True, False]])
        >>> LogProbs.from_tokens(tokens, tokens, mask, mask).chosen
        tensor([-3.])
        >>> LogProbs.from_tokens(tokens, tokens, mask, mask, length_normalized=True).chosen
        tensor([-1.5000])
        """
        chosen_tokens = chosen_tokens * chosen_mask
        rejected_tokens = rejected_tokens * rejected_mask
        chosen_lengths = chosen_mask.sum(-1)
        rejected_lengths = rejected_mask.sum(-1)
        chosen, rejected = chosen_tokens.sum(-1), rejected_tokens.sum(-1)
        if length_normalized:
            chosen = chosen / chosen_lengths.clamp(min=1)
            rejected = rejected / rejected_lengths.clamp(min=1)
        return cls(
            chosen=chosen,
            rejected=rejected,
            chosen_lengths=chosen_lengths,
            rejected_lengths=rejected_lengths,
            chosen_tokens=chosen_tokens,
            rejected_tokens=rejected_tokens,
            chosen_mask=chosen_mask,
            rejected_mask=rejected_mask,
            **fields,
        )

    def token_mean(self) -> LogProbs:
        """The same record, views included, with ``chosen``/``rejected`` divided by their token counts."""
        return replace(
            self,
            chosen=self.chosen / self.chosen_lengths.clamp(min=1),
            rejected=self.rejected / self.rejected_lengths.clamp(min=1),
            views={name: view.token_mean() for name, view in self.views.items()},
        )


@dataclass
class LossOutput:
    """What a loss returns for a batch of B pairs.

    ``chosen_rewards``/``rejected_rewards`` are the implicit rewards (detached), from which the module logs
    ``rewards/*``. ``metrics`` are logged under the loss's own names; each value is a scalar or one value per pair,
    averaged over pairs.
    """

    losses: Tensor  # (B,) per-pair losses; the batch loss is their mean
    chosen_rewards: Tensor  # (B,)
    rejected_rewards: Tensor  # (B,)
    metrics: dict[str, Tensor] = field(default_factory=dict)


class PreferenceLoss(nn.Module):
    """Base class of every lightpref loss, built-in or third-party.

    Subclasses implement :meth:`forward` with tensor math only and validate their arguments in ``__init__``. They
    declare what they need as attributes (class-level defaults that an instance may override):

    - ``requires_reference``: the module loads a frozen reference model and passes its record; otherwise
      ``reference`` is ``None`` and no reference is ever constructed.
    - ``length_normalized``: ``chosen``/``rejected`` hold token means instead of sums.
    - ``needs_token_logps``: per-token log-probs and completion masks are filled in.
    - ``needs_collision_logps``: per-token ``log Σ_v π(v|·)²`` is filled in (WPO-style weighting).
    - ``views``: extra prompt views by name (see :mod:`lightpref.views`); the module computes both models'
      log-probs of the same completions under each transformed prompt, without gradient, into ``record.views``.
    - ``consumes``: the shape of record ``forward`` takes (:mod:`lightpref.losses.shapes`): ``"pairs"`` (a
      :class:`LogProbs` of B pairs; the default) or ``"ranked"`` (a :class:`~lightpref.losses.shapes.
      RankedLogProbs` of G groups). Its output has one value per pair, or per group. Pair data reach a ranked loss
      as groups of two, ranked data a pairwise loss as the pairs ``model.group_pairs`` forms in each group.
      ``"unpaired"``: an :class:`~lightpref.losses.shapes.UnpairedLogProbs` of B labelled completions; its
      ``chosen_rewards`` and ``rejected_rewards`` both hold every completion's reward (the module averages them by
      label into ``rewards/chosen`` and ``rewards/rejected``).
    - ``needs_mismatched`` (unpaired losses): each prompt is also scored with a mismatched completion (KTO's KL
      estimate), in the same packed forward, into ``record.mismatched``.

    Register the class in the ``lightpref.losses`` entry-point group to make it available by name.
    """

    summary: ClassVar[str] = ""
    requires_reference: bool = True
    length_normalized: bool = False
    needs_token_logps: bool = False
    needs_collision_logps: bool = False
    views: Mapping[str, PromptView] = {}
    consumes: ClassVar[str] = PAIRS
    needs_mismatched: bool = False

    def forward(self, policy: LogProbs, reference: LogProbs | None) -> LossOutput:
        raise NotImplementedError

    @classmethod
    def one_line_summary(cls) -> str:
        """``summary`` if set, else the first line of the class docstring."""
        if cls.summary:
            return cls.summary
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


def _origin(loss: PreferenceLoss) -> str:
    """The loss class and the distribution that ships it, for error messages."""
    from importlib.metadata import packages_distributions

    cls = type(loss)
    distributions = packages_distributions().get(cls.__module__.split(".")[0], [])
    shipped = f"distribution {', '.join(sorted(set(distributions)))}" if distributions else "no installed distribution"
    return f"{cls.__module__}.{cls.__qualname__} ({shipped})"


def check_output(loss: PreferenceLoss, output: LossOutput, pairs: int) -> LossOutput:
    """``output`` if it keeps the contract for a batch of ``pairs`` records (pairs, or groups for a loss that
    consumes ranked groups), else an error naming the loss and where it comes from: per-record ``losses``,
    ``chosen_rewards`` and ``rejected_rewards`` each shaped (B,), every metric a scalar or (B,)."""
    if not isinstance(output, LossOutput):
        raise TypeError(f"the loss {_origin(loss)} returned {type(output).__name__}, not a LossOutput")
    expected = (pairs,)
    unit = {PAIRS: "pairs", UNPAIRED: "examples"}.get(getattr(loss, "consumes", PAIRS), "groups")
    shapes = {name: getattr(output, name) for name in ("losses", "chosen_rewards", "rejected_rewards")}
    for name, value in {**shapes, **{f"metrics[{key!r}]": value for key, value in output.metrics.items()}}.items():
        allowed = (expected, ()) if name.startswith("metrics") else (expected,)
        if not isinstance(value, Tensor) or tuple(value.shape) not in allowed:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            one = f"one value per {unit[:-1]}"
            wanted = f"{expected} ({one}) or () (a scalar)" if name.startswith("metrics") else f"{expected}, {one}"
            raise ValueError(f"the loss {_origin(loss)} returned `{name}` of shape {got} for a batch of {pairs} "
                             f"{unit}; it must be {wanted}. Fix the loss's forward()")
    return output


def check_beta(beta: float) -> None:
    """Reject a temperature that is not a positive finite number."""
    if not (isinstance(beta, (int, float)) and 0 < beta < float("inf")):
        raise ValueError(f"`beta` must be a positive number, got {beta!r}; the papers use values such as 0.1")


def check_non_negative(name: str, value: float, hint: str) -> None:
    """Reject a weight that is not a finite number ≥ 0 (``bool`` included), naming it and how it is usually set."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (is_number and 0 <= value < float("inf")):
        raise ValueError(f"`{name}` must be a finite number ≥ 0, got {value!r}; {hint}")


def check_label_smoothing(label_smoothing: float, upper: float = 0.5, inclusive: bool = True) -> None:
    """Reject a label-smoothing ε outside ``[0, upper]`` (``[0, upper)`` when not ``inclusive``)."""
    too_high = label_smoothing > upper if inclusive else label_smoothing >= upper
    if label_smoothing < 0 or too_high:
        interval = f"[0, {upper}]" if inclusive else f"[0, {upper})"
        raise ValueError(
            f"`label_smoothing` must be in {interval}, got {label_smoothing!r}; 0 disables it (plain DPO)"
        )


def log_ratios(policy: LogProbs, reference: LogProbs) -> tuple[Tensor, Tensor]:
    """``(ρc, ρr)``: the policy-to-reference log-ratios of the chosen and rejected completions, each (B,)."""
    return policy.chosen - reference.chosen, policy.rejected - reference.rejected


def smoothed_sigmoid_loss(logits: Tensor, label_smoothing: float) -> Tensor:
    """``−(1−ε)·logσ(z) − ε·logσ(−z)``, the (conservative) DPO loss of a logit z, elementwise and stable."""
    loss = -nn.functional.logsigmoid(logits)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * nn.functional.logsigmoid(-logits)
    return loss
