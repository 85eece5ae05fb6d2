"""The study's building blocks: trace measures, bootstrap intervals, matched controls, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reasoning_dspy.features.measures import count_words, is_degenerate, reflects
from reasoning_dspy.features.reasonscore import FeatureScores
from reasoning_dspy.reports.stats import bootstrap, rate_per_100
from reasoning_dspy.study import StudyConfig, StudyConfigError, build_conditions, matched_random_features


@pytest.mark.parametrize(("text", "words", "reflection"), [
    ("Wait, let me check. Hmm, maybe 12? Therefore 12.", 5, True),
    ("WAIT... Let   me\nsee", 2, True),
    ("The waiter lets me in; butter is another thing.", 1, False),  # 'another' only: no 'wait'/'but' inside words
    ("So 3 + 4 = 7. The answer is 7.", 0, False),
    ("", 0, False),
])
def test_reasoning_words_are_whole_words_in_any_case(text, words, reflection):
    assert count_words(text) == words
    assert reflects(text) is reflection


@pytest.mark.parametrize(("text", "loop"), [
    ("The " * 20, True),
    ("Sara had 20 candies and gave 8 to her friend. " * 4, True),
    ("First add 3 and 4 to get 7. Then multiply by 2 to get 14. So the answer is 14.", False),
    ("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20", False),
    ("yes yes yes", False),  # too short to call a loop
])
def test_degenerate_loops(text, loop):
    assert is_degenerate(text) is loop


def test_bootstrap_interval_covers_the_mean_and_keeps_pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 1.0, 400)
    ci = bootstrap([x], lambda a: float(a.mean()), n_resamples=500)
    assert ci.low < x.mean() < ci.high and ci.high - ci.low < 0.4
    paired = bootstrap([x + 1.0, x], lambda a, b: float(np.mean(a - b)), n_resamples=200)
    assert paired.low == pytest.approx(1.0) and paired.high == pytest.approx(1.0)  # pairing kept: no spread
    with pytest.raises(ValueError, match="equal, non-empty columns"):
        bootstrap([x, x[:3]], lambda a, b: 0.0)


def test_rate_is_a_ratio_of_sums():
    assert rate_per_100(np.array([1, 0, 3]), np.array([50, 50, 100])) == pytest.approx(2.0)
    assert rate_per_100(np.array([0]), np.array([0])) == 0.0


def _scores(density, fmax, reason):
    d = len(density)
    z = torch.zeros(d)
    return FeatureScores(reason_score=torch.tensor(reason), mu_pos_by_group=torch.zeros(d, 1), mu_pos=z, mu_neg=z,
                         entropy=z, max_activation=torch.tensor(fmax), density=torch.tensor(density),
                         selected=torch.arange(2), threshold=0.0, groups=["wait"],
                         group_token_counts=torch.ones(1), n_pos_tokens=1, n_neg_tokens=1)


def test_random_controls_match_density_and_fmax():
    rng = np.random.default_rng(1)
    d = 400
    density = rng.uniform(0.001, 0.3, d).astype(np.float32)
    fmax = rng.uniform(1, 20, d).astype(np.float32)
    reason = rng.normal(size=d).astype(np.float32)
    scores = _scores(density.tolist(), fmax.tolist(), reason.tolist())
    top = scores.top(3)
    picked = matched_random_features(scores, top, exclude=20, seed=0)
    assert not set(picked) & set(scores.top(20))
    for t, p in zip(top, picked, strict=True):
        assert abs(np.log(density[p] / density[t])) < 0.5 and abs(np.log(fmax[p] / fmax[t])) < 0.5
    assert picked == matched_random_features(scores, top, exclude=20, seed=0)  # deterministic per seed


def test_conditions_cover_sweep_controls_and_negative_and_respect_the_density_cap():
    scores = _scores([0.5, 0.01, 0.02, 0.03] + [0.02] * 200, [5.0] * 204, [9.0, 8.0, 7.0, 6.0] + [0.0] * 200)
    conditions = build_conditions(scores, top_features=2, strengths=[0.1, 0.2], negative_strengths=[-0.1],
                                  random_sets=1, density_cap=0.1, seed=0)
    assert [c.name for c in conditions] == ["baseline", "top@0.1", "top@0.2", "random0@0.1", "random0@0.2",
                                            "top@-0.1"]
    assert conditions[1].features == (1, 2)  # feature 0 is denser than the cap
    assert conditions[3].features == conditions[4].features and not set(conditions[3].features) & {0, 1, 2}


def test_config_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("model: tiny-random\nn_test: 10\nsae: {d_sae: 128, k: 8}\n")
    cfg = StudyConfig.load(path, ["n_test=12", "sae.k=4", "strengths=[0.3, 0.1]"])
    assert (cfg.model, cfg.n_test, cfg.sae["k"], cfg.strengths) == ("tiny-random", 12, 4, [0.1, 0.3])
    with pytest.raises(StudyConfigError, match="n_test"):
        StudyConfig.load(path, ["n_test=0"])
    with pytest.raises(StudyConfigError, match="key=value"):
        StudyConfig.load(path, ["=3"])
    with pytest.raises(StudyConfigError, match="negative_strengths"):
        StudyConfig.load(path, ["negative_strengths=[0.2]"])
    with pytest.raises(StudyConfigError, match="sae.cache is set by the study"):
        StudyConfig.load(path, ["sae.cache=x"])
    with pytest.raises(StudyConfigError, match="not found"):
        StudyConfig.load(tmp_path / "missing.yaml")


def _gen(texts: list[str]) -> list[dict]:
    return [{"id": f"p{i}", "text": t, "n_tokens": 20, "correct": True, "features_mean": 0.0}
            for i, t in enumerate(texts)]


def test_top_features_are_compared_with_random_ones_on_the_same_problems():
    from reasoning_dspy.study.conditions import Condition
    from reasoning_dspy.study.report import conclusions, ratio, summarize

    conditions = [Condition("baseline", "baseline", (), 0.0), Condition("top@0.2", "top", (1,), 0.2),
                  Condition("random0@0.2", "random", (7,), 0.2), Condition("random0@0.4", "random", (7,), 0.4)]
    plain, wait = "So 3 + 4 = 7.", "Wait, 3 + 4 = 7."
    generations = {"baseline": _gen([plain] * 40 + [wait] * 10), "top@0.2": _gen([wait] * 40 + [plain] * 10),
                   "random0@0.2": _gen([plain] * 38 + [wait] * 12), "random0@0.4": _gen([plain] * 50)}
    summary = summarize(conditions, generations, n_resamples=300)
    top = summary["conditions"][1]
    assert list(top["vs_random"]) == ["random0@0.2"]  # only the control at the same strength
    diff = top["vs_random"]["random0@0.2"]["reflect"]
    assert diff["value"] == pytest.approx(0.8 - 0.24) and diff["low"] > 0
    assert "vs_random" not in summary["conditions"][2]
    (line,) = conclusions(summary)
    assert "×4.00" in line and "excludes 0" in line  # 80 % reflecting against the baseline's 20 %
    assert ratio(0.3, 0.0) == float("inf") and ratio(0.0, 0.0) == 1.0


def test_checks_that_fix_or_break_a_step_are_counted_per_condition():
    from reasoning_dspy.study.conditions import Condition
    from reasoning_dspy.study.report import conclusions, summarize

    plain = "47 + 38 = 75.\nThe answer is 75."
    fixed = ("47 + 38 = 75. Let me check: 47 + 38: ones 7+8=15, write 5 carry 1; tens 4+3+1=8, write 8; so 85. "
             "Wait, 47 + 38 is 85, not 75.\nThe answer is 85.")
    broken = "47 + 38 = 85. Let me check: 47 + 38: ones 7+8=15, write 5; tens 4+3=7, write 7; so 75. Wait.\n"
    conditions = [Condition("baseline", "baseline", (), 0.0), Condition("top@0.2", "top", (1,), 0.2)]
    generations = {"baseline": _gen([plain] * 20), "top@0.2": _gen([fixed] * 15 + [broken] * 5)}
    summary = summarize(conditions, generations, n_resamples=300)
    base, top = (c["measures"] for c in summary["conditions"])
    assert base["fixes"]["value"] == 0 and base["breaks"]["value"] == 0
    assert top["fixes"]["value"] == pytest.approx(0.75) and top["breaks"]["value"] == pytest.approx(0.25)
    assert summary["conditions"][1]["vs_baseline"]["fixes"]["low"] > 0
    (line,) = conclusions(summary)
    assert "a check fixing a wrong step in 75.0%" in line


def test_a_study_token_window_reaches_every_steered_condition_and_the_recommendation():
    from reasoning_dspy.reasoner.ship import recommend_steering
    from reasoning_dspy.study.conditions import Condition
    from reasoning_dspy.study.report import summarize

    top = Condition("top@0.5", "top", (1, 2), 0.5)
    spec = top.steering("residual", 18, tokens=32)
    assert spec.tokens == 32 and spec.residual_strength == pytest.approx(0.5)
    assert top.steering("residual", 18).tokens is None and Condition("baseline", "baseline").steering("residual", 18, tokens=32) is None
    conditions = [Condition("baseline", "baseline"), top]
    summary = summarize(conditions, {"baseline": _gen(["So 7."] * 8), "top@0.5": _gen(["Wait, 7."] * 8)}, n_resamples=200)
    chosen = recommend_steering(summary, layer=18, units="residual", tokens=32)
    assert chosen["condition"] == "top@0.5" and chosen["steering"]["tokens"] == 32
    assert "skip_tokens" not in chosen["steering"]
    late = recommend_steering(summary, layer=18, units="residual", tokens=32, skip_tokens=9)["steering"]
    assert (late["tokens"], late["skip_tokens"]) == (32, 9) and top.steering("residual", 18, skip_lines=2).skip_lines == 2
