"""What a training checkpoint holds: only what is trained.

The reference and a LoRA policy's frozen base weights are rebuilt from the model source whenever the module is built,
so :func:`trim_state` leaves them out of a saved state dict and :func:`ignore_missing_frozen` keeps loading one from
reporting them missing.

>>> state = {"reference.w": 1, "policy.base.w": 2, "policy.lora.w": 3}
>>> trim_state(state, frozenset({"policy.base.w"}))
>>> state
{'policy.lora.w': 3}
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING

from lightpref.models.export import is_frozen_entry

if TYPE_CHECKING:
    from torch import nn
    from torch.nn.modules.module import _IncompatibleKeys


def rebuilt_from_source(key: str, frozen_policy_keys: frozenset[str]) -> bool:
    """Whether a state-dict key is left out of checkpoints: the reference's, or a frozen policy weight's."""
    return key.startswith("reference.") or is_frozen_entry(key, frozen_policy_keys)


def trim_state(state: MutableMapping[str, object], frozen_policy_keys: frozenset[str]) -> None:
    """Delete from ``state`` every entry :func:`rebuilt_from_source` on load."""
    for key in [key for key in state if rebuilt_from_source(key, frozen_policy_keys)]:
        del state[key]


def ignore_missing_frozen(module: nn.Module, incompatible_keys: _IncompatibleKeys) -> None:
    """A ``load_state_dict`` post-hook: checkpoints hold no reference and no frozen policy weights by design, so
    loading one must not report them missing. A missing trainable weight is still reported (and is an error under
    strict loading). ``module`` gives its frozen keys by a ``frozen_policy_keys()`` method."""
    frozen_keys: Callable[[], frozenset[str]] | None = getattr(module, "frozen_policy_keys", None)
    frozen = frozen_keys() if callable(frozen_keys) else frozenset()
    missing = incompatible_keys.missing_keys
    missing[:] = [key for key in missing if not rebuilt_from_source(key, frozen)]
