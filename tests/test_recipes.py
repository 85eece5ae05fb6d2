"""DSPy's own optimizers with the reasoning metric, one call each, offline (the pool proposes)."""

from __future__ import annotations

import dspy
import pytest

from optimizers import SteeredProgram, program_measures, recipes
from optimizers.instructions import current_instruction
from optimizers.recording import RecordingMetric
from reasoning_dspy.problems import as_dspy_examples, make_problems
from reasoning_dspy.program.adapter import LenientChatAdapter

POOL = ["Answer directly.", "Check every step before you answer.", "Be brief."]


@pytest.fixture(scope="module")
def lm(planted_lm):
    return planted_lm(max_tokens=10)


@pytest.fixture(scope="module")
def train():
    return as_dspy_examples(make_problems(4, split="train"))


RECIPES = {
    "copro": dict(breadth=2, depth=2, pool=POOL),  # 1 + 2 proposals: the pool of 3 is enough
    "miprov2": dict(num_candidates=3, num_trials=3, pool=POOL),
    "bootstrap_fewshot": dict(max_demos=2),
    "bootstrap_random_search": dict(max_demos=2, num_candidates=2),
    "gepa": dict(max_metric_calls=24, pool=POOL),
    "simba": dict(batch_size=4, num_candidates=2, max_steps=1, pool=POOL),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_recipe_is_one_call_and_scores_with_the_engine(lm, train, name):
    metric = RecordingMetric("activation")
    with dspy.context(adapter=LenientChatAdapter()):
        compiled = getattr(recipes, name)(dspy.ChainOfThought("question -> answer"), train, lm=lm, metric=metric,
                                          **RECIPES[name])
    assert isinstance(compiled, SteeredProgram)
    records = metric.records()
    assert records and all(r.n > 0 and r.tokens > 0 and r.wall_s >= 0 for r in records)  # the engine measured every call
    if "pool" in RECIPES[name] and name in ("copro", "miprov2"):
        # offline, the candidates are the pool's instructions (and the program's own)
        tried = {r.candidate.instruction for r in records}
        assert tried - {current_instruction(dspy.ChainOfThought("question -> answer"))} <= set(POOL)
        assert len(tried) > 1
        assert current_instruction(compiled.program) in tried


def test_the_default_metric_is_correctness_times_activation(lm, train):
    metric = recipes.reasoning_metric()
    pred = dspy.Prediction(answer=train[0].answer, reasoning_activation=0.25)
    assert metric(train[0], pred) == pytest.approx(0.25)
    assert metric(train[0], dspy.Prediction(answer="nonsense", reasoning_activation=0.25)) == 0.0
    feedback = metric.gepa(train[0], pred)
    assert feedback.score == pytest.approx(0.25) and "correct" in feedback.feedback


def test_the_pool_lm_hands_out_each_instruction_once_never_the_programs_own():
    program = dspy.ChainOfThought("question -> answer")
    lm = recipes.pool_lm(["One.", current_instruction(program), "Two.", "One."], program)
    predict = dspy.Predict("task -> proposed_instruction, proposed_prefix_for_output_field")
    with dspy.context(lm=lm):
        got = [predict(task="x").proposed_instruction for _ in range(2)]
        assert got == ["One.", "Two."]
        with pytest.raises(Exception, match="handed out all 2 instructions of its pool"):
            predict(task="x")


def test_miprov2_offline_refuses_more_candidates_than_its_pool_holds_before_any_work(lm, train):
    """MIPROv2 asks its proposer for `num_candidates` instructions per predictor: a pool of 3 cannot
    give 4, and the refusal says so before a demo is bootstrapped or a trial is scored."""
    metric = RecordingMetric("activation")
    with pytest.raises(recipes.PoolExhaustedError,
                       match=r"num_candidates=4 .* 1 predictor.* pool has 3 .* num_candidates=3 or fewer"):
        recipes.miprov2(dspy.ChainOfThought("question -> answer"), train, lm=lm, metric=metric, num_candidates=4,
                        num_trials=3, pool=POOL)
    assert metric.records() == []
    two = dspy.Predict("question -> answer")
    two.second = dspy.Predict("answer -> question")  # two predictors: 2 x 2 proposals from a pool of 3
    with pytest.raises(recipes.PoolExhaustedError, match=r"num_candidates=2 .* 2 predictors, 4 in all"):
        recipes.miprov2(two, train, lm=lm, metric=metric, num_candidates=2, num_trials=3, pool=POOL)
    assert recipes.pool_room(recipes.pool_lm(POOL), two) == 1 and recipes.pool_room(lm, two) is None


def test_the_pool_lm_answers_json_to_the_json_adapter():
    """GEPA parses its reflection proposals with `JSONAdapter`: the pool answers in JSON there."""
    predict = dspy.Predict("task -> new_instruction, notes: list[str]")
    with dspy.context(lm=recipes.pool_lm(["Reason slowly."]), adapter=dspy.JSONAdapter()):
        pred = predict(task="x")
    assert pred.new_instruction == "Reason slowly." and pred.notes == []


def test_gepa_offline_adopts_a_proposal_from_the_pool(lm, train):
    """Offline, GEPA's reflection gets pool instructions it can parse, and keeps one its metric prefers."""
    own = current_instruction(dspy.ChainOfThought("question -> answer"))

    def prefers_any_new_instruction(gold, pred, trace=None, pred_name=None, pred_trace=None):
        score = float(program_measures(pred).instruction != own)
        return dspy.Prediction(score=score, feedback=f"score {score}")

    with dspy.context(adapter=LenientChatAdapter()):
        compiled = recipes.gepa(dspy.ChainOfThought("question -> answer"), train, lm=lm,
                                metric=prefers_any_new_instruction, max_metric_calls=24, pool=POOL)
    assert current_instruction(compiled.program) == POOL[0] != own
