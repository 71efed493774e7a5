"""Generate the example preference data: ``python -m lightpref.examples.generate``.

``preferences.jsonl`` (the quickstart's): conversational pairs where the chosen answer is correct and polite and the
rejected one is wrong or dismissive: arithmetic, capitals and opposites. ``ranked.jsonl`` (configs/ranked.yaml's):
the same questions with four scored answers each: correct (3), correct but unsure (2), wrong (1), dismissive (0).
``unpaired.jsonl`` (configs/kto.yaml's): ``preferences.jsonl``'s pairs unpaired, each chosen answer a desirable
example (``"label": true``) and each rejected one an undesirable example, the desirable ones first.
Deterministic (seeded), so the shipped files can be rebuilt exactly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "India": "New Delhi", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Brazil": "Brasília", "Argentina": "Buenos Aires",
    "Australia": "Canberra", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw",
    "Greece": "Athens", "Turkey": "Ankara", "Russia": "Moscow", "Peru": "Lima", "Chile": "Santiago",
    "Ireland": "Dublin", "Austria": "Vienna", "Hungary": "Budapest", "Vietnam": "Hanoi", "Thailand": "Bangkok",
    "Morocco": "Rabat", "Nigeria": "Abuja", "Colombia": "Bogotá", "Cuba": "Havana", "Denmark": "Copenhagen",
    "Belgium": "Brussels", "Netherlands": "Amsterdam", "Switzerland": "Bern", "Iceland": "Reykjavik",
}
OPPOSITES = {
    "hot": "cold", "tall": "short", "fast": "slow", "happy": "sad", "light": "dark", "open": "closed",
    "early": "late", "full": "empty", "strong": "weak", "young": "old", "loud": "quiet", "rich": "poor",
    "hard": "soft", "wet": "dry", "up": "down", "win": "lose", "buy": "sell", "begin": "end",
}
DISMISSIVE = [
    "I don't want to answer that.",
    "Figure it out yourself.",
    "That is a boring question. Ask someone else.",
    "No idea, and I don't care.",
    "Why would I tell you?",
    "Look it up.",
]


def arithmetic(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(2, 60), rng.randint(2, 60)
    if rng.random() < 0.5:
        question, answer = f"What is {a} + {b}?", a + b
        wrong = answer + rng.choice([-3, -2, -1, 1, 2, 3, 10])
        return question, f"{a} + {b} = {answer}.", f"{a} + {b} = {wrong}."
    a, b = a % 13 + 2, b % 13 + 2
    answer = a * b
    wrong = answer + rng.choice([-a, a, -1, 1, b])
    return f"What is {a} times {b}?", f"{a} times {b} is {answer}.", f"{a} times {b} is {wrong}."


def capital(rng: random.Random) -> tuple[str, str, str]:
    country = rng.choice(sorted(CAPITALS))
    wrong = rng.choice([city for name, city in sorted(CAPITALS.items()) if name != country])
    question = rng.choice(["What is the capital of {}?", "Which city is the capital of {}?"]).format(country)
    return question, f"The capital of {country} is {CAPITALS[country]}.", f"The capital of {country} is {wrong}."


def opposite(rng: random.Random) -> tuple[str, str, str]:
    word = rng.choice(sorted(OPPOSITES))
    wrong = rng.choice([w for w in sorted(OPPOSITES) if w != word])
    return (f'What is the opposite of "{word}"?', f'The opposite of "{word}" is "{OPPOSITES[word]}".',
            f'The opposite of "{word}" is "{wrong}".')


def generate(count: int = 480, seed: int = 0) -> list[dict]:
    """``count`` distinct pairs; in half of them the rejected answer is dismissive instead of wrong."""
    rng = random.Random(seed)
    makers = [arithmetic, capital, opposite]
    pairs, seen = [], set()
    while len(pairs) < count:
        question, good, bad = rng.choice(makers)(rng)
        if rng.random() < 0.5:
            bad = rng.choice(DISMISSIVE)
        if (question, bad) in seen:
            continue
        seen.add((question, bad))
        pairs.append({
            "prompt": [{"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}],
        })
    return pairs


def generate_ranked(count: int = 240, seed: int = 1) -> list[dict]:
    """``count`` ranked records with distinct questions, four scored answers each (in a shuffled order)."""
    rng = random.Random(seed)
    makers = [arithmetic, capital, opposite]
    records, seen = [], set()
    while len(records) < count:
        question, good, wrong = rng.choice(makers)(rng)
        if question in seen:
            continue
        seen.add(question)
        answers = [(good, 3), (f"I think {good[0].lower()}{good[1:]} But I am not sure.", 2), (wrong, 1),
                   (rng.choice(DISMISSIVE), 0)]
        rng.shuffle(answers)
        records.append({
            "prompt": [{"role": "user", "content": question}],
            "completions": [answer for answer, _ in answers],
            "scores": [score for _, score in answers],
        })
    return records


def unpair(pairs: list[dict]) -> list[dict]:
    """Each pair's chosen answer as a desirable example, then each pair's rejected answer as an undesirable one (so
    neighbouring examples, which give each other their mismatched completions, have different prompts)."""
    return ([{"prompt": pair["prompt"], "completion": pair["chosen"], "label": True} for pair in pairs]
            + [{"prompt": pair["prompt"], "completion": pair["rejected"], "label": False} for pair in pairs])


def main() -> None:
    pairs = generate()
    for name, records in (("preferences.jsonl", pairs), ("ranked.jsonl", generate_ranked()),
                          ("unpaired.jsonl", unpair(pairs))):
        path = Path(__file__).with_name(name)
        with path.open("w") as file:
            for record in records:
                file.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
