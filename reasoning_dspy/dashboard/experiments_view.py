"""The Experiments page: runs and trials from the tracking database, with the plots of an optimize
report (score per trial with the best so far, the Pareto front of score, accuracy and tokens), the
run's generated answers, and the analysts' annotations (`tracking.annotations`): flag a prompt,
give it a score by hand, re-score it with the model, or steer it by hand.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from reasoning_dspy.tracking.annotations import Annotation, AnnotationStore
from reasoning_dspy.tracking.browse import list_runs, run_generations, run_trials

RUN_COLUMNS = ["name", "kind", "status", "trials", "generations", "started", "finished", "id"]
TRIAL_COLUMNS = ["trial", "score", "accuracy", "tokens", "activation", "reflect", "feasible", "instruction", "steering"]
GENERATION_COLUMNS = ["label", "index", "prompt", "output", "reasoning activation", "correct", "tokens", "id"]
ANNOTATION_COLUMNS = ["when (UTC)", "who", "kind", "score", "note", "prompt", "run"]


def runs_rows(notes: AnnotationStore) -> list[list[Any]]:
    return [[r["name"], r["kind"], r["status"], r["trials"], r["generations"], r["started_at"], r["finished_at"], r["id"]]
            for r in list_runs(notes.store)]


def _instruction(trial: dict[str, Any]) -> str:
    cand = trial.get("candidate") or {}
    return str(cand.get("instruction") or "")


def _steering(trial: dict[str, Any]) -> str:
    """An optimizer candidate's steering (`optimizers.space.Candidate`: features, one strength, mode)."""
    cand = trial.get("candidate") or {}
    feats = cand.get("features") or ()
    if not feats or not cand.get("strength"):
        return ""
    return f"{cand.get('mode', 'add')} {cand['strength']:g} on " + ", ".join(f"#{f}" for f in feats)


def trials_rows(trials: list[dict[str, Any]]) -> list[list[Any]]:
    def r(v: Any) -> Any:
        return round(v, 4) if isinstance(v, float) else v

    return [[t["number"], r(t["score"]), r(t["accuracy"]), r(t["tokens"]), r(t["activation"]), r(t["reflect"]),
             "yes" if t["feasible"] else "no", _instruction(t), _steering(t)] for t in trials]


def evaluated(trials: list[dict[str, Any]]) -> list[SimpleNamespace]:
    """Trials that were scored (skipped candidates carry no accuracy or tokens), as the records
    `optimizers.trials.pareto_front` reads."""
    return [SimpleNamespace(number=t["number"], score=t["score"], accuracy=t["accuracy"], tokens=t["tokens"],
                            feasible=bool(t["feasible"]), steered=bool((t.get("candidate") or {}).get("features")))
            for t in trials if t["score"] is not None and t["accuracy"] is not None and t["tokens"] is not None]


def trial_figures(trials: list[dict[str, Any]], title: str = "") -> tuple[Any, Any]:
    """(score per trial with the best feasible score so far, Pareto front) as matplotlib figures."""
    from matplotlib.figure import Figure

    from optimizers.trials import pareto_front

    done = evaluated(trials)
    fig1 = Figure(figsize=(6.4, 3.6))
    ax = fig1.subplots()
    fig2 = Figure(figsize=(6.4, 3.6))
    bx = fig2.subplots()
    if not done:
        for a in (ax, bx):
            a.text(0.5, 0.5, "no scored trials in this run", ha="center", va="center", transform=a.transAxes)
        return fig1, fig2
    for steered, marker, label in ((False, "o", "instruction only"), (True, "^", "with steering")):
        for feasible, colour in ((True, "tab:blue"), (False, "tab:grey")):
            pts = [t for t in done if t.steered == steered and t.feasible == feasible]
            if pts:
                ax.scatter([t.number for t in pts], [t.score for t in pts], marker=marker, color=colour,
                           label=label + ("" if feasible else " (breaks the accuracy constraint)"))
    best, running = [], None
    for t in done:
        if t.feasible and (running is None or t.score > running):
            running = t.score
        best.append(float("nan") if running is None else running)
    ax.step([t.number for t in done], best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("score")
    ax.set_title(f"score per trial{': ' + title if title else ''}")
    ax.legend(fontsize=7)
    fig1.tight_layout()
    front = {t.number for t in pareto_front(done)}
    biggest = max(max(t.tokens for t in done), 1.0)
    bx.scatter([t.accuracy for t in done], [t.score for t in done], s=[20 + 80 * t.tokens / biggest for t in done],
               alpha=0.5, color="tab:grey", label="trials (size: tokens)")
    on = sorted((t for t in done if t.number in front), key=lambda t: t.accuracy)
    bx.scatter([t.accuracy for t in on], [t.score for t in on], s=50, color="tab:red", label="Pareto front")
    bx.set_xlabel("accuracy")
    bx.set_ylabel("score")
    bx.set_title("Pareto front: score, accuracy, tokens")
    bx.legend(fontsize=7)
    fig2.tight_layout()
    return fig1, fig2


def run_detail(notes: AnnotationStore, run_id: str) -> tuple[list[dict[str, Any]], list[list[Any]], list[list[Any]]]:
    """(trials, trial rows, generation rows) of one run."""
    trials = run_trials(notes.store, run_id)
    gens = run_generations(notes.store, run_id)
    rows = [[g["label"], g["index"], g["prompt"], g["output"],
             None if g["reasoning_activation"] is None else round(g["reasoning_activation"], 4), g["correct"],
             g["tokens"], g["id"]] for g in gens]
    return trials, trials_rows(trials), rows


def annotation_rows(items: list[Annotation]) -> list[list[Any]]:
    return [[a.created_at.strftime("%Y-%m-%d %H:%M:%S"), a.author, a.kind, None if a.score is None else round(a.score, 4),
             a.note or "", a.prompt, a.run_id or ""] for a in items]
