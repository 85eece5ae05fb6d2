"""`ReasoningOptimizer`: search instructions and steering together to make reasoning features fire.

A `dspy.teleprompt.Teleprompter`. Each trial is a `Candidate` (an instruction from the pool; which
of the top ReasonScore features to steer, how strongly, add or clamp) scored on the training
examples by the reasoning metric, with accuracy and tokens beside it. optuna's TPE sampler proposes
the candidates, `batch_trials` at a time, and all of a batch's calls go to the micro-batched engine
together.

Reproducible and resumable by construction: before each batch the optuna study is rebuilt from the
finished trials, with a sampler seeded by `(seed, trials done)`. The next candidates therefore
depend only on the seed and the history, so a run resumed from its journal proposes exactly what an
uninterrupted run would have.

The first trial is always the unoptimized program (its own instruction, no steering): the baseline
whose accuracy the constraint `accuracy >= baseline - accuracy_margin` is measured against.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dspy
import optuna
from dspy.teleprompt import Teleprompter

from optimizers.evaluate import OBJECTIVES, Objective, Scores, answer_correct, evaluate_candidates
from optimizers.instructions import InstructionPool, current_instruction, library_kind, with_instruction
from optimizers.program import SteeredProgram
from optimizers.space import Candidate, SearchSpace, feature_indices
from optimizers.trials import (
    JournalError,
    TrialRecord,
    append_journal,
    best_trial,
    check_settings,
    read_journal,
)

#: Random draws tried for a new candidate when TPE proposes one already scored.
DUPLICATE_TRIES = 16


class ReasoningOptimizer(Teleprompter):
    """Tune a DSPy program's instruction and its steering for reasoning activation.

    Args:
        pool: an `InstructionPool`, or a list of the user's instructions (added to the library).
        features: candidate steering features, best first, or a ReasonScore result (its
            `top_features` best). None or `steer=False`: instructions only.
        n_features: how many of those features a trial may steer (0 = none).
        modes: "add" (units of the residual norm, `add_strength`) and/or "clamp" (units of f_max,
            `clamp_strength`).
        steer_layer: the layer steering is added at (None: the SAE's layer).
        steer_tokens: steer only the positions that predict the first N generated tokens
            (`SteeringSpec.tokens`; None: every position).
        steer_skip_lines: open that window after the answer's first lines (`SteeringSpec.skip_lines`):
            the decision a model makes after restating its instruction, whatever the instruction.
        objective: "activation" (mean reasoning activation of the generated tokens, the default),
            "reflect" (share of answers with a reflection word) or "word_rate".
        multi_objective: optimise (objective, accuracy, tokens) together; the best program is the
            Pareto-front trial with the highest objective that meets the constraint.
        accuracy_margin: trials must keep accuracy >= baseline - margin (None: unconstrained).
        n_trials: candidate budget, the baseline included.
        batch_trials: candidates evaluated together in one engine batch.
        startup_trials: random trials before TPE models the history.
        n_examples: training examples scored per trial (None: all of `trainset`, or of `valset`).
        task_metric: `(example, pred, trace) -> float`, correctness (default: the answer matches).
        vocabulary: reasoning words counted by `word_rate` (default: the paper's).
        journal: a JSONL file recording every trial; an existing one is resumed.
        adapter: the DSPy adapter the trials' calls use (None: the configured one, else DSPy's
            default); `reasoning_dspy.program.adapter.LenientChatAdapter()` scores the answers of models that
            do not follow DSPy's format instead of counting them as failures.
        prompt_filter: a `reasoning_dspy.rag.PromptFilter` that drops invalid, near-duplicate and
            off-topic instructions from the pool before any is evaluated; the compiled program's
            `skipped` lists each dropped one's `Decision` (its `reason`, and for a near-duplicate
            the reused score). Scores are not recorded into the filter automatically (a resumed
            run must see the same pool): `prompt_filter.record_scores(instruction_scores(trials))`.
    """

    def __init__(
        self,
        *,
        pool: InstructionPool | Sequence[str] | None = None,
        features: Sequence[int] | Any = None,
        top_features: int = 3,
        n_features: Sequence[int] = (0, 1, 2, 3),
        modes: Sequence[str] = ("add",),
        add_strength: tuple[float, float] = (0.05, 0.3),
        clamp_strength: tuple[float, float] = (0.5, 3.0),
        steer_layer: int | None = None,
        steer_tokens: int | None = None,
        steer_skip_lines: int = 0,
        steer: bool = True,
        objective: Objective = "activation",
        multi_objective: bool = False,
        accuracy_margin: float | None = 0.02,
        n_trials: int = 16,
        batch_trials: int = 4,
        startup_trials: int | None = None,
        n_examples: int | None = None,
        task_metric: Callable[..., Any] = answer_correct,
        threads: int = 64,
        seed: int = 0,
        journal: str | os.PathLike | None = None,
        vocabulary: Sequence[str] | None = None,
        progress: bool = True,
        prompt_filter: Any = None,
        adapter: Any = None,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if n_trials < 1 or batch_trials < 1:
            raise ValueError(f"n_trials and batch_trials must be >= 1, got {n_trials} and {batch_trials}")
        if accuracy_margin is not None and accuracy_margin < 0:
            raise ValueError(f"accuracy_margin must be >= 0 (or None), got {accuracy_margin}")
        self.pool = pool if isinstance(pool, InstructionPool) else InstructionPool(list(pool or ()))
        if prompt_filter is not None:
            self.pool = self.pool.with_filter(prompt_filter)
        if hasattr(features, "top"):
            features = features.top(top_features)
        self.features = [int(f) for f in (features or [])][: max(top_features, 0)] if steer else []
        self.n_features = sorted({n for n in n_features if n <= len(self.features)} | {0})
        self.modes = list(modes)
        self.add_strength, self.clamp_strength = tuple(add_strength), tuple(clamp_strength)
        if steer_skip_lines < 0:
            raise ValueError(f"steer_skip_lines must be >= 0, got {steer_skip_lines}")
        self.steer_layer, self.steer_tokens, self.steer_skip_lines = steer_layer, steer_tokens, steer_skip_lines
        self.objective, self.multi_objective, self.accuracy_margin = objective, multi_objective, accuracy_margin
        self.n_trials, self.batch_trials = n_trials, batch_trials
        self.startup_trials = startup_trials if startup_trials is not None else max(batch_trials, n_trials // 3)
        self.n_examples, self.task_metric, self.threads, self.seed = n_examples, task_metric, threads, seed
        self.journal = Path(journal) if journal is not None else None
        self.vocabulary = list(vocabulary) if vocabulary else None
        self.progress = progress
        self.adapter = adapter
        self.trials: list[TrialRecord] = []
        self.skipped: list[Any] = []
        self.space: SearchSpace | None = None

    # -- DSPy entry point ---------------------------------------------------------------------
    def compile(self, student: dspy.Module, *, trainset: list[Any], teacher: Any = None,
                valset: list[Any] | None = None, lm: Any = None, **kwargs: Any) -> SteeredProgram:
        """Search, and return `student` with the best instruction and steering as a `SteeredProgram`
        (its `trials`, `best_trial` and `skipped` attached)."""
        from reasoning_dspy.program.lm import engine_of

        lm = lm or dspy.settings.lm
        if lm is None:
            raise ValueError("no LM: pass lm=SteeredLM(...) or dspy.configure(lm=SteeredLM(...))")
        engine = engine_of(lm)
        examples = list(valset or trainset)[: self.n_examples]
        if not examples:
            raise ValueError("the optimizer needs training examples: trainset is empty")
        if engine.sae is not None:
            feature_indices(self.features, engine.sae.d_sae)
        if self.features and "clamp" in self.modes and engine.max_activation is None:
            raise ValueError("clamp sets features to multiples of their f_max, and the LM has none: build it with "
                             "SteeredLM(..., max_activation=scores) or search modes=('add',) only")
        self.space = SearchSpace(instructions=self.pool.candidates(student, trainset), features=self.features,
                                 n_features=self.n_features if self.features else [0], modes=self.modes,
                                 add_strength=self.add_strength, clamp_strength=self.clamp_strength,
                                 layer=self.steer_layer, tokens=self.steer_tokens,
                                 skip_lines=self.steer_skip_lines)
        self.skipped = list(self.pool.skipped)
        self.trials = self._resume(self._settings(lm, examples))
        baseline = Candidate(instruction=current_instruction(student), layer=self.steer_layer)
        bar = _progress(self.n_trials, self.progress)
        bar.update(len(self.trials))
        while len(self.trials) < self.n_trials:
            k = min(self.batch_trials, self.n_trials - len(self.trials))
            params, candidates = self._propose(k, baseline)
            scores, wall = self._score(student, lm, candidates, examples)
            records = self._records(params, candidates, scores, wall)
            if self.journal is not None:
                append_journal(self.journal, records)
            self.trials += records
            bar.update(len(records))
            bar.set_postfix(best=f"{best_trial(self.trials, multi=self.multi_objective).score:.4g}")
        bar.close()
        best = best_trial(self.trials, multi=self.multi_objective)
        program = SteeredProgram(with_instruction(student, best.candidate.instruction), best.candidate.steering())
        program.trials, program.best_trial, program.skipped = list(self.trials), best, list(self.skipped)
        return program

    # -- parts ---------------------------------------------------------------------------------
    def _resume(self, settings: dict[str, Any]) -> list[TrialRecord]:
        """The journal's trials, when the same search with the same settings wrote them."""
        if self.journal is None:
            return []
        records = read_journal(self.journal)
        check_settings(self.journal, settings, resuming=bool(records))
        for r in records:
            replay = self.space.suggest(optuna.trial.FixedTrial(r.params))
            if replay != r.candidate:
                raise JournalError(f"{self.journal} was written by a different search (trial {r.number}: recorded "
                                   f"{r.candidate.label()}, this configuration gives {replay.label()}); start a new "
                                   "run")
        return records[: self.n_trials]

    def _settings(self, lm: Any, examples: list[Any]) -> dict[str, Any]:
        """What a trial's scores depend on besides its candidate: a journal is resumed only under the same."""
        import hashlib
        import json

        rows = [ex.toDict() if hasattr(ex, "toDict") else ex for ex in examples]
        digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]
        metric = self.task_metric
        metric_name = getattr(metric, "__qualname__", type(metric).__qualname__)
        kwargs = getattr(lm, "kwargs", {}) or {}
        return {"objective": self.objective, "multi_objective": self.multi_objective,
                "accuracy_margin": self.accuracy_margin, "vocabulary": self.vocabulary,
                "n_examples": len(examples), "examples": digest,
                "task_metric": f"{getattr(metric, '__module__', '')}.{metric_name}",
                "lm": str(getattr(lm, "model", type(lm).__name__)),
                "lm_kwargs": {k: v for k, v in sorted(kwargs.items()) if isinstance(v, (str, int, float, bool))},
                **({"steer_tokens": self.steer_tokens} if self.steer_tokens is not None else {}),
                **({"steer_skip_lines": self.steer_skip_lines} if self.steer_skip_lines else {})}

    def _study(self) -> optuna.Study:
        """An optuna study holding every finished trial, with a sampler seeded by the history length."""
        directions = ["maximize", "maximize", "minimize"] if self.multi_objective else ["maximize"]
        constrained = self.accuracy_margin is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():  # multivariate TPE is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=self.seed * 100_003 + len(self.trials),
                                                 n_startup_trials=self.startup_trials, multivariate=True)
        study = optuna.create_study(directions=directions, sampler=sampler)
        dists = self.space.distributions()
        floor = self.trials[0].accuracy - self.accuracy_margin if constrained and self.trials else None
        for r in self.trials:
            study.add_trial(optuna.trial.create_trial(
                values=r.objectives(self.multi_objective), params=r.params,
                distributions={name: dists[name] for name in r.params},
                constraints={"accuracy": floor - r.accuracy} if floor is not None else None))
        return study

    def _propose(self, k: int, baseline: Candidate) -> tuple[list[dict], list[Candidate]]:
        study = self._study()
        if not self.trials:
            study.enqueue_trial(self.space.params_of(baseline))
        params, candidates = [], []
        seen = {r.candidate for r in self.trials}
        for slot in range(k):
            trial, candidate = self._ask_new(study, seen, slot)
            seen.add(candidate)
            candidates.append(candidate)
            params.append(dict(trial.params))
        return params, candidates

    def _ask_new(self, study: optuna.Study, seen: set[Candidate], slot: int) -> tuple[Any, Candidate]:
        """A trial whose candidate was not scored yet, so the budget buys new information: TPE's
        proposal, or when TPE insists on a known one, a seeded random draw (a known candidate only
        once `DUPLICATE_TRIES` draws found nothing new, i.e. the space is nearly exhausted)."""
        trial = study.ask()
        candidate = self.space.suggest(trial)
        tpe = study.sampler
        for attempt in range(DUPLICATE_TRIES):
            if candidate not in seen:
                break
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            study.sampler = optuna.samplers.RandomSampler(
                seed=self.seed * 1_000_003 + len(self.trials) * 1_009 + slot * 31 + attempt)
            trial = study.ask()
            candidate = self.space.suggest(trial)
        study.sampler = tpe
        return trial, candidate

    def _score(self, student: Any, lm: Any, candidates: list[Candidate], examples: list[Any]
               ) -> tuple[list[Scores | None], float]:
        """Scores for new candidates (None for one already scored: its record is reused)."""
        seen = {r.candidate for r in self.trials}
        fresh = [c for c in dict.fromkeys(candidates) if c not in seen]
        scores, wall = evaluate_candidates(student, lm, fresh, examples, task_metric=self.task_metric,
                                           threads=self.threads, vocabulary=self.vocabulary,
                                           adapter=self.adapter) if fresh else ([], 0.0)
        by_candidate = dict(zip(fresh, scores, strict=True))
        return [by_candidate.pop(c, None) for c in candidates], wall / max(len(fresh), 1)

    def _records(self, params: list[dict], candidates: list[Candidate], scores: list[Scores | None],
                 wall: float) -> list[TrialRecord]:
        previous = {r.candidate: r for r in self.trials}
        records: list[TrialRecord] = []
        for p, c, s in zip(params, candidates, scores, strict=True):
            number = len(self.trials) + len(records)
            earlier = previous.get(c) or next((r for r in records if r.candidate == c), None)
            if s is None and earlier is not None:
                records.append(earlier.model_copy(update={"number": number, "params": p, "wall_s": 0.0,
                                                          "cached": True}))
                continue
            m = s.summary()
            records.append(TrialRecord(
                number=number, params=p, candidate=c, kind=library_kind(c.instruction), score=m[self.objective],
                activation=m["activation"], accuracy=m["accuracy"], tokens=m["tokens"], reflect=m["reflect"],
                word_rate=m["word_rate"], n=s.n, wall_s=round(wall, 3)))
        baseline = (self.trials or records)[0].accuracy
        return [r.model_copy(update={"feasible": self._feasible(r.accuracy, baseline)}) for r in records]

    def _feasible(self, accuracy: float, baseline: float) -> bool:
        return self.accuracy_margin is None or accuracy >= baseline - self.accuracy_margin - 1e-9


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="optimize", unit="trial", disable=not enabled)
