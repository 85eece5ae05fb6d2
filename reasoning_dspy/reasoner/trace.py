"""Reasoning traces whose reflection computes: a quick answer per step, then, when the trace reflects,
a digit-level check that catches a wrong quick answer and fixes it.

Every chain-of-thought trace restates its instruction on its first line. The next token decides:
a reflecting trace says it will check (`REFLECTIVE_OPENERS`), a plain one goes straight to the first
step. Each step first quotes the sentence of the question that asks for it (when the problem
records its sources), so finding the next step is copying and not recall, and a distractor is never
quoted. Then it is written as a direct answer, `84 - 38 = 46.`, the quick route a small
model gets wrong at its own rate. A reflecting trace then works the step out digit by digit
(`scratchpad`), a different route to the same number, and compares: the same number is confirmed;
a different one is caught ("Wait, 46 + 15 is 61, not 51.") and the trace goes on with the
checked value. A plain trace carries a wrong quick answer into the steps after it.

In the training corpus a quick answer is sometimes written wrong on purpose (`plan_slips`), so the
check sees both outcomes. Those wrong digits are marked `untrained` (character spans the loss
skips): the model learns to catch a wrong quick answer, never to write one, so at test time the
only wrong quick answers are its own.

`reasoning_dspy.problems.steps.read_steps` parses a generated trace back into steps, for step
accuracy and catch counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from reasoning_dspy.problems.chains import MAX_VALUE, in_bounds
from reasoning_dspy.problems.steps import Step, WrittenStep
from reasoning_dspy.reasoner.scratchpad import scratchpad

#: The first line of every chain-of-thought trace: its instruction, restated.
ECHOES = ("Instruction: {instruction}", "Task: {instruction}", "The instruction says: {instruction}")
#: How a reflecting trace goes on after the restated instruction: a start, then an end. Six different
#: first words, so no single token carries the whole reflecting share.
REFLECTIVE_OPENERS = ("Hmm, ", "Wait, ", "Let me see: ", "Let me be careful: ", "Maybe ", "Perhaps ",
                      "But first, ", "Hmm. Wait, ")
OPENER_ENDS = ("I should check each step.", "I will verify every result.", "each step needs a check.",
               "I should go slowly here.", "I will recheck each number.", "every step gets checked.")
#: Introduces the digit-level check of a step; said before the check's outcome is known.
CHECKS = ("Let me check:", "Hmm, let me check:", "Let me verify:", "Let me redo it by digits:",
          "Checking it again, let me see:", "Let me work it out digit by digit:")
#: The check found the same number.
AGREES = ("It matches.", "That agrees.", "Same result, good.", "So {c} is right.", "Yes, {c}.")
#: The check found another number: `expr` is the step's left side, `c` the checked value.
CATCHES = ("Wait, {expr} is {c}, not {wrong}.", "Wait, that gives {c}, not {wrong}. So {expr} = {c}.",
           "Hmm, {wrong} was wrong: {expr} = {c}.", "But that is {c}, not {wrong}, so {expr} = {c}.",
           "Wait, {wrong} is a slip: {expr} = {c}.", "However, {expr} = {c}, not {wrong}.")
ENDINGS = ("The answer is {x}.", "So the answer is {x}.", "Final answer: {x}.")

@dataclass(frozen=True)
class Trace:
    """A written trace: its text, its steps, and character spans the loss must skip."""

    text: str
    steps: list[WrittenStep]
    untrained: list[tuple[int, int]]

    @property
    def answer(self) -> int:
        return self.steps[-1].value


def chain_of(problem_steps: list[str]) -> list[Step]:
    """The steps of a problem (`["33 * 8 = 264", ...]`) as `Step`s."""
    return [Step.parse(s) for s in problem_steps]


def plan_slips(chain: list[Step], stated: set[int], rate: float, rng: random.Random) -> dict[int, int]:
    """Which steps' quick answers are written wrong, and as what: each step with probability `rate`,
    where the wrong value is a plausible slip (a carry or borrow dropped, a digit off by one) that
    leaves every later step well defined, and where a later step's use of the result is unambiguous
    (the result equals no stated number and no other step's result)."""
    results = [s.c for s in chain]
    slips: dict[int, int] = {}
    for i, step in enumerate(chain):
        if rng.random() >= rate or step.c in stated or results.count(step.c) > 1:
            continue
        for _ in range(8):
            wrong = _slip_value(step, rng)
            if wrong is not None and propagate(chain, {**slips, i: wrong}) is not None:
                slips[i] = wrong
                break
    return slips


def _slip_value(step: Step, rng: random.Random) -> int | None:
    c = step.c
    deltas = {"+": (-10, -100, 1, -1, 10), "-": (10, 100, 1, -1, -10), "*": (10, -10, step.b, -step.b, 1, -1),
              "/": (1, -1, 10, -10, 2)}[step.op]
    wrong = c + rng.choice(deltas)
    return wrong if 0 <= wrong <= MAX_VALUE and wrong != c else None


def propagate(chain: list[Step], quick: dict[int, int]) -> list[Step] | None:
    """The steps a trace actually computes when step `i`'s result is written as `quick[i]` and never
    corrected: every later operand equal to that result is replaced. None when a replaced step falls
    outside the chains' bounds (a negative difference, an inexact division)."""
    replaced: dict[int, int] = {}
    out = []
    for i, step in enumerate(chain):
        a, b = replaced.get(step.a, step.a), replaced.get(step.b, step.b)
        if not in_bounds(a, step.op, b):
            return None
        new = Step(a, step.op, b)
        out.append(new)
        if i in quick:
            replaced[step.c] = quick[i]
        elif new.c != step.c:
            replaced[step.c] = new.c
    return out


def write_trace(chain: list[Step], *, instruction: str, reflects: bool, slips: dict[int, int],
                rng: random.Random, sources: list[str] | None = None) -> Trace:
    """The reasoning text for `chain`: restated instruction, (reflective opener,) one line a step.
    With `sources` (one sentence per step), a step line starts with its sentence, quoted once: the
    second step of a sentence (the total after `4 packs of 16`) goes on without it."""
    if sources and len(sources) != len(chain):
        raise ValueError(f"{len(sources)} sources for {len(chain)} steps; give one sentence per step")
    lines = [rng.choice(ECHOES).format(instruction=instruction)]
    if reflects:
        lines.append(rng.choice(REFLECTIVE_OPENERS) + rng.choice(OPENER_ENDS))
    computed = chain if reflects else propagate(chain, slips)
    assert computed is not None, "plan_slips keeps every propagated chain in bounds"
    written: list[WrittenStep] = []
    untrained: list[tuple[int, int]] = []
    offset = sum(len(line) + 1 for line in lines)
    for i, step in enumerate(computed):
        source = sources[i] if sources and (i == 0 or sources[i] != sources[i - 1]) else ""
        line, spans, step_written = write_step(step, slips.get(i, step.c), checks=reflects, rng=rng,
                                               source=source)
        untrained += [(offset + a, offset + b) for a, b in spans]
        written.append(step_written)
        lines.append(line)
        offset += len(line) + 1
    lines.append(rng.choice(ENDINGS).format(x=written[-1].value))
    return Trace("\n".join(lines), written, untrained)


def write_step(step: Step, quick: int, *, checks: bool, rng: random.Random, source: str = ""
               ) -> tuple[str, list[tuple[int, int]], WrittenStep]:
    """One line of a trace: the `source` sentence when given, `a op b = quick.`, then, when it
    `checks`, the digit-level check and its verdict. Returns the line, the character span of a wrong
    `quick` (untrained), and the step as written."""
    head = (f"{source} " if source else "") + f"{step.expr()} = "
    spans = [(len(head), len(head) + len(str(quick)))] if quick != step.c else []
    line = f"{head}{quick}."
    if not checks:
        return line, spans, WrittenStep(step, quick)
    line += f" {rng.choice(CHECKS)} {scratchpad(step.a, step.op, step.b)}. "
    if quick == step.c:
        line += rng.choice(AGREES).format(c=step.c)
    else:
        line += rng.choice(CATCHES).format(expr=step.expr(), c=step.c, wrong=quick)
    return line, spans, WrittenStep(step, quick, step.c)

