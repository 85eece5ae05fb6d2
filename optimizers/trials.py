"""Trial records: what every candidate was, what it scored, and the journal that lets a run resume.

The journal is JSONL, one finished trial per line, appended and flushed as each batch finishes. A
line cut short by a kill is ignored when the journal is read back; everything before it is kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from optimizers.space import Candidate


class JournalError(ValueError):
    """A journal cannot be resumed: unreadable, or written by another search or with other settings."""


class TrialRecord(BaseModel):
    """One evaluated candidate."""

    model_config = ConfigDict(extra="forbid")

    number: int
    params: dict[str, Any] = Field(description="the optuna parameters that produced the candidate")
    candidate: Candidate
    kind: str | None = Field(None, description="library kind of the instruction (None: the user's or a proposal)")
    score: float = Field(description="the objective: reasoning metric on the trial examples")
    activation: float
    accuracy: float
    tokens: float = Field(description="mean generated tokens per example")
    reflect: float
    word_rate: float
    n: int = Field(description="examples scored")
    wall_s: float = Field(description="this trial's share of its batch's wall time")
    feasible: bool = True
    cached: bool = Field(False, description="the same candidate was scored before; its scores were reused")

    def objectives(self, multi: bool) -> list[float]:
        return [self.score, self.accuracy, self.tokens] if multi else [self.score]


def read_journal(path: str | os.PathLike) -> list[TrialRecord]:
    """Finished trials from `path` (empty when it does not exist); a torn last line is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(TrialRecord.model_validate_json(line))
        except ValueError as err:
            if i == len(lines) - 1:
                break  # cut short by a kill mid-write
            raise JournalError(f"{path}:{i + 1} is not a trial record: {err}") from None
    numbers = [r.number for r in records]
    if numbers != list(range(len(records))):
        raise JournalError(f"{path} holds trials {numbers[:8]}..., expected 0, 1, 2, ... in order")
    return records


def append_journal(path: str | os.PathLike, records: Sequence[TrialRecord]) -> None:
    """Append `records`, one line each, and flush them to disk before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_line(path)
    with path.open("a") as f:
        for record in records:
            f.write(json.dumps(record.model_dump(mode="json")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def settings_path(journal: str | os.PathLike) -> Path:
    """Where the settings a journal's scores were computed with are kept: `NAME.settings.json` beside it."""
    journal = Path(journal)
    return journal.with_name(journal.stem + ".settings.json")


def check_settings(journal: str | os.PathLike, settings: dict[str, Any], *, resuming: bool) -> None:
    """Refuse to resume `journal` when it was scored with other `settings` (objective, examples,
    metric, LM, ...), naming each one that differs. A new journal (`resuming=False`), or one from
    before settings were kept, gets `settings` recorded beside it."""
    path = settings_path(journal)
    if not resuming or not path.is_file():
        from reasoning_dspy._io import atomic_write_json

        atomic_write_json(path, settings)
        return
    try:
        recorded = json.loads(path.read_text())
    except ValueError as err:
        raise JournalError(f"{path} is not JSON ({err}); delete the journal and its settings to start again") from None
    settings = json.loads(json.dumps(settings))  # compared as stored: tuples are lists in JSON
    changed = [k for k in sorted(set(settings) | set(recorded)) if settings.get(k) != recorded.get(k)]
    if changed:
        what = "; ".join(f"{k}: recorded {_short(recorded.get(k))}, now {_short(settings.get(k))}" for k in changed)
        raise JournalError(f"{journal} was scored with other settings ({what}); its trials cannot be mixed with "
                           "this run's: use the same settings, or another journal")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _drop_torn_line(path: Path) -> None:
    if path.exists():
        text = path.read_text()
        if text and not text.endswith("\n"):
            path.write_text(text[: text.rfind("\n") + 1])


def instruction_scores(records: Sequence[TrialRecord], *, steered: bool = False) -> dict[str, float]:
    """The best score each instruction reached, from trials without steering (what the instruction
    alone did); `steered=True` counts every trial. For `PromptFilter.record_scores`."""
    best: dict[str, float] = {}
    for r in records:
        if steered or r.candidate.steering() is None:
            best[r.candidate.instruction] = max(r.score, best.get(r.candidate.instruction, float("-inf")))
    return best


def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Trials no other trial beats on all of score (higher), accuracy (higher) and tokens (lower)."""
    points = np.array([[r.score, r.accuracy, -r.tokens] for r in records], dtype=float).reshape(-1, 3)
    front = []
    for i, p in enumerate(points):
        dominated = np.any(np.all(points >= p, axis=1) & np.any(points > p, axis=1))
        if not dominated:
            front.append(records[i])
    return front


def best_trial(records: Sequence[TrialRecord], *, multi: bool = False) -> TrialRecord:
    """The highest-scoring feasible trial (earliest on ties); with `multi`, chosen from the Pareto front."""
    pool = pareto_front(records) if multi else list(records)
    feasible = [r for r in pool if r.feasible] or [r for r in records if r.feasible] or list(records)
    return max(feasible, key=lambda r: (r.score, -r.number))
