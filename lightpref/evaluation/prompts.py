"""Prompts for generation-time evaluation: lightpref's deterministic review prompts, or a user's prompt file.

:func:`review_prompts` writes requests for (or openings of) reviews of invented films and products, the setting of
the DPO paper's controlled-sentiment experiment. Every fifth subject is held out: ``split="eval"`` prompts never
name a subject that ``split="train"`` prompts do, so evaluation measures generalisation, not memorisation.

>>> review_prompts(2, split="train")
['Write a short review of the film The Silent Harbor.', 'Write a short review of the film Paper Moons.']
>>> len(set(review_prompts(split="train"))), len(set(review_prompts(split="eval")))
(390, 90)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from lightpref.evaluation.rewards import Prompt

FILMS = [
    "The Silent Harbor", "Paper Moons", "Midnight Orchard", "The Last Cartographer", "Iron Lullaby",
    "A Winter in Lisbon", "The Glass Road", "Beneath the Salt Flats", "Neon Pilgrims", "The Clockmaker's Daughter",
    "Static Bloom", "Harvest of Crows", "The Velvet Frontier", "Seven Quiet Rivers", "Lanterns at Dawn",
    "The Copper Sky", "Orbit of Strangers", "The Long Thaw", "Whistle in the Dark", "The Borrowed Summer",
    "Kingdom of Rust", "The Ferryman's Song", "Echoes of Marrow Street", "Small Hours", "The Amber Line",
    "Cold Stars Over Vienna", "The Paper Tiger Club", "Driftwood Saints", "A Map of Tuesdays", "The Quiet Engine",
    "Foxglove", "The Ninth Lighthouse",
]
PRODUCTS = [
    "the QuickMix 300 blender", "the Nimbus Trail running shoes", "the Aurora X2 headphones",
    "the Brightline desk lamp", "the Everpeak camping tent", "the PocketBrew coffee grinder",
    "the Terra smart thermostat", "the Halcyon memory-foam pillow", "the Vector 14 laptop",
    "the Sprout kids' tablet", "the Maple & Co. backpack", "the Glide electric toothbrush",
    "the Orbit robot vacuum", "the Cascade water filter", "the Lumen e-reader", "the Atlas cast-iron skillet",
]
FILM_TEMPLATES = [
    "Write a short review of the film {}.",
    "What did you think of the movie {}? Answer in two sentences.",
    "Write a one-paragraph review of {} for a film blog.",
    "Give your honest opinion of the film {}.",
    "Write a brief audience review of {}.",
    "Describe your experience watching {}.",
    "Write a review of {} for a newspaper's weekend section.",
    "Summarise your feelings about the film {} in a few sentences.",
    "Tell a friend what you thought of {}.",
    "Write a short critique of the movie {}.",
]
PRODUCT_TEMPLATES = [
    "Write a short review of {}.",
    "Write a customer review of {} for an online shop.",
    "What do you think of {}? Answer in two sentences.",
    "Give your honest opinion of {} after a month of use.",
    "Describe your experience with {}.",
    "Write a brief product review of {}.",
    "Tell a friend what you think of {}.",
    "Write a one-paragraph review of {} for a tech blog.",
    "Summarise your feelings about {} in a few sentences.",
    "Write a short critique of {}.",
]
FILM_OPENINGS = [
    "I watched {} last night and", "My honest review of {}:", "After seeing {} twice, I can say that",
    "{} is the kind of film that", "Review: {}.",
]
PRODUCT_OPENINGS = [
    "I bought {} last month and", "My honest review of {}:", "After a month with {}, I can say that",
    "Customer review of {}.", "I have been using {} every day, and",
]
HELD_OUT_EVERY = 5


def review_prompts(
    count: int | None = None,
    split: Literal["train", "eval", "all"] = "train",
    style: Literal["instruction", "opening"] = "instruction",
) -> list[str]:
    """Distinct review prompts in a fixed order, the first ``count`` of them (all when ``None``).

    ``style="instruction"`` asks for a review (for chat models: use a chat template); ``"opening"`` gives the start
    of a review to continue (for base models). Subjects alternate between films and products.
    """
    if split not in ("train", "eval", "all"):
        raise ValueError(f"`split` must be 'train', 'eval' or 'all', got {split!r}")
    if style not in ("instruction", "opening"):
        raise ValueError(f"`style` must be 'instruction' or 'opening', got {style!r}")
    film_templates, product_templates = (
        (FILM_TEMPLATES, PRODUCT_TEMPLATES) if style == "instruction" else (FILM_OPENINGS, PRODUCT_OPENINGS)
    )
    subjects = []  # two films, then a product, and so on
    for index, film in enumerate(FILMS):
        subjects.append((film, film_templates))
        if index % 2 == 1:
            subjects.append((PRODUCTS[index // 2], product_templates))
    if split != "all":
        held_out = split == "eval"
        subjects = [s for index, s in enumerate(subjects) if (index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1) == held_out]
    rounds = max(len(film_templates), len(product_templates))
    prompts = [
        templates[round_ % len(templates)].format(subject)
        for round_ in range(rounds)
        for subject, templates in subjects
    ]
    prompts = list(dict.fromkeys(prompts))  # a template repeated for the shorter list yields no duplicates
    if count is not None:
        if count < 1 or count > len(prompts):
            raise ValueError(f"asked for {count} {split} review prompts; there are 1 to {len(prompts)}")
        prompts = prompts[:count]
    return prompts


def read_prompts(path: str | Path) -> list[Prompt]:
    """Prompts from a file: ``.jsonl`` rows with a ``prompt`` field (a string or chat messages), or a text file
    with one prompt per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {str(path)!r} does not exist; check the `prompts_file` setting")
    prompts: list[Prompt] = []
    if path.suffix == ".jsonl":
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                prompt = json.loads(line)["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                problem = f"expected a JSON object with a `prompt` field ({error})"
                raise ValueError(f"{path}, line {number}: {problem}") from None
            if not isinstance(prompt, (str, list)):
                raise ValueError(f"{path}, line {number}: `prompt` must be a string or a list of chat messages")
            prompts.append(prompt)
    else:
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"prompts file {path} holds no prompts")
    return prompts
