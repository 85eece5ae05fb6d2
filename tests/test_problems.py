"""Word problems: exact answers re-derived independently, splits, variety, answer extraction, DSPy metric."""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from fractions import Fraction

import dspy
import pydantic
import pytest

from reasoning_dspy.problems import (
    FAMILIES,
    Problem,
    ProblemError,
    accuracy,
    answer_accuracy,
    answers_match,
    as_dspy_examples,
    extract_answer,
    make_problems,
)
from reasoning_dspy.problems.words import NAMES


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return make_problems(360, split="train", seed=0)


# -- an independent solver: one formula per kind, from the recorded quantities only ---------------
def _solve(p: Problem) -> Fraction:
    q = defaultdict(Fraction, {k: Fraction(v).limit_denominator(10_000) for k, v in p.quantities.items()})
    k = p.kind
    if k in ("shopping_total", "change"):
        spent = sum(q[f"count_{i}"] * q[f"price_{i}"] for i in (1, 2, 3))
        return q["paid"] - spent if k == "change" else spent - q["coupon"]
    formulas = {
        "savings": lambda: q["start"] + q["weekly"] * q["weeks"] + q["weekly_2"] * q["weeks_2"] - q["spent"],
        "distance": lambda: abs(q["total_distance"] - (q["speed_1"] * q["hours_1"] + q["speed_2"] * q["hours_2"])),
        "travel_hours": lambda: q["distance"] / q["speed"],
        "travel_minutes": lambda: q["distance"] / q["speed"] * 60,
        "round_trip_hours": lambda: q["distance"] / q["speed_1"] + q["distance"] / q["speed_2"],
        "unit_price": lambda: q["total_price"] / q["count"] * (q["buy_count"] or 1)
        + (q["total_price_2"] / q["count_2"] * q["buy_count_2"] if q["count_2"] else 0),
        "work_together": lambda: 1 / sum(1 / q[f"hours_{i}"] for i in (1, 2, 3) if q[f"hours_{i}"]),
        "production_count": lambda: (q["rate_1"] + q["rate_2"]) * q["time"],
        "production_time": lambda: q["target"] / (q["rate_1"] + q["rate_2"]),
        "difference": lambda: q["first"] - q["second"],
        "more_than_total": lambda: 2 * q["first"] + q["extra"] - q["fewer"],
        "chain_difference": lambda: q["first"] * q["factor"] - q["fewer"] - q["first"],
        "times_split": lambda: q["total"] / (q["factor"] + 1),
        "ratio_share": lambda: q["total"] * [q[f"ratio_{i}"] for i in (1, 2, 3) if q[f"ratio_{i}"]][-1]
        / sum(q[f"ratio_{i}"] for i in (1, 2, 3)),
        "times_as_many": lambda: q["larger"] / q["smaller"],
        "hours_to_minutes": lambda: q["hours"] * 60 + q["minutes"],
        "minutes_to_hours": lambda: (q["count"] or 1) * q["minutes"] / 60,
        "cm_to_m": lambda: (q["count"] or 1) * q["length_cm"] / 100,
        "m_to_cm": lambda: q["length_m"] * 100,
        "rope_left": lambda: q["length_m"] * 100 - q["count"] * q["length_cm"],
        "g_to_kg": lambda: (q["count"] or 1) * q["grams"] / 1000,
        "kg_into_portions": lambda: q["kilograms"] * 1000 / q["grams"],
        "dozens_left": lambda: q["dozens"] * 12 - q["used"],
        "items_to_dozens": lambda: q["items"] / 12,
        "equal_groups": lambda: q["total"] / q["group_size"],
        "leftover": lambda: q["total"] % q["group_size"],
        "groups_needed": lambda: Fraction(math.ceil(q["total"] / q["group_size"])),
        "grid_count": lambda: q["rows"] * q["per_row"] + q["rows_2"] * q["per_row_2"] - q["taken"],
        "outfits": lambda: math.prod(q[f"options_{i}"] or 1 for i in (1, 2, 3)),
        "handshakes": lambda: q["people"] * (q["people"] - 1) / 2,
        "legs": lambda: 2 * q["two_legged"] + 4 * q["four_legged"] + 8 * q["eight_legged"],
        "percent_of": lambda: q["total"] * q["percent"] / 100,
        "discount": lambda: q["price"] * (100 - q["percent"]) / 100 * (100 + q["tax"]) / 100,
        "percent_increase": lambda: q["start"] * (100 + q["percent"]) / 100,
        "percent_change": lambda: abs(q["new"] - q["old"]) / q["old"] * 100,
        "score_percent": lambda: q["correct"] / q["total"] * 100,
    }
    if k == "distance" and not q["total_distance"]:
        return q["speed_1"] * q["hours_1"] + q["speed_2"] * q["hours_2"]
    return formulas[k]()


def _numbers_in(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"\d[\d,]*(?:\.\d+)?", text)]


def test_every_answer_rederived_from_the_stated_quantities(problems):
    kinds = set()
    for p in problems:
        assert _solve(p) == Fraction(p.answer).limit_denominator(10_000), (p.kind, p.question, p.answer)
        stated = _numbers_in(p.question) + ([2.0] if "twice" in p.question else [])
        for role, value in p.quantities.items():
            assert value in stated, f"{role}={value} is not in {p.question!r}"
        assert p.answer > 0 and (isinstance(p.answer, int) or not float(p.answer).is_integer())
        kinds.add(p.kind)
    assert {p.family for p in problems} == set(FAMILIES)
    assert {(p.family, p.difficulty) for p in problems} == {(f, d) for f in FAMILIES for d in (1, 2, 3)}
    assert len(kinds) >= 30


def test_steps_chain_to_the_answer(problems):
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
           "mod": lambda a, b: a % b, "ceildiv": lambda a, b: Fraction(math.ceil(a / b))}
    for p in problems:
        for step in p.steps:
            a, op, b, _, c = step.split()
            assert ops[op](Fraction(a), Fraction(b)) == Fraction(c), step
        assert Fraction(p.steps[-1].split()[-1]) == Fraction(str(p.answer))


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_difficulty_grows_the_number_of_steps(difficulty):
    ps = make_problems(60, difficulty=difficulty, seed=3)
    assert {p.difficulty for p in ps} == {difficulty}
    mean_steps = sum(len(p.steps) for p in ps) / len(ps)
    assert (1.2, 2.0, 2.8)[difficulty - 1] <= mean_steps


def test_deterministic_and_distinct():
    a = make_problems(90, split="validation", seed=7)
    assert a == make_problems(90, split="validation", seed=7)
    assert [p.question for p in a] != [p.question for p in make_problems(90, split="validation", seed=8)]
    assert len({p.question for p in a}) == len({p.id for p in a}) == 90
    assert a[:40] == make_problems(40, split="validation", seed=7)


def test_splits_are_disjoint_for_any_seed():
    texts = {s: {p.question for seed in (0, 1) for p in make_problems(300, split=s, seed=seed, difficulty=1)}
             for s in ("train", "validation", "test")}
    assert not texts["train"] & texts["validation"]
    assert not texts["train"] & texts["test"]
    assert not texts["validation"] & texts["test"]


def test_families_filter_and_bad_arguments():
    ps = make_problems(12, families=["percent", "counting"], difficulty=[2, 3])
    assert {p.family for p in ps} == {"percent", "counting"} and {p.difficulty for p in ps} == {2, 3}
    with pytest.raises(ProblemError, match="unknown problem families.*algebra"):
        make_problems(3, families=["algebra"])
    with pytest.raises(ProblemError, match="split must be one of"):
        make_problems(3, split="dev")
    with pytest.raises(ProblemError, match="difficulty must be 1, 2 or 3"):
        make_problems(3, difficulty=4)
    with pytest.raises(ProblemError, match="n must be"):
        make_problems(-1)
    assert make_problems(0) == []


def test_problem_serialises_answer_as_a_number(problems):
    p = next(p for p in problems if isinstance(p.answer, float))
    dumped = p.model_dump_json()
    assert f'"answer":{p.answer}' in dumped and Problem.model_validate_json(dumped) == p
    assert Problem.model_validate({**p.model_dump(), "answer": 12.0}).answer == 12
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        p.answer = 3


def test_wording_varies(problems):
    by_family = defaultdict(list)
    for p in problems:
        by_family[p.family].append(p.question)
    for family, texts in by_family.items():
        masked = {re.sub(r"\$?\d[\d,.:]*", "#", t) for t in texts}
        openings = {" ".join(re.sub(r"\d[\d,.]*", "#", t).split()[:3]) for t in texts}
        asks = {re.sub(r"\d[\d,.]*", "#", re.split(r"(?<=[.])\s+", t)[-1]) for t in texts}
        assert len(masked) >= 0.8 * len(texts), family
        assert len(openings) >= 12 and len(asks) >= 8, (family, len(openings), len(asks))
    names = {n for p in problems for n in NAMES if n in p.question}
    assert len(names) >= 40
    eights = [tuple(t.split()[i:i + 8]) for t in (p.question for p in problems) for i in range(len(t.split()) - 7)]
    assert len(set(eights)) / len(eights) > 0.6


# -- extraction ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("The answer is 42.", 42),
    ("First 3 * 4 = 12, then 12 + 30 = 42.\nSo the answer is 42 apples.", 42),
    ("Answer: 42", 42),
    ("**Answer:** $1,250.00", 1250),
    ("Reasoning: 5 + 7 = 12 and 12 * 2 = 24\n#### 24", 24),
    ("We get \\boxed{17} in the end, though 18 was tempting.", 17),
    ("So the final answer is $\\boxed{\\frac{3}{4}}$.", 0.75),
    ("It costs $12.50 in total.", 12.5),
    ("The trip takes 2.5 hours, i.e. 150 minutes. The answer is 2.5 hours.", 2.5),
    ("Total: 3 + 4 = 7", 7),
    ("Let me compute. 10 - 3 = 7. 7 * 2 = 14", 14),
    ("the temperature drops to -5 degrees", -5),
    ("Final Answer: −8", -8),
    ("The answer is 3/4 of the cake.", 0.75),
    ("I think the answer is forty-two.", 42),
    ("The answer is twelve", 12),
    ("The distance is 42 km", 42),
    ("The answer is 7. Check: 3 + 5 = 8", 7),
    ("At first the answer was 5, but wait, the answer is 7.", 7),
    ("It is .5 of the total", 0.5),
    ("A total of 1,000,000 grains", 1_000_000),
    ("Answer = 60 km/h", 60),
    ("15%", 15),
    ("42", 42),
])
def test_extracts_the_final_answer(text, expected):
    assert extract_answer(text) == pytest.approx(expected)


@pytest.mark.parametrize("junk", [
    None, "", "   ", "no numbers here", "the answer is unknown", "\\boxed{}", "####", "∞ ☃ 🙂", "3/0",
    "\x00\x01\x02", "answer:" * 1000, "\\boxed{" * 5000, "1" * 5000, "9" * 400 + ".5", "-", "$", ",,,", b"42",
    float("nan"), float("inf"), object(), [1, 2], True,
])
def test_extraction_never_raises(junk):
    value = extract_answer(junk)
    assert value is None or math.isfinite(value)


def test_extraction_fuzz():
    rng = random.Random(0)
    alphabet = "0123456789 ,.$-−/=#:{}\\boxed answer is frac\n\t%€ΩZ😀"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
        value = extract_answer(text)
        assert value is None or isinstance(value, float) and math.isfinite(value)
    assert extract_answer("x" * 1_000_000 + " answer is 5") == 5


def test_answers_match():
    assert answers_match("The answer is $1,250.", 1250) and answers_match(0.75, "3/4")
    assert answers_match("2.5000001", 2.5, rel_tol=1e-6) and not answers_match("2.6", 2.5)
    assert not answers_match(None, 3) and not answers_match("none", None) and not answers_match("abc", "abc")


# -- DSPy ------------------------------------------------------------------------------------------
def test_dspy_examples_and_metric(problems):
    examples = as_dspy_examples(problems[:5])
    ex = examples[0]
    assert isinstance(ex, dspy.Example) and set(ex.inputs().keys()) == {"question"}
    assert ex.question == problems[0].question and ex.answer == str(problems[0].answer)
    right = dspy.Prediction(reasoning="3 * 4 = 12", answer=f"It is {problems[0].answer}.")
    assert answer_accuracy(ex, right) == 1.0
    assert answer_accuracy(ex, dspy.Prediction(answer=str(problems[0].answer + 1))) == 0.0
    no_field = dspy.Prediction(reasoning=f"so the answer is {problems[0].answer}")
    assert answer_accuracy(ex, no_field) == 1.0
    for bad in (None, dspy.Prediction(), dspy.Prediction(answer=None), dspy.Prediction(answer=["x"]), 17, object()):
        assert answer_accuracy(ex, bad) == 0.0
    assert answer_accuracy(dspy.Example(question="q"), right) == 0.0
    assert answer_accuracy(ex, problems[0].answer, None, "predict", []) == 1.0


def test_accuracy_helper(problems):
    ps = problems[:4]
    outputs = [f"#### {ps[0].answer}", dspy.Prediction(answer=str(ps[1].answer)), "no idea", ps[3].answer]
    assert accuracy(ps, outputs) == 0.75
    with pytest.raises(ValueError, match="one output per problem"):
        accuracy(ps, outputs[:2])


def test_dspy_evaluate_with_a_solver_program(problems):
    devset = as_dspy_examples(problems[:12])
    answers = {p.question: p.answer for p in problems[:12]}

    class Oracle(dspy.Module):
        def forward(self, question: str) -> dspy.Prediction:
            n = answers[question]
            return dspy.Prediction(answer=f"{n}" if hash(question) % 2 else f"The answer is {n} units.")

    result = dspy.Evaluate(devset=devset, metric=answer_accuracy, num_threads=1, display_progress=False)(Oracle())
    assert result.score == pytest.approx(100.0)
