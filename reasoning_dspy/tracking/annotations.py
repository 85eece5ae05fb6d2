"""Analysts' annotations of tracked prompts: flags, manual scores, model re-scores and hand-steered
answers, each with who made it and when.

They live in the tracking database's `annotations` table (migration 2), beside the runs they talk
about, and are written straight to the database: an annotation is one person's click, so when the
database is away the caller is told at once instead of the record waiting in a journal.

>>> with AnnotationStore.open("sqlite:///runs/tracking.sqlite") as notes:
...     notes.add("flag", "Is 91 prime?", author="ana", note="answer stops mid-sentence")
...     notes.list()[0].author
'ana'
"""

from __future__ import annotations

import datetime as dt
import math
import os
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import insert, select
from sqlalchemy.exc import SQLAlchemyError

from reasoning_dspy.tracking.browse import open_existing
from reasoning_dspy.tracking.errors import TrackingError
from reasoning_dspy.tracking.store import Store

Kind = Literal["flag", "score", "rescore", "steer"]
KINDS: tuple[str, ...] = ("flag", "score", "rescore", "steer")
#: What each kind records in `score`.
SCORE_MEANING = {"flag": None, "score": "the analyst's score", "rescore": "the model's reasoning activation",
                 "steer": "the steered answer's reasoning activation"}


class Annotation(BaseModel):
    """One stored annotation."""

    id: str
    kind: str
    prompt: str
    run_id: str | None = None
    generation_id: str | None = None
    trial_number: int | None = None
    score: float | None = None
    output: str | None = None
    steering: dict[str, Any] | None = None
    note: str | None = None
    author: str
    created_at: dt.datetime


class AnnotationStore:
    """Add and list annotations in one tracking database (SQLite or PostgreSQL)."""

    def __init__(self, store: Store):
        self.store = store

    @classmethod
    def open(cls, database_url: str | None = None, *, default_sqlite: str | os.PathLike | None = None
             ) -> AnnotationStore:
        """The database at `database_url` (else `$DATABASE_URL`, else SQLite at `default_sqlite`),
        migrated to the current schema. Raises `TrackingError` when it cannot be used."""
        return cls(open_existing(database_url, default_sqlite=default_sqlite))

    def add(self, kind: Kind, prompt: str, *, author: str, run_id: str | None = None,
            generation_id: str | None = None, trial_number: int | None = None, score: float | None = None,
            output: str | None = None, steering: Mapping[str, Any] | None = None, note: str | None = None
            ) -> Annotation:
        """Store one annotation now (UTC time) and return it; bad input raises `TrackingError` naming
        the field, before anything is written."""
        if kind not in KINDS:
            raise TrackingError(f"annotation kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not (prompt or "").strip():
            raise TrackingError("an annotation needs the prompt it is about; got an empty prompt")
        if not (author or "").strip():
            raise TrackingError("an annotation needs its author: give your name")
        if kind != "flag" and score is None:
            raise TrackingError(f"a {kind!r} annotation needs a score ({SCORE_MEANING[kind]})")
        if score is not None and not math.isfinite(float(score)):
            raise TrackingError(f"an annotation's score must be a finite number, got {score}")
        row = Annotation(id=str(uuid.uuid4()), kind=kind, prompt=prompt, run_id=run_id or None,
                         generation_id=generation_id or None, trial_number=trial_number,
                         score=None if score is None else float(score), output=output,
                         steering=dict(steering) if steering is not None else None,
                         note=(note or "").strip() or None, author=author.strip(),
                         created_at=dt.datetime.now(dt.timezone.utc))
        try:
            with self.store.engine.begin() as conn:
                conn.execute(insert(self.store.schema.annotations).values(**row.model_dump()))
        except SQLAlchemyError as err:
            raise TrackingError(f"cannot store the annotation in {self.store.where}: "
                                f"{str(getattr(err, 'orig', err)).strip().splitlines()[0]}") from None
        return row

    def list(self, *, run_id: str | None = None, prompt: str | None = None, limit: int = 500) -> list[Annotation]:
        """Annotations, newest first; only those of `run_id` and/or about `prompt` when given."""
        t = self.store.schema.annotations
        query = select(t).order_by(t.c.created_at.desc(), t.c.id).limit(limit)
        if run_id is not None:
            query = query.where(t.c.run_id == run_id)
        if prompt is not None:
            query = query.where(t.c.prompt == prompt)
        try:
            with self.store.engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except SQLAlchemyError as err:
            raise TrackingError(f"cannot read annotations from {self.store.where}: "
                                f"{str(getattr(err, 'orig', err)).strip().splitlines()[0]}") from None
        return [Annotation(**{**r, "created_at": _utc(r["created_at"])}) for r in rows]

    @property
    def where(self) -> str:
        return self.store.where

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back without a zone; they were stored in UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value
