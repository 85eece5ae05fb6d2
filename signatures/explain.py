"""Explain a decision."""

from __future__ import annotations

import dspy


class ExplainDecision(dspy.Signature):
    """Explain why the decision was (or was not) a good one in its situation.

    Identify the goal the decision served and the options that were available. Weigh the chosen
    option against at least one alternative, naming the evidence and trade-offs on each side
    ("however", "on the other hand"), and say what would have changed the verdict. End with a
    verdict: sound, questionable, or unsound.
    """

    situation: str = dspy.InputField(desc="the context in which the decision was made")
    decision: str = dspy.InputField(desc="the decision that was taken")
    explanation: str = dspy.OutputField(desc="the reasoning behind the verdict, alternatives weighed")
    verdict: str = dspy.OutputField(desc="one word: sound, questionable or unsound")
