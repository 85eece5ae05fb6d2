"""The explicit migration step: bring a database to `SCHEMA_VERSION`, one numbered migration at a
time, each recorded in `schema_version`, all in one transaction (on PostgreSQL a failure leaves the
database as it was). The vector sizes are fixed when the schema is created and checked after."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import DDL, Connection, Engine, column, func, insert, inspect, select, table

from reasoning_dspy.tracking.errors import TrackingError
from reasoning_dspy.tracking.schema import SCHEMA_VERSION, Schema

#: Serialises concurrent migrations of one PostgreSQL database (an arbitrary, fixed lock key).
_LOCK_KEY = 7_310_455_201
_CREATE_VECTOR = DDL("CREATE EXTENSION IF NOT EXISTS vector")
_pg_extension = table("pg_extension", column("extname"), column("extversion"))

INSTALL_PGVECTOR = (
    "install pgvector on the server (Debian/Ubuntu: apt install postgresql-<major>-pgvector; others: "
    "https://github.com/pgvector/pgvector#installation), then run CREATE EXTENSION vector; as a superuser "
    "in that database; or start a local PostgreSQL with pgvector: reasoning-dspy db start")


def _v1(conn: Connection, schema: Schema) -> None:
    schema.metadata.create_all(conn, tables=[schema.settings, *schema.data_tables])
    conn.execute(insert(schema.settings), [
        {"key": "embedding_dim", "value": str(schema.embedding_dim)},
        {"key": "activation_dim", "value": str(schema.activation_dim)},
    ])


def _v2(conn: Connection, schema: Schema) -> None:
    schema.annotations.create(conn)


#: version -> (description, step). Append new versions; never edit a released one.
MIGRATIONS: dict[int, tuple[str, Callable[[Connection, Schema], None]]] = {
    1: ("runs, trials, generations, feature activations; prompt and activation vectors", _v1),
    2: ("annotations: analysts' flags and manual scores, with who and when", _v2),
}
assert max(MIGRATIONS) == SCHEMA_VERSION


def vector_version(conn: Connection) -> str | None:
    """The installed pgvector version in this database, or None."""
    return conn.execute(select(_pg_extension.c.extversion).where(_pg_extension.c.extname == "vector")).scalar()


def _ensure_vector(conn: Connection, where: str) -> None:
    if vector_version(conn) is not None:
        return
    try:
        with conn.begin_nested():
            conn.execute(_CREATE_VECTOR)
    except Exception as err:  # noqa: BLE001 - any failure here means the same thing to the user
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
        raise TrackingError(f"{where} has no pgvector: CREATE EXTENSION vector failed ({reason}); "
                            f"{INSTALL_PGVECTOR}") from None


def current_version(conn: Connection, schema: Schema) -> int:
    """The highest applied migration (0 for an empty database)."""
    if not inspect(conn).has_table(schema.schema_version.name):
        return 0
    return conn.execute(select(func.max(schema.schema_version.c.version))).scalar() or 0


def migrate(engine: Engine, schema: Schema, *, where: str) -> int:
    """Apply every pending migration and check the vector sizes; returns the schema version.
    Raises `TrackingError` (the database unchanged) when pgvector is missing or the sizes differ."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        if postgres:
            conn.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
            _ensure_vector(conn, where)
        version = current_version(conn, schema)
        if version > SCHEMA_VERSION:
            raise TrackingError(f"{where} holds tracking schema v{version}, newer than this reasoning-dspy "
                                f"(v{SCHEMA_VERSION}); upgrade reasoning-dspy")
        if version == 0:
            schema.schema_version.create(conn)
        for number in range(version + 1, SCHEMA_VERSION + 1):
            description, step = MIGRATIONS[number]
            step(conn, schema)
            conn.execute(insert(schema.schema_version).values(
                version=number, description=description, applied_at=dt.datetime.now(dt.timezone.utc)))
        stored = dict(conn.execute(select(schema.settings.c.key, schema.settings.c.value)).all())
        for key, want in (("embedding_dim", schema.embedding_dim), ("activation_dim", schema.activation_dim)):
            if key in stored and int(stored[key]) != want:
                raise TrackingError(f"{where} was created with {key}={stored[key]}, but this tracker uses {want}; "
                                    f"set tracking {key}={stored[key]} or use another database")
    return SCHEMA_VERSION
