"""Worked solutions of word problems, written the way reasoning models think aloud.

ReasonScore finds features that fire on words like "wait" or "alternatively" across many contexts.
If every "Wait," sits in the same template sentence, the top activating contexts are that sentence
repeated, and a feature for the template looks like a reasoning feature. So these traces vary the
voice, the order, the step wording and where the reflection words go (line start, mid-sentence,
after a bracket or dash), tie each reflection to the problem's own numbers, and leave some traces
with no reflection at all. All 34 official spellings occur (see `features.vocab`).

The bundled `data/traces.txt` is `write_bundled_traces()`'s output; a test keeps the two equal.
Regenerate it with `python -m reasoning_dspy.problems.traces`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from importlib import resources
from pathlib import Path

from reasoning_dspy.problems.answers import format_answer
from reasoning_dspy.problems.base import Problem, fmt
from reasoning_dspy.problems.generate import make_problems
from reasoning_dspy.problems.phrasing import (
    CLOSERS,
    ENDINGS,
    LINKS,
    OPENERS,
    OPS,
    PLANS,
    REFLECT,
    SIZES,
    inverse,
    parts,
    what,
    wrap,
)

BUNDLED_TRACES = 200  # traces in data/traces.txt
BUNDLED_SEED = 0
_HEADERS = ("Q: {q}", "Problem: {q}", "Question: {q}", "{q}", "{q}", "Task: {q}")


def reasoning_traces(n: int, seed: int = 0) -> list[str]:
    """`n` worked solutions of training-split word problems, in varied styles (deterministic)."""
    rng = random.Random(f"reasoning-dspy-traces:{seed}")
    return [_trace(p, rng) for p in make_problems(n, split="train", seed=seed)]


def _trace(problem: Problem, rng: random.Random) -> str:
    asked = what(problem.question)
    lines = [rng.choice(_HEADERS).format(q=problem.question)]
    reflective = rng.random() < 0.8
    body: list[str] = []
    if rng.random() < 0.5:
        nums = ", ".join(fmt(Fraction(v).limit_denominator(10_000)) for v in problem.quantities.values())
        plan = rng.choice(PLANS if reflective else PLANS[:3])
        body.append(plan.format(what=asked, What=asked[0].upper() + asked[1:], nums=nums))
    for i, step in enumerate(problem.steps):
        a, op, b, c = parts(step)
        sentence = rng.choice(OPENERS if i == 0 else LINKS) + rng.choice(OPS[op]).format(a=a, b=b, c=c)
        body.append(sentence[0].upper() + sentence[1:] + ".")
        if reflective and rng.random() < 0.6:
            new_line, template = rng.choice(REFLECT)
            text = template.format(a=a, b=b, c=c, inv=inverse(a, op, b, c), wrong=_slip(c, rng), x=c, what=asked,
                                   size=rng.choice(SIZES), wait=rng.choice(("wait", "hmm", "let me see")))
            if new_line or not body:
                body.append("\n" + text)
            else:
                body[-1] += " " + text
    answer = format_answer(problem.answer)
    ending = rng.choice(ENDINGS).format(x=answer)
    if reflective and rng.random() < 0.5:
        ending = rng.choice(CLOSERS).format(x=answer)
    text = " ".join(body).replace(" \n", "\n")
    return "\n".join([lines[0], wrap(text, rng), ending])


def _slip(c: str, rng: random.Random) -> str:
    value = Fraction(c)
    wrong = value + rng.choice((1, -1, 10, 2)) if value.denominator == 1 else value * 10
    return fmt(wrong).replace(",", "")


# -- the bundled file ----------------------------------------------------------------------------
def bundled_traces_path() -> Path:
    return Path(str(resources.files("reasoning_dspy") / "data" / "traces.txt"))


def bundled_trace_text() -> str:
    """The exact contents `data/traces.txt` must have."""
    return "\n\n".join(reasoning_traces(BUNDLED_TRACES, seed=BUNDLED_SEED)) + "\n"


def write_bundled_traces(path: str | Path | None = None) -> Path:
    path = Path(path) if path is not None else bundled_traces_path()
    path.write_text(bundled_trace_text(), encoding="utf-8")
    return path


# -- measuring variety ---------------------------------------------------------------------------
def duplicate_window_fraction(paragraphs: Sequence[str], n: int = 10) -> float:
    """Share of n-word windows that also occur in another paragraph: 0 for all-new text, near 1 for
    a template filled in again and again."""
    owners: Counter[tuple[str, ...]] = Counter()
    per_paragraph = []
    for text in paragraphs:
        words = text.split()
        windows = {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
        per_paragraph.append(windows)
        owners.update(windows)
    total = sum(len(w) for w in per_paragraph)
    shared = sum(1 for windows in per_paragraph for w in windows if owners[w] > 1)
    return shared / total if total else 0.0


if __name__ == "__main__":
    print(f"wrote {write_bundled_traces()}")
