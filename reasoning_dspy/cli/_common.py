"""What every command shares: failing with a clear message, checking output folders, reading
`[CONFIG.yaml] [KEY=VALUE]...` arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def validation_message(err) -> str:
    """A pydantic `ValidationError` as one line: `field: message (got value); ...`."""
    parts = []
    for e in err.errors():
        where = ".".join(map(str, e["loc"])) + ": " if e["loc"] else ""
        got = f" (got {e['input']!r})" if e["loc"] and e["type"] != "value_error" else ""
        parts.append(f"{where}{e['msg']}{got}".replace("Value error, ", ""))
    return "; ".join(parts)


def require_folder(path: Path, flag: str) -> None:
    """Fail when an output that must be a folder is an existing file, or cannot be written."""
    if path.exists() and not path.is_dir():
        fail(f"{flag} {str(path)!r} is an existing file; {flag} must be a folder")
    require_writable(path, flag)


def require_writable(folder: Path, flag: str) -> None:
    """Fail before the work, naming the folder, when the output cannot be written there."""
    from reasoning_dspy._io import NotWritableError, check_writable

    try:
        check_writable(folder, f"{flag} folder")
    except NotWritableError as err:
        fail(str(err))


def sae_and_scores(sae: Path, scores: Path | None) -> tuple[Any, Any]:
    from reasoning_dspy.features.reasonscore import FeatureScores
    from reasoning_dspy.sae import load_sae

    folder = scores if scores is not None else sae / "scores"
    if not (folder / "features.json").is_file():
        raise ValueError(f"no ReasonScore table in {str(folder)!r}; pass --scores (the output of `reasoning-dspy score`)")
    return load_sae(sae), FeatureScores.load(folder)


def config_args(args: list[str] | None) -> tuple[str | None, list[str]]:
    """Split `[CONFIG.yaml] [KEY=VALUE]...` into the file (or None) and the overrides."""
    args = list(args or [])
    files = [a for a in args if "=" not in a]
    if len(files) > 1:
        fail(f"expected one config file and key=value overrides, got several files: {files}")
    return (files[0] if files else None), [a for a in args if "=" in a]


def partial_file(out: Path | None) -> Path | None:
    """Where a command writing `out` keeps its finished rows until `out` is written (None without
    `out`): re-running the command with the same settings continues from them."""
    return None if out is None else out.with_name(out.name + ".partial.jsonl")
