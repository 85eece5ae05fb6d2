"""Gather requests from many threads into batches for one worker thread.

Callers on many threads (DSPy's `Evaluate(num_threads=N)`) submit requests; one worker thread waits a
few milliseconds for company, runs the batch, and hands each caller its own result. Decoding is bound
by reading the weights, so 16 rows per step cost little more than one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from torch import nn

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.Lock:
    """One lock per model object: engines sharing a model never run it from two threads at once."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.Lock()
        return lock


@dataclass
class _Item(Generic[T]):
    payload: T
    future: Future
    seq: int  # submission order


_STOP = object()


class MicroBatcher(Generic[T, R]):
    """Gather items submitted from any thread into batches for `run_batch` on one worker thread.

    The worker takes the first waiting item, then collects more until none arrives for
    `max_wait_ms`, `max_gather_ms` have passed, or `max_batch_size` items are in, and calls
    `run_batch(payloads) -> results` (same order). Each caller's future gets its own result; if a
    batch raises an `Exception`, its items are retried one by one so a single bad request cannot
    fail its neighbours. An interrupt (`KeyboardInterrupt`, `SystemExit`) is never retried: every
    caller of the batch receives it at once and the worker stops (the next `submit` starts a new
    one). `max_batch_size=1` gives the one-request-at-a-time baseline.

    A caller that knows a burst is coming (an optimizer about to evaluate 4 candidates × 16
    examples from 64 threads) announces it with `expect(n)`: the worker then gathers until those
    `n` items are in (waiting up to `expect_wait_ms` for each next one) and hands them to `run_batch`
    in one call, however many that is, so the burst is never split by when its threads happened to
    arrive. `run_batch` then owns the split into model batches.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R]],
        *,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        max_gather_ms: float = 50.0,
        expect_wait_ms: float = 1000.0,
        name: str = "reasoning-dspy-batcher",
    ):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_gather_ms = max_gather_ms
        self.expect_wait_ms = expect_wait_ms
        self.name = name
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._submitted = 0  # items ever submitted
        self._expect_until = 0  # an announced burst is in once `_submitted` reaches this
        self.batch_sizes: list[int] = []  # observed batch sizes (diagnostics, benchmarks)

    def submit(self, payload: T) -> Future:
        """Queue `payload`; the returned future resolves to its result (or raises its error)."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed; create a new engine")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._queue.put(_Item(payload, future, self._submitted))
            self._submitted += 1
        return future

    @contextmanager
    def expect(self, n: int) -> Iterator[None]:
        """Announce that `n` items are about to be submitted (from any threads): they run as one
        gathered batch. Items that never come (a caller served from a cache) are waited for at most
        `expect_wait_ms` after the last arrival, and no longer once the block ends."""
        if n < 0:
            raise ValueError(f"expect() needs a count >= 0, got {n}")
        with self._lock:
            self._expect_until = max(self._expect_until, self._submitted + n)
        try:
            yield
        finally:
            with self._lock:
                self._expect_until = min(self._expect_until, self._submitted)

    def __call__(self, payload: T) -> R:
        return self.submit(payload).result()

    def close(self) -> None:
        """Finish queued work, then stop the worker thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            self._queue.put(_STOP)
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._gather(first)
            try:
                self._run(batch)
            except BaseException:  # an interrupt: its callers have it; the next submit starts a new worker
                return
            if stop:
                return

    def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        """The batch that starts with `first`, and whether a stop request ended it.

        Gathers while requests keep arriving (each one extends the wait by `max_wait_ms`), up to
        `max_gather_ms` and `max_batch_size`: callers released together by the previous batch
        re-submit in a burst. While an announced burst (`expect`) is still arriving, it waits up to
        `expect_wait_ms` for each next item and takes them all.
        """
        batch = [first]
        start = time.monotonic()
        deadline = start + self.max_wait_ms / 1000
        cap = start + max(self.max_gather_ms, self.max_wait_ms) / 1000
        while True:
            with self._lock:
                announced = batch[-1].seq + 1 < self._expect_until  # the next item belongs to a burst
            if announced:
                timeout = self.expect_wait_ms / 1000
            elif len(batch) < self.max_batch_size:
                timeout = min(deadline, cap) - time.monotonic()
            else:
                break
            try:
                item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
            deadline = time.monotonic() + self.max_wait_ms / 1000
        return batch, False

    def _run(self, batch: list[_Item]) -> None:
        live = [it for it in batch if it.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batch_sizes.append(len(live))
        try:
            results = self.run_batch([it.payload for it in live])
            if len(results) != len(live):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)} items")
        except Exception as err:  # noqa: BLE001 - every error is handed to its caller
            if len(live) == 1:
                live[0].future.set_exception(err)
                return
            logger.debug("batch of %d failed (%s); retrying one by one", len(live), err)
            for it in live:
                try:
                    it.future.set_result(self.run_batch([it.payload])[0])
                except Exception as single_err:  # noqa: BLE001
                    it.future.set_exception(single_err)
            return
        except BaseException as stop:  # KeyboardInterrupt, SystemExit: no retries, every caller hears at once
            for it in live:
                it.future.set_exception(stop)
            raise
        for it, res in zip(live, results, strict=True):
            it.future.set_result(res)
