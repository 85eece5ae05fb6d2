"""The JSONL journal: every record is appended (and flushed) here before the database sees it, so
the journal alone is a complete log of the run. A small side file remembers how far a database has
confirmed, and which database; whatever lies past it is replayed when that database is back (and
everything, into any other database). Replays are safe to repeat (records have stable ids), so the
side file may lag; it never runs ahead."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from reasoning_dspy.tracking.records import Generation, RunEnd, RunStart, Trial, parse_record

Record = RunStart | RunEnd | Trial | Generation


class Journal:
    """Append-only records at `path`; `path` + `.db-offset` holds the byte offset up to which
    `database` (a display URL) holds every record."""

    def __init__(self, path: str | os.PathLike, database: str | None = None):
        self.path, self.database = Path(path), database
        self.offset_path = self.path.with_name(self.path.name + ".db-offset")
        self._fh: IO[bytes] | None = None
        self._confirmed = self._read_offset()
        self._saved = self._confirmed

    # -- writing --------------------------------------------------------------------------------
    def append(self, records: Sequence[Record]) -> list[int]:
        """Write `records` and flush them to the OS; returns each record's end offset."""
        fh = self._open()
        ends = []
        for record in records:
            fh.write(record.model_dump_json().encode() + b"\n")
            ends.append(fh.tell())
        fh.flush()
        return ends

    def sync(self) -> None:
        """Force the journal to disk (flush already survives a killed process; this survives power loss)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _drop_torn_line(self.path)
            self._fh = self.path.open("ab")
        return self._fh

    # -- the database's progress -----------------------------------------------------------------
    @property
    def confirmed(self) -> int:
        return self._confirmed

    def confirm(self, offset: int) -> None:
        """The database holds every record that ends at or before `offset`."""
        self._confirmed = max(self._confirmed, offset)

    def save_offset(self) -> None:
        """Persist the confirmed offset (write then rename: a crash keeps the old, smaller one)."""
        if self._confirmed == self._saved:
            return
        tmp = self.offset_path.with_name(self.offset_path.name + ".tmp")
        tmp.write_text(json.dumps({"database": self.database, "offset": self._confirmed}) + "\n")
        os.replace(tmp, self.offset_path)
        self._saved = self._confirmed

    def _read_offset(self) -> int:
        try:
            saved = json.loads(self.offset_path.read_text())
            offset = int(saved["offset"]) if saved["database"] == self.database else 0
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            return 0
        size = self.path.stat().st_size if self.path.exists() else 0
        return offset if 0 <= offset <= size else 0  # a replaced journal is replayed from the start

    def pending(self) -> Iterator[tuple[Record, int]]:
        """Records past the confirmed offset, each with its end offset; a torn last line is skipped."""
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self._confirmed)
            offset = self._confirmed
            for line in fh:
                offset += len(line)
                if not line.endswith(b"\n"):
                    return  # cut short by a kill mid-write
                if line.strip():
                    yield parse_record(line), offset

    def close(self) -> None:
        if self._fh is not None:
            self.sync()
            self._fh.close()
            self._fh = None
        self.save_offset()


def read_journal(path: str | os.PathLike) -> list[Record]:
    """Every record in a journal (a torn last line is dropped)."""
    out = []
    for raw in Path(path).read_bytes().splitlines(keepends=True):
        if raw.endswith(b"\n") and raw.strip():
            out.append(parse_record(raw))
    return out


def _drop_torn_line(path: Path) -> None:
    """Cut a last line left without its newline by a kill, so the next record starts on its own line."""
    if not path.exists():
        return
    with path.open("r+b") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return
        pos = end
        while pos > 0:
            step = min(1 << 16, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                fh.truncate(pos - step + newline + 1)
                return
            pos -= step
        fh.truncate(0)
