"""The commands that track themselves. `reasoning-dspy optimize` records its run, every trial and
the held-out generations: in SQLite beside the runs by default, in PostgreSQL when the config names
one; a bad database stops the run before anything is written, and re-running the same folder
records nothing twice. `reasoning-dspy steer --track` records each answer with its features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_tracking import pg_admin, pg_server, pg_url  # noqa: F401 - the session PostgreSQL fixtures

from experiments import ExperimentConfigError, load_experiment, run_experiment
from experiments.runner import run_identity
from optimizers.trials import TrialRecord
from reasoning_dspy.tracking.store import Store
from reasoning_dspy.tracking.urls import resolve_url

TINY = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "optimize-tiny.yaml"
SMALL = ["optimizer.n_trials=4", "dataset.n_train=3", "dataset.n_test=4"]


def _stored(url: str):
    store = Store.open(resolve_url(url), embedding_dim=384, activation_dim=64)
    s = store.schema
    with store.engine.connect() as conn:
        rows = {t: conn.execute(getattr(s, t).select()).mappings().all() for t in ("runs", "trials", "generations")}
    store.close()
    return rows


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_optimize_run_is_tracked(tmp_path, request, backend):
    overrides = [f"out={tmp_path}", *SMALL]
    if backend == "postgres":
        url = request.getfixturevalue("pg_url")
        overrides.append(f"tracking.database_url={url}")
    else:
        url = f"sqlite:///{tmp_path / 'tracking.sqlite'}"  # the default: OUT/tracking.sqlite
    cfg = load_experiment(TINY, overrides)
    folder = run_experiment(cfg, progress=False)
    rows = _stored(url)
    (run,) = rows["runs"]
    assert (run["id"], run["name"], run["kind"], run["status"]) == (
        run_identity(folder), "optimize-tiny", "optimize", "finished")
    assert run["config"]["optimizer"]["n_trials"] == 4 and "tracking" not in run["config"]
    assert run["result"]["best"]["number"] == json.loads((folder / "result.json").read_text())["best"]["number"]
    journal = [TrialRecord.model_validate_json(x) for x in (folder / "trials.jsonl").read_text().splitlines()]
    trials = sorted(rows["trials"], key=lambda t: t["number"])
    assert [t["number"] for t in trials] == [t.number for t in journal]
    for stored, trial in zip(trials, journal, strict=True):  # every field of TrialRecord is kept
        assert stored["candidate"] == trial.candidate.model_dump(mode="json")
        assert (stored["score"], stored["accuracy"], stored["feasible"]) == pytest.approx(
            (trial.score, trial.accuracy, trial.feasible))
    held = json.loads((folder / "heldout.json").read_text())
    gens = rows["generations"]
    assert len(gens) == 3 * 4 and {g["label"] for g in gens} == {"heldout/baseline", "heldout/optimized",
                                                                  "heldout/steered"}
    steered = sorted((g for g in gens if g["label"] == "heldout/steered"), key=lambda g: g["index"])
    assert [g["reasoning_activation"] for g in steered] == pytest.approx(held["rows"]["steered"]["activation"])
    assert steered[0]["steering"] == held["steering"] and steered[0]["output"] == held["examples"]["steered"][0]
    assert all(g["steering"] is None for g in gens if g["label"] == "heldout/baseline")
    assert all(g["prompt"] and g["prompt_embedding"] is not None for g in gens)
    if backend == "sqlite":  # the same folder run again (a resume) records nothing twice
        run_experiment(cfg, folder=folder, progress=False)
        again = _stored(url)
        assert [len(again[t]) for t in ("runs", "trials", "generations")] == [1, len(journal), 12]


def test_a_bad_tracking_database_stops_the_run_before_anything_is_written(tmp_path):
    cfg = load_experiment(TINY, [f"out={tmp_path}", *SMALL, "tracking.database_url=mysql://x@y/z"])
    with pytest.raises(ExperimentConfigError, match="tracking: database_url: 'mysql' databases are not supported"):
        run_experiment(cfg, progress=False)
    assert not any(tmp_path.iterdir())


def test_steer_track_records_answers_and_their_features(tiny, tiny_cache, tmp_path, monkeypatch):
    import warnings

    from typer.testing import CliRunner

    from reasoning_dspy.cli import app
    from reasoning_dspy.features.reasonscore import VocabularyWarning, score_features
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    sae = train_sae(SAETrainConfig(cache=str(tiny_cache.path), out=str(tmp_path / "sae"), arch="topk", d_sae=64, k=8,
                                   batch_size=256, tokens=1024, log_every=4), tiny_cache, progress=False).sae
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VocabularyWarning)
        score_features(tiny_cache, sae, tokenizer=tiny.tokenizer, top_n=4, progress=False).save(tmp_path / "scores")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = CliRunner().invoke(app, ["steer", "--model", "tiny-random", "--sae", "sae", "--scores", "scores", "--top",
                                      "2", "--max-tokens", "8", "--prompt", "Is 91 prime?", "--prompt", "Why?",
                                      "--out", "steer.jsonl", "--track"])
    assert result.exit_code == 0, result.output
    assert "tracked 4 answers" in result.output and (tmp_path / "steer.tracking.jsonl").is_file()
    rows = _stored(f"sqlite:///{tmp_path / 'runs' / 'tracking.sqlite'}")
    assert [(r["kind"], r["status"]) for r in rows["runs"]] == [("steer", "finished")]
    gens = {(g["label"], g["index"]): g for g in rows["generations"]}
    out = [json.loads(line) for line in (tmp_path / "steer.jsonl").read_text().splitlines()]
    assert set(gens) == {("baseline", 0), ("steered", 0), ("baseline", 1), ("steered", 1)}
    assert gens[("steered", 1)]["output"] == out[1]["steered"] and gens[("baseline", 0)]["steering"] is None
    assert gens[("steered", 0)]["steering"]["features"] == out[0]["steering"]["features"]
    assert gens[("steered", 0)]["reasoning_activation"] == pytest.approx(out[0]["steered_activation"]["features_mean"])
    store = Store.open(resolve_url(f"sqlite:///{tmp_path / 'runs' / 'tracking.sqlite'}"), embedding_dim=384,
                       activation_dim=64)
    with store.engine.connect() as conn:
        features = conn.execute(store.schema.feature_activations.select()).mappings().all()
    store.close()
    stored = {(f["feature"], round(f["value"], 5)) for f in features if f["generation_id"] == gens[("steered", 0)]["id"]}
    assert stored == {(int(i), round(v, 5)) for i, v in out[0]["steered_activation"]["top_features"]}
