"""How well a model computes one arithmetic step, by kind of step and by route, few-shot and greedy.

Two routes per step: `direct` ("347 + 85 = " then the number) and `scratchpad` (the digit-level
working of `reasoning_dspy.reasoner.scratchpad`, read back at its `so <result>`). Measuring both on
the base model says which steps a small model can learn to compute, and in which format; measured
on a fine-tuned one it says whether it did.

    >>> from reasoning_dspy.models import load_model
    >>> probe_steps(load_model("smollm2"), n=48)["add 3+3"]   # {'direct': 0.02, 'scratchpad': ...}
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from reasoning_dspy.problems.steps import SYMBOL, final_value, result
from reasoning_dspy.reasoner.scratchpad import scratchpad

Draw = Callable[[random.Random], tuple[int, str, int]]


def _add(lo: int, hi: int) -> Draw:
    return lambda r: (r.randint(lo, hi), "+", r.randint(lo, hi))


def _sub(lo: int, hi: int) -> Draw:
    def draw(r: random.Random) -> tuple[int, str, int]:
        a, b = sorted((r.randint(lo, hi), r.randint(lo, hi)), reverse=True)
        return a, "-", b
    return draw


def _mul(lo: int, hi: int) -> Draw:
    def draw(r: random.Random) -> tuple[int, str, int]:
        b = r.randint(2, 9)
        return r.randint(lo, min(hi, 999 // b)), "*", b
    return draw


def _div(hi: int) -> Draw:
    def draw(r: random.Random) -> tuple[int, str, int]:
        b = r.randint(2, 9)
        return b * r.randint(2, hi // b), "/", b
    return draw


#: Kinds of step a scratchpad works, each drawn uniformly within its bounds (the chains use the
#: two-digit ones; the three-digit ones show how accuracy falls with width).
KINDS: dict[str, Draw] = {
    "add 2+2": _add(10, 99), "add 3+3": _add(100, 499), "sub 2-2": _sub(10, 99), "sub 3-3": _sub(100, 999),
    "mul 2x1": _mul(10, 99), "mul 3x1": _mul(100, 499), "div 2/1": _div(99), "div 3/1": _div(999),
}
ROUTES = ("direct", "scratchpad")


def step_text(a: int, op: str, b: int, route: str, with_answer: bool = True) -> str:
    """One worked example (or, without the answer, the prompt line) in `route`'s format."""
    head = f"{a} {SYMBOL[op]} {b}"
    if route == "direct":
        return f"{head} = {result(a, op, b)}" if with_answer else f"{head} ="
    return f"{head}: {scratchpad(a, op, b)}" if with_answer else f"{head}:"


def read_answer(completion: str, route: str) -> int | None:
    """The model's value for the step: the first number of a direct answer, or the scratchpad's."""
    line = completion.split("\n", 1)[0]
    if route == "scratchpad":
        return final_value(line)
    m = re.search(r"\d+", line)
    return int(m.group()) if m else None


def check_kinds(kinds: tuple[str, ...] | list[str]) -> None:
    """Refuse step kinds `KINDS` does not have, naming the ones it does (cheap: callers check before
    loading a model)."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown step kinds {unknown}; choose from {', '.join(KINDS)}")


def probe_steps(loaded: Any, n: int = 48, shots: int = 3, seed: int = 0, batch_size: int = 24,
                kinds: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    """Accuracy per kind and route over `n` steps each, `shots` worked examples of the same kind
    before each (drawn apart from the tested steps), greedy."""
    from reasoning_dspy.engine.generate import GenRow, generate_rows

    if n < 1 or shots < 0:
        raise ValueError(f"n must be >= 1 and shots >= 0, got n={n}, shots={shots}")
    check_kinds(kinds or ())
    out: dict[str, dict[str, float]] = {}
    tok = loaded.tokenizer
    for kind in kinds or tuple(KINDS):
        rng = random.Random(f"step-probe:{seed}:{kind}")
        tests = [KINDS[kind](rng) for _ in range(n)]
        demos = [[KINDS[kind](rng) for _ in range(shots)] for _ in range(n)]
        out[kind] = {}
        for route in ROUTES:
            prompts = ["\n".join([step_text(*d, route) for d in demo] + [step_text(*t, route, False)])
                       for t, demo in zip(tests, demos, strict=True)]
            max_new = 8 if route == "direct" else 96
            right = 0
            for i in range(0, n, batch_size):
                rows = [GenRow(tok(p, add_special_tokens=False)["input_ids"], max_new_tokens=max_new, stop=("\n",))
                        for p in prompts[i:i + batch_size]]
                for t, res in zip(tests[i:i + batch_size], generate_rows(loaded.model, tok, rows), strict=True):
                    right += read_answer(res.text, route) == result(*t)
            out[kind][route] = right / n
    return out
