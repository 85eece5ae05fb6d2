"""Shipping a study: the recommended steering is the study's most accurate top condition, and reads back."""

from __future__ import annotations

import json

import pytest

from reasoning_dspy.reasoner.ship import recommend_steering
from reasoning_dspy.steering import SteeringError, SteeringSpec, recommended_steering


def _condition(name: str, kind: str, strength: float, reflect: float, loops: float, accuracy: float) -> dict:
    value = lambda v: {"value": v, "low": v, "high": v}  # noqa: E731
    return {"name": name, "kind": kind, "features": [4, 9], "strength": strength,
            "measures": {"reflect": value(reflect), "word_rate": value(reflect * 3), "accuracy": value(accuracy),
                         "loops": value(loops)}}


SUMMARY = {"conditions": [
    _condition("baseline", "baseline", 0.0, 0.1, 0.0, 0.5),
    _condition("top@0.05", "top", 0.05, 0.3, 0.0, 0.45),
    _condition("top@0.1", "top", 0.1, 0.6, 0.08, 0.3),    # reflects most within 10 % loops, loses accuracy
    _condition("top@0.2", "top", 0.2, 0.9, 0.3, 0.6),     # the most accurate, though it loops on 30 %
    _condition("random0@0.2", "random", 0.2, 0.95, 0.0, 0.9),  # controls are never recommended
]}


def test_the_recommendation_is_the_most_accurate_top_condition():
    rec = recommend_steering(SUMMARY, layer=18)
    assert rec["condition"] == "top@0.2" and rec["measured"] == {"reflect": 0.9, "word_rate": 0.9 * 3,
                                                                "accuracy": 0.6, "loops": 0.3}
    spec = SteeringSpec.model_validate(rec["steering"])
    # residual units: two features at 0.2/√2 each move every token by 0.2 × its norm
    assert spec.units == "residual" and spec.layer == 18 and spec.residual_strength == pytest.approx(0.2)
    assert "n_problems" not in rec and recommend_steering({**SUMMARY, "n_problems": 64}, layer=18)["n_problems"] == 64
    tied = {"conditions": SUMMARY["conditions"][:3] + [_condition("top@0.3", "top", 0.3, 0.7, 0.0, 0.45)]}
    assert recommend_steering(tied, layer=18)["condition"] == "top@0.3"  # as accurate as 0.05, reflects more
    with pytest.raises(ValueError, match="no top-feature condition"):
        recommend_steering({"conditions": SUMMARY["conditions"][:1]}, layer=18)


def test_recommended_steering_reads_the_file_and_names_what_is_wrong(tmp_path):
    (tmp_path / "steering.json").write_text(json.dumps(recommend_steering(SUMMARY, layer=3)))
    assert recommended_steering(tmp_path).features == pytest.approx({4: 0.2 / 2 ** 0.5, 9: 0.2 / 2 ** 0.5})
    with pytest.raises(SteeringError, match="steering.json is missing"):
        recommended_steering(tmp_path / "nowhere")
    (tmp_path / "steering.json").write_text('{"steering": {"features": {"4": "lots"}}}')
    with pytest.raises(SteeringError, match="does not hold a recommended steering spec"):
        recommended_steering(tmp_path)


def test_most_of_the_shipped_top_five_features_are_reflection_or_verification_features():
    """The shipped analysis (the reasoner's own traces, via `reasoner ship`): at least 3 of the 5 best
    ReasonScore features fire hardest in reflective sentences or inside digit-level checks, carried by
    several tokens."""
    from reasoning_dspy.features.analysis import load_analysis
    from reasoning_dspy.features.kinds import REASONING_KINDS, feature_kind
    from reasoning_dspy.sae.io import shipped_sae_folder

    reports = load_analysis(shipped_sae_folder("smollm2-reasoner") / "scores")
    kinds = [feature_kind(r) for r in sorted(reports, key=lambda r: r.rank)[:5]]
    assert sum(kind in REASONING_KINDS for kind in kinds) >= 3, kinds


def test_the_package_holds_exactly_what_the_shipped_registry_lists():
    from reasoning_dspy.models.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, INFO_FILE
    from reasoning_dspy.models.adapters import SHIPPED_ADAPTERS, shipped_adapter
    from reasoning_dspy.models.shipped import SHIPPED, package_folder
    from reasoning_dspy.sae.io import SHIPPED_SAES, SAEFileError, shipped_sae_folder

    data = package_folder().parent
    on_disk = {d.name for d in data.iterdir() if (d / INFO_FILE).is_file()}
    assert on_disk == set(SHIPPED) == set(SHIPPED_ADAPTERS)
    for name, model in SHIPPED.items():
        assert all((shipped_adapter(name) / f).is_file() for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, INFO_FILE))
        assert (package_folder(name) / "sae" / "cfg.json").is_file() == model.has_sae == (name in SHIPPED_SAES)
        if model.has_sae:
            assert (shipped_sae_folder(name) / "scores" / "features.json").is_file()
        else:
            with pytest.raises(SAEFileError, match="no shipped SAE named"):
                shipped_sae_folder(name)
