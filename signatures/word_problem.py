"""Arithmetic word problems: the signature the reasoner is trained on, evaluated with and tuned for."""

from __future__ import annotations

import dspy


class WordProblem(dspy.Signature):
    """Solve the word problem."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def word_problem(instruction: str | None = None) -> type[dspy.Signature]:
    """`WordProblem`, with `instruction` in place of its docstring when given: the signature an
    optimizer's candidate instruction, or one instruction style of the reasoner corpus, runs with."""
    return WordProblem.with_instructions(instruction) if instruction else WordProblem
