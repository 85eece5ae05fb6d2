"""The database side of tracking: open (check, connect, migrate) and write records with
insert-or-ignore, so the same record written twice is stored once; a generation marked `replace`
updates the stored one instead (last write wins, also when the journal is replayed in order)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from reasoning_dspy.tracking.errors import StoreUnavailable, TrackingError
from reasoning_dspy.tracking.migrate import migrate
from reasoning_dspy.tracking.records import Generation, RunEnd, RunStart, Trial
from reasoning_dspy.tracking.schema import Schema, build_schema
from reasoning_dspy.tracking.urls import display, is_postgres

logger = logging.getLogger(__name__)

Record = RunStart | RunEnd | Trial | Generation


class RecordRejected(ValueError):
    """The database refused a record itself (not a lost connection): retrying will not help."""


def _when(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc)


def _reason(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unavailable(err: BaseException) -> bool:
    if isinstance(err, OperationalError | InterfaceError | DisconnectionError | PoolTimeout):
        return True
    return isinstance(err, DBAPIError) and bool(err.connection_invalidated)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _engine(url: URL, connect_timeout: float) -> Engine:
    if is_postgres(url):
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2,
                             connect_args={"connect_timeout": max(1, int(connect_timeout)),
                                           "application_name": "reasoning-dspy tracking"})
    path = Path(url.database or "")
    if path.is_dir():
        raise TrackingError(f"SQLite path {str(path)!r} is a folder; give a file such as {path / 'tracking.sqlite'}")
    if not path.parent.is_dir():
        if path.parent.exists():
            raise TrackingError(f"SQLite path {str(path)!r}: {str(path.parent)!r} is not a folder")
        path.parent.mkdir(parents=True)
    engine = create_engine(url, connect_args={"timeout": connect_timeout})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Store:
    """One tracking database: SQLite or PostgreSQL with pgvector."""

    def __init__(self, url: URL, schema: Schema, engine: Engine):
        self.url, self.schema, self.engine = url, schema, engine

    @classmethod
    def open(cls, url: URL, *, embedding_dim: int, activation_dim: int, connect_timeout: float = 5.0) -> Store:
        """Connect and migrate; `TrackingError` (nothing written) when the database cannot be used."""
        where = display(url)
        engine = _engine(url, connect_timeout)
        schema = build_schema(embedding_dim, activation_dim)
        try:
            migrate(engine, schema, where=where)
        except TrackingError:
            engine.dispose()
            raise
        except SQLAlchemyError as err:
            engine.dispose()
            verb = "cannot connect to" if _unavailable(err) else "cannot set up tracking tables in"
            raise TrackingError(f"{verb} {where}: {_reason(err)}") from None
        return cls(url, schema, engine)

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def where(self) -> str:
        return display(self.url)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing --------------------------------------------------------------------------------
    def write(self, records: Sequence[Record]) -> None:
        """Store `records` in one transaction; already-stored ones are skipped. Raises
        `StoreUnavailable` when the database cannot be reached, `RecordRejected` when it refuses
        the data itself."""
        if not records:
            return
        rows = self._rows([r for r in records if not getattr(r, "replace", False)])
        replacing = self._rows([r for r in records if getattr(r, "replace", False)])
        try:
            with self.engine.begin() as conn:
                for table in self.schema.data_tables:
                    if rows[table.name]:
                        conn.execute(self._insert_ignore(table), rows[table.name])
                self._replace(conn, replacing)
                for end in (r for r in records if isinstance(r, RunEnd)):
                    conn.execute(update(self.schema.runs).where(self.schema.runs.c.id == end.id).values(
                        status=end.status, result=end.result, finished_at=_when(end.finished_at)))
        except SQLAlchemyError as err:
            if _unavailable(err):
                raise StoreUnavailable(f"{self.where}: {_reason(err)}") from err
            raise RecordRejected(_reason(err)) from err

    def _insert(self, table: Any) -> Any:
        if self.postgres:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def _insert_ignore(self, table: Any) -> Any:
        return self._insert(table).on_conflict_do_nothing()

    def _replace(self, conn: Any, rows: dict[str, list[dict[str, Any]]]) -> None:
        """Write generations over the stored ones with the same id, their feature activations with them."""
        generations, features = self.schema.generations, self.schema.feature_activations
        for row in rows["generations"]:  # one at a time: a later record of the same id must win
            stmt = self._insert(generations)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[generations.c.id],
                set_={c.name: stmt.excluded[c.name] for c in generations.columns if c.name != "id"}), [row])
            conn.execute(delete(features).where(features.c.generation_id == row["id"]))
        if rows["feature_activations"]:
            conn.execute(self._insert(features), rows["feature_activations"])

    def _rows(self, records: Sequence[Record]) -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in self.schema.data_tables}
        for r in records:
            if isinstance(r, RunStart):
                rows["runs"].append({"id": r.id, "name": r.name, "kind": r.kind, "status": "running",
                                     "folder": r.folder, "config": r.config, "result": None,
                                     "started_at": _when(r.started_at), "finished_at": None})
            elif isinstance(r, Trial):
                rows["trials"].append({**r.model_dump(exclude={"type", "created_at"}),
                                       "created_at": _when(r.created_at)})
            elif isinstance(r, Generation):
                rows["generations"].append({**r.model_dump(exclude={"type", "created_at", "features", "replace"}),
                                            "created_at": _when(r.created_at)})
                rows["feature_activations"].extend({"generation_id": r.id, "feature": int(f), "value": float(v)}
                                                   for f, v in r.features.items())
        return rows

    # -- reading ---------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Rows per data table."""
        with self.engine.connect() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in self.schema.data_tables}

    def ids(self, table: str) -> list[str]:
        """Every primary key of `table` (generations, trials or runs), for checks and tests."""
        t = self.schema.metadata.tables[table]
        with self.engine.connect() as conn:
            return list(conn.execute(select(t.c.id)).scalars())
