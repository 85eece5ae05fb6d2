"""`reasoner`: build the reflective corpus, fine-tune on it, evaluate and ship the adapter."""

from __future__ import annotations

from pathlib import Path

import typer

from reasoning_dspy.cli._common import config_args, fail, partial_file, sae_and_scores

reasoner_app = typer.Typer(help="smollm2-reasoner: build the reflective corpus and fine-tune on it.",
                           no_args_is_help=True)


@reasoner_app.command("train")
def reasoner_train(
    args: list[str] | None = typer.Argument(None, metavar="[RECIPE.yaml] [KEY=VALUE]...",
                                             help="a YAML recipe, then overrides such as corpus.n=200 "
                                                  "finetune.max_seconds=600"),
) -> None:
    """Write the reflective-trace corpus and LoRA-fine-tune the base model on it (resumable: run the
    same command again to continue); writes OUT/corpus.jsonl and OUT/adapter/."""
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.reasoner.recipe import ReasonerRecipe, RecipeError, train_reasoner

    recipe_file, overrides = config_args(args)
    try:
        result = train_reasoner(ReasonerRecipe.load(recipe_file, overrides))
    except (RecipeError, ModelLoadError, ValueError) as err:
        fail(str(err))
    if result.stopped != "completed":
        typer.echo(f"stopped ({result.stopped}) at step {result.steps} of {result.total_steps}; run the same "
                   "command again to continue")
    typer.echo(str(result.out))


@reasoner_app.command("eval")
def reasoner_eval(
    model: str = typer.Option("smollm2-reasoner", help="any name load_model takes"),
    n: int = typer.Option(200, min=1, help="held-out problems, answered once per style"),
    split: str = typer.Option("test", help="problem split: test or validation"),
    seed: int = typer.Option(0, help="seed of the problem list"),
    styles: list[str] = typer.Option(["terse", "neutral", "careful"], "--style", help="instruction styles (repeat)"),
    held_out: bool = typer.Option(False, help="use phrasings the reasoner never saw in training"),
    program: str = typer.Option("cot", help="cot (ChainOfThought), predict, or chat"),
    sae: Path | None = typer.Option(None, help="an SAE folder: also measure its top ReasonScore features"),
    scores: Path | None = typer.Option(None, help="ReasonScore folder for --sae (default: SAE/scores)"),
    max_tokens: int = typer.Option(256, min=8, help="tokens generated per answer"),
    batch_size: int = typer.Option(32, min=1, help="rows the engine decodes together"),
    out: Path | None = typer.Option(None, help="write the summary and every row to this JSON file; until then "
                                    "finished rows wait in OUT.partial.jsonl, so the same command continues a run"),
) -> None:
    """Held-out accuracy (overall, per family), ChatAdapter parse rate, reflection rate and reasoning
    words per instruction style, greedy, through dspy.ChainOfThought(signatures.WordProblem)."""
    from reasoning_dspy._io import atomic_write_json
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.problems import ProblemError
    from reasoning_dspy.reasoner.evaluate import evaluate_styles

    try:
        sae_model, ranking = sae_and_scores(sae, scores) if sae is not None else (None, None)
        result = evaluate_styles(model, n=n, split=split, seed=seed, styles=tuple(styles), held_out=held_out,
                                 program=program, max_tokens=max_tokens, batch_size=batch_size, sae=sae_model,
                                 scores=ranking, checkpoint=partial_file(out))
    except (ModelLoadError, ProblemError, ValueError) as err:
        fail(str(err))
    if out is not None:
        atomic_write_json(out, result)
        partial_file(out).unlink(missing_ok=True)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']}: {n} {split} problems, {program}")
    for col in ("style", "accuracy", "parsed", "reflect", "words/100 tok", "step acc", "fixed/broke", "tokens",
                "loops", "activation"):
        table.add_column(col)
    for style, m in result["summary"].items():
        act = "" if m["activation"] is None else f"{m['activation']:.3f}"
        table.add_row(style, f"{m['accuracy']:.3f}", f"{m['parse_rate']:.3f}", f"{m['reflect_rate']:.3f}",
                      f"{m['words_per_100_tokens']:.2f}", f"{m['step_accuracy']:.3f}",
                      f"{m['checks_fixed']}/{m['checks_broke']}", f"{m['mean_tokens']:.0f}", f"{m['loop_rate']:.3f}",
                      act)
    Console().print(table)


@reasoner_app.command("causal")
def reasoner_causal(
    model: str = typer.Option("smollm2-reasoner", help="any name load_model takes"),
    n: int = typer.Option(200, min=1, help="held-out chain problems, each answered with the decision forced both ways"),
    instruction: str | None = typer.Option(None, help="the one instruction both branches run under "
                                           "(default: WordProblem's own, DSPy's default)"),
    split: str = typer.Option("test", help="problem split: test or validation"),
    seed: int = typer.Option(0, help="seed of the problem list"),
    max_tokens: int = typer.Option(448, min=8, help="tokens generated per answer"),
    out: Path | None = typer.Option(None, help="write the summary and every row to this JSON file; until then "
                                    "finished rows wait in OUT.partial.jsonl, so the same command continues a run"),
) -> None:
    """Is reflection causal? Force the token that decides to reflect both ways under one instruction:
    paired accuracy difference with a bootstrap 95 % interval, and checks that fixed or broke a step."""
    from reasoning_dspy._io import atomic_write_json
    from reasoning_dspy.models import ModelLoadError, load_model
    from reasoning_dspy.problems import ProblemError, make_problems
    from reasoning_dspy.reasoner.causal import forced_decisions, summarize_forced

    if split not in ("test", "validation"):
        fail(f"split must be 'test' or 'validation' (held-out problems), got {split!r}")
    try:
        from signatures import WordProblem

        instruction = instruction or WordProblem.instructions
        problems = make_problems(n, split=split, seed=seed, families=["chains"])
        rows = forced_decisions(load_model(model), problems, instruction, max_tokens=max_tokens,
                                checkpoint=partial_file(out), progress=True)
    except (ModelLoadError, ProblemError, ValueError) as err:
        fail(str(err))
    summary = summarize_forced(rows)
    if out is not None:
        atomic_write_json(out, {"model": model, "instruction": instruction, "summary": summary, "rows": rows})
        partial_file(out).unlink(missing_ok=True)
    d = summary["reflect_minus_plain"]
    for side in ("reflect", "plain"):
        m = summary[side]
        typer.echo(f"{side:8s} accuracy {m['accuracy']:.3f}  step accuracy {m['step_accuracy']:.3f}  "
                   f"checks fixed {m['fixed']}, broke {m['broke']}")
    typer.echo(f"reflect - plain: {d['value']:+.3f} (95 % CI {d['low']:+.3f} to {d['high']:+.3f}), n={summary['n']}")


@reasoner_app.command("steps")
def reasoner_steps(
    model: str = typer.Option("smollm2", help="any name load_model takes"),
    n: int = typer.Option(48, min=1, help="steps of each kind"),
    shots: int = typer.Option(3, min=0, help="worked examples before each step"),
    kinds: list[str] = typer.Option([], "--kind", help="step kinds to probe (repeat), e.g. 'add 2+2' "
                                    "(default: every kind)"),
    out: Path | None = typer.Option(None, help="write the accuracies to this JSON file"),
) -> None:
    """Per-step arithmetic accuracy by kind of step, answered directly and by digit scratchpad (few-shot, greedy)."""
    from reasoning_dspy._io import atomic_write_json
    from reasoning_dspy.models import ModelLoadError, load_model
    from reasoning_dspy.reasoner.step_probe import check_kinds, probe_steps

    try:
        check_kinds(kinds)  # before loading the model
        result = probe_steps(load_model(model), n=n, shots=shots, kinds=tuple(kinds) or None)
    except (ModelLoadError, ValueError) as err:
        fail(str(err))
    if out is not None:
        atomic_write_json(out, result)
    for kind, acc in result.items():
        typer.echo(f"{kind:8s} direct {acc['direct']:.3f}  scratchpad {acc['scratchpad']:.3f}")


@reasoner_app.command("drills")
def reasoner_drills(
    model: str = typer.Option("smollm2-reasoner", help="any name load_model takes"),
    n: int = typer.Option(96, min=1, help="held-out drill steps, one a prompt"),
    corpus: Path | None = typer.Option(None, help="the training corpus (OUT/corpus.jsonl): its steps are skipped"),
    seed: int = typer.Option(0, help="which steps are drawn"),
    out: Path | None = typer.Option(None, help="write the counts and every missed check to this JSON file"),
) -> None:
    """How often the check of one drill step reaches the exact value, per operator (greedy)."""
    from reasoning_dspy._io import atomic_write_json
    from reasoning_dspy.models import ModelLoadError, load_model
    from reasoning_dspy.reasoner.drill_probe import MEASURES, corpus_steps, held_out_steps, probe_drills

    try:
        exclude = corpus_steps(corpus) if corpus is not None else set()
        steps = held_out_steps(n, seed, exclude)  # refuses an impossible n before loading the model
        result = {"n": n, "seed": seed, "excluded": len(exclude),
                  **probe_drills(load_model(model), steps, seed=seed)}
    except (ModelLoadError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    if out is not None:
        atomic_write_json(out, result)
    for miss in result["misses"]:
        typer.echo(f"missed {miss['step']}: {miss['text'][:200]}")
    none = "no step drawn" + (" that the corpus does not write" if exclude else "")
    for op, c in [*result["by_op"].items(), ("all", result["total"])]:
        typer.echo(f"{op:4s} " + ("  ".join(f"{m} {c[m]}/{c['n']}" for m in MEASURES) if c["n"] else none))


@reasoner_app.command("ship")
def reasoner_ship(
    adapter: Path | None = typer.Option(None, help="an adapter folder from `reasoner train` (OUT/adapter)"),
    study: Path | None = typer.Option(None, help="a finished study folder: its SAE and ReasonScore table"),
    name: str = typer.Option("smollm2-reasoner", help="the shipped model to replace (models.shipped lists them)"),
    dest: Path | None = typer.Option(None, help="target folder (default: the package's data/NAME)"),
) -> None:
    """Copy a trained adapter and/or a study's SAE and scores into the package, so that
    load_model/load_sae(NAME) use them (after checking that they load)."""
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.models.adapter_files import AdapterError
    from reasoning_dspy.models.shipped import package_folder, shipped_names
    from reasoning_dspy.reasoner.ship import ship_adapter, ship_study
    from reasoning_dspy.sae import SAEFileError

    if adapter is None and study is None:
        fail("nothing to ship: pass --adapter and/or --study")
    if name not in shipped_names():
        fail(f"--name {name!r} is not a shipped model; choose from {', '.join(shipped_names())}")
    dest = dest if dest is not None else package_folder(name)
    try:
        if adapter is not None:
            typer.echo(f"adapter -> {ship_adapter(adapter, dest)}")
        if study is not None:
            typer.echo(f"SAE and scores -> {ship_study(study, dest)}")
    except (FileNotFoundError, AdapterError, ModelLoadError, SAEFileError, ValueError) as err:
        fail(str(err))
