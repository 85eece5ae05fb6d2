"""DSPy teleprompter loops driven by ReasonScore (built on the reasoning_dspy core)."""
