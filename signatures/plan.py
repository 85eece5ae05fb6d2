"""Step-by-step plans."""

from __future__ import annotations

import dspy


class StepByStepPlan(dspy.Signature):
    """Write a step-by-step plan that reaches the goal within the constraints.

    Think about what must be true before each step can start and order the steps accordingly.
    Each step is one concrete action with a checkable outcome. Before finalising, re-read the
    constraints and check that no step violates them; revise the plan if one does.
    """

    goal: str = dspy.InputField(desc="what the plan must achieve")
    constraints: str = dspy.InputField(desc="limits the plan must respect (time, budget, tools); may be empty")
    steps: list[str] = dspy.OutputField(desc="the ordered steps, one action each")
