"""A bounded queue in front of the engine: at most `capacity` generation rows admitted at once.

A request asks for all its rows (n choices × prompts) at once and is refused whole when they do not
fit, so the client gets a 503 with `Retry-After` at once instead of waiting behind an unbounded
backlog. A slot is released when its row's future finishes or is cancelled.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future


class QueueFullError(Exception):
    """No room for the rows asked for."""


class Admission:
    """Counts admitted rows (queued + running) against `capacity`; thread-safe."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._admitted = 0
        self._lock = threading.Lock()
        self.rejected = 0

    @property
    def admitted(self) -> int:
        with self._lock:
            return self._admitted

    def acquire(self, rows: int = 1) -> None:
        """Admit `rows` rows or raise `QueueFullError`; pair with `release` (or `release_when_done`)."""
        with self._lock:
            if self._admitted + rows > self.capacity:
                self.rejected += 1
                raise QueueFullError(f"{self._admitted} of {self.capacity} rows admitted; {rows} more do not fit")
            self._admitted += rows

    def release(self, rows: int = 1) -> None:
        with self._lock:
            self._admitted = max(0, self._admitted - rows)

    def release_when_done(self, future: Future) -> None:
        """Release one row when `future` finishes, fails or is cancelled."""
        future.add_done_callback(lambda _f: self.release(1))
