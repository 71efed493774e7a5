"""Cut the text that truncation would drop before the tokenizer sees it, so a huge record costs what a short one does.

Truncation keeps a prompt's last ``max_prompt_length`` tokens and a completion's first ``max_length`` tokens at
most, so a long text is cut to a window of characters at the end it keeps, and only the window is tokenised. The
cut is exact — the kept tokens are those of the whole text — because the window is checked, not guessed:

- it must yield ``MARGIN_TOKENS`` more tokens than are kept, so the tokens around the cut (which a tokenizer may
  merge differently once the text is cut) are among those truncation drops anyway;
- the kept tokens (and half the margin) must be the same when the window is one character and twice as wide:
  a tokenisation that the cut still changes (a run of one repeated character, a "word" of megabytes) changes
  with the cut's position, so it is caught.

A window that fails either check is doubled and tried again. Texts up to ``WHOLE_WINDOWS`` windows long are
tokenised whole, as before; a text whose window would grow past ``MAX_WINDOWS`` first windows is refused with a
``ValueError`` (its tokens cannot be found in bounded memory). A prompt that starts with the BOS text keeps it, and
a completion cut before a later EOS gets the EOS text appended, so BOS and last-EOS handling are unchanged.

>>> from lightpref.testing import tiny_tokenizer
>>> tokenizer = tiny_tokenizer()
>>> long = " ".join(["the cat sat on the mat"] * 2000)
>>> prompt, (completion,) = cut_texts(long, [long], tokenizer, max_length=16, max_prompt_length=8)
>>> len(long), len(prompt), len(completion), long.endswith(prompt), long.startswith(completion)
(45999, 320, 384, True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHARS_PER_TOKEN = 8  # the first window's characters per token needed; a window with too few tokens is doubled
MARGIN_TOKENS = 32  # tokens a window yields beyond those kept: the cut's neighbourhood, always dropped
WHOLE_WINDOWS = 4  # texts up to this many first windows long are tokenised whole
MAX_WINDOWS = 64  # a window that would grow past this many first windows: the record is refused


def cut_texts(
    prompt_text: str,
    completion_texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int,
) -> tuple[str, list[str]]:
    """The prompt's text cut to its end and each completion's to its start, keeping every token truncation keeps
    (``max_prompt_length`` of the prompt, ``max_length`` of a completion); short texts come back unchanged."""
    return (cut_prompt(prompt_text, max_prompt_length, tokenizer),
            [cut_completion(text, max_length, tokenizer) for text in completion_texts])


def cut_prompt(text: str, keep: int, tokenizer: PreTrainedTokenizerBase, what: str = "prompt") -> str:
    """The end of ``text`` whose last ``keep`` tokens are those of ``text`` (with its leading BOS text, if any)."""
    bos = tokenizer.bos_token if isinstance(tokenizer.bos_token, str) else ""
    head = bos if bos and text.startswith(bos) else ""

    def start(width: int) -> int:
        begin = len(text) - width
        while not head and bos and text.startswith(bos, begin):  # a window must not start with BOS the text lacks
            begin += 1
        return begin

    width = _window(text, keep, lambda width: text[start(width) :], lambda ids, count: ids[-count:], tokenizer, what)
    return text if width is None else head + text[start(width) :]


def cut_completion(text: str, keep: int, tokenizer: PreTrainedTokenizerBase, what: str = "completion") -> str:
    """The start of ``text`` whose first ``keep`` tokens are those of ``text``; EOS text follows it when the rest
    held one (a conversation's completion ends after its last EOS, which must stay past the kept tokens)."""
    width = _window(text, keep, lambda width: text[:width], lambda ids, count: ids[:count], tokenizer, what)
    if width is None:
        return text
    eos = tokenizer.eos_token if isinstance(tokenizer.eos_token, str) else ""
    later_eos = bool(eos) and eos in text[max(0, width - len(eos) + 1) :]
    return text[:width] + eos if later_eos else text[:width]


def _window(
    text: str,
    keep: int,
    window: Callable[[int], str],
    kept: Callable[[list[int], int], list[int]],
    tokenizer: PreTrainedTokenizerBase,
    what: str,
) -> int | None:
    """The width in characters of a window of ``text`` whose kept tokens are the whole text's (see the module's
    docstring), or ``None`` when the text is short enough to tokenise whole."""
    first = width = (keep + MARGIN_TOKENS) * CHARS_PER_TOKEN
    compared = keep + MARGIN_TOKENS // 2
    while len(text) > WHOLE_WINDOWS * width:
        if width > MAX_WINDOWS * first:
            raise ValueError(
                f"the {what} is {len(text):,} characters long and the tokens truncation keeps of it cannot be found "
                "without tokenising all of it (it has no word boundary near where it would be cut, e.g. one "
                "character repeated); shorten the record or remove it"
            )
        ids = _ids(window(width), tokenizer)
        if len(ids) >= keep + MARGIN_TOKENS:
            reference = kept(ids, compared)
            if all(kept(_ids(window(other), tokenizer), compared) == reference for other in (width + 1, 2 * width)):
                return width
        width *= 2
    return None


def _ids(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
