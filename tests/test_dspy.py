"""DSPy's modules, Evaluate and optimizers run end to end on SteeredLM with tiny-random."""

from __future__ import annotations

import dspy
import pytest

from reasoning_dspy.adapter import LenientChatAdapter
from reasoning_dspy.lm import SteeredLM, engine_of
from reasoning_dspy.metrics import ReasonScoreMetric, exact_match
from reasoning_dspy.modules import SAESteeringModule
from signatures import ExplainDecision, ReasonedQA, StepByStepPlan

QUESTIONS = [("What is 2 + 2?", "4"), ("Is 91 prime?", "no"), ("Capital of France?", "Paris"),
             ("What is 3 * 3?", "9"), ("Is water wet?", "yes"), ("What colour is the sky?", "blue")]


@pytest.fixture(scope="module")
def lm(tiny, steer_sae, steer_fmax):
    lm = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, capture=True, max_tokens=8,
                   truncate_prompt=True)
    yield lm
    engine_of(lm).close()


@pytest.fixture
def trainset():
    return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in QUESTIONS]


# correctness, plus a little reasoning activation so that random outputs get different scores
METRIC = ReasonScoreMetric(exact_match, combine="sum", weight=0.9, target=1.0)


def _steered_program(sae):
    return SAESteeringModule(sae=sae, features=[5, 40], strength=3.0)


def test_predict_cot_and_signatures(lm):
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        assert isinstance(dspy.Predict("question -> answer")(question="Hi?").answer, str)
        cot = dspy.ChainOfThought(ReasonedQA)(question="Is 91 prime?")
        assert isinstance(cot.answer, str) and isinstance(cot.reasoning, str)
        explained = dspy.Predict(ExplainDecision)(situation="Rain forecast.", decision="Took an umbrella.")
        assert {"explanation", "verdict"} <= set(explained.keys())
        plan = dspy.Predict(StepByStepPlan)(goal="Bake bread", constraints="one hour")
        assert isinstance(plan.steps, list)
    for sig in (ReasonedQA, ExplainDecision, StepByStepPlan):
        assert len(sig.instructions) > 80  # the docstring is the instruction the LM sees


def test_lenient_adapter_salvages_instead_of_raising():
    adapter = LenientChatAdapter()
    sig = dspy.Signature("question -> reasoning, answer")
    assert adapter.parse(sig, "[[ ## reasoning ## ]]\nbecause\n[[ ## answer ## ]]\n4") == {
        "reasoning": "because", "answer": "4"}  # well-formed output parses as ChatAdapter does
    assert adapter.parse(sig, "just some words") == {"reasoning": "", "answer": "just some words"}
    assert adapter.parse(sig, "[[ ## reasoning ## ]]\nhmm") == {"reasoning": "hmm", "answer": ""}
    typed = dspy.Signature("question -> steps: list[str], confidence: float")
    assert adapter.parse(typed, "[[ ## steps ## ]]\nnot a list\nso what") == {
        "steps": ["not a list\nso what"], "confidence": None}
    empty = adapter._call_postprocess(sig, sig, ["", {"text": None}], None, {})
    assert empty == [{"reasoning": "", "answer": ""}] * 2
    assert adapter.n_salvaged == 5


def test_evaluate_with_steering_module_and_reasonscore_metric(lm, trainset, steer_sae):
    program = SAESteeringModule(sae=steer_sae, features=[5, 40], strength=4.0)
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        result = dspy.Evaluate(devset=trainset, metric=ReasonScoreMetric(), num_threads=4,
                               display_progress=False)(program)
    scores = [s for _, _, s in result.results]
    assert len(scores) == len(trainset) and all(s >= 0 for s in scores) and result.score > 0


def test_bootstrap_fewshot_and_save_load(lm, trainset, tmp_path):
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        optimizer = dspy.BootstrapFewShot(metric=lambda ex, pred, trace=None: True, max_bootstrapped_demos=1,
                                          max_labeled_demos=1, max_rounds=1)
        compiled = optimizer.compile(dspy.Predict("question -> answer"), trainset=trainset[:3])
        assert len(compiled.demos) >= 1
        compiled.save(tmp_path / "program.json")
        loaded = dspy.Predict("question -> answer")
        loaded.load(tmp_path / "program.json")
        assert [d.toDict() if hasattr(d, "toDict") else d for d in loaded.demos] == \
               [d.toDict() if hasattr(d, "toDict") else d for d in compiled.demos]
        assert loaded(question="Is 91 prime?").answer == compiled(question="Is 91 prime?").answer


@pytest.mark.slow
def test_miprov2(lm, trainset, steer_sae):
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        optimizer = dspy.MIPROv2(metric=METRIC, prompt_model=lm, task_model=lm, auto=None, num_candidates=2,
                                 num_threads=4, max_bootstrapped_demos=1, max_labeled_demos=1, verbose=False,
                                 track_stats=False)
        compiled = optimizer.compile(_steered_program(steer_sae), trainset=trainset, valset=trainset[:4],
                                     num_trials=2, minibatch=False)
        pred = compiled(question="Is 91 prime?")
    assert isinstance(pred.answer, str) and pred.reasoning_activation is not None
    assert compiled.predict.signature.instructions  # an instruction candidate was installed


@pytest.mark.slow
def test_gepa(tiny, lm, trainset, steer_sae, steer_fmax):
    reflection = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, max_tokens=16, temperature=1.0,
                           truncate_prompt=True)
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        optimizer = dspy.GEPA(metric=METRIC, reflection_lm=reflection, max_metric_calls=16,
                              reflection_minibatch_size=2, num_threads=4, use_merge=False, track_stats=False)
        compiled = optimizer.compile(_steered_program(steer_sae), trainset=trainset[:4], valset=trainset[4:])
        pred = compiled(question="Is 91 prime?")
    assert isinstance(pred.answer, str) and pred.reasoning_activation is not None
    assert engine_of(reflection)._batcher.batch_sizes  # GEPA reflected with the steered reflection LM
    engine_of(reflection).close()
