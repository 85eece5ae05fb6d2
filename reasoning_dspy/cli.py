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


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="folder for the demo's outputs"),
    limit: int = typer.Option(128, help="number of bundled prompts to use"),
) -> None:
    """Run the offline end-to-end demo on tiny-random (no network needed)."""
    from reasoning_dspy.demo import run_demo

    run_demo(out, limit=limit)


if __name__ == "__main__":
    app()
