"""Worked solutions with a planted slip: which step goes wrong, how the error travels, and the text.

A slip changes one step's result. Left alone, every later step that uses that result is recomputed
with the wrong value (exact `Fraction` arithmetic), so the trace stays internally consistent and only
its answer is wrong, as a real careless solver's would be. A reflection right after the slip catches
it, and the trace goes on with the right value.

Steps record numbers, not which earlier result they use, so uses are found by value. A step may slip
only where that is unambiguous: its result equals no number the question states, no constant the
families write (100 for percent, 60 for minutes, ...) and no other step's result. The last step can
always slip, so every problem can carry one.

Traces that do not reflect contain no word of the official reasoning vocabulary (`features.vocab`);
traces that reflect contain at least one, in varied wording and places.

Every chain-of-thought trace starts by restating its instruction (`ECHOES`); a reflecting trace then
says so in its next sentence (`REFLECTIVE_OPENERS`) and checks most steps. The decision to reflect is
thereby made once, right after the instruction it depends on. Read from the system prompt far above,
the instruction did not steer that decision in a 135M model after 2,400 training examples; copied
into the trace, it sits a few tokens before the decision, where a small model conditions on it
easily. Greedy decoding then reflects exactly when P(reflect | instruction) wins that one token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from fractions import Fraction

from reasoning_dspy.problems.base import Problem, fmt, is_plain_decimal
from reasoning_dspy.problems.phrasing import (
    CLOSERS,
    ENDINGS,
    INVERSE,
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

# Numbers the problem families write into steps without the question stating them.
_CONSTANTS = frozenset(Fraction(v) for v in (1, 2, 4, 8, 12, 60, 100, 1000))
_MAX_DRAWS = 24  # slip draws before falling back to the last step plus one
_VERIFY_RATE = 0.6  # per step, in a reflecting trace: once a trace reflects, it keeps checking
_PLAN_RATE = 0.35
_CLOSER_RATE = 0.4

_EXPR = {"*": "{a} × {b}", "+": "{a} + {b}", "-": "{a} − {b}", "/": "{a} ÷ {b}",
         "mod": "the remainder of {a} ÷ {b}", "ceildiv": "{a} ÷ {b} rounded up"}
#: The first line of every chain-of-thought trace: its instruction, restated.
ECHOES = ("Instruction: {instruction}", "Task: {instruction}", "The instruction says: {instruction}")

#: How a reflecting trace goes on: one of these starts, then one of `_OPENER_ENDS`. The starts begin
#: with six different words, so no single first token carries the whole reflecting share, and every
#: opener is under ten words, so the text around it stays varied.
REFLECTIVE_OPENERS = ("Hmm, ", "Wait, ", "Let me see: ", "Let me be careful: ", "Maybe ", "Perhaps ",
                      "But first, ", "Hmm. Wait, ")
_OPENER_ENDS = ("I should check each step.", "I will verify every result.", "each step needs a check.",
                "I should go slowly here.", "this needs a careful look.", "I will recheck each number.",
                "every step gets checked.")
# Plans with no reasoning word, for traces that do not reflect.
_PLAIN_PLANS = PLANS[:2] + ("Numbers given: {nums}.", "Asked: {what}?", "This takes a few steps.")
# Checks that are true whether or not the trace slipped (no made-up wrong value, no "I slipped").
_VERIFY = tuple(r for r in REFLECT if "{wrong}" not in r[1] and "slipped" not in r[1])
# Catching a slip: (starts a new line?, template). Fields: expr (the step's left side), c (right
# value), wrong (what was written), inv (a backwards check), what (what is asked).
_CATCH: tuple[tuple[bool, str], ...] = (
    (True, "Wait, {expr} is {c}, not {wrong}."),
    (False, "Wait — no. {expr} = {c}; I wrote {wrong} by mistake."),
    (False, "That is {wrong}... wait, no: {expr} makes {c}."),
    (True, "wait, {c}, not {wrong}: {inv}."),
    (False, "(wait, no: {c}, not {wrong})"),
    (True, "Hmm, {wrong} looks off. Redoing it: {expr} = {c}."),
    (False, "Hmm, that is not right: {expr} gives {c}, not {wrong}."),
    (False, "So {wrong}, hmm, no. Checking backwards, {inv}, so {c}."),
    (True, "hmm. {wrong}? No: {expr} is {c}."),
    (True, "But {wrong} cannot be right. {expr} is {c}."),
    (True, "But wait, checking backwards: {inv}. So {c}, not {wrong}."),
    (True, "Let me check that: {inv}. So the value is {c}, not {wrong}."),
    (False, "Let me redo that one: {expr} = {c}. The {wrong} was a slip."),
    (False, "Before going on, let me verify: {inv}, so it is {c}."),
    (True, "let me see, {expr}... {c}, not {wrong}."),
    (True, "Maybe I rushed that. {expr} is actually {c}."),
    (False, "({wrong}? maybe not: {expr} = {c}.)"),
    (False, "I would keep {wrong}, but maybe I should check: {inv}. So {c}."),
    (True, "Perhaps I slipped there; {inv}, so it is {c}."),
    (False, "That was, perhaps, too quick: {expr} makes {c}, not {wrong}."),
    (True, "However, {expr} is {c}, so {wrong} was wrong."),
    (False, "I wrote {wrong}; however, {expr} = {c}."),
    (True, "Alternatively, run it backwards: {inv}. So {c}, not {wrong}."),
    (False, "Checked alternatively, {inv}, so the value is {c} and not {wrong}."),
    (True, "Another look: {expr} = {c}, so {wrong} was a slip."),
    (False, "{wrong} does not check out ({inv}); therefore the value is {c}."),
)


@dataclass(frozen=True)
class Step:
    """One binary operation `a op b = c`, exact."""

    a: Fraction
    op: str
    b: Fraction
    c: Fraction

    @classmethod
    def parse(cls, text: str) -> Step:
        a, op, b, c = parts(text)
        return cls(Fraction(a), op, Fraction(b), Fraction(c))

    def __str__(self) -> str:
        return f"{num(self.a)} {self.op} {num(self.b)} = {num(self.c)}"


@dataclass(frozen=True)
class Slip:
    """Step `index` was first written with result `wrong`; `propagated` is the chain left uncorrected."""

    index: int
    wrong: Fraction
    propagated: list[Step]


def num(x: Fraction) -> str:
    """A number as steps write it: `fmt` without thousands commas."""
    return fmt(x).replace(",", "")


def apply(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    """`a op b` exactly, or None where the operation makes no sense (division by zero, a remainder of
    a non-whole number)."""
    if op in ("mod", "ceildiv"):
        if a.denominator != 1 or b.denominator != 1 or a < 0 or b <= 0:
            return None
        return Fraction(a.numerator % b.numerator) if op == "mod" else Fraction(-(-a.numerator // b.numerator))
    if op == "/":
        return a / b if b else None
    return {"+": a + b, "-": a - b, "*": a * b}.get(op)


def stated_numbers(problem: Problem) -> set[Fraction]:
    """The numbers the question states, exact."""
    return {Fraction(v).limit_denominator(10_000) for v in problem.quantities.values()}


def plan_slip(steps: list[Step], stated: set[Fraction], rng: random.Random) -> Slip:
    """Draw a slip whose propagation is unambiguous, sensible and changes the final answer."""
    last = len(steps) - 1
    uses = _uses(steps)
    clean = _clean_steps(steps, stated, uses)
    candidates = sorted(clean | {last})
    for _ in range(_MAX_DRAWS):
        index = rng.choice(candidates)
        wrong = rng.choice(_wrong_values(steps[index]))
        chain = _propagate(steps, index, wrong, uses, clean)
        if chain is not None:
            return Slip(index, wrong, chain)
    wrong = steps[last].c + 1  # always valid: only the answer changes, by one
    return Slip(last, wrong, steps[:last] + [replace(steps[last], c=wrong)])


def _uses(steps: list[Step]) -> dict[tuple[int, str], int]:
    """(step, 'a' or 'b') -> the latest earlier step whose result equals that operand."""
    uses = {}
    for j, step in enumerate(steps):
        for side in ("a", "b"):
            earlier = [k for k in range(j) if steps[k].c == getattr(step, side)]
            if earlier:
                uses[(j, side)] = earlier[-1]
    return uses


def _clean_steps(steps: list[Step], stated: set[Fraction], uses: dict[tuple[int, str], int]) -> set[int]:
    """Steps whose result can only be read downstream as that result."""
    unexplained = {getattr(s, side) for j, s in enumerate(steps) for side in ("a", "b")
                   if (j, side) not in uses and getattr(s, side) not in stated}
    reserved = stated | _CONSTANTS | unexplained
    results = [s.c for s in steps]
    return {i for i, s in enumerate(steps) if s.c not in reserved and results.count(s.c) == 1}


def _wrong_values(step: Step) -> list[Fraction]:
    """Plausible careless results: off by one or ten, one group too many or few, a dropped round-up,
    a misplaced decimal point."""
    c = step.c
    if c.denominator == 1:
        options = [c + 1, c - 1, c + 10, c - 10, c + 2]
        if step.op == "*":
            options += [c + step.a, c - step.a]
        if step.op == "ceildiv":
            options.append(c - 1)
        return options
    return [c * 10, c / 10, c + 1, c - 1]


def _places(x: Fraction) -> int:
    return next((p for p in range(5) if is_plain_decimal(x, p)), 99)


def _sensible(new: Fraction, old: Fraction) -> bool:
    """Non-negative and written like the value it replaces (a decimal stays a short decimal)."""
    if new < 0:
        return False
    return is_plain_decimal(new, 4) or (not is_plain_decimal(old, 4) and new.denominator <= 1000)


def _propagate(steps: list[Step], index: int, wrong: Fraction, uses: dict[tuple[int, str], int],
               clean: set[int]) -> list[Step] | None:
    last = len(steps) - 1
    old = steps[index].c
    if wrong == old or not _sensible(wrong, old) or _places(wrong) > max(2, _places(old)):
        return None
    values = {index: wrong}
    chain = steps[:index] + [replace(steps[index], c=wrong)]
    for j in range(index + 1, len(steps)):
        step = steps[j]
        a = values.get(uses.get((j, "a"), -1), step.a)
        b = values.get(uses.get((j, "b"), -1), step.b)
        if (a, b) == (step.a, step.b):
            chain.append(step)
            continue
        c = apply(a, step.op, b)
        if c is None or not _sensible(c, step.c) or (j != last and j not in clean):
            return None
        values[j] = c
        chain.append(Step(a, step.op, b, c))
    final, right = chain[-1].c, steps[-1].c
    if final == right or _places(final) > max(2, _places(right)):
        return None
    return chain


# -- the text ------------------------------------------------------------------------------------
def write_reasoning(problem: Problem, chain: list[Step], reflects: bool, rng: random.Random,
                    caught: Slip | None = None, instruction: str | None = None) -> str:
    """The reasoning text of a chain-of-thought trace that works through `chain` and ends on its
    answer, after restating `instruction` when one is given. With `caught`, step `caught.index` is
    first written wrong and a reflection fixes it."""
    asked = what(problem.question)
    opener = rng.choice(ECHOES).format(instruction=instruction) + "\n" if instruction else ""
    if reflects:
        opener += rng.choice(REFLECTIVE_OPENERS) + rng.choice(_OPENER_ENDS) + "\n"
    body: list[str] = []
    if rng.random() < _PLAN_RATE:
        nums = ", ".join(fmt(x) for x in sorted(stated_numbers(problem)))
        plan = rng.choice(PLANS if reflects else _PLAIN_PLANS)
        body.append(plan.format(what=asked, What=asked[0].upper() + asked[1:], nums=nums))
    verify = set()
    if reflects:
        verify = {k for k in range(len(chain)) if rng.random() < _VERIFY_RATE}
        if caught is None and not verify:
            verify = {rng.randrange(len(chain))}
    for k, step in enumerate(chain):
        a, b, c = num(step.a), num(step.b), num(step.c)
        shown = num(caught.wrong) if caught is not None and k == caught.index else c
        sentence = rng.choice(OPENERS if k == 0 else LINKS) + rng.choice(OPS[step.op]).format(a=a, b=b, c=shown)
        body.append(sentence[0].upper() + sentence[1:] + ".")
        if shown != c:
            _add(body, _reflection(_CATCH, step, a, b, c, asked, rng, wrong=shown))
        elif k in verify:
            _add(body, _reflection(_VERIFY, step, a, b, c, asked, rng))
    answer = fmt(chain[-1].c).replace(",", "")
    ending = rng.choice(CLOSERS if reflects and rng.random() < _CLOSER_RATE else ENDINGS).format(x=answer)
    text = " ".join(body).replace(" \n", "\n").lstrip("\n")
    return opener + wrap(text, rng) + "\n" + ending


def _reflection(pool: tuple[tuple[bool, str], ...], step: Step, a: str, b: str, c: str, asked: str,
                rng: random.Random, wrong: str = "") -> tuple[bool, str]:
    if step.op not in INVERSE:  # no backwards check for mod and ceildiv
        pool = tuple(r for r in pool if "{inv}" not in r[1])
    new_line, template = rng.choice(pool)
    return new_line, template.format(
        a=a, b=b, c=c, x=c, wrong=wrong, what=asked, expr=_EXPR[step.op].format(a=a, b=b),
        inv=inverse(a, step.op, b, c), size=rng.choice(SIZES), wait=rng.choice(("wait", "hmm", "let me see")))


def _add(body: list[str], reflection: tuple[bool, str]) -> None:
    new_line, text = reflection
    if new_line:
        body.append("\n" + text)
    else:
        body[-1] += " " + text
