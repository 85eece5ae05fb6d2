"""`db`: the local PostgreSQL with pgvector that tracks runs."""

from __future__ import annotations

from pathlib import Path

import typer

from reasoning_dspy.cli._common import (
    fail,
)

db_app = typer.Typer(help="A local PostgreSQL with pgvector for run tracking (127.0.0.1 only, data in runs/postgres).",
                     no_args_is_help=True)
_DB_ROOT = typer.Option(Path("runs/postgres"), "--root", help="folder of the server's data, log and port")


@db_app.command("start")
def db_start(
    root: Path = _DB_ROOT,
    port: int | None = typer.Option(None, help="TCP port on 127.0.0.1 (default: the one used before, else a free one)"),
) -> None:
    """Start the local PostgreSQL (created on first use) and print its URL, e.g.
    `export DATABASE_URL=$(reasoning-dspy db start)`."""
    from reasoning_dspy.tracking import LocalPostgres, TrackingError

    try:
        url = LocalPostgres(root).start(port)
    except TrackingError as err:
        fail(str(err))
    typer.echo(url)


@db_app.command("stop")
def db_stop(root: Path = _DB_ROOT) -> None:
    """Stop the local PostgreSQL (its data stays in ROOT/data)."""
    from reasoning_dspy.tracking import LocalPostgres, TrackingError

    try:
        stopped = LocalPostgres(root).stop()
    except TrackingError as err:
        fail(str(err))
    typer.echo("stopped" if stopped else f"not running ({root})")


@db_app.command("status")
def db_status(root: Path = _DB_ROOT) -> None:
    """Whether the local PostgreSQL runs, with its URL and data folder; exit code 1 when it does not."""
    from reasoning_dspy.tracking import LocalPostgres

    status = LocalPostgres(root).status()
    if status.running:
        typer.echo(f"running  pid {status.pid}  {status.url}  data {status.data}")
        return
    typer.echo(f"not running  data {status.data}")
    raise typer.Exit(code=1)


@db_app.command("replay")
def db_replay(
    journals: list[Path] = typer.Argument(..., help="tracking journals (e.g. runs/NAME/TIMESTAMP/tracking.jsonl)"),
    database_url: str | None = typer.Option(None, help="target database (default: $DATABASE_URL, else "
                                            "runs/tracking.sqlite)"),
    embedding_dim: int = typer.Option(384, help="prompt embedding length the journal was written with"),
    activation_dim: int = typer.Option(64, help="feature-activation vector length the journal was written with"),
) -> None:
    """Write the records of journals that the database does not hold yet (safe to repeat: each
    record is stored once)."""
    from reasoning_dspy.tracking import Tracker, TrackingError

    for journal in journals:
        if not journal.is_file():
            fail(f"no journal at {str(journal)!r}")
        try:
            tracker = Tracker.open(journal, database_url, embedding_dim=embedding_dim, activation_dim=activation_dim)
        except TrackingError as err:
            fail(str(err))
        left = tracker.pending
        tracker.close()
        if left:
            fail(f"{journal}: {left} records could not be written; is the database running?")
        typer.echo(f"{journal}: up to date in {tracker.store.where}")
