"""The paper's experiment as a command: `reasoning-dspy study [CONFIG.yaml] [key=value ...]`."""

from reasoning_dspy.features.measures import REFLECTION_WORDS, count_words, is_degenerate, reflects
from reasoning_dspy.study.conditions import Condition, build_conditions, matched_random_features
from reasoning_dspy.study.config import StudyConfig, StudyConfigError
from reasoning_dspy.study.runner import Study, run_study

__all__ = [
    "REFLECTION_WORDS", "Condition", "Study", "StudyConfig", "StudyConfigError", "build_conditions",
    "count_words", "is_degenerate", "matched_random_features", "reflects", "run_study",
]
