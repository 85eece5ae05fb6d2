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
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from importlib import resources
from pathlib import Path

from reasoning_dspy.problems.answers import format_answer
from reasoning_dspy.problems.base import Problem, fmt
from reasoning_dspy.problems.generate import make_problems

BUNDLED_TRACES = 200  # traces in data/traces.txt
BUNDLED_SEED = 0
_STEP = re.compile(r"^(?P<a>\S+) (?P<op>\S+) (?P<b>\S+) = (?P<c>\S+)$")

_OPS = {
    "*": ("{a} × {b} = {c}", "{a} times {b} is {c}", "multiplying {a} by {b} gives {c}", "{a} * {b} = {c}",
          "{b} lots of {a} make {c}"),
    "+": ("{a} + {b} = {c}", "adding {b} to {a} gives {c}", "{a} plus {b} makes {c}", "together that is {c} ({a} + {b})"),
    "-": ("{a} − {b} = {c}", "taking {b} away from {a} leaves {c}", "{a} minus {b} is {c}", "{c} remain once {b} go from {a}"),
    "/": ("{a} ÷ {b} = {c}", "{a} divided by {b} is {c}", "{a} shared into {b} equal parts is {c} each",
          "{a}/{b} = {c}"),
    "mod": ("{a} ÷ {b} leaves a remainder of {c}", "{b} goes into {a} with {c} left over"),
    "ceildiv": ("{a} ÷ {b}, rounded up, is {c}", "{a} over {b} is not whole, so I round up to {c}"),
}
_INVERSE = {"*": ("{c} ÷ {b} = {a}", "/"), "+": ("{c} − {b} = {a}", "-"), "-": ("{c} + {b} = {a}", "+"),
            "/": ("{c} × {b} = {a}", "*")}
_OPENERS = ("First, ", "To start, ", "", "Step one: ", "Okay, so ", "I begin with this: ")
_LINKS = ("Then ", "Next, ", "After that, ", "Now ", "So ", "", "From there, ", "And ")
_HEADERS = ("Q: {q}", "Problem: {q}", "Question: {q}", "{q}", "{q}", "Task: {q}")
_PLANS = ("The question asks: {what}?", "Given: {nums}. Asked: {what}?", "Let me list the numbers first: {nums}.",
          "Okay. {What}? Several steps, I think.", "Let me think about what is given: {nums}.",
          "Maybe the quickest route is one quantity at a time.", "Two things matter: the numbers {nums}, and "
          "what is asked.", "Hmm, {nums}. Let me set it up.", "But first, what exactly is asked? {What}.",
          "Perhaps it is simpler than it looks.")
_ENDINGS = ("Final answer: {x}", "So the answer is {x}.", "#### {x}", "Answer: {x}", "That gives {x}.",
            "The answer is {x}.", "Result: {x}")

# Reflections: (line starts a new line?, template). Fields: a, b, c (the step), inv (an inverse check),
# wrong (a slip), x (the final answer), what (the question's last words).
_REFLECT: tuple[tuple[bool, str], ...] = (
    (True, "Wait, is {c} right? Checking backwards, {inv}, so yes."),
    (True, "Wait. I wrote {wrong} a moment ago, but {a} and {b} give {c}."),
    (False, "Wait, that needs a second look: {inv}. Fine."),
    (False, "That seems fine, wait, no, let me recount: {c} it is."),
    (True, "wait — {c}, not {wrong}."),
    (True, "wait, {what}? Right, that is the goal."),
    (False, "(wait: {inv}.)"),
    (False, "({wait} — does {c} make sense here? It does.)"),
    (True, "Hmm, {c} feels {size}. Let me redo it: {inv}. It holds."),
    (False, "Hmm, the numbers are easy, but the wording is not."),
    (False, "The result is {c}, hmm, which is plausible for {what}."),
    (True, "hmm. {c}? Yes, {inv}."),
    (False, "I get {c}, and hmm, that fits {what}."),
    (False, "That leaves {c}... hmm, hold on. Yes, {inv}."),
    (False, "So far {c} (hmm, or is it {wrong}? No, {c}.)"),
    (True, "Maybe I should check the units first. They match."),
    (False, "Maybe there is a shortcut, maybe not; doing it step by step is safer."),
    (False, "It is {c}, or maybe {wrong}? Redoing it gives {c}."),
    (True, "maybe a sketch helps: {a} and {b} on one line, {c} below."),
    (False, "I would guess {wrong}—maybe too quickly. It is {c}."),
    (True, "Perhaps the question wants something else? No: {what}."),
    (False, "This is perhaps the only tricky step: {c}."),
    (False, "Perhaps a quick estimate helps. Roughly {c}, so no surprise."),
    (True, "perhaps {c}... yes, {inv}."),
    (False, "The next part is (perhaps) the easier one."),
    (True, "Let me check: {inv}."),
    (False, "Before moving on, let me verify that {inv}."),
    (False, "I think {c} is right. Let me be careful anyway: {inv}."),
    (True, "let me see, {a} and {b}... {c}."),
    (False, "To be safe (let me be honest, I slipped once) {inv}."),
    (True, "Therefore the intermediate value is {c}."),
    (False, "The check passes, therefore {c} stands."),
    (False, "{c} is consistent. Therefore I can keep going."),
    (True, "therefore: {c}."),
    (False, "The units agree and therefore {c} is fine."),
    (False, "So {c} is, therefore, the value to carry forward."),
    (False, "Everything before this step is settled (therefore {c} is safe to use)."),
    (True, "However, I must not forget {what}."),
    (True, "However, {c} is only part of the story."),
    (True, "However careful I am, a check is cheap: {inv}."),
    (False, "I first wrote {wrong}; however, {a} and {b} give {c}."),
    (False, "It looks done. However, the question asks about {what}."),
    (True, "however you count it, {c} comes out."),
    (False, "One slip is common here (however small the numbers): {wrong} instead of {c}."),
    (True, "But is {c} really what the question wants? It is a step toward {what}."),
    (True, "But wait, {wrong} would be the result of a slip; {c} is correct."),
    (True, "But I should double-check: {inv}."),
    (True, "Another check: {inv}."),
    (True, "Another way to see it: {inv}, which agrees."),
    (True, "Alternatively, run it backwards: {inv}."),
    (True, "Alternatively, think about {what} directly."),
    (False, "One could alternatively start from {what}."),
    (False, "I could alternatively check {inv}."),
    (False, "I could do it in my head or, alternatively, on paper: {c} either way."),
    (False, "Alternatively, estimate: about {c}, so nothing is off."),
    (True, "alternatively: {inv}. Same thing."),
    (False, "(alternatively, {inv}.)"),
)
_SIZES = ("large", "small", "too round", "a bit odd", "suspicious")


def reasoning_traces(n: int, seed: int = 0) -> list[str]:
    """`n` worked solutions of training-split word problems, in varied styles (deterministic)."""
    rng = random.Random(f"reasoning-dspy-traces:{seed}")
    return [_trace(p, rng) for p in make_problems(n, split="train", seed=seed)]


def _trace(problem: Problem, rng: random.Random) -> str:
    what = _what(problem.question)
    lines = [rng.choice(_HEADERS).format(q=problem.question)]
    reflective = rng.random() < 0.8
    body: list[str] = []
    if rng.random() < 0.5:
        nums = ", ".join(fmt(Fraction(v).limit_denominator(10_000)) for v in problem.quantities.values())
        plan = rng.choice(_PLANS if reflective else _PLANS[:3])
        body.append(plan.format(what=what, What=what[0].upper() + what[1:], nums=nums))
    for i, step in enumerate(problem.steps):
        a, op, b, c = _parts(step)
        sentence = rng.choice(_OPENERS if i == 0 else _LINKS) + rng.choice(_OPS[op]).format(a=a, b=b, c=c)
        body.append(sentence[0].upper() + sentence[1:] + ".")
        if reflective and rng.random() < 0.6:
            new_line, template = rng.choice(_REFLECT)
            text = template.format(a=a, b=b, c=c, inv=_inverse(a, op, b, c), wrong=_slip(c, rng), x=c, what=what,
                                   size=rng.choice(_SIZES), wait=rng.choice(("wait", "hmm", "let me see")))
            if new_line or not body:
                body.append("\n" + text)
            else:
                body[-1] += " " + text
    answer = format_answer(problem.answer)
    ending = rng.choice(_ENDINGS).format(x=answer)
    if reflective and rng.random() < 0.5:
        ending = rng.choice(("Therefore the answer is {x}.", "Hmm, {x}. Final answer: {x}",
                             "Let me restate it: {x}.", "So, however you slice it, {x}.",
                             "Perhaps overkill, but everything checks out: {x}.")).format(x=answer)
    text = " ".join(body).replace(" \n", "\n")
    return "\n".join([lines[0], _wrap(text, rng), ending])


def _wrap(text: str, rng: random.Random) -> str:
    """Sometimes one paragraph, sometimes a line per sentence: real traces do both."""
    if rng.random() < 0.4:
        return re.sub(r"(?<=[.)])\s+(?=[A-Z])", "\n", text)
    return text


def _parts(step: str) -> tuple[str, str, str, str]:
    m = _STEP.match(step)
    if m is None:
        raise ValueError(f"step {step!r} is not of the form 'a op b = c'")
    return m["a"], m["op"], m["b"], m["c"]


def _inverse(a: str, op: str, b: str, c: str) -> str:
    if op not in _INVERSE:
        return f"{a} {op} {b} is still {c}"
    return _INVERSE[op][0].format(a=a, b=b, c=c)


def _slip(c: str, rng: random.Random) -> str:
    value = Fraction(c)
    wrong = value + rng.choice((1, -1, 10, 2)) if value.denominator == 1 else value * 10
    return fmt(wrong).replace(",", "")


def _what(question: str) -> str:
    last = re.split(r"(?<=[.?])\s+", question.strip())[-1].rstrip("?")
    return last[0].lower() + last[1:] if last else "the question"


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
