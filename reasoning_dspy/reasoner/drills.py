"""Arithmetic drills: single steps answered and checked digit by digit, with no story around them.

A word-problem example spends most of its ≈ 450 tokens on DSPy's prompt and the story; its
reasoning checks one to four steps, and only when the trace reflects. A drill spends its tokens on
the checks themselves: the user lists a few steps, and the answer is one trace line per step, written
exactly as a reflecting trace writes it (`trace.write_step`: a quick answer, `Let me check:`, the
scratchpad, the verdict). Mixed into the corpus, drills give the digit-level facts several times the
practice per CPU second, in the very text the word problems use. Quick answers are written wrong at
`slip_rate`, and those wrong digits carry no loss, as in the word problems.

    >>> messages, untrained, written = write_drill([Step(13, "+", 76)], 0.0, random.Random(0))
    >>> messages[-1]["content"]  # doctest: +ELLIPSIS
    '13 + 76 = 89. ... 13 + 76: ones 3+6=9, write 9; tens 1+7=8, write 8; so 89. ...'

A fact sheet goes one level lower: single scratchpad columns (`7+5=12, write 2 carry 1`,
`4-8, borrow: 14-8=6`), drawn uniformly over every column the scratchpads can write rather than at
their natural rates (where `0+0=0` is the commonest). Only what a column computes carries loss; the
digits it is given do not, since nothing could predict them.

`corpus.make_corpus` mixes `CorpusConfig.drills` drills and `CorpusConfig.fact_sheets` sheets into
the corpus.
"""

from __future__ import annotations

import random
import re

from reasoning_dspy.problems.chains import MAX_VALUE
from reasoning_dspy.problems.steps import Step, WrittenStep
from reasoning_dspy.reasoner.scratchpad import add_column, divide_column, multiply_column, subtract_column
from reasoning_dspy.reasoner.trace import plan_slips, write_step

#: What the user asks of a drill, one step a line after it.
ASKS = ("Work out each step, then check it digit by digit:", "Compute and check:",
        "Solve each one and verify it:", "Check these steps:")


def drill_step(rng: random.Random) -> Step:
    """A step within the chains' bounds (`problems.chains.in_bounds`), every operator and operand
    size about equally often, one-digit operands included (they are padded, the commonest slip)."""
    widest = len(str(MAX_VALUE))

    def number(digits: int) -> int:
        return rng.randint(1 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)

    def size() -> int:
        return rng.choice((1, *[d for d in range(2, widest + 1) for _ in range(2)]))

    op = rng.choice("+-*/")
    if op == "+":
        while True:
            a, b = number(size()), number(size())
            if a + b <= MAX_VALUE:
                return Step(a, "+", b)
    if op == "-":
        a = number(rng.choice(range(2, widest + 1)))
        b = min(number(size()), a)
        return Step(a, "-", b)
    if op == "*":
        small = rng.randint(2, 9)
        big = rng.randint(10, MAX_VALUE // small)
        return Step(big, "*", small) if rng.random() < 0.7 else Step(small, "*", big)
    divisor = rng.randint(2, 9)
    return Step(divisor * rng.randint(2, MAX_VALUE // divisor), "/", divisor)


def write_drill(steps: list[Step], slip_rate: float, rng: random.Random
                ) -> tuple[list[dict[str, str]], list[tuple[int, int]], list[WrittenStep]]:
    """The chat messages of one drill, the untrained character spans of its answer, and each step with
    its quick answer and check as written."""
    lines, untrained, steps_written = [], [], []
    offset = 0
    for step in steps:
        slip = plan_slips([step], {step.a, step.b}, slip_rate, rng)
        line, spans, written = write_step(step, slip.get(0, step.c), checks=True, rng=rng)
        untrained += [(offset + a, offset + b) for a, b in spans]
        steps_written.append(written)
        lines.append(line)
        offset += len(line) + 1
    ask = rng.choice(ASKS) + "\n" + "\n".join(s.expr() for s in steps)
    messages = [{"role": "user", "content": ask}, {"role": "assistant", "content": "\n".join(lines)}]
    return messages, untrained, steps_written


#: What the user asks of a fact sheet.
SHEET_ASKS = ("Single-digit columns:", "Work these columns:", "Column facts:")
_GIVEN_END = re.compile(r"=|, borrow")
_GIVEN_CARRY = re.compile(r", \+\d+")


def fact_column(rng: random.Random) -> tuple[str, list[tuple[int, int]]]:
    """One scratchpad column, each kind (add, subtract, multiply, divide) equally often and its inputs
    uniform, and the character spans of what it is given (its operands, and a multiplication's carry)."""
    kind = rng.randrange(4)
    if kind == 0:
        text = add_column(rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 1))
    elif kind == 1:
        text = subtract_column(rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 1))
    elif kind == 2:
        b = rng.randint(2, 9)
        text = multiply_column(rng.randint(0, 9), b, rng.randint(0, b - 1), last=rng.random() < 0.25)
    else:
        b = rng.randint(2, 9)
        text = divide_column(rng.randint(0, 10 * b - 1), b)
    given = [(0, _GIVEN_END.search(text).start())]
    given += [(m.start() + 3, m.end()) for m in _GIVEN_CARRY.finditer(text)]  # the digits after ", +"
    return text, given


def write_fact_sheet(columns: int, rng: random.Random) -> tuple[list[dict[str, str]], list[tuple[int, int]]]:
    """The chat messages of one fact sheet of `columns` columns, and the untrained character spans of
    its answer (every column's given digits)."""
    parts, untrained, offset = [], [], 0
    for _ in range(columns):
        text, given = fact_column(rng)
        untrained += [(offset + a, offset + b) for a, b in given]
        parts.append(text)
        offset += len(text) + 2
    messages = [{"role": "user", "content": rng.choice(SHEET_ASKS)},
                {"role": "assistant", "content": "; ".join(parts)}]
    return messages, untrained
