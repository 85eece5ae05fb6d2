"""Which database a tracker writes to: an argument, else `$DATABASE_URL`, else a SQLite file.

URLs are checked here, before any connection, so a typo is reported as such (never as a timeout)
and passwords never appear in messages.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from reasoning_dspy.tracking.errors import TrackingError

ENV_VAR = "DATABASE_URL"
DEFAULT_SQLITE = Path("runs") / "tracking.sqlite"
_EXAMPLES = "postgresql://USER@HOST:PORT/DBNAME or sqlite:///path/to/tracking.sqlite"


def resolve_url(database_url: str | None = None, *, default_sqlite: str | os.PathLike | None = None) -> URL:
    """The SQLAlchemy URL to use: `database_url`, else `$DATABASE_URL`, else SQLite at
    `default_sqlite` (`runs/tracking.sqlite`). PostgreSQL URLs get the psycopg 3 driver."""
    raw = database_url if database_url is not None else os.environ.get(ENV_VAR) or None
    if raw is None:
        return URL.create("sqlite", database=str(Path(default_sqlite or DEFAULT_SQLITE)))
    source = url_source(database_url)
    raw = raw.strip()
    if not raw:
        raise TrackingError(f"{source} is empty; give {_EXAMPLES}")
    if "://" not in raw:
        raise TrackingError(f"{source}={raw!r} is not a database URL; expected {_EXAMPLES}")
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError) as err:
        raise TrackingError(f"{source} is not a valid database URL ({err}); expected {_EXAMPLES}") from None
    backend = url.get_backend_name()
    if backend in ("postgres", "postgresql"):
        if url.drivername.split("+")[-1] not in ("postgres", "postgresql", "psycopg"):
            raise TrackingError(f"{source}: driver {url.drivername!r} is not supported; use postgresql:// "
                                "(psycopg 3)")
        if not url.host and not url.query.get("host"):
            raise TrackingError(f"{source}: {display(url)} names no host; expected {_EXAMPLES}")
        if not url.database:
            raise TrackingError(f"{source}: {display(url)} names no database; expected {_EXAMPLES}")
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise TrackingError(f"{source}: an in-memory SQLite database keeps nothing; give a file, "
                                "sqlite:///runs/tracking.sqlite")
        return url
    raise TrackingError(f"{source}: {backend!r} databases are not supported; use {_EXAMPLES}")


def url_source(database_url: str | None) -> str | None:
    """Where the URL came from, for messages: the argument, the environment, or None (the default)."""
    if database_url is not None:
        return "database_url"
    return f"${ENV_VAR}" if os.environ.get(ENV_VAR) else None


def display(url: URL) -> str:
    """The URL with any password masked, for messages and logs."""
    return url.render_as_string(hide_password=True)


def is_postgres(url: URL) -> bool:
    return url.get_backend_name() == "postgresql"
