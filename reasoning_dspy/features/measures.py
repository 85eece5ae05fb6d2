"""What is measured in each generated trace: reasoning words, reflection, degenerate loops.

Words are matched in the decoded text, any case, on word boundaries, so the rates do not depend on
how a tokenizer splits "Wait" (the ReasonScore vocabulary matches token ids; this is about behaviour).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from reasoning_dspy.features.vocab import REASONING_WORDS

#: Words that mark a trace turning back on itself (the paper's reflection behaviour). "therefore",
#: "but" and "another" are reasoning words too, but ordinary prose uses them without reflecting.
REFLECTION_WORDS: tuple[str, ...] = ("wait", "hmm", "alternatively", "however", "maybe", "perhaps", "let me")


def _pattern(words: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(r"\s+".join(map(re.escape, w.split())) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![\w'])(?:{alternatives})(?![\w'])", re.IGNORECASE)


_REASONING = _pattern(REASONING_WORDS)
_REFLECTION = _pattern(REFLECTION_WORDS)


def count_words(text: str, words: Sequence[str] = REASONING_WORDS) -> int:
    """Occurrences of `words` in `text` (any case, whole words; "let me" across any whitespace)."""
    pattern = _REASONING if tuple(words) == REASONING_WORDS else _REFLECTION if tuple(words) == REFLECTION_WORDS \
        else _pattern(words)
    return len(pattern.findall(text or ""))


def reflects(text: str) -> bool:
    """Whether a trace contains any reflection word."""
    return _REFLECTION.search(text or "") is not None


def is_degenerate(text: str, *, min_repeats: int = 3, min_span: int = 12, max_n: int = 8,
                  min_distinct_4grams: float = 0.3) -> bool:
    """A trace stuck in a loop: some n-gram of words (n <= `max_n`) repeats back to back at least
    `min_repeats` times over at least `min_span` words ("The The The ...", a sentence said over and
    over), or, in traces of 40+ words, under `min_distinct_4grams` of the 4-grams are distinct."""
    words = (text or "").split()
    for n in range(1, max_n + 1):
        for start in range(n):
            run = 1
            for i in range(start + n, len(words) - n + 1, n):
                run = run + 1 if words[i:i + n] == words[i - n:i] else 1
                if run >= min_repeats and run * n >= min_span:
                    return True
    if len(words) >= 40:
        grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        return len(set(grams)) / len(grams) < min_distinct_4grams
    return False


@dataclass(frozen=True)
class TraceMeasures:
    """The per-trace numbers the study aggregates."""

    n_tokens: int
    reasoning_words: int
    reflects: bool
    degenerate: bool
    correct: bool

    @classmethod
    def of(cls, text: str, n_tokens: int, correct: bool) -> TraceMeasures:
        return cls(n_tokens, count_words(text), reflects(text), is_degenerate(text), bool(correct))
