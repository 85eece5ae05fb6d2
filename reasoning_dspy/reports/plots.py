"""The figures the demo and the study reports share. Each takes plain data and writes one PNG
atomically; none uses pyplot, so a user's matplotlib backend is left alone."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reasoning_dspy._io import atomic_write_figure


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def read_training_log(path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of an SAE's `train_log.jsonl` (one per logged step)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no logged training steps")
    return rows


def plot_training_curves(log: str | os.PathLike | Sequence[Mapping[str, float]], path: str | os.PathLike,
                         *, title: str = "SAE training") -> Path:
    """Loss, fraction of variance unexplained, L0 and dead latents against training tokens."""
    rows = read_training_log(log) if isinstance(log, (str, os.PathLike)) else list(log)
    tokens = np.array([r["tokens"] for r in rows], float)
    fig = _figure(9.0, 5.2)
    panels = (("loss", "training loss", True), ("fvu", "fraction of variance unexplained", False),
              ("l0", "L0 (active latents per token)", False), ("dead_pct", "dead latents (%)", False))
    for i, (key, label, log_y) in enumerate(panels):
        ax = fig.add_subplot(2, 2, i + 1)
        values = [r.get(key) for r in rows]
        if all(v is None for v in values):
            ax.text(0.5, 0.5, f"{key} not logged", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.plot(tokens, [np.nan if v is None else v for v in values], color="tab:blue", lw=1.4)
        if log_y:
            ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("training tokens", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return atomic_write_figure(path, fig)


def plot_score_distribution(scores: Any, path: str | os.PathLike, *, top: int = 5) -> Path:
    """Histogram of every feature's ReasonScore, with the top `top` marked: how far the reasoning
    features stand out from the rest of the dictionary."""
    values = scores.reason_score.float().numpy()
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    ax.hist(values, bins=80, color="tab:grey", alpha=0.8)
    ax.set_yscale("log")
    for rank, feature in enumerate(scores.top(top)):
        ax.axvline(values[feature], color="tab:red", lw=1, alpha=0.8)
        ax.annotate(f"#{feature}", (values[feature], 1), rotation=90, fontsize=7, color="tab:red",
                    xytext=(2, 4 + 10 * rank), textcoords="offset points")
    ax.set_xlabel("ReasonScore")
    ax.set_ylabel("features")
    ax.set_title(f"ReasonScore of all {len(values):,} features (top {top} in red)", fontsize=10)
    return atomic_write_figure(path, fig)


def plot_steering_effect(groups: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike) -> Path:
    """Mean reasoning activation and reasoning words per 100 tokens per condition, with 95 %
    bootstrap intervals over problems.

    `groups[name]` has per-trace lists `activation`, `words` and `tokens`."""
    from reasoning_dspy.reports.stats import bootstrap, rate_per_100

    names = list(groups)
    fig = _figure(8.0, 3.4)
    for i, (title, stat) in enumerate((("reasoning activation (top features)", "activation"),
                                       ("reasoning words / 100 tokens", "word_rate"))):
        ax = fig.add_subplot(1, 2, i + 1)
        values, lows, highs = [], [], []
        for name in names:
            g = groups[name]
            if stat == "activation":
                interval = bootstrap([np.asarray(g["activation"], float)], lambda x: float(np.mean(x)))
            else:
                interval = bootstrap([np.asarray(g["words"], float), np.asarray(g["tokens"], float)], rate_per_100)
            values.append(interval.value)
            lows.append(interval.value - interval.low)
            highs.append(interval.high - interval.value)
        colors = ["tab:grey", "tab:blue", "tab:red", "tab:green", "tab:purple"][: len(names)]
        ax.bar(range(len(names)), values, yerr=[lows, highs], color=colors, capsize=4)
        ax.set_xticks(range(len(names)), names, fontsize=8, rotation=10)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return atomic_write_figure(path, fig)
