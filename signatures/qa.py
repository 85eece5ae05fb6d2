"""Reasoned question answering."""

from __future__ import annotations

import dspy


class ReasonedQA(dspy.Signature):
    """Answer the question by reasoning it through before committing to an answer.

    Work step by step: restate what is asked, consider at least one alternative interpretation or
    approach ("wait", "maybe", "alternatively"), check each intermediate result, and only then give
    the final answer. Keep the answer itself short: a number, a name, yes/no, or one sentence.
    """

    question: str = dspy.InputField(desc="the question to answer")
    answer: str = dspy.OutputField(desc="the final answer only, without the reasoning")
