"""`reasoning-dspy optimize`: configs validated before anything is written, a full run on tiny-random
with the planted SAE, and a killed run that resumes to the same result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from experiments import ExperimentConfigError, load_experiment, run_experiment
from reasoning_dspy.cli import app
from reasoning_dspy.sae import planted

TINY = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "optimize-tiny.yaml"


def _test_questions() -> list[str]:
    cfg = load_experiment(TINY)
    from reasoning_dspy.problems import make_problems

    return [p.question for p in make_problems(cfg.dataset.n_test, split="test", seed=cfg.seed)]


def _run(tmp_path: Path, *overrides: str) -> Path:
    return run_experiment(load_experiment(TINY, [f"out={tmp_path}", *overrides]), progress=False)


@pytest.mark.parametrize(("override", "field", "message"), [
    ("optimizer.name=anneal", "optimizer.name", "Input should be 'reasoning', 'copro' or 'miprov2'"),
    ("dataset.name=missing.jsonl", "dataset", "dataset file 'missing.jsonl' does not exist"),
    ("dataset.name=gsm9k", "dataset", "unknown dataset 'gsm9k'"),
    ("dataset.n_train=many", "dataset.n_train", "valid integer"),
    ("metric.accuracy_margin=-1", "metric.accuracy_margin", "greater than or equal to 0"),
    ("seed=[1, 2]", "seed", "valid integer"),
    ("dataset.test_split=train", "dataset", "must be one the optimizer never sees"),
    ("surprise=1", "surprise", "Extra inputs are not permitted"),
])
def test_a_bad_config_names_the_field(tmp_path, override, field, message):
    with pytest.raises(ExperimentConfigError) as err:
        load_experiment(TINY, [f"out={tmp_path}", override])
    assert field in str(err.value) and message in str(err.value)
    assert not any(tmp_path.iterdir())


def test_a_feature_outside_the_sae_is_refused_before_anything_is_written(tmp_path):
    cfg = load_experiment(TINY, [f"out={tmp_path}", "steering.features=[3, 99]"])
    with pytest.raises(ExperimentConfigError, match=r"steering.features: \[99\] are outside the SAE \(d_sae=16"):
        run_experiment(cfg, progress=False)
    assert not any(tmp_path.iterdir())
    result = CliRunner().invoke(app, ["optimize", str(TINY), f"out={tmp_path}", "optimizer.name=anneal"])
    assert result.exit_code != 0 and "optimizer.name" in result.output and not any(tmp_path.iterdir())


def test_a_run_writes_config_trials_program_and_report(tmp_path):
    folder = _run(tmp_path)
    assert folder.parent == tmp_path / "optimize-tiny"
    for name in ("config.yaml", "trials.jsonl", "program.json", "heldout.json", "result.json", "report.md",
                 "trials.png", "pareto.png", "heldout.png"):
        assert (folder / name).is_file(), name
    assert yaml.safe_load((folder / "config.yaml").read_text())["optimizer"]["n_trials"] == 12
    trials = [json.loads(line) for line in (folder / "trials.jsonl").read_text().splitlines()]
    assert len(trials) == 12 and {"candidate", "score", "activation", "accuracy", "tokens", "wall_s"} <= set(trials[0])
    program = json.loads((folder / "program.json").read_text())
    assert str(planted.PUSH) in program["steering"]["features"]
    held = json.loads((folder / "heldout.json").read_text())["summary"]
    # held out, the steered program's reasoning activation is far above the baseline's, CI above 0
    assert held["steered"]["minus_baseline"]["activation"]["low"] > 0.05
    report = (folder / "report.md").read_text()
    assert "Best trial" in report and "![Pareto front](pareto.png)" in report
    assert (folder / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # the run is tracked in SQLite with real sentence embeddings: a reworded held-out question finds its original
    from reasoning_dspy.tracking import Tracker

    question = _test_questions()[5]
    reworded = "Please tell me: " + question.lower().rstrip("?") + "?"
    with Tracker.open(tmp_path / "query.jsonl", f"sqlite:///{tmp_path / 'tracking.sqlite'}", embedder="minilm") as t:
        best = t.similar_prompts(reworded, k=3)[0]
    assert best.prompt == question and 0 < best.distance < 0.2


def test_a_killed_run_resumes_from_its_journal(tmp_path):
    whole = _run(tmp_path / "a")
    folder = _run(tmp_path / "b")
    # what a kill in the second batch leaves behind: four trials, half a line, no program or report
    lines = (folder / "trials.jsonl").read_text().splitlines(keepends=True)
    (folder / "trials.jsonl").write_text("".join(lines[:4]) + lines[4][:50])
    for name in ("program.json", "heldout.json", "result.json", "report.md"):
        (folder / name).unlink()
    again = _run(tmp_path / "b")
    assert again == folder  # the unfinished run was resumed, not started anew
    strip = lambda f: [{k: v for k, v in json.loads(x).items() if k != "wall_s"}  # noqa: E731
                       for x in (f / "trials.jsonl").read_text().splitlines()]
    assert strip(again) == strip(whole)
    assert (again / "program.json").read_text() == (whole / "program.json").read_text()
    fresh = run_experiment(load_experiment(TINY, [f"out={tmp_path / 'b'}"]), new=True, progress=False)
    assert fresh != folder


@pytest.mark.parametrize("name", ["copro", "miprov2"])
def test_dspy_optimizers_run_as_experiments_with_the_same_budget(tmp_path, name):
    from optimizers import LIBRARY

    folder = _run(tmp_path, f"optimizer.name={name}", "optimizer.n_trials=6")
    trials = {t["candidate"]["instruction"]: t for t in map(json.loads, (folder / "trials.jsonl").read_text().splitlines())}
    own = "Given the fields `question`, produce the fields `answer`."  # DSPy's default: the unoptimized program
    library = [x for texts in LIBRARY.values() for x in texts]
    # offline, the pool proposes the library in order, each instruction once and never the program's own
    assert own in trials and set(trials) - {own} <= set(library[:6])
    assert all(not t["candidate"]["features"] for t in trials.values())
    if name == "copro":  # breadth 3, depth 2: the program's own and 2 + 3 proposals, six distinct trials
        assert set(trials) == {own, *library[:5]}
    returned = json.loads((folder / "program.json").read_text())["program.predict"]["signature"]["instructions"]
    report = (folder / "report.md").read_text()
    best = next(line for line in report.splitlines() if line.startswith("**Best trial**"))
    # the best is the program the optimizer returned; the baseline is the unoptimized program's trial
    assert best.startswith(f"**Best trial** #{trials[returned]['number']}:")
    assert f"(baseline {trials[own]['score']:.4g})" in best and "optimizer `" + name + "`" in report


def test_miprov2_asked_for_more_candidates_than_the_pool_holds_names_the_setting(tmp_path):
    """Offline, the library's 12 instructions are MIPROv2's proposals: asking for 13 per predictor is a
    config error that names the setting, not an exhausted pool deep inside DSPy."""
    with pytest.raises(ExperimentConfigError, match=r"optimizer.settings.num_candidates: .*num_candidates=13 .*"
                                                   r"pool has 12 .* num_candidates=12 or fewer"):
        _run(tmp_path, "optimizer.name=miprov2", "optimizer.n_trials=6", "optimizer.settings={num_candidates: 13}")


def test_the_report_takes_the_returned_program_and_the_unoptimized_baseline():
    from experiments.report import returned_trial, unoptimized_trial
    from optimizers import Candidate, TrialRecord

    def trial(number, instruction, score, features=()):
        return TrialRecord(number=number, params={}, score=score, activation=score, accuracy=0.5, tokens=10.0,
                           reflect=0.0, word_rate=0.0, n=4, wall_s=0.0, candidate=Candidate(
                               instruction=instruction, features=features, strength=0.5 if features else 0.0))

    trials = [trial(0, "Be brief.", 0.3), trial(1, "Own.", 0.1), trial(2, "Top.", 0.9), trial(3, "Own.", 0.5, (7,))]
    heldout = {"instruction": {"baseline": "Own.", "optimized": "Own."},
               "steering": trials[3].candidate.steering().model_dump(mode="json")}
    assert unoptimized_trial(trials, heldout).number == 1  # not trials[0]
    assert returned_trial(trials, heldout).number == 3  # what the optimizer returned, not the top score


def test_the_prompt_filter_skips_candidates_and_says_why(tmp_path):
    overrides = ["optimizer.prompt_filter=true", "optimizer.steer=false", "optimizer.n_trials=4",
                 'optimizer.instructions=["Check every step before you answer!", "Write a poem about the sea."]']
    first = _run(tmp_path, *overrides)
    skipped = {d["prompt"]: d for d in json.loads((first / "skipped.json").read_text())}
    assert skipped["Check every step before you answer!"]["verdict"] == "duplicate"
    assert skipped["Write a poem about the sea."]["verdict"] == "off_topic"
    trials = [json.loads(line) for line in (first / "trials.jsonl").read_text().splitlines()]
    assert not {t["candidate"]["instruction"] for t in trials} & set(skipped)
    assert "Skipped before evaluation" in (first / "report.md").read_text()
    # a later run of the same experiment skips what the first evaluated, reusing its recorded score
    second = run_experiment(load_experiment(TINY, [f"out={tmp_path}", *overrides]), new=True, progress=False)
    again = {d["prompt"]: d for d in json.loads((second / "skipped.json").read_text())}
    evaluated = {t["candidate"]["instruction"]: t["score"] for t in trials[1:]}
    for instruction, score in evaluated.items():
        assert again[instruction]["verdict"] == "duplicate" and again[instruction]["score"] == pytest.approx(score)
    # and the tracking database holds each skipped candidate as a trial with its reason
    from reasoning_dspy.tracking.store import Store
    from reasoning_dspy.tracking.urls import resolve_url

    store = Store.open(resolve_url(f"sqlite:///{tmp_path / 'tracking.sqlite'}"), embedding_dim=384, activation_dim=64)
    with store.engine.connect() as conn:
        rows = conn.execute(store.schema.trials.select()).mappings().all()
    store.close()
    reasons = [t["extra"]["reason"] for t in rows if t["extra"].get("status") == "skipped"]
    assert any("off-topic" in r for r in reasons) and any("near-duplicate" in r for r in reasons)


def test_a_prompt_filtered_run_resumes_after_a_kill_in_the_held_out_stage(tmp_path):
    """The filter learns the evaluated instructions before the held-out stage; a run killed there
    must still resume with the pool its journal indexes, not the smaller one the filter now gives."""
    overrides = ["optimizer.prompt_filter=true", "optimizer.steer=false", "optimizer.n_trials=4"]
    whole = _run(tmp_path / "a", *overrides)
    folder = _run(tmp_path / "b", *overrides)
    for name in ("program.json", "heldout.json", "result.json", "report.md"):  # killed while held out
        (folder / name).unlink()
    again = _run(tmp_path / "b", *overrides)
    assert again == folder
    strip = lambda f: [{k: v for k, v in json.loads(x).items() if k != "wall_s"}  # noqa: E731
                       for x in (f / "trials.jsonl").read_text().splitlines()]
    assert strip(again) == strip(whole) and len(strip(again)) == 4
    assert not (again / "skipped.json").exists()  # what it evaluated itself is not skipped as a near-duplicate
    assert (again / "pool.json").read_text() == (whole / "pool.json").read_text()
    assert (again / "program.json").read_text() == (whole / "program.json").read_text()


_TOGETHER = """
import sys, time
from pathlib import Path
import experiments.heldout, experiments.optimize, experiments.report, optimizers, reasoning_dspy.program.lm  # noqa
from reasoning_dspy.cli import app
barrier, me = Path(sys.argv[1]), sys.argv[2]
(barrier / me).touch()
while len(list(barrier.iterdir())) < 2:  # both processes imported everything: start together
    time.sleep(0.005)
app(sys.argv[3:])
"""


def test_two_runs_started_together_never_share_a_folder(tmp_path):
    """Two processes start the same config at once: each either gets a run folder of its own or a
    clear refusal, each folder holds each trial once, and the config runs again afterwards."""
    import os
    import subprocess
    import sys

    barrier = tmp_path / "barrier"
    barrier.mkdir()
    args = ["optimize", str(TINY), f"out={tmp_path / 'runs'}", "optimizer.n_trials=8"]
    procs = [subprocess.Popen([sys.executable, "-c", _TOGETHER, str(barrier), str(i), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1],
                              env={**os.environ, "OMP_NUM_THREADS": "1"})  # two threads on a busy CPU crawl
             for i in range(2)]
    outs = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    for code, _, err in outs:
        assert code in (0, 2) and "Traceback" not in err, err
        if code == 2:
            assert "is in progress in another process" in err and "--new" in err, err
    assert any(code == 0 for code, _, _ in outs)
    folders = sorted(p for p in (tmp_path / "runs" / "optimize-tiny").iterdir() if p.is_dir())
    assert len(folders) == sum(code == 0 for code, _, _ in outs)
    for folder in folders:
        numbers = [json.loads(x)["number"] for x in (folder / "trials.jsonl").read_text().splitlines()]
        assert numbers == list(range(8)) and (folder / "result.json").is_file()
    result = CliRunner().invoke(app, args)  # and the config runs again: a new run, the others are finished
    assert result.exit_code == 0, result.output


def test_dataset_families_pick_the_problems_and_an_unknown_one_is_named(tmp_path):
    from experiments.setup import _examples

    cfg = load_experiment(TINY, [f"out={tmp_path}", "dataset.families=[chains]"])
    from reasoning_dspy.problems import make_problems

    _, test = _examples(cfg)
    chains = make_problems(cfg.dataset.n_test, split="test", seed=cfg.seed, families=["chains"])
    assert [ex.question for ex in test] == [p.question for p in chains] != _test_questions()
    with pytest.raises(Exception, match=r"unknown problem families \['poems'\]"):
        _examples(load_experiment(TINY, [f"out={tmp_path}", "dataset.families=[poems]"]))
