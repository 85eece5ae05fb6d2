"""Run an optimization experiment: `reasoning-dspy optimize experiments/configs/<name>.yaml`.

    config -> model, SAE, scores, data -> optimizer trials (trials.jsonl) -> best program
           -> held-out: baseline vs optimized (instruction) vs steered (instruction + steering)
           -> report.md with plots

Everything is checked before anything is written. A run lives in `OUT/NAME/TIMESTAMP/`; re-running
the same config resumes the latest unfinished run of that name from its `trials.jsonl` (the
optimizer's proposals depend only on the seed and the finished trials, so the result is the one an
uninterrupted run gives). One process at a time runs a folder: a run that another process holds is
refused (`--new` starts a separate one). Every file is written atomically.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from experiments.config import ExperimentConfig, ExperimentConfigError
from experiments.setup import Setup, prepare
from reasoning_dspy._io import atomic_write_json, atomic_write_text

console = Console(stderr=True)

CONFIG_FILE, TRIALS_FILE, PROGRAM_FILE, HELDOUT_FILE, RESULT_FILE, TRACKING_FILE, SKIPPED_FILE = (
    "config.yaml", "trials.jsonl", "program.json", "heldout.json", "result.json", "tracking.jsonl", "skipped.json")
LOCK_FILE = ".run.lock"  # held while a process runs the folder


# -- run folders ----------------------------------------------------------------------------
def _resolved(cfg: ExperimentConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json", exclude={"tracking"})  # where a run is tracked is not what it computes


def run_folder(cfg: ExperimentConfig, *, new: bool = False) -> tuple[Path, bool]:
    """The latest unfinished run of this config (resumed), or a new timestamped one, created here:
    `mkdir` either makes a folder or fails, so two runs started together never get the same one."""
    parent = cfg.run_parent()
    if not new and parent.is_dir():
        for folder in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
            saved = folder / CONFIG_FILE
            if not (folder / RESULT_FILE).exists() and saved.is_file() and \
                    yaml.safe_load(saved.read_text()) == _resolved(cfg):
                return folder, True
    parent.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, i = parent / stamp, 1
    while True:
        try:
            folder.mkdir()
            return folder, False
        except FileExistsError:
            folder, i = parent / f"{stamp}-{i}", i + 1


@contextmanager
def claimed(cfg: ExperimentConfig, *, new: bool = False, folder: Path | None = None) -> Iterator[tuple[Path, bool]]:
    """The run folder (see `run_folder`, or `folder`) and whether it is resumed, locked for this process
    while the block runs, so two runs never write one folder. A run that another process holds is
    refused with `ExperimentConfigError`; a new folder is removed again when the block fails on a
    config error (nothing was run in it)."""
    made = _missing_dirs(cfg.run_parent() if folder is None else folder)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        chosen, resumed, lock = folder, (folder / CONFIG_FILE).is_file(), _lock(folder)
    else:
        while True:
            chosen, resumed = run_folder(cfg, new=new)
            lock = _lock(chosen)
            if not (resumed and (chosen / RESULT_FILE).exists()):
                break
            lock.release()  # it finished between the look and the lock: choose again
    try:
        yield chosen, resumed
    except ExperimentConfigError:
        lock.release()
        if not resumed:
            _remove_empty(chosen, made)
        raise
    finally:
        lock.release()


def _lock(folder: Path) -> Any:
    """This process's hold on a run folder, or `ExperimentConfigError` when another process has it."""
    from filelock import FileLock, Timeout

    lock = FileLock(folder / LOCK_FILE, blocking=False)
    try:
        lock.acquire()
    except Timeout:
        raise ExperimentConfigError(
            f"the run in {str(folder)!r} is in progress in another process (it holds {LOCK_FILE} there); wait "
            "for it to finish, or pass --new (new=True) to start a separate run") from None
    return lock


def _missing_dirs(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet, outermost first."""
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def _remove_empty(folder: Path, made: list[Path]) -> None:
    """Remove a new run folder that holds nothing but its lock, then the parents this run created."""
    if folder.is_dir() and not [p for p in folder.iterdir() if p.name != LOCK_FILE]:
        shutil.rmtree(folder, ignore_errors=True)
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            break


# -- the run ---------------------------------------------------------------------------------
def run_experiment(cfg: ExperimentConfig, *, new: bool = False, progress: bool = True,
                   folder: Path | None = None) -> Path:
    """Run (or resume) the experiment; returns its folder."""
    setup = prepare(cfg)
    _check_writable(cfg)
    with claimed(cfg, new=new, folder=folder) as (folder, resumed):
        tracker = open_tracker(cfg, folder)
        atomic_write_text(folder / CONFIG_FILE, yaml.safe_dump(_resolved(cfg), sort_keys=False))
        return _run(setup, folder, tracker, resumed=resumed, progress=progress)


def _check_writable(cfg: ExperimentConfig) -> None:
    from reasoning_dspy._io import NotWritableError, check_writable

    try:
        check_writable(cfg.run_parent(), "the run folder")
    except NotWritableError as err:
        raise ExperimentConfigError(f"out: {err}") from None


def _run(setup: Setup, folder: Path, tracker: Any, *, resumed: bool, progress: bool) -> Path:
    """Trials, held-out evaluation and report in the claimed `folder`, tracked by `tracker`."""
    import dspy

    from experiments.heldout import evaluate_heldout
    from experiments.optimize import optimize
    from experiments.report import write_report

    cfg = setup.cfg
    console.print(f"{'resuming' if resumed else 'run'} {cfg.name} in {folder}")
    run_id = tracker.start_run(cfg.name, kind="optimize", config=_resolved(cfg), folder=folder,
                               run_id=run_identity(folder))
    result: dict[str, Any] = {}
    try:
        lm = setup.lm()
        try:
            with dspy.context(lm=lm):
                compiled, trials = optimize(setup, folder / TRIALS_FILE, progress=progress,
                                            prompt_index=prompt_index(tracker, cfg))
            tracker.log_trials(run_id, trials)
            record_skipped(folder, tracker, run_id, compiled.skipped, first_number=len(trials))
            compiled.save(str(folder / PROGRAM_FILE))
            heldout = evaluate_heldout(setup, lm, compiled, folder / HELDOUT_FILE, progress=progress)
            track_heldout(tracker, run_id, setup, heldout)
        finally:
            from reasoning_dspy.program.lm import engine_of

            engine_of(lm).close()
        report = write_report(folder, cfg, trials, heldout)
        result = {"best": compiled.best_trial.model_dump(mode="json"), "heldout": heldout["summary"],
                  "report": str(report)}
        atomic_write_json(folder / RESULT_FILE, result)
    finally:
        program = folder / PROGRAM_FILE
        tracker.finish_run(run_id, status="finished" if result else "failed", result=result,
                           artifacts=[program] if result and program.is_file() else [])
        tracker.close()
    console.print(f"report: {report.with_suffix('.html')} (Markdown: {report})")
    return folder


# -- tracking ---------------------------------------------------------------------------------
def open_tracker(cfg: ExperimentConfig, folder: Path) -> Any:
    """The run's tracker (journal `folder/tracking.jsonl`); a database it cannot use is a config error,
    raised before anything is written."""
    from reasoning_dspy.tracking import Tracker, TrackingError

    try:
        return Tracker.open(folder / TRACKING_FILE, config=cfg.tracking,
                            default_sqlite=Path(cfg.out) / "tracking.sqlite")
    except TrackingError as err:
        raise ExperimentConfigError(f"tracking: {err}") from None


def prompt_index(tracker: Any, cfg: ExperimentConfig) -> Any:
    """Where the prompt filter stores and retrieves prompts: this run's tracking database (pgvector
    on PostgreSQL, numpy on SQLite), under one prompt run per experiment name."""
    if not cfg.optimizer.prompt_filter or tracker.store is None:
        return None
    from reasoning_dspy.tracking import TrackedPromptIndex
    from reasoning_dspy.tracking.records import stable_id

    run_id = tracker.start_run(f"{cfg.name}/prompts", kind="prompts", run_id=stable_id("prompts", cfg.name))
    return TrackedPromptIndex(tracker, run_id)


def record_skipped(folder: Path, tracker: Any, run_id: str, skipped: list[Any], *, first_number: int) -> None:
    """The candidates the prompt filter dropped, with why: `skipped.json` in the run folder, and a
    trial each in the tracking database (numbered after the evaluated ones, status "skipped")."""
    if not skipped:
        return
    rows = [d.model_dump(mode="json") for d in skipped]
    atomic_write_json(folder / SKIPPED_FILE, rows)
    tracker.log_trials(run_id, [{"number": first_number + i, "candidate": {"instruction": row["prompt"]},
                                 "score": row["score"], "feasible": False, "status": "skipped",
                                 "reason": row["reason"], "verdict": row["verdict"]} for i, row in enumerate(rows)])


def run_identity(folder: Path) -> str:
    """The same run folder always has the same tracking id, so a resumed run is recorded once."""
    from reasoning_dspy.tracking.records import stable_id

    return stable_id("experiment", folder.resolve())


def track_heldout(tracker: Any, run_id: str, setup: Setup, heldout: dict[str, Any]) -> None:
    """One generation per held-out example and arm: the question, the answer where heldout.json
    keeps it, the arm's steering, reasoning activation and correctness."""
    for arm, row in heldout["rows"].items():
        texts = row.get("texts") or heldout.get("examples", {}).get(arm, [])
        instruction = heldout["instruction"]["baseline" if arm == "baseline" else "optimized"]
        for i, example in enumerate(setup.test):
            tracker.log_generation(
                run_id, example.question, texts[i] if i < len(texts) else None, label=f"heldout/{arm}", index=i,
                steering=heldout["steering"] if arm == "steered" else None, reasoning_activation=row["activation"][i],
                correct=row["correct"][i], tokens=row["tokens"][i],
                extra={"answer": str(example.answer), "reflects": row["reflects"][i], "words": row["words"][i],
                       "instruction": instruction})
