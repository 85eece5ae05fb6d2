"""Atomic file writes: a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_figure(path: str | os.PathLike, fig: Any, *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG (tight bounding box) through `atomic_write_bytes`."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


class NotWritableError(ValueError):
    """An output folder cannot be written; raised before any work starts, naming the folder."""


def check_writable(folder: str | os.PathLike, what: str = "the output folder") -> None:
    """Raise `NotWritableError` now when `folder` (or the folder it would be created in) cannot be
    written, so a command fails before its work instead of at its first save. It writes a probe file
    that disappears on close: permission bits alone do not stop root, a read-only mount does."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise NotWritableError(f"cannot write {what} {str(folder)!r}: {str(existing)!r} is a file, not a folder; "
                               "choose another path")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".write-test-"):
            pass
    except OSError as err:
        inside = "" if existing == folder else f" (it would be created inside {str(existing)!r})"
        raise NotWritableError(f"cannot write {what} {str(folder)!r}{inside}: {err.strerror or err}; choose a "
                               "folder you can write, or change its permissions") from None


class CheckpointError(ValueError):
    """A checkpoint file holds rows of other settings; raised before any work starts."""


class RowCheckpoint:
    """Finished rows of a long evaluation, saved as they come, so an interrupted run continues.

    A JSONL file: the first line records the settings, every other line is one finished row. Rows
    are looked up by a key the caller derives (style and problem id, say). Opening a file written
    under other settings raises `CheckpointError` naming what changed; every save rewrites the
    whole file atomically, so a crash leaves the last saved state. With `path=None` the rows stay in
    memory, so callers keep one code path with or without a file.

        >>> ckpt = RowCheckpoint(Path("eval.partial.jsonl"), {"model": "m", "max_tokens": 448})
        >>> todo = [p for p in problems if ckpt.get(p.id) is None]
        >>> ckpt.add({p.id: row for p, row in zip(batch, rows)})   # after each batch
    """

    def __init__(self, path: str | os.PathLike | None, settings: dict[str, Any] | None = None):
        self.path = Path(path) if path is not None else None
        self.settings = json.loads(json.dumps(settings or {}))  # as it reads back from the file
        self.rows: dict[str, Any] = {}
        if self.path is not None and self.path.is_file():
            lines = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            theirs = lines[0].get("settings", {}) if lines else {}
            changed = sorted(k for k in self.settings.keys() | theirs.keys() if theirs.get(k) != self.settings.get(k))
            if changed:
                raise CheckpointError(f"{str(self.path)!r} holds rows of a run with other settings "
                                      f"({', '.join(changed)}); delete it or write elsewhere")
            self.rows = {line["key"]: line["row"] for line in lines[1:]}

    def get(self, key: str) -> Any:
        return self.rows.get(key)

    def add(self, rows: dict[str, Any]) -> None:
        """Record finished rows by key and save the file."""
        self.rows.update(rows)
        if self.path is None:
            return
        lines = [{"settings": self.settings}] + [{"key": k, "row": v} for k, v in self.rows.items()]
        atomic_write_text(self.path, "".join(json.dumps(line) + "\n" for line in lines))
