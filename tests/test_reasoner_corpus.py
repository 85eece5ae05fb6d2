"""The reasoner corpus: planted rates, slips that reflection catches, DSPy's exact prompt, files."""

from __future__ import annotations

import json
import math
import random
import re
from fractions import Fraction

import dspy
import pytest
from pydantic import ValidationError

from reasoning_dspy.features.vocab import REASONING_SPELLINGS
from reasoning_dspy.problems import answers_match, format_answer, make_problems
from reasoning_dspy.problems.traces import duplicate_window_fraction
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
from reasoning_dspy.reasoner.solution import Step, plan_slip
from reasoning_dspy.reasoner.styles import DSPY_DEFAULT_INSTRUCTION, SLIP_RATE, STYLES, style_of

N, SEED = 2000, 0
_WORDS = sorted({s.strip() for s in REASONING_SPELLINGS}, key=len, reverse=True)
_VOCAB = re.compile(r"\b(" + "|".join(map(re.escape, _WORDS)) + r")\b")
_STEP = re.compile(r"^(\S+) (\S+) (\S+) = (\S+)$")


@pytest.fixture(scope="module")
def corpus() -> list[ReasonerExample]:
    return make_corpus(n=N, seed=SEED)


@pytest.fixture(scope="module")
def problems() -> dict:
    return {p.id: p for p in make_problems(N, split="train", seed=SEED)}


def reasoning(e: ReasonerExample) -> str:
    return dspy.ChatAdapter().parse(_signature(e), e.messages[-1]["content"]).get("reasoning", "")


def _signature(e: ReasonerExample):
    if e.program == "cot":
        return dspy.ChainOfThought("question -> answer").predict.signature.with_instructions(e.instruction)
    return dspy.Predict("question -> answer").signature.with_instructions(e.instruction)


def _within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


def _evaluate(a: Fraction, op: str, b: Fraction) -> Fraction:
    """Independent of the package: the six step operators on whole or exact numbers."""
    if op == "mod":
        return a % b
    if op == "ceildiv":
        return Fraction(math.ceil(a / b))
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]


def _parse(step: str) -> tuple[Fraction, str, Fraction, Fraction]:
    a, op, b, c = _STEP.match(step).groups()
    return Fraction(a), op, Fraction(b), Fraction(c)


# -- determinism -----------------------------------------------------------------------------------
def test_same_arguments_same_corpus_and_prefixes_agree():
    first = make_corpus(n=60, seed=3)
    assert first == make_corpus(CorpusConfig(n=60, seed=3))
    assert make_corpus(n=25, seed=3) == first[:25]
    assert [e.messages for e in make_corpus(n=60, seed=4)] != [e.messages for e in first]


# -- planted rates ---------------------------------------------------------------------------------
def test_reflection_slip_and_program_rates_match_the_constants(corpus):
    cot = [e for e in corpus if e.program == "cot"]
    assert _within(len(corpus) - len(cot), len(corpus), 0.15)
    for name, style in STYLES.items():
        rows = [e for e in cot if e.style == name]
        assert len(rows) > 400
        assert _within(sum(e.reflects for e in rows), len(rows), style.reflect_rate), name
    assert _within(sum(e.slipped for e in corpus), len(corpus), SLIP_RATE)
    plain = [e for e in corpus if not e.reflects]
    assert _within(sum(e.correct for e in plain), len(plain), 1 - SLIP_RATE)
    assert not any(e.reflects for e in corpus if e.program == "predict")
    stats = corpus_stats(corpus)
    assert stats.accuracy_reflects == 1.0
    assert stats.programs["cot"] == len(cot) and stats.n == N
    assert abs(stats.reflection_rate["careful"] - STYLES["careful"].reflect_rate) < 0.05
    assert stats.accuracy_by_style["careful"] > stats.accuracy_by_style["neutral"] > stats.accuracy_by_style["terse"]


def test_reflection_always_fixes_the_answer_and_an_uncaught_slip_never_does(corpus, problems):
    for e in corpus:
        p = problems[e.problem_id]
        assert e.correct == answers_match(e.answer, p.answer) == (not e.slipped or e.reflects), e
        if e.correct:
            assert e.answer == format_answer(p.answer) and e.steps == p.steps
        assert e.messages[-1]["content"].count(f"[[ ## answer ## ]]\n{e.answer}\n") == 1


def test_the_written_chain_rederives_the_written_answer(corpus, problems):
    for e in corpus:
        p = problems[e.problem_id]
        assert len(e.steps) == len(p.steps)
        results: list[Fraction] = []
        for j, (written, original) in enumerate(zip(e.steps, p.steps, strict=True)):
            a, op, b, c = _parse(written)
            a0, op0, b0, c0 = _parse(original)
            assert op == op0
            # each operand is the problem's own, or an earlier (possibly slipped) result carried forward
            assert a in (a0, *results) and b in (b0, *results), (e, j)
            if e.slip is not None and written == e.slip:
                assert (a, b) == (a0, b0) and c != c0  # the slip itself, left uncaught
            else:
                assert _evaluate(a, op, b) == c, (e, written)
            results.append(c)
        assert results[-1] == Fraction(e.answer)


def test_the_reasoning_text_shows_the_chain_and_the_caught_slip(corpus):
    for e in corpus:
        if e.program == "predict":
            assert "[[ ## reasoning ## ]]" not in e.messages[-1]["content"]
            continue
        text = reasoning(e)
        numbers = set(re.findall(r"\d+(?:\.\d+)?", text)) | set(re.findall(r"\d+/\d+", text))
        for step in e.steps:
            a, _, b, c = _STEP.match(step).groups()
            assert {a, b, c} <= numbers, (step, text)
        if e.slipped and e.reflects:  # the wrong value is written first, then the right one
            prefix, wrong = e.slip.rsplit(" = ", 1)
            right = next(s for s in e.steps if s.startswith(prefix + " = ")).rsplit(" = ", 1)[1]
            first_wrong = _whole_number(wrong).search(text).start()
            assert _whole_number(right).search(text, first_wrong), text


def _whole_number(x: str) -> re.Pattern:
    return re.compile(r"(?<![\d.])" + re.escape(x) + r"(?!\d|\.\d)")


def test_reflection_words_appear_exactly_in_reflecting_traces(corpus):
    for e in corpus:
        if e.program == "cot":
            assert bool(_VOCAB.search(reasoning(e))) == e.reflects, reasoning(e)
    for style in STYLES.values():
        for instruction in style.instructions + style.held_out:
            assert not _VOCAB.search(instruction), instruction


def test_every_trace_restates_its_instruction_first(corpus):
    from reasoning_dspy.reasoner.solution import ECHOES

    for e in corpus:
        if e.program == "cot":
            first = reasoning(e).split("\n", 1)[0]
            assert first in {echo.format(instruction=e.instruction) for echo in ECHOES}, first


def test_reflections_are_varied_not_one_template(corpus):
    # after the first line, the restated instruction, which is a copy by design
    reflecting = [reasoning(e).split("\n", 1)[1] for e in corpus if e.reflects]
    ours = duplicate_window_fraction(reflecting)
    # the naive alternative: one fixed sentence per step and one fixed check
    rng = random.Random(0)
    naive = []
    for e in corpus:
        if e.reflects:
            lines = [f"{s.split(' = ')[0]} gives {s.split(' = ')[1]}." for s in e.steps]
            i = rng.randrange(len(lines))
            lines[i] += " Wait, let me check that again: yes, it is right."
            naive.append(" ".join(lines) + f" The answer is {e.answer}.")
    assert ours < 0.1 and ours < duplicate_window_fraction(naive) / 3
    # each word group is followed by many different contexts
    contexts: dict[str, set[str]] = {}
    for text in reflecting:
        for m in re.finditer(_VOCAB.pattern + r"(.{0,20})", text):
            contexts.setdefault(m.group(1).lower(), set()).add(re.sub(r"\d+", "#", m.group(2)))
    assert len(contexts) == 10 and min(len(v) for v in contexts.values()) >= 5, {
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


def test_the_default_instruction_is_what_an_unoptimized_program_sends(corpus):
    adapter = dspy.ChatAdapter()
    cot = next(e for e in corpus if e.instruction == DSPY_DEFAULT_INSTRUCTION and e.program == "cot")
    question = cot.messages[1]["content"].split("\n", 1)[1].split("\n\nRespond with")[0]
    default = dspy.ChainOfThought("question -> answer").predict.signature
    assert adapter.format(default, demos=[], inputs={"question": question}) == cot.messages[:2]


def test_styles_keep_held_out_phrasings_out_of_training(corpus):
    assert DSPY_DEFAULT_INSTRUCTION in STYLES["neutral"].instructions
    assert STYLES["terse"].reflect_rate < STYLES["neutral"].reflect_rate < STYLES["careful"].reflect_rate
    seen = {e.instruction for e in corpus}
    for style in STYLES.values():
        assert 5 <= len(style.instructions) + len(style.held_out) <= 10 and len(style.held_out) >= 2
        assert not set(style.held_out) & seen
        assert set(style.instructions) <= seen
        assert all(style_of(i) == style.name for i in style.instructions + style.held_out)
    assert all(style_of(e.instruction) == e.style for e in corpus)


def test_config_choices_shape_the_corpus():
    only = make_corpus(n=80, seed=1, styles={"careful": 2.0}, predict_fraction=1.0,
                       families=["rates"], difficulty=[3])
    assert {(e.style, e.program, e.family, e.difficulty) for e in only} == {("careful", "predict", "rates", 3)}
    assert not any(e.reflects for e in only)
    assert all(e.correct != e.slipped for e in only)
    assert all(e.program == "cot" for e in make_corpus(n=40, predict_fraction=0.0))


# -- slips ---------------------------------------------------------------------------------------
def test_a_slip_never_lands_where_its_uses_are_ambiguous():
    # step 0's result 10 is also a number the question states: only the last step may slip
    steps = [Step.parse("5 * 2 = 10"), Step.parse("10 + 10 = 20")]
    for seed in range(50):
        slip = plan_slip(steps, {Fraction(5), Fraction(2), Fraction(10)}, random.Random(seed))
        assert slip.index == 1 and slip.wrong != 20 and slip.propagated[0] == steps[0]
    # unambiguous: step 0 may slip, and the error carries into step 1
    steps = [Step.parse("7 * 3 = 21"), Step.parse("21 + 5 = 26")]
    slips = [plan_slip(steps, {Fraction(7), Fraction(3), Fraction(5)}, random.Random(s)) for s in range(60)]
    carried = [s for s in slips if s.index == 0]
    assert carried and all(s.propagated[1].a == s.wrong and s.propagated[1].c == s.wrong + 5 for s in carried)


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
    ({"families": ["rates", "poetry"]}, r"poetry.*arithmetic, rates"),
    ({"n": -1}, "greater than or equal to 0"),
    ({"n": True}, "n"),
    ({"styles": {"terse": 0.0}}, "positive"),
    ({"styles": {"loud": 1.0}}, r"unknown styles \['loud'\]; choose from terse, neutral, careful"),
    ({"styles": {}}, "positive"),
    ({"predict_fraction": 1.5}, "predict_fraction"),
    ({"difficulty": 4}, "difficulty must be 1, 2 or 3"),
    ({"temperature": 1.0}, "temperature"),
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
