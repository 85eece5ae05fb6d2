"""What the tracker records. Every record carries a stable id, assigned once when it is made and
kept in the journal, so writing it twice (a replay after an outage, a resumed run) stores it once."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

_NAMESPACE = uuid.UUID("5b0e7f5e-4a43-4f2a-9d0c-7d1e1c9a2b61")


def stable_id(*parts: Any) -> str:
    """The same parts always give the same id (a UUID5), so a re-recorded item is recognised."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def _now() -> float:
    return time.time()


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunStart(_Record):
    """A run began: its name, what kind of run, and the settings it ran with."""

    type: Literal["run"] = "run"
    id: str
    name: str
    kind: str = "run"
    config: dict[str, Any] = Field(default_factory=dict)
    folder: str | None = None
    started_at: float = Field(default_factory=_now)


class RunEnd(_Record):
    """A run finished (or failed): its status and summary result."""

    type: Literal["run_end"] = "run_end"
    id: str
    status: str = "finished"
    result: dict[str, Any] = Field(default_factory=dict)
    finished_at: float = Field(default_factory=_now)


class Trial(_Record):
    """One evaluated optimizer candidate; the fields of `optimizers.trials.TrialRecord`."""

    type: Literal["trial"] = "trial"
    id: str
    run_id: str
    number: int
    params: dict[str, Any] = Field(default_factory=dict)
    candidate: dict[str, Any] = Field(default_factory=dict)
    kind: str | None = None
    score: float | None = None
    activation: float | None = None
    accuracy: float | None = None
    tokens: float | None = None
    reflect: float | None = None
    word_rate: float | None = None
    n: int | None = None
    wall_s: float | None = None
    feasible: bool = True
    cached: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=_now)


class Generation(_Record):
    """One generated answer: prompt, output, the steering it ran with, what the SAE measured, and
    whether it was right. `features` maps SAE feature index to its mean activation over the answer;
    the vectors are the ones the similarity queries search."""

    type: Literal["generation"] = "generation"
    id: str
    run_id: str
    prompt: str
    output: str | None = None
    label: str | None = Field(None, description="which arm or condition produced it, e.g. heldout/steered")
    index: int | None = Field(None, description="position of the example in its set")
    trial_number: int | None = None
    steering: dict[str, Any] | None = None
    reasoning_activation: float | None = None
    correct: float | None = None
    tokens: int | None = None
    features: dict[int, float] = Field(default_factory=dict)
    prompt_embedding: list[float] | None = None
    activation_vector: list[float] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=_now)
    replace: bool = Field(False, description="update a stored record with the same id (a score that changed) "
                                             "instead of keeping the first one written")

    @field_validator("prompt_embedding", "activation_vector")
    @classmethod
    def _finite(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(math.isfinite(v) for v in value):
            raise ValueError("vectors must hold finite numbers")
        return value


Record = Annotated[RunStart | RunEnd | Trial | Generation, Field(discriminator="type")]
RECORD = TypeAdapter(Record)


def parse_record(line: str | bytes) -> RunStart | RunEnd | Trial | Generation:
    """One journal line back into its record."""
    return RECORD.validate_json(line)


def trial_from(run_id: str, trial: Any) -> Trial:
    """A `Trial` from a `TrialRecord` (or anything with `model_dump`, or a mapping): the known
    fields become columns, the rest lands in `extra`."""
    data: Mapping[str, Any] = trial.model_dump(mode="json") if hasattr(trial, "model_dump") else dict(trial)
    known = set(Trial.model_fields) - {"type", "id", "run_id", "extra", "created_at"}
    fields = {k: v for k, v in data.items() if k in known}
    if "number" not in fields:
        raise ValueError("a trial needs its 'number'")
    extra = {k: v for k, v in data.items() if k not in known}
    return Trial(id=stable_id(run_id, "trial", fields["number"]), run_id=run_id, extra=extra, **fields)
