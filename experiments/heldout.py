"""Held-out evaluation: the unoptimized program, the optimized instruction, and the optimized
instruction with its steering, on a split the optimizer never saw, with paired bootstrap intervals
of each one's difference from the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from experiments.setup import Setup
from reasoning_dspy._io import atomic_write_json

ARMS = ("baseline", "optimized", "steered")
MEASURES = ("activation", "accuracy", "reflect", "word_rate", "tokens")


def evaluate_heldout(setup: Setup, lm: Any, compiled: Any, path: Path, *, progress: bool = True) -> dict[str, Any]:
    """Scores of the three arms on the test split (read back from `path` when already there)."""
    import json

    from optimizers.evaluate import evaluate_programs
    from optimizers.instructions import current_instruction
    from optimizers.program import SteeredProgram

    if path.is_file():
        return json.loads(path.read_text())
    baseline = SteeredProgram(setup.program())
    optimized = compiled.deepcopy()
    optimized.steering = None
    arms = {"baseline": baseline, "optimized": optimized}
    if compiled.steering is not None:
        arms["steered"] = compiled
    if progress:
        print(f"held-out: {len(arms)} programs x {len(setup.test)} {setup.cfg.dataset.test_split} examples")
    scores, wall = evaluate_programs(list(arms.values()), lm, setup.test, labels=list(arms),
                                     vocabulary=setup.cfg.vocabulary, adapter=setup.cfg.program.make_adapter())
    per_arm = dict(zip(arms, scores, strict=True))
    if "steered" not in per_arm:  # the best program does not steer: steered is the optimized program
        per_arm["steered"] = per_arm["optimized"]
    rows = {arm: {"activation": s.activation, "correct": s.correct, "tokens": s.tokens,
                  "reflects": [bool(x) for x in s.reflects], "words": s.words, "texts": s.texts}
            for arm, s in per_arm.items()}
    result = {"n": len(setup.test), "split": setup.cfg.dataset.test_split, "wall_s": round(wall, 1),
              "instruction": {"baseline": current_instruction(baseline), "optimized": current_instruction(compiled)},
              "steering": None if compiled.steering is None else compiled.steering.model_dump(mode="json"),
              "summary": summarize(rows, seed=setup.cfg.seed), "rows": rows,
              "examples": {arm: s.texts[:3] for arm, s in per_arm.items()}}
    atomic_write_json(path, result)
    return result


def _columns(row: dict[str, list]) -> dict[str, np.ndarray]:
    tokens = np.asarray(row["tokens"], dtype=float)
    return {"activation": np.asarray(row["activation"], dtype=float), "accuracy": np.asarray(row["correct"], float),
            "reflect": np.asarray(row["reflects"], dtype=float), "words": np.asarray(row["words"], float),
            "tokens": tokens}


def _statistic(measure: str):
    from reasoning_dspy.reports.stats import rate_per_100

    if measure == "word_rate":
        return lambda words, tokens: rate_per_100(words, tokens)
    return lambda x: float(np.mean(x))


def _cols(cols: dict[str, np.ndarray], measure: str) -> list[np.ndarray]:
    return [cols["words"], cols["tokens"]] if measure == "word_rate" else [cols[measure]]


def summarize(rows: dict[str, dict], *, seed: int = 0, n_resamples: int = 2000) -> dict[str, Any]:
    """Each arm's measures with 95 % bootstrap intervals, and each arm minus the baseline, paired
    over examples (the same resampled examples for both arms)."""
    from reasoning_dspy.reports.stats import bootstrap

    cols = {arm: _columns(row) for arm, row in rows.items()}
    out: dict[str, Any] = {}
    for arm, c in cols.items():
        entry: dict[str, Any] = {}
        for m in MEASURES:
            entry[m] = bootstrap(_cols(c, m), _statistic(m), n_resamples=n_resamples, seed=seed).to_dict()
        if arm != "baseline":
            base = cols["baseline"]
            diff = {}
            for m in MEASURES:
                stat = _statistic(m)
                k = len(_cols(c, m))
                diff[m] = bootstrap(_cols(c, m) + _cols(base, m),
                                    lambda *xs, stat=stat, k=k: stat(*xs[:k]) - stat(*xs[k:]),
                                    n_resamples=n_resamples, seed=seed).to_dict()
            entry["minus_baseline"] = diff
        out[arm] = entry
    return out
