"""reasoning-dspy: find, score and steer a language model's reasoning features, and use them from DSPy.

The pipeline, one import each (loaded lazily, so `import reasoning_dspy` stays fast):
models → activations → sae → reasonscore → steering → lm (a `dspy.LM`) → modules / metrics;
`make_problems` gives word problems with exact answers to evaluate them on.

    >>> from reasoning_dspy import load_model, load_prompts, extract_activations
    >>> model, tokenizer, model_spec = load_model("tiny-random")    # or "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    >>> cache = extract_activations(model, tokenizer, load_prompts("bundled"), layer=2, out_dir="runs/acts")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "load_model": "reasoning_dspy.models",
    "load_tokenizer": "reasoning_dspy.models",
    "LoadedModel": "reasoning_dspy.models",
    "ModelSpec": "reasoning_dspy.models",
    "ModelLoadError": "reasoning_dspy.models",
    "load_prompts": "reasoning_dspy.prompts",
    "PromptError": "reasoning_dspy.prompts",
    "Problem": "reasoning_dspy.problems",
    "ProblemError": "reasoning_dspy.problems",
    "make_problems": "reasoning_dspy.problems",
    "as_dspy_examples": "reasoning_dspy.problems",
    "extract_answer": "reasoning_dspy.problems",
    "answers_match": "reasoning_dspy.problems",
    "answer_accuracy": "reasoning_dspy.problems",
    "accuracy": "reasoning_dspy.problems",
    "extract_activations": "reasoning_dspy.activations",
    "ActivationCache": "reasoning_dspy.activations",
    "CacheError": "reasoning_dspy.activations",
    "residual_at": "reasoning_dspy.activations",
    "SAE": "reasoning_dspy.sae",
    "SAEConfig": "reasoning_dspy.sae",
    "load_sae": "reasoning_dspy.sae",
    "save_sae": "reasoning_dspy.sae",
    "SAETrainConfig": "reasoning_dspy.sae",
    "train_sae": "reasoning_dspy.sae",
    "evaluate_sae": "reasoning_dspy.sae",
    "Vocabulary": "reasoning_dspy.features.vocab",
    "score_features": "reasoning_dspy.features.reasonscore",
    "FeatureScores": "reasoning_dspy.features.reasonscore",
    "analyze_features": "reasoning_dspy.features.analysis",
    "SteeringSpec": "reasoning_dspy.steering",
    "Steerer": "reasoning_dspy.steering",
    "steer": "reasoning_dspy.steering",
    "SteeredEngine": "reasoning_dspy.engine",
    "SteeredLM": "reasoning_dspy.program.lm",
    "LenientChatAdapter": "reasoning_dspy.program.adapter",
    "SAESteeringModule": "reasoning_dspy.program.modules",
    "ReasoningActivationMetric": "reasoning_dspy.program.metrics",
    "ReasonScoreMetric": "reasoning_dspy.program.metrics",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover  (static names for type checkers and IDEs)
    from reasoning_dspy.activations import ActivationCache, CacheError, extract_activations, residual_at  # noqa: F401
    from reasoning_dspy.engine import SteeredEngine  # noqa: F401
    from reasoning_dspy.features.analysis import analyze_features  # noqa: F401
    from reasoning_dspy.features.reasonscore import FeatureScores, score_features  # noqa: F401
    from reasoning_dspy.features.vocab import Vocabulary  # noqa: F401
    from reasoning_dspy.models import LoadedModel, ModelLoadError, ModelSpec, load_model, load_tokenizer  # noqa: F401
    from reasoning_dspy.problems import (  # noqa: F401
        Problem,
        ProblemError,
        accuracy,
        answer_accuracy,
        answers_match,
        as_dspy_examples,
        extract_answer,
        make_problems,
    )
    from reasoning_dspy.program.adapter import LenientChatAdapter  # noqa: F401
    from reasoning_dspy.program.lm import SteeredLM  # noqa: F401
    from reasoning_dspy.program.metrics import ReasoningActivationMetric, ReasonScoreMetric  # noqa: F401
    from reasoning_dspy.program.modules import SAESteeringModule  # noqa: F401
    from reasoning_dspy.prompts import PromptError, load_prompts  # noqa: F401
    from reasoning_dspy.sae import (  # noqa: F401
        SAE,
        SAEConfig,
        SAETrainConfig,
        evaluate_sae,
        load_sae,
        save_sae,
        train_sae,
    )
    from reasoning_dspy.steering import Steerer, SteeringSpec, steer  # noqa: F401


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'reasoning_dspy' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
