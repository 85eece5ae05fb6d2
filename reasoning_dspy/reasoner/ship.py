"""Copy a trained adapter, and the SAE and ReasonScore table of a study on it, into the package.

This is the last step of rebuilding `smollm2-reasoner` from the repository alone:

    reasoning-dspy reasoner train experiments/configs/reasoner-smollm2.yaml
    reasoning-dspy reasoner ship --adapter runs/reasoner-smollm2/adapter
    reasoning-dspy study experiments/configs/study-smollm2-reasoner-decision.yaml
    reasoning-dspy reasoner ship --study runs/study-smollm2-reasoner-decision

Only what loading and the demo's report need is copied (the adapter's three files; the SAE's
weights, config and training log; the scores' tensors and tables), each file atomically, after checking that it loads. Beside the SAE goes
`steering.json`: the steering the study recommends (`recommend_steering`), which
`steering.recommended_steering("smollm2-reasoner")` reads back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reasoning_dspy._io import atomic_write_bytes, atomic_write_json
from reasoning_dspy.models.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, INFO_FILE
from reasoning_dspy.models.shipped import package_folder

ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS, INFO_FILE)
SAE_FILES = ("cfg.json", "sae_weights.safetensors", "training_config.json", "train_log.jsonl")
SCORE_FILES = ("scores.safetensors", "features.json", "features.csv", "top_features.json", "analysis.json")


def ship_adapter(adapter: str | Path, dest: str | Path | None = None) -> Path:
    """Copy an adapter folder written by `reasoner train` (checked to load onto its base) to `dest`."""
    from reasoning_dspy.models import load_model
    from reasoning_dspy.models.adapter_files import adapter_info, load_adapter

    adapter, dest = Path(adapter), Path(dest) if dest is not None else package_folder()
    _require(adapter, ADAPTER_FILES, "an adapter folder (reasoner train writes OUT/adapter)")
    load_adapter(load_model(adapter_info(adapter)["base_model"], dtype="float32"), adapter)  # refuses a bad one
    _copy(adapter, dest, ADAPTER_FILES)
    return dest


def ship_study(study: str | Path, dest: str | Path | None = None) -> Path:
    """Copy a finished study's SAE (to `dest/sae`) and ReasonScore table (to `dest/sae/scores`)."""
    from reasoning_dspy.features.reasonscore import FeatureScores
    from reasoning_dspy.sae import load_sae

    study, dest = Path(study), Path(dest) if dest is not None else package_folder()
    _require(study / "sae", SAE_FILES, "a study's SAE folder (run the study to the end first)")
    _require(study / "scores", SCORE_FILES, "a study's scores folder (run the study to the end first)")
    sae, scores = load_sae(study / "sae"), FeatureScores.load(study / "scores")
    if scores.d_sae != sae.d_sae:
        raise ValueError(f"{study}: the scores cover {scores.d_sae} features but the SAE has {sae.d_sae}")
    _require(study, ("summary.json", "config.json"), "a finished study (run it to the end first)")
    summary = json.loads((study / "summary.json").read_text())
    config = json.loads((study / "config.json").read_text())
    _copy(study / "sae", dest / "sae", SAE_FILES)
    _copy(study / "scores", dest / "sae" / "scores", SCORE_FILES)
    atomic_write_json(dest / "sae" / STEERING_FILE, recommend_steering(summary, layer=sae.cfg.hook_layer,
                                                                      units=config.get("units", "residual"),
                                                                      tokens=config.get("steer_tokens"),
                                                                      skip_tokens=config.get("steer_skip", 0),
                                                                      skip_lines=config.get("steer_skip_lines", 0)))
    return dest / "sae"


STEERING_FILE = "steering.json"


def recommend_steering(summary: dict[str, Any], *, layer: int | None, units: str = "residual",
                       **window: int | None) -> dict[str, Any]:
    """The study's most accurate top-feature condition (ties: fewer loops, then more reflecting
    traces), as a `SteeringSpec` dict (with the study's token window: `tokens`, `skip_tokens`,
    `skip_lines`) with the measurements that chose it.

    Accuracy decides, not reflection: on smollm2-reasoner the strength that made the most traces
    reflect within a loop limit was also the one that lost the most accuracy, because reflecting
    words are cheap and checks that compute are not. Loops are reported, not used to exclude."""
    from reasoning_dspy.study.conditions import Condition

    tops = sorted((c for c in summary["conditions"] if c["kind"] == "top"), key=lambda c: c["strength"])
    if not tops:
        raise ValueError("the study summary has no top-feature condition to recommend")
    value = lambda c, k: c["measures"][k]["value"]  # noqa: E731
    best = max(tops, key=lambda c: (value(c, "accuracy"), -value(c, "loops"), value(c, "reflect")))
    spec = Condition.from_dict(best).steering(units, layer, **window)
    measured = {k: value(best, k) for k in ("reflect", "word_rate", "accuracy", "loops")}
    chosen = {"steering": spec.model_dump(mode="json"), "condition": best["name"], "strength": best["strength"],
              "measured": measured, "rule": "most accurate top-feature condition (ties: fewer loops, then more "
                                            "reflecting traces)"}
    if "vs_baseline" in best:
        chosen["accuracy_vs_baseline"] = best["vs_baseline"]["accuracy"]
    if "n_problems" in summary:
        chosen["n_problems"] = summary["n_problems"]  # per condition: how much the measurements rest on
    return chosen


def _require(folder: Path, names: tuple[str, ...], what: str) -> None:
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{str(folder)!r} is not {what}: {', '.join(missing)} missing")


def _copy(src: Path, dest: Path, names: tuple[str, ...]) -> None:
    for name in names:
        atomic_write_bytes(dest / name, (src / name).read_bytes())
