"""The optimizer step of an experiment: our `ReasoningOptimizer`, or DSPy's COPRO or MIPROv2 with
the same objective, the same instruction pool and the same candidate budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.config import ExperimentConfigError
from experiments.setup import Setup
from optimizers.trials import JournalError, TrialRecord, best_trial

#: The run's instruction candidates and the prompt filter's decisions, fixed when the run starts.
POOL_FILE = "pool.json"


def optimize(setup: Setup, journal: Path, *, progress: bool = True, prompt_index: Any = None
             ) -> tuple[Any, list[TrialRecord]]:
    """Run the configured optimizer; returns the compiled `SteeredProgram` (with `best_trial` and
    `skipped`, the prompt filter's decisions for the candidates it dropped) and every trial. DSPy's
    optimizers keep no journal of their own, so they rerun from the start. `prompt_index`: where the
    prompt filter retrieves (the tracking database; None: in memory)."""
    pool, prompt_filter = _pool(setup, prompt_index)
    pool = _frozen(pool, setup, journal.parent / POOL_FILE)
    try:
        compiled, trials = _run(setup, pool, journal, progress=progress)
    except JournalError as err:
        raise ExperimentConfigError(f"cannot resume: {err}. Pass --new (new=True) to start a new run") from None
    if prompt_filter is not None:  # later runs skip what this one evaluated, and reuse its scores
        from optimizers.trials import instruction_scores

        prompt_filter.record_scores(instruction_scores(trials))
    return compiled, trials


def _run(setup: Setup, pool: Any, journal: Path, *, progress: bool) -> tuple[Any, list[TrialRecord]]:
    cfg = setup.cfg
    o = cfg.optimizer
    if o.name == "reasoning":
        from optimizers import ReasoningOptimizer

        optimizer = ReasoningOptimizer(
            pool=pool, features=setup.features, n_features=cfg.steering.n_features, modes=cfg.steering.modes,
            add_strength=cfg.steering.add_strength, clamp_strength=cfg.steering.clamp_strength, steer=o.steer,
            steer_tokens=cfg.steering.tokens, steer_skip_lines=cfg.steering.skip_lines,
            top_features=len(setup.features), objective=cfg.metric.objective,
            multi_objective=cfg.metric.multi_objective, accuracy_margin=cfg.metric.accuracy_margin,
            n_trials=o.n_trials, batch_trials=o.batch_trials, seed=cfg.seed, journal=journal,
            vocabulary=cfg.vocabulary, progress=progress, adapter=cfg.program.make_adapter(), **o.settings)
        compiled = optimizer.compile(setup.program(), trainset=setup.train)
        trials = compiled.trials
    else:
        compiled, trials = _dspy_optimizer(setup, pool, journal, progress=progress)
    return compiled, trials


def _frozen(pool: Any, setup: Setup, path: Path) -> Any:
    """The pool this run searches, the same on every resume: on the first start its candidates and the
    filter's decisions are written to `path`, and later starts read them back. What other runs record
    in the prompt filter meanwhile (or a proposer's new answers) cannot change the instructions the
    journal's trials index."""
    import json

    from optimizers import InstructionPool
    from reasoning_dspy._io import atomic_write_json
    from reasoning_dspy.rag.filter import Decision

    if path.is_file():
        saved = json.loads(path.read_text())
    else:
        candidates = pool.candidates(setup.program(), setup.train)
        saved = {"candidates": candidates, "skipped": [d.model_dump(mode="json") for d in pool.skipped]}
        atomic_write_json(path, saved)
    frozen = InstructionPool(saved["candidates"], library=False, proposer=pool.proposer, n_proposals=0)
    frozen.skipped = [Decision.model_validate(d) for d in saved["skipped"]]
    return frozen


def _pool(setup: Setup, prompt_index: Any = None) -> tuple[Any, Any]:
    """The configured instruction pool, and its prompt filter (None when off)."""
    from optimizers import LIBRARY, InstructionPool

    o = setup.cfg.optimizer
    proposer = None
    if o.proposer:
        import dspy

        proposer = dspy.LM(o.proposer, api_base=o.proposer_api_base) if o.proposer_api_base else dspy.LM(o.proposer)
    prompt_filter = None
    if o.prompt_filter:
        from optimizers.instructions import current_instruction
        from reasoning_dspy.rag import MiniLMEmbedder, PromptFilter, PromptValidator

        # on-topic means: like the task instructions of the library, or the program's own
        reference = [current_instruction(setup.program())] + [x for texts in LIBRARY.values() for x in texts]
        prompt_filter = PromptFilter(MiniLMEmbedder(), validator=PromptValidator.for_model(setup.loaded),
                                     reference=reference, index=prompt_index)
    return InstructionPool(o.instructions, library=o.library, proposer=proposer, n_proposals=o.n_proposals,
                           prompt_filter=prompt_filter), prompt_filter


def _copro_breadth(n_trials: int, depth: int, available: int | None) -> int:
    """COPRO's breadth for `n_trials` candidates over `depth` rounds. It asks the proposer for
    breadth - 1 instructions in its first round and breadth in each later one: offline, never more
    than the pool's `available` instructions (a repeat would spend a trial on a known candidate)."""
    breadth = max(2, n_trials // depth)
    return breadth if available is None else min(breadth, max(2, (available + 1) // depth))


def _dspy_optimizer(setup: Setup, pool: Any, journal: Path, *, progress: bool) -> tuple[Any, list[TrialRecord]]:
    import dspy

    from optimizers import recipes
    from optimizers.instructions import current_instruction
    from optimizers.recording import RecordingMetric
    from optimizers.trials import append_journal

    cfg = setup.cfg
    o = cfg.optimizer
    student = setup.program()
    metric = RecordingMetric(cfg.metric.objective, vocabulary=cfg.vocabulary)
    prompt_model = pool.proposer  # None offline: the recipes fall back to the pool
    offline_pool = recipes.pool_lm(pool, student) if prompt_model is None else prompt_model
    available = recipes.pool_room(offline_pool, student)  # offline: the proposals each predictor can get
    lm = dspy.settings.lm
    with dspy.context(adapter=cfg.program.make_adapter()):
        if o.name == "copro":
            depth = o.settings.get("depth", 2)
            breadth = o.settings.get("breadth", _copro_breadth(o.n_trials, depth, available))
            compiled = recipes.copro(student, setup.train, lm=lm, metric=metric, prompt_model=offline_pool,
                                     breadth=breadth, depth=depth)
        else:
            num_candidates = o.settings.get("num_candidates", o.n_trials if available is None else min(o.n_trials, available))
            try:
                compiled = recipes.miprov2(student, setup.train, lm=lm, metric=metric, prompt_model=offline_pool,
                                           num_candidates=num_candidates,
                                           num_trials=o.settings.get("num_trials", o.n_trials - 1),
                                           valset=setup.train, seed=cfg.seed)
            except recipes.PoolExhaustedError as err:  # raised before any work: the settings ask too much
                raise ExperimentConfigError(f"optimizer.settings.num_candidates: {err}") from None
    trials = metric.records()
    baseline = next((r.accuracy for r in trials if r.candidate.instruction == current_instruction(student)),
                    trials[0].accuracy)
    margin = cfg.metric.accuracy_margin
    trials = [r.model_copy(update={"feasible": margin is None or r.accuracy >= baseline - margin - 1e-9})
              for r in trials]
    if journal.exists():
        journal.unlink()  # a DSPy optimizer reruns from the start: its earlier partial journal is stale
    append_journal(journal, trials)
    chosen = current_instruction(compiled.program)
    compiled.best_trial = next((r for r in trials if r.candidate.instruction == chosen), best_trial(trials))
    compiled.trials, compiled.skipped = trials, list(pool.skipped)
    return compiled, trials
