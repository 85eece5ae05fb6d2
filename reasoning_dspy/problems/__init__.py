"""GSM8K-style word problems with exact answers, answer extraction, and a DSPy accuracy metric.

    >>> from reasoning_dspy.problems import make_problems, as_dspy_examples, answer_accuracy
    >>> trainset = as_dspy_examples(make_problems(50, split="train"))
    >>> devset = as_dspy_examples(make_problems(20, split="validation"))

Families: arithmetic, rates, comparison, conversion, counting, percent; difficulty 1-3. Splits never
share a question, and a list depends on its arguments alone.
"""

from reasoning_dspy.problems.answers import (
    accuracy,
    answer_accuracy,
    answers_match,
    extract_answer,
    format_answer,
)
from reasoning_dspy.problems.base import Problem, ProblemError
from reasoning_dspy.problems.families import FAMILIES
from reasoning_dspy.problems.generate import as_dspy_examples, make_problems

__all__ = [
    "FAMILIES", "Problem", "ProblemError", "accuracy", "answer_accuracy", "answers_match", "as_dspy_examples",
    "extract_answer", "format_answer", "make_problems",
]
