"""Prompts from a `datasets` streaming dataset: read lazily, row by row, never held in memory or
copied to disk, so a corpus larger than either can feed `extract_activations`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from reasoning_dspy.prompts import PromptError, _pick_column

#: Local file suffix -> the `datasets` builder that streams it (text: one prompt per line).
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


class StreamedPrompts:
    """An iterable of non-empty prompt strings from `load_dataset(..., streaming=True)`.

    `source` is a local file or glob (`.jsonl`/`.json`/`.csv`/`.parquet`/`.txt`, streamed by the
    matching `datasets` builder, offline) or a dataset id on the hub. Each iteration opens the stream
    afresh; blank texts are skipped and at most `limit` prompts come out, as `load_prompts` does.

    >>> prompts = StreamedPrompts("corpus/*.jsonl", column="text", limit=1_000_000)
    >>> extract_activations(model, tokenizer, prompts, 12, "runs/acts")  # doctest: +SKIP
    """

    def __init__(self, source: str | os.PathLike, *, column: str | None = None, split: str = "train",
                 limit: int | None = None, name: str | None = None):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise PromptError(f"limit must be a positive number of prompts, got {limit!r}")
        self.source, self.column, self.split, self.limit, self.name = str(source), column, split, limit, name
        self.builder, self.data_files = self._resolve()

    def _resolve(self) -> tuple[str, str | None]:
        """(builder or hub id, local data files or None)."""
        path = Path(self.source)
        suffix = path.suffix.lower()
        if path.is_dir():
            raise PromptError(f"{self.source!r} is a folder; pass a file or a glob such as {self.source}/*.jsonl")
        local = path.is_file() or any(ch in self.source for ch in "*?[") or suffix in BUILDERS
        if not local:
            return self.source, None
        if suffix not in BUILDERS:
            raise PromptError(f"cannot stream {path.name!r}: use .jsonl, .json, .csv, .parquet or .txt files")
        if suffix == ".txt" and self.column not in (None, "text"):
            raise PromptError(f"{self.source} is text (one prompt per line); it has no column {self.column!r}")
        if not any(ch in self.source for ch in "*?[") and not path.is_file():
            raise PromptError(f"prompts file not found: {self.source!r}")
        return BUILDERS[suffix], str(path.resolve()) if path.is_file() else os.path.abspath(self.source)

    @property
    def identity(self) -> str:
        """What the cache manifest records as the source (a resumed run must name the same one)."""
        where = self.data_files or self.source
        return (f"{self.builder}:{where} split={self.split} column={self.column} limit={self.limit}"
                + (f" name={self.name}" if self.name else ""))

    def _open(self):
        import datasets

        try:
            if self.data_files is not None:
                return datasets.load_dataset(self.builder, data_files=self.data_files, split=self.split, streaming=True)
            return datasets.load_dataset(self.source, self.name, split=self.split, streaming=True)
        except Exception as err:  # datasets raises many types for "not found" and "offline"
            first = str(err).splitlines()[0] if str(err) else ""
            raise PromptError(f"cannot stream {self.source!r} ({err.__class__.__name__}: {first})") from err

    def __iter__(self) -> Iterator[str]:
        column, n = None, 0
        for row in self._open():
            if column is None:
                column = _pick_column(list(row), self.column, self.source)
            text = row.get(column)
            if text is None or not str(text).strip():
                continue
            yield str(text)
            n += 1
            if self.limit is not None and n >= self.limit:
                return

    def __repr__(self) -> str:
        return f"StreamedPrompts({self.identity!r})"
