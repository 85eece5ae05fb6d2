"""DSPy's modules, Evaluate and optimizers run end to end on SteeredLM with tiny-random.

Each test checks what the DSPy feature does with our LM: the instruction reaches the model, the
prediction is what the adapter parses from the model's own words, the metric scores the activation
the engine measured, optimizers keep what their metric prefers.
"""

from __future__ import annotations

import dspy
import pytest
from dspy.adapters.chat_adapter import ChatAdapter
from dspy.utils.exceptions import AdapterParseError

from reasoning_dspy.program.adapter import LenientChatAdapter
from reasoning_dspy.program.lm import SteeredLM, engine_of
from reasoning_dspy.program.metrics import ReasoningActivationMetric, exact_match
from reasoning_dspy.program.modules import SAESteeringModule
from reasoning_dspy.steering import SteeringError
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
METRIC = ReasoningActivationMetric(exact_match, combine="sum", weight=0.9, target=1.0)


def _steered_program(sae):
    return SAESteeringModule(sae=sae, features=[5, 40], strength=3.0)


def _last_call(lm) -> tuple[list[dict], str]:
    entry = lm.history[-1]
    return entry["messages"], entry["outputs"][0]


@pytest.mark.parametrize("module, signature, inputs", [
    (dspy.Predict, "question -> answer", {"question": "Hi?"}),
    (dspy.ChainOfThought, ReasonedQA, {"question": "Is 91 prime?"}),
    (dspy.Predict, ExplainDecision, {"situation": "Rain forecast.", "decision": "Took an umbrella."}),
    (dspy.Predict, StepByStepPlan, {"goal": "Bake bread", "constraints": "one hour"}),
])
def test_predictions_are_what_the_model_wrote(lm, module, signature, inputs):
    """The signature's instruction and inputs reach the model, and every output field of the prediction
    is the adapter's parse of the model's raw completion."""
    adapter = LenientChatAdapter()
    program = module(signature)
    with dspy.context(lm=lm, adapter=adapter):
        pred = program(**inputs)
    messages, raw = _last_call(lm)
    predictor = program.predict if isinstance(program, dspy.ChainOfThought) else program
    words = " ".join  # DSPy re-indents multi-line instructions
    assert words(predictor.signature.instructions.split()) in words(messages[0]["content"].split())
    assert all(str(value) in messages[-1]["content"] for value in inputs.values())
    expected = adapter.parse(predictor.signature, raw)
    assert set(expected) == set(predictor.signature.output_fields)
    assert {name: getattr(pred, name) for name in expected} == expected
    if signature is StepByStepPlan:
        assert isinstance(pred.steps, list)


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
    assert adapter.n_salvaged == 3


def test_an_empty_answer_is_scored_not_raised(lm):
    """A completion cut to nothing (here by a stop string equal to its first character) is an empty
    answer for LenientChatAdapter; DSPy's ChatAdapter refuses the call."""
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        predict(question="Hi?")
    _, raw = _last_call(lm)
    cut = {"stop": [raw[:1]]}
    adapter = LenientChatAdapter()
    with dspy.context(lm=lm, adapter=adapter):
        assert predict(question="Hi?", config=cut).answer == ""
    assert _last_call(lm)[1] == "" and adapter.n_salvaged == 1
    with dspy.context(lm=lm, adapter=ChatAdapter(use_json_adapter_fallback=False)), pytest.raises(AdapterParseError):
        predict(question="Hi?", config=cut)


def test_evaluate_scores_the_measured_reasoning_activation(lm, trainset, steer_sae):
    """Evaluate's score per example is the prediction's reasoning activation, which equals an
    independent teacher-forced measurement of the answer in its prompt."""
    program = SAESteeringModule(sae=steer_sae, features=[5, 40], strength=4.0)
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        result = dspy.Evaluate(devset=trainset, metric=ReasoningActivationMetric(), num_threads=4,
                               display_progress=False)(program)
    engine = engine_of(lm)
    engine.reports.clear()  # force the measurement again, from the text alone
    for example, pred, score in result.results:
        assert score == pred.reasoning_activation
        with dspy.context(lm=lm, adapter=LenientChatAdapter()):
            again = program(**example.inputs())  # a DSPy cache hit: the engine does not generate
        assert again.answer == pred.answer
        assert again.reasoning_activation == pytest.approx(pred.reasoning_activation, rel=1e-4, abs=1e-6)
    scores = [s for *_, s in result.results]
    assert len(set(scores)) > 1 and result.score == pytest.approx(100 * sum(scores) / len(scores), abs=0.01)


@pytest.mark.parametrize("history", [{"disable_history": True}, {"max_history_size": 0}])
def test_reasoning_activation_with_history_disabled(lm, steer_sae, history):
    program = _steered_program(steer_sae)
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        reference = program(question="Is 91 prime?")
    with dspy.context(lm=lm, adapter=LenientChatAdapter(), **history):
        cached = program(question="Is 91 prime?")
        fresh = program(question="Is 97 prime?")
        score = ReasoningActivationMetric()(dspy.Example(question="Is 97 prime?"), fresh)
    assert reference.reasoning_activation is not None
    assert cached.reasoning_activation == pytest.approx(reference.reasoning_activation)
    assert fresh.reasoning_activation is not None and score == fresh.reasoning_activation


def test_bad_steering_in_metadata_is_refused_with_our_message(lm, steer_sae):
    with dspy.context(lm=lm, adapter=LenientChatAdapter()), pytest.raises(SteeringError, match="finite"):
        dspy.Predict("question -> answer")(question="Hi?",
                                           config={"metadata": {"steering": {"features": {"5": float("nan")}}}})
    with pytest.raises(ValueError, match="finite"):
        SAESteeringModule(sae=steer_sae, features=[5], strength=float("inf"))


def test_steering_in_metadata_may_use_int_keys_or_a_spec(lm, steer_sae):
    """Python users write `{"features": {5: 2.0}}` or pass a `SteeringSpec`; both reach the engine
    in JSON form instead of failing DSPy's JSON check on request metadata."""
    from reasoning_dspy.program.lm import collect_reports
    from reasoning_dspy.steering import SteeringSpec

    ask = dspy.Predict("question -> answer")
    wanted = SteeringSpec(features={5: 8.0})
    forms = [{"features": {"5": 8.0}}, {"features": {5: 8.0}}, wanted]
    with dspy.context(lm=lm, adapter=LenientChatAdapter()), collect_reports() as reports:
        answers = [ask(question="Hi?", config={"metadata": {"steering": form}}).answer for form in forms]
    assert [r.steering for r in reports.reports()] == [wanted] * 3
    assert answers[0] == answers[1] == answers[2]


def test_bootstrap_keeps_demos_the_metric_accepts_and_save_load(lm, trainset, steer_sae, tmp_path):
    """BootstrapFewShot keeps, in trainset order, the first example whose score reaches the threshold."""
    program = _steered_program(steer_sae)
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        activations = [program(**ex.inputs()).reasoning_activation for ex in trainset]
        threshold = sorted(activations)[len(activations) // 2]  # about half the examples pass
        metric = ReasoningActivationMetric(threshold=threshold)
        optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=1, max_labeled_demos=0, max_rounds=1)
        compiled = optimizer.compile(program, trainset=trainset)
        (demo,) = compiled.predict.demos
        first_passing = next(ex for ex, act in zip(trainset, activations, strict=True) if act >= threshold)
        assert demo.question == first_passing.question
        compiled.save(tmp_path / "program.json")
        loaded = _steered_program(steer_sae)
        loaded.load(tmp_path / "program.json")
        as_dict = (lambda d: d.toDict() if hasattr(d, "toDict") else dict(d))  # noqa: E731
        assert [as_dict(d) for d in loaded.predict.demos] == [as_dict(d) for d in compiled.predict.demos]
        assert loaded(question="Is 91 prime?").answer == compiled(question="Is 91 prime?").answer


@pytest.mark.slow
def test_miprov2_returns_its_best_scoring_candidate(lm, trainset, steer_sae):
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        optimizer = dspy.MIPROv2(metric=METRIC, prompt_model=lm, task_model=lm, auto=None, num_candidates=2,
                                 num_threads=4, max_bootstrapped_demos=1, max_labeled_demos=1, verbose=False,
                                 track_stats=True)
        compiled = optimizer.compile(_steered_program(steer_sae), trainset=trainset, valset=trainset[:4],
                                     num_trials=2, minibatch=False)
        rescored = dspy.Evaluate(devset=trainset[:4], metric=METRIC, num_threads=4, display_progress=False)(compiled)
        pred = compiled(question="Is 91 prime?")
    full = [log["full_eval_score"] for log in compiled.trial_logs.values() if "full_eval_score" in log]
    assert len(full) >= 2 and compiled.score == max(full)
    assert rescored.score == pytest.approx(compiled.score)  # the returned program is the one that scored best
    assert compiled.candidate_programs[0]["score"] == compiled.score
    assert pred.reasoning_activation is not None


@pytest.mark.slow
def test_gepa_returns_its_best_candidate(tiny, lm, trainset, steer_sae, steer_fmax):
    reflection = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, max_tokens=16, temperature=1.0,
                           truncate_prompt=True)
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        optimizer = dspy.GEPA(metric=METRIC, reflection_lm=reflection, max_metric_calls=16,
                              reflection_minibatch_size=2, num_threads=4, use_merge=False, track_stats=True)
        compiled = optimizer.compile(_steered_program(steer_sae), trainset=trainset[:4], valset=trainset[4:])
        pred = compiled(question="Is 91 prime?")
    results = compiled.detailed_results
    best = results.candidates[results.best_idx]
    assert results.val_aggregate_scores[results.best_idx] == max(results.val_aggregate_scores)
    assert compiled.predict.signature.instructions == best.predict.signature.instructions
    assert pred.reasoning_activation is not None
    assert engine_of(reflection)._batcher.batch_sizes  # GEPA reflected with the steered reflection LM
    engine_of(reflection).close()
