"""`reasoning-dspy study` end to end on tiny-random: every stage, the report, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reasoning_dspy.cli import app

CONFIG = Path(__file__).parent.parent / "experiments" / "configs" / "study-tiny.yaml"


def _study(*args: str):
    return CliRunner().invoke(app, ["study", str(CONFIG), *args])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    result = _study(f"out={out}", "n_test=10", "trace_instructions=[Answer directly., Check every step.]")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_study_runs_every_stage_and_reports_controls_with_intervals(study_dir):
    report = (study_dir / "report.md").read_text()
    for heading in ("## SAE", "## Top features by ReasonScore", "## Conditions", "### Difference from the baseline",
                    "### Top features minus random features", "## Example traces"):
        assert f"\n{heading}" in report
    assert (study_dir / "plots" / "dose_response.png").stat().st_size > 10_000
    page = (study_dir / "report.html").read_text()  # the same report, plots embedded
    assert page.count("data:image/png;base64,") == 3 and "src=\"plots/" not in page

    summary = json.loads((study_dir / "summary.json").read_text())
    kinds = [c["kind"] for c in summary["conditions"]]
    assert kinds == ["baseline", "top", "random", "negative"]
    top, random = summary["conditions"][1], summary["conditions"][2]
    assert not set(top["features"]) & set(random["features"])
    assert list(top["vs_random"]) == [random["name"]] and random["strength"] == top["strength"]
    for c in summary["conditions"]:
        for m in c["measures"].values():
            assert m["low"] <= m["value"] + 1e-9 and m["value"] <= m["high"] + 1e-9
        assert len(_rows(study_dir / "generations" / f"{c['name']}.jsonl")) == 10
    # the SAE's traces were answered under each trace instruction in turn; the test problems under none
    traces = _rows(study_dir / "traces.jsonl")
    dealt = [r["instruction"] for r in traces]
    assert abs(dealt.count("Answer directly.") - dealt.count("Check every step.")) <= 1 and len(set(dealt)) == 2
    assert "instruction" not in _rows(study_dir / "generations" / "baseline.jsonl")[0]
    sae = json.loads((study_dir / "sae" / "training_config.json").read_text())
    assert sae["val_tokens"] > 0 and 0 < sae["fvu_val"]  # FVU is measured on held-out tokens

    # steering reached the model: the steered features fire more under positive than negative strength
    assert top["measures"]["activation"]["value"] > summary["conditions"][3]["measures"]["activation"]["value"]

    # every generation is tracked (SQLite beside the study): traces and each condition, with top features
    from reasoning_dspy.tracking.store import Store
    from reasoning_dspy.tracking.urls import resolve_url

    store = Store.open(resolve_url(f"sqlite:///{study_dir.parent / 'tracking.sqlite'}"), embedding_dim=384,
                       activation_dim=64)
    with store.engine.connect() as conn:
        s = store.schema
        run = conn.execute(s.runs.select().where(s.runs.c.folder == str(study_dir))).mappings().one()
        generations = conn.execute(s.generations.select().where(s.generations.c.run_id == run["id"])).mappings().all()
        n_features = conn.execute(s.feature_activations.select()).all()
    store.close()
    labels = [g["label"] for g in generations]
    assert run["kind"] == "study" and run["status"] == "finished"
    assert labels.count("training traces") == len(traces)
    assert all(labels.count(c["name"]) == 10 for c in summary["conditions"])
    steered = next(g for g in generations if g["label"] == top["name"])
    assert steered["steering"]["features"] and steered["reasoning_activation"] is not None and n_features


@pytest.mark.slow
def test_study_resumes_only_what_is_missing_and_refuses_other_settings(study_dir):
    path = study_dir / "generations" / "baseline.jsonl"
    rows = _rows(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))  # as if interrupted after 4 problems
    untouched = study_dir / "generations" / "top@0.2.jsonl"
    before = untouched.stat().st_mtime_ns
    config = json.loads((study_dir / "config.json").read_text())
    config.pop("steer_skip")  # a setting added after the study ran counts as run at its default
    (study_dir / "config.json").write_text(json.dumps(config))

    result = _study(f"out={study_dir}", "n_test=10", "trace_instructions=[Answer directly., Check every step.]")
    assert result.exit_code == 0, result.output
    again = _rows(path)
    assert [r["id"] for r in again] == [r["id"] for r in rows]
    assert again[:4] == rows[:4]
    # greedy decoding: the regenerated problems say the same (activations agree up to batch-size float noise)
    assert [(r["text"], r["correct"], r["n_tokens"]) for r in again] == [(r["text"], r["correct"], r["n_tokens"]) for r in rows]
    assert [r["features_mean"] for r in again] == pytest.approx([r["features_mean"] for r in rows], rel=1e-3)
    assert untouched.stat().st_mtime_ns == before  # finished conditions are not generated again

    other = _study(f"out={study_dir}", "n_test=10", "trace_instructions=[Answer directly., Check every step.]",
                   "top_features=1")
    assert other.exit_code == 2 and "different settings (top_features)" in other.output


def test_study_cli_rejects_bad_configs(tmp_path):
    assert "n_test" in _study(f"out={tmp_path}", "n_test=0").output
    assert "not both" in _study(f"out={tmp_path}", "steer_skip=2", "steer_skip_lines=1").output
    result = CliRunner().invoke(app, ["study", "a.yaml", "b.yaml"])
    assert result.exit_code == 2 and "several files" in result.output
    result = CliRunner().invoke(app, ["study", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "not found" in result.output


def test_a_refused_config_writes_nothing_and_the_corrected_one_starts(tmp_path):
    from reasoning_dspy.study import StudyConfig
    from reasoning_dspy.study.runner import Study

    out = tmp_path / "study"
    result = _study(f"out={out}", "layer=99")
    assert result.exit_code == 2 and "layer 99 is out of range for tiny-random" in result.output
    assert not out.exists()  # no config.json left behind to refuse the corrected config with
    study = Study(StudyConfig.load(CONFIG, [f"out={out}", "layer=2", "n_train=2", "n_test=1"]), progress=False)
    assert study.layer == 2 and json.loads((out / "config.json").read_text())["layer"] == 2
    study.tracker.close()


def test_the_dose_response_plot_leaves_the_matplotlib_backend_alone(study_dir, tmp_path):
    import matplotlib

    from reasoning_dspy.study.report import plot_dose_response

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        path = plot_dose_response(json.loads((study_dir / "summary.json").read_text()), tmp_path / "dose.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_chat_program_sends_the_question_as_one_user_message(tmp_path):
    from reasoning_dspy.engine import SteeredEngine
    from reasoning_dspy.program.evaluation import CHAT_SUFFIX
    from reasoning_dspy.study import StudyConfig
    from reasoning_dspy.study.runner import Study

    cfg = StudyConfig.load(CONFIG, [f"out={tmp_path}", "program=chat", "n_train=3", "n_test=1"])
    study = Study(cfg, progress=False)
    study.stage_traces()
    engine = SteeredEngine(study.loaded.model, study.loaded.tokenizer, max_tokens=cfg.max_tokens)
    try:
        direct = engine.generate([f"{p.question} {CHAT_SUFFIX}" for p in study.train])
    finally:
        engine.close()
    assert [r["text"] for r in study.traces] == [d.text for d in direct]  # exactly that prompt, greedy
    assert all(r["answer"] is None and r["n_tokens"] > 0 for r in study.traces)


def test_the_programs_instruction_reaches_the_model(tmp_path):
    from reasoning_dspy.study import StudyConfig
    from reasoning_dspy.study.runner import Study

    cfg = StudyConfig.load(CONFIG, [f"out={tmp_path}", "n_train=2", "n_test=1", "instruction=Check every step."])
    study = Study(cfg, progress=False)
    lm = study.lm()
    try:
        study.generate(lm, study.train, None, tmp_path / "rows.jsonl", "rows")
        prompts = [h["messages"][0]["content"] for h in lm.history]
    finally:
        from reasoning_dspy.program.lm import engine_of

        engine_of(lm).close()
    assert len(prompts) == 2 and all("Check every step." in p for p in prompts)


def test_ship_copies_the_studys_sae_and_scores_so_they_load(study_dir, tmp_path):
    from reasoning_dspy.features.reasonscore import FeatureScores
    from reasoning_dspy.reasoner.ship import ship_study
    from reasoning_dspy.sae import load_sae

    folder = ship_study(study_dir, tmp_path / "shipped")
    assert folder == tmp_path / "shipped" / "sae"
    assert torch.equal(load_sae(folder).W_dec, load_sae(study_dir / "sae").W_dec)
    assert torch.equal(FeatureScores.load(folder / "scores").reason_score,
                       FeatureScores.load(study_dir / "scores").reason_score)
    with pytest.raises(FileNotFoundError, match="scores"):
        ship_study(tmp_path / "shipped", tmp_path / "again")


@pytest.mark.slow
def test_an_interrupted_study_has_every_condition_on_the_same_problems(tmp_path, monkeypatch):
    from reasoning_dspy.study import StudyConfig, runner
    from reasoning_dspy.study.runner import Study

    monkeypatch.setattr(runner, "CHUNK", 4)  # 10 test problems: rounds of 4, 4 and 2
    cfg = StudyConfig.load(CONFIG, [f"out={tmp_path / 'study'}", "n_test=10", "steer_tokens=3"])
    summarize = Study.summarize

    def stop_after_the_first_round(self, path):
        summarize(self, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(Study, "summarize", stop_after_the_first_round)
    with pytest.raises(KeyboardInterrupt):
        Study(cfg, progress=False).run()
    out = tmp_path / "study"
    names = [c["name"] for c in json.loads((out / "conditions.json").read_text())]
    assert len(names) == 4 and all(len(_rows(out / "generations" / f"{n}.jsonl")) == 4 for n in names)
    partial = json.loads((out / "partial_summary.json").read_text())
    assert partial["n_problems"] == 4 and [c["name"] for c in partial["conditions"]] == names

    monkeypatch.setattr(Study, "summarize", summarize)
    Study(cfg, progress=False).run()  # resumes: the rest of the problems, then the final summary
    assert all(len(_rows(out / "generations" / f"{n}.jsonl")) == 10 for n in names)
    assert json.loads((out / "summary.json").read_text())["n_problems"] == 10
    assert not (out / "partial_summary.json").exists()
    steered = _rows(out / "generations" / f"{names[1]}.jsonl")  # every condition steered its first 3 tokens only
    assert "first 3 generated tokens" in (out / "report.md").read_text() and steered
