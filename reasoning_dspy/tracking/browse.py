"""Reading a tracking database back: its runs, each run's trials and generations, as plain rows.

`open_existing` opens a database with the vector sizes it was created with (read from its settings
table), so a reader never needs to know them; an empty database is set up with the defaults.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from sqlalchemy import column, func, inspect, select, table
from sqlalchemy.exc import SQLAlchemyError

from reasoning_dspy.tracking.config import ACTIVATION_DIM, EMBEDDING_DIM
from reasoning_dspy.tracking.errors import TrackingError
from reasoning_dspy.tracking.store import Store, _engine
from reasoning_dspy.tracking.urls import display, resolve_url, url_source

_settings = table("tracking_settings", column("key"), column("value"))


def stored_dims(url: Any) -> tuple[int, int] | None:
    """`(embedding_dim, activation_dim)` a database was created with; None when it holds no tracking tables."""
    engine = _engine(url, 5.0)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("tracking_settings"):
                return None
            rows = dict(conn.execute(select(_settings.c.key, _settings.c.value)).all())
    except SQLAlchemyError as err:
        raise TrackingError(f"cannot connect to {display(url)}: "
                            f"{str(getattr(err, 'orig', err)).strip().splitlines()[0]}") from None
    finally:
        engine.dispose()
    try:
        return int(rows["embedding_dim"]), int(rows["activation_dim"])
    except (KeyError, ValueError):
        return None


def open_existing(database_url: str | None = None, *, default_sqlite: str | os.PathLike | None = None) -> Store:
    """The tracking database at `database_url` (else `$DATABASE_URL`, else SQLite at `default_sqlite`),
    migrated to the current schema, with the vector sizes it was created with."""
    url = resolve_url(database_url, default_sqlite=default_sqlite)
    try:
        dims = stored_dims(url) or (EMBEDDING_DIM, ACTIVATION_DIM)
        return Store.open(url, embedding_dim=dims[0], activation_dim=dims[1])
    except TrackingError as err:
        source = url_source(database_url)
        raise TrackingError(f"{source}: {err}" if source else str(err)) from None


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    value = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value
    return value.isoformat(timespec="seconds")


def _read(store: Store, query: Any) -> list[dict[str, Any]]:
    try:
        with store.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings().all()]
    except SQLAlchemyError as err:
        raise TrackingError(f"cannot read {store.where}: "
                            f"{str(getattr(err, 'orig', err)).strip().splitlines()[0]}") from None


def list_runs(store: Store, *, limit: int = 500) -> list[dict[str, Any]]:
    """Runs, newest first, each with its number of trials and generations."""
    s = store.schema
    n_trials = select(func.count()).select_from(s.trials).where(s.trials.c.run_id == s.runs.c.id).scalar_subquery()
    n_gens = select(func.count()).select_from(s.generations).where(
        s.generations.c.run_id == s.runs.c.id).scalar_subquery()
    query = select(s.runs.c.id, s.runs.c.name, s.runs.c.kind, s.runs.c.status, s.runs.c.started_at,
                   s.runs.c.finished_at, s.runs.c.folder, n_trials.label("trials"), n_gens.label("generations")
                   ).order_by(s.runs.c.started_at.desc(), s.runs.c.id).limit(limit)
    rows = _read(store, query)
    for r in rows:
        r["started_at"], r["finished_at"] = _iso(r["started_at"]), _iso(r["finished_at"])
    return rows


def run_trials(store: Store, run_id: str) -> list[dict[str, Any]]:
    """A run's trials in order of their number."""
    t = store.schema.trials
    rows = _read(store, select(t).where(t.c.run_id == run_id).order_by(t.c.number))
    for r in rows:
        r["created_at"] = _iso(r["created_at"])
    return rows


def run_generations(store: Store, run_id: str, *, limit: int = 2000) -> list[dict[str, Any]]:
    """A run's generations (prompt, output, label, steering, reasoning activation, correctness), in order."""
    g = store.schema.generations
    query = select(g.c.id, g.c.label, g.c.index, g.c.trial_number, g.c.prompt, g.c.output, g.c.steering,
                   g.c.reasoning_activation, g.c.correct, g.c.tokens, g.c.created_at
                   ).where(g.c.run_id == run_id).order_by(g.c.label, g.c.index, g.c.created_at).limit(limit)
    rows = _read(store, query)
    for r in rows:
        r["created_at"] = _iso(r["created_at"])
    return rows
