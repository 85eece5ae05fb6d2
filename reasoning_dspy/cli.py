"""`reasoning-dspy` command line. Heavy imports happen inside each command, so `--help` is instant."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Find, score and steer a language model's reasoning features with sparse autoencoders.",
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def extract(
    model: str = typer.Option("TinyLlama/TinyLlama-1.1B-Chat-v1.0", help="HF id, local folder, or tiny-random"),
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
) -> None:
    """Extract residual-stream activations at LAYER into an on-disk cache."""
    from reasoning_dspy.activations import CacheError, extract_activations
    from reasoning_dspy.models import ModelLoadError, load_model
    from reasoning_dspy.prompts import PromptError, load_prompts

    try:
        texts = load_prompts(prompts, column=column, limit=limit)
        loaded = load_model(model, dtype=model_dtype, device=device)
        cache = extract_activations(
            loaded.model, loaded.tokenizer, texts, layer, out, model_name=model, batch_size=batch_size,
            max_length=max_length, dtype=dtype, shard_tokens=shard_tokens, overwrite=overwrite,
        )
    except (PromptError, ModelLoadError, CacheError, IndexError, ValueError) as err:
        _fail(str(err))
    typer.echo(repr(cache))


# <cli-commands: later commands are added below this line>


# <train-sae: SAE training command (issue 3); its flags are generated from SAETrainConfig's fields>
def _train_sae(options: dict) -> None:
    """Train a sparse autoencoder on an activation cache; writes the SAE (SAELens layout), a
    resumable checkpoint, train_log.jsonl and loss_curve.png to OUT."""
    from pydantic import ValidationError

    from reasoning_dspy.activations import CacheError
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    try:
        result = train_sae(SAETrainConfig(**options))
    except ValidationError as err:
        _fail("; ".join(f"{'.'.join(map(str, e['loc'])) + ': ' if e['loc'] else ''}{e['msg']}".replace("Value error, ", "")
                        for e in err.errors()))
    except (CacheError, ValueError) as err:
        _fail(str(err))
    ev = result.eval
    typer.echo(f"FVU {ev.fvu:.4f}  L0 {ev.l0:.1f}  dead {100 * ev.dead_fraction:.1f}%  "
               f"({result.steps} steps, {result.tokens_per_second:,.0f} tokens/s) -> {result.out}")


def _register_train_sae() -> None:
    from reasoning_dspy.sae.train_config import typer_command  # pydantic only: keeps --help instant

    app.command("train-sae")(typer_command(_train_sae, required=("cache", "out")))


_register_train_sae()


# <score: ReasonScore command (issue 4)>
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
    from reasoning_dspy.activations import ActivationCache, CacheError
    from reasoning_dspy.analysis import analyze_features, write_analysis
    from reasoning_dspy.models import ModelLoadError, load_tokenizer
    from reasoning_dspy.reasonscore import score_features
    from reasoning_dspy.sae import load_sae
    from reasoning_dspy.vocab import Vocabulary

    try:
        acts = ActivationCache(cache)
        if not (sae / "cfg.json").is_file():
            raise FileNotFoundError(f"no SAE at {str(sae)!r}: cfg.json is missing (train one, or pass its folder)")
        model = load_sae(sae, device=device)
        words = Vocabulary.from_file(vocab, match=match) if vocab else Vocabulary.default(match or "exact")
        tokenizer = load_tokenizer(acts.model_name)
        scores = score_features(acts, model, words, tokenizer=tokenizer, alpha=alpha, left=left, right=right,
                                quantile=quantile, top_n=top_n, batch_size=batch_size, device=device,
                                entropy_norm=entropy_norm)
        scores.save(out)
        reports = analyze_features(acts, model, scores, tokenizer=tokenizer, n_features=n_features,
                                   n_contexts=n_contexts, batch_size=batch_size, device=device)
        write_analysis(out, scores, reports)
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
    limit: int = typer.Option(128, help="number of bundled texts to use (half prompts, half reasoning traces)"),
) -> None:
    """Run the offline end-to-end demo on tiny-random (no network needed)."""
    from reasoning_dspy.demo import run_demo

    run_demo(out, limit=limit)


if __name__ == "__main__":
    app()
