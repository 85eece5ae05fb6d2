"""Prompt validation and filtering by meaning, with the real all-MiniLM-L6-v2 embedder and the real
tiny-random tokenizer and model: no mocks of the core."""

from __future__ import annotations

import re
from pathlib import Path

import dspy
import numpy as np
import pytest

from optimizers import InstructionPool, ReasoningOptimizer, instruction_scores
from optimizers.instructions import LIBRARY, current_instruction
from reasoning_dspy.program.adapter import LenientChatAdapter
from reasoning_dspy.rag import (
    DUPLICATE_SIMILARITY,
    OFF_TOPIC_SIMILARITY,
    InvalidPrompt,
    LMEmbedder,
    MiniLMEmbedder,
    NumpyIndex,
    PromptFilter,
    PromptRules,
    PromptValidator,
    VectorIndex,
    default_embedder,
    minilm_folder,
    template_fields,
)

LIBRARY_TEXTS = [x for texts in LIBRARY.values() for x in texts]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "rag.md"


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return default_embedder()  # loaded once per process


@pytest.fixture(scope="module")
def validator(tiny) -> PromptValidator:
    return PromptValidator.for_model(tiny, rules=PromptRules.for_template("Question: {question}", max_tokens=64))


def prompt_filter(minilm, **kwargs) -> PromptFilter:
    return PromptFilter(minilm, reference=LIBRARY_TEXTS, **kwargs)


# -- validation -----------------------------------------------------------------------------------
def test_valid_prompts_are_counted_with_the_models_tokenizer(tiny, validator):
    prompt = validator.validate("Read {question} and check every step.")
    assert prompt.fields == ("question",)
    assert prompt.n_tokens == len(tiny.tokenizer("Read {question} and check every step.",
                                                 add_special_tokens=False).input_ids)
    assert validator.limit == 64 and validator.limit_source == "max_tokens=64"
    # without a configured max, the limit is the model's own context (tiny-random: 1024 positions)
    assert PromptValidator.for_model(tiny).limit == tiny.model.config.max_position_embeddings == 1024


def test_empty_prompts_are_refused(validator):
    for text, said in [("", "the prompt is empty"), ("  \n ", "the prompt is only whitespace")]:
        with pytest.raises(InvalidPrompt, match=said) as err:
            validator.validate(text)
        assert err.value.problems == [said]
    with pytest.raises(InvalidPrompt, match="a prompt is a string, got int"):
        validator.validate(3)


def test_a_prompt_over_the_token_limit_says_how_many_tokens_and_the_limit(tiny, validator):
    long = "{question} " + "check the arithmetic once more " * 20
    n = len(tiny.tokenizer(long, add_special_tokens=False).input_ids)
    with pytest.raises(InvalidPrompt) as err:
        validator.validate(long)
    assert n > 64
    assert f"{n} tokens (counted with tiny-random's tokenizer), over the limit of 64 (max_tokens=64)" in str(err.value)
    context = PromptValidator.for_model(tiny)
    with pytest.raises(InvalidPrompt, match=r"over the limit of 1,024 \(tiny-random's context length\): shorten it"):
        context.validate("word " * 1100)


def test_missing_and_unknown_template_fields_are_named(validator):
    with pytest.raises(InvalidPrompt, match=r"missing field \{question\} \(the template needs \{question\}\)"):
        validator.validate("Think step by step.")
    with pytest.raises(InvalidPrompt) as err:
        validator.validate("Answer {qestion} carefully.")
    assert err.value.problems == ["missing field {question} (the template needs {question})",
                                  "unknown field {qestion} (the template fills only {question})"]
    # {{literal}} braces are not fields
    assert validator.validate("Answer {question}; output JSON like {{answer}}.").fields == ("question",)


def test_a_dspy_signature_gives_its_input_fields():
    predict = dspy.Predict("question, context -> answer")
    assert template_fields(predict) == template_fields(predict.signature) == ("question", "context")
    rules = PromptRules.for_template(predict)
    validator = PromptValidator(rules=rules)
    assert validator.problems("Use {context} to answer {question}.") == []
    assert validator.problems("Answer {question}.") == ["missing field {context} (the template needs {question}, "
                                                        "{context})"]


def test_bad_rules_are_refused(tiny):
    with pytest.raises(ValueError, match="needs a tokenizer"):
        PromptValidator(rules=PromptRules(max_tokens=10))
    with pytest.raises(ValueError, match="identifiers"):
        PromptRules(required_fields=("two words",))
    with pytest.raises(ValueError, match="not among allowed_fields"):
        PromptRules(required_fields=("a",), allowed_fields=("b",))


# -- embeddings -----------------------------------------------------------------------------------
def test_minilm_puts_a_paraphrase_closer_than_an_unrelated_sentence(minilm):
    assert (minilm_folder() / "model.safetensors").is_file()
    v = minilm.embed(["Check every step before you answer.", "Verify each step before answering.",
                      "The cat sat on the mat."])
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    paraphrase, unrelated = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert paraphrase > 0.7 and unrelated < 0.2 and paraphrase > unrelated + 0.5
    np.testing.assert_allclose(minilm.embed(["Verify each step before answering."])[0], v[1], atol=1e-5)  # batch-free


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    texts = ["Check every step before you answer.", "Think step by step.", "The cat sat on the mat."]
    reference = st.SentenceTransformer(str(minilm_folder()), device="cpu").encode(texts)
    np.testing.assert_allclose(minilm.embed(texts), reference, atol=1e-5)


def test_the_lm_embedder_works_behind_the_same_interface(tiny):
    embedder = LMEmbedder(tiny)
    v = embedder.embed(["Check every step.", "The cat sat on the mat.", "Check every step."])
    assert v.shape == (3, tiny.model_spec.d_model) and embedder.layer == 2
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(v[0], v[2], atol=1e-5)  # padding to the longer row changes nothing
    pf = PromptFilter(embedder, off_topic_similarity=None)
    pf.record("Check every step.", 0.5)
    [d] = pf.check(["Check every step."])
    assert d.verdict == "duplicate" and d.score == 0.5
    with pytest.raises(ValueError, match="outside tiny-random"):
        LMEmbedder(tiny, layer=9)


# -- the index ------------------------------------------------------------------------------------
def test_numpy_index_search_is_exact_and_bad_input_writes_nothing():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    index = NumpyIndex()
    assert isinstance(index, VectorIndex)
    index.add([f"v{i}" for i in range(50)], x, [{"i": i} for i in range(50)])
    q = rng.normal(size=8)
    hits = index.search(q, 5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    order = np.argsort(-(unit @ (q / np.linalg.norm(q))))[:5]
    assert [h[0] for h in hits] == [f"v{i}" for i in order] and [h[2]["i"] for h in hits] == list(order)
    assert hits[0][1] >= hits[-1][1]
    index.add(["v0"], x[order[0]][None], [{"i": "replaced"}])  # an existing id is replaced
    assert len(index) == 50 and index.search(x[order[0]], 1)[0][0] in {"v0", f"v{order[0]}"}
    for bad, said in [((["a", "b"], x[:1], [{}, {}]), r"expected 2 vectors"),
                      ((["a"], x[:1, :4], [{}]), "4 dimensions but this index holds 8"),
                      ((["a"], np.full((1, 8), np.nan), [{}]), "NaN"),
                      ((["a"], np.zeros((1, 8)), [{}]), "all zeros"),
                      ((["a", "a"], x[:2], [{}, {}]), "repeat"),
                      ((["a"], x[:1], [{}, {}]), "one payload per id")]:
        with pytest.raises(ValueError, match=said):
            index.add(*bad)
    assert len(index) == 50
    assert NumpyIndex(8).search(q, 3) == []


# -- the filter -----------------------------------------------------------------------------------
def test_a_planted_near_duplicate_is_dropped_and_its_score_reused(minilm):
    pf = prompt_filter(minilm)
    pf.record_scores({"Check every step before you answer.": 0.42, "Think step by step.": 0.3})
    decisions = pf.check(["Check each step before you answer.", "Verify each step before answering.",
                          "Plan first, then answer.", "Plan first, then answer!"])
    dup, paraphrase, new, repeat = decisions
    assert dup.verdict == "duplicate" and dup.score == 0.42 and dup.match == "Check every step before you answer."
    assert dup.similarity >= DUPLICATE_SIMILARITY
    assert re.fullmatch(r"near-duplicate of 'Check every step before you answer\.' \(similarity 0\.9\d\), "
                        r"reused score 0\.42", dup.reason)
    assert paraphrase.kept and new.kept and new.reason == "keep"  # other words: its own trial
    assert repeat.verdict == "duplicate" and repeat.match == "Plan first, then answer." and repeat.score is None
    assert "an earlier candidate" in repeat.reason
    assert pf.keep(["Check each step before you answer.", "Plan first, then answer."]) == ["Plan first, then answer."]


def test_an_off_topic_candidate_is_flagged_against_the_reference_set(minilm):
    pf = prompt_filter(minilm)
    off, on, terse = pf.check(["The cat sat on the mat.", "Write down what is known, then compute.",
                               "List the facts first."])
    assert off.verdict == "off_topic" and off.similarity < OFF_TOPIC_SIMILARITY
    assert re.fullmatch(r"off-topic \(similarity 0\.\d\d to the reference set, below 0\.30\)", off.reason)
    assert on.kept and terse.kept
    # thresholds are configurable; no reference set: no off-topic check
    assert prompt_filter(minilm, off_topic_similarity=0.99).check(["List the facts first."])[0].verdict == "off_topic"
    assert PromptFilter(minilm).check(["The cat sat on the mat."])[0].kept
    with pytest.raises(ValueError, match="less than or equal to 1"):
        prompt_filter(minilm, duplicate_similarity=1.5)


def test_invalid_candidates_are_skipped_and_invalid_records_write_nothing(minilm, validator):
    pf = PromptFilter(minilm, validator=validator, reference=["Answer {question}.", "Solve {question} step by step."])
    empty, missing, ok = pf.check(["", "Think step by step.", "Check {question} twice."])
    assert empty.reason == "invalid: the prompt is empty"
    assert missing.reason == "invalid: missing field {question} (the template needs {question})"
    assert ok.kept
    with pytest.raises(InvalidPrompt, match="missing field"):
        pf.record_scores({"Solve {question}.": 0.5, "Think step by step.": 0.7})
    with pytest.raises(ValueError, match="finite number"):
        pf.record("Solve {question}.", float("nan"))
    assert len(pf.index) == 0 and pf.nearest("Solve {question}.") == []


def test_k_nearest_retrieval_returns_the_planted_nearest_first(minilm):
    pf = prompt_filter(minilm)
    past = {"Answer directly.": 0.1, "Explain your reasoning, then give the answer.": 0.5,
            "Check every step before you answer.": 0.42, "Be brief.": 0.05, "Think step by step.": 0.3}
    pf.record_scores(past, run="earlier")
    hits = pf.nearest("Verify each step before answering.", k=3)
    assert [h.prompt for h in hits][0] == "Check every step before you answer."
    assert hits[0].score == 0.42 and hits[0].payload["run"] == "earlier"
    assert len(hits) == 3 and hits[0].similarity > hits[1].similarity >= hits[2].similarity
    assert len(pf.nearest("anything", k=50)) == len(past)
    pf.record("Check every step before you answer.", 0.9)  # a new score for the same prompt replaces the old
    assert pf.nearest("Check every step before you answer.", k=1)[0].score == 0.9 and len(pf.index) == len(past)


# -- in the optimizers ----------------------------------------------------------------------------
def test_the_pool_drops_what_the_filter_skips_and_says_why(minilm):
    program = dspy.ChainOfThought("question -> answer")
    pf = prompt_filter(minilm)
    pf.record("Think step by step.", 0.3)
    pool = InstructionPool(["Think step-by-step.", "The cat sat on the mat.", "Plan first, then answer."],
                           prompt_filter=pf)
    candidates = pool.candidates(program)
    assert candidates[0] == current_instruction(program)  # the program's own instruction is always kept
    assert "Plan first, then answer." in candidates and "Think step-by-step." not in candidates
    assert "Think step by step." not in candidates  # evaluated before: its recorded score stands
    reasons = {d.prompt: d.reason for d in pool.skipped}
    assert set(reasons) == {"Think step-by-step.", "The cat sat on the mat.", "Think step by step."}
    assert reasons["The cat sat on the mat."].startswith("off-topic")
    assert reasons["Think step-by-step."].startswith("near-duplicate of 'Think step by step.'")
    assert InstructionPool(["Think step-by-step."]).candidates(program)[-1] == "Think step-by-step."  # no filter


def test_the_optimizer_skips_a_planted_duplicate_and_records_why(planted_lm, minilm):
    from reasoning_dspy.problems import as_dspy_examples, make_problems

    pf = prompt_filter(minilm)
    pf.record("Check every step before you answer.", 0.42)
    planted_duplicate = "Check each step before you answer."
    lm = planted_lm(max_tokens=8)
    optimizer = ReasoningOptimizer(pool=[planted_duplicate, "Plan first, then answer."], prompt_filter=pf,
                                   steer=False, n_trials=4, batch_trials=4, accuracy_margin=None, progress=False,
                                   adapter=LenientChatAdapter())
    with dspy.context(lm=lm):
        compiled = optimizer.compile(dspy.ChainOfThought("question -> answer"),
                                     trainset=as_dspy_examples(make_problems(2, split="train")))
    skipped = {d.prompt: d for d in compiled.skipped}
    assert set(skipped) == {planted_duplicate, "Check every step before you answer."}
    assert skipped[planted_duplicate].score == 0.42
    assert skipped[planted_duplicate].reason.startswith("near-duplicate of 'Check every step before you answer.'")
    assert skipped[planted_duplicate].reason.endswith("reused score 0.42")
    assert planted_duplicate not in optimizer.space.instructions
    assert "Plan first, then answer." in optimizer.space.instructions
    assert all(t.candidate.instruction not in skipped for t in compiled.trials)
    # what it evaluated goes back into the filter for the next run
    scores = instruction_scores(compiled.trials)
    assert set(scores) == {t.candidate.instruction for t in compiled.trials}
    pf.record_scores(scores)
    assert all(not d.kept for d in pf.check(list(scores)))


def test_the_docs_examples_run(tiny, minilm):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102  (docs are code users copy)
