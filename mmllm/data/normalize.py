"""Answer normalisation for exact-match scoring (applied the same way to prediction and reference).

The rule, in order:

1. lower-case; ``gray`` -> ``grey``, ``centre`` -> ``center``;
2. every character that is not a letter, digit or space becomes a space (so punctuation anywhere,
   including commas inside captions, is ignored);
3. the articles ``a``, ``an``, ``the`` are removed as whole words;
4. number words ``zero`` .. ``twenty`` become digits (``three`` -> ``3``);
5. whitespace is collapsed and stripped.

``"The Circle."`` -> ``"circle"``; ``"Three"`` -> ``"3"``; ``"a red star, a blue square"`` ->
``"red star blue square"``.
"""

from __future__ import annotations

import re

_NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
_WORD_TO_DIGIT = {w: str(i) for i, w in enumerate(_NUMBER_WORDS)}
_SPELLING = {"gray": "grey", "centre": "center", "colour": "color"}
_ARTICLES = {"a", "an", "the"}
_NON_WORD = re.compile(r"[^0-9a-z ]+")


def normalize_answer(text: str) -> str:
    """Normalise an answer for exact-match comparison (see the module docstring for the rule)."""
    text = _NON_WORD.sub(" ", text.lower())
    words = []
    for word in text.split():
        if word in _ARTICLES:
            continue
        word = _SPELLING.get(word, word)
        words.append(_WORD_TO_DIGIT.get(word, word))
    return " ".join(words)


def exact_match(prediction: str, reference: str) -> bool:
    """True if both answers are equal after :func:`normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(reference)
