"""DSPy teleprompters that tune prompts and steering so a model's reasoning features fire.

>>> from optimizers import ReasoningOptimizer
>>> compiled = ReasoningOptimizer(features=scores, n_trials=16).compile(program, trainset=train)
>>> compiled.save("best.json")          # the instruction and the steering, together
"""

from optimizers.instructions import LIBRARY, InstructionPool
from optimizers.program import ProgramMeasures, SteeredProgram, program_measures
from optimizers.reasoning_optimizer import ReasoningOptimizer
from optimizers.space import Candidate, SearchSpace
from optimizers.trials import (
    JournalError,
    TrialRecord,
    best_trial,
    instruction_scores,
    pareto_front,
    read_journal,
)

__all__ = ["LIBRARY", "Candidate", "InstructionPool", "JournalError", "ProgramMeasures", "ReasoningOptimizer",
           "SearchSpace", "SteeredProgram", "TrialRecord", "best_trial", "instruction_scores", "pareto_front",
           "program_measures", "read_journal"]
