"""Server-level PostgreSQL chores (databases, not tables), for the local server, tests and
benchmarks. Tracking tables are never touched here: they belong to `schema` and `migrate`."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from reasoning_dspy.tracking.errors import TrackingError


def _connect(admin_url: str):
    import psycopg

    url = make_url(admin_url)
    try:
        return psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                               dbname=url.database, autocommit=True, connect_timeout=5, **dict(url.query))
    except psycopg.OperationalError as err:
        raise TrackingError(f"cannot connect to {url.render_as_string(hide_password=True)}: "
                            f"{str(err).strip().splitlines()[0]}") from None


def create_database(admin_url: str, name: str, *, owner: str | None = None, exist_ok: bool = False) -> str:
    """Create database `name` on the server of `admin_url` (a superuser connection); returns its URL."""
    from psycopg import sql

    with _connect(admin_url) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
        if exists and not exist_ok:
            raise TrackingError(f"database {name!r} already exists")
        if not exists:
            stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if owner is not None:
                stmt = stmt + sql.SQL(" OWNER {}").format(sql.Identifier(owner))
            conn.execute(stmt)
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name` (closing its connections first)."""
    from psycopg import sql

    with _connect(admin_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def create_role(admin_url: str, name: str, password: str | None = None) -> None:
    """A login role without superuser rights (it cannot create untrusted extensions such as vector),
    with `password` when the server asks for one."""
    from psycopg import sql

    with _connect(admin_url) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(name)))
        if password is not None:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
