"""Arithmetic word problems: the signature the reasoner is trained on, evaluated with and tuned for."""

from __future__ import annotations

import dspy


# Its instructions are the words DSPy itself writes for `question -> answer`, so an unoptimized
# program sends DSPy's default instruction, as every measurement quoted "under DSPy's default
# instruction" assumes; optimizers and instruction styles replace them (`word_problem`).
class WordProblem(dspy.Signature):
    """Given the fields `question`, produce the fields `answer`."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def word_problem(instruction: str | None = None) -> type[dspy.Signature]:
    """`WordProblem`, with `instruction` in place of its docstring when given: the signature an
    optimizer's candidate instruction, or one instruction style of the reasoner corpus, runs with."""
    return WordProblem.with_instructions(instruction) if instruction else WordProblem
