"""`report.md` of an optimization run, and `report.html` with the same content self-contained, with
PNG plots: score per trial and best so far, the Pareto front (reasoning metric, accuracy, tokens),
and baseline vs optimized vs steered held out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.config import ExperimentConfig
from optimizers.trials import TrialRecord, best_trial, pareto_front
from reasoning_dspy._io import atomic_write_figure, atomic_write_text
from reasoning_dspy.reports import write_html
from reasoning_dspy.reports.html import md_code, md_escape

PLOTS = ("trials.png", "pareto.png", "heldout.png")  # what the report draws, the only images report.html embeds

ARM_LABELS = {"baseline": "baseline (unoptimized)", "optimized": "optimized instruction",
              "steered": "optimized instruction + steering"}


def _figure(width: float = 6.5, height: float = 4.0) -> Any:
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    return Figure(figsize=(width, height))


def plot_trials(trials: list[TrialRecord], objective: str, path: Path) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    for steered, marker, label in ((False, "o", "instruction only"), (True, "^", "with steering")):
        for feasible, color in ((True, "tab:blue"), (False, "tab:grey")):
            pts = [r for r in trials if bool(r.candidate.features) == steered and r.feasible == feasible]
            if pts:
                ax.scatter([r.number for r in pts], [r.score for r in pts], marker=marker, color=color,
                           label=f"{label}{'' if feasible else ' (breaks the accuracy constraint)'}")
    best, running = [], None
    for r in trials:
        if r.feasible and (running is None or r.score > running):
            running = r.score
        best.append(running)
    ax.step([r.number for r in trials], [b if b is not None else float("nan") for b in best], where="post",
            color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title("score per trial")
    ax.legend(fontsize=7)
    return atomic_write_figure(path, fig)


def plot_pareto(trials: list[TrialRecord], objective: str, path: Path) -> Path:
    fig = _figure()
    ax = fig.add_subplot()
    front = {r.number for r in pareto_front(trials)}
    sizes = [20 + 80 * r.tokens / max(max(t.tokens for t in trials), 1) for r in trials]
    ax.scatter([r.accuracy for r in trials], [r.score for r in trials], s=sizes, alpha=0.5, color="tab:grey",
               label="trials (size: tokens)")
    on = sorted((r for r in trials if r.number in front), key=lambda r: r.accuracy)
    ax.scatter([r.accuracy for r in on], [r.score for r in on], s=50, color="tab:red", label="Pareto front")
    ax.set_xlabel("accuracy")
    ax.set_ylabel(objective)
    ax.set_title("Pareto front: reasoning metric, accuracy, tokens")
    ax.legend(fontsize=7)
    return atomic_write_figure(path, fig)


def plot_heldout(heldout: dict[str, Any], path: Path) -> Path:
    fig = _figure(9, 3.4)
    summary = heldout["summary"]
    arms = [a for a in ("baseline", "optimized", "steered") if a in summary]
    for i, (measure, label) in enumerate((("activation", "reasoning activation"), ("reflect", "reflecting answers"),
                                          ("accuracy", "accuracy"))):
        ax = fig.add_subplot(1, 3, i + 1)
        values = [summary[a][measure] for a in arms]
        ax.bar(range(len(arms)), [v["value"] for v in values],
               yerr=[[v["value"] - v["low"] for v in values], [v["high"] - v["value"] for v in values]],
               capsize=4, color=["tab:grey", "tab:blue", "tab:red"][: len(arms)])
        ax.set_xticks(range(len(arms)), arms, fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"held out: {heldout['n']} {heldout['split']} examples (95% bootstrap intervals)", fontsize=10)
    return atomic_write_figure(path, fig)


def unoptimized_trial(trials: list[TrialRecord], heldout: dict[str, Any]) -> TrialRecord:
    """The trial of the unoptimized program (its own instruction, no steering): the baseline. DSPy's
    optimizers record their trials in the order they tried them, which need not start with it."""
    own = heldout["instruction"]["baseline"]
    return next((r for r in trials if r.candidate.instruction == own and r.candidate.steering() is None), trials[0])


def returned_trial(trials: list[TrialRecord], heldout: dict[str, Any]) -> TrialRecord | None:
    """The trial of the program the optimizer returned (the one evaluated held out), not the trial
    that scores best by our reckoning: DSPy's optimizers choose by their own rules."""
    from reasoning_dspy.steering import SteeringSpec

    steering = SteeringSpec.model_validate(heldout["steering"]) if heldout.get("steering") else None
    return next((r for r in trials if r.candidate.instruction == heldout["instruction"]["optimized"]
                 and r.candidate.steering() == steering), None)


def _ci(v: dict, pct: bool = False) -> str:
    f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.4g}")
    return f"{f(v['value'])} [{f(v['low'])}, {f(v['high'])}]"


def write_report(folder: Path, cfg: ExperimentConfig, trials: list[TrialRecord], heldout: dict[str, Any]) -> Path:
    objective = cfg.metric.objective
    plot_trials(trials, objective, folder / "trials.png")
    plot_pareto(trials, objective, folder / "pareto.png")
    plot_heldout(heldout, folder / "heldout.png")
    best = returned_trial(trials, heldout) or best_trial(trials, multi=cfg.metric.multi_objective)
    base = unoptimized_trial(trials, heldout)
    lines = [
        f"# {md_escape(cfg.name)}",
        "",
        f"Model {md_code(cfg.model)}, optimizer {md_code(cfg.optimizer.name)}, objective {md_code(objective)}"
        f"{f', accuracy >= baseline - {cfg.metric.accuracy_margin:g}' if cfg.metric.accuracy_margin is not None else ''}"
        f", {len(trials)} trials on {trials[0].n} {md_code(cfg.dataset.train_split)} examples, seed {cfg.seed}.",
        "",
        f"**Best trial** #{best.number}: {md_escape(best.candidate.label())} — {md_escape(objective)} {best.score:.4g} "
        f"(baseline {base.score:.4g}), accuracy {100 * best.accuracy:.1f} % (baseline {100 * base.accuracy:.1f} %).",
        "",
        f"## Held out: {heldout['n']} {md_code(heldout['split'])} examples the optimizer never saw",
        "",
        "| program | reasoning activation | reflecting % | reasoning words /100 tok | accuracy % | tokens |",
        "|---|---|---|---|---|---|",
    ]
    summary = heldout["summary"]
    for arm in ("baseline", "optimized", "steered"):
        s = summary[arm]
        lines.append(f"| {ARM_LABELS[arm]} | {_ci(s['activation'])} | {_ci(s['reflect'], True)} | "
                     f"{_ci(s['word_rate'])} | {_ci(s['accuracy'], True)} | {s['tokens']['value']:.0f} |")
    lines += ["", "Differences from the baseline, paired over the same examples (95 % bootstrap intervals):", "",
              "| program | Δ reasoning activation | Δ reflecting (points) | Δ accuracy (points) |", "|---|---|---|---|"]
    for arm in ("optimized", "steered"):
        d = summary[arm]["minus_baseline"]
        lines.append(f"| {ARM_LABELS[arm]} | {_ci(d['activation'])} | {_ci(d['reflect'], True)} | "
                     f"{_ci(d['accuracy'], True)} |")
    lines += ["", f"Instruction: baseline “{md_escape(heldout['instruction']['baseline'])}”, optimized "
                  f"“{md_escape(heldout['instruction']['optimized'])}”; steering: "
                  f"{md_escape(heldout['steering'] or 'none')}.", "",
              "![score per trial](trials.png)", "", "![Pareto front](pareto.png)", "",
              "![held out](heldout.png)", "", "## Trials", "",
              f"| # | instruction | steering | score ({md_escape(objective)}) | activation | accuracy % | reflect % | tokens | "
              "feasible | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in trials:
        c = r.candidate
        steer = f"top {len(c.features)} {c.mode} {c.strength:g}" if c.steering() else "-"
        lines.append(f"| {r.number} | {md_escape(c.instruction)} | {md_escape(steer)} | {r.score:.4g} | {r.activation:.4g} | "
                     f"{100 * r.accuracy:.1f} | {100 * r.reflect:.0f} | {r.tokens:.0f} | "
                     f"{'yes' if r.feasible else 'no'} | {r.wall_s:.1f} |")
    skipped = folder / "skipped.json"
    if skipped.is_file():
        import json

        lines += ["", "## Skipped before evaluation (prompt filter)", "", "| instruction | why |", "|---|---|"]
        lines += [f"| {md_escape(d['prompt'])} | {md_escape(d['reason'])} |" for d in json.loads(skipped.read_text())]
    path = folder / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    write_html(path, images=PLOTS)  # report.html beside it, its own plots embedded
    return path
