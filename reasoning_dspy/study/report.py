"""Aggregate the study's generations with bootstrap intervals, plot the dose-response and the SAE,
write report.md and its self-contained twin report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reasoning_dspy._io import atomic_write_figure, atomic_write_text
from reasoning_dspy.features.measures import TraceMeasures
from reasoning_dspy.problems.steps import step_measures
from reasoning_dspy.reports.stats import bootstrap, rate_per_100
from reasoning_dspy.study.conditions import Condition

#: Measures reported per condition: (key, label, per-100 or share formatting).
MEASURES: tuple[tuple[str, str], ...] = (
    ("word_rate", "reasoning words / 100 tokens"),
    ("reflect", "traces that reflect"),
    ("tokens", "trace length (tokens)"),
    ("accuracy", "accuracy"),
    ("loops", "degenerate loops"),
    ("activation", "top-feature activation"),
    ("fixes", "traces where a check fixed a wrong step"),
    ("breaks", "traces where a check broke a right step"),
)
#: Measures that are shares of traces, shown in percent.
_SHARES = ("reflect", "accuracy", "loops", "fixes", "breaks")
#: Measures averaged over traces (every one but the word rate, a ratio of sums).
_MEANS = tuple(key for key, _ in MEASURES if key != "word_rate")


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    measures = [TraceMeasures.of(r["text"], r["n_tokens"], r["correct"]) for r in rows]
    steps = [step_measures(r["text"]) for r in rows]  # all zeros on traces that write no `a op b = q.` step
    return {
        "words": np.array([m.reasoning_words for m in measures], float),
        "tokens": np.array([m.n_tokens for m in measures], float),
        "reflect": np.array([m.reflects for m in measures], float),
        "accuracy": np.array([m.correct for m in measures], float),
        "loops": np.array([m.degenerate for m in measures], float),
        "activation": np.array([r.get("features_mean") or 0.0 for r in rows], float),
        "fixes": np.array([s["fixed"] > 0 for s in steps], float),
        "breaks": np.array([s["broke"] > 0 for s in steps], float),
    }


def _intervals(cols: dict[str, np.ndarray], **kw: Any) -> dict[str, dict]:
    mean = lambda x: float(np.mean(x))  # noqa: E731
    out = {"word_rate": bootstrap([cols["words"], cols["tokens"]], rate_per_100, **kw).to_dict()}
    for key in _MEANS:
        out[key] = bootstrap([cols[key]], mean, **kw).to_dict()
    return out


def _differences(cols: dict[str, np.ndarray], base: dict[str, np.ndarray], **kw: Any) -> dict[str, dict]:
    """Condition minus a reference (the baseline, or a random control) on the same problems (paired
    resamples)."""
    def rate_diff(w, t, bw, bt):
        return rate_per_100(w, t) - rate_per_100(bw, bt)

    def mean_diff(a, b):
        return float(np.mean(a) - np.mean(b))

    out = {"word_rate": bootstrap([cols["words"], cols["tokens"], base["words"], base["tokens"]], rate_diff,
                                  **kw).to_dict()}
    for key in _MEANS:
        out[key] = bootstrap([cols[key], base[key]], mean_diff, **kw).to_dict()
    return out


def summarize(conditions: list[Condition], generations: dict[str, list[dict]], *, n_resamples: int = 2000,
              confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Per condition: each measure with its interval and its paired difference from the baseline; for
    the top features, also their paired difference from each random control at the same strength."""
    kw = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    base_rows = generations["baseline"]
    ids = [r["id"] for r in base_rows]
    base = _columns(base_rows)
    result: dict[str, Any] = {"confidence": confidence, "n_resamples": n_resamples, "n_problems": len(ids),
                              "conditions": []}
    columns = {}
    for c in conditions:
        rows = generations[c.name]
        if [r["id"] for r in rows] != ids:
            raise ValueError(f"condition {c.name} was measured on other problems than the baseline")
        columns[c.name] = _columns(rows)
    for c in conditions:
        cols = columns[c.name]
        entry = {**c.to_dict(), "measures": _intervals(cols, **kw)}
        if c.kind != "baseline":
            entry["vs_baseline"] = _differences(cols, base, **kw)
        if c.kind == "top":
            entry["vs_random"] = {r.name: _differences(cols, columns[r.name], **kw) for r in conditions
                                  if r.kind == "random" and r.strength == c.strength}
        result["conditions"].append(entry)
    return result


def plot_dose_response(summary: dict[str, Any], path: Path) -> Path:
    """One panel per measure: value against signed strength, top features vs random controls."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    entries = summary["conditions"]
    base = next(e for e in entries if e["kind"] == "baseline")
    fig = Figure(figsize=(17, 7))
    axes = fig.subplots(2, 4)
    for ax, (key, label) in zip(axes.flat, MEASURES, strict=True):
        groups: dict[str, list[tuple[float, dict]]] = {}
        for e in entries:
            if e["kind"] == "baseline":
                continue
            series = "top features" if e["kind"] in ("top", "negative") else e["name"].split("@")[0]
            groups.setdefault(series, []).append((e["strength"], e["measures"][key]))
        for series, points in groups.items():
            points = sorted([(0.0, base["measures"][key]), *points], key=lambda p: p[0])
            x = [p[0] for p in points]
            y = [p[1]["value"] for p in points]
            err = [[p[1]["value"] - p[1]["low"] for p in points], [p[1]["high"] - p[1]["value"] for p in points]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=series,
                        linestyle="-" if series == "top features" else "--")
        ax.set_title(label)
        ax.set_xlabel("strength")
        ax.axvline(0, color="grey", linewidth=0.5)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"dose-response on {summary['n_problems']} held-out problems "
                 f"({int(summary['confidence'] * 100)}% bootstrap intervals)")
    fig.tight_layout()
    return atomic_write_figure(path, fig, dpi=110)


def _fmt(interval: dict, key: str) -> str:
    if key == "activation":
        return f"{interval['value']:.3g} [{interval['low']:.3g}, {interval['high']:.3g}]"
    scale, digits = (100.0, 1) if key in _SHARES else (1.0, 2)
    unit = "%" if scale == 100.0 else ""
    v, lo, hi = (interval[k] * scale for k in ("value", "low", "high"))
    return f"{v:.{digits}f}{unit} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _signed(interval: dict, key: str) -> str:
    text = _fmt(interval, key)
    return ("+" if interval["value"] >= 0 else "") + text


def ratio(value: float, baseline: float) -> float:
    """How many times the baseline a measure is (inf when the baseline is 0 and the value is not)."""
    if baseline == 0:
        return float("inf") if value > 0 else 1.0
    return value / baseline


def _excludes_zero(d: dict) -> bool:
    return d["low"] > 0 or d["high"] < 0


def conclusions(summary: dict[str, Any]) -> list[str]:
    """Plain statements read off the intervals: does steering the top features raise reflection,
    how many times the baseline, and more than matched random features at the same strength?"""
    lines = []
    base = next(e for e in summary["conditions"] if e["kind"] == "baseline")["measures"]
    for e in summary["conditions"]:
        if e["kind"] != "top":
            continue
        m, d = e["measures"], e["vs_baseline"]
        times = {k: ratio(m[k]["value"], base[k]["value"]) for k in ("word_rate", "reflect")}
        randoms = "; ".join(
            f"minus {name}: words {_signed(v['word_rate'], 'word_rate')}, reflecting "
            f"{_signed(v['reflect'], 'reflect')} ({'excludes' if _excludes_zero(v['reflect']) else 'includes'} 0)"
            for name, v in e.get("vs_random", {}).items())
        lines.append(
            f"At strength {e['strength']:g}, steering the top features changed the reasoning-word rate by "
            f"{_signed(d['word_rate'], 'word_rate')} per 100 tokens (×{times['word_rate']:.2f} the baseline, "
            f"{'an interval excluding 0' if _excludes_zero(d['word_rate']) else 'an interval including 0'}) and the "
            f"share of reflecting traces by {_signed(d['reflect'], 'reflect')} (×{times['reflect']:.2f})"
            + (f"; top features {randoms}" if randoms else "")
            + f"; degenerate loops {_fmt(m['loops'], 'loops')}, accuracy {_fmt(m['accuracy'], 'accuracy')} "
            f"({_signed(d['accuracy'], 'accuracy')} against the baseline), a check fixing a wrong step in "
            f"{_fmt(m['fixes'], 'fixes')} of traces and breaking a right one in {_fmt(m['breaks'], 'breaks')}."
        )
    return lines


def write_report(study: Any, summary: dict[str, Any]) -> tuple[Path, Path]:
    """`report.md` with the setup, the SAE and its training curves, the ReasonScore distribution, the
    top features and their contexts, the conditions table, the dose-response plot and example
    traces; then `report.html` with the plots embedded. Returns both paths."""
    from reasoning_dspy.reports import plot_score_distribution, plot_training_curves, write_html

    out: Path = study.out
    cfg = study.cfg
    plot = plot_dose_response(summary, out / "plots" / "dose_response.png")
    log = out / "sae" / "train_log.jsonl"
    curves = plot_training_curves(log, out / "plots" / "sae_training.png") if log.is_file() else None
    distribution = plot_score_distribution(study.scores, out / "plots" / "reasonscore.png")
    sae = study.sae_summary
    ev = sae.get("final_eval", {})
    lines = [
        f"# Study: reasoning features of {study.loaded.model_spec.name}",
        "",
        f"Model `{study.loaded.model_spec.name}` ({study.loaded.model_spec.n_layers} layers, d_model "
        f"{study.loaded.model_spec.d_model}), layer {study.layer}; program `{cfg.program}`"
        + (f" with the instruction \"{cfg.instruction}\"" if cfg.instruction else "") + " through `SteeredLM`; "
        f"{len(study.train)} training problems, {summary['n_problems']} held-out test problems; "
        f"{cfg.max_tokens} tokens per trace; strengths in `{cfg.units}` units, "
        + _steered_positions(cfg.steer_tokens, cfg.steer_skip, cfg.steer_skip_lines)
        + f"; seed {cfg.seed}.",
        "",
        "## SAE",
        "",
        f"{sae.get('train', {}).get('arch', '?')} SAE, d_sae {study.sae.cfg.d_sae}, trained on "
        f"{sae.get('tokens')} tokens ({sae.get('train_tokens', '?')} training tokens, {sae.get('val_tokens', '?')} held out) "
        f"at {sae.get('tokens_per_second', 0):,.0f} tokens/s"
        + (f" (stopped: {sae['stopped']})" if sae.get("stopped") else "") + ". Final evaluation: "
        + ", ".join(f"{k} {v:.4g}" for k, v in ev.items() if isinstance(v, (int, float))) + ".",
        "",
        *([f"![SAE training curves]({curves.relative_to(out)})", ""] if curves is not None else []),
        f"![ReasonScore distribution]({distribution.relative_to(out)})",
        "",
        "## Top features by ReasonScore (official vocabulary)",
        "",
        "| rank | feature | ReasonScore | density | f_max | top words | max-activating context |",
        "|---:|---:|---:|---:|---:|---|---|",
    ]
    steered = set(next(c.features for c in study.conditions if c.kind == "top"))
    for row in study.top_features[:10]:
        context = (row["contexts"][0] if row["contexts"] else "").replace("\n", " ").replace("|", "\\|")
        mark = " (steered)" if row["index"] in steered else ""
        lines.append(f"| {row['rank']} | {row['index']}{mark} | {row['score']:.4f} | {row['density']:.3f} | "
                     f"{row['max_activation']:.2f} | {', '.join(row['top_words']) or '-'} | {context[:160]} |")
    if cfg.density_cap is not None:
        lines += ["", f"Features denser than {cfg.density_cap} were skipped when choosing what to steer "
                      "(a density cap: our extension, not the paper's)."]
    lines += ["", "## Conditions", "",
              f"Each cell: value [{int(summary['confidence'] * 100)}% bootstrap interval over problems, "
              f"{summary['n_resamples']} resamples]. Random controls: features matched to the top ones in "
              "density and f_max" + (", at the same perturbation norm (residual units)" if cfg.units == "residual" else "")
              + ".", ""]
    header = "| condition | features | " + " | ".join(label for _, label in MEASURES) + " |"
    lines += [header, "|---|---|" + "---:|" * len(MEASURES)]
    for e in summary["conditions"]:
        cells = [_fmt(e["measures"][k], k) for k, _ in MEASURES]
        lines.append(f"| {e['name']} | {', '.join(map(str, e['features'])) or '-'} | " + " | ".join(cells) + " |")
    lines += ["", "### Difference from the baseline (paired)", "",
              "| condition | " + " | ".join(label for _, label in MEASURES) + " |", "|---|" + "---:|" * len(MEASURES)]
    for e in summary["conditions"]:
        if "vs_baseline" in e:
            lines.append(f"| {e['name']} | " + " | ".join(_signed(e["vs_baseline"][k], k) for k, _ in MEASURES) + " |")
    paired = [(e["name"], name, v) for e in summary["conditions"] for name, v in e.get("vs_random", {}).items()]
    if paired:
        lines += ["", "### Top features minus random features at the same strength (paired)", "",
                  "| top | random | " + " | ".join(label for _, label in MEASURES) + " |",
                  "|---|---|" + "---:|" * len(MEASURES)]
        lines += [f"| {top} | {rnd} | " + " | ".join(_signed(v[k], k) for k, _ in MEASURES) + " |"
                  for top, rnd, v in paired]
    lines += ["", f"![dose-response]({plot.relative_to(out)})", "", "## Reading", ""]
    lines += [f"- {line}" for line in conclusions(summary)]
    lines += ["", "## Example traces", ""]
    strongest = max((c for c in study.conditions if c.kind == "top"), key=lambda c: c.strength)
    for i in range(min(2, summary["n_problems"])):
        base = study.generations["baseline"][i]
        steered_row = study.generations[strongest.name][i]
        lines += [f"**{base['question']}** (answer {base['expected']:g})", "",
                  f"- baseline: {quote_trace(base['text'])}", f"- {strongest.name}: {quote_trace(steered_row['text'])}", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path, write_html(path)


def quote_trace(text: str, limit: int = 600) -> str:
    """A trace on one line as inline code, cut at `limit` characters."""
    text = " ".join(text.split())
    return "`" + (text[:limit] + " …" if len(text) > limit else text).replace("`", "'") + "`"


def _steered_positions(tokens: int | None, skip: int, skip_lines: int = 0) -> str:
    """Which positions the study steered, in words."""
    if skip_lines:
        lines = f"{skip_lines} line" + ("s" if skip_lines > 1 else "")
        return (f"steering only the {tokens} positions" if tokens else "steering every position") + (
            f" from the one that ends the model's first {lines} on")
    if tokens is None and skip == 0:
        return "steering every position (prompt and generated tokens)"
    if tokens is None:
        return f"steering the positions that predict generated token {skip + 1} and every one after it"
    if skip == 0:
        return f"steering only the positions that predict the first {tokens} generated tokens"
    return (f"steering only the positions that predict generated tokens {skip + 1} to {skip + tokens} (the first "
            f"{skip} written unsteered)")
