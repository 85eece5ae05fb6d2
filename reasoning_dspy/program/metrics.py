"""Reasoning activation as a DSPy metric: reward answers whose generation activated the reasoning features.

The *reasoning activation* of an answer is the mean activation of the chosen reasoning features
(typically the top features by ReasonScore) over the answer's generated tokens. ReasonScore ranks
features; this metric scores answers. `ReasoningActivationMetric` works wherever DSPy takes a
metric (`Evaluate`, `BootstrapFewShot`, `MIPROv2`):
`metric(example, pred, trace=None) -> float`. Combined with a task metric it scores, e.g.,
correctness × reasoning activation, so an optimizer cannot win by reasoning loudly and answering
wrongly. Called with GEPA's five arguments `(gold, pred, trace, pred_name, pred_trace)` it returns
`dspy.Prediction(score=..., feedback=...)`, with feedback text the reflection LM can act on.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import dspy

TaskMetric = Callable[..., Any]

#: The attribute of a prediction that holds `ProgramMeasures`. Underscored, so DSPy keeps it out of
#: the prediction's fields and no output field of the user's signature is ever overwritten.
MEASURES_ATTR = "_reasoning_dspy"


@dataclass(frozen=True)
class ProgramMeasures:
    """What the engine measured while a `SteeredProgram` produced a prediction (`program_measures(pred)`)."""

    instruction: str | None  # the instruction of the program's first predictor
    reasoning_activation: float | None = None  # mean over calls; None without an SAE
    n_tokens: int = 0  # generated tokens, all calls
    completion: str = ""  # the generated texts, one line per call


def program_measures(pred: Any) -> ProgramMeasures | None:
    """The `ProgramMeasures` a `SteeredProgram` attached to `pred` (None for any other prediction)."""
    measures = getattr(pred, MEASURES_ATTR, None)
    return measures if isinstance(measures, ProgramMeasures) else None


def exact_match(example: Any, pred: Any, trace: Any = None, field: str = "answer") -> float:
    """1.0 when the prediction's `field` equals the example's (case and surrounding space ignored)."""
    gold = str(getattr(example, field, "") or "").strip().lower()
    got = str(getattr(pred, field, "") or "").strip().lower()
    return float(bool(gold) and gold == got)


def metric_value(value: Any) -> float:
    """A metric's result as a float: a number, a bool, or a `dspy.Prediction` with `.score`."""
    if hasattr(value, "score"):
        value = value.score
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"the task metric must return a number, a bool or a Prediction with .score; got {value!r}") from None


class ReasoningActivationMetric:
    """Score a prediction by its reasoning activation, optionally combined with a task metric.

    The activation is what the engine measured for a `SteeredProgram`'s prediction
    (`program_measures(pred)`, with the default `field`), else the prediction's `field` (set by
    `SAESteeringModule`); for predictions without either, pass `lm=` (a `SteeredLM`) and the prediction's `field_text` field is
    measured in a second forward pass, over `features` (default: the LM's `reasoning_features`).

    Args:
        task_metric: `(example, pred, trace) -> float|bool`, e.g. answer correctness; None scores
            activation alone.
        combine: "product" (task × activation) or "sum" (weight·task + (1−weight)·activation).
        target: activation that counts as full marks; activation/target is clipped to [0, 1].
            None uses the raw activation.
        threshold: with a trace (bootstrapping), a demo is kept only if the score reaches this.
    """

    def __init__(
        self,
        task_metric: TaskMetric | None = None,
        *,
        combine: Literal["product", "sum"] = "product",
        weight: float = 0.5,
        target: float | None = None,
        threshold: float | None = None,
        lm: Any = None,
        field: str = "reasoning_activation",
        field_text: str = "answer",
        features: list[int] | None = None,
    ):
        if combine not in ("product", "sum"):
            raise ValueError(f"combine must be 'product' or 'sum', got {combine!r}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        if target is not None and target <= 0:
            raise ValueError(f"target must be > 0, got {target}")
        self.task_metric = task_metric
        self.combine, self.weight, self.target, self.threshold = combine, weight, target, threshold
        self.lm, self.field, self.field_text, self.features = lm, field, field_text, features

    # -- parts -------------------------------------------------------------------------------
    def activation(self, pred: Any) -> float:
        """The prediction's reasoning activation (normalised by `target` when set)."""
        measures = program_measures(pred) if self.field == "reasoning_activation" else None
        value = measures.reasoning_activation if measures is not None else None
        if value is None:
            value = getattr(pred, self.field, None)
        if value is None:
            if self.lm is None:
                raise ValueError(
                    f"the prediction has no {self.field!r}: produce it with SAESteeringModule, or pass "
                    "lm=SteeredLM(..., sae=...) to ReasonScoreMetric so it can measure the text"
                )
            from reasoning_dspy.program.lm import engine_of

            engine = engine_of(self.lm)
            features = self.features if self.features is not None else engine.reasoning_features
            if not features:
                raise ValueError(
                    "measuring reasoning activation needs the reasoning features: pass features=[...] to the "
                    "metric, or build the LM with SteeredLM(..., reasoning_features=scores.top(n))"
                )
            text = str(getattr(pred, self.field_text, "") or "")
            value = engine.reasoning_activation([text], features)[0].features_mean
        value = float(value)
        if self.target is not None:
            value = min(max(value / self.target, 0.0), 1.0)
        return value

    def task(self, example: Any, pred: Any, trace: Any = None) -> float | None:
        return None if self.task_metric is None else metric_value(self.task_metric(example, pred, trace))

    def score(self, example: Any, pred: Any, trace: Any = None) -> tuple[float, float | None, float]:
        """`(score, task score or None, activation)`."""
        act = self.activation(pred)
        task = self.task(example, pred, trace)
        if task is None:
            return act, None, act
        if self.combine == "product":
            return task * act, task, act
        return self.weight * task + (1 - self.weight) * act, task, act

    # -- DSPy entry points -----------------------------------------------------------------
    def __call__(self, example: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
                 pred_trace: Any = None) -> Any:
        value, task, act = self.score(example, pred, trace)
        if pred_name is not None or pred_trace is not None:
            return dspy.Prediction(score=value, feedback=self.feedback(value, task, act, pred))
        if trace is not None and self.threshold is not None:
            return value >= self.threshold
        return value

    def gepa(self, gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
             pred_trace: Any = None) -> dspy.Prediction:
        """GEPA's form, always with feedback: `dspy.Prediction(score=..., feedback=...)`."""
        value, task, act = self.score(gold, pred, trace)
        return dspy.Prediction(score=value, feedback=self.feedback(value, task, act, pred))

    def feedback(self, value: float, task: float | None, act: float, pred: Any) -> str:
        """Plain-language feedback for a reflection LM."""
        parts = [f"Score {value:.3f}."]
        if task is not None:
            parts.append("The answer was correct." if task >= 1 else
                         "The answer was wrong." if task <= 0 else f"The answer scored {task:.2f} on the task.")
        unit = f" of a target {self.target:g}" if self.target is not None else ""
        parts.append(f"Reasoning activation was {act:.3f}{' (normalised)' if self.target else ''}{unit}.")
        top = getattr(pred, "top_features", None)
        if top:
            parts.append("Strongest SAE features: " + ", ".join(f"#{i} ({v:.2f})" for i, v in list(top)[:5]) + ".")
        if self.target is not None and act < 1:
            parts.append("Reason more explicitly: weigh alternatives ('wait', 'maybe', 'however'), "
                         "check intermediate steps, and state the conclusion ('therefore').")
        return " ".join(parts)


class ReasonScoreMetric(ReasoningActivationMetric):
    """Deprecated name of `ReasoningActivationMetric` (the metric scores activation, not ReasonScore)."""

    def __init__(self, *args: Any, **kwargs: Any):
        warnings.warn("ReasonScoreMetric is deprecated; use ReasoningActivationMetric", DeprecationWarning,
                      stacklevel=2)
        super().__init__(*args, **kwargs)
