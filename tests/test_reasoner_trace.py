"""Chain problems, the digit-level scratchpad, written traces read back, and untrained spans in the loss."""

from __future__ import annotations

import random
import re

import pytest

from reasoning_dspy.problems import make_problems
from reasoning_dspy.problems.chains import in_bounds
from reasoning_dspy.problems.steps import final_value, read_steps, result
from reasoning_dspy.reasoner.scratchpad import ScratchpadError, facts, scratchpad
from reasoning_dspy.reasoner.trace import chain_of, plan_slips, write_trace


def _random_step(r: random.Random) -> tuple[int, str, int]:
    op = r.choice("+-*/")
    if op == "+":
        return r.randint(0, 999), op, r.randint(0, 999)
    if op == "-":
        a = r.randint(0, 999)
        return a, op, r.randint(0, a)
    if op == "*":
        b = r.randint(2, 9)
        a = r.randint(10, 999 // b)
        return (a, op, b) if r.random() < 0.7 else (b, op, a)
    b = r.randint(2, 9)
    return b * r.randint(1, 999 // b), op, b


# -- the scratchpad ---------------------------------------------------------------------------------
def test_every_fact_of_every_scratchpad_is_true_and_it_ends_on_the_result():
    r = random.Random(0)
    for _ in range(5000):
        a, op, b = _random_step(r)
        text = scratchpad(a, op, b)
        found = facts(text)
        assert found and all(ok for _, ok in found), text
        expected = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a // b
        assert final_value(text) == result(a, op, b) == expected


def test_the_scratchpad_works_digit_by_digit_on_padded_operands():
    assert scratchpad(347, "+", 85) == ("347 + 085: ones 7+5=12, write 2 carry 1; tens 4+8+1=13, write 3 carry 1; "
                                        "hundreds 3+0+1=4, write 4; so 432")
    assert scratchpad(999, "+", 1).endswith("thousands 1, write 1; so 1000")
    assert scratchpad(304, "-", 268) == ("304 - 268: ones 4-8, borrow: 14-8=6; tens 0-1-6, borrow: 9-6=3; "
                                         "hundreds 3-1-2=0; so 36")
    assert scratchpad(55, "*", 8) == "55 × 8: ones 5×8=40, write 0 carry 4; tens 5×8=40, +4=44; so 440"
    # in the order given: the check restates the step it checks
    assert scratchpad(8, "*", 55) == "8 × 55: ones 8×5=40, write 0 carry 4; tens 8×5=40, +4=44; so 440"
    assert scratchpad(7, "*", 8) == "07 × 8: ones 7×8=56, write 6 carry 5; tens 0×8=0, +5=5; so 56"
    assert scratchpad(96, "/", 4) == "96 / 4: 9/4=2 r1; bring down 6: 16/4=4 r0; so 24"
    assert scratchpad(144, "/", 6) == ("144 / 6: 1/6=0 r1; bring down 4: 14/6=2 r2; bring down 4: 24/6=4 r0; "
                                       "so 24")
    # every step of the chains (two digits) works exactly two columns, each at the same place in the text
    for a, op, b in ((5, "+", 7), (12, "-", 3), (31, "*", 2), (8, "/", 2)):
        assert scratchpad(a, op, b).count(";") == 2, scratchpad(a, op, b)
    assert scratchpad(5, "+", 7).startswith("05 + 07: ones 5+7=12")


def test_a_false_fact_is_found():
    assert facts("ones 7+5=13, write 3") == [("7+5=13", False)]
    assert [ok for _, ok in facts("tens 5×8=40, +4=45")] == [True, False]
    assert [ok for _, ok in facts("14/6=2 r3")] == [False]


@pytest.mark.parametrize(("a", "op", "b", "message"), [
    (3, "-", 5, "a >= b"), (1000, "*", 12, "1-digit"), (145, "/", 6, "exactly"), (4, "%", 2, "operator"),
    (-1, "+", 3, ">= 0"),
])
def test_steps_outside_the_bounds_are_refused(a, op, b, message):
    with pytest.raises(ScratchpadError, match=message):
        scratchpad(a, op, b)


# -- chain problems ---------------------------------------------------------------------------------
def test_chain_problems_stay_in_bounds_and_their_steps_derive_the_answer():
    problems = make_problems(600, split="test", seed=2, families=["chains"])
    assert problems == make_problems(600, split="test", seed=2, families=["chains"])
    assert {len(p.steps) for p in problems} == {2, 3, 4}
    assert all(len(p.steps) == p.difficulty + 1 for p in problems)
    ops = set()
    for p in problems:
        stated = {int(v) for v in p.quantities.values()}
        earlier: list[int] = []
        for step in p.steps:
            a, op, b, _, c = step.split()
            a, b, c = int(a), int(b), int(c)
            assert in_bounds(a, op, b) and result(a, op, b) == c, step
            assert (a in stated or a in earlier) and (b in stated or b in earlier), (p.question, step)
            earlier.append(c)
            ops.add(op)
        assert earlier[-1] == p.answer
        # every stated number is in the question, and some questions carry numbers the answer never uses
        numbers = {int(x) for x in re.findall(r"\d+", p.question)}
        assert stated <= numbers
    assert ops == {"+", "-", "*", "/"}
    with_distractors = [p for p in problems if {int(x) for x in re.findall(r"\d+", p.question)}
                        - {int(v) for v in p.quantities.values()}]
    assert 0.4 < len(with_distractors) / len(problems) < 0.9
    assert len({" ".join(p.question.split()[1:3]) for p in problems}) > 30  # many openings, not one template


def test_chains_are_not_in_the_default_mix():
    assert {p.family for p in make_problems(30, seed=0)}.isdisjoint({"chains"})


# -- traces read back -------------------------------------------------------------------------------
@pytest.mark.parametrize("reflects", [True, False])
def test_a_written_trace_reads_back_to_its_steps(reflects):
    problems = make_problems(200, split="train", seed=5, families=["chains"])
    for i, p in enumerate(problems):
        chain = chain_of(p.steps)
        rng = random.Random(i)
        slips = plan_slips(chain, {int(v) for v in p.quantities.values()}, 0.5, rng)
        trace = write_trace(chain, instruction="Answer.", reflects=reflects, slips=slips, rng=rng)
        assert read_steps(trace.text) == trace.steps
        for (start, end), w in zip(trace.untrained, [w for w in trace.steps if w.quick != w.step.c], strict=True):
            assert trace.text[start:end] == str(w.quick)
        if reflects:
            assert trace.answer == p.answer
            assert [w.caught for w in trace.steps] == [i in slips for i in range(len(chain))]


def test_each_step_quotes_the_sentence_that_asks_for_it_once():
    for i, p in enumerate(make_problems(300, split="train", seed=6, families=["chains"])):
        chain = chain_of(p.steps)
        assert len(p.sources) == len(chain) and all(s in p.question for s in p.sources)
        for j, (step, source) in enumerate(zip(chain, p.sources, strict=True)):
            stated = {int(n) for n in re.findall(r"\d+", source)}
            # the sentence states this step's new operand (a group total adds the product just before it)
            assert {step.a, step.b} & stated or (j and p.sources[j - 1] == source), (source, step)
        rng = random.Random(i)
        trace = write_trace(chain, instruction="Answer.", reflects=bool(i % 2), slips={}, rng=rng, sources=p.sources)
        lines = [line for line in trace.text.split("\n") if read_steps(line)]
        assert len(lines) == len(chain) and read_steps(trace.text) == trace.steps
        for j, (line, step) in enumerate(zip(lines, chain, strict=True)):
            quoted = p.sources[j] if j == 0 or p.sources[j] != p.sources[j - 1] else ""
            assert line.startswith(f"{quoted} {step.expr()} = " if quoted else f"{step.expr()} = "), line
    with pytest.raises(ValueError, match="one sentence per step"):
        write_trace(chain, instruction="Answer.", reflects=True, slips={}, rng=rng, sources=["Only one."])


def test_a_models_wrong_check_is_read_as_written():
    text = "Task: Check.\nHmm, I should check each step.\n47 + 85 = 122. Let me check: 047 + 085: ones 7+5=12, " \
           "write 2 carry 1; tens 4+8+1=12, write 2 carry 1; hundreds 0+0+1=1, write 1; so 122. It matches.\n" \
           "The answer is 122."
    (w,) = read_steps(text)
    assert (w.quick, w.checked, w.caught, w.value) == (122, 122, False, 122)
    assert [ok for _, ok in facts(text)] == [True, False, True]  # the model's own slip in the tens column


# -- untrained spans in the loss ------------------------------------------------------------------
def test_untrained_spans_weigh_zero_exactly_on_their_tokens(tiny):
    from reasoning_dspy.reasoner.finetune_data import (
        IGNORE,
        check_untrained,
        encode_example,
        fingerprint,
        stop_ids,
    )

    answer = "12 + 30 = 43. Wait, 12 + 30 is 42, not 43.\nThe answer is 42."
    span = (answer.index("43"), answer.index("43") + 2)
    example = {"messages": [{"role": "user", "content": "12 + 30?"}, {"role": "assistant", "content": answer}],
               "untrained": [list(span)]}
    (spans,) = check_untrained([example])
    stops = stop_ids(tiny.model, tiny.tokenizer)
    plain = encode_example(tiny.tokenizer, example["messages"], stops)
    masked = encode_example(tiny.tokenizer, example["messages"], stops, untrained=spans)
    assert masked.input_ids == plain.input_ids and masked.labels == plain.labels
    zero = [k for k, (lab, w) in enumerate(zip(masked.labels, masked.weights, strict=True)) if lab != IGNORE and w == 0]
    # the tokens covering "43" and nothing of the rest (tiny-random's BPE may fold the space before it in)
    assert tiny.tokenizer.decode([masked.input_ids[k] for k in zero]).strip() == "43"
    assert zero == list(range(zero[0], zero[-1] + 1))
    labelled = [k for k, lab in enumerate(masked.labels) if lab != IGNORE]
    assert all(masked.weights[k] == 1.0 for k in labelled if k not in zero)
    assert fingerprint([example["messages"]], [spans]) != fingerprint([example["messages"]])
    assert fingerprint([example["messages"]], [[]]) == fingerprint([example["messages"]])


@pytest.mark.parametrize("span", [[5, 3], [0, 10_000], ["a", 2], [1]])
def test_bad_untrained_spans_are_refused(span):
    from reasoning_dspy.reasoner.finetune_data import check_untrained

    example = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "an answer"}],
               "untrained": [span]}
    with pytest.raises(ValueError, match=r"example 0: untrained spans must be \[start, end\)"):
        check_untrained([example])
