"""`python -m reasoning_dspy.cli`, as `torchrun -m` starts the command line."""

from reasoning_dspy.cli import app

app()
