"""Random English-like text for synthetic pages and text watermarks (a fixed built-in vocabulary, no downloads)."""

from __future__ import annotations

import numpy as np

VOCABULARY = """
the of and to in is was for that with as on by at from this be are it an which or have has not were
but all their they one been more also new other its can first two time after only would some these may
there when into than over most such any made between each three years under during about before both
page report data system method result results analysis model value table figure section number process
between service customer account invoice payment order delivery total amount date balance credit
document letter office company market price cost sales annual quarter review meeting project team plan
water paper light house river city street north south east west winter summer morning evening garden
history science research university student teacher school library museum music theatre history
general special public private national local central federal county district council committee board
agreement contract policy notice request response section chapter volume edition article journal press
important necessary possible available different similar several various certain current previous
however therefore although because whereas moreover finally further indeed thus hence otherwise
develop provide include require receive consider continue present produce remain suggest support
increase decrease measure compare describe identify maintain improve obtain prepare represent
building machine engine station harbour bridge tower market village county valley forest mountain
""".split()

PUNCT = [",", ",", ".", ".", ";", ":", "?", "!"]


def random_words(rng: np.random.Generator, n: int) -> list[str]:
    words = []
    capital_next = True
    for _ in range(n):
        r = rng.random()
        if r < 0.04:
            w = str(int(rng.integers(1, 10 ** int(rng.integers(1, 5)))))
        elif r < 0.05:
            w = f"{rng.integers(1, 100)}.{rng.integers(0, 100):02d}"
        else:
            w = str(rng.choice(VOCABULARY))
        if capital_next or rng.random() < 0.06:
            w = w[:1].upper() + w[1:]
        capital_next = False
        if rng.random() < 0.12:
            p = str(rng.choice(PUNCT))
            w += p
            capital_next = p in ".?!"
        words.append(w)
    return words


def random_title(rng: np.random.Generator) -> str:
    words = random_words(rng, int(rng.integers(2, 6)))
    return " ".join(w.strip(",.;:?!").capitalize() for w in words)
