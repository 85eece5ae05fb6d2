"""`reasoning-dspy` command line. Heavy imports happen inside each command, so `--help` is instant."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find, score and steer a language model's reasoning features with sparse autoencoders.",
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _validation_message(err) -> str:
    """A pydantic `ValidationError` as one line: `field: message (got value); ...`."""
    parts = []
    for e in err.errors():
        where = ".".join(map(str, e["loc"])) + ": " if e["loc"] else ""
        got = f" (got {e['input']!r})" if e["loc"] and e["type"] != "value_error" else ""
        parts.append(f"{where}{e['msg']}{got}".replace("Value error, ", ""))
    return "; ".join(parts)


def _check_folder(path: Path, flag: str) -> None:
    """Fail when an output that must be a folder is an existing file, or cannot be written."""
    if path.exists() and not path.is_dir():
        _fail(f"{flag} {str(path)!r} is an existing file; {flag} must be a folder")
    _check_writable(path, flag)


def _check_writable(folder: Path, flag: str) -> None:
    """Fail before the work, naming the folder, when the output cannot be written there."""
    from reasoning_dspy._io import NotWritableError, check_writable

    try:
        check_writable(folder, f"{flag} folder")
    except NotWritableError as err:
        _fail(str(err))


@app.command()
def extract(
    model: str = typer.Option("TinyLlama/TinyLlama-1.1B-Chat-v1.0", help="HF id, local folder, .gguf file, smollm2 or tiny-random"),
    layer: int = typer.Option(..., help="decoder layer whose output to record (0-based, negative from end)"),
    prompts: str = typer.Option("bundled", help="prompts file (.jsonl/.json/.csv/.parquet/.txt), dataset id, or 'bundled'"),
    out: Path = typer.Option(..., help="cache folder (resumes if it holds a partial run)"),
    column: str | None = typer.Option(None, help="text column of the prompts file"),
    limit: int | None = typer.Option(None, help="use only the first N prompts"),
    batch_size: int = typer.Option(16, help="prompts per forward pass"),
    max_length: int = typer.Option(256, help="truncate prompts to this many tokens"),
    dtype: str = typer.Option("bfloat16", help="storage dtype: float32, float16 or bfloat16"),
    model_dtype: str | None = typer.Option(None, help="dtype to run the model in (default: checkpoint's)"),
    device: str = typer.Option("cpu", help="torch device"),
    shard_tokens: int = typer.Option(65536, help="tokens per shard file"),
    overwrite: bool = typer.Option(False, help="discard an existing cache in OUT"),
    shard_prompts: int | None = typer.Option(None, help="also end a shard every N prompts (a multiple of "
                                             "--batch-size): the chunks that torchrun processes take turns on "
                                             "(default there: 64 batches, fewer if a process would get < 4)"),
    streaming: bool = typer.Option(False, help="read PROMPTS lazily with `datasets` streaming, for corpora "
                                   "larger than memory or disk"),
) -> None:
    """Extract residual-stream activations at LAYER into an on-disk cache. Under `torchrun
    --nproc-per-node N` the N processes share the prompts (docs/scale-out.md)."""
    from reasoning_dspy.activations import CacheError, extract_activations
    from reasoning_dspy.distributed import DistributedError, StreamedPrompts, rank_device, torchrun_group
    from reasoning_dspy.models import ModelLoadError, load_model
    from reasoning_dspy.prompts import PromptError, load_prompts

    _check_folder(out, "--out")
    try:
        with torchrun_group(device) as ranks:
            texts = (StreamedPrompts(prompts, column=column, limit=limit) if streaming
                     else load_prompts(prompts, column=column, limit=limit))
            loaded = load_model(model, dtype=model_dtype, device=rank_device(device, ranks))
            cache = extract_activations(
                loaded.model, loaded.tokenizer, texts, layer, out, model_name=loaded.model_spec.name,
                batch_size=batch_size, max_length=max_length, dtype=dtype, shard_tokens=shard_tokens,
                overwrite=overwrite, shard_prompts=shard_prompts,
            )
    except (PromptError, ModelLoadError, CacheError, DistributedError, IndexError, ValueError) as err:
        _fail(str(err))
    if ranks.is_main:
        typer.echo(repr(cache))


def _train_sae(options: dict) -> None:
    """Train a sparse autoencoder on one or more activation caches (repeat --cache); writes the SAE
    (SAELens layout), a resumable checkpoint, train_log.jsonl and loss_curve.png to OUT. The FVU
    printed first is measured on held-out prompts (--val-fraction). Under `torchrun --nproc-per-node N`
    the N processes share each batch and train one SAE (docs/scale-out.md)."""
    from pydantic import ValidationError

    from reasoning_dspy.activations import CacheError
    from reasoning_dspy.distributed import DistributedError, rank_device, torchrun_group
    from reasoning_dspy.sae import SAETrainConfig, TrainingDivergedError, train_sae

    try:
        cfg = SAETrainConfig(**options)
    except ValidationError as err:
        _fail(_validation_message(err))
    if cfg.out is not None:
        _check_folder(Path(cfg.out), "--out")
    try:
        with torchrun_group(cfg.device) as ranks:  # under torchrun: one process per device, one SAE
            result = train_sae(cfg.model_copy(update={"device": rank_device(cfg.device, ranks)}))
    except (CacheError, DistributedError, TrainingDivergedError, ValueError) as err:
        _fail(str(err))
    if not ranks.is_main:
        return
    ev, train = result.eval, result.eval_train
    where = "held-out" if result.eval_val is not None else "training tokens, none held out"
    typer.echo(f"FVU {ev.fvu:.4f} ({where}; train {train.fvu:.4f})  L0 {ev.l0:.1f}  "
               f"dead {100 * ev.dead_fraction:.1f}%  ({result.steps} steps, "
               f"{result.tokens_per_second:,.0f} tokens/s) -> {result.out}")
    if result.stopped != "completed":
        budget = "--max-seconds" if result.stopped == "budget_time" else "--max-tokens"
        typer.echo(f"stopped: {result.stopped} ({budget}) at step {result.steps} of {result.total_steps}; "
                   "re-run with --resume to continue the schedule")


def _register_train_sae() -> None:
    from reasoning_dspy.sae.train_config import typer_command  # pydantic only: keeps --help instant

    app.command("train-sae")(typer_command(_train_sae, required=("cache", "out")))


_register_train_sae()


@app.command()
def score(
    cache: Path = typer.Option(..., help="activation cache folder (from `extract`)"),
    sae: Path = typer.Option(..., help="SAE folder (cfg.json + sae_weights.safetensors)"),
    out: Path = typer.Option(..., help="folder for scores.safetensors, features.json/csv, analysis and plots"),
    vocab: Path | None = typer.Option(
        None, help="vocabulary file (.txt one word per line, or .json: a list of spellings like the paper's "
                   "reason_tokens.json); default: the paper's 34 spellings of 10 words"),
    match: str | None = typer.Option(
        None, help="how words are found: 'exact' (each listed spelling's token ids, the paper's script) or "
                   "'words' (whole words in the decoded text, any case or tokenization); default: exact, or "
                   "what the --vocab file implies (.txt: words)"),
    entropy_norm: str = typer.Option(
        "all", help="entropy normaliser log|R|: 'all' (every listed group, the paper's) or 'seen' (only the "
                    "groups found in the data)"),
    alpha: float = typer.Option(0.7, help="entropy exponent α"),
    quantile: float = typer.Option(0.997, help="select features at or above this score quantile"),
    top_n: int | None = typer.Option(None, help="select the N best features instead of a quantile"),
    left: int = typer.Option(1, help="window tokens before each reasoning word"),
    right: int = typer.Option(2, help="window tokens after each reasoning word"),
    n_features: int = typer.Option(10, help="features to analyze (max-activating contexts, top tokens)"),
    n_contexts: int = typer.Option(5, help="max-activating contexts per analyzed feature"),
    batch_size: int = typer.Option(4096, help="tokens per SAE forward"),
    device: str = typer.Option("cpu", help="torch device"),
) -> None:
    """Rank SAE features by ReasonScore over a cache and write the scores and feature analysis."""
    from pydantic import ValidationError

    from reasoning_dspy.activations import ActivationCache, CacheError
    from reasoning_dspy.features.analysis import analyze_features, write_analysis
    from reasoning_dspy.features.reasonscore import score_features
    from reasoning_dspy.features.vocab import Vocabulary
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.sae import load_sae

    _check_folder(out, "--out")
    if top_n is not None and top_n < 1:
        _fail(f"--top-n must be at least 1, got {top_n}")
    if n_features < 0:
        _fail(f"--n-features must be >= 0 (features to analyze), got {n_features}")
    if n_contexts < 1:
        _fail(f"--n-contexts must be at least 1, got {n_contexts}")
    try:
        acts = ActivationCache(cache)
        model = load_sae(sae, device=device)
        if top_n is not None and top_n > model.d_sae:
            _fail(f"--top-n {top_n} exceeds the SAE's {model.d_sae} features; pass at most {model.d_sae}")
        words = Vocabulary.from_file(vocab, match=match) if vocab else Vocabulary.default(match or "exact")
        tokenizer = acts.load_tokenizer()
        scores = score_features(acts, model, words, tokenizer=tokenizer, alpha=alpha, left=left, right=right,
                                quantile=quantile, top_n=top_n, batch_size=batch_size, device=device,
                                entropy_norm=entropy_norm)
        if int(scores.group_token_counts.sum()) == 0:
            _fail(f"no word of the vocabulary ({', '.join(scores.groups[:10])}) occurs in the {acts.n_tokens} "
                  f"tokens of the cache at {str(cache)!r}, so every ReasonScore would be meaningless; use a "
                  "vocabulary whose words occur in these texts, or extract texts that contain them "
                  "(e.g. --prompts bundled-traces)")
        scores.save(out)
        reports = analyze_features(acts, model, scores, tokenizer=tokenizer, n_features=n_features,
                                   n_contexts=n_contexts, batch_size=batch_size, device=device)
        write_analysis(out, scores, reports)
    except ValidationError as err:
        _fail(_validation_message(err))
    except (CacheError, FileNotFoundError, ModelLoadError, ValueError) as err:
        _fail(str(err))
    typer.echo(f"vocabulary: {len(scores.groups)} groups, {words.mode} matching; entropy over log|R|, "
               f"|R| = {scores.settings['entropy_groups']} ({entropy_norm})")
    typer.echo(f"{len(scores.selected)} of {scores.d_sae} features selected (ReasonScore >= {scores.threshold:.4g})")
    for r in reports:
        words_ = ", ".join(w for w, _ in r.top_words[:3]) or "-"
        typer.echo(f"  #{r.rank:<3} feature {r.index:<6} score {r.score:+.4g}  max {r.max_activation:.3g}  "
                   f"density {r.density:.3f}  words: {words_}")
    typer.echo(f"wrote {out}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="folder for the demo's outputs"),
    model: str = typer.Option("smollm2-reasoner", help="smollm2-reasoner (shipped SAE: traces, features, "
                              "steering), or any other model for the from-scratch pipeline (tiny-random: a "
                              "one-minute smoke run; TinyLlama/TinyLlama-1.1B-Chat-v1.0 with the hub)"),
    limit: int | None = typer.Option(None, help="held-out problems for smollm2-reasoner (default 8); texts for "
                                     "the pipeline, half prompts, half reasoning traces (default 128)"),
) -> None:
    """Run the offline end-to-end demo (no network needed)."""
    from reasoning_dspy.demo import run_demo
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.sae.io import SAEFileError
    from reasoning_dspy.steering import SteeringError

    try:
        run_demo(out, limit=limit, model=model)
    except (ModelLoadError, SAEFileError, SteeringError, ValueError) as err:
        _fail(str(err))


@app.command()
def study(
    args: list[str] | None = typer.Argument(None, metavar="[CONFIG.yaml] [KEY=VALUE]...",
                                             help="a YAML study config, then overrides such as n_test=50 sae.k=16"),
) -> None:
    """Galichin et al.'s experiment on any model and SAE: traces, SAE, ReasonScore, steering against
    matched random features and negative strength; resumable; writes OUT/report.md."""
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.study import StudyConfig, StudyConfigError, run_study

    config_file, overrides = _config_args(args)
    try:
        cfg = StudyConfig.load(config_file, overrides)
        report = run_study(cfg)
    except (StudyConfigError, ModelLoadError, ValueError) as err:
        _fail(str(err))
    typer.echo(str(report))


@app.command()
def optimize(
    args: list[str] | None = typer.Argument(None, metavar="CONFIG.yaml [KEY=VALUE]...",
                                             help="an experiment config, then overrides such as optimizer.n_trials=8"),
    new: bool = typer.Option(False, "--new", help="start a new run instead of resuming the latest unfinished one"),
) -> None:
    """Tune a DSPy program's instruction and steering for reasoning activation (ReasoningOptimizer,
    COPRO or MIPROv2); writes OUT/NAME/TIMESTAMP/ with trials.jsonl, program.json and report.md.
    Re-running the same config resumes an interrupted run."""
    from experiments import ExperimentConfigError, load_experiment, run_experiment
    from reasoning_dspy.models import ModelLoadError

    config_file, overrides = _config_args(args)
    if config_file is None:
        _fail("name an experiment config, e.g. experiments/configs/optimize-tiny.yaml")
    try:
        folder = run_experiment(load_experiment(config_file, overrides), new=new)
    except (ExperimentConfigError, ModelLoadError) as err:
        _fail(str(err))
    typer.echo(str(folder / "report.md"))


db_app = typer.Typer(help="A local PostgreSQL with pgvector for run tracking (127.0.0.1 only, data in runs/postgres).",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")
_DB_ROOT = typer.Option(Path("runs/postgres"), "--root", help="folder of the server's data, log and port")


@db_app.command("start")
def db_start(
    root: Path = _DB_ROOT,
    port: int | None = typer.Option(None, help="TCP port on 127.0.0.1 (default: the one used before, else a free one)"),
) -> None:
    """Start the local PostgreSQL (created on first use) and print its URL, e.g.
    `export DATABASE_URL=$(reasoning-dspy db start)`."""
    from reasoning_dspy.tracking import LocalPostgres, TrackingError

    try:
        url = LocalPostgres(root).start(port)
    except TrackingError as err:
        _fail(str(err))
    typer.echo(url)


@db_app.command("stop")
def db_stop(root: Path = _DB_ROOT) -> None:
    """Stop the local PostgreSQL (its data stays in ROOT/data)."""
    from reasoning_dspy.tracking import LocalPostgres, TrackingError

    try:
        stopped = LocalPostgres(root).stop()
    except TrackingError as err:
        _fail(str(err))
    typer.echo("stopped" if stopped else f"not running ({root})")


@db_app.command("status")
def db_status(root: Path = _DB_ROOT) -> None:
    """Whether the local PostgreSQL runs, with its URL and data folder; exit code 1 when it does not."""
    from reasoning_dspy.tracking import LocalPostgres

    status = LocalPostgres(root).status()
    if status.running:
        typer.echo(f"running  pid {status.pid}  {status.url}  data {status.data}")
        return
    typer.echo(f"not running  data {status.data}")
    raise typer.Exit(code=1)


@db_app.command("replay")
def db_replay(
    journals: list[Path] = typer.Argument(..., help="tracking journals (e.g. runs/NAME/TIMESTAMP/tracking.jsonl)"),
    database_url: str | None = typer.Option(None, help="target database (default: $DATABASE_URL, else "
                                            "runs/tracking.sqlite)"),
    embedding_dim: int = typer.Option(384, help="prompt embedding length the journal was written with"),
    activation_dim: int = typer.Option(64, help="feature-activation vector length the journal was written with"),
) -> None:
    """Write the records of journals that the database does not hold yet (safe to repeat: each
    record is stored once)."""
    from reasoning_dspy.tracking import Tracker, TrackingError

    for journal in journals:
        if not journal.is_file():
            _fail(f"no journal at {str(journal)!r}")
        try:
            tracker = Tracker.open(journal, database_url, embedding_dim=embedding_dim, activation_dim=activation_dim)
        except TrackingError as err:
            _fail(str(err))
        left = tracker.pending
        tracker.close()
        if left:
            _fail(f"{journal}: {left} records could not be written; is the database running?")
        typer.echo(f"{journal}: up to date in {tracker.store.where}")


reasoner_app = typer.Typer(help="smollm2-reasoner: build the reflective corpus and fine-tune on it.",
                           no_args_is_help=True)
app.add_typer(reasoner_app, name="reasoner")


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

    recipe_file, overrides = _config_args(args)
    try:
        result = train_reasoner(ReasonerRecipe.load(recipe_file, overrides))
    except (RecipeError, ModelLoadError, ValueError) as err:
        _fail(str(err))
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
    out: Path | None = typer.Option(None, help="write the summary and every row to this JSON file"),
) -> None:
    """Held-out accuracy (overall, per family), ChatAdapter parse rate, reflection rate and reasoning
    words per instruction style, greedy, through dspy.ChainOfThought("question -> answer")."""
    from reasoning_dspy._io import atomic_write_json
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.problems import ProblemError
    from reasoning_dspy.reasoner.evaluate import evaluate_styles

    try:
        sae_model, ranking = _sae_and_scores(sae, scores) if sae is not None else (None, None)
        result = evaluate_styles(model, n=n, split=split, seed=seed, styles=tuple(styles), held_out=held_out,
                                 program=program, max_tokens=max_tokens, batch_size=batch_size, sae=sae_model,
                                 scores=ranking)
    except (ModelLoadError, ProblemError, ValueError) as err:
        _fail(str(err))
    if out is not None:
        atomic_write_json(out, result)
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
    out: Path | None = typer.Option(None, help="write the summary and every row to this JSON file"),
) -> None:
    """Is reflection causal? Force the token that decides to reflect both ways under one instruction:
    paired accuracy difference with a bootstrap 95 % interval, and checks that fixed or broke a step."""
    from reasoning_dspy._io import atomic_write_json
    from reasoning_dspy.models import ModelLoadError, load_model
    from reasoning_dspy.problems import ProblemError, make_problems
    from reasoning_dspy.reasoner.causal import forced_decisions, summarize_forced

    if split not in ("test", "validation"):
        _fail(f"split must be 'test' or 'validation' (held-out problems), got {split!r}")
    try:
        from signatures import WordProblem

        instruction = instruction or WordProblem.instructions
        problems = make_problems(n, split=split, seed=seed, families=["chains"])
        rows = forced_decisions(load_model(model), problems, instruction, max_tokens=max_tokens)
    except (ModelLoadError, ProblemError, ValueError) as err:
        _fail(str(err))
    summary = summarize_forced(rows)
    if out is not None:
        atomic_write_json(out, {"model": model, "instruction": instruction, "summary": summary, "rows": rows})
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
    out: Path | None = typer.Option(None, help="write the accuracies to this JSON file"),
) -> None:
    """Per-step arithmetic accuracy by kind of step, answered directly and by digit scratchpad (few-shot, greedy)."""
    from reasoning_dspy._io import atomic_write_json
    from reasoning_dspy.models import ModelLoadError, load_model
    from reasoning_dspy.reasoner.step_probe import probe_steps

    try:
        result = probe_steps(load_model(model), n=n, shots=shots)
    except (ModelLoadError, ValueError) as err:
        _fail(str(err))
    if out is not None:
        atomic_write_json(out, result)
    for kind, acc in result.items():
        typer.echo(f"{kind:8s} direct {acc['direct']:.3f}  scratchpad {acc['scratchpad']:.3f}")


@reasoner_app.command("ship")
def reasoner_ship(
    adapter: Path | None = typer.Option(None, help="an adapter folder from `reasoner train` (OUT/adapter)"),
    study: Path | None = typer.Option(None, help="a finished study folder: its SAE and ReasonScore table"),
    dest: Path | None = typer.Option(None, help="target folder (default: the package's data/smollm2-reasoner)"),
) -> None:
    """Copy a trained adapter and/or a study's SAE and scores into the package, so that
    load_model/load_sae("smollm2-reasoner") use them (after checking that they load)."""
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.models.adapter_files import AdapterError
    from reasoning_dspy.reasoner.ship import ship_adapter, ship_study
    from reasoning_dspy.sae import SAEFileError

    if adapter is None and study is None:
        _fail("nothing to ship: pass --adapter and/or --study")
    try:
        if adapter is not None:
            typer.echo(f"adapter -> {ship_adapter(adapter, dest)}")
        if study is not None:
            typer.echo(f"SAE and scores -> {ship_study(study, dest)}")
    except (FileNotFoundError, AdapterError, ModelLoadError, SAEFileError, ValueError) as err:
        _fail(str(err))


def _sae_and_scores(sae: Path, scores: Path | None) -> tuple[Any, Any]:
    from reasoning_dspy.features.reasonscore import FeatureScores
    from reasoning_dspy.sae import load_sae

    folder = scores if scores is not None else sae / "scores"
    if not (folder / "features.json").is_file():
        raise ValueError(f"no ReasonScore table in {str(folder)!r}; pass --scores (the output of `reasoning-dspy score`)")
    return load_sae(sae), FeatureScores.load(folder)


def _config_args(args: list[str] | None) -> tuple[str | None, list[str]]:
    """Split `[CONFIG.yaml] [KEY=VALUE]...` into the file (or None) and the overrides."""
    args = list(args or [])
    files = [a for a in args if "=" not in a]
    if len(files) > 1:
        _fail(f"expected one config file and key=value overrides, got several files: {files}")
    return (files[0] if files else None), [a for a in args if "=" in a]


@app.command()
def steer(
    sae: Path = typer.Option(..., help="SAE folder (cfg.json + sae_weights.safetensors)"),
    prompt: list[str] | None = typer.Option(None, "--prompt", help="a prompt to answer (repeatable)"),
    prompts: str | None = typer.Option(None, help="prompts file (.jsonl/.json/.csv/.parquet/.txt) or 'bundled'"),
    model: str | None = typer.Option(None, help="HF id, local folder, or tiny-random (default: the model the "
                                     "SAE records in cfg.json, else TinyLlama/TinyLlama-1.1B-Chat-v1.0)"),
    scores: Path | None = typer.Option(None, help="ReasonScore folder (from `score`): f_max and the feature ranking"),
    max_activation: Path | None = typer.Option(None, help="f_max: a ReasonScore folder or scores.safetensors "
                                               "(default: the one in --scores)"),
    feature: list[int] | None = typer.Option(None, "--feature", help="SAE feature index to steer (repeatable)"),
    top: int | None = typer.Option(None, help="steer the N best features by ReasonScore (needs --scores)"),
    strength: float | None = typer.Option(
        None, help="γ per feature: a multiple of its f_max (--units fmax, default 4) or of the residual norm "
                   "(--units residual, default 0.2)"),
    units: str = typer.Option("fmax", help="fmax: γ·f_max·W_dec,i (the paper's); residual: each token moves by "
                              "γ·√(features)·‖x_t‖ along Σ W_dec,i, needs no f_max; 0.05-0.5 suits small models"),
    mode: str = typer.Option("add", help="add: x + γ·f_max·W_dec,i; clamp: set f_i = γ·f_max"),
    layer: int | None = typer.Option(None, help="decoder layer to steer, for an SAE that records none"),
    max_tokens: int = typer.Option(48, help="tokens to generate per answer"),
    temperature: float = typer.Option(0.0, help="sampling temperature (0 = greedy)"),
    seed: int = typer.Option(0, help="sampling seed (both runs start from it)"),
    device: str = typer.Option("cpu", help="torch device"),
    dtype: str | None = typer.Option(None, help="dtype to run the model in (default: checkpoint's)"),
    out: Path | None = typer.Option(None, help="also write one JSON line per prompt to this .jsonl file"),
    track: bool = typer.Option(False, help="record the answers, steering and feature activations in the tracking "
                               "database ($DATABASE_URL, else runs/tracking.sqlite; see docs/tracking.md)"),
    database_url: str | None = typer.Option(None, help="with --track: the database (default: $DATABASE_URL, "
                                            "else runs/tracking.sqlite)"),
) -> None:
    """Answer prompts with and without steering SAE features, side by side."""
    import math

    from pydantic import ValidationError
    from safetensors import SafetensorError

    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.prompts import PromptError, load_prompts
    from reasoning_dspy.sae import load_sae
    from reasoning_dspy.steering import SteeringSpec, load_max_activation

    texts = list(prompt or [])
    if any(not t.strip() for t in texts):
        _fail("--prompt is blank; give the text to answer")
    if mode not in ("add", "clamp"):
        _fail(f"--mode must be add or clamp, got {mode!r}")
    if units not in ("fmax", "residual"):
        _fail(f"--units must be fmax or residual, got {units!r}")
    if units == "residual" and mode == "clamp":
        _fail("--mode clamp sets feature activations, which are in f_max units: use --units fmax with clamp")
    if strength is None:
        strength = 4.0 if units == "fmax" else 0.2
    if max_tokens < 1:
        _fail(f"--max-tokens must be at least 1, got {max_tokens}")
    if not math.isfinite(temperature) or temperature < 0:
        _fail(f"--temperature must be a finite number >= 0, got {temperature}")
    if feature and top is not None:
        _fail("give either --feature (repeatable) or --top N, not both")
    if not feature and top is None:
        _fail("choose the features to steer: --feature INDEX (repeatable), or --top N with --scores")
    if top is not None and top < 1:
        _fail(f"--top must be at least 1, got {top}")
    if top is not None and scores is None:
        _fail("--top ranks features by ReasonScore: pass the ReasonScore folder with --scores")
    if units == "fmax" and scores is None and max_activation is None:
        _fail("steering scales each feature by its max activation f_max: pass --scores (a ReasonScore folder "
              "from `reasoning-dspy score`) or --max-activation")
    if out is not None and out.is_dir():
        _fail(f"--out {str(out)!r} is a folder; --out takes a .jsonl file path")
    if out is not None:
        _check_writable(out.parent, "--out")
    tracker = _steer_tracker(out, database_url) if track else None
    try:
        if prompts is not None:
            texts += load_prompts(prompts)
        if not texts:
            _fail("no prompts: give --prompt TEXT (repeatable) and/or --prompts FILE")
        sae_model = load_sae(sae, device=device)
        hook_layer = sae_model.cfg.hook_layer
        if hook_layer is None and layer is None:
            _fail(f"the SAE at {str(sae)!r} records no hook_layer: pass --layer, the layer it was trained on")
        if hook_layer is not None and layer is not None and layer != hook_layer:
            _fail(f"the SAE at {str(sae)!r} was trained on layer {hook_layer}, but --layer is {layer}; "
                  "its feature directions only mean something at that layer (drop --layer)")
        if hook_layer is None:
            sae_model.cfg = sae_model.cfg.model_copy(update={"hook_layer": layer})
        d_sae = sae_model.d_sae
        ranking = None
        if scores is not None:
            from reasoning_dspy.features.reasonscore import FeatureScores

            ranking = FeatureScores.load(scores)
            if ranking.d_sae != d_sae:
                _fail(f"the scores in {str(scores)!r} cover {ranking.d_sae} features but the SAE at {str(sae)!r} "
                      f"has d_sae={d_sae}; pass the scores computed for this SAE")
        source = max_activation if max_activation is not None else ranking
        fmax = load_max_activation(source, d_sae) if source is not None else None
        if top is not None and top > d_sae:
            _fail(f"--top {top} exceeds the SAE's {d_sae} features")
        features = ranking.top(top) if top is not None else list(dict.fromkeys(feature))
        bad = [f for f in features if not 0 <= f < d_sae]
        if bad:
            _fail(f"feature index {bad[0]} is out of range: the SAE at {str(sae)!r} has {d_sae} features "
                  f"(0..{d_sae - 1})")
        try:
            spec = SteeringSpec.from_features(features, strength, mode=mode, layer=sae_model.cfg.hook_layer,
                                              units=units)
        except ValidationError as err:
            _fail(f"invalid steering: {_validation_message(err)}")
        model = model or sae_model.cfg.model_name or "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
        rows = _steer_rows(model, sae_model, fmax, features, spec, texts, dtype=dtype, device=device,
                           max_tokens=max_tokens, temperature=temperature, seed=seed)
    except (PromptError, ModelLoadError, FileNotFoundError, SafetensorError, ValueError) as err:
        _fail(str(err))
    except KeyError as err:
        _fail(str(err.args[0]))
    _print_steering(rows, spec, features)
    if out is not None:
        import json

        from reasoning_dspy._io import atomic_write_text

        meta = {"model": model, "sae": str(sae), "steering": spec.model_dump(mode="json")}
        atomic_write_text(out, "".join(json.dumps({**row, **meta}) + "\n" for row in rows))
        typer.echo(f"wrote {len(rows)} rows to {out}")
    if tracker is not None:
        _track_steering(tracker, rows, spec, {"model": model, "sae": str(sae), "features": features})


def _steer_tracker(out: Path | None, database_url: str | None) -> Any:
    """The tracker of one `steer` call; its journal sits beside --out (else under runs/steer/)."""
    import time

    from reasoning_dspy.tracking import Tracker, TrackingError

    journal = out.with_name(out.stem + ".tracking.jsonl") if out is not None else \
        Path("runs") / "steer" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.tracking.jsonl"
    try:
        return Tracker.open(journal, database_url)
    except TrackingError as err:
        _fail(str(err))


def _track_steering(tracker: Any, rows: list[dict], spec, config: dict) -> None:
    """Baseline and steered answer of each prompt as generations, with their strongest features."""
    with tracker:
        run = tracker.start_run("steer", kind="steer", config={**config, "steering": spec.model_dump(mode="json")})
        for i, row in enumerate(rows):
            for arm in ("baseline", "steered"):
                report = row[f"{arm}_activation"]
                tracker.log_generation(
                    run, row["prompt"], row[arm], label=arm, index=i,
                    steering=spec.model_dump(mode="json") if arm == "steered" else None,
                    reasoning_activation=report["features_mean"], tokens=report["n_tokens"],
                    features={f: v for f, v in report["top_features"]},
                    extra={"perturbation": row["steered_perturbation"]} if arm == "steered" else {})
        tracker.finish_run(run)
    typer.echo(f"tracked {2 * len(rows)} answers in {tracker.store.where} (journal {tracker.journal.path})")


def _steer_rows(model: str, sae, fmax, features: list[int], spec, texts: list[str], *, dtype: str | None,
                device: str, max_tokens: int, temperature: float, seed: int) -> list[dict]:
    """Baseline and steered answers of each prompt, each with its reasoning activation."""
    import torch

    from reasoning_dspy.engine import SteeredEngine
    from reasoning_dspy.models import load_model

    loaded = load_model(model, dtype=dtype, device=device)
    engine = SteeredEngine(loaded.model, loaded.tokenizer, sae=sae, max_activation=fmax, steering=spec,
                           capture=True, reasoning_features=features, max_tokens=max_tokens,
                           temperature=temperature)
    try:
        torch.manual_seed(seed)
        baseline = engine.generate(texts, steering=None)
        torch.manual_seed(seed)
        steered = engine.generate(texts, steering=spec)
    finally:
        engine.close()
    return [{"prompt": text, "baseline": b.text, "steered": s.text,
             "baseline_activation": b.report.to_dict(), "steered_activation": s.report.to_dict(),
             "steered_perturbation": s.perturbation.to_dict() if s.perturbation is not None else None}
            for text, b, s in zip(texts, baseline, steered, strict=True)]


def _print_steering(rows: list[dict], spec, features: list[int]) -> None:
    from rich.console import Console
    from rich.table import Table

    strengths = sorted(set(spec.features.values()))
    gamma = strengths[0] if len(strengths) == 1 else strengths
    units = "" if spec.units == "fmax" else f" × ‖x‖, α = {spec.residual_strength:.3g}"
    table = Table(title=f"steering features {features} at γ={gamma}{units} ({spec.mode}, layer {spec.layer}); "
                        "act = mean activation of those features over the answer; ‖δ‖/‖x‖ = mean size of the "
                        "steering delta relative to the residual")
    for col in ("prompt", "baseline", "act", "steered", "act", "‖δ‖/‖x‖"):
        table.add_column(col, overflow="fold", no_wrap=col in ("act", "‖δ‖/‖x‖"))
    for row in rows:
        moved = row["steered_perturbation"]
        table.add_row(row["prompt"], row["baseline"].strip(), f"{row['baseline_activation']['features_mean']:.3f}",
                      row["steered"].strip(), f"{row['steered_activation']['features_mean']:.3f}",
                      f"{moved['ratio']:.3f}" if moved else "-")
    Console().print(table)
    for row in rows:
        moved = row["steered_perturbation"]
        if moved:
            typer.echo(f"perturbation: ‖δ‖ = {moved['norm']:.4g} = {moved['ratio']:.3f} × ‖x‖ "
                       f"(mean over {moved['n_tokens']} steered tokens) for {row['prompt']!r}")


@app.command()
def serve(
    model: str = typer.Option("tiny-random", help="model to serve: tiny-random, smollm2-reasoner, an HF id or folder"),
    sae: str | None = typer.Option(None, help="SAE: tiny-planted, a shipped SAE name, or a folder (default: the "
                                   "model's shipped SAE, if it has one)"),
    scores: str | None = typer.Option(None, help="ReasonScore folder (default: scores/ inside the SAE folder)"),
    served_name: str | None = typer.Option(None, help="model id clients send (default: the --model value)"),
    dtype: str | None = typer.Option(None, help="dtype to run the model in (default: the checkpoint's)"),
    device: str = typer.Option("cpu", help="torch device"),
    seed: int = typer.Option(0, help="seed of offline random models"),
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default)"),
    port: int = typer.Option(8000, help="TCP port (0 picks a free one)"),
    api_key: str | None = typer.Option(None, help="require this bearer key on /v1/* (default: $REASONING_DSPY_API_KEY)"),
    max_queue: int = typer.Option(256, help="generation rows admitted at once (queued + running); more get 503"),
    retry_after_s: int = typer.Option(1, help="Retry-After seconds sent with a 503"),
    max_body_bytes: int = typer.Option(1_000_000, help="largest request body accepted (413 beyond)"),
    max_prompt_tokens: int | None = typer.Option(None, help="longest prompt in tokens (default: the model's context - 1)"),
    max_tokens_limit: int = typer.Option(512, help="largest max_tokens a request may ask for"),
    default_max_tokens: int = typer.Option(128, help="max_tokens when a request gives none"),
    max_n: int = typer.Option(8, help="largest n (choices per request)"),
    max_batch_size: int = typer.Option(32, help="rows per batched generate"),
    max_wait_ms: float = typer.Option(5.0, help="how long the engine gathers concurrent requests"),
    reasoning_features: int = typer.Option(10, help="top ReasonScore features whose activation responses and "
                                           "/v1/explain report"),
    completion_store: int = typer.Option(1024, help="recent completions kept for /v1/explain by id"),
    log_level: str = typer.Option("info", help="log level of the JSON logs"),
) -> None:
    """Serve a steered model over the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models) with
    per-request steering (`extra_body={"steering": {...}}`), /v1/explain, /health and /metrics."""
    options = dict(locals())  # first: every parameter is a ServeConfig field
    from pydantic import ValidationError

    from reasoning_dspy.serve.config import ServeConfig

    try:
        config = ServeConfig(**options)
    except ValidationError as err:
        _fail(_validation_message(err))
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.sae.io import SAEFileError
    from reasoning_dspy.serve.catalog import ServeSetupError
    from reasoning_dspy.serve.run import serve as run_server

    try:
        run_server(config)
    except (ModelLoadError, SAEFileError, ServeSetupError) as err:
        _fail(str(err))


@app.command()
def dashboard(
    model: str = typer.Option("smollm2-reasoner", help="model: smollm2-reasoner, tiny-random, an HF id or folder"),
    sae: str | None = typer.Option(None, help="SAE: a shipped SAE name, tiny-planted, or a folder (default: the "
                                   "model's shipped SAE)"),
    scores: str | None = typer.Option(None, help="ReasonScore folder (default: scores/ inside the SAE folder)"),
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default)"),
    port: int = typer.Option(7860, help="TCP port (0 picks a free one)"),
    server: str | None = typer.Option(None, help="URL of a running `reasoning-dspy serve` to generate and explain "
                                      "through (default: an in-process engine)"),
    api_key: str | None = typer.Option(None, help="API key of that server (default: $REASONING_DSPY_API_KEY)"),
    database_url: str | None = typer.Option(None, help="tracking database for the Experiments page (default: "
                                            "$DATABASE_URL, else SQLite at runs/tracking.sqlite)"),
    cache_dir: Path | None = typer.Option(None, help="where corpus activations and map layouts are cached "
                                          "(default: ~/.cache/reasoning-dspy/dashboard)"),
    max_tokens: int = typer.Option(64, help="default answer length in tokens"),
    corpus_texts: int | None = typer.Option(None, help="use only the first N corpus texts for feature pages and map labels"),
    user: str | None = typer.Option(None, help="name recorded with flags and scores (default: the login name)"),
    dtype: str | None = typer.Option(None, help="dtype to run the model in (default: the checkpoint's)"),
    device: str = typer.Option("cpu", help="torch device"),
    seed: int = typer.Option(0, help="seed of offline random models"),
    auth: str | None = typer.Option(None, help="'user:password' the browser must log in with (default: "
                                    "$REASONING_DSPY_DASHBOARD_AUTH, which other users cannot read from the process "
                                    "list; none: open to whoever reaches the port)"),
    sae_roots: list[Path] | None = typer.Option(None, help="a folder the SAE box may load SAEs and "
                                                "scores from, besides the shipped SAEs (repeatable; default: the "
                                                "working directory)"),
    max_upload_mb: float = typer.Option(5.0, help="largest file a browser may upload, in MB (up to 1024)"),
) -> None:
    """The explainability dashboard (Gradio, 127.0.0.1, analytics off): token heatmaps, steering side by side,
    feature pages, a UMAP feature map and tracked experiments. See docs/dashboard.md."""
    options = dict(locals())  # first: every parameter is a DashboardConfig field
    from pydantic import ValidationError

    from reasoning_dspy.dashboard.config import DashboardConfig

    try:
        config = DashboardConfig(**options)
    except ValidationError as err:
        _fail(_validation_message(err))
    from reasoning_dspy.dashboard.workspace import DashboardError

    try:
        from reasoning_dspy.dashboard.launch import start
    except ImportError as err:
        _fail(f"the dashboard needs gradio and umap-learn ({err}); reinstall reasoning-dspy")
    typer.echo(f"loading {config.model} (SAE: {config.sae or 'shipped'}) ...", err=True)
    try:
        running = start(config)
    except DashboardError as err:
        _fail(str(err))
    typer.echo(f"dashboard: {running.url}  (Ctrl-C stops it)", err=True)
    try:
        running.demo.block_thread()
    finally:
        running.close()

