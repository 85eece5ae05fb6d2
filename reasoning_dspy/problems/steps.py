"""The arithmetic steps of a chain problem, and how to read them back out of a generated trace.

A reasoning trace writes each step on its own line as a quick answer, `84 - 38 = 46.`, and, when it
checks, goes on with a digit-level working that ends `so <value>`:

    84 - 38 = 48. Let me check: 84 - 38: ones 4-8, borrow: 14-8=6; tens 8-1-3=4; so 46. Wait, ...

`read_steps` turns such text into `WrittenStep`s and `step_measures` counts what they did against
exact arithmetic: steps right, quick answers right, checks that caught a wrong quick answer and
fixed it, checks that broke a right one. Reading lives here, below the program and the study, so
every layer that looks at traces (the reasoner's evaluation, the study's report, the demo) counts
steps the same way; writing traces is the reasoner recipe's job (`reasoning_dspy.reasoner.trace`).

    >>> step_measures("12 × 3 = 38. Let me check: 12 × 3: ones 2×3=6, write 6; tens 1×3=3; so 36.")
    {'steps': 1, 'steps_right': 1, 'quick_right': 0, 'checked': 1, 'checked_right': 1, 'fixed': 1, 'broke': 0}
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: How a step's operator is written in traces (`*` as `×`).
SYMBOL = {"+": "+", "-": "-", "*": "×", "/": "/"}
_OPS = {sym: op for op, sym in SYMBOL.items()}

# A step line: an optional quoted sentence (ending ". " or "? "), then `a op b = q.`; one per line.
_STEP = re.compile(r"^(?:[^\n]*?[.?] )?(\d+) ([+\-×/]) (\d+) = (\d+)\.", re.MULTILINE)

#: The counts `step_measures` returns, in order.
STEP_COUNTS = ("steps", "steps_right", "quick_right", "checked", "checked_right", "fixed", "broke")


class StepError(ValueError):
    """A step with no exact integer result (an unknown operator, an inexact division)."""


def result(a: int, op: str, b: int) -> int:
    """The exact result of a step (`/` must divide exactly)."""
    if op not in SYMBOL:
        raise StepError(f"unknown operator {op!r}; use one of + - * /")
    if op == "/" and (b == 0 or a % b):
        raise StepError(f"{a} / {b} does not divide exactly")
    return {"+": a + b, "-": a - b, "*": a * b, "/": a // (b or 1)}[op]


def final_value(text: str) -> int | None:
    """The result a digit-level working ends on (`...; so 432`), or None."""
    found = re.findall(r"(?:^|; )so (\d+)", text)
    return int(found[-1]) if found else None


@dataclass(frozen=True)
class Step:
    """One step of a chain: `a op b`, exact."""

    a: int
    op: str
    b: int

    @property
    def c(self) -> int:
        return result(self.a, self.op, self.b)

    @classmethod
    def parse(cls, text: str) -> Step:
        """`Step.parse("12 * 3 = 36")`, the form `Problem.steps` records."""
        a, op, b, _, _ = text.split()
        return cls(int(a), op, int(b))

    def expr(self) -> str:
        return f"{self.a} {SYMBOL[self.op]} {self.b}"


@dataclass(frozen=True)
class WrittenStep:
    """A step as a trace writes it: the quick answer, and the check's value when it was checked."""

    step: Step
    quick: int
    checked: int | None = None

    @property
    def value(self) -> int:
        """What the trace goes on with: the checked value when there is one, else the quick answer."""
        return self.quick if self.checked is None else self.checked

    @property
    def caught(self) -> bool:
        return self.checked is not None and self.checked != self.quick


def read_steps(text: str) -> list[WrittenStep]:
    """The steps a generated trace wrote, one per line that starts `a op b = q.` (after the quoted
    sentence, if any): the quick answer `q`, and the value its digit-level check reached, when the
    line has one."""
    out = []
    for m in _STEP.finditer(text):
        a, sym, b, quick = m.groups()
        end = text.find("\n", m.end())
        rest = text[m.end():] if end < 0 else text[m.end():end]
        out.append(WrittenStep(Step(int(a), _OPS[sym], int(b)), int(quick), final_value(rest)))
    return out


def step_measures(trace: str) -> dict[str, int]:
    """What one trace's steps did (`read_steps`): how many it wrote, how many it went on with a right
    value, how many quick answers were right, how many it checked, how many checks caught a wrong
    quick answer and fixed it, how many checks reached the right value, and how many checks turned a
    right quick answer wrong. Each step is judged on the operands it wrote, so a step that carries an
    earlier mistake forward can still be computed right."""
    counts = dict.fromkeys(STEP_COUNTS, 0)
    for w in read_steps(trace):
        try:
            exact = w.step.c
        except StepError:  # an inexact division: no value is right
            exact = None
        counts["steps"] += 1
        counts["steps_right"] += w.value == exact
        counts["quick_right"] += w.quick == exact
        if w.checked is not None:
            counts["checked"] += 1
            counts["checked_right"] += w.checked == exact
            counts["fixed"] += w.quick != exact and w.checked == exact
            counts["broke"] += w.quick == exact and w.checked != exact
    return counts
