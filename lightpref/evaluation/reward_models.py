"""A learned reward model as a :class:`~lightpref.evaluation.RewardFunction`: any Hugging Face
``AutoModelForSequenceClassification`` checkpoint that scores a conversation with one logit.

In a config::

    reward:
      class_path: lightpref.evaluation.SequenceClassifierReward
      init_args:
        model: Skywork/Skywork-Reward-V2-Llama-3.1-8B
        max_length: 2048

Each (prompt, completion) is rendered the way reward models are trained: with the reward model's own chat template
(the prompt as the user turn, or the given chat messages, then the completion as the assistant turn), or, for a
tokenizer without a template, as the plain text ``prompt + completion``. Sequences longer than ``max_length`` tokens
lose their **start** (the end, where the score is read, is kept); every call logs how many were cut.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightpref.evaluation.rewards import Prompt, RewardFunction, check_lengths

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def conversation(prompt: Prompt, completion: str) -> list[dict[str, Any]]:
    """The chat messages a reward model scores: the prompt (a user turn if it is a string) and the answer.

    >>> conversation("Hi?", "Hello.")
    [{'role': 'user', 'content': 'Hi?'}, {'role': 'assistant', 'content': 'Hello.'}]
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return messages + [{"role": "assistant", "content": completion}]


def left_padded(rows: Sequence[list[int]], pad_token_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, position_ids), each (N, T), padded on the left so that the last position of every
    row is its last real token.

    >>> [tensor.tolist() for tensor in left_padded([[5, 6], [7]], pad_token_id=0)]
    [[[5, 6], [0, 7]], [[1, 1], [0, 1]], [[0, 1], [0, 0]]]
    """
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([[pad_token_id] * (width - len(row)) + row for row in rows])
    attention_mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention_mask, position_ids


class SequenceClassifierReward(RewardFunction):
    """The logit of a sequence-classification reward model (higher is better).

    Args:
        model: Hub name or local directory of an ``AutoModelForSequenceClassification`` checkpoint.
        max_length: the most tokens scored per conversation; longer ones are cut from the start (logged).
        batch_size: conversations scored at a time.
        label_index: which logit is the reward, for heads with more than one label.
        dtype: ``auto`` (bfloat16 on a GPU, float32 on the CPU), ``float32``, ``bfloat16`` or ``float16``.
        device: ``auto`` (the current CUDA device if there is one, else the CPU) or a torch device string.
        chat_template: render with the reward model's chat template (``None``: when its tokenizer has one).
        trust_remote_code: run model code shipped with the checkpoint (only for checkpoints you trust).
    """

    def __init__(
        self,
        model: str,
        max_length: int = 1024,
        batch_size: int = 8,
        label_index: int = 0,
        dtype: str = "auto",
        device: str = "auto",
        chat_template: bool | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        for name, value in {"max_length": max_length, "batch_size": batch_size}.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`reward.init_args.{name}` must be a positive integer, got {value!r}")
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"`reward.init_args.dtype` must be 'auto' or one of {list(DTYPES)}, got {dtype!r}")
        self.model_name, self.max_length, self.batch_size, self.label_index = model, max_length, batch_size, label_index
        self._device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        torch_dtype = DTYPES[dtype] if dtype != "auto" else (
            torch.bfloat16 if self._device.type == "cuda" else torch.float32)
        self.dtype = str(torch_dtype).removeprefix("torch.")
        self._tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        self._model = AutoModelForSequenceClassification.from_pretrained(
            model, dtype=torch_dtype, trust_remote_code=trust_remote_code
        ).to(self._device).eval().requires_grad_(False)
        labels = self._model.config.num_labels
        if not 0 <= label_index < labels:
            raise ValueError(f"`reward.init_args.label_index` is {label_index}, but {model} has {labels} label(s)")
        has_template = bool(getattr(self._tokenizer, "chat_template", None))
        if chat_template and not has_template:
            raise ValueError(f"`reward.init_args.chat_template` is true, but the tokenizer of {model} has no chat "
                             "template; set it to false to score `prompt + completion` as plain text")
        self.chat_template = has_template if chat_template is None else chat_template
        pad = self._tokenizer.pad_token_id
        self._pad_token_id = pad if pad is not None else (self._tokenizer.eos_token_id or 0)
        self.truncated = 0  # conversations cut to `max_length`, over the life of this object

    def encode(self, prompt: Prompt, completion: str) -> list[int]:
        """The token ids scored for one conversation, before truncation."""
        if self.chat_template:
            text = self._tokenizer.apply_chat_template(conversation(prompt, completion), tokenize=False)
            return self._tokenizer(text, add_special_tokens=False)["input_ids"]
        if not isinstance(prompt, str):
            raise ValueError(f"{self.model_name}'s tokenizer has no chat template, so it cannot score chat-message "
                             "prompts; give string prompts or a reward model with a chat template")
        return self._tokenizer(prompt + completion)["input_ids"]

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[str]) -> Tensor:
        check_lengths(prompts, completions)
        rows = [self.encode(prompt, completion) for prompt, completion in zip(prompts, completions, strict=True)]
        cut = sum(len(row) > self.max_length for row in rows)
        if cut:
            self.truncated += cut
            log.warning("%s: %d of %d conversations were longer than max_length=%d tokens and lost their start",
                        self.model_name, cut, len(rows), self.max_length)
        rows = [row[-self.max_length :] for row in rows]
        embed = self._model.get_input_embeddings()
        scores = []
        for start in range(0, len(rows), self.batch_size):
            input_ids, attention_mask, position_ids = left_padded(rows[start : start + self.batch_size],
                                                                  self._pad_token_id)
            # embeddings rather than ids: the head then reads the last position, which left padding makes every
            # row's last real token even when the pad token also ends conversations (pad = EOS)
            logits = self._model(
                inputs_embeds=embed(input_ids.to(self._device)),
                attention_mask=attention_mask.to(self._device),
                position_ids=position_ids.to(self._device),
            ).logits  # (b, labels)
            scores.append(logits[:, self.label_index].float().cpu())
        return torch.cat(scores)
