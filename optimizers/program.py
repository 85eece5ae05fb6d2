"""`SteeredProgram`: any DSPy program plus the steering it runs with, saved and loaded together.

Every LM call inside the program carries the steering in its `metadata`, which the `SteeredLM`'s
engine reads per call, so one engine serves steered and unsteered programs in the same batch.
`save`/`load` use DSPy's own JSON state with one more key, `"steering"`: no pickle.

Its predictions carry what the engine measured while producing them, and which instruction produced
them, as `program_measures(pred)` (a `ProgramMeasures`: `reasoning_activation`, `n_tokens`,
`completion`, `instruction`), so `ReasoningActivationMetric` scores them without a second forward, in
our optimizer and in DSPy's alike. The measures live beside the prediction's fields, never in them:
a signature with an output field called `instruction` or `completion` keeps the model's answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dspy

from reasoning_dspy.program.metrics import MEASURES_ATTR, ProgramMeasures, program_measures
from reasoning_dspy.steering import SteeringSpec

__all__ = ["ProgramMeasures", "SteeredProgram", "measure", "predictors_instruction", "program_measures"]


class SteeredProgram(dspy.Module):
    """Run `program` with `steering` on every call of the configured `SteeredLM`.

    >>> compiled = SteeredProgram(dspy.ChainOfThought("question -> answer"), SteeringSpec(features={12: 0.1}))
    >>> compiled.save("program.json"); fresh = SteeredProgram(dspy.ChainOfThought("question -> answer"))
    >>> fresh.load("program.json")   # instructions, demos and steering restored
    """

    def __init__(self, program: dspy.Module, steering: SteeringSpec | dict | None = None):
        super().__init__()
        if not isinstance(program, dspy.Module):
            raise TypeError(f"SteeredProgram wraps a DSPy module, got {type(program).__name__}")
        self.program = program
        self.steering = _spec(steering)

    def forward(self, **kwargs: Any) -> Any:
        from reasoning_dspy.program.lm import collect_reports

        with collect_reports() as collected, self._steered():
            pred = self.program(**kwargs)
        if isinstance(pred, dspy.Prediction):
            setattr(pred, MEASURES_ATTR, measure(collected.reports(), predictors_instruction(self.program)))
        return pred

    @contextmanager
    def _steered(self) -> Iterator[None]:
        """Every LM call inside carries the steering, and asks the engine to record the SAE latents
        as it generates: the prediction's measurements then cost no second forward."""
        from reasoning_dspy.program.lm import _engine_or_none, engine_of

        lm = dspy.settings.lm
        if self.steering is not None and lm is None:
            raise ValueError("no LM is configured: dspy.configure(lm=SteeredLM(...)) before calling a SteeredProgram")
        # steering needs our engine (a clear error for any other LM); capture only asks for it
        engine = engine_of(lm) if self.steering is not None else _engine_or_none(lm)
        base = dict(lm.kwargs.get("metadata") or {}) if lm is not None else {}
        metadata = dict(base)
        if self.steering is not None:
            metadata["steering"] = self.steering.model_dump(mode="json")
        if engine is not None and engine.sae is not None:
            metadata["capture"] = True
        if metadata == base:
            yield
            return
        with dspy.context(lm=lm.copy(metadata=metadata)):
            yield

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        state = super().dump_state(json_mode=json_mode)
        state["steering"] = None if self.steering is None else self.steering.model_dump(mode="json")
        return state

    def load_state(self, state: dict[str, Any], **kwargs: Any) -> SteeredProgram:
        if "steering" not in state:
            raise ValueError("this state has no 'steering' entry: it was not saved from a SteeredProgram")
        steering = _spec(state["steering"])  # validate before touching the program
        super().load_state(state, **kwargs)
        self.steering = steering
        return self


def measure(reports: list[Any], instruction: str | None) -> ProgramMeasures:
    """What the engine measured over the program's calls: `reasoning_activation` (mean over calls of
    the reasoning features' activation on the generated tokens), `n_tokens` and `completion` (the
    generated texts), beside the `instruction` that produced them. Only `instruction` is set when no
    call went through an engine with an SAE."""
    measured = [r for r in reports if r.activation is not None]
    if not measured:
        return ProgramMeasures(instruction)
    values = [r.activation.features_mean for r in measured if r.activation.features_mean is not None]
    return ProgramMeasures(instruction, sum(values) / len(values) if values else None,
                           sum(r.activation.n_tokens for r in measured), "\n".join(r.text or "" for r in measured))


def predictors_instruction(program: dspy.Module) -> str | None:
    """The instruction of the program's first predictor (what instruction optimizers change)."""
    predictors = program.predictors()
    return predictors[0].signature.instructions if predictors else None


def _spec(steering: SteeringSpec | dict | None) -> SteeringSpec | None:
    if steering is None or isinstance(steering, SteeringSpec):
        return steering
    if isinstance(steering, dict):
        return SteeringSpec.model_validate(steering)
    raise TypeError(f"steering must be a SteeringSpec, a dict or None, got {type(steering).__name__}")
