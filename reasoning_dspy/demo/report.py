"""The demo's report: one page with the SAE's training curves, the ReasonScore distribution, the top
features with their words and contexts, baseline against steered, and the optimizer's trials.

Written as `report.md` with PNGs beside it, then as `report.html` with the PNGs embedded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reasoning_dspy._io import atomic_write_text


def write_demo_report(state: Any) -> tuple[Path, Path]:
    """Write `state.out/report.md` and `report.html` for a finished reasoner demo; returns both paths."""
    from experiments.report import plot_trials
    from reasoning_dspy.features.kinds import feature_kind
    from reasoning_dspy.features.measures import count_words, is_degenerate, reflects
    from reasoning_dspy.problems.steps import step_measures
    from reasoning_dspy.reports import (
        plot_score_distribution,
        plot_steering_effect,
        plot_training_curves,
        write_html,
    )
    from reasoning_dspy.sae.io import shipped_sae_folder
    from reasoning_dspy.study.report import quote_trace

    out: Path = state.out
    plots = out / "plots"
    spec = state.loaded.model_spec
    steering = state.steering
    lines = [
        f"# reasoning-dspy demo: {state.model}",
        "",
        f"Model `{state.model}` ({spec.n_layers} layers, d_model {spec.d_model}); its shipped SAE: "
        f"{_sae_kind(state.sae.cfg)} with {state.sae.d_sae:,} latents at layer {state.sae.cfg.hook_layer}; "
        f"{len(state.problems)} held-out word "
        "problems answered greedily by `dspy.ChainOfThought(signatures.WordProblem)` through `SteeredLM`.",
        "",
        "## The SAE's training",
        "",
    ]
    log = shipped_sae_folder(state.model) / "train_log.jsonl"
    if log.is_file():
        plot_training_curves(log, plots / "sae_training.png", title=f"SAE training ({state.model}, layer "
                             f"{state.sae.cfg.hook_layer})")
        lines += ["![SAE training curves](plots/sae_training.png)", ""]
    else:
        lines += [f"This SAE was shipped without its training log ({log} is missing).", ""]

    top = [r.index for r in state.reports]
    plot_score_distribution(state.scores, plots / "reasonscore.png", top=len(top) or 5)
    lines += ["## ReasonScore over the whole dictionary", "", "![ReasonScore distribution](plots/reasonscore.png)", "",
              "## Top features", "",
              "Contexts come from the traces this demo just generated; the highlighted token is where the "
              "feature fires hardest.", "",
              "| rank | feature | ReasonScore | density | kind | top words | max-activating context |",
              "|---:|---:|---:|---:|---|---|---|"]
    for r in state.reports:
        context = ""
        if r.contexts:
            c = r.contexts[0]
            window = range(max(c.center - 8, 0), min(c.center + 5, len(c.tokens)))
            context = "".join(_bold(c.tokens[i]) if i == c.center else _cell(c.tokens[i]) for i in window)
        words = ", ".join(w for w, _ in r.top_words[:3]) or "-"
        lines.append(f"| {r.rank} | {r.index} | {r.score:+.4f} | {r.density:.3f} | {feature_kind(r)} | {words} | {context} |")

    conditions = {"default instruction": state.baseline, "default + steering": state.steered}
    groups = {name: {"activation": [r.get("features_mean") or 0.0 for r in rows],
                     "words": [count_words(r["text"]) for r in rows],
                     "tokens": [r["n_tokens"] for r in rows]} for name, rows in conditions.items()}
    plot_steering_effect(groups, plots / "steering.png")
    lines += ["", "## Baseline against steered", "",
              f"Steering: features {list(steering.features)}, {steering.residual_strength:g} × the residual norm "
              "(the study's recommendation), under DSPy's default instruction. Bars: means over the "
              f"{len(state.problems)} problems with 95 % bootstrap intervals.", "",
              "![baseline against steered](plots/steering.png)", "",
              "| condition | traces that reflect | reasoning words | steps a check fixed | steps a check broke | right "
              "| loops |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, rows in conditions.items():
        n = len(rows)
        steps = [step_measures(r["text"]) for r in rows]
        lines.append(f"| {name} | {sum(reflects(r['text']) for r in rows)}/{n} | "
                     f"{sum(count_words(r['text']) for r in rows)} | {sum(s['fixed'] for s in steps)} | "
                     f"{sum(s['broke'] for s in steps)} | {sum(r['correct'] for r in rows)}/{n} | "
                     f"{sum(is_degenerate(r['text']) for r in rows)} |")
    caught = caught_trace(state.steered)
    lines += ["", "## A steered trace whose check caught its own error", ""]
    if caught is not None:
        lines += [f"**{caught['question']}** (answer {caught['expected']:g}; the trace answered {caught['answer']}, "
                  f"{'right' if caught['correct'] else 'wrong'})", "", f"{quote_trace(caught['text'], 1500)}"]
    else:
        lines += ["No steered trace caught a wrong step of its own on these problems."]

    if state.trials:
        plot_trials(state.trials, "reasoning activation", plots / "trials.png")
        lines += ["", "## Optimizer trials", "",
                  f"`ReasoningOptimizer`, {len(state.trials)} candidates (trial 0 is the unoptimized program), "
                  "each scored on the same training problems.", "", "![optimizer trials](plots/trials.png)", "",
                  "| trial | instruction | steering | activation | reflect | accuracy |", "|---:|---|---|---:|---:|---:|"]
        for t in state.trials:
            c = t.candidate
            lines.append(f"| {t.number} | {_cell(c.instruction)} | {c.steering_label()} | {t.score:.3f} | {t.reflect:.0%} | "
                         f"{t.accuracy:.0%} |")

    if state.baseline:
        b, s = state.baseline[0], state.steered[0]
        lines += ["", "## One problem, both ways", "", f"**{b['question']}** (answer {b['expected']:g})", "",
                  f"- default instruction: {quote_trace(b['text'], 500)}",
                  f"- with steering: {quote_trace(s['text'], 500)}"]
    md = out / "report.md"
    atomic_write_text(md, "\n".join(lines) + "\n")
    return md, write_html(md)


def caught_trace(rows: list[dict]) -> dict | None:
    """The first trace in which a check caught a wrong quick answer and fixed it, preferring one whose
    final answer is right and that does not loop."""
    from reasoning_dspy.features.measures import is_degenerate
    from reasoning_dspy.problems.steps import step_measures

    caught = [r for r in rows if step_measures(r["text"])["fixed"] > 0]
    return min(caught, key=lambda r: (not r["correct"], is_degenerate(r["text"])), default=None)


def _sae_kind(cfg: Any) -> str:
    return {"topk": f"a TopK SAE (k = {cfg.k})", "relu": "a ReLU SAE", "jumprelu": "a JumpReLU SAE"}[cfg.architecture]


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\n", " ").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def _bold(token: str) -> str:
    """A token in bold; its leading space stays outside the markers, where Markdown needs it."""
    word = token.lstrip()
    return token[: len(token) - len(word)] + (f"**{_cell(word)}**" if word.strip() else _cell(word))
