"""Whole runs from a config: `demo`, `study`, `optimize`."""

from __future__ import annotations

from pathlib import Path

import typer

from reasoning_dspy.cli._common import (
    config_args,
    fail,
)

runs_app = typer.Typer()

@runs_app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="folder for the demo's outputs"),
    model: str = typer.Option("smollm2-reasoner", help="smollm2-reasoner (shipped SAE: traces, features, "
                              "steering), or any other model for the from-scratch pipeline (tiny-random: a "
                              "one-minute smoke run; TinyLlama/TinyLlama-1.1B-Chat-v1.0 with the hub)"),
    limit: int | None = typer.Option(None, help="held-out problems for smollm2-reasoner (default 8); texts for "
                                     "the pipeline, half prompts, half reasoning traces (default 128)"),
) -> None:
    """Run the offline end-to-end demo (no network needed)."""
    from reasoning_dspy.demo import run_demo
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.sae.io import SAEFileError
    from reasoning_dspy.steering import SteeringError

    try:
        run_demo(out, limit=limit, model=model)
    except (ModelLoadError, SAEFileError, SteeringError, ValueError) as err:
        fail(str(err))


@runs_app.command()
def study(
    args: list[str] | None = typer.Argument(None, metavar="[CONFIG.yaml] [KEY=VALUE]...",
                                             help="a YAML study config, then overrides such as n_test=50 sae.k=16"),
) -> None:
    """Galichin et al.'s experiment on any model and SAE: traces, SAE, ReasonScore, steering against
    matched random features and negative strength; resumable; writes OUT/report.md."""
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.study import StudyConfig, StudyConfigError, run_study

    config_file, overrides = config_args(args)
    try:
        cfg = StudyConfig.load(config_file, overrides)
        report = run_study(cfg)
    except (StudyConfigError, ModelLoadError, ValueError) as err:
        fail(str(err))
    typer.echo(str(report))


@runs_app.command()
def optimize(
    args: list[str] | None = typer.Argument(None, metavar="CONFIG.yaml [KEY=VALUE]...",
                                             help="an experiment config, then overrides such as optimizer.n_trials=8"),
    new: bool = typer.Option(False, "--new", help="start a new run instead of resuming the latest unfinished one"),
) -> None:
    """Tune a DSPy program's instruction and steering for reasoning activation (ReasoningOptimizer,
    COPRO or MIPROv2); writes OUT/NAME/TIMESTAMP/ with trials.jsonl, program.json and report.md.
    Re-running the same config resumes an interrupted run."""
    from experiments import ExperimentConfigError, load_experiment, run_experiment
    from reasoning_dspy.models import ModelLoadError

    config_file, overrides = config_args(args)
    if config_file is None:
        fail("name an experiment config, e.g. experiments/configs/optimize-tiny.yaml")
    try:
        folder = run_experiment(load_experiment(config_file, overrides), new=new)
    except (ExperimentConfigError, ModelLoadError) as err:
        fail(str(err))
    typer.echo(str(folder / "report.md"))
