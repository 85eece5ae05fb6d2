"""Arithmetic drills: steps checked digit by digit exactly as reflecting traces check them."""

from __future__ import annotations

import random
import re

import pytest

from reasoning_dspy.problems.chains import in_bounds
from reasoning_dspy.problems.steps import read_steps
from reasoning_dspy.reasoner.corpus import corpus_stats, make_corpus
from reasoning_dspy.reasoner.drills import drill_step, write_drill
from reasoning_dspy.reasoner.scratchpad import facts
from reasoning_dspy.reasoner.trace import write_step


@pytest.fixture(scope="module")
def mixed():
    return make_corpus(n=30, drills=200, drill_steps=5, seed=3)


def test_drill_steps_stay_in_the_chains_bounds_and_cover_every_operator():
    rng = random.Random(0)
    steps = [drill_step(rng) for _ in range(2000)]
    assert all(in_bounds(s.a, s.op, s.b) for s in steps)
    by_op = {op: sum(s.op == op for s in steps) for op in "+-*/"}
    assert all(400 < n < 600 for n in by_op.values()), by_op
    assert any(s.a < 10 or s.b < 10 for s in steps if s.op in "+-")  # padded operands occur


def test_drills_follow_the_word_problems_and_are_a_pure_function_of_the_config(mixed):
    assert all(e.program != "drill" for e in mixed[:30]) and all(e.program == "drill" for e in mixed[30:])
    assert make_corpus(n=30, drills=50, drill_steps=5, seed=3) == mixed[:80]
    assert make_corpus(n=30, drills=200, drill_steps=5, seed=4)[30:] != mixed[30:]


def test_each_drill_line_is_a_trace_line_whose_check_is_true_and_fixes_the_slips(mixed):
    drills = [e for e in mixed if e.program == "drill"]
    slipped = 0
    for e in drills:
        answer = e.messages[-1]["content"]
        assert e.messages[0]["role"] == "user" and len(e.messages) == 2
        assert all(ok for _, ok in facts(answer))
        written = read_steps(answer)
        assert [f"{w.step.a} {w.step.op} {w.step.b} = {w.checked}" for w in written] == e.steps
        assert all(w.checked == w.step.c for w in written)
        wrong = [w for w in written if w.quick != w.step.c]
        assert len(wrong) == e.caught == len(e.slips)
        # the wrong quick digits, and only they, carry no loss
        assert sorted(answer[a:b] for a, b in e.untrained) == sorted(str(w.quick) for w in wrong)
        slipped += len(wrong)
    assert 0.15 < slipped / (5 * len(drills)) < 0.35  # planted at 0.25 per step


def test_a_drill_line_is_written_as_the_trace_writes_it():
    rng = random.Random(7)
    step = drill_step(rng)
    messages, untrained, _ = write_drill([step], 0.0, random.Random(1))
    line, spans, _ = write_step(step, step.c, checks=True, rng=_after_ask(random.Random(1)))
    assert messages[-1]["content"] == line and untrained == spans == []
    assert step.expr() in messages[0]["content"]


def _after_ask(rng: random.Random) -> random.Random:
    rng.random()  # write_drill's plan_slips draws once per step before writing it
    return rng


def test_corpus_stats_measure_the_word_problems_and_count_the_drills(mixed):
    stats = corpus_stats(mixed)
    assert stats.n == 30 and stats.programs["drill"] == 200
    assert sum(stats.styles.values()) == 30
    assert stats == corpus_stats(mixed[:30]).model_copy(update={"programs": stats.programs})


def test_fact_sheet_columns_are_true_cover_every_kind_and_train_only_what_they_compute():
    from collections import Counter

    from reasoning_dspy.reasoner.drills import write_fact_sheet

    kinds = Counter()
    for seed in range(40):
        messages, untrained = write_fact_sheet(30, random.Random(seed))
        answer = messages[-1]["content"]
        columns = answer.split("; ")
        assert len(columns) == 30
        checked = facts(answer)
        assert checked and all(ok for _, ok in checked)
        given = [answer[a:b] for a, b in untrained]
        assert all(re.fullmatch(r"\d+([+\-×/]\d+)*", g) for g in given), given
        trained = "".join(c for k, c in enumerate(answer) if not any(a <= k < b for a, b in untrained))
        assert "carry" in trained and "borrow" in trained and " r" in trained  # the outputs carry loss
        for column in columns:
            kinds["×" if "×" in column else "/" if "/" in column else "-" if "-" in column.split("=")[0] else "+"] += 1
            # every column's given operands are untrained: its text up to the first = or ", borrow"
            head = re.split(r"=|, borrow", column)[0]
            assert head in given
    assert all(250 < kinds[k] < 350 for k in "+-×/"), kinds


def test_fact_sheets_follow_the_drills_in_the_corpus():
    corpus = make_corpus(n=4, drills=3, fact_sheets=5, sheet_columns=10, seed=1)
    assert [e.program for e in corpus[4:]] == ["drill"] * 3 + ["facts"] * 5
    assert corpus_stats(corpus).n == 4 and corpus_stats(corpus).programs["facts"] == 5
    assert make_corpus(n=4, drills=3, fact_sheets=2, sheet_columns=10, seed=1) == corpus[:9]


def test_the_drill_probe_skips_every_step_the_training_corpus_wrote(mixed, tmp_path):
    from reasoning_dspy.reasoner.corpus import write_corpus
    from reasoning_dspy.reasoner.drill_probe import corpus_steps, held_out_steps

    path = write_corpus(mixed, tmp_path / "corpus.jsonl")
    trained = corpus_steps(path)
    written = {w.step for r in mixed for w in read_steps(r.messages[-1]["content"])}
    assert trained == written and len(trained) > 600  # 1,000 drill steps and the word problems', some repeated
    steps = held_out_steps(200, seed=1, exclude=trained)
    assert steps == held_out_steps(200, seed=1, exclude=trained)  # the same steps for the same seed
    assert len(set(steps)) == 200 and not set(steps) & trained
    assert {s.op for s in steps} == set("+-*/") and all(in_bounds(s.a, s.op, s.b) for s in steps)
    with pytest.raises(ValueError, match="ask for fewer"):
        held_out_steps(20_000, exclude=trained)
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        corpus_steps(tmp_path / "missing.jsonl")


def test_the_drill_probe_counts_what_each_answer_restates_and_checks(tiny):
    from reasoning_dspy.reasoner.drill_probe import held_out_steps, probe_drills

    result = probe_drills(tiny, held_out_steps(10), batch_size=4)
    total, by_op = result["total"], result["by_op"]
    assert total["n"] == sum(c["n"] for c in by_op.values()) == 10 and set(by_op) == {"+", "-", "×", "/"}
    assert all(c["checked"] <= c["read"] <= c["n"] and c["quick"] <= c["read"] for c in by_op.values())
    # an untrained model restates no step, so every check is a miss, each recorded with its text
    assert total["read"] == 0 and len(result["misses"]) == 10 - total["checked"] == 10
