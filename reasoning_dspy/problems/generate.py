"""Draw word problems for a split, deterministically, and hand them to DSPy as examples.

Splits are disjoint by construction: a question belongs to the split chosen by a hash of its text,
and each split only keeps its own questions. So no test question can leak into training, whatever
the seeds, and a list is a pure function of its arguments (each split has its own `random.Random`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from typing import Any

from reasoning_dspy.problems.base import SPLITS, Draft, Problem, ProblemError, Retry, plain
from reasoning_dspy.problems.families import FAMILIES, KINDS

_MAX_DRAWS = 500  # per problem; a family/level with room for far fewer distinct questions is a bug


def split_of(question: str) -> str:
    """The split a question text belongs to (a stable hash, so splits never share a question)."""
    digest = hashlib.sha256(question.encode("utf-8")).digest()
    return SPLITS[int.from_bytes(digest[:8], "big") % len(SPLITS)]


def make_problems(
    n: int,
    split: str = "train",
    seed: int = 0,
    families: Iterable[str] | None = None,
    difficulty: int | Sequence[int] | None = None,
) -> list[Problem]:
    """`n` distinct word problems of `split`, cycling through `families` and `difficulty` levels (1-3).

    >>> [p.family for p in make_problems(3, seed=1)]
    ['arithmetic', 'rates', 'comparison']
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ProblemError(f"n must be a number of problems (an int >= 0), got {n!r}")
    if split not in SPLITS:
        raise ProblemError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ProblemError(f"seed must be an int, got {seed!r}")
    fams = _families(families)
    levels = _levels(difficulty)
    rng = random.Random(f"reasoning-dspy-problems:{seed}:{split}")
    out: list[Problem] = []
    seen: set[str] = set()
    for i in range(n):
        family = fams[i % len(fams)]
        level = levels[(i // len(fams)) % len(levels)]
        kinds = [k for k, (lv, _) in KINDS[family].items() if level in lv]
        for _ in range(_MAX_DRAWS):
            problem = _draw(rng, split, family, rng.choice(kinds), level)
            if problem is not None and problem.question not in seen:
                break
        else:
            raise ProblemError(f"could not draw {n} distinct {family!r} problems of difficulty {level} "
                               f"for split {split!r}; ask for fewer")
        seen.add(problem.question)
        out.append(problem)
    return out


def _draw(rng: random.Random, split: str, family: str, kind: str, level: int) -> Problem | None:
    draft = Draft(rng, level)
    try:
        question, answer = KINDS[family][kind][1](draft)
    except Retry:
        return None
    if split_of(question) != split:
        return None
    digest = hashlib.sha256(question.encode("utf-8")).hexdigest()[:12]
    return Problem(id=f"{split}-{digest}", question=question, answer=plain(answer), family=family, kind=kind,
                   difficulty=level, quantities=draft.quantities, steps=draft.steps,
                   sources=draft.sources)


def _families(families: Iterable[str] | None) -> list[str]:
    if families is None:
        return list(FAMILIES)
    if isinstance(families, str):
        families = [families]
    fams = list(dict.fromkeys(families))
    unknown = [f for f in fams if f not in KINDS]
    if unknown or not fams:
        raise ProblemError(f"unknown problem families {unknown or fams}; choose from {', '.join(KINDS)}")
    return fams


def _levels(difficulty: int | Sequence[int] | None) -> list[int]:
    levels = [1, 2, 3] if difficulty is None else [difficulty] if isinstance(difficulty, int) else list(difficulty)
    if not levels or any(isinstance(v, bool) or v not in (1, 2, 3) for v in levels):
        raise ProblemError(f"difficulty must be 1, 2 or 3 (or a list of them), got {difficulty!r}")
    return list(dict.fromkeys(levels))


def as_dspy_examples(problems: Iterable[Problem]) -> list[Any]:
    """`dspy.Example(question=..., answer="42").with_inputs("question")` per problem, ready for
    `dspy.Evaluate` and the optimizers (the answer is a string, as an LM writes it)."""
    import dspy

    from reasoning_dspy.problems.answers import format_answer

    return [dspy.Example(question=p.question, answer=format_answer(p.answer)).with_inputs("question")
            for p in problems]
