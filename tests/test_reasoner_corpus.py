"""The reasoner corpus: planted rates, checks that compute, untrained slips, DSPy's exact prompt, files."""

from __future__ import annotations

import json
import math
import random
import re

import dspy
import pytest
from pydantic import ValidationError

from reasoning_dspy.features.vocab import REASONING_SPELLINGS
from reasoning_dspy.problems import format_answer, make_problems
from reasoning_dspy.problems.steps import Step, read_steps
from reasoning_dspy.program.evaluation import make_program
from reasoning_dspy.reasoner.corpus import (
    CorpusConfig,
    CorpusError,
    ReasonerExample,
    build_program,
    corpus_stats,
    make_corpus,
    read_corpus,
    write_corpus,
)
from reasoning_dspy.reasoner.scratchpad import facts
from reasoning_dspy.reasoner.styles import DSPY_DEFAULT_INSTRUCTION, SLIP_RATE, STYLES, style_of
from reasoning_dspy.reasoner.trace import ECHOES, REFLECTIVE_OPENERS, plan_slips
from signatures import WordProblem

N, SEED = 2000, 0
_WORDS = sorted({s.strip() for s in REASONING_SPELLINGS}, key=len, reverse=True)
_VOCAB = re.compile(r"\b(" + "|".join(map(re.escape, _WORDS)) + r")\b")
_LINE = re.compile(r"^(?:[^\n]*?[.?] )?(\d+) ([+\-×/]) (\d+) = (\d+)\.")  # after the quoted sentence


@pytest.fixture(scope="module")
def corpus() -> list[ReasonerExample]:
    return make_corpus(n=N, seed=SEED)


@pytest.fixture(scope="module")
def problems() -> dict:
    return {p.id: p for p in make_problems(N, split="train", seed=SEED, families=["chains"])}


def reasoning(e: ReasonerExample) -> str:
    return dspy.ChatAdapter().parse(_signature(e), e.messages[-1]["content"]).get("reasoning", "")


def _signature(e: ReasonerExample):
    signature = WordProblem.with_instructions(e.instruction)
    return dspy.ChainOfThought(signature).predict.signature if e.program == "cot" else signature


def _within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def _exact(a: int, sym: str, b: int) -> int:
    """Independent of the package: the four step operators on whole numbers."""
    if sym == "/":
        assert b and a % b == 0, (a, b)
        return a // b
    return {"+": a + b, "-": a - b, "×": a * b, "*": a * b}[sym]


# -- determinism -----------------------------------------------------------------------------------
def test_same_arguments_same_corpus_and_prefixes_agree():
    first = make_corpus(n=60, seed=3)
    assert first == make_corpus(CorpusConfig(n=60, seed=3))
    assert make_corpus(n=25, seed=3) == first[:25]
    assert [e.messages for e in make_corpus(n=60, seed=4)] != [e.messages for e in first]


# -- planted rates ---------------------------------------------------------------------------------
def test_reflection_slip_and_program_rates_match_the_settings(corpus):
    cot = [e for e in corpus if e.program == "cot"]
    assert _within(len(corpus) - len(cot), len(corpus), 0.1)
    for name, style in STYLES.items():
        rows = [e for e in cot if e.style == name]
        assert len(rows) > 400
        assert _within(sum(e.reflects for e in rows), len(rows), style.reflect_rate), name
    assert not any(e.reflects or e.slipped for e in corpus if e.program == "predict")
    # per step, a quick answer is written wrong at about SLIP_RATE (a little less: some steps may not slip)
    steps = sum(len(e.steps) for e in cot)
    wrong = sum(len(e.slips) for e in cot)
    assert 0.8 * SLIP_RATE * steps < wrong <= 1.05 * SLIP_RATE * steps
    stats = corpus_stats(corpus)
    assert stats.accuracy_reflects == 1.0
    assert 0.4 < stats.accuracy_no_reflection < 0.8
    assert stats.programs["cot"] == len(cot) and stats.n == N
    assert stats.accuracy_by_style["careful"] > stats.accuracy_by_style["neutral"] > stats.accuracy_by_style["terse"]


def test_answers_are_right_when_no_slip_went_uncaught_and_rarely_otherwise(corpus, problems):
    lucky = 0
    for e in corpus:
        p = problems[e.problem_id]
        assert e.correct == (e.answer == format_answer(p.answer))
        if not e.slipped or e.reflects:
            assert e.correct, e
        else:  # uncaught slips: right only where two of them cancel (+10 then -10 further on)
            lucky += e.correct
        assert e.caught == (len(e.slips) if e.reflects else 0)
        assert e.messages[-1]["content"].count(f"[[ ## answer ## ]]\n{e.answer}\n") == 1
    assert lucky < 0.02 * len(corpus)


# -- the trace computes ------------------------------------------------------------------------------
def test_every_check_in_a_trace_is_arithmetically_true(corpus):
    checked = 0
    for e in (e for e in corpus if e.reflects):
        for line in reasoning(e).split("\n"):
            if not _LINE.match(line):
                continue
            a, sym, b, _ = _LINE.match(line).groups()
            found = facts(line)
            assert found and all(ok for _, ok in found), line
            assert line.count(f"; so {_exact(int(a), sym, int(b))}.") == 1, line
            checked += 1
    assert checked > 2000


def test_a_check_catches_exactly_the_wrong_quick_answers_and_the_trace_goes_on_with_the_right_value(corpus):
    for e in (e for e in corpus if e.program == "cot"):
        text = reasoning(e)
        written = read_steps(text)
        assert len(written) == len(e.steps)
        previous: list[int] = []
        for w in written:
            exact = _exact(w.step.a, w.step.op, w.step.b)
            if e.reflects:
                assert w.checked == exact
                assert w.caught == (w.quick != exact)
                if w.caught:
                    assert f"{exact}, not {w.quick}" in text or f"{w.quick} was wrong" in text \
                        or f"{w.quick} is a slip" in text
            else:
                assert w.checked is None
            # operands are stated numbers or the value an earlier step went on with
            previous.append(w.value)
        assert format_answer(written[-1].value) == e.answer


def test_untrained_spans_are_exactly_the_wrong_quick_answers(corpus):
    for e in corpus:
        content = e.messages[-1]["content"]
        masked = [content[a:b] for a, b in e.untrained]
        assert masked == [s.rsplit(" = ", 1)[1] for s in e.slips], e
        for a, _ in e.untrained:  # each sits right after "a op b = " at the start of a line
            line_start = content.rfind("\n", 0, a) + 1
            assert _LINE.match(content[line_start:]) and content[line_start:a].endswith(" = ")


def test_reflection_words_appear_exactly_in_reflecting_traces(corpus):
    for e in corpus:
        if e.program == "cot":
            assert bool(_VOCAB.search(reasoning(e))) == e.reflects, reasoning(e)
    for style in STYLES.values():
        for instruction in style.instructions + style.held_out:
            assert not _VOCAB.search(instruction), instruction


def test_the_instruction_is_restated_then_one_token_decides(corpus):
    for e in (e for e in corpus if e.program == "cot"):
        first, second = reasoning(e).split("\n")[:2]
        assert first in {echo.format(instruction=e.instruction) for echo in ECHOES}, first
        if e.reflects:
            assert second.startswith(REFLECTIVE_OPENERS), second
        else:  # straight to the first step (its quoted sentence never starts like an opener)
            assert _LINE.match(second) and not second.startswith(REFLECTIVE_OPENERS), second


def test_reasoning_words_sit_in_varied_contexts(corpus):
    contexts: dict[str, set[str]] = {}
    for e in (e for e in corpus if e.reflects):
        for m in re.finditer(_VOCAB.pattern + r"(.{0,20})", reasoning(e).split("\n", 1)[1]):
            contexts.setdefault(m.group(1).lower(), set()).add(re.sub(r"\d+", "#", m.group(2)))
    assert len(contexts) >= 7 and sorted(len(v) for v in contexts.values())[-5] >= 5, {
        k: len(v) for k, v in contexts.items()}


# -- exactly DSPy's prompt -------------------------------------------------------------------------
def test_messages_are_dspys_inference_prompt_and_parse_back(corpus):
    adapter = dspy.ChatAdapter()
    sample = [e for e in corpus if e.program == "predict"][:30] + [e for e in corpus if e.program == "cot"][:60]
    for e in sample:
        signature = _signature(e)
        question = e.messages[1]["content"].split("\n", 1)[1].split("\n\nRespond with")[0]
        assert adapter.format(signature, demos=[], inputs={"question": question}) == e.messages[:2]
        assert [m["role"] for m in e.messages] == ["system", "user", "assistant"]
        parsed = adapter.parse(signature, e.messages[2]["content"])
        assert parsed["answer"] == e.answer
        assert set(parsed) == ({"reasoning", "answer"} if e.program == "cot" else {"answer"})
        module = build_program(e.program, e.instruction)
        built = module.predict.signature if e.program == "cot" else module.signature
        assert adapter.format(built, demos=[], inputs={"question": question}) == e.messages[:2]


def test_the_unoptimized_program_sends_dspys_default_instruction(corpus):
    adapter = dspy.ChatAdapter()
    assert WordProblem.instructions == DSPY_DEFAULT_INSTRUCTION in STYLES["neutral"].instructions
    assert dspy.Signature("question -> answer").instructions == DSPY_DEFAULT_INSTRUCTION
    e = next(e for e in corpus if e.instruction == WordProblem.instructions and e.program == "cot")
    question = e.messages[1]["content"].split("\n", 1)[1].split("\n\nRespond with")[0]
    unoptimized = make_program("cot").predict.signature
    assert adapter.format(unoptimized, demos=[], inputs={"question": question}) == e.messages[:2]


def test_styles_keep_held_out_phrasings_out_of_training(corpus):
    assert STYLES["terse"].reflect_rate < STYLES["neutral"].reflect_rate < STYLES["careful"].reflect_rate
    seen = {e.instruction for e in corpus}
    for style in STYLES.values():
        assert 5 <= len(style.instructions) + len(style.held_out) <= 10 and len(style.held_out) >= 2
        assert not set(style.held_out) & seen
        assert set(style.instructions) <= seen
        assert all(style_of(i) == style.name for i in style.instructions + style.held_out)
    assert all(style_of(e.instruction) == e.style for e in corpus)


def test_config_choices_shape_the_corpus():
    only = make_corpus(n=80, seed=1, styles={"careful": 2.0}, predict_fraction=1.0, difficulty=[3])
    assert {(e.style, e.program, e.family, e.difficulty) for e in only} == {("careful", "predict", "chains", 3)}
    assert all(len(e.steps) == 4 and e.correct and not e.slipped for e in only)
    assert all(e.program == "cot" for e in make_corpus(n=40, predict_fraction=0.0))
    assert not any(e.slipped for e in make_corpus(n=40, slip_rate=0.0))


# -- slips ---------------------------------------------------------------------------------------
def test_a_slip_never_lands_where_its_uses_are_ambiguous():
    # step 0's result 10 is also a number the question states: only step 1 may slip
    chain = [Step(5, "*", 2), Step(10, "+", 10)]
    for seed in range(50):
        slips = plan_slips(chain, {5, 2, 10}, 0.99, random.Random(seed))
        assert 0 not in slips and slips.get(1, 21) != 20
    # unambiguous: step 0 may slip, and the division after it must stay exact
    chain = [Step(27, "+", 13), Step(40, "/", 2)]
    slips = [plan_slips(chain, {27, 13, 2}, 0.99, random.Random(s)) for s in range(60)]
    assert any(0 in s for s in slips)
    assert all(s[0] % 2 == 0 and s[0] != 40 for s in slips if 0 in s)


# -- files -----------------------------------------------------------------------------------------
def test_jsonl_round_trip_is_atomic_and_exact(tmp_path, corpus):
    path = write_corpus(corpus[:50], tmp_path / "sub" / "corpus.jsonl")
    assert read_corpus(path) == corpus[:50]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50 and json.loads(lines[0])["problem_id"] == corpus[0].problem_id
    assert sorted(p.name for p in path.parent.iterdir()) == ["corpus.jsonl"]


def test_a_malformed_line_is_named(tmp_path, corpus):
    path = write_corpus(corpus[:2], tmp_path / "c.jsonl")
    with path.open("a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    with pytest.raises(CorpusError, match=r"line 3"):
        read_corpus(path)
    record = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    del record["reflects"]
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"line 1.*reflects"):
        read_corpus(path)


# -- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"split": "validation"}, "split 'train' only"),
    ({"n": -1}, "greater than or equal to 0"),
    ({"n": True}, "n"),
    ({"styles": {"terse": 0.0}}, "positive"),
    ({"styles": {"loud": 1.0}}, r"unknown styles \['loud'\]; choose from terse, neutral, careful"),
    ({"styles": {}}, "positive"),
    ({"predict_fraction": 1.5}, "predict_fraction"),
    ({"slip_rate": 1.0}, "slip_rate"),
    ({"difficulty": 4}, "difficulty must be 1, 2 or 3"),
    ({"families": ["rates"]}, "families"),
])
def test_bad_arguments_say_what_is_wrong(kwargs, message):
    with pytest.raises(CorpusError, match=message):
        make_corpus(**kwargs)
    with pytest.raises(ValidationError):
        CorpusConfig(**kwargs)


def test_config_and_keywords_do_not_mix():
    with pytest.raises(CorpusError, match="not both"):
        make_corpus(CorpusConfig(n=1), seed=2)
    with pytest.raises(CorpusError, match="program must be"):
        build_program("react", "Answer.")
