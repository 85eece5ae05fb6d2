"""Load prompts from local files, a `datasets` hub id, or the set bundled with the package."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

BUNDLED = "bundled"
BUNDLED_TRACES = "bundled-traces"
TEXT_COLUMN_GUESSES = ("prompt", "text", "instruction", "question", "input", "content")
_TABLE_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet"}


class PromptError(ValueError):
    """The prompt source is missing, empty or has no usable text column."""


def bundled_prompts_path() -> Path:
    return Path(str(resources.files("reasoning_dspy") / "data" / "prompts.jsonl"))


def bundled_traces() -> list[str]:
    """Worked reasoning traces and prose shipped with the package (one paragraph each).

    They are full of "wait", "hmm", "therefore"..., which prompts alone rarely contain: the kind of
    text ReasonScore needs to find reasoning features offline (the paper uses model reasoning traces).
    Generated word-problem solutions (`data/traces.txt`, varied so that no template dominates the
    top activating contexts) are interleaved with hand-written prose, dialogues and code
    (`data/corpus.txt`), so any prefix of the list mixes both.
    """
    data = resources.files("reasoning_dspy") / "data"
    traces, prose = (_paragraphs((data / name).read_text(encoding="utf-8")) for name in ("traces.txt", "corpus.txt"))
    return _interleave(traces, prose)


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def _interleave(main: list[str], extra: list[str]) -> list[str]:
    """`main` with `extra` spread evenly through it, each list keeping its order."""
    if not extra:
        return list(main)
    total = len(main) + len(extra)
    out, i, j = [], 0, 0
    for k in range(total):
        if j < len(extra) and (i >= len(main) or (k + 1) * len(extra) >= (j + 1) * total):
            out.append(extra[j])
            j += 1
        else:
            out.append(main[i])
            i += 1
    return out


def load_prompts(
    source: str | os.PathLike = BUNDLED,
    *,
    column: str | None = None,
    split: str = "train",
    limit: int | None = None,
) -> list[str]:
    """Return a list of non-empty prompt strings.

    `source` is `"bundled"` (the package's own prompt set), `"bundled-traces"` (reasoning traces
    shipped with the package), a local `.jsonl`/`.json`/`.csv`/
    `.parquet`/`.txt` file (text files: one prompt per line), or a `datasets` hub id (needs network).
    `column` picks the text field; by default the first of prompt/text/instruction/question/input.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise PromptError(f"limit must be a positive number of prompts, got {limit!r}")
    source = bundled_prompts_path() if str(source) == BUNDLED else source
    path = Path(source)
    if str(source) == BUNDLED_TRACES:
        prompts = bundled_traces()
    elif path.suffix.lower() in _TABLE_SUFFIXES | {".txt"} or path.exists():
        if path.is_dir():
            raise PromptError(f"{str(path)!r} is a folder; pass a prompts file (.jsonl/.json/.csv/.parquet/.txt)")
        if not path.is_file():
            raise PromptError(f"prompts file not found: {str(path)!r}")
        try:
            prompts = _load_local(path, column)
        except UnicodeDecodeError as err:
            raise PromptError(
                f"prompts file {str(path)!r} is not UTF-8 text (byte {err.start}: {err.reason}); "
                "pass a UTF-8 encoded .jsonl/.json/.csv/.txt file"
            ) from None
        except csv.Error as err:
            raise PromptError(f"prompts file {str(path)!r} is not a readable CSV file: {err}") from None
    else:
        prompts = _load_hub(str(source), column, split)
    prompts = [p for p in prompts if p.strip()]
    if not prompts:
        raise PromptError(f"no prompts in {str(source)!r}: it is empty or every text is blank")
    return prompts[:limit] if limit is not None else prompts


def _load_local(path: Path, column: str | None) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if column is not None:
            raise PromptError(f"{path} is a text file (one prompt per line); it has no column {column!r}")
        return path.read_text(encoding="utf-8").splitlines()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    elif suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise PromptError(f"{path}:{lineno} is not valid JSON: {err.msg}") from None
    elif suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PromptError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(rows, list):
            raise PromptError(f"{path} must hold a JSON list of strings or objects")
    elif suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError) as err:
            raise PromptError(f"{path} is not a readable Parquet file: {err}") from None
    else:
        raise PromptError(f"unsupported prompts file {path.name!r}: use .jsonl, .json, .csv, .parquet or .txt")
    return _texts(rows, column, str(path))


def _load_hub(dataset_id: str, column: str | None, split: str) -> list[str]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as err:  # datasets raises many types for "not found" and "offline"
        raise PromptError(
            f"{dataset_id!r} is neither a local file nor a loadable dataset "
            f"({err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            "Pass a .jsonl/.json/.csv/.parquet/.txt path, or 'bundled'."
        ) from err
    name = _pick_column(list(ds.column_names), column, dataset_id)
    return [str(x) for x in ds[name]]


def _texts(rows: Sequence, column: str | None, where: str) -> list[str]:
    if not rows:
        return []
    if all(isinstance(r, str) for r in rows):
        if column is not None:
            raise PromptError(f"{where} holds plain strings; it has no column {column!r}")
        return list(rows)
    if not all(isinstance(r, dict) for r in rows):
        raise PromptError(f"{where}: every record must be a string or an object")
    name = _pick_column(list(rows[0].keys()), column, where)
    missing = [i for i, r in enumerate(rows) if name not in r]
    if missing:
        raise PromptError(f"{where}: record {missing[0]} has no {name!r} field")
    return [str(r[name]) if r[name] is not None else "" for r in rows]


def _pick_column(columns: list[str], column: str | None, where: str) -> str:
    if column is not None:
        if column not in columns:
            raise PromptError(f"{where} has no column {column!r}; available columns: {columns}")
        return column
    for guess in TEXT_COLUMN_GUESSES:
        if guess in columns:
            return guess
    raise PromptError(
        f"cannot tell which column of {where} holds the text (columns: {columns}); pass column=..."
    )
