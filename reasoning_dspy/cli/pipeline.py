"""The pipeline's stages: `extract`, `train-sae`, `score`."""

from __future__ import annotations

from pathlib import Path

import typer

from reasoning_dspy.cli._common import (
    fail,
    require_folder,
    validation_message,
)

pipeline_app = typer.Typer()

@pipeline_app.command()
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

    require_folder(out, "--out")
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
        fail(str(err))
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
        fail(validation_message(err))
    if cfg.out is not None:
        require_folder(Path(cfg.out), "--out")
    try:
        with torchrun_group(cfg.device) as ranks:  # under torchrun: one process per device, one SAE
            result = train_sae(cfg.model_copy(update={"device": rank_device(cfg.device, ranks)}))
    except (CacheError, DistributedError, TrainingDivergedError, ValueError) as err:
        fail(str(err))
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

    pipeline_app.command("train-sae")(typer_command(_train_sae, required=("cache", "out")))


_register_train_sae()


@pipeline_app.command()
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

    require_folder(out, "--out")
    if top_n is not None and top_n < 1:
        fail(f"--top-n must be at least 1, got {top_n}")
    if n_features < 0:
        fail(f"--n-features must be >= 0 (features to analyze), got {n_features}")
    if n_contexts < 1:
        fail(f"--n-contexts must be at least 1, got {n_contexts}")
    try:
        acts = ActivationCache(cache)
        model = load_sae(sae, device=device)
        if top_n is not None and top_n > model.d_sae:
            fail(f"--top-n {top_n} exceeds the SAE's {model.d_sae} features; pass at most {model.d_sae}")
        words = Vocabulary.from_file(vocab, match=match) if vocab else Vocabulary.default(match or "exact")
        tokenizer = acts.load_tokenizer()
        scores = score_features(acts, model, words, tokenizer=tokenizer, alpha=alpha, left=left, right=right,
                                quantile=quantile, top_n=top_n, batch_size=batch_size, device=device,
                                entropy_norm=entropy_norm)
        if int(scores.group_token_counts.sum()) == 0:
            fail(f"no word of the vocabulary ({', '.join(scores.groups[:10])}) occurs in the {acts.n_tokens} "
                  f"tokens of the cache at {str(cache)!r}, so every ReasonScore would be meaningless; use a "
                  "vocabulary whose words occur in these texts, or extract texts that contain them "
                  "(e.g. --prompts bundled-traces)")
        scores.save(out)
        reports = analyze_features(acts, model, scores, tokenizer=tokenizer, n_features=n_features,
                                   n_contexts=n_contexts, batch_size=batch_size, device=device)
        write_analysis(out, scores, reports)
    except ValidationError as err:
        fail(validation_message(err))
    except (CacheError, FileNotFoundError, ModelLoadError, ValueError) as err:
        fail(str(err))
    typer.echo(f"vocabulary: {len(scores.groups)} groups, {words.mode} matching; entropy over log|R|, "
               f"|R| = {scores.settings['entropy_groups']} ({entropy_norm})")
    typer.echo(f"{len(scores.selected)} of {scores.d_sae} features selected (ReasonScore >= {scores.threshold:.4g})")
    for r in reports:
        words_ = ", ".join(w for w, _ in r.top_words[:3]) or "-"
        typer.echo(f"  #{r.rank:<3} feature {r.index:<6} score {r.score:+.4g}  max {r.max_activation:.3g}  "
                   f"density {r.density:.3f}  words: {words_}")
    typer.echo(f"wrote {out}")
