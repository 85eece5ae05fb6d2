"""Arithmetic drills: single steps answered and checked digit by digit, with no story around them.

A word-problem example spends most of its ≈ 450 tokens on DSPy's prompt and the story; its
reasoning checks one to four steps, and only when the trace reflects. A drill spends its tokens on
the checks themselves: the user lists a few steps, and the answer is one trace line per step, written
exactly as a reflecting trace writes it (`trace.write_step`: a quick answer, `Let me check:`, the
scratchpad, the verdict). Mixed into the corpus, drills give the digit-level facts several times the
practice per CPU second, in the very text the word problems use. Quick answers are written wrong at
`slip_rate`, and those wrong digits carry no loss, as in the word problems.

    >>> messages, untrained, quick = write_drill([Step(413, "+", 76)], 0.0, random.Random(0))
    >>> messages[-1]["content"]  # doctest: +ELLIPSIS
    '413 + 76 = 489. ... 413 + 076: ones 3+6=9, write 9; tens 1+7=8, write 8; hundreds 4+0=4, write 4; so 489. ...'

`corpus.make_corpus` mixes `CorpusConfig.drills` of them into the corpus.
"""

from __future__ import annotations

import random

from reasoning_dspy.reasoner.trace import Step, plan_slips, write_step

#: What the user asks of a drill, one step a line after it.
ASKS = ("Work out each step, then check it digit by digit:", "Compute and check:",
        "Solve each one and verify it:", "Check these steps:")


def drill_step(rng: random.Random) -> Step:
    """A step within the chains' bounds (`problems.chains.in_bounds`), every operator and operand
    size about equally often, one-digit operands included (they are padded, the commonest slip)."""
    def number(digits: int) -> int:
        return rng.randint(1 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)

    op = rng.choice("+-*/")
    if op == "+":
        while True:
            a, b = number(rng.choice((1, 2, 2, 3, 3))), number(rng.choice((1, 2, 2, 3, 3)))
            if a + b <= 999:
                return Step(a, "+", b)
    if op == "-":
        a = number(rng.choice((2, 3, 3)))
        b = min(number(rng.choice((1, 2, 2, 3))), a)
        return Step(a, "-", b)
    if op == "*":
        small = rng.randint(2, 9)
        big = rng.randint(10, 999 // small)
        return Step(big, "*", small) if rng.random() < 0.7 else Step(small, "*", big)
    divisor = rng.randint(2, 9)
    return Step(divisor * rng.randint(2, 999 // divisor), "/", divisor)


def write_drill(steps: list[Step], slip_rate: float, rng: random.Random
                ) -> tuple[list[dict[str, str]], list[tuple[int, int]], list[tuple[Step, int]]]:
    """The chat messages of one drill, the untrained character spans of its answer, and each step with
    its quick answer as written."""
    lines, untrained, quick = [], [], []
    offset = 0
    for step in steps:
        slip = plan_slips([step], {step.a, step.b}, slip_rate, rng)
        line, spans, written = write_step(step, slip.get(0, step.c), checks=True, rng=rng)
        untrained += [(offset + a, offset + b) for a, b in spans]
        quick.append((step, written.quick))
        lines.append(line)
        offset += len(line) + 1
    ask = rng.choice(ASKS) + "\n" + "\n".join(s.expr() for s in steps)
    messages = [{"role": "user", "content": ask}, {"role": "assistant", "content": "\n".join(lines)}]
    return messages, untrained, quick
