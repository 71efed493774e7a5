"""Prompt views: a transformation of each pair's prompt under which a loss wants the same completions scored.

A loss declares its views by name (``views = {"self_refine": InstructionPrefix(...)}``). The DataModule tokenises
every pair once more per view, with the transformed prompt and the unchanged completions, and the module computes
both models' log-probs of those completions under each view, without gradient (``record.views[name]``).

A prompt reaches a view after normalisation, as either a string (explicit or HH-RLHF transcript prompts) or a list
of chat messages (before the chat template is applied). A third-party loss writes its own view by subclassing
:class:`PromptView`; its ``repr`` must identify its settings, since the tokenisation cache is keyed by it.
"""

from __future__ import annotations

import re
from typing import Any

Prompt = str | list[dict[str, Any]]

_HH_FIRST_HUMAN = re.compile(r"^(\s*Human:\s?)")


class PromptView:
    """Base class: transform a normalised prompt."""

    def apply(self, prompt: Prompt) -> Prompt:
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in sorted(vars(self).items()))
        return f"{type(self).__name__}({settings})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class InstructionPrefix(PromptView):
    """Put an instruction at the start of the first user turn of the prompt.

    - chat messages: prefixed to the content of the first ``user`` message (so it sits inside the chat template's
      user turn);
    - an HH-RLHF transcript (``"\\n\\nHuman: … \\n\\nAssistant:"``): inserted right after the first ``Human:``;
    - any other string: prefixed to the whole prompt.

    >>> InstructionPrefix("Be kind.").apply("\\n\\nHuman: hi\\n\\nAssistant:")
    '\\n\\nHuman: Be kind. hi\\n\\nAssistant:'
    >>> InstructionPrefix("Be kind.").apply([{"role": "user", "content": "hi"}])
    [{'role': 'user', 'content': 'Be kind. hi'}]

    Args:
        text: the instruction.
        separator: what stands between the instruction and the original text.
    """

    def __init__(self, text: str, separator: str = " ") -> None:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the instruction `text` of an InstructionPrefix must be a non-empty string")
        self.text = text
        self.separator = separator

    def apply(self, prompt: Prompt) -> Prompt:
        if isinstance(prompt, str):
            match = _HH_FIRST_HUMAN.match(prompt)
            if match:
                head = match.group(1)
                return f"{head}{self.text}{self.separator}{prompt[len(head):]}"
            return f"{self.text}{self.separator}{prompt}"
        messages = [dict(message) for message in prompt]
        for message in messages:
            if message.get("role") == "user":
                message["content"] = f"{self.text}{self.separator}{message['content']}"
                return messages
        raise ValueError("InstructionPrefix needs a prompt with a user turn, but this prompt has none")
