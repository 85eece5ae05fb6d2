"""Score candidates on examples, many at once, through the micro-batched engine.

All (candidate, example) calls of a batch run from parallel threads, so the `SteeredEngine`
decodes them together, each row with its own steering. For every call the engine reports the
reasoning activation of what was generated (read before any steering is added, so steering counts
only through the text it makes the model write); the text gives reflection and reasoning-word
counts, the task metric correctness.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from optimizers.instructions import with_instruction
from optimizers.program import SteeredProgram
from optimizers.space import Candidate

#: What the optimizer maximises: the mean reasoning activation of the generated tokens, the share
#: of answers that reflect, or reasoning words per 100 generated tokens.
Objective = Literal["activation", "reflect", "word_rate"]
OBJECTIVES: tuple[str, ...] = ("activation", "reflect", "word_rate")

logger = logging.getLogger(__name__)


@dataclass
class Scores:
    """Per-example measurements of one candidate, and their means."""

    activation: list[float] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    reflects: list[bool] = field(default_factory=list)
    words: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.correct)

    def add(self, activation: float, correct: float, tokens: int, text: str,
            vocabulary: Sequence[str] | None = None) -> int:
        """Record one example; returns its reasoning-word count."""
        from reasoning_dspy.features.measures import REASONING_WORDS, count_words, reflects

        words = count_words(text, vocabulary or REASONING_WORDS)
        self.activation.append(activation)
        self.correct.append(correct)
        self.tokens.append(tokens)
        self.reflects.append(reflects(text))
        self.words.append(words)
        self.texts.append(text)
        return words


    def summary(self) -> dict[str, float]:
        tokens = float(np.sum(self.tokens))
        return {
            "activation": float(np.mean(self.activation)) if self.activation else 0.0,
            "accuracy": float(np.mean(self.correct)) if self.correct else 0.0,
            "tokens": float(np.mean(self.tokens)) if self.tokens else 0.0,
            "reflect": float(np.mean(self.reflects)) if self.reflects else 0.0,
            "word_rate": 100.0 * float(np.sum(self.words)) / tokens if tokens else 0.0,
        }


def measured(pred: Any) -> tuple[float, int, str]:
    """What `SteeredProgram` attached to a prediction: (reasoning activation, tokens, completion);
    zeros for a prediction without them."""
    from reasoning_dspy.program.metrics import program_measures

    m = program_measures(pred)
    if m is None:
        return 0.0, 0, ""
    return float(m.reasoning_activation or 0.0), m.n_tokens, m.completion


def answer_correct(example: Any, pred: Any, trace: Any = None) -> float:
    """Numeric answers match within rounding (word problems); other answers match exactly."""
    from reasoning_dspy.program.evaluation import is_correct
    from reasoning_dspy.program.metrics import exact_match

    expected = getattr(example, "answer", None)
    try:
        value = float(expected)
    except (TypeError, ValueError):
        return exact_match(example, pred)
    return float(is_correct(getattr(pred, "answer", None), "", value))


def evaluate_candidates(program: Any, lm: Any, candidates: Sequence[Candidate], examples: Sequence[Any],
                        **kwargs: Any) -> tuple[list[Scores], float]:
    """`evaluate_programs` on `program` with each candidate's instruction and steering."""
    programs = [SteeredProgram(with_instruction(program, c.instruction), c.steering()) for c in candidates]
    return evaluate_programs(programs, lm, examples, labels=[c.label() for c in candidates], **kwargs)


def evaluate_programs(
    programs: Sequence[SteeredProgram],
    lm: Any,
    examples: Sequence[Any],
    *,
    task_metric: Callable[..., Any] = answer_correct,
    threads: int = 64,
    labels: Sequence[str] | None = None,
    vocabulary: Sequence[str] | None = None,
    adapter: Any = None,
) -> tuple[list[Scores], float]:
    """Run every program on every example in one parallel batch; returns per-program `Scores` and
    the batch's wall time in seconds. A call that fails (an answer the adapter cannot parse among
    them) scores zero and counts as wrong; the first failure is logged. `adapter`: the DSPy adapter
    the calls use (None: the configured one, `dspy.configure(adapter=...)`, else DSPy's default);
    pass `reasoning_dspy.program.adapter.LenientChatAdapter()` to score what small models write instead."""
    import dspy
    from dspy.utils.parallelizer import ParallelExecutor

    from reasoning_dspy.program.evaluation import quiet_truncation
    from reasoning_dspy.program.lm import engine_of
    from reasoning_dspy.program.metrics import metric_value

    engine = engine_of(lm)
    if engine.sae is None:
        raise ValueError("optimizing reasoning activation needs an SAE: build the LM with SteeredLM(..., sae=...)")
    if not engine.reasoning_features:
        raise ValueError("the LM has no reasoning features to measure: SteeredLM(..., reasoning_features=[...])")
    labels = list(labels) if labels is not None else [f"program {i}" for i in range(len(programs))]
    jobs = [(i, example) for i in range(len(programs)) for example in examples]
    failures: list[str] = []

    def run(job: tuple[int, Any]) -> tuple[float, float, int, str]:
        i, example = job
        try:
            pred = programs[i](**example.inputs())
        except Exception as err:  # noqa: BLE001 - a candidate that breaks the program scores zero
            failures.append(f"{labels[i]}: {type(err).__name__}: {err}")
            return 0.0, 0.0, 0, ""
        activation, tokens, text = measured(pred)
        return activation, metric_value(task_metric(example, pred, None)), tokens, text

    start = time.perf_counter()
    with dspy.context(lm=lm, adapter=adapter or dspy.settings.adapter), quiet_truncation():
        executor = ParallelExecutor(num_threads=threads, disable_progress_bar=True, max_errors=len(jobs) + 1,
                                    timeout=10**6)
        with engine.expect(len(jobs), threads=threads):  # waves of `threads` calls, each decoded together
            results = executor.execute(run, jobs)
    wall = time.perf_counter() - start
    if failures:
        logger.warning("%d of %d calls failed and scored zero; the first: %s", len(failures), len(jobs), failures[0])
    scores = [Scores() for _ in programs]
    for (i, _), result in zip(jobs, results, strict=True):
        scores[i].add(*(result if result is not None else (0.0, 0.0, 0, "")), vocabulary=vocabulary)
    return scores, wall
