"""Analysts' annotations in the tracking database: the `annotations` table arrives by migration 2,
a database written before it keeps its runs, and flags and scores are stored with who and when, in
SQLite and in PostgreSQL (started through the project's own `LocalPostgres`)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, inspect, select
from test_tracking import pg_admin, pg_server, pg_url  # noqa: F401 - the PostgreSQL fixtures

from reasoning_dspy.tracking import AnnotationStore, Tracker, TrackingError
from reasoning_dspy.tracking.migrate import MIGRATIONS
from reasoning_dspy.tracking.schema import SCHEMA_VERSION, build_schema
from reasoning_dspy.tracking.store import _engine
from reasoning_dspy.tracking.urls import resolve_url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tracking.sqlite'}"
    return request.getfixturevalue("pg_url")


def _version_1_database(url: str) -> None:
    """A database exactly as reasoning-dspy wrote it before annotations existed (schema v1), with one run."""
    schema = build_schema(384, 64)
    engine = _engine(resolve_url(url), 5.0)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
        schema.schema_version.create(conn)
        MIGRATIONS[1][1](conn, schema)
        conn.execute(insert(schema.schema_version).values(version=1, description=MIGRATIONS[1][0],
                                                          applied_at=dt.datetime.now(dt.timezone.utc)))
        conn.execute(insert(schema.runs).values(id="old-run", name="before annotations", kind="optimize",
                                                status="finished", config={}, started_at=dt.datetime.now(dt.timezone.utc)))
        assert not inspect(conn).has_table("annotations")
    engine.dispose()


def test_a_version_1_database_gains_the_annotations_table_and_keeps_its_runs(db_url, tmp_path):
    _version_1_database(db_url)
    with AnnotationStore.open(db_url) as notes:
        with notes.store.engine.connect() as conn:
            versions = conn.execute(select(notes.store.schema.schema_version.c.version)).scalars().all()
            runs = conn.execute(select(notes.store.schema.runs.c.name)).scalars().all()
        assert sorted(versions) == list(range(1, SCHEMA_VERSION + 1)) and SCHEMA_VERSION == 2
        assert runs == ["before annotations"]
        notes.add("flag", "Is 91 prime?", author="ana", run_id="old-run", note="look again")
    with Tracker.open(tmp_path / "journal.jsonl", db_url) as tracker:
        run = tracker.start_run("after", kind="steer")  # the tracker still writes as before
        tracker.finish_run(run)
    with AnnotationStore.open(db_url) as notes:
        [flag] = notes.list(run_id="old-run")
    assert (flag.kind, flag.author, flag.note, flag.prompt) == ("flag", "ana", "look again", "Is 91 prime?")
    assert flag.created_at.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - flag.created_at).total_seconds()) < 120


def test_annotations_are_listed_newest_first_and_filtered(db_url):
    with AnnotationStore.open(db_url) as notes:
        notes.add("flag", "p1", author="ana", run_id="r1")
        notes.add("score", "p1", author="ben", run_id="r1", score=0.75, note="fine")
        notes.add("steer", "p2", author="ana", score=1.2, output="Wait, ...",
                  steering={"features": {"5": 0.5}, "units": "residual"})
        everything = notes.list()
        assert [a.kind for a in everything] == ["steer", "score", "flag"]
        assert [a.kind for a in notes.list(run_id="r1")] == ["score", "flag"]
        assert [a.prompt for a in notes.list(prompt="p2")] == ["p2"]
        assert everything[0].steering == {"features": {"5": 0.5}, "units": "residual"}
        assert everything[1].score == 0.75 and everything[1].author == "ben"


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(kind="like"), "kind must be one of flag, score, rescore, steer"),
    (dict(prompt="  "), "needs the prompt"),
    (dict(author=""), "needs its author"),
    (dict(kind="score"), "needs a score"),
    (dict(kind="score", score=float("inf")), "finite"),
])
def test_bad_annotations_are_refused_before_anything_is_written(tmp_path, kwargs, message):
    args = dict(kind="flag", prompt="Is 91 prime?", author="ana")
    args.update(kwargs)
    with AnnotationStore.open(f"sqlite:///{tmp_path / 't.sqlite'}") as notes:
        with pytest.raises(TrackingError, match=message):
            notes.add(args.pop("kind"), args.pop("prompt"), **args)
        assert notes.list() == []
