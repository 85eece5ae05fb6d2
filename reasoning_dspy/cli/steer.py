"""`steer`: answer prompts with and without steering SAE features, side by side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from reasoning_dspy.cli._common import (
    fail,
    require_writable,
    validation_message,
)

steer_app = typer.Typer()

@steer_app.command()
def steer(
    sae: Path = typer.Option(..., help="SAE folder (cfg.json + sae_weights.safetensors)"),
    prompt: list[str] | None = typer.Option(None, "--prompt", help="a prompt to answer (repeatable)"),
    prompts: str | None = typer.Option(None, help="prompts file (.jsonl/.json/.csv/.parquet/.txt) or 'bundled'"),
    model: str | None = typer.Option(None, help="HF id, local folder, or tiny-random (default: the model the "
                                     "SAE records in cfg.json, else TinyLlama/TinyLlama-1.1B-Chat-v1.0)"),
    scores: Path | None = typer.Option(None, help="ReasonScore folder (from `score`): f_max and the feature ranking"),
    max_activation: Path | None = typer.Option(None, help="f_max: a ReasonScore folder or scores.safetensors "
                                               "(default: the one in --scores)"),
    feature: list[int] | None = typer.Option(None, "--feature", help="SAE feature index to steer (repeatable)"),
    top: int | None = typer.Option(None, help="steer the N best features by ReasonScore (needs --scores)"),
    strength: float | None = typer.Option(
        None, help="γ per feature: a multiple of its f_max (--units fmax, default 4) or of the residual norm "
                   "(--units residual, default 0.2)"),
    units: str = typer.Option("fmax", help="fmax: γ·f_max·W_dec,i (the paper's); residual: each token moves by "
                              "γ·√(features)·‖x_t‖ along Σ W_dec,i, needs no f_max; 0.05-0.5 suits small models"),
    mode: str = typer.Option("add", help="add: x + γ·f_max·W_dec,i; clamp: set f_i = γ·f_max"),
    layer: int | None = typer.Option(None, help="decoder layer to steer, for an SAE that records none"),
    max_tokens: int = typer.Option(48, help="tokens to generate per answer"),
    temperature: float = typer.Option(0.0, help="sampling temperature (0 = greedy)"),
    seed: int = typer.Option(0, help="sampling seed (both runs start from it)"),
    device: str = typer.Option("cpu", help="torch device"),
    dtype: str | None = typer.Option(None, help="dtype to run the model in (default: checkpoint's)"),
    out: Path | None = typer.Option(None, help="also write one JSON line per prompt to this .jsonl file"),
    track: bool = typer.Option(False, help="record the answers, steering and feature activations in the tracking "
                               "database ($DATABASE_URL, else runs/tracking.sqlite; see docs/tracking.md)"),
    database_url: str | None = typer.Option(None, help="with --track: the database (default: $DATABASE_URL, "
                                            "else runs/tracking.sqlite)"),
) -> None:
    """Answer prompts with and without steering SAE features, side by side."""
    import math

    from pydantic import ValidationError
    from safetensors import SafetensorError

    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.prompts import PromptError, load_prompts
    from reasoning_dspy.sae import load_sae
    from reasoning_dspy.steering import SteeringSpec, load_max_activation

    texts = list(prompt or [])
    if any(not t.strip() for t in texts):
        fail("--prompt is blank; give the text to answer")
    if mode not in ("add", "clamp"):
        fail(f"--mode must be add or clamp, got {mode!r}")
    if units not in ("fmax", "residual"):
        fail(f"--units must be fmax or residual, got {units!r}")
    if units == "residual" and mode == "clamp":
        fail("--mode clamp sets feature activations, which are in f_max units: use --units fmax with clamp")
    if strength is None:
        strength = 4.0 if units == "fmax" else 0.2
    if max_tokens < 1:
        fail(f"--max-tokens must be at least 1, got {max_tokens}")
    if not math.isfinite(temperature) or temperature < 0:
        fail(f"--temperature must be a finite number >= 0, got {temperature}")
    if feature and top is not None:
        fail("give either --feature (repeatable) or --top N, not both")
    if not feature and top is None:
        fail("choose the features to steer: --feature INDEX (repeatable), or --top N with --scores")
    if top is not None and top < 1:
        fail(f"--top must be at least 1, got {top}")
    if top is not None and scores is None:
        fail("--top ranks features by ReasonScore: pass the ReasonScore folder with --scores")
    if units == "fmax" and scores is None and max_activation is None:
        fail("steering scales each feature by its max activation f_max: pass --scores (a ReasonScore folder "
              "from `reasoning-dspy score`) or --max-activation")
    if out is not None and out.is_dir():
        fail(f"--out {str(out)!r} is a folder; --out takes a .jsonl file path")
    if out is not None:
        require_writable(out.parent, "--out")
    tracker = _steer_tracker(out, database_url) if track else None
    try:
        if prompts is not None:
            texts += load_prompts(prompts)
        if not texts:
            fail("no prompts: give --prompt TEXT (repeatable) and/or --prompts FILE")
        sae_model = load_sae(sae, device=device)
        hook_layer = sae_model.cfg.hook_layer
        if hook_layer is None and layer is None:
            fail(f"the SAE at {str(sae)!r} records no hook_layer: pass --layer, the layer it was trained on")
        if hook_layer is not None and layer is not None and layer != hook_layer:
            fail(f"the SAE at {str(sae)!r} was trained on layer {hook_layer}, but --layer is {layer}; "
                  "its feature directions only mean something at that layer (drop --layer)")
        if hook_layer is None:
            sae_model.cfg = sae_model.cfg.model_copy(update={"hook_layer": layer})
        d_sae = sae_model.d_sae
        ranking = None
        if scores is not None:
            from reasoning_dspy.features.reasonscore import FeatureScores

            ranking = FeatureScores.load(scores)
            if ranking.d_sae != d_sae:
                fail(f"the scores in {str(scores)!r} cover {ranking.d_sae} features but the SAE at {str(sae)!r} "
                      f"has d_sae={d_sae}; pass the scores computed for this SAE")
        source = max_activation if max_activation is not None else ranking
        fmax = load_max_activation(source, d_sae) if source is not None else None
        if top is not None and top > d_sae:
            fail(f"--top {top} exceeds the SAE's {d_sae} features")
        features = ranking.top(top) if top is not None else list(dict.fromkeys(feature))
        bad = [f for f in features if not 0 <= f < d_sae]
        if bad:
            fail(f"feature index {bad[0]} is out of range: the SAE at {str(sae)!r} has {d_sae} features "
                  f"(0..{d_sae - 1})")
        try:
            spec = SteeringSpec.from_features(features, strength, mode=mode, layer=sae_model.cfg.hook_layer,
                                              units=units)
        except ValidationError as err:
            fail(f"invalid steering: {validation_message(err)}")
        model = model or sae_model.cfg.model_name or "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
        rows = _steer_rows(model, sae_model, fmax, features, spec, texts, dtype=dtype, device=device,
                           max_tokens=max_tokens, temperature=temperature, seed=seed)
    except (PromptError, ModelLoadError, FileNotFoundError, SafetensorError, ValueError) as err:
        fail(str(err))
    except KeyError as err:
        fail(str(err.args[0]))
    _print_steering(rows, spec, features)
    if out is not None:
        import json

        from reasoning_dspy._io import atomic_write_text

        meta = {"model": model, "sae": str(sae), "steering": spec.model_dump(mode="json")}
        atomic_write_text(out, "".join(json.dumps({**row, **meta}) + "\n" for row in rows))
        typer.echo(f"wrote {len(rows)} rows to {out}")
    if tracker is not None:
        _track_steering(tracker, rows, spec, {"model": model, "sae": str(sae), "features": features})


def _steer_tracker(out: Path | None, database_url: str | None) -> Any:
    """The tracker of one `steer` call; its journal sits beside --out (else under runs/steer/)."""
    import time

    from reasoning_dspy.tracking import Tracker, TrackingError

    journal = out.with_name(out.stem + ".tracking.jsonl") if out is not None else \
        Path("runs") / "steer" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.tracking.jsonl"
    try:
        return Tracker.open(journal, database_url)
    except TrackingError as err:
        fail(str(err))


def _track_steering(tracker: Any, rows: list[dict], spec, config: dict) -> None:
    """Baseline and steered answer of each prompt as generations, with their strongest features."""
    with tracker:
        run = tracker.start_run("steer", kind="steer", config={**config, "steering": spec.model_dump(mode="json")})
        for i, row in enumerate(rows):
            for arm in ("baseline", "steered"):
                report = row[f"{arm}_activation"]
                tracker.log_generation(
                    run, row["prompt"], row[arm], label=arm, index=i,
                    steering=spec.model_dump(mode="json") if arm == "steered" else None,
                    reasoning_activation=report["features_mean"], tokens=report["n_tokens"],
                    features={f: v for f, v in report["top_features"]},
                    extra={"perturbation": row["steered_perturbation"]} if arm == "steered" else {})
        tracker.finish_run(run)
    typer.echo(f"tracked {2 * len(rows)} answers in {tracker.store.where} (journal {tracker.journal.path})")


def _steer_rows(model: str, sae, fmax, features: list[int], spec, texts: list[str], *, dtype: str | None,
                device: str, max_tokens: int, temperature: float, seed: int) -> list[dict]:
    """Baseline and steered answers of each prompt, each with its reasoning activation."""
    import torch

    from reasoning_dspy.engine import SteeredEngine
    from reasoning_dspy.models import load_model

    loaded = load_model(model, dtype=dtype, device=device)
    engine = SteeredEngine(loaded.model, loaded.tokenizer, sae=sae, max_activation=fmax, steering=spec,
                           capture=True, reasoning_features=features, max_tokens=max_tokens,
                           temperature=temperature)
    try:
        torch.manual_seed(seed)
        baseline = engine.generate(texts, steering=None)
        torch.manual_seed(seed)
        steered = engine.generate(texts, steering=spec)
    finally:
        engine.close()
    return [{"prompt": text, "baseline": b.text, "steered": s.text,
             "baseline_activation": b.report.to_dict(), "steered_activation": s.report.to_dict(),
             "steered_perturbation": s.perturbation.to_dict() if s.perturbation is not None else None}
            for text, b, s in zip(texts, baseline, steered, strict=True)]


def _print_steering(rows: list[dict], spec, features: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    strengths = sorted(set(spec.features.values()))
    gamma = strengths[0] if len(strengths) == 1 else strengths
    units = "" if spec.units == "fmax" else f" × ‖x‖, α = {spec.residual_strength:.3g}"
    table = Table(title=f"steering features {features} at γ={gamma}{units} ({spec.mode}, layer {spec.layer}); "
                        "act = mean activation of those features over the answer; ‖δ‖/‖x‖ = mean size of the "
                        "steering delta relative to the residual")
    for col in ("prompt", "baseline", "act", "steered", "act", "‖δ‖/‖x‖"):
        table.add_column(col, overflow="fold", no_wrap=col in ("act", "‖δ‖/‖x‖"))
    for row in rows:
        moved = row["steered_perturbation"]
        table.add_row(row["prompt"], row["baseline"].strip(), f"{row['baseline_activation']['features_mean']:.3f}",
                      row["steered"].strip(), f"{row['steered_activation']['features_mean']:.3f}",
                      f"{moved['ratio']:.3f}" if moved else "-")
    Console().print(table)
    for row in rows:
        moved = row["steered_perturbation"]
        if moved:
            typer.echo(f"perturbation: ‖δ‖ = {moved['norm']:.4g} = {moved['ratio']:.3f} × ‖x‖ "
                       f"(mean over {moved['n_tokens']} steered tokens) for {row['prompt']!r}")
