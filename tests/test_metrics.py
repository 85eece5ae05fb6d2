"""ReasoningActivationMetric: plain, combined with a task metric, GEPA feedback, and the second-pass fallback."""

from __future__ import annotations

import dspy
import pytest

from reasoning_dspy.program.lm import SteeredLM, engine_of
from reasoning_dspy.program.metrics import ReasoningActivationMetric, exact_match


def _pred(answer="4", act=0.6, top=((3, 0.9), (8, 0.2))):
    return dspy.Prediction(answer=answer, reasoning_activation=act, top_features=list(top))


def test_activation_alone_and_normalised():
    assert ReasoningActivationMetric()(dspy.Example(question="q"), _pred(act=0.6)) == pytest.approx(0.6)
    assert ReasoningActivationMetric(target=0.3)(None, _pred(act=0.6)) == 1.0
    assert ReasoningActivationMetric(target=2.0)(None, _pred(act=0.5)) == pytest.approx(0.25)


def test_combined_with_task_metric():
    gold = dspy.Example(question="2+2?", answer="4")
    product = ReasoningActivationMetric(exact_match)
    assert product(gold, _pred("4", 0.6)) == pytest.approx(0.6)
    assert product(gold, _pred("5", 0.6)) == 0.0  # loud reasoning cannot rescue a wrong answer
    mixed = ReasoningActivationMetric(exact_match, combine="sum", weight=0.75)
    assert mixed(gold, _pred("5", 0.6)) == pytest.approx(0.25 * 0.6)
    strict = ReasoningActivationMetric(exact_match, threshold=0.5)
    assert strict(gold, _pred("4", 0.6), trace=[]) is True and strict(gold, _pred("4", 0.4), trace=[]) is False


def test_gepa_form_returns_score_and_feedback():
    gold = dspy.Example(question="2+2?", answer="4")
    metric = ReasoningActivationMetric(exact_match, target=1.0)
    out = metric(gold, _pred("5", 0.4), None, "predict", [])
    assert isinstance(out, dspy.Prediction) and out.score == 0.0
    assert "wrong" in out.feedback and "0.400" in out.feedback and "#3" in out.feedback
    assert metric.gepa(gold, _pred("4", 0.4)).score == pytest.approx(0.4)


def test_errors_and_second_pass_fallback(tiny, steer_sae, steer_fmax):
    with pytest.raises(ValueError, match="no 'reasoning_activation'"):
        ReasoningActivationMetric()(None, dspy.Prediction(answer="x"))
    with pytest.raises(ValueError, match="combine"):
        ReasoningActivationMetric(combine="max")
    lm = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, reasoning_features=[5, 6], cache=False)
    metric = ReasoningActivationMetric(lm=lm)
    text = "Wait, maybe the answer is four. Therefore it is four."
    expected = engine_of(lm).reasoning_activation([text])[0]
    assert expected.n_tokens > 5 and expected.features_mean is not None
    assert metric(None, dspy.Prediction(answer=text)) == pytest.approx(expected.features_mean)
    engine_of(lm).close()


def test_deprecated_name_still_works_and_warns():
    from reasoning_dspy.program.metrics import ReasonScoreMetric

    with pytest.warns(DeprecationWarning, match="ReasoningActivationMetric"):
        metric = ReasonScoreMetric(target=2.0)
    assert isinstance(metric, ReasoningActivationMetric) and metric(None, _pred(act=0.5)) == pytest.approx(0.25)


def test_measuring_needs_reasoning_features(tiny, steer_sae, steer_fmax):
    """Without chosen features there is no reasoning activation to measure: a clear error, never the
    top-k mean of all latents passed off as one."""
    lm = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, cache=False)
    with pytest.raises(ValueError, match="reasoning features"):
        ReasoningActivationMetric(lm=lm)(None, dspy.Prediction(answer="Wait, four."))
    assert ReasoningActivationMetric(lm=lm, features=[5])(None, dspy.Prediction(answer="Wait, four.")) >= 0
    engine_of(lm).close()
