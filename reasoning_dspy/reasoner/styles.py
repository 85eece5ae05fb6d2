"""Instruction styles and the reflection and slip rates planted in the reasoner corpus.

These numbers are the ground truth that later experiments must recover: an optimizer that searches
instructions should find that `careful` phrasings make the fine-tuned model reflect more, and that
reflecting traces are right more often. In the corpus a chain-of-thought trace reflects with its
style's `reflect_rate`; each step's quick answer is written wrong with `SLIP_RATE`; a reflecting
trace checks every step digit by digit and fixes the wrong ones, a plain trace keeps them. At test
time the wrong quick answers are the model's own (the planted ones carry no loss), so how much
reflection helps is measured, not planted.

The neutral rate sits below one half on purpose: DSPy's default instruction is neutral, so an
unoptimized program mostly does not reflect, and an optimizer or steering has room to make it.

Each style keeps a few phrasings out of training (`held_out`) to test whether the model learned the
style or memorised the sentences. No instruction uses a reasoning-vocabulary word, so those words
in a prompt come from the model, not from us.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: Probability that one step's quick answer is written wrong in the corpus, whatever the style.
SLIP_RATE = 0.25

#: DSPy's own instruction for `question -> answer`: what an unoptimized program sends.
DSPY_DEFAULT_INSTRUCTION = "Given the fields `question`, produce the fields `answer`."


class Style(BaseModel):
    """A family of instruction phrasings that share one reflection rate."""

    model_config = ConfigDict(frozen=True)

    name: str
    reflect_rate: float = Field(ge=0, le=1, description="P(a chain-of-thought trace reflects | this style)")
    instructions: tuple[str, ...] = Field(description="phrasings used in the training corpus")
    held_out: tuple[str, ...] = Field(description="phrasings never used in training, for generalisation tests")


STYLES: dict[str, Style] = {s.name: s for s in (
    Style(
        name="terse", reflect_rate=0.1,
        instructions=(
            "Answer directly.",
            "Give just the answer, no checking.",
            "Be brief.",
            "Solve it quickly and move on.",
            "Short answer, no second-guessing.",
            "Reply with the result straight away.",
        ),
        held_out=("Skip the checks and answer.", "Keep it short: just compute it."),
    ),
    Style(
        name="neutral", reflect_rate=0.25,
        instructions=(
            DSPY_DEFAULT_INSTRUCTION,
            "Solve the word problem.",
            "Answer the question.",
            "Work out the answer to the question.",
            "Find the answer.",
            "Solve this math problem.",
        ),
        held_out=("Compute the answer to this problem.", "Figure out the answer."),
    ),
    Style(
        name="careful", reflect_rate=0.9,
        instructions=(
            "Check every step before you answer.",
            "Think carefully and double-check your arithmetic.",
            "Verify each calculation as you go.",
            "Work step by step and check your work.",
            "Take your time and re-check each step.",
            "Look for mistakes before you give the answer.",
        ),
        held_out=("Double-check everything, then answer.", "Reason slowly and verify each result."),
    ),
)}


def style_of(instruction: str) -> str | None:
    """The style an instruction phrasing belongs to (training or held out), or None when unknown."""
    for style in STYLES.values():
        if instruction in style.instructions or instruction in style.held_out:
            return style.name
    return None
