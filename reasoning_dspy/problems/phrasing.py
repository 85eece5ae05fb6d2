"""Phrase tables and helpers for writing worked solutions: step wordings, reflections, endings.

Shared by `problems.traces` (the bundled ReasonScore text) and `reasoner.corpus` (the fine-tuning
corpus), so both speak in the same varied voice. Changing a table changes `data/traces.txt`.
"""

from __future__ import annotations

import random
import re

STEP = re.compile(r"^(?P<a>\S+) (?P<op>\S+) (?P<b>\S+) = (?P<c>\S+)$")

OPS = {
    "*": ("{a} × {b} = {c}", "{a} times {b} is {c}", "multiplying {a} by {b} gives {c}", "{a} * {b} = {c}",
          "{b} lots of {a} make {c}"),
    "+": ("{a} + {b} = {c}", "adding {b} to {a} gives {c}", "{a} plus {b} makes {c}", "together that is {c} ({a} + {b})"),
    "-": ("{a} − {b} = {c}", "taking {b} away from {a} leaves {c}", "{a} minus {b} is {c}", "{c} remain once {b} go from {a}"),
    "/": ("{a} ÷ {b} = {c}", "{a} divided by {b} is {c}", "{a} shared into {b} equal parts is {c} each",
          "{a}/{b} = {c}"),
    "mod": ("{a} ÷ {b} leaves a remainder of {c}", "{b} goes into {a} with {c} left over"),
    "ceildiv": ("{a} ÷ {b}, rounded up, is {c}", "{a} over {b} is not whole, so I round up to {c}"),
}
INVERSE = {"*": ("{c} ÷ {b} = {a}", "/"), "+": ("{c} − {b} = {a}", "-"), "-": ("{c} + {b} = {a}", "+"),
           "/": ("{c} × {b} = {a}", "*")}
OPENERS = ("First, ", "To start, ", "", "Step one: ", "Okay, so ", "I begin with this: ")
LINKS = ("Then ", "Next, ", "After that, ", "Now ", "So ", "", "From there, ", "And ")
PLANS = ("The question asks: {what}?", "Given: {nums}. Asked: {what}?", "Let me list the numbers first: {nums}.",
         "Okay. {What}? Several steps, I think.", "Let me think about what is given: {nums}.",
         "Maybe the quickest route is one quantity at a time.", "Two things matter: the numbers {nums}, and "
         "what is asked.", "Hmm, {nums}. Let me set it up.", "But first, what exactly is asked? {What}.",
         "Perhaps it is simpler than it looks.")
ENDINGS = ("Final answer: {x}", "So the answer is {x}.", "#### {x}", "Answer: {x}", "That gives {x}.",
           "The answer is {x}.", "Result: {x}")

# Reflections: (line starts a new line?, template). Fields: a, b, c (the step), inv (an inverse check),
# wrong (a slip), x (the final answer), what (the question's last words).
REFLECT: tuple[tuple[bool, str], ...] = (
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
SIZES = ("large", "small", "too round", "a bit odd", "suspicious")
# Closing lines of a trace that reflected: the final answer with a reasoning word.
CLOSERS = ("Therefore the answer is {x}.", "Hmm, {x}. Final answer: {x}", "Let me restate it: {x}.",
           "So, however you slice it, {x}.", "Perhaps overkill, but everything checks out: {x}.")


def wrap(text: str, rng: random.Random) -> str:
    """Sometimes one paragraph, sometimes a line per sentence: real traces do both."""
    if rng.random() < 0.4:
        return re.sub(r"(?<=[.)])\s+(?=[A-Z])", "\n", text)
    return text


def parts(step: str) -> tuple[str, str, str, str]:
    """The numbers and operator of a `Problem.steps` entry, as written (`"12 * 3 = 36"`)."""
    m = STEP.match(step)
    if m is None:
        raise ValueError(f"step {step!r} is not of the form 'a op b = c'")
    return m["a"], m["op"], m["b"], m["c"]


def inverse(a: str, op: str, b: str, c: str) -> str:
    """A check that runs the step backwards (`36 ÷ 3 = 12`); mod and ceildiv have none."""
    if op not in INVERSE:
        return f"{a} {op} {b} is still {c}"
    return INVERSE[op][0].format(a=a, b=b, c=c)


def what(question: str) -> str:
    """The question's last sentence, lower-cased, without the question mark: what is asked."""
    last = re.split(r"(?<=[.?])\s+", question.strip())[-1].rstrip("?")
    return last[0].lower() + last[1:] if last else "the question"
