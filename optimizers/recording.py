"""Trial records for DSPy's own optimizers: a metric that scores and remembers.

DSPy's optimizers call the metric once per (candidate, example) and keep their trials to
themselves. `RecordingMetric` scores each prediction of a `SteeredProgram` by the same objective
`ReasoningOptimizer` uses, and groups the calls by the instruction that produced them, so every
optimizer's trials land in the same `TrialRecord` form: instruction, metric, reasoning activation,
accuracy, tokens and wall time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from optimizers.evaluate import Objective, Scores, answer_correct, measured
from optimizers.instructions import library_kind
from optimizers.space import Candidate
from optimizers.trials import TrialRecord


class RecordingMetric:
    """`metric(example, pred, trace=None) -> float` by `objective`, recording every call."""

    def __init__(self, objective: Objective = "activation", task_metric: Callable[..., Any] = answer_correct,
                 vocabulary: Sequence[str] | None = None):
        self.objective, self.task_metric, self.vocabulary = objective, task_metric, vocabulary
        self._groups: dict[str, tuple[Scores, list[float]]] = {}
        self._lock = threading.Lock()

    def __call__(self, example: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None
                 ) -> Any:
        from reasoning_dspy.features.measures import reflects
        from reasoning_dspy.program.metrics import metric_value, program_measures

        activation, tokens, text = measured(pred)
        correct = metric_value(self.task_metric(example, pred, None))
        with self._lock:
            measures = program_measures(pred)
            instruction = str(measures.instruction or "") if measures is not None else ""
            scores, times = self._groups.setdefault(instruction, (Scores(), []))
            words = scores.add(activation, correct, tokens, text, self.vocabulary)
            times.append(time.perf_counter())
        value = {"activation": activation, "reflect": float(reflects(text)),
                 "word_rate": 100.0 * words / tokens if tokens else 0.0}[self.objective]
        if pred_name is not None or pred_trace is not None:  # GEPA's feedback form
            import dspy

            return dspy.Prediction(score=value, feedback=f"Reasoning metric ({self.objective}) {value:.3f}.")
        return value

    def records(self) -> list[TrialRecord]:
        """One record per instruction the optimizer tried, in the order it first tried them. A
        record's wall time is the time between each of its calls and the call before it (of any
        instruction), so the records' times add up to the optimizer's time from its first call."""
        with self._lock:
            groups = list(self._groups.items())
        calls = sorted((t, number) for number, (_, (_, times)) in enumerate(groups) for t in times)
        wall = [0.0] * len(groups)
        for (t, number), (before, _) in zip(calls[1:], calls[:-1], strict=True):
            wall[number] += t - before
        out = []
        for number, (instruction, (scores, _)) in enumerate(groups):
            m = scores.summary()
            out.append(TrialRecord(
                number=number, params={"instruction": instruction}, candidate=Candidate(instruction=instruction),
                kind=library_kind(instruction), score=m[self.objective], activation=m["activation"],
                accuracy=m["accuracy"], tokens=m["tokens"], reflect=m["reflect"], word_rate=m["word_rate"],
                n=scores.n, wall_s=round(wall[number], 3)))
        return out
