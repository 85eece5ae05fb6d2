"""The reasoner demo: a shipped model and SAE, in a few minutes on 2 CPU cores.

`smollm2-reasoner` answers held-out word problems of the families it was trained on through
`dspy.ChainOfThought`, two ways at once: under DSPy's default instruction, and under the same
instruction with the steering its study recommends (one micro-batch, each row with its own steering).
A careful instruction would make it check too, but that is what it was trained to do; the demo
shows what steering adds where the instruction does not ask for it. Its shipped SAE shows which
features fire on its reflection words, with contexts from the traces it just wrote; baseline and
steered stand side by side, with reflection counts, correctness and the steps a check caught and
fixed; a short `ReasoningOptimizer` search tunes instruction and steering together; and `report.md`
/ `report.html` put it all on one page with its plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

console = Console()

#: The demo's optimizer search: candidates (the baseline included) and training problems each. On
#: 2 cores every problem adds a batch row that decodes up to the model's whole trace budget.
OPTIMIZER_TRIALS, OPTIMIZER_PROBLEMS = 8, 2


@dataclass
class ReasonerDemoState:
    out: Path
    limit: int  # held-out problems
    model: str = "smollm2-reasoner"
    loaded: Any = None
    sae: Any = None
    scores: Any = None
    steering: Any = None
    problems: list[Any] = field(default_factory=list)
    baseline: list[dict] = field(default_factory=list)
    steered: list[dict] = field(default_factory=list)
    max_tokens: int = 192  # per trace: the shipped model's own budget (`models.shipped`)
    families: list[str] | None = None  # the problem families it was trained on (None: all)
    reports: list[Any] = field(default_factory=list)
    trials: list[Any] = field(default_factory=list)


def stage_load(state: ReasonerDemoState) -> None:
    """The model (base + shipped adapter, merged and cached on first use), its SAE, ReasonScore table
    and recommended steering."""
    from reasoning_dspy.features.reasonscore import FeatureScores
    from reasoning_dspy.models import load_model
    from reasoning_dspy.models.shipped import SHIPPED
    from reasoning_dspy.sae import load_sae
    from reasoning_dspy.sae.io import shipped_sae_folder
    from reasoning_dspy.steering import recommended_steering

    shipped = SHIPPED[state.model]
    state.max_tokens, state.families = shipped.max_tokens, list(shipped.families) if shipped.families else None
    state.loaded = load_model(state.model)
    state.sae = load_sae(state.model)
    state.scores = FeatureScores.load(shipped_sae_folder(state.model) / "scores")
    state.steering = recommended_steering(state.model)
    spec = state.loaded.model_spec
    console.print(f"model [bold]{spec.name}[/]: {spec.n_layers} layers, d_model {spec.d_model}; SAE d_sae "
                  f"{state.sae.d_sae} at layer {state.sae.cfg.hook_layer}; recommended steering: features "
                  f"{list(state.steering.features)}, {state.steering.residual_strength:g} × the residual norm")


def _lm(state: ReasonerDemoState, max_batch_size: int | None = None) -> Any:
    from reasoning_dspy.program.lm import SteeredLM

    return SteeredLM(state.loaded, sae=state.sae, max_activation=state.scores, capture=True,
                     reasoning_features=list(state.steering.features), max_tokens=state.max_tokens, cache=False,
                     max_batch_size=max_batch_size or 2 * state.limit)


def stage_traces(state: ReasonerDemoState) -> None:
    """Held-out problems answered greedily through `dspy.ChainOfThought(signatures.WordProblem)` with
    DSPy's default instruction (what an unoptimized program sends), unsteered and steered. The two
    run concurrently, so the engine decodes them together."""
    from concurrent.futures import ThreadPoolExecutor

    from reasoning_dspy.features.measures import reflects
    from reasoning_dspy.problems import make_problems
    from reasoning_dspy.program.evaluation import solve
    from reasoning_dspy.program.lm import engine_of

    state.problems = make_problems(state.limit, split="test", seed=0, families=state.families)
    lm = _lm(state)
    conditions = {"baseline": {}, "steered": {"steering": state.steering}}
    try:
        with ThreadPoolExecutor(len(conditions)) as pool:
            futures = {name: pool.submit(solve, lm, state.problems, program="cot", threads=state.limit, **kw)
                       for name, kw in conditions.items()}
            state.baseline, state.steered = (futures[name].result() for name in conditions)
    finally:
        engine_of(lm).close()
    row = state.baseline[0]
    mark = "[green]right[/]" if row["correct"] else "[red]wrong[/]"
    console.print(Panel(f"[bold]{row['question']}[/]\n\n{(row['reasoning'] or row['text']).strip()}\n\n"
                        f"answer: {row['answer']} (expected {row['expected']:g}, {mark})",
                        title="a real trace: DSPy's default instruction", expand=False))
    for name, rows in (("default instruction", state.baseline), ("default instruction, steered", state.steered)):
        console.print(f"{name}: {sum(reflects(r['text']) for r in rows)}/{len(rows)} traces reflect, "
                      f"{sum(r['correct'] for r in rows)}/{len(rows)} right, "
                      f"{sum(r['parsed'] for r in rows)}/{len(rows)} parsed by DSPy's ChatAdapter")


def stage_features(state: ReasonerDemoState) -> None:
    """The top ReasonScore features of the shipped SAE, with their max-activating contexts in the
    traces the model just wrote."""
    from rich.text import Text

    from reasoning_dspy.activations import extract_activations
    from reasoning_dspy.features.analysis import analyze_features, write_analysis
    from reasoning_dspy.features.kinds import REASONING_KINDS, feature_kind

    texts = [row["text"] for row in state.baseline + state.steered if row["text"].strip()]
    cache = extract_activations(state.loaded.model, state.loaded.tokenizer, texts, state.sae.cfg.hook_layer,
                                state.out / "activations", dtype="float32", overwrite=True, progress=False)
    state.reports = analyze_features(cache, state.sae, state.scores, tokenizer=state.loaded.tokenizer,
                                     n_features=5, n_contexts=2, progress=False)
    write_analysis(state.out / "features", state.scores, state.reports)
    table = Table(title="top features by ReasonScore (contexts from the traces above)")
    for col in ("rank", "feature", "score", "density", "kind", "top words", "max-activating context"):
        table.add_column(col, no_wrap=col in ("rank", "feature", "score", "density", "kind"))
    for r in state.reports:
        context = Text()
        if r.contexts:
            c = r.contexts[0]
            for i in range(max(c.center - 6, 0), min(c.center + 4, len(c.tokens))):
                context.append(c.tokens[i].replace("\n", " "), style="bold reverse" if i == c.center else "")
        table.add_row(str(r.rank), str(r.index), f"{r.score:+.4f}", f"{r.density:.3f}", feature_kind(r),
                      ", ".join(w for w, _ in r.top_words[:3]) or "-", context)
    console.print(table)
    kinds = [feature_kind(r) for r in state.reports]
    console.print(f"{sum(k in REASONING_KINDS for k in kinds)} of the top {len(kinds)} features are reflection "
                  f"({kinds.count('reflection')}) or verification ({kinds.count('verification')}) features: they fire "
                  "hardest on words in reflective sentences, or inside a digit-level check, carried by more than one token")


def stage_steer(state: ReasonerDemoState) -> None:
    """The default-instruction problems with and without the recommended steering: reflection words,
    checks that fixed a step, and correctness side by side; then one steered trace whose own check
    caught its own wrong step, when there is one."""
    from reasoning_dspy.demo.report import caught_trace
    from reasoning_dspy.features.measures import count_words, is_degenerate, reflects
    from reasoning_dspy.problems.steps import step_measures

    table = Table(title=f"baseline vs steered (features {list(state.steering.features)}, "
                        f"{state.steering.residual_strength:g} × the residual norm)")
    for col in ("question", "expected", "baseline", "words", "steered", "words", "fixed"):
        table.add_column(col, overflow="fold")
    for b, s in zip(state.baseline, state.steered, strict=True):
        table.add_row(b["question"], f"{b['expected']:g}", _answer(b), str(count_words(b["text"])), _answer(s),
                      str(count_words(s["text"])), str(step_measures(s["text"])["fixed"]))
    console.print(table)
    for name, rows in (("baseline", state.baseline), ("steered", state.steered)):
        n = len(rows)
        console.print(f"{name}: {sum(reflects(r['text']) for r in rows)}/{n} traces reflect, "
                      f"{sum(count_words(r['text']) for r in rows)} reasoning words, "
                      f"{sum(step_measures(r['text'])['fixed'] for r in rows)} steps fixed by a check, "
                      f"{sum(r['correct'] for r in rows)}/{n} right, {sum(is_degenerate(r['text']) for r in rows)} loops")
    caught = caught_trace(state.steered)
    if caught is not None:
        console.print(Panel((caught["reasoning"] or caught["text"]).strip(), expand=False,
                            title="a steered trace whose check caught its own wrong step"))
    else:
        console.print("no steered trace caught a wrong step of its own on these problems")


def stage_optimize(state: ReasonerDemoState) -> None:
    """A short `ReasoningOptimizer` search over instructions and steering of the top features,
    scored on training problems (never the held-out ones above); every trial is kept."""
    import dspy

    from optimizers import ReasoningOptimizer
    from reasoning_dspy.problems import as_dspy_examples, make_problems
    from reasoning_dspy.program.adapter import LenientChatAdapter
    from reasoning_dspy.program.evaluation import make_program
    from reasoning_dspy.program.lm import engine_of

    train = as_dspy_examples(make_problems(OPTIMIZER_PROBLEMS, split="train", seed=0, families=state.families))
    # every candidate in one batch: on 2 cores one long batch beats two that each wait for their longest trace;
    # steering candidates use the recommended steering's token window
    optimizer = ReasoningOptimizer(features=state.scores, top_features=3, n_trials=OPTIMIZER_TRIALS,
                                   batch_trials=OPTIMIZER_TRIALS, steer_tokens=state.steering.tokens,
                                   steer_skip_lines=state.steering.skip_lines,
                                   accuracy_margin=None, seed=0, adapter=LenientChatAdapter())
    lm = _lm(state, max_batch_size=OPTIMIZER_TRIALS * OPTIMIZER_PROBLEMS)
    try:
        with dspy.context(lm=lm):
            compiled = optimizer.compile(make_program("cot"), trainset=train)
    finally:
        engine_of(lm).close()
    state.trials = compiled.trials
    table = Table(title=f"optimizer trials ({OPTIMIZER_PROBLEMS} training problems each; objective: reasoning activation)")
    for col in ("trial", "instruction", "steering", "activation", "reflect", "accuracy"):
        table.add_column(col, overflow="fold")
    for t in state.trials:
        table.add_row(str(t.number), t.candidate.instruction, t.candidate.steering_label(), f"{t.score:.3f}",
                      f"{t.reflect:.0%}", f"{t.accuracy:.0%}")
    console.print(table)
    best = compiled.best_trial
    console.print(f"best: trial {best.number}, \"{best.candidate.instruction}\" with {best.candidate.steering_label()}: "
                  f"activation {best.score:.3f} against {state.trials[0].score:.3f} for the unoptimized program")


def stage_report(state: ReasonerDemoState) -> None:
    """`report.md` and a self-contained `report.html` with every plot."""
    from reasoning_dspy.demo.report import write_demo_report

    md, page = write_demo_report(state)
    console.print(f"report: [bold]{page}[/] (open it in a browser; Markdown: {md})")


def _answer(row: dict) -> str:
    return f"{row['answer']} {'✓' if row['correct'] else '✗'}"


STAGES = [stage_load, stage_traces, stage_features, stage_steer, stage_optimize, stage_report]
