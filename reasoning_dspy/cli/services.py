"""Long-running services: `serve` (the OpenAI-compatible API) and `dashboard` (Gradio)."""

from __future__ import annotations

from pathlib import Path

import typer

from reasoning_dspy.cli._common import (
    fail,
    validation_message,
)

services_app = typer.Typer()

@services_app.command()
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
        fail(validation_message(err))
    from reasoning_dspy.models import ModelLoadError
    from reasoning_dspy.sae.io import SAEFileError
    from reasoning_dspy.serve.catalog import ServeSetupError
    from reasoning_dspy.serve.run import serve as run_server

    try:
        run_server(config)
    except (ModelLoadError, SAEFileError, ServeSetupError) as err:
        fail(str(err))


@services_app.command()
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
        fail(validation_message(err))
    from reasoning_dspy.dashboard.workspace import DashboardError

    try:
        from reasoning_dspy.dashboard.launch import start
    except ImportError as err:
        fail(f"the dashboard needs gradio and umap-learn ({err}); reinstall reasoning-dspy")
    typer.echo(f"loading {config.model} (SAE: {config.sae or 'shipped'}) ...", err=True)
    try:
        running = start(config)
    except DashboardError as err:
        fail(str(err))
    typer.echo(f"dashboard: {running.url}  (Ctrl-C stops it)", err=True)
    try:
        running.demo.block_thread()
    finally:
        running.close()
