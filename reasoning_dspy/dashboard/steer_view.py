"""The Steering page: the same prompt answered without and with steering, side by side, and a strength
sweep (dose-response) for one prompt.

Every answer is measured the same way: reasoning words (`study.measures.count_words`, any case, whole
words), whether it reflects, its length in tokens, its reasoning activation (mean activation of the
reasoning features over the answer, read before the steering vector is added, so it compares fairly
with the baseline) and, when steered, how far steering moved the residual (mean ‖δ‖/‖x‖).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from reasoning_dspy.dashboard.backend import Answer, Backend
from reasoning_dspy.dashboard.workspace import DashboardError, Workspace
from reasoning_dspy.steering import SteeringSpec

MEASURE_COLUMNS = ["answer", "reasoning words", "reflects", "tokens", "reasoning activation", "‖δ‖/‖x‖", "loops"]
SWEEP_COLUMNS = ["strength", "reasoning words", "tokens", "reasoning activation", "‖δ‖/‖x‖", "answer"]
MAX_SWEEP = 12


@dataclass
class Comparison:
    baseline: Answer
    steered: Answer
    spec: SteeringSpec
    rows: list[list[Any]]  # MEASURE_COLUMNS


def steering_spec(ws: Workspace, *, source: str, top_n: Any, features_text: str, strength: Any, mode: str,
                  units: str) -> SteeringSpec:
    """The steering the page's controls describe; every mistake is a `DashboardError` saying what to fix."""
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise DashboardError(f"strength must be a number, got {strength!r}") from None
    if not math.isfinite(strength):
        raise DashboardError(f"strength must be a finite number, got {strength}")
    if source == "top":
        ranking = ws.served.ranking
        if not ranking:
            raise DashboardError("this SAE has no ReasonScore table, so there is no top N: name the features instead")
        try:
            n = int(top_n)
        except (TypeError, ValueError):
            raise DashboardError(f"N must be a whole number, got {top_n!r}") from None
        if not 1 <= n <= min(len(ranking), 64):
            raise DashboardError(f"N must be from 1 to {min(len(ranking), 64)}, got {n}")
        features = list(ranking[:n])
    else:
        features = ws.parse_features(features_text)
        if not features:
            raise DashboardError("name at least one feature to steer (e.g. 5, 12), or choose top N by ReasonScore")
    if units == "fmax" and ws.served.max_activation is not None:
        dead = [f for f in features if float(ws.served.max_activation[f]) <= 0]
        if dead:
            raise DashboardError(f"features {dead} never fired on the reference text (f_max = 0), so in f_max units "
                                 "steering them adds nothing: use residual units, or other features")
    try:
        return SteeringSpec.from_features(features, strength, mode=mode, units=units)
    except ValueError as err:
        raise DashboardError(f"invalid steering: {_first_line(err)}") from None


def _first_line(err: Exception) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        return "; ".join(e["msg"].replace("Value error, ", "") for e in errors())
    return str(err).splitlines()[0]


def measure(label: str, answer: Answer) -> list[Any]:
    """One MEASURE_COLUMNS row."""
    from reasoning_dspy.features.measures import count_words, is_degenerate, reflects

    act = answer.reasoning_activation
    return [label, count_words(answer.text), "yes" if reflects(answer.text) else "no", answer.n_tokens,
            None if act is None else round(act, 4),
            None if answer.perturbation_ratio is None else round(answer.perturbation_ratio, 4),
            "yes" if is_degenerate(answer.text) else "no"]


def compare(backend: Backend, ws: Workspace, prompt: str, spec: SteeringSpec, *, max_tokens: int = 64) -> Comparison:
    """Baseline and steered answers to `prompt`, generated in one engine batch."""
    if not (prompt or "").strip():
        raise DashboardError("the prompt is empty: type a question or some text first")
    baseline, steered = backend.generate([(prompt, None), (prompt, spec)], int(max_tokens))
    return Comparison(baseline, steered, spec, [measure("baseline", baseline), measure("steered", steered)])


def parse_strengths(text: str) -> list[float]:
    """`"0, 0.1 0.2"` -> `[0.0, 0.1, 0.2]` (sorted, at most MAX_SWEEP finite numbers)."""
    parts = [p for p in str(text or "").replace(",", " ").split() if p]
    if not parts:
        raise DashboardError("give the strengths to sweep, e.g. 0, 0.1, 0.2, 0.4")
    out = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise DashboardError(f"{p!r} is not a number: give strengths like 0, 0.1, 0.2") from None
        if not math.isfinite(v):
            raise DashboardError(f"strengths must be finite numbers, got {p}")
        out.append(v)
    if len(out) > MAX_SWEEP:
        raise DashboardError(f"sweep at most {MAX_SWEEP} strengths at once, got {len(out)}")
    return sorted(set(out))


def sweep(backend: Backend, ws: Workspace, prompt: str, spec: SteeringSpec, strengths: list[float], *,
          max_tokens: int = 64) -> list[list[Any]]:
    """The dose-response for one prompt: the same features at each strength (0 = unsteered), all in
    one engine batch. Rows are SWEEP_COLUMNS."""
    from reasoning_dspy.features.measures import count_words

    if not (prompt or "").strip():
        raise DashboardError("the prompt is empty: type a question or some text first")
    specs = []
    for s in strengths:
        try:
            specs.append(None if s == 0 else SteeringSpec.from_features(spec.features, s, mode=spec.mode, units=spec.units))
        except ValueError as err:
            raise DashboardError(f"strength {s:g}: {_first_line(err)}") from None
    answers = backend.generate([(prompt, sp) for sp in specs], int(max_tokens))
    return [[s, count_words(a.text), a.n_tokens, None if a.reasoning_activation is None else round(a.reasoning_activation, 4),
             None if a.perturbation_ratio is None else round(a.perturbation_ratio, 4), a.text]
            for s, a in zip(strengths, answers, strict=True)]


def sweep_figure(rows: list[list[Any]], spec: SteeringSpec) -> Any:
    """Reasoning activation and reasoning words against strength (matplotlib `Figure`)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    xs = [r[0] for r in rows]
    acts = [r[3] if r[3] is not None else float("nan") for r in rows]
    ax.plot(xs, acts, marker="o", color="tab:red", label="reasoning activation")
    ax.set_xlabel(f"strength γ ({'× ‖x‖' if spec.units == 'residual' else '× f_max'}, {spec.mode}) on "
                  f"{', '.join('#' + str(f) for f in spec.features)}")
    ax.set_ylabel("reasoning activation", color="tab:red")
    ax2 = ax.twinx()
    ax2.plot(xs, [r[1] for r in rows], marker="s", color="tab:blue", label="reasoning words")
    ax2.set_ylabel("reasoning words in the answer", color="tab:blue")
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("dose-response for one prompt (0 = unsteered)")
    fig.tight_layout()
    return fig
