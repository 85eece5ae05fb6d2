"""ReasoningOptimizer on tiny-random with a planted answer: it finds the feature that makes the
model write a reasoning word, honours the accuracy constraint, and is reproducible and resumable."""

from __future__ import annotations

import dspy
import pytest
from dspy.adapters.chat_adapter import ChatAdapter

from optimizers import InstructionPool, ReasoningOptimizer, SteeredProgram, program_measures, read_journal
from optimizers.instructions import LIBRARY, current_instruction
from reasoning_dspy.problems import as_dspy_examples, make_problems
from reasoning_dspy.program.adapter import LenientChatAdapter
from reasoning_dspy.sae import planted
from reasoning_dspy.steering import SteeringSpec


@pytest.fixture(scope="module")
def lm(planted_lm):
    return planted_lm(max_tokens=12)


@pytest.fixture(scope="module")
def train():
    return as_dspy_examples(make_problems(6, split="train"))


def program():
    return dspy.ChainOfThought("question -> answer")


def optimizer(**kwargs):
    settings = dict(features=planted.CANDIDATES, add_strength=(0.2, 2.0), n_trials=12, batch_trials=4,
                    accuracy_margin=None, progress=False)
    return ReasoningOptimizer(**{**settings, **kwargs})


def compile_with(lm, train, **kwargs):
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):  # tiny-random does not write DSPy's format
        return optimizer(**kwargs).compile(program(), trainset=train)


def _comparable(trials):
    return [t.model_dump(exclude={"wall_s"}) for t in trials]


def test_the_planted_feature_is_found(lm, train):
    compiled = compile_with(lm, train)
    baseline, best = compiled.trials[0], compiled.best_trial
    assert baseline.candidate.steering() is None and baseline.number == 0
    assert baseline.candidate.instruction == current_instruction(program())
    # only trials that steer the planted feature make the model write " wait", where the metric fires
    assert planted.PUSH in best.candidate.features and best.score > 20 * baseline.score
    assert compiled.steering is not None and planted.PUSH in compiled.steering.features
    assert best.word_rate > 50 and baseline.word_rate == 0
    for t in compiled.trials:
        if planted.PUSH not in t.candidate.features:
            assert t.score < 0.5 * best.score  # nothing else comes close
    assert all(t.n == len(train) and t.tokens > 0 for t in compiled.trials if not t.cached)
    # the compiled program answers with its instruction and steering
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        pred = compiled(question="What is 3 + 4?")
    measures = program_measures(pred)
    assert "wait" in measures.completion and measures.reasoning_activation > 0.05
    assert current_instruction(compiled.program) == best.candidate.instruction


def test_instructions_only_never_steers(lm, train):
    compiled = compile_with(lm, train, steer=False, n_trials=8)
    assert compiled.steering is None and all(not t.candidate.features for t in compiled.trials)
    # the budget buys new candidates: TPE's repeats are replaced while new ones remain
    assert len({t.candidate.instruction for t in compiled.trials}) == 8 and not any(t.cached for t in compiled.trials)
    assert {t.candidate.instruction for t in compiled.trials} <= {current_instruction(program())} | {
        x for texts in LIBRARY.values() for x in texts}


def test_the_accuracy_constraint_rules_out_what_breaks_answers(lm, train):
    # a task metric under which writing " wait" is wrong: the planted steering now costs accuracy
    no_wait = lambda example, pred, trace=None: float("wait" not in program_measures(pred).completion)  # noqa: E731
    compiled = compile_with(lm, train, task_metric=no_wait, accuracy_margin=0.0)
    assert compiled.trials[0].accuracy == 1.0
    assert any(not t.feasible for t in compiled.trials)  # the optimizer did try the planted steering
    assert compiled.best_trial.feasible and compiled.best_trial.accuracy == 1.0
    assert compiled.best_trial.score < 0.01


def test_multi_objective_reports_a_pareto_front(lm, train):
    from optimizers import pareto_front

    compiled = compile_with(lm, train, multi_objective=True, n_trials=8)
    front = pareto_front(compiled.trials)
    assert compiled.best_trial in front
    for r in front:  # nothing on the front is beaten on all three objectives
        assert not any(t.score >= r.score and t.accuracy >= r.accuracy and t.tokens <= r.tokens and
                       (t.score, t.accuracy, t.tokens) != (r.score, r.accuracy, r.tokens) for t in compiled.trials)


def test_same_seed_same_trials_and_program(lm, train, tmp_path):
    a = compile_with(lm, train, seed=3)
    b = compile_with(lm, train, seed=3)
    assert _comparable(a.trials) == _comparable(b.trials)
    a.save(str(tmp_path / "a.json"))
    b.save(str(tmp_path / "b.json"))
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    c = compile_with(lm, train, seed=4)
    assert _comparable(c.trials) != _comparable(a.trials)


def test_a_killed_run_resumes_to_the_same_result(lm, train, tmp_path):
    whole = compile_with(lm, train, journal=tmp_path / "whole.jsonl")
    lines = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 12
    # what a kill during the second batch leaves: the first batch, and half a line
    (tmp_path / "killed.jsonl").write_text("".join(lines[:4]) + lines[4][:40])
    assert len(read_journal(tmp_path / "killed.jsonl")) == 4
    resumed = compile_with(lm, train, journal=tmp_path / "killed.jsonl")
    assert _comparable(resumed.trials) == _comparable(whole.trials)
    assert resumed.best_trial.model_dump(exclude={"wall_s"}) == whole.best_trial.model_dump(exclude={"wall_s"})
    assert _comparable(read_journal(tmp_path / "killed.jsonl")) == _comparable(whole.trials)
    # a journal from another search is refused, not silently mixed in
    with pytest.raises(ValueError, match="different search"):
        compile_with(lm, train, journal=tmp_path / "whole.jsonl", features=[11, planted.PUSH, 3])


@pytest.mark.parametrize(("change", "setting"), [
    ({"objective": "reflect"}, "objective: recorded 'activation', now 'reflect'"),
    ({"n_examples": 4}, "n_examples: recorded 6, now 4"),
    ({"task_metric": lambda example, pred, trace=None: 1.0}, "task_metric: recorded 'optimizers.evaluate"),
    ({"accuracy_margin": 0.1}, "accuracy_margin: recorded None, now 0.1"),
    ({"lm": 16}, "lm_kwargs: recorded"),
])
def test_a_journal_scored_with_other_settings_is_refused(lm, planted_lm, train, tmp_path, change, setting):
    """Trials scored under another objective, example set, metric, margin or LM are not comparable:
    resuming their journal names the setting that differs instead of mixing them in."""
    from optimizers import JournalError

    journal = tmp_path / "trials.jsonl"
    compile_with(lm, train, journal=journal, n_trials=4, steer=False)
    change = dict(change)
    other_lm = planted_lm(max_tokens=change.pop("lm")) if "lm" in change else lm
    with pytest.raises(JournalError, match="was scored with other settings") as err:
        compile_with(other_lm, train, journal=journal, n_trials=8, steer=False, **change)
    assert setting in str(err.value)
    assert len(read_journal(journal)) == 4  # nothing was added
    resumed = compile_with(lm, train, journal=journal, n_trials=8, steer=False)  # the same settings resume
    assert len(resumed.trials) == 8


def test_the_docs_count_the_instruction_library_as_it_is():
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "optimize.md").read_text()
    counts = {int(n) for n in re.findall(r"built-in library \((\d+) instructions\)", doc)}
    assert counts == {sum(len(texts) for texts in LIBRARY.values())}


def test_the_configured_adapter_is_used_and_lenient_parsing_only_when_asked(lm, train):
    class Counting(LenientChatAdapter):
        calls = 0

        def __call__(self, *args, **kwargs):
            type(self).calls += 1
            return super().__call__(*args, **kwargs)

    with dspy.context(lm=lm, adapter=Counting()):
        optimizer(n_trials=1, batch_trials=1, steer=False).compile(program(), trainset=train)
    assert Counting.calls == len(train)  # every trial call went through the user's adapter
    # with DSPy's own ChatAdapter, tiny-random's unparseable answers are failures, scored zero
    with dspy.context(lm=lm, adapter=ChatAdapter(use_json_adapter_fallback=False)):
        strict = optimizer(n_trials=1, batch_trials=1, steer=False).compile(program(), trainset=train)
    assert strict.trials[0].tokens == 0 and strict.trials[0].accuracy == 0


def test_save_and_load_restore_instruction_and_steering(lm, tmp_path):
    spec = SteeringSpec(features={planted.PUSH: 1.5}, units="residual")
    saved = SteeredProgram(program(), spec)
    saved.program.predict.signature = saved.program.predict.signature.with_instructions("Be brief.")
    saved.save(str(tmp_path / "p.json"))
    fresh = SteeredProgram(program())
    fresh.load(str(tmp_path / "p.json"))
    assert fresh.steering == spec and current_instruction(fresh.program) == "Be brief."
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        assert program_measures(fresh(question="2 + 2?")) == program_measures(saved(question="2 + 2?"))
    program().save(str(tmp_path / "plain.json"))
    with pytest.raises(ValueError, match="not saved from a SteeredProgram"):
        SteeredProgram(program()).load(str(tmp_path / "plain.json"))


def test_a_steered_program_keeps_the_models_own_output_fields(lm):
    """Output fields named like the measurements hold the model's answer; the measurements (and the
    instruction that produced them) sit beside the fields, in `program_measures`."""
    student = dspy.Predict("task -> instruction, completion, n_tokens, reasoning_activation")
    student.signature = student.signature.with_instructions("Be brief.")
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        pred = SteeredProgram(student)(task="Write an instruction.")
        plain = student(task="Write an instruction.")
    assert dict(pred.items()) == dict(plain.items())  # every field is the adapter's parse of the model's text
    measures = program_measures(pred)
    assert measures.instruction == "Be brief." and measures.n_tokens > 0 and measures.completion
    assert measures.reasoning_activation is not None and program_measures(plain) is None


def test_the_pool_and_a_proposer(lm):
    from optimizers.recipes import pool_lm

    pool = InstructionPool(["Plan first, then answer.", "Be brief."], proposer=pool_lm(["List the facts first."]),
                           n_proposals=2)
    candidates = pool.candidates(program())
    assert candidates[0] == current_instruction(program())
    assert candidates.count("Be brief.") == 1 and "Plan first, then answer." in candidates
    assert candidates[-1] == "List the facts first."  # the proposer's, after the library and the user's
    with pytest.raises(ValueError, match="non-empty strings"):
        InstructionPool(["", "ok"])


def test_bad_settings_are_named(lm, train):
    with pytest.raises(ValueError, match="objective must be one of"):
        ReasoningOptimizer(objective="loudness")
    with pytest.raises(ValueError, match="outside the SAE"):
        compile_with(lm, train, features=[3, 99])
    with dspy.context(lm=lm), pytest.raises(ValueError, match="trainset is empty"):
        optimizer().compile(program(), trainset=[])


def test_the_search_space_gives_add_and_clamp_candidates():
    import optuna

    from optimizers import Candidate, SearchSpace

    space = SearchSpace(instructions=["A.", "B."], features=[7, 2, 9], modes=["add", "clamp"])
    add = space.suggest(optuna.trial.FixedTrial({"instruction": 1, "n_features": 2, "mode": "add",
                                                 "add_strength": 0.2}))
    assert add == Candidate(instruction="B.", features=(7, 2), strength=0.2, mode="add")
    spec = add.steering()
    assert spec.units == "residual" and spec.residual_strength == pytest.approx(0.2)  # split over the features
    clamp = space.suggest(optuna.trial.FixedTrial({"instruction": 0, "n_features": 1, "mode": "clamp",
                                                   "clamp_strength": 2.5}))
    assert clamp.steering() == SteeringSpec(features={7: 2.5}, mode="clamp", units="fmax")
    none = space.suggest(optuna.trial.FixedTrial({"instruction": 0, "n_features": 0}))
    assert none.steering() is None and space.params_of(none) == {"instruction": 0, "n_features": 0}
    assert space.suggest(optuna.trial.FixedTrial(space.params_of(clamp))) == clamp
    with pytest.raises(ValueError, match="n_features"):
        SearchSpace(instructions=["A."], features=[1], n_features=[0, 2])


def test_clamp_needs_fmax(lm, train):
    with pytest.raises(ValueError, match="clamp sets features to multiples of their f_max"):
        compile_with(lm, train, modes=("add", "clamp"))


def test_a_token_window_reaches_every_steered_candidate(lm, train):
    import optuna

    from optimizers import SearchSpace

    space = SearchSpace(instructions=["A."], features=[7, 2], n_features=[0, 1], tokens=32)
    cand = space.suggest(optuna.trial.FixedTrial({"instruction": 0, "n_features": 1, "add_strength": 0.2}))
    assert cand.tokens == 32 and cand.steering().tokens == 32 and cand.steering_label() == "add 0.2 on 7, first 32 tokens"
    late = SearchSpace(instructions=["A."], features=[7, 2], n_features=[0, 1], tokens=8, skip_lines=2)
    cand = late.suggest(optuna.trial.FixedTrial({"instruction": 0, "n_features": 1, "add_strength": 0.2}))
    assert cand.steering().skip_lines == 2 and cand.steering_label() == "add 0.2 on 7, 8 tokens after 2 lines"
    compiled = compile_with(lm, train, steer_tokens=3, steer_skip_lines=1)
    steered = [t for t in compiled.trials if t.candidate.features]
    assert steered and all((t.candidate.steering().tokens, t.candidate.steering().skip_lines) == (3, 1) for t in steered)
    assert compiled.steering is None or (compiled.steering.tokens, compiled.steering.skip_lines) == (3, 1)
