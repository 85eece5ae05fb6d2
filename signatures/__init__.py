"""Ready-made DSPy signatures for reasoning tasks; their docstrings are the task instructions.

>>> import dspy
>>> from signatures import ReasonedQA
>>> answer = dspy.ChainOfThought(ReasonedQA)(question="Is 91 prime?")
"""

from signatures.explain import ExplainDecision
from signatures.plan import StepByStepPlan
from signatures.qa import ReasonedQA
from signatures.word_problem import WordProblem, word_problem

__all__ = ["ExplainDecision", "ReasonedQA", "StepByStepPlan", "WordProblem", "word_problem"]
